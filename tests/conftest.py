"""Shared fixtures: a whole gateway on loopback with a real database.

The database is a SQLite file per test, or a PostgreSQL database per test when
GATEWAY_TEST_DATABASE_URL names a server (see tests/databases.py).
"""

from __future__ import annotations

import asyncio
import smtplib
import threading
import time
from contextlib import contextmanager
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

import databases
from gateway.cli import to_crlf
from gateway.config import Config, DatabaseConfig, OutboundConfig, SmtpConfig, WebConfig
from gateway.model import App
from gateway.service import Gateway

T = TypeVar("T")
MESSAGES = Path(__file__).resolve().parent / "messages"

_POSTGRES_URL = databases.server_url()
POSTGRES = databases.PostgresDatabases(_POSTGRES_URL) if _POSTGRES_URL else None
DIALECT = "postgresql" if POSTGRES else "sqlite"


def database_url(tmp_path: Path) -> str:
    """Return the URL of a new, empty database for one test (migrated on PostgreSQL)."""
    if POSTGRES is None:
        return databases.sqlite_url(tmp_path)
    return POSTGRES.create()


@pytest.fixture(autouse=True)
def _drop_test_databases() -> Iterator[None]:
    yield
    if POSTGRES is not None:
        POSTGRES.drop_created()


@pytest.fixture(scope="session", autouse=True)
def _drop_template_database() -> Iterator[None]:
    yield
    if POSTGRES is not None:
        POSTGRES.drop_all()


class FakeClock:
    """A clock that tests move by hand."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        from datetime import timedelta

        self.current += timedelta(**delta)


@dataclass
class RunningGateway:
    """A gateway serving on its own event loop in a background thread."""

    gateway: Gateway
    loop: asyncio.AbstractEventLoop
    clock: FakeClock
    maildir: Path

    @property
    def smtp_port(self) -> int:
        assert self.gateway.smtp_address is not None
        return self.gateway.smtp_address[1]

    @property
    def web_url(self) -> str:
        assert self.gateway.web_address is not None
        host, port = self.gateway.web_address
        return f"http://{host}:{port}"

    def call(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine function on the gateway's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(work(), self.loop).result(timeout=60)

    def add_builder(self, email: str, name: str = "", apps: tuple[App, ...] = ()) -> None:
        async def work() -> None:
            async with self.gateway.store.write() as tx:
                await tx.upsert_builder(email, name=name, timezone=None, apps=apps,
                                        now=self.clock())

        self.call(work)

    def send(
        self,
        data: bytes,
        *,
        mail_from: str = "ada@example.com",
        to: tuple[str, ...] = ("support@localhost",),
    ) -> tuple[int, str]:
        """Deliver DATA over SMTP and return the final reply code and text."""
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=60) as client:
            client.ehlo()
            code, reply = client.mail(mail_from)
            if code >= 400:
                return code, reply.decode()
            for recipient in to:
                code, reply = client.rcpt(recipient)
                if code >= 400:
                    return code, reply.decode()
            code, reply = client.data(to_crlf(data))
            return code, reply.decode()

    def flush_outbox(self) -> int:
        """Deliver every due outbox email now; return how many were attempted."""
        worker = self.gateway.worker
        assert worker is not None
        total = 0
        while attempted := self.call(worker.run_once):
            total += attempted
        return total

    def outbox_files(self) -> list[Path]:
        """Return the delivered Maildir files in delivery order."""
        if not (self.maildir / "new").exists():
            return []
        files = (self.maildir / "new").glob("*")
        return sorted(files, key=lambda path: (path.stat().st_mtime_ns, path.name))

    def ticket(self, number: int) -> Any:
        async def work() -> Any:
            async with self.gateway.store.read() as tx:
                return await tx.get_ticket(number)

        return self.call(work)

    def sql(self, statement: str, **params: Any) -> list[tuple[Any, ...]]:
        """Run one SQL statement through the gateway's store; return its rows."""
        return self.call(lambda: databases.query(self.gateway.store, statement, **params))


def wait_until(check: Callable[[], bool], description: str,
               timeout_seconds: float = 30.0) -> None:
    """Poll CHECK until it holds, or fail naming DESCRIPTION.

    The timeout only bounds a wait for work on another thread; it measures nothing.
    """
    deadline = time.monotonic() + timeout_seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_seconds:g} s waiting for "
                                 f"{description}")
        time.sleep(0.05)


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    """Return a config on free loopback ports with state under TMP_PATH."""
    config = Config(
        smtp=SmtpConfig(host="127.0.0.1", port=0),
        web=WebConfig(host="127.0.0.1", port=0),
        database=DatabaseConfig(url=database_url(tmp_path)),
        outbound=OutboundConfig(maildir=str(tmp_path / "outbox")),
        source="tests",
    )
    return replace(config, **overrides)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@contextmanager
def running_gateway(
    config: Config, clock: FakeClock, **options: Any
) -> Iterator[RunningGateway]:
    """Start a gateway whose outbox is delivered only when a test flushes it.

    OPTIONS go to Gateway, such as background=True to run the outbox worker.
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gateway-loop", daemon=True)
    thread.start()
    service = Gateway(config, now=clock, **{"background": False, **options})
    running = RunningGateway(service, loop, clock, Path(config.outbound.maildir))
    try:
        running.call(service.start)
        yield running
    finally:
        running.call(service.stop)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture
def gateway(config: Config, clock: FakeClock) -> Iterator[RunningGateway]:
    with running_gateway(config, clock) as running:
        yield running


@pytest.fixture
def ada(gateway: RunningGateway) -> RunningGateway:
    """The gateway with builder Ada Lovelace and her Client Portal app."""
    gateway.add_builder(
        "ada@example.com",
        name="Ada Lovelace",
        apps=(App("Client Portal", "https://portal.example.com"),),
    )
    return gateway


def sample(name: str) -> bytes:
    """Return the bytes of a sample message in tests/messages."""
    return (MESSAGES / name).read_bytes()
