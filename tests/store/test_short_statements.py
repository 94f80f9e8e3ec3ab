"""Short SQLite write transactions run on the event loop thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import text

from conftest import DIALECT
from store import Store
from store.database import SHORT_STATEMENT_MAX_PARAMETER_BYTES, SQLITE_BUSY_TIMEOUT_MS

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


class StatementThreads:
    """The thread of each statement SQLite runs on a connection, in order."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, int]] = []

    def __call__(self, statement: str) -> None:
        self.statements.append((statement.split()[0].upper(), threading.get_ident()))

    def of(self, keyword: str) -> list[int]:
        return [thread for word, thread in self.statements if word == keyword]

    async def watch(self, store: Store) -> None:
        """Record the statements of the connection that STORE's next transaction uses.

        Transactions one after another reuse the connection that a first
        transaction opens, so the record starts with the next one's BEGIN.
        """
        async with store.write(short=True) as tx:
            connection = await tx.session.connection()
            raw = await connection.get_raw_connection()
            raw.driver_connection._connection.set_trace_callback(self)
        self.statements.clear()


async def busy_timeout(tx: Any) -> int:
    return int((await tx.session.execute(text("PRAGMA busy_timeout"))).scalar_one())


def test_short_write_begin_and_commit_threads(tmp_path: Path) -> None:
    # COMMIT waits for the disk, which would hold up every session on the loop.
    async def run() -> tuple[StatementThreads, int]:
        store = await open_store(tmp_path)
        threads = StatementThreads()
        try:
            await threads.watch(store)
            async with store.write(short=True) as tx:
                await tx.session.execute(text("UPDATE settings SET value = value"))
                timeout = await busy_timeout(tx)
            return threads, timeout
        finally:
            await store.close()

    threads, timeout = asyncio.run(run())

    main = threading.get_ident()
    assert threads.of("BEGIN") == [main]
    assert threads.of("UPDATE") == [main]
    assert len(threads.of("COMMIT")) == 1
    assert threads.of("COMMIT")[0] != main
    assert timeout == SQLITE_BUSY_TIMEOUT_MS


def test_short_write_sends_only_commit_to_thread(tmp_path: Path, monkeypatch: Any) -> None:
    """The session's end and the pool's reset of a short transaction stay on the loop."""
    trips: list[str] = []
    dispatch = aiosqlite.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(fn, "__name__", repr(fn)))
        return await dispatch(self, fn, *args, **kwargs)

    async def run() -> None:
        store = await open_store(tmp_path)
        try:
            async with store.write(short=True) as tx:
                await tx.session.execute(text("SELECT 1"))
            monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
            for _ in range(3):
                async with store.write(short=True) as tx:
                    await tx.session.execute(text("UPDATE settings SET value = value"))
        finally:
            monkeypatch.undo()
            await store.close()

    asyncio.run(run())

    assert trips == ["commit"] * 3


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
    # IMMEDIATE finds it taken at once and waits for it on the connection's
    # thread, not on the loop.
    hold_seconds = 0.5
    path = tmp_path / "gateway.db"

    async def run() -> tuple[int, float, list[int], int]:
        store = await open_store(tmp_path)
        threads = StatementThreads()
        await threads.watch(store)
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
                timeout = await busy_timeout(tx)
            waited = time.monotonic() - started
        finally:
            ticker.cancel()
            await store.close()
            other.close()
        return ticks, waited, threads.of("BEGIN"), timeout

    ticks, waited, begin_threads, timeout = asyncio.run(run())

    assert waited >= hold_seconds * 0.8
    # One try on the loop, which finds the lock taken, then the wait on the thread.
    assert len(begin_threads) == 2
    assert begin_threads[0] == threading.get_ident()
    assert begin_threads[1] != threading.get_ident()
    assert timeout == SQLITE_BUSY_TIMEOUT_MS
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
