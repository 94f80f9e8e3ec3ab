"""Outbox claims and delivery records: where SQLite runs them, and what a failed claim leaves."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text

import databases
from conftest import DIALECT, database_url
from gateway.delivery import OutboxWorker
from gateway.errors import StorageUnavailable
from store import Store
from store.database import short_statements_on_loop
from store.models import OutboxRow

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)
SMALL_PAYLOAD_BYTES = 6 * 1024
# Above SHORT_STATEMENT_MAX_PARAMETER_BYTES, like a support reply with files.
LARGE_PAYLOAD_BYTES = 4 * 1024 * 1024

sqlite_only = pytest.mark.skipif(DIALECT != "sqlite", reason="SQLite only")


class RecordingTransport:
    """A transport that records the recipient of each delivery."""

    def __init__(self) -> None:
        self.recipients: list[str] = []

    async def deliver(self, sender: str, recipient: str, data: bytes) -> None:
        self.recipients.append(recipient)


class StatementThreads:
    """The threads in which SQLite ran the statements that contain given texts."""

    def __init__(self, *parts: str) -> None:
        self._parts = parts
        self.threads: dict[str, list[int]] = {part: [] for part in parts}

    def __call__(self, statement: str) -> None:
        for part in self._parts:
            if part in statement:
                self.threads[part].append(threading.get_ident())

    async def watch(self, tx: Any) -> None:
        """Record the statements of the connection of TX."""
        connection = await tx.session.connection()
        raw = await connection.get_raw_connection()
        raw.driver_connection._connection.set_trace_callback(self)

    async def watch_every_connection(self, store: Store) -> None:
        """Record the statements of every connection STORE opens from now on."""

        def on_connect(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.driver_connection._connection.set_trace_callback(self)

        event.listen(store._engine.sync_engine, "connect", on_connect)
        await store._engine.dispose()


async def open_store(tmp_path: Path) -> Store:
    store = Store(database_url(tmp_path))
    await store.upgrade()
    return store


async def queue_emails(store: Store, count: int, payload_bytes: int) -> list[str]:
    """Queue COUNT due emails of PAYLOAD_BYTES each; return their recipients."""
    recipients = [f"builder{number}@example.com" for number in range(count)]
    for recipient in recipients:
        async with store.write(bulk=True) as tx:
            await tx.enqueue_email(
                kind="support_reply", sender="support@example.com", recipient=recipient,
                data=b"p" * payload_bytes, message_id=None, ticket_id=None, now=NOW,
            )
    return recipients


CLAIM = "UPDATE outbox SET claimed_by"
FETCH = "SELECT outbox.id, outbox.channel"


@sqlite_only
@pytest.mark.parametrize(("payload_bytes", "on_loop"),
                         [(SMALL_PAYLOAD_BYTES, True), (LARGE_PAYLOAD_BYTES, False)])
def test_claim_of_large_rows_off_loop(tmp_path: Path, payload_bytes: int, on_loop: bool) -> None:
    """A short claim sets and fetches its rows on the loop unless their payloads are large."""

    async def run() -> tuple[StatementThreads, int, list[int]]:
        store = await open_store(tmp_path)
        try:
            await queue_emails(store, 2, payload_bytes)
            threads = StatementThreads(CLAIM, FETCH)
            async with store.write(short=True) as tx:
                await threads.watch(tx)
                emails = await tx.claim_due_emails(worker="test", now=NOW, lease=LEASE, limit=10)
            return threads, threading.get_ident(), [len(email.data) for email in emails]
        finally:
            await store.close()

    threads, loop_thread, sizes = asyncio.run(run())

    assert sizes == [payload_bytes, payload_bytes]
    assert len(threads.threads[CLAIM]) == 1
    assert (threads.threads[CLAIM][0] == loop_thread) is on_loop
    assert len(threads.threads[FETCH]) == 1
    assert (threads.threads[FETCH][0] == loop_thread) is on_loop


@sqlite_only
def test_large_claim_keeps_later_statements_on_loop(tmp_path: Path) -> None:
    """After claiming large rows on the thread, the rest of the transaction runs on the loop."""

    async def run() -> tuple[StatementThreads, int, int]:
        store = await open_store(tmp_path)
        try:
            await queue_emails(store, 2, LARGE_PAYLOAD_BYTES)
            threads = StatementThreads("SELECT count(*) FROM outbox")
            async with store.write(short=True) as tx:
                await threads.watch(tx)
                emails = await tx.claim_due_emails(worker="test", now=NOW, lease=LEASE, limit=10)
                await tx.session.execute(text("SELECT count(*) FROM outbox"))
            return threads, threading.get_ident(), len(emails)
        finally:
            await store.close()

    threads, loop_thread, claimed = asyncio.run(run())

    assert claimed == 2
    assert threads.threads["SELECT count(*) FROM outbox"] == [loop_thread]


@sqlite_only
def test_loop_statements_resume_after_error(tmp_path: Path) -> None:
    """An error inside a block kept off the loop does not leave the transaction off it."""

    async def run() -> tuple[StatementThreads, int]:
        store = await open_store(tmp_path)
        try:
            threads = StatementThreads("SELECT count(*) FROM outbox")
            async with store.write(short=True) as tx:
                await threads.watch(tx)
                with pytest.raises(RuntimeError), short_statements_on_loop(False):
                    raise RuntimeError("statement failed")
                await tx.session.execute(text("SELECT count(*) FROM outbox"))
            return threads, threading.get_ident()
        finally:
            await store.close()

    threads, loop_thread = asyncio.run(run())

    assert threads.threads["SELECT count(*) FROM outbox"] == [loop_thread]


FINISH = "attempts=(outbox.attempts + "


@sqlite_only
@pytest.mark.parametrize(
    ("stored_bytes", "given_bytes", "on_loop"),
    [
        pytest.param(SMALL_PAYLOAD_BYTES, SMALL_PAYLOAD_BYTES, True, id="small"),
        pytest.param(LARGE_PAYLOAD_BYTES, LARGE_PAYLOAD_BYTES, False, id="large"),
        pytest.param(SMALL_PAYLOAD_BYTES, None, False, id="size-unknown"),
    ],
)
def test_finish_of_large_row_off_loop(
    tmp_path: Path, stored_bytes: int, given_bytes: int | None, on_loop: bool
) -> None:
    """Recording an attempt rewrites the row, so a large or unknown one is updated on the thread."""

    async def run() -> tuple[StatementThreads, int, bool]:
        store = await open_store(tmp_path)
        try:
            await queue_emails(store, 1, stored_bytes)
            async with store.write() as tx:
                [claimed] = await tx.claim_due_emails(worker="test", now=NOW, lease=LEASE, limit=10)
            threads = StatementThreads(FINISH)
            async with store.write(short=True) as tx:
                await threads.watch(tx)
                recorded = await tx.finish_email(claimed.id, worker="test", now=NOW,
                                                 payload_bytes=given_bytes)
            return threads, threading.get_ident(), recorded
        finally:
            await store.close()

    threads, loop_thread, recorded = asyncio.run(run())

    assert recorded
    assert len(threads.threads[FINISH]) == 1
    assert (threads.threads[FINISH][0] == loop_thread) is on_loop


@sqlite_only
def test_worker_records_large_delivery_off_loop(tmp_path: Path) -> None:
    """The outbox worker passes each payload's size to the store when it records a delivery."""

    async def run() -> tuple[StatementThreads, int, list[str], list[str]]:
        store = await open_store(tmp_path)
        try:
            async with store.write(bulk=True) as tx:
                for recipient, size in (("small@example.com", SMALL_PAYLOAD_BYTES),
                                        ("large@example.com", LARGE_PAYLOAD_BYTES)):
                    await tx.enqueue_email(
                        kind="support_reply", sender="support@example.com",
                        recipient=recipient, data=b"p" * size, message_id=None,
                        ticket_id=None, now=NOW,
                    )
            threads = StatementThreads(FINISH)
            await threads.watch_every_connection(store)
            transport = RecordingTransport()
            worker = OutboxWorker(store=store, transport=transport, max_attempts=3,
                                  retry_base_seconds=30.0, retry_max_seconds=600.0,
                                  now=lambda: NOW)
            await worker.run_once()
            async with store.read() as tx:
                states = list(await tx.session.scalars(
                    select(OutboxRow.state).order_by(OutboxRow.id)))
            return threads, threading.get_ident(), transport.recipients, states
        finally:
            await store.close()

    threads, loop_thread, delivered, states = asyncio.run(run())

    assert delivered == ["small@example.com", "large@example.com"]
    assert states == ["sent", "sent"]
    small_record, large_record = threads.threads[FINISH]
    assert small_record == loop_thread
    assert large_record != loop_thread


