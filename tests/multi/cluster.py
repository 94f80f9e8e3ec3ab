"""Several real `support-gateway serve` processes sharing one PostgreSQL database.

Each instance gets its own SMTP and HTTP port and its own outbound relay: a
recording SMTP server in the test process, so a test can check which instance sent
which email. A relay can be told to stall, which holds an instance in the
middle of a send so that the test can kill it there.
"""

from __future__ import annotations

import email
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

import databases
from ports import free_port
from processes import child_environment, wait_for_health
from store import Store

SUPPORT_ADDRESS = "support@example.com"
STALL_MAX_SECONDS = 60


@dataclass
class SentEmail:
    """One email that a relay accepted with 250."""

    instance: str
    message_id: str
    recipient: str
    subject: str


class RecordingRelay:
    """An SMTP relay on loopback that adds each accepted email to a list shared by all relays."""

    def __init__(self, instance: str, accepted: list[SentEmail], lock: threading.Lock) -> None:
        self.instance = instance
        self._accepted = accepted
        self._lock = lock
        self.stalling = False
        self.stalled = threading.Event()
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self.stalling = False
        self._controller.stop()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Record the message, or hold the sender while the relay stalls."""
        import asyncio

        if self.stalling:
            self.stalled.set()
            deadline = time.monotonic() + STALL_MAX_SECONDS
            while self.stalling and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return "451 4.3.0 Relay stalled by the test; try again later"

        message = email.message_from_bytes(envelope.original_content, policy=policy.default)
        with self._lock:
            for recipient in envelope.rcpt_tos:
                self._accepted.append(
                    SentEmail(
                        instance=self.instance,
                        message_id=str(message["Message-ID"] or "").strip(),
                        recipient=recipient,
                        subject=str(message["Subject"] or ""),
                    )
                )
        return "250 2.0.0 Recorded"


@dataclass
class Instance:
    """One gateway process."""

    name: str
    smtp_port: int
    web_port: int
    relay: RecordingRelay
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def send(self, data: bytes, *, mail_from: str = "ada@example.com",
             before_data: Callable[[], None] | None = None) -> tuple[int, str]:
        """Deliver DATA over SMTP and return the reply code and text."""
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=60) as client:
            client.ehlo()
            client.mail(mail_from)
            client.rcpt(SUPPORT_ADDRESS)
            if before_data is not None:
                before_data()
            code, reply = client.data(data)
            return code, reply.decode()

    def kill(self) -> None:
        """Kill the process with SIGKILL, as a crash or an out-of-memory kill would."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Cluster:
    """N gateway processes on one database, with their relays."""

    database_url: str
    instances: list[Instance]
    accepted: list[SentEmail] = field(default_factory=list)

    def query(self, statement: str, **params: Any) -> list[tuple[Any, ...]]:
        """Run one SQL statement on the shared database and return its rows."""

        async def work() -> list[tuple[Any, ...]]:
            store = Store(self.database_url)
            try:
                return await databases.query(store, statement, **params)
            finally:
                await store.close()

        return databases.run_in_thread(work)

    def wait_until(self, condition: Callable[[], bool], timeout_seconds: float,
                   description: str) -> None:
        """Poll CONDITION until it holds, or fail with the instances' logs."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout_seconds} s waiting for {description}\n"
                             + self.logs())

    def logs(self) -> str:
        """Return the tail of every instance's log, for failure messages."""
        parts = []
        for instance in self.instances:
            tail = "\n".join(instance.log_text().splitlines()[-40:])
            parts.append(f"--- {instance.name} ---\n{tail}")
        return "\n".join(parts)


