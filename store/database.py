"""Engine setup: driver choice, durability settings and migrations."""

from __future__ import annotations

import asyncio
import enum
import fcntl
import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import event
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.errors import DatabaseBusy, StorageUnavailable

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# SQLSTATE lock_not_available: PostgreSQL ended a lock wait at lock_timeout.
POSTGRES_LOCK_NOT_AVAILABLE = "55P03"
# Connections per process. Each SMTP delivery, web request and outbox batch
# uses one connection only for the length of its transaction.
POSTGRES_POOL_SIZE = 10
POSTGRES_MAX_OVERFLOW = 10
POSTGRES_POOL_TIMEOUT_SECONDS = 30
# How long opening a connection may take. asyncpg's default is 60 s, which a
# client, or a command typed by hand, would wait out in silence.
POSTGRES_CONNECT_TIMEOUT_SECONDS = 10
# Drop connections that a firewall or PgBouncer may have closed while idle.
POSTGRES_POOL_RECYCLE_SECONDS = 1800
# A statement with a parameter longer than this (bytes or characters) runs on
# the connection's thread even in a short transaction: copying it into SQLite
# takes a while.
SHORT_STATEMENT_MAX_PARAMETER_BYTES = 64 * 1024

# SQLite cuts the WAL file back to this size when it starts the log over after
# a complete checkpoint. It is below the checkpoint threshold, so the file's
# size shows when the log contains enough to copy.
WAL_SIZE_LIMIT_BYTES = 1024 * 1024

# Set while a short SQLite write transaction runs (see short_statements_on_loop).
_statements_on_loop: ContextVar[bool] = ContextVar("statements_on_loop", default=False)


@contextmanager
def short_statements_on_loop(enabled: bool) -> Iterator[None]:
    """Run the SQLite calls of the current task on the event loop thread, if ENABLED.

    aiosqlite passes every call (BEGIN, opening a cursor, executing, fetching,
    closing the cursor, COMMIT) to the connection's own thread and back. Each of
    those trips costs the event loop more CPU than a short indexed statement
    itself, and a new ticket takes some fifty of them. Inside this block those
    calls run directly on the event loop, with three exceptions. BEGIN runs on
    the connection's thread when another connection holds the write lock,
    because waiting for it could take seconds. A statement with a large
    parameter runs there too. COMMIT runs there because it waits for the disk,
    and every session would wait with it. So does the rarer ROLLBACK of an open
    transaction. Enable it only around transactions of a few indexed
    statements. Every transaction sets it, so a task started inside a short
    transaction does not inherit it.
    """
    previous = _statements_on_loop.get()
    _statements_on_loop.set(enabled)
    try:
        yield
    finally:
        _statements_on_loop.set(previous)


class _Call(enum.Enum):
    """The kind of a call that aiosqlite passes to its thread."""

    BEGIN = "begin"
    END = "commit or rollback"
    SHORT = "short"
    OTHER = "other"


class _SQLiteConnection(aiosqlite.Connection):
    """An aiosqlite connection that runs short statements inline when asked to.

    NOTE: _execute is aiosqlite's internal dispatch to its thread, overridden
    here as aiosqlite 0.22 writes it. pyproject.toml keeps aiosqlite below 0.23.
    """

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if _statements_on_loop.get() and self._connection is not None:
            call = _classify(fn, args)
            if call is _Call.SHORT:
                return fn(*args, **kwargs)
            if call is _Call.BEGIN and _begin_without_waiting(self._connection, fn, args):
                return None
            # The pool rolls back each connection returned to it. Usually no
            # transaction is open then, and the rollback does nothing.
            if call is _Call.END and not self._connection.in_transaction:
                return fn(*args, **kwargs)
        return await super()._execute(fn, *args, **kwargs)


def _classify(fn: Callable[..., Any], args: tuple[Any, ...]) -> _Call:
    """Return the kind of the call FN(*ARGS)."""
    owner = getattr(fn, "__self__", None)
    name = getattr(fn, "__name__", "")
    if isinstance(owner, sqlite3.Connection):
        if name == "cursor":
            return _Call.SHORT
        return _Call.END if name in ("commit", "rollback") else _Call.OTHER
    if not isinstance(owner, sqlite3.Cursor) or name in ("executemany", "executescript"):
        return _Call.OTHER
    if args and isinstance(args[0], str) and args[0].lstrip()[:5].upper() == "BEGIN":
        return _Call.BEGIN
    parameters = args[1] if len(args) > 1 else ()
    values = parameters.values() if isinstance(parameters, dict) else parameters
    large = any(
        isinstance(value, (bytes, bytearray, memoryview, str))
        and len(value) > SHORT_STATEMENT_MAX_PARAMETER_BYTES
        for value in values
    )
    return _Call.OTHER if large else _Call.SHORT


def _begin_without_waiting(
    connection: sqlite3.Connection, begin: Callable[..., Any], args: tuple[Any, ...]
) -> bool:
    """Run BEGIN at once, or return False when another connection holds the write lock."""
    connection.execute("PRAGMA busy_timeout=0")
    try:
        begin(*args)
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
            raise
        log.debug("write lock held by another connection, so BEGIN waits on its thread")
        return False
    finally:
        connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    return True


