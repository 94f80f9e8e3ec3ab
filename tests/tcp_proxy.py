"""A loopback TCP proxy that a test can cut, to play a database server that goes away."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from sqlalchemy.engine import URL

from ports import free_port


class TcpProxy:
    """Forward 127.0.0.1:PORT to a database server until cut, on an event loop of its own."""

    def __init__(self, target_host: str, target_port: int, *, database_url: URL) -> None:
        self.port = free_port()
        self._target = (target_host, target_port)
        # DATABASE_URL (a database on the target server) reached through the proxy.
        self.database_url = database_url.set(host="127.0.0.1", port=self.port).render_as_string(
            hide_password=False
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy",
                                        daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        # While set, connections stay open but nothing passes, as with a hung server.
        self._stalled = False

    def start(self) -> None:
        """Start the loop and accept connections."""
        self._thread.start()
        self._run(self._listen())

    def cut(self) -> None:
        """Refuse new connections and drop the open ones, as a stopped server would."""
        self._run(self._cut())

    def stall(self) -> None:
        """Keep every connection open but pass nothing on, as a hung server would."""
        self._stalled = True

    def restore(self) -> None:
        """Accept connections again on the same port."""
        self._run(self._listen())

    def close(self) -> None:
        """Drop every connection and stop the loop."""
        self._run(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _run(self, work: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._stalled:
            self._writers.add(writer)
            await reader.read()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, upstream_writer))
        await asyncio.gather(self._pipe(reader, upstream_writer),
                             self._pipe(upstream_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self._stalled:
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
