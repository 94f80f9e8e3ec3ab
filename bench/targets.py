"""The servers a benchmark drives: baseline sinks and gateway processes on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
from sqlalchemy import insert, text, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from bench import corpus
from bench.relaxed_serve import relaxed_durability
from store import Store
from store.models import AppRow, BuilderRow, Counter, MailIndexRow, MessageRow, TicketRow

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# A PostgreSQL server on which the harness may create and drop bench_* databases.
DATABASE_URL_VARIABLE = "GATEWAY_BENCH_DATABASE_URL"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REPLY_SIGNING_KEY = "bench-reply-signing-key-not-secret"
SEED_CHUNK = 5000
# Ticket statuses in the seeded store, about as a busy desk has them.
SEED_STATUSES = ("open", "waiting_on_builder", "in_progress", "resolved", "closed",
                 "new", "triaged", "escalated", "reopened", "closed")
REPLYABLE = frozenset({"open", "waiting_on_builder", "in_progress", "resolved", "new",
                       "triaged", "escalated", "reopened"})
STARTUP_TIMEOUT_SECONDS = 60.0


# Ports already given out in this run. The kernel may hand a probe the port that
# the previous probe just closed, and a gateway's SMTP and web ports must differ.
_given_ports: set[int] = set()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago and not given out before."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Wait until PORT accepts connections; raise when PROCESS exits first."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise RuntimeError(f"server exited with {process.returncode}; "
                               f"its output is in {log_path}:\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on 127.0.0.1:{port} within "
                       f"{STARTUP_TIMEOUT_SECONDS:.0f} s; see {log_path}")


@dataclass
class Server:
    """A server process started by the harness, stopped by its PID."""

    name: str
    process: subprocess.Popen[bytes]
    smtp_port: int
    web_port: int | None = None
    database_url: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """Send SIGTERM to this process only and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def cpu_seconds(self) -> float:
        """Return the user plus system CPU time of the process so far."""
        times = psutil.Process(self.pid).cpu_times()
        return times.user + times.system

    def rss_bytes(self) -> int:
        return psutil.Process(self.pid).memory_info().rss

    def reset_peak_rss(self) -> bool:
        """Reset the kernel's peak-RSS mark (VmHWM); return False when not allowed."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def peak_rss_bytes(self) -> int:
        """Return the peak resident size since start or the last reset (VmHWM)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return self.rss_bytes()


def start_sink(mode: str, workdir: Path) -> Server:
    """Start a baseline sink ("bare" or "parse") in its own process."""
    port = free_port()
    log_path = workdir / f"sink-{mode}.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [PYTHON, str(ROOT / "bench" / "sink.py"), mode, str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    wait_for_port(port, process, log_path)
    return Server(f"sink-{mode}", process, port)


# The scheduled jobs run once at start. On a seeded store whose tickets waited
# weeks, that first run would send digests and auto-resolve thousands of
# tickets while a load is measured, so gateways under load run without them;
# L6 measures the digest job on its own.
SCHEDULED_JOBS_OFF = (
    "[reminders]\n"
    "max_reminders = 0\n"
    "auto_resolve_after_days = 0\n"
    "escalate_sev1_after_minutes = 0\n"
    "raw_retention_days = 0\n"
)


def write_config(workdir: Path, name: str, database_url: str, *,
                 reminders: str = SCHEDULED_JOBS_OFF) -> tuple[Path, int, int]:
    """Write a gateway config on free loopback ports; return (path, smtp, web)."""
    smtp_port, web_port = free_port(), free_port()
    state = workdir / name
    state.mkdir(parents=True, exist_ok=True)
    path = state / "gateway.toml"
    path.write_text(
        "[smtp]\n"
        'host = "127.0.0.1"\n'
        f"port = {smtp_port}\n"
        'support_addresses = ["support@localhost"]\n'
        f"{_client_limits()}\n"
        "[web]\n"
        'host = "127.0.0.1"\n'
        f"port = {web_port}\n\n"
        "[database]\n"
        f"url = {json.dumps(database_url)}\n\n"
        "[outbound]\n"
        f"maildir = {json.dumps(str(state / 'outbox'))}\n\n"
        "[security]\n"
        f"reply_signing_key = {json.dumps(REPLY_SIGNING_KEY)}\n\n"
        f"{reminders}"
    )
    return path, smtp_port, web_port


