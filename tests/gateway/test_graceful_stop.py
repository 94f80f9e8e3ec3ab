"""A stop of the gateway: sessions get 421, work in hand finishes within the grace period."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from conftest import DIALECT, FakeClock, RunningGateway, database_url, make_config
from conftest import running_gateway, sample
from gateway.cli import to_crlf
from gateway.config import Config, OutboundConfig
from gateway.model import App
from ports import free_port
from processes import child_environment, wait_for_health

SHUTTING_DOWN = "421 4.3.2 Service shutting down; please try again later"
# Logged by store/database.py when BEGIN must wait for another connection's lock.
LOCK_WAIT_LOG = "write lock held by another connection"
sqlite_only = pytest.mark.skipif(DIALECT != "sqlite", reason="holds SQLite's write lock")


class RawSession:
    """An SMTP client on a plain socket, so a test reads every reply line and the close."""

    def __init__(self, port: int) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=60)
        self._lines = self.socket.makefile("rb")
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.socket.sendall(data)

    def command(self, line: str) -> str:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def reply(self) -> str:
        """Return the last line of the next reply, or "" when the server closed."""
        while True:
            line = self._lines.readline()
            if not line or line[3:4] != b"-":
                return line.decode().rstrip("\r\n")

    def rest(self) -> list[str]:
        """Return every reply line until the server closes the connection."""
        return [line.decode().rstrip("\r\n") for line in self._lines]

    def close(self) -> None:
        self._lines.close()
        self.socket.close()


class LogWatch(logging.Handler):
    """A handler that sets an event when a record contains TEXT."""

    def __init__(self, text: str) -> None:
        super().__init__(level=logging.DEBUG)
        self.text = text
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


@contextmanager
def watching(logger_name: str, text: str) -> Iterator[threading.Event]:
    """Yield an event that is set when LOGGER_NAME logs a record containing TEXT."""
    logger = logging.getLogger(logger_name)
    handler = LogWatch(text)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler.seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextmanager
def write_lock(config: Config) -> Iterator[sqlite3.Connection]:
    """Hold the SQLite database's write lock from another connection."""
    path = config.database.url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield holder
    finally:
        if holder.in_transaction:
            holder.rollback()
        holder.close()


def begin_stop(running: RunningGateway) -> Future[None]:
    """Start the gateway's stop on its loop and return the future of its end."""
    with watching("gateway.service", "stopping:") as started:
        done = asyncio.run_coroutine_threadsafe(running.gateway.stop(), running.loop)
        assert started.wait(60), "the stop did not begin"
    return done


def send_message(session: RawSession, data: bytes, *, after: bytes = b"") -> None:
    """Send a whole transaction of DATA, and AFTER right behind it, without reading the reply."""
    assert session.command("EHLO client.example.com").startswith("250")
    assert session.command("MAIL FROM:<ada@example.com>").startswith("250")
    assert session.command("RCPT TO:<support@localhost>").startswith("250")
    assert session.command("DATA").startswith("354")
    text = to_crlf(data).replace(b"\r\n.", b"\r\n..")
    session.send(text + b".\r\n" + after)


def count_rows(config: Config, table: str) -> int:
    path = config.database.url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        (count,) = connection.execute(f"SELECT count(*) FROM {table}").fetchone()
    return count


def add_ada(running: RunningGateway) -> None:
    running.add_builder("ada@example.com", name="Ada Lovelace",
                        apps=(App("Client Portal", "https://portal.example.com"),))


def test_idle_session_gets_421(config: Config, clock: FakeClock) -> None:
    with running_gateway(config, clock) as running:
        port = running.smtp_port
        session = RawSession(port)
        assert session.command("EHLO client.example.com").startswith("250")

        running.call(running.gateway.stop)

        assert session.rest() == [SHUTTING_DOWN]
        session.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=10)


@sqlite_only
def test_message_being_stored_gets_250_then_421(
    config: Config, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.service")
    with running_gateway(config, clock) as running:
        add_ada(running)
        port = running.smtp_port
        session = RawSession(port)
        with write_lock(config) as holder, watching("store.database", LOCK_WAIT_LOG) as waits:
            # The NOOP right behind the message must get no reply.
            send_message(session, sample("gmail_plain_and_html.eml"), after=b"NOOP\r\n")
            assert waits.wait(60), "storing never waited for the write lock"

            stopped = begin_stop(running)
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=10)
            holder.rollback()

            replies = session.rest()
            stopped.result(timeout=60)
        session.close()

    assert replies[0].startswith("250 ")
    assert replies[1:] == [SHUTTING_DOWN]
    assert count_rows(config, "inbound_messages") == 1
    assert count_rows(config, "tickets") == 1
    assert "1 SMTP session(s) open, 1 message(s) in flight" in caplog.text
    assert "1 message(s) finished, 0 cancelled" in caplog.text


