"""The queue of this process's SQLite write transactions, short ones first."""

from __future__ import annotations

import asyncio
from collections import deque

# A waiting bulk writer lets at most this many regular writers go first, so a
# steady stream of small messages cannot hold back a large one for ever.
MAX_OVERTAKES = 16


class WriterQueue:
    """Queue that grants one writer at a time, waiting regular writers before bulk ones.

    A bulk write (the raw bytes and files of a message of many megabytes) keeps
    SQLite's single writer busy for tenths of a second. Small messages that queue behind
    several of them in arrival order would wait for all of them, so a regular
    writer that waits goes before a waiting bulk writer, up to MAX_OVERTAKES
    times in a row. Writers of one kind go in arrival order.
    """

    def __init__(self, max_overtakes: int = MAX_OVERTAKES) -> None:
        self._max_overtakes = max_overtakes
        self._busy = False
        self._regular: deque[asyncio.Future[None]] = deque()
        self._bulk: deque[asyncio.Future[None]] = deque()
        self._overtakes = 0

    async def acquire(self, *, bulk: bool) -> None:
        """Wait for this writer's turn; cancelling the wait gives up the turn."""
        if not self._busy and not self._regular and not self._bulk:
            self._busy = True
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._bulk if bulk else self._regular
        waiting.append(turn)
        try:
            await turn
        except BaseException:
            if turn in waiting:
                waiting.remove(turn)
            elif turn.done() and not turn.cancelled():
                # The turn was granted just before the cancellation: pass it on.
                self.release()
            raise

    def release(self) -> None:
        """End the current writer's turn and grant the next one, if any waits."""
        while True:
            turn = self._next_turn()
            if turn is None:
                self._busy = False
                return
            if not turn.done():
                turn.set_result(None)
                return

    def _next_turn(self) -> asyncio.Future[None] | None:
        if self._bulk and (not self._regular or self._overtakes >= self._max_overtakes):
            self._overtakes = 0
            return self._bulk.popleft()
        if self._regular:
            if self._bulk:
                self._overtakes += 1
            return self._regular.popleft()
        return None
