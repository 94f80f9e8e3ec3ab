"""Test databases: a SQLite file per test, or a PostgreSQL database per test.

With GATEWAY_TEST_DATABASE_URL unset or empty, every test gets its own SQLite
file under its tmp_path. With it set to a server URL such as
postgresql://postgres@127.0.0.1:5432/test, every test that requests a
database gets a new PostgreSQL database, cloned from a template that this run
migrated once, and the database is dropped when the test ends. Names carry the
process id and a random part, so two runs on one server never share data.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from store import Store
from store.database import upgrade_schema

log = logging.getLogger(__name__)

TEST_DATABASE_ENV = "GATEWAY_TEST_DATABASE_URL"
T = TypeVar("T")


def server_url() -> str | None:
    """Return the PostgreSQL URL the suite runs against, or None for SQLite."""
    value = os.environ.get(TEST_DATABASE_ENV, "").strip()
    return value or None


def run_in_thread(work: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine function on a new event loop in a new thread.

    Fixtures and helpers call this, so it must work whether or not the calling
    thread already runs an event loop (asyncio.run() raises when one runs).
    """
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(work()))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    thread = threading.Thread(target=target, name="test-database")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


class PostgresDatabases:
    """Creates one database per test on a PostgreSQL server and drops it after."""

    def __init__(self, url: str) -> None:
        self.server = make_url(url)
        if self.server.get_backend_name() not in ("postgresql", "postgres"):
            raise ValueError(
                f"{TEST_DATABASE_ENV} is {url!r}; set it to a PostgreSQL URL such as "
                "postgresql://postgres@127.0.0.1:5432/test, or leave it empty for SQLite."
            )
        self.prefix = f"gwtest_{os.getpid()}_{secrets.token_hex(3)}"
        self._template: str | None = None
        self._count = 0
        self._lock = threading.Lock()
        # Databases created since the last drop_created(), dropped after each test.
        self.created: list[str] = []
        # DROP DATABASE waits for a checkpoint, so drops run in the background
        # while the next test starts; drop_all() waits for them.
        self._dropper = ThreadPoolExecutor(max_workers=2, thread_name_prefix="drop-db")
        self._drops: list[Future[None]] = []

    def url_for(self, name: str) -> str:
        """Return the plain postgresql:// URL of database NAME on the server."""
        url: URL = self.server.set(drivername="postgresql", database=name)
        return url.render_as_string(hide_password=False)

    def create(self) -> str:
        """Create an empty, migrated database and return its URL."""
        with self._lock:
            template = self._ensure_template()
            self._count += 1
            name = f"{self.prefix}_{self._count}"
            self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            self.created.append(name)
        return self.url_for(name)

    def create_blank(self) -> str:
        """Create a database without tables, for tests of the migrations themselves."""
        with self._lock:
            self._count += 1
            name = f"{self.prefix}_{self._count}"
            self._execute(f'CREATE DATABASE "{name}"')
            self.created.append(name)
        return self.url_for(name)

    def drop_created(self) -> None:
        """Drop every database created since the last call."""
        with self._lock:
            while self.created:
                self._drops.append(self._dropper.submit(self._drop, self.created.pop()))

    def drop_all(self) -> None:
        """Drop the test databases and the template at the end of the run."""
        self.drop_created()
        self._dropper.shutdown(wait=True)
        for drop in self._drops:
            drop.result()
        with self._lock:
            if self._template is not None:
                self._drop(self._template)
                self._template = None

    def _ensure_template(self) -> str:
        if self._template is None:
            name = f"{self.prefix}_template"
            self._execute(f'CREATE DATABASE "{name}"')
            self._template = name
            # Alembic runs its own event loop, so keep it off any running one.
            run_in_thread(lambda: asyncio.to_thread(upgrade_schema, self.url_for(name)))
            log.info("migrated template database %s", name)
        return self._template

    def _drop(self, name: str) -> None:
        # FORCE ends sessions that a killed gateway process may have left behind.
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _execute(self, statement: str) -> None:
        async def work() -> None:
            connection = await asyncpg.connect(
                host=self.server.host or "127.0.0.1",
                port=self.server.port or 5432,
                user=self.server.username,
                password=self.server.password,
                database=self.server.database or "postgres",
            )
            try:
                await connection.execute(statement)
            finally:
                await connection.close()

        run_in_thread(work)


def sqlite_url(tmp_path: Path) -> str:
    """Return the URL of the SQLite file a test keeps under its tmp_path."""
    return f"sqlite:///{tmp_path / 'gateway.db'}"


async def query(store: Store, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Run one SQL statement through STORE in a write transaction; return its rows."""
    async with store.write() as tx:
        result = await tx.session.execute(text(sql), params)
        return [tuple(row) for row in result] if result.returns_rows else []
