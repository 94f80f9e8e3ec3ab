"""The schema comes from migrations, and both databases run with durable settings."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from alembic.autogenerate import compare_metadata
import pytest
from alembic.migration import MigrationContext

import databases
from conftest import DIALECT, POSTGRES, database_url
from gateway.model import Builder
from store import Store
from store.database import create_engine, upgrade_schema
from store.models import Base

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_migrations_match_models(tmp_path: Path) -> None:
    url = POSTGRES.create_blank() if POSTGRES else database_url(tmp_path)
    upgrade_schema(url)

    async def compare() -> list[object]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(
                    lambda sync: compare_metadata(MigrationContext.configure(sync),
                                                  Base.metadata)
                )
        finally:
            await engine.dispose()

    differences = databases.run_in_thread(compare)

    assert differences == []


@pytest.mark.skipif(DIALECT != "postgresql", reason="PostgreSQL only")
def test_postgres_commits_synchronously(tmp_path: Path) -> None:
    async def read_setting() -> str:
        store = Store(database_url(tmp_path))
        try:
            async with store.write() as tx:
                return (await tx.session.execute(_text("show synchronous_commit"))).scalar()
        finally:
            await store.close()

    assert databases.run_in_thread(read_setting) == "on"


@pytest.mark.skipif(DIALECT != "sqlite", reason="SQLite only")
def test_sqlite_runs_wal_and_synchronous_full(tmp_path: Path) -> None:
    async def read_pragmas() -> tuple[str, int]:
        store = Store(f"sqlite:///{tmp_path / 'pragmas.db'}")
        await store.upgrade()
        async with store.read() as tx:
            mode = (await tx.session.execute(_text("PRAGMA journal_mode"))).scalar()
            sync = (await tx.session.execute(_text("PRAGMA synchronous"))).scalar()
        await store.close()
        return mode, sync

    mode, sync = asyncio.run(read_pragmas())

    assert mode == "wal"
    assert sync == 2  # FULL


def _text(sql: str):  # noqa: ANN202
    from sqlalchemy import text

    return text(sql)


def _open_tickets(url: str, count: int) -> list[int]:
    async def work() -> list[int]:
        store = Store(url)
        numbers = []
        async with store.read() as tx:
            builder = await tx.find_builder("ada@example.com")
        assert isinstance(builder, Builder)
        for _ in range(count):
            async with store.write() as tx:
                _id, number = await tx.create_ticket(
                    builder=builder, title="Portal is slow", description="Pages take ages",
                    app=None, category="other", severity="sev3", now=NOW,
                )
            numbers.append(number)
        await store.close()
        return numbers

    return asyncio.run(work())


def test_two_processes_get_unique_increasing_numbers(tmp_path: Path) -> None:
    url = database_url(tmp_path)

    async def prepare() -> None:
        store = Store(url)
        await store.upgrade()
        async with store.write() as tx:
            await tx.upsert_builder("ada@example.com", name="Ada", timezone=None, apps=(),
                                    now=NOW)
        await store.close()

    asyncio.run(prepare())
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        first, second = pool.starmap(_open_tickets, [(url, 150), (url, 150)])

    assert len(set(first) | set(second)) == 300
    assert first == sorted(first)
    assert second == sorted(second)
    assert asyncio.run(_max_ticket_number(url)) == 300


async def _max_ticket_number(url: str) -> int:
    store = Store(url)
    try:
        [(highest,)] = await databases.query(store, "select max(number) from tickets")
    finally:
        await store.close()
    return highest


@pytest.mark.skipif(POSTGRES, reason="changes the SQLite file behind the store's back")
def test_status_counts_are_kept_until_a_write(tmp_path: Path) -> None:
    from gateway.model import TicketFilter

    async def scenario() -> tuple[int, int, int]:
        store = Store(f"sqlite:///{tmp_path / 'counts.db'}")
        await store.upgrade()
        async with store.write() as tx:
            builder = await tx.upsert_builder("ada@example.com", name="Ada", timezone=None,
                                              apps=(), now=NOW)
            await tx.create_ticket(builder=builder, title="Portal is slow",
                                   description="Pages take ages", app=None,
                                   category="other", severity="sev3", now=NOW)
        async with store.read() as tx:
            first = (await tx.list_tickets(TicketFilter())).total
        # A change made outside this store is not seen while the counts are kept.
        other = sqlite3.connect(tmp_path / "counts.db")
        other.execute("update tickets set status = 'closed'")
        other.commit()
        other.close()
        async with store.read() as tx:
            kept = (await tx.list_tickets(TicketFilter())).open
        async with store.write() as tx:
            await tx.create_ticket(builder=builder, title="Portal is slower",
                                   description="Pages take longer", app=None,
                                   category="other", severity="sev3", now=NOW)
        async with store.read() as tx:
            fresh = (await tx.list_tickets(TicketFilter())).open
        await store.close()
        return first, kept, fresh

    first, kept, fresh = asyncio.run(scenario())

    assert first == 1
    assert kept == 1
    assert fresh == 1


def test_concurrent_upgrades_build_one_schema(tmp_path: Path) -> None:
    url = POSTGRES.create_blank() if POSTGRES else database_url(tmp_path)
    context = multiprocessing.get_context("spawn")

    with context.Pool(3) as pool:
        pool.map(upgrade_schema, [url, url, url])

    async def ticket_counter() -> int:
        store = Store(url)
        async with store.read() as tx:
            value = (await tx.session.execute(_text(
                "select count(*) from counters where name = 'ticket_number'"))).scalar()
        await store.close()
        return int(value)

    assert asyncio.run(ticket_counter()) == 1