def fail_first_statement(store: Store, marker: str, replacement: str) -> None:
    """Make the first statement that contains MARKER run REPLACEMENT instead."""
    fired: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> tuple[str, Any]:
        if marker in statement and not fired:
            fired.append(statement)
            return replacement, ()
        return statement, parameters

    event.listen(store._engine.sync_engine, "before_cursor_execute", before, retval=True)


FAILURES = [
    pytest.param(CLAIM, "SELECT * FROM no_such_table", id="claim"),
    pytest.param(FETCH, "SELECT * FROM no_such_table", id="fetch"),
    pytest.param(
        FETCH, "SELECT pg_terminate_backend(pg_backend_pid())", id="connection-lost",
        marks=pytest.mark.skipif(DIALECT != "postgresql", reason="PostgreSQL only"),
    ),
]


@pytest.mark.parametrize(("marker", "replacement"), FAILURES)
def test_failed_claim_leaves_rows_due(tmp_path: Path, marker: str, replacement: str) -> None:
    """A claim that fails midway claims nothing, and the next batch sends each email once."""

    async def run() -> tuple[list[str], list[str | None], list[str], int, int]:
        store = await open_store(tmp_path)
        try:
            recipients = await queue_emails(store, 3, 100 * 1024)
            transport = RecordingTransport()
            worker = OutboxWorker(store=store, transport=transport, max_attempts=3,
                                  retry_base_seconds=30.0, retry_max_seconds=600.0,
                                  now=lambda: NOW)
            fail_first_statement(store, marker, replacement)
            with pytest.raises(StorageUnavailable):
                await worker.run_once()
            async with store.read() as tx:
                claims = list(await tx.session.scalars(select(OutboxRow.claimed_by)))
            handled = await worker.run_once()
            next_batch = await worker.run_once()
            return recipients, claims, transport.recipients, handled, next_batch
        finally:
            await store.close()

    recipients, claims_after_failure, delivered, handled, next_batch = (
        databases.run_in_thread(run)
    )

    assert claims_after_failure == [None, None, None]
    assert handled == 3
    assert sorted(delivered) == recipients
    assert next_batch == 0


@sqlite_only
def test_email_claim_searches_its_channel_only(tmp_path: Path) -> None:
    """The due rows of the email channel are found by index, without walking Slack's."""

    async def run() -> list[str]:
        store = await open_store(tmp_path)
        claims: list[tuple[str, Any]] = []

        def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                   executemany: bool) -> None:
            if statement.startswith("SELECT outbox.id, length(outbox.payload)"):
                claims.append((statement, parameters))

        event.listen(store._engine.sync_engine, "before_cursor_execute", before)
        try:
            await queue_emails(store, 1, SMALL_PAYLOAD_BYTES)
            async with store.write() as tx:
                await tx.claim_due_emails(worker="test", now=NOW, lease=LEASE, limit=10)
            [(statement, parameters)] = claims
            async with store.read() as tx:
                connection = await tx.session.connection()
                result = await connection.exec_driver_sql(
                    f"EXPLAIN QUERY PLAN {statement}", parameters)
                return [str(row[-1]) for row in result]
        finally:
            await store.close()

    plan = asyncio.run(run())

    searches = [step for step in plan if "outbox" in step]
    assert len(searches) == 1
    assert "USING INDEX ix_outbox_due (channel=? AND state=? AND next_attempt_at<?)" in searches[0]