@sqlite_only
def test_stop_ends_after_grace_period(
    config: Config, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.service")
    with running_gateway(config, clock, stop_grace_seconds=0.5) as running:
        add_ada(running)
        session = RawSession(running.smtp_port)
        with write_lock(config) as holder, watching("store.database", LOCK_WAIT_LOG) as waits:
            send_message(session, sample("gmail_plain_and_html.eml"))
            assert waits.wait(60), "storing never waited for the write lock"

            with watching("adapters.smtp", "ended before its") as cancelled:
                running.call(running.gateway.stop)
                replies = session.rest()
                holder.rollback()
                # Logged once the cancelled transaction has rolled back.
                assert cancelled.wait(60), "the cancelled message was not logged"
        session.close()

    assert replies == []
    assert count_rows(config, "inbound_messages") == 0
    assert count_rows(config, "tickets") == 0
    assert "0 message(s) finished, 1 cancelled" in caplog.text


class HeldRelay:
    """A relay that records each message, then holds its 250 until released."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.received = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        self.received.set()
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 60)
        return "250 OK"


@pytest.fixture
def held_relay() -> Iterator[tuple[HeldRelay, int]]:
    relay = HeldRelay()
    port = free_port()
    controller = Controller(relay, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield relay, port
    finally:
        relay.release.set()
        controller.stop()


def test_outbox_worker_finishes_email_in_hand(
    tmp_path: Path, clock: FakeClock, held_relay: tuple[HeldRelay, int]
) -> None:
    relay, relay_port = held_relay
    outbound = OutboundConfig(relay_host="127.0.0.1", relay_port=relay_port,
                              relay_starttls=False, relay_timeout_seconds=30.0)
    config = replace(make_config(tmp_path), outbound=outbound)
    with running_gateway(config, clock, background=True) as running:
        add_ada(running)
        code, text = running.send(sample("gmail_plain_and_html.eml"))
        assert code == 250, text
        assert relay.received.wait(60), "the worker sent no acknowledgement"

        stopped = begin_stop(running)
        relay.release.set()
        stopped.result(timeout=60)

    with running_gateway(config, clock) as restarted:
        # Past the claim lease, so an email left claimed would be sent again.
        clock.advance(seconds=config.outbound.claim_lease_seconds + 60)
        attempted = restarted.flush_outbox()
        rows = restarted.sql("SELECT state, attempts FROM outbox")

    assert attempted == 0
    assert rows == [("sent", 1)]
    assert len(relay.messages) == 1


@dataclass
class ServeProcess:
    """A `serve` child process on free loopback ports, with its log file."""

    process: subprocess.Popen[bytes]
    smtp_port: int
    database_url: str
    log_path: Path

    def stop(self) -> int:
        """Send SIGTERM and return the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


@contextmanager
def serve_process(tmp_path: Path) -> Iterator[ServeProcess]:
    smtp_port, web_port = free_port(), free_port()
    url = database_url(tmp_path)
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(f"""
[smtp]
host = "127.0.0.1"
port = {smtp_port}

[web]
host = "127.0.0.1"
port = {web_port}
public_url = "http://127.0.0.1:{web_port}"

[database]
url = "{url}"

[outbound]
maildir = "{tmp_path / 'outbox'}"
""")
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config_path)],
            cwd=tmp_path, env=child_environment(), stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_health(process, "serve", web_port, log_path.read_text)
        yield ServeProcess(process, smtp_port, url, log_path)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_serve_exits_0_on_sigterm(tmp_path: Path) -> None:
    with serve_process(tmp_path) as serve:
        session = RawSession(serve.smtp_port)
        assert session.command("EHLO client.example.com").startswith("250")

        serve.process.send_signal(signal.SIGTERM)
        replies = session.rest()
        returncode = serve.process.wait(timeout=60)
    session.close()

    output = serve.log_path.read_text()
    assert replies == [SHUTTING_DOWN]
    assert returncode == 0, output
    assert "1 SMTP session(s) open, 0 message(s) in flight" in output
    assert "0 message(s) finished, 0 cancelled" in output


@sqlite_only
def test_serve_exits_while_lock_held(tmp_path: Path) -> None:
    with serve_process(tmp_path) as serve:
        holder = sqlite3.connect(serve.database_url.removeprefix("sqlite:///"),
                                 isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            session = RawSession(serve.smtp_port)
            # After the 354 reply the message is in flight. Storing it waits for the lock.
            send_message(session, sample("gmail_plain_and_html.eml"))
            # The lock is released only after the process has exited.
            returncode = serve.stop()
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    session.close()

    output = serve.log_path.read_text()
    assert returncode == 0, output
    assert "0 message(s) finished, 1 cancelled" in output
    assert "exiting with 1 cancelled task(s) still waiting" in output
