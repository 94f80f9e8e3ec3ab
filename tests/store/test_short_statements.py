"""Short SQLite write transactions run their statements on the event loop thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from conftest import DIALECT
from store import Store
from store.database import SHORT_STATEMENT_MAX_PARAMETER_BYTES

pytestmark = pytest.mark.skipif(DIALECT != "sqlite", reason="SQLite only")


async def open_store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'gateway.db'}")
    await store.upgrade()
    return store


async def executing_thread(tx: Any, *parameters: Any) -> int:
    """Return the id of the thread in which SQLite ran a statement of TX."""
    connection = await tx.session.connection()
    raw = await connection.get_raw_connection()
    await raw.driver_connection.create_function("thread_id", 0, threading.get_ident)
    placeholders = "".join(f", length(:p{i})" for i in range(len(parameters)))
    values = {f"p{i}": value for i, value in enumerate(parameters)}
    row = (await tx.session.execute(text(f"SELECT thread_id(){placeholders}"), values)).one()
    return int(row[0])


def test_short_write_runs_on_loop_thread(tmp_path: Path) -> None:
    async def run() -> tuple[int, int, int]:
        store = await open_store(tmp_path)
        try:
            async with store.write(short=True) as tx:
                short = await executing_thread(tx)
            async with store.write() as tx:
                regular = await executing_thread(tx)
            async with store.read() as tx:
                read = await executing_thread(tx)
            return short, regular, read
        finally:
            await store.close()

    short, regular, read = asyncio.run(run())

    main = threading.get_ident()
    assert short == main
    assert regular != main
    assert read != main


def test_large_parameter_runs_on_connection_thread(tmp_path: Path) -> None:
    async def run() -> tuple[int, int]:
        store = await open_store(tmp_path)
        try:
            async with store.write(short=True) as tx:
                small = await executing_thread(tx, b"x" * 1024)
                large = await executing_thread(
                    tx, b"x" * (SHORT_STATEMENT_MAX_PARAMETER_BYTES + 1)
                )
            return small, large
        finally:
            await store.close()

    small, large = asyncio.run(run())

    assert small == threading.get_ident()
    assert large != threading.get_ident()


def test_spawned_task_reads_on_connection_thread(tmp_path: Path) -> None:
    async def run() -> int:
        store = await open_store(tmp_path)

        async def read_elsewhere() -> int:
            async with store.read() as tx:
                return await executing_thread(tx)

        try:
            async with store.write(short=True):
                task = asyncio.create_task(read_elsewhere())
            return await task
        finally:
            await store.close()

    assert asyncio.run(run()) != threading.get_ident()


def test_lock_wait_keeps_loop_running(tmp_path: Path) -> None:
    # Another connection has SQLite's write lock for half a second. BEGIN
    # IMMEDIATE waits for it on the connection's thread, not on the loop.
    hold_seconds = 0.5
    path = tmp_path / "gateway.db"

    async def run() -> tuple[int, float]:
        store = await open_store(tmp_path)
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        threading.Timer(hold_seconds, other.commit).start()
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        started = time.monotonic()
        try:
            async with store.write(short=True) as tx:
                await tx.session.execute(text("SELECT 1"))
            waited = time.monotonic() - started
        finally:
            ticker.cancel()
            await store.close()
            other.close()
        return ticks, waited

    ticks, waited = asyncio.run(run())

    assert waited >= hold_seconds * 0.8
    # The ticker sleeps 10 ms per tick, so 10 ticks show that the loop ran during the wait.
    assert ticks >= 10



def test_write_turn_ends_before_session_closes(tmp_path: Path, monkeypatch: Any) -> None:
    """The writer's turn ends before the session closes.

    AsyncSession closes in a task of its own, a trip around the event loop in
    which other work (such as a large message being read) would run while
    every other writer waits for the turn.
    """
    from sqlalchemy.ext.asyncio import AsyncSession

    events: list[str] = []
    close = AsyncSession.close

    async def recorded_close(self: AsyncSession) -> None:
        events.append("session closed")
        await close(self)

    monkeypatch.setattr(AsyncSession, "close", recorded_close)

    async def run() -> None:
        store = await open_store(tmp_path)
        queue = store._sqlite_writers
        assert queue is not None
        release = queue.release

        def recorded_release() -> None:
            events.append("turn ended")
            release()

        queue.release = recorded_release  # type: ignore[method-assign]
        try:
            for short in (True, False):
                async with store.write(short=short) as tx:
                    await tx.session.execute(text("SELECT count(*) FROM settings"))
        finally:
            await store.close()

    asyncio.run(run())

    assert events == ["turn ended", "session closed"] * 2