@contextmanager
def running_cluster(
    database_url: str,
    tmp_path: Path,
    *,
    count: int,
    claim_lease_seconds: float = 4.0,
    relay_timeout_seconds: float = 3.0,
    extra_config: str = "",
) -> Iterator[Cluster]:
    """Start COUNT gateway processes on DATABASE_URL and stop them afterwards.

    EXTRA_CONFIG (TOML sections such as [slack] or [reminders]) is added to
    every instance's configuration file.
    """
    lock = threading.Lock()
    cluster = Cluster(database_url, [])
    try:
        for index in range(count):
            name = f"gw{index + 1}"
            relay = RecordingRelay(name, cluster.accepted, lock)
            relay.start()
            instance = Instance(
                name=name,
                smtp_port=free_port(),
                web_port=free_port(),
                relay=relay,
                config_path=tmp_path / f"{name}.toml",
                log_path=tmp_path / f"{name}.log",
            )
            instance.config_path.write_text(
                _config_text(instance, database_url, tmp_path,
                             claim_lease_seconds, relay_timeout_seconds) + extra_config
            )
            cluster.instances.append(instance)

        env = child_environment()
        for instance in cluster.instances:
            instance.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config",
                 str(instance.config_path)],
                cwd=tmp_path,
                env=env,
                stdout=instance.log_path.open("wb"),
                stderr=subprocess.STDOUT,
            )
        for instance in cluster.instances:
            assert instance.process is not None
            wait_for_health(instance.process, instance.name, instance.web_port, cluster.logs)
        yield cluster
    finally:
        for instance in cluster.instances:
            _stop(instance)
            instance.relay.stop()


def new_ticket_mail(message_id: str, subject: str, body: str,
                    sender: str = "Ada Lovelace <ada@example.com>") -> bytes:
    """Return a builder's new-ticket email with CRLF line endings."""
    return _mail(sender, message_id, subject, body, headers=())


def reply_mail(message_id: str, in_reply_to: str, subject: str, body: str,
               sender: str = "Ada Lovelace <ada@example.com>") -> bytes:
    """Return a builder's reply that threads to IN_REPLY_TO."""
    return _mail(sender, message_id, subject, body,
                 headers=(f"In-Reply-To: <{in_reply_to}>", f"References: <{in_reply_to}>"))


def send_together(jobs: Sequence[tuple[Instance, bytes]]) -> list[tuple[int, str]]:
    """Deliver each (instance, data) pair at once: every DATA starts together."""
    barrier = threading.Barrier(len(jobs))
    results: list[tuple[int, str] | BaseException] = [ValueError("not run")] * len(jobs)

    def run(index: int, instance: Instance, data: bytes) -> None:
        try:
            results[index] = instance.send(data, before_data=lambda: barrier.wait(30))
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, inst, data))
               for i, (inst, data) in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


def _mail(sender: str, message_id: str, subject: str, body: str,
          headers: Sequence[str]) -> bytes:
    lines = [
        f"From: {sender}",
        f"To: {SUPPORT_ADDRESS}",
        f"Subject: {subject}",
        f"Message-ID: <{message_id}>",
        "Date: Tue, 01 Dec 2026 09:00:00 +0000",
        *headers,
        "Content-Type: text/plain; charset=utf-8",
        "",
        body,
        "",
    ]
    return "\r\n".join(lines).encode()


def _config_text(instance: Instance, database_url: str, tmp_path: Path,
                 claim_lease_seconds: float, relay_timeout_seconds: float) -> str:
    return f"""
[smtp]
host = "127.0.0.1"
port = {instance.smtp_port}
support_addresses = ["{SUPPORT_ADDRESS}"]

[web]
host = "127.0.0.1"
port = {instance.web_port}
public_url = "http://127.0.0.1:{instance.web_port}"

[database]
url = "{database_url}"

[outbound]
maildir = "{tmp_path / instance.name / 'outbox'}"
relay_host = "127.0.0.1"
relay_port = {instance.relay.port}
relay_starttls = false
relay_timeout_seconds = {relay_timeout_seconds}
claim_lease_seconds = {claim_lease_seconds}
retry_base_seconds = 1.0
retry_max_seconds = 2.0
"""


def _stop(instance: Instance) -> None:
    process = instance.process
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