# All benchmark mail comes from one loopback client, so the per-client limits
# that protect a public server are raised above what any workload sends.
BENCH_CLIENT_LIMITS = {
    "max_sessions_per_client": 64,
    "max_messages_per_client_per_minute": 1_000_000,
    "new_tickets_per_sender_per_hour": 100_000,
}


def _client_limits() -> str:
    from dataclasses import fields

    from gateway.config import SmtpConfig

    known = {f.name for f in fields(SmtpConfig)}
    return "".join(f"{key} = {value}\n" for key, value in BENCH_CLIENT_LIMITS.items()
                   if key in known)


def start_gateway(
    workdir: Path, name: str, database_url: str, *, relaxed: bool = False
) -> Server:
    """Start `python -m gateway serve --config FILE`, or the relaxed launcher."""
    config_path, smtp_port, web_port = write_config(workdir, name, database_url)
    log_path = workdir / name / "gateway.log"
    if relaxed:
        command = [PYTHON, str(ROOT / "bench" / "relaxed_serve.py"), str(config_path)]
    else:
        command = [PYTHON, "-m", "gateway", "serve", "--config", str(config_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GATEWAY_CONFIG", None)
    env.pop("GATEWAY_DATABASE_URL", None)
    # The gateway logs every delivery, so its output goes to a file, not the console.
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                   cwd=ROOT, env=env)
    wait_for_port(smtp_port, process, log_path)
    wait_for_port(web_port, process, log_path)
    return Server(name, process, smtp_port, web_port, database_url)


def http_get(port: int, path: str, timeout_seconds: float = 30.0) -> tuple[int, bytes]:
    """GET http://127.0.0.1:PORT/PATH and return (status, body)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}",
                                timeout=timeout_seconds) as response:
        return response.status, response.read()


# Databases


def postgres_url(database: str | None = None) -> URL:
    """Return the URL of $GATEWAY_BENCH_DATABASE_URL, or of DATABASE on its server.

    Raises ValueError when the variable does not contain a PostgreSQL URL.
    """
    value = os.environ.get(DATABASE_URL_VARIABLE) or DEFAULT_DATABASE_URL
    try:
        url = make_url(value)
    except ArgumentError as exc:
        raise ValueError(f"{DATABASE_URL_VARIABLE} is not a valid URL: {exc}") from exc
    if url.get_backend_name() not in ("postgresql", "postgres"):
        raise ValueError(f"{DATABASE_URL_VARIABLE}={url} is not a PostgreSQL URL")
    # asyncpg takes plain postgresql:// URLs, without SQLAlchemy's "+driver".
    url = url.set(drivername="postgresql")
    return url if database is None else url.set(database=database)


def _connection_string(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def postgres_problem() -> str | None:
    """Return why a connection to postgres_url() failed, or None when it succeeded."""
    async def probe() -> str | None:
        import asyncpg

        try:
            connection = await asyncpg.connect(_connection_string(postgres_url()), timeout=3)
        except Exception as exc:  # noqa: BLE001 - a bad port or option is a reason too
            return f"{type(exc).__name__}: {exc}"
        await connection.close()
        return None

    return asyncio.run(probe())


async def create_postgres_database(name: str) -> str:
    """Create database NAME (dropping an old one) and return its URL."""
    import asyncpg

    connection = await asyncpg.connect(_connection_string(postgres_url()))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return _connection_string(postgres_url(name))


async def drop_postgres_database(name: str) -> None:
    """Drop database NAME if it exists."""
    import asyncpg

    connection = await asyncpg.connect(_connection_string(postgres_url()))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def database_settings(url: str, *, relaxed: bool = False) -> str:
    """Return the durability settings in force on a gateway connection to URL.

    With RELAXED, the connection is opened inside bench/relaxed_serve.py's hooks,
    exactly as the relaxed gateway opens its own.
    """
    if relaxed:
        with relaxed_durability():
            store = Store(url)
    else:
        store = Store(url)
    try:
        async with store.read() as tx:
            if store.dialect == "sqlite":
                mode = await tx.session.scalar(text("PRAGMA journal_mode"))
                sync = await tx.session.scalar(text("PRAGMA synchronous"))
                names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
                return f"SQLite journal_mode={mode}, synchronous={names.get(sync, sync)}"
            sync = await tx.session.scalar(text("SHOW synchronous_commit"))
            fsync = await tx.session.scalar(text("SHOW fsync"))
            version = await tx.session.scalar(text("SHOW server_version"))
            return f"PostgreSQL {version}, synchronous_commit={sync}, fsync={fsync}"
    finally:
        await store.close()


# The loggers of the gateway's own packages, for code that runs in the harness.
GATEWAY_LOGGERS = ("gateway", "adapters", "store")


@contextmanager
def gateway_log_to(path: Path) -> Iterator[None]:
    """Send the log lines of gateway code run in this process to PATH, not the console.

    The outbox workers log one line per delivered message, tens of thousands in
    one run, which would bury the harness's progress lines.
    """
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    loggers = [logging.getLogger(name) for name in GATEWAY_LOGGERS]
    saved = [logger.propagate for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    try:
        yield
    finally:
        for logger, propagate in zip(loggers, saved, strict=True):
            logger.removeHandler(handler)
            logger.propagate = propagate
        handler.close()


@dataclass(frozen=True)
class Seeded:
    """Result of seeding: the ticket count and the tickets that accept replies."""

    tickets: int
    reply_targets: tuple[tuple[int, str, str], ...]


async def seed(url: str, *, tickets: int, builders: int = corpus.BUILDER_COUNT) -> Seeded:
    """Apply migrations and bulk-insert BUILDERS builders and TICKETS tickets."""
    store = Store(url)
    try:
        await store.upgrade()
        engine = store._engine  # noqa: SLF001 - bulk SQL needs the engine itself
        now = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
        async with engine.begin() as connection:
            await connection.execute(insert(BuilderRow.__table__), [
                {"id": i + 1, "email": corpus.builder_email(i),
                 "name": f"Builder {i}", "timezone": "UTC", "created_at": now}
                for i in range(builders)
            ])
            await connection.execute(insert(AppRow.__table__), [
                {"builder_id": i + 1, "name": f"App {i % 50}",
                 "uri": f"https://app{i}.example.com"}
                for i in range(builders)
            ])
        targets: list[tuple[int, str, str]] = []
        for start in range(0, tickets, SEED_CHUNK):
            rows, messages, index = [], [], []
            for number in range(start + 1, min(tickets, start + SEED_CHUNK) + 1):
                builder = (number * 7919) % builders
                status = SEED_STATUSES[number % len(SEED_STATUSES)]
                moment = now + timedelta(seconds=number * 13)
                rows.append({
                    "id": number, "number": number,
                    "title": f"Seeded report {number} about the orders screen",
                    "description": "The orders screen shows stale totals after a reload.",
                    "builder_id": builder + 1,
                    "app_name": f"App {builder % 50}", "app_uri": None,
                    "category": ("data_sync", "bug", "billing", "other")[number % 4],
                    "severity": ("sev1", "sev2", "sev3", "sev4")[number % 4],
                    "priority": ("P1", "P2", "P3", "P4")[number % 4],
                    "status": status, "created_at": moment,
                    "last_activity_at": moment, "status_changed_at": moment,
                })
                messages.append({
                    "ticket_id": number, "visibility": "public", "kind": "builder",
                    "author": corpus.builder_email(builder),
                    "body": "The orders screen shows stale totals after a reload.",
                    "created_at": moment,
                })
                message_id = f"<seed.{number}@bench.example.com>"
                index.append({"message_id": message_id, "ticket_id": number,
                              "outbound": False, "created_at": moment})
                if status in REPLYABLE:
                    targets.append((number, corpus.builder_email(builder), message_id))
            async with engine.begin() as connection:
                await connection.execute(insert(TicketRow.__table__), rows)
                await connection.execute(insert(MessageRow.__table__), messages)
                await connection.execute(insert(MailIndexRow.__table__), index)
        async with engine.begin() as connection:
            await connection.execute(
                update(Counter.__table__).where(Counter.name == "ticket_number")
                .values(value=tickets)
            )
            if store.dialect == "postgresql":
                for table in ("tickets", "builders"):
                    await connection.execute(text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"
                    ))
                await connection.execute(text("ANALYZE"))
            else:
                await connection.execute(text("ANALYZE"))
        return Seeded(tickets, tuple(targets))
    finally:
        await store.close()
