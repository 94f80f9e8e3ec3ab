"""A small SMTP load generator and the statistics the report quotes."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

MAIL_FROM = "bench@example.com"


@dataclass
class Sent:
    """One delivery: its final SMTP reply code and the seconds from MAIL FROM to it."""

    code: int
    seconds: float
    size_bytes: int


@dataclass
class LoadResult:
    """Every delivery of one load run and the run's wall-clock time."""

    sent: list[Sent] = field(default_factory=list)
    wall_seconds: float = 0.0
    unsent: int = 0

    @property
    def accepted(self) -> int:
        return sum(1 for s in self.sent if s.code == 250)

    @property
    def rate(self) -> float:
        """Accepted messages per second."""
        return self.accepted / self.wall_seconds if self.wall_seconds else 0.0

    def codes(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for s in self.sent:
            counts[s.code] = counts.get(s.code, 0) + 1
        return counts


class SmtpError(Exception):
    """The server replied to a command with an unexpected code."""


class SmtpSession:
    """One persistent SMTP connection that sends messages one after another."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, host: str, port: int, timeout_seconds: float = 30.0) -> SmtpSession:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=1 << 20), timeout_seconds
        )
        session = cls(reader, writer)
        await session._expect(220)
        session._writer.write(b"EHLO bench.example.com\r\n")
        await session._expect(250)
        return session

    async def send(self, data: bytes, rcpt: str, timeout_seconds: float = 120.0) -> Sent:
        """Send one dot-stuffed message; return its final code and time to it."""
        started = time.perf_counter()
        self._writer.write(f"MAIL FROM:<{MAIL_FROM}>\r\n".encode())
        code = await self._reply(timeout_seconds)
        if code == 250:
            self._writer.write(f"RCPT TO:<{rcpt}>\r\n".encode())
            code = await self._reply(timeout_seconds)
        if code == 250:
            self._writer.write(b"DATA\r\n")
            code = await self._reply(timeout_seconds)
            if code == 354:
                self._writer.write(data)
                self._writer.write(b".\r\n")
                code = await self._reply(timeout_seconds)
        if code != 250:
            self._writer.write(b"RSET\r\n")
            await self._reply(timeout_seconds)
        return Sent(code, time.perf_counter() - started, len(data))

    async def close(self) -> None:
        try:
            self._writer.write(b"QUIT\r\n")
            await asyncio.wait_for(self._reply(5.0), 5.0)
        except (OSError, asyncio.TimeoutError, SmtpError):
            pass
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass

    async def _expect(self, expected: int) -> None:
        code = await self._reply(30.0)
        if code != expected:
            raise SmtpError(f"expected {expected}, got {code}")

    async def _reply(self, timeout_seconds: float) -> int:
        while True:
            line = await asyncio.wait_for(self._reader.readline(), timeout_seconds)
            if not line:
                raise SmtpError("connection closed by the server")
            if line[3:4] != b"-":
                return int(line[:3])


def stuff(data: bytes) -> bytes:
    """Return DATA with CRLF line ends, dot-stuffed and ending in CRLF."""
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..")


async def run_load(
    host: str,
    port: int,
    messages: Sequence[bytes],
    *,
    sessions: int,
    deadline_seconds: float,
    rcpt: str = "support@localhost",
) -> LoadResult:
    """Send pre-stuffed MESSAGES over SESSIONS connections; stop at the deadline."""
    result = LoadResult()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for message in messages:
        queue.put_nowait(message)
    started = time.perf_counter()
    stop_at = started + deadline_seconds

    async def worker() -> None:
        session = await SmtpSession.open(host, port)
        try:
            while time.perf_counter() < stop_at:
                try:
                    data = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                result.sent.append(await session.send(data, rcpt))
        finally:
            await session.close()

    await asyncio.gather(*(worker() for _ in range(sessions)))
    result.wall_seconds = time.perf_counter() - started
    result.unsent = queue.qsize()
    return result


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the FRACTION quantile of VALUES (nearest rank), or NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    """Return the median of VALUES, or NaN when empty."""
    return statistics.median(values) if values else float("nan")
