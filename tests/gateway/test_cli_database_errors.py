"""The command line when the database is locked by another process or unreachable."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner, Result
from sqlalchemy.engine import make_url

from conftest import POSTGRES, database_url
from gateway.cli import EXIT_DATABASE_BUSY, cli
from ports import free_port
from store import database

# Short enough that each case ends quickly, long enough to show a real wait.
TEST_BUSY_TIMEOUT_MS = 200
WRITING_COMMANDS = {
    "builders add": ["builders", "add", "ada@example.com", "--name", "Ada"],
    "builders import": ["builders", "import", "BUILDERS_CSV"],
    "builders revoke-links": ["builders", "revoke-links", "ada@example.com"],
    "tickets reply": ["tickets", "reply", "1", "Please clear the cache."],
    "tickets note": ["tickets", "note", "1", "Same CDN issue as last week."],
    "tickets set": ["tickets", "set", "1", "--status", "closed"],
}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[database]\nurl = "{database_url(tmp_path)}"\n'
        f'[outbound]\nmaildir = "{tmp_path / "outbox"}"\n'
    )
    result = _invoke(path, "db", "upgrade")
    assert result.exit_code == 0, result.output
    return path


def _invoke(config_file: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config_file), *args])


def _database_url(config_file: Path) -> str:
    return config_file.read_text().split('"')[1]


def _arguments(command: str, tmp_path: Path) -> list[str]:
    csv_path = tmp_path / "builders.csv"
    csv_path.write_text("email,name\nada@example.com,Ada\n")
    return [str(csv_path) if a == "BUILDERS_CSV" else a for a in WRITING_COMMANDS[command]]


@contextmanager
def _sqlite_write_lock(url: str) -> Iterator[None]:
    """Hold SQLite's write lock from a connection of this test, as another process would."""
    connection = sqlite3.connect(make_url(url).database, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_MS", TEST_BUSY_TIMEOUT_MS)


@pytest.mark.skipif(POSTGRES is not None, reason="SQLite's write lock only")
@pytest.mark.parametrize("command", list(WRITING_COMMANDS), ids=list(WRITING_COMMANDS))
@pytest.mark.usefixtures("short_busy_timeout")
def test_sqlite_lock_gives_one_line_and_status(
    command: str, config_file: Path, tmp_path: Path
) -> None:
    arguments = _arguments(command, tmp_path)

    with _sqlite_write_lock(_database_url(config_file)):
        result = _invoke(config_file, *arguments)

    assert result.exit_code == EXIT_DATABASE_BUSY, result.output
    assert result.stderr.splitlines() == [
        "Error: the database is busy: another process has held its write lock for "
        "0.2 s; try again, or stop the process that holds it"
    ]


@pytest.mark.skipif(POSTGRES is not None, reason="SQLite's write lock only")
@pytest.mark.usefixtures("short_busy_timeout")
def test_db_upgrade_under_sqlite_lock(tmp_path: Path) -> None:
    url = database_url(tmp_path)
    config_file = tmp_path / "blank.toml"
    config_file.write_text(f'[database]\nurl = "{url}"\n')
    sqlite3.connect(make_url(url).database).close()

    with _sqlite_write_lock(url):
        result = _invoke(config_file, "db", "upgrade")

    assert result.exit_code == EXIT_DATABASE_BUSY, result.output
    assert result.stderr.startswith("Error: the database is busy:")
    assert len(result.stderr.splitlines()) == 1


@contextmanager
def _postgres_table_lock(url: str, table: str) -> Iterator[None]:
    """Hold an EXCLUSIVE lock on TABLE from another session until the block ends."""
    locked, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    async def hold() -> None:
        connection = await asyncpg.connect(url)
        try:
            async with connection.transaction():
                await connection.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
                locked.set()
                await asyncio.to_thread(release.wait)
        finally:
            await connection.close()

    def run() -> None:
        try:
            asyncio.run(hold())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
            locked.set()

    thread = threading.Thread(target=run, name="postgres-lock")
    thread.start()
    locked.wait(timeout=60)
    try:
        assert not errors, errors
        yield
    finally:
        release.set()
        thread.join()


@pytest.mark.skipif(POSTGRES is None, reason="PostgreSQL's lock_timeout only")
def test_postgres_lock_timeout_gives_busy_status(config_file: Path) -> None:
    url = _database_url(config_file)
    name = make_url(url).database
    asyncio.run(_execute(url, f"ALTER DATABASE \"{name}\" SET lock_timeout = '200ms'"))

    with _postgres_table_lock(url, "builders"):
        result = _invoke(config_file, "builders", "add", "ada@example.com")

    assert result.exit_code == EXIT_DATABASE_BUSY, result.output
    assert result.stderr.splitlines() == [
        "Error: the database is busy: another session held a lock for longer than "
        "PostgreSQL's lock_timeout; try again, or end the session that holds it"
    ]


async def _execute(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def test_unreachable_postgres_gives_one_line(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    config_file = tmp_path / "unreachable.toml"
    config_file.write_text(f'[database]\nurl = "{url}"\n')

    result = _invoke(config_file, "builders", "list")

    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(
        f"Error: could not connect to the database at {url}: Connect call failed"
    )
    assert result.stderr.rstrip().endswith(
        "check database.url and that the database server is running"
    )
    assert len(result.stderr.splitlines()) == 1


def test_silent_postgres_gives_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "POSTGRES_CONNECT_TIMEOUT_SECONDS", 1)
    # Accepts connections, as a hung server would, and never sends a byte.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    url = f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/test"
    config_file = tmp_path / "silent.toml"
    config_file.write_text(f'[database]\nurl = "{url}"\n')
    try:
        result = _invoke(config_file, "builders", "list")
    finally:
        silent.close()

    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(
        f"Error: could not connect to the database at {url}: no answer within 1 s;"
    )
    assert len(result.stderr.splitlines()) == 1
