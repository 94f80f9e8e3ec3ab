"""The WAL is checkpointed after a large write, outside the writer's turn."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from conftest import DIALECT
from store import Store
from store.checkpoint import CHECKPOINT_WAL_BYTES

pytestmark = pytest.mark.skipif(DIALECT != "sqlite", reason="SQLite only")


async def open_store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'gateway.db'}")
    await store.upgrade()
    return store


async def write_blob(store: Store, size: int) -> None:
    async with store.write() as tx:
        await tx.session.execute(text("CREATE TABLE IF NOT EXISTS filler (data BLOB)"))
        await tx.session.execute(text("INSERT INTO filler VALUES (:data)"),
                                 {"data": b"x" * size})


def test_autocheckpoint_is_off(tmp_path: Path) -> None:
    async def run() -> int:
        store = await open_store(tmp_path)
        try:
            async with store.read() as tx:
                return (await tx.session.execute(text("PRAGMA wal_autocheckpoint"))).scalar()
        finally:
            await store.close()

    assert asyncio.run(run()) == 0


def test_large_write_is_checkpointed(tmp_path: Path) -> None:
    async def run() -> tuple[int, int, int] | None:
        store = await open_store(tmp_path)
        try:
            await write_blob(store, CHECKPOINT_WAL_BYTES + 1024)
            await store._checkpointer.wait()
            return store._checkpointer.last_result
        finally:
            await store.close()

    result = asyncio.run(run())

    assert result is not None
    busy, frames, copied = result
    assert busy == 0
    assert frames > 0
    assert copied == frames


def test_small_write_skips_checkpoint(tmp_path: Path) -> None:
    async def run() -> tuple[int, int, int] | None:
        store = await open_store(tmp_path)
        try:
            await write_blob(store, 1024)
            await store._checkpointer.wait()
            return store._checkpointer.last_result
        finally:
            await store.close()

    assert asyncio.run(run()) is None


def test_reader_snapshot_limits_checkpoint(tmp_path: Path) -> None:
    # A reader that keeps an old snapshot stops the checkpoint short of the
    # newest frames. The writes around it commit all the same.
    async def run() -> tuple[tuple[int, int, int] | None, int]:
        store = await open_store(tmp_path)
        reader = sqlite3.connect(tmp_path / "gateway.db", isolation_level=None)
        try:
            await write_blob(store, 1024)
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM filler").fetchone()
            await write_blob(store, CHECKPOINT_WAL_BYTES + 1024)
            await write_blob(store, 1024)
            await store._checkpointer.wait()
            async with store.read() as tx:
                rows = (await tx.session.execute(text("SELECT count(*) FROM filler"))).scalar()
            return store._checkpointer.last_result, rows
        finally:
            reader.close()
            await store.close()

    result, rows = asyncio.run(run())

    assert rows == 3
    assert result is not None
    _busy, frames, copied = result
    assert copied < frames


def test_log_file_shrinks_after_a_checkpoint(tmp_path: Path) -> None:
    # After a complete checkpoint, the next write starts the log over and cuts
    # the file back, so later small writes start no checkpoint of their own.
    async def run() -> tuple[int, object, object]:
        store = await open_store(tmp_path)
        try:
            await write_blob(store, CHECKPOINT_WAL_BYTES + 1024)
            await store._checkpointer.wait()
            first = store._checkpointer.last_result
            await write_blob(store, 1024)
            await store._checkpointer.wait()
            size = (tmp_path / "gateway.db-wal").stat().st_size
            return size, first, store._checkpointer.last_result
        finally:
            await store.close()

    size, first, last = asyncio.run(run())

    assert size < CHECKPOINT_WAL_BYTES
    assert first is not None
    assert last is first
