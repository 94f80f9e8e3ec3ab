"""WriterQueue: one writer at a time, waiting regular writers before bulk ones."""

from __future__ import annotations

import asyncio

import pytest

from store.writer_queue import WriterQueue


async def run_writers(queue: WriterQueue, kinds: list[str]) -> list[str]:
    """Start a holder, queue KINDS behind it in order, and return the order of turns."""
    order: list[str] = []
    await queue.acquire(bulk=False)

    async def writer(name: str) -> None:
        await queue.acquire(bulk=name.startswith("bulk"))
        order.append(name)
        await asyncio.sleep(0)
        queue.release()

    tasks = []
    for name in kinds:
        tasks.append(asyncio.create_task(writer(name)))
        await asyncio.sleep(0)
    queue.release()
    await asyncio.gather(*tasks)
    return order


def test_regular_writers_go_before_bulk() -> None:
    order = asyncio.run(
        run_writers(WriterQueue(), ["bulk-1", "small-1", "bulk-2", "small-2"])
    )
    assert order == ["small-1", "small-2", "bulk-1", "bulk-2"]


def test_bulk_writer_goes_after_max_overtakes() -> None:
    kinds = ["bulk-1"] + [f"small-{n}" for n in range(1, 6)]
    order = asyncio.run(run_writers(WriterQueue(max_overtakes=2), kinds))
    assert order == ["small-1", "small-2", "bulk-1", "small-3", "small-4", "small-5"]


def test_free_queue_grants_at_once() -> None:
    async def work() -> None:
        queue = WriterQueue()
        await asyncio.wait_for(queue.acquire(bulk=True), 1)
        queue.release()
        await asyncio.wait_for(queue.acquire(bulk=False), 1)
        queue.release()

    asyncio.run(work())


def test_cancelled_waiter_gives_up_its_turn() -> None:
    async def work() -> list[str]:
        queue = WriterQueue()
        order: list[str] = []
        await queue.acquire(bulk=False)
        waiting = asyncio.create_task(queue.acquire(bulk=False))
        await asyncio.sleep(0)

        async def later() -> None:
            await queue.acquire(bulk=True)
            order.append("bulk")
            queue.release()

        bulk = asyncio.create_task(later())
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        queue.release()
        await asyncio.wait_for(bulk, 1)
        return order

    assert asyncio.run(work()) == ["bulk"]


def test_timed_out_waiter_leaves_queue_usable() -> None:
    async def work() -> None:
        queue = WriterQueue()
        await queue.acquire(bulk=False)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await queue.acquire(bulk=False)
        queue.release()
        await asyncio.wait_for(queue.acquire(bulk=False), 1)
        queue.release()

    asyncio.run(work())


def test_granted_then_cancelled_turn_passes_on() -> None:
    async def work() -> None:
        queue = WriterQueue()
        await queue.acquire(bulk=False)
        first = asyncio.create_task(queue.acquire(bulk=False))
        second = asyncio.create_task(queue.acquire(bulk=False))
        await asyncio.sleep(0)
        # The turn goes to FIRST, which is cancelled before it runs again.
        queue.release()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await asyncio.wait_for(second, 1)
        queue.release()

    asyncio.run(work())