def unavailable_error(exc: BaseException, url: str) -> StorageUnavailable | None:
    """Return the StorageUnavailable that explains EXC, or None for any other failure.

    EXC is an error of the database driver or of connecting to the database at
    URL. The explained causes are a lock held past the wait limit and a failed
    connection. Each message names what to do about its cause.
    """
    cause = getattr(exc, "orig", None)
    sqlite_code = getattr(cause, "sqlite_errorcode", None)
    if sqlite_code is not None and sqlite_code & 0xFF == sqlite3.SQLITE_BUSY:
        return DatabaseBusy(
            "the database is busy: another process has held its write lock for "
            f"{SQLITE_BUSY_TIMEOUT_MS / 1000:g} s; try again, or stop the process "
            "that holds it"
        )
    if getattr(cause, "sqlstate", None) == POSTGRES_LOCK_NOT_AVAILABLE:
        return DatabaseBusy(
            "the database is busy: another session held a lock for longer than "
            "PostgreSQL's lock_timeout; try again, or end the session that holds it"
        )
    # SQLAlchemy's error for a failed connection has no statement. asyncpg's
    # OSError for a refused or timed-out connection arrives without a wrapper.
    if isinstance(exc, OSError) or (isinstance(exc, DBAPIError) and exc.statement is None):
        parsed = make_url(url)
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {POSTGRES_CONNECT_TIMEOUT_SECONDS} s"
        elif isinstance(exc, OSError):
            reason = exc.strerror or str(exc) or type(exc).__name__
        else:
            reason = str(cause)
        if parsed.get_backend_name() == "sqlite":
            advice = "check database.url and that the file can be opened"
        else:
            advice = "check database.url and that the database server is running"
        return StorageUnavailable(
            f"could not connect to the database at "
            f"{parsed.render_as_string(hide_password=True)}: {reason}; {advice}"
        )
    return None


def async_url(url: str) -> URL:
    """Return URL with the async driver the gateway uses for its dialect."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise ValueError(
        f"unsupported database backend {backend!r}; use sqlite:///PATH or "
        "postgresql://USER@HOST:PORT/DB"
    )


def create_engine(url: str) -> AsyncEngine:
    """Create the async engine with durable commits and serialised SQLite writes."""
    target = async_url(url)
    if target.get_backend_name() == "postgresql":
        return _create_postgres_engine(target)


    if target.database and target.database != ":memory:":
        Path(target.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(target, async_creator=_sqlite_connector(target))
    _configure_sqlite(engine)
    return engine


def _sqlite_connector(target: URL) -> Callable[[], Any]:
    """Return a function that opens a _SQLiteConnection to TARGET."""
    arguments, options = SQLiteDialect_aiosqlite().create_connect_args(target)
    options["timeout"] = SQLITE_BUSY_TIMEOUT_MS / 1000
    # Short statements run on the event loop thread, the rest on aiosqlite's
    # thread, one after the other: never two threads at once.
    options["check_same_thread"] = False

    async def connect() -> _SQLiteConnection:
        connection = _SQLiteConnection(
            lambda: sqlite3.connect(*arguments, **options), iter_chunk_size=64
        )
        # As SQLAlchemy does for its own aiosqlite connections: a connection
        # left open must not keep the process from exiting.
        connection._thread.daemon = True
        return await connection

    return connect


def _create_postgres_engine(target: URL) -> AsyncEngine:
    # synchronous_commit=on for every session, whatever the server or role
    # default is, because a 250 reply promises that the change is on disk.
    # "off" or "local" can lose the newest commits in a crash.
    server_settings = {
        "synchronous_commit": "on",
        "application_name": "support-gateway",
    }
    return create_async_engine(
        target,
        connect_args={"server_settings": server_settings,
                      "timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS},
        pool_pre_ping=True,
        pool_size=POSTGRES_POOL_SIZE,
        max_overflow=POSTGRES_MAX_OVERFLOW,
        pool_timeout=POSTGRES_POOL_TIMEOUT_SECONDS,
        pool_recycle=POSTGRES_POOL_RECYCLE_SECONDS,
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    # The sqlite3 module's own transaction handling starts transactions late and
    # as DEFERRED, so two processes doing read-modify-write lose updates silently.
    # Take control of BEGIN and open every write transaction with BEGIN IMMEDIATE.
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a 250 reply promises that the message survives a power loss.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Store.write checkpoints the log after the writer's turn (store/checkpoint.py).
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        # Without a limit the log file keeps its largest size once SQLite starts
        # it over, and its size would no longer show how much it contains.
        cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def upgrade_schema(url: str) -> None:
    """Apply every Alembic migration to the database at URL."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    try:
        with _sqlite_migration_lock(url):
            # "heads": feature branches of the migration history are each applied.
            command.upgrade(config, "heads")
    except (SQLAlchemyError, OSError) as exc:
        explained = unavailable_error(exc, url)
        if explained is None:
            raise
        raise explained from exc
    log.debug("database schema is up to date (%s)", make_url(url).get_backend_name())


@contextmanager
def _sqlite_migration_lock(url: str) -> Iterator[None]:
    # Alembic runs SQLite DDL outside a transaction, so two processes starting
    # at once could both create the same table. A lock file beside the database
    # lets one migrate while the other waits. PostgreSQL uses an advisory lock.
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        yield
        return
    lock_path = Path(f"{parsed.database}.migration-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


async def upgrade_schema_async(url: str) -> None:
    """Apply the migrations from async code without blocking the event loop."""
    await asyncio.to_thread(upgrade_schema, url)
