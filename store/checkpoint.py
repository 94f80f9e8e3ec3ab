"""SQLite WAL checkpoints run after a write transaction, outside the writer's turn."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

# SQLite's own automatic checkpoint starts at 1,000 pages, about 4 MB with the
# default page size of 4,096 bytes. The gateway uses about the same threshold.
CHECKPOINT_WAL_BYTES = 4 * 1024 * 1024


class WalCheckpointer:
    """Checkpoints of the write-ahead log, each on a thread of its own.

    With SQLite's automatic checkpoint, the commit that passes the threshold
    also copies the log into the database file and syncs it before it returns.
    The commit of a message of many megabytes then keeps this process's single
    writer turn for tens of milliseconds longer, and every small message waits
    for it. The gateway's connections therefore turn the automatic checkpoint
    off (wal_autocheckpoint=0), and Store.write calls after_write once its turn
    is over. A PASSIVE checkpoint lets writers go on while it copies.
    """

    def __init__(self, database: Path, *, busy_timeout_seconds: float,
                 threshold_bytes: int = CHECKPOINT_WAL_BYTES) -> None:
        self._database = database
        self._wal = database.with_name(database.name + "-wal")
        self._busy_timeout_seconds = busy_timeout_seconds
        self._threshold_bytes = threshold_bytes
        self._connection: sqlite3.Connection | None = None
        self._running: asyncio.Task[None] | None = None
        # (busy, frames in the log, frames copied) of the last checkpoint.
        self.last_result: tuple[int, int, int] | None = None

    def after_write(self) -> None:
        """Start a checkpoint when the log has grown past the threshold and none runs.

        The file's size measures the log's content because the connections
        set journal_size_limit below the threshold (store/database.py).
        """
        if self._running is not None and not self._running.done():
            return
        try:
            size = self._wal.stat().st_size
        except FileNotFoundError:
            return
        if size < self._threshold_bytes:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # A transaction closed outside the event loop; the next write checks again.
            return
        self._running = loop.create_task(self._checkpoint(size))

    async def wait(self) -> None:
        """Wait for the running checkpoint, if any."""
        if self._running is not None:
            await asyncio.shield(self._running)

    async def close(self) -> None:
        """Wait for the running checkpoint and close the checkpoint connection."""
        await self.wait()
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def _checkpoint(self, size: int) -> None:
        try:
            self.last_result = await asyncio.to_thread(self._run)
        except sqlite3.Error as exc:
            log.warning("WAL checkpoint of a %d-byte log failed: %s; the next write retries",
                        size, exc)
            return
        busy, frames, copied = self.last_result
        log.debug("WAL checkpoint copied %d of %d frames (busy=%d)", copied, frames, busy)

    def _run(self) -> tuple[int, int, int]:
        if self._connection is None:
            self._connection = sqlite3.connect(
                self._database, timeout=self._busy_timeout_seconds,
                isolation_level=None, check_same_thread=False,
            )
        row = self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(row[0]), int(row[1]), int(row[2])
