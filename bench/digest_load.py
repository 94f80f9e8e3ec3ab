"""L6: the scheduled digest job over many builders, run in this process.

The job runs on the gateway's own wiring (make_desks, make_scheduled_work) against
a seeded database, and a before_cursor_execute hook counts every SQL statement it
sends. Each repetition is a new weekly period, so every builder is due again.
The job only claims and queues the digests, and the outbox worker composes each
one when it sends it. So each repetition then drains the outbox with the
gateway's OutboxWorker, to a transport that only counts, and times that too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, insert, select, text, update

from bench import targets
from gateway.config import load_config
from gateway.delivery import OutboxWorker
from gateway.scheduler import make_scheduled_work
from gateway.service import make_desks
from store import Store
from store.models import BuilderRow, Counter, MessageRow, OutboxRow, TicketRow

log = logging.getLogger(__name__)

SEEDED_AT = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
# A Monday at 10:00 UTC: the default schedule (weekdays at 09:00) has a period
# one hour before it. Each repetition moves one week on.
FIRST_RUN_AT = datetime(2027, 1, 4, 10, 0, tzinfo=UTC)
SEED_CHUNK = 5000
# Tickets per builder that wait on the builder. The other tickets have other statuses.
WAITING_PER_BUILDER = 2
OTHER_STATUSES = ("open", "in_progress", "resolved", "closed", "new", "triaged")
QUESTION = ("Could you tell us which browser you use and send a screenshot of the "
            "orders screen right after the reload?")


@dataclass(frozen=True)
class DigestRun:
    """One timed run of the digest job."""

    seconds: float
    statements: int
    queued: int
    outbox_added: int
    recipients_added: int
    # Composing and delivering the queued digests with the outbox worker.
    drain_seconds: float = 0.0
    delivered: int = 0
    delivered_recipients: int = 0
    digest_bytes: int = 0


class CountingTransport:
    """An outbound transport that keeps only who got how many emails, and their size."""

    def __init__(self) -> None:
        self.recipients: dict[str, int] = {}
        self.bytes = 0

    async def deliver(self, sender: str, recipient: str, data: bytes) -> None:
        self.recipients[recipient] = self.recipients.get(recipient, 0) + 1
        self.bytes += len(data)


def builder_email(index: int) -> str:
    """Return the address of seeded builder INDEX (unique for any count)."""
    return f"digest-builder{index:06d}@example.com"


async def seed_digest_store(url: str, *, builders: int, tickets: int) -> int:
    """Seed BUILDERS builders and TICKETS tickets; return how many builders are due."""
    store = Store(url)
    try:
        await store.upgrade()
        engine = store._engine  # noqa: SLF001 - bulk SQL needs the engine itself
        async with engine.begin() as connection:
            for start in range(0, builders, SEED_CHUNK):
                await connection.execute(insert(BuilderRow.__table__), [
                    {"id": i + 1, "email": builder_email(i), "name": f"Builder {i}",
                     "timezone": "UTC", "created_at": SEEDED_AT}
                    for i in range(start, min(builders, start + SEED_CHUNK))
                ])
        waiting_count = min(tickets, builders * WAITING_PER_BUILDER)
        for start in range(0, tickets, SEED_CHUNK):
            rows, messages = [], []
            for number in range(start + 1, min(tickets, start + SEED_CHUNK) + 1):
                # 7919 is prime, so the first 2 × builders tickets reach every builder.
                builder = (number * 7919) % builders
                waiting = number <= waiting_count
                moment = SEEDED_AT + timedelta(seconds=number * 7)
                rows.append({
                    "id": number, "number": number,
                    "title": f"Orders screen shows stale totals ({number})",
                    "description": "The orders screen shows stale totals after a reload.",
                    "builder_id": builder + 1, "app_name": f"App {builder % 50}",
                    "app_uri": None,
                    "category": ("data_sync", "bug", "billing", "other")[number % 4],
                    "severity": ("sev1", "sev2", "sev3", "sev4")[number % 4],
                    "priority": ("P1", "P2", "P3", "P4")[number % 4],
                    "status": ("waiting_on_builder" if waiting
                               else OTHER_STATUSES[number % len(OTHER_STATUSES)]),
                    "created_at": moment, "last_activity_at": moment,
                    "status_changed_at": moment,
                })
                messages.append({
                    "ticket_id": number, "visibility": "public",
                    "kind": "support" if waiting else "builder",
                    "author": "grace" if waiting else builder_email(builder),
                    "body": QUESTION, "created_at": moment,
                })
            async with engine.begin() as connection:
                await connection.execute(insert(TicketRow.__table__), rows)
                await connection.execute(insert(MessageRow.__table__), messages)
        async with engine.begin() as connection:
            await connection.execute(
                update(Counter.__table__).where(Counter.name == "ticket_number")
                .values(value=tickets))
            if store.dialect == "postgresql":
                for table in ("tickets", "builders", "messages"):
                    await connection.execute(text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"))
            await connection.execute(text("ANALYZE"))
        return min(builders, waiting_count)
    finally:
        await store.close()


async def run_digests(config_path: Path, *, reps: int,
                      warm_up: bool = True) -> tuple[list[DigestRun], DigestRun]:
    """Run the digest job (after a warm-up run), REPS timed times, then again in the last period.

    Returns the timed runs and the repeated run, which must queue nothing.
    """
    config = load_config(config_path)
    clock = {"now": FIRST_RUN_AT}
    store = Store(config.database.url)
    statements = 0

    def count(*_args: Any) -> None:
        nonlocal statements
        statements += 1

    try:
        desks = await make_desks(config, store, lambda: clock["now"])
        work = await make_scheduled_work(config, desks, now=lambda: clock["now"])
        event.listen(store._engine.sync_engine, "before_cursor_execute", count)  # noqa: SLF001

        async def once() -> DigestRun:
            nonlocal statements
            last_id = await newest_outbox_id(store)
            statements = 0
            started = time.perf_counter()
            queued = await work.send_digests()
            seconds = time.perf_counter() - started
            counted = statements
            rows, recipients = await outbox_digests(store, after_id=last_id)
            transport = CountingTransport()
            worker = OutboxWorker(
                store=store, transport=transport, max_attempts=1, retry_base_seconds=1,
                retry_max_seconds=1, now=lambda: clock["now"],
                prepare=work.digests.compose_queued)
            started = time.perf_counter()
            while await worker.run_once():
                pass
            drain_seconds = time.perf_counter() - started
            return DigestRun(seconds, counted, queued, rows, recipients, drain_seconds,
                             sum(transport.recipients.values()), len(transport.recipients),
                             transport.bytes)

        runs = []
        first = 0 if warm_up else 1
        for rep in range(first, reps + 1):
            clock["now"] = FIRST_RUN_AT + timedelta(weeks=rep)
            runs.append(await once())
        repeated = await once()
        return runs[1 - first:], repeated
    finally:
        await store.close()


async def newest_outbox_id(store: Store) -> int:
    """Return the highest outbox id so far, or 0."""
    async with store.read() as tx:
        return int(await tx.session.scalar(select(func.max(OutboxRow.id))) or 0)


async def outbox_digests(store: Store, *, after_id: int) -> tuple[int, int]:
    """Return the digest emails queued after an outbox id and their distinct recipients."""
    async with store.read() as tx:
        row = (await tx.session.execute(
            select(func.count(), func.count(func.distinct(OutboxRow.recipient)))
            .where(OutboxRow.kind == "digest", OutboxRow.id > after_id))).one()
    return int(row[0]), int(row[1])


def measure(ctx: Any, backend: str, builders: int, tickets: int) -> dict[str, Any]:
    """Seed a database for BACKEND and time the digest job on it; return a report row."""
    label = f"l6-{backend}-{builders}"
    if backend == "sqlite":
        (ctx.workdir / label).mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{ctx.workdir / label / 'gateway.db'}"
    else:
        database = f"bench_{label}".replace("-", "_")
        url = asyncio.run(targets.create_postgres_database(database))
        ctx.databases.append(database)
    started = time.perf_counter()
    due = asyncio.run(seed_digest_store(url, builders=builders, tickets=tickets))
    seed_seconds = time.perf_counter() - started
    # Enough reminders per wait for every repetition to list every ticket again.
    config_path, _, _ = targets.write_config(
        ctx.workdir, label, url,
        reminders="[reminders]\nmax_reminders = 100\nrepeat_after_days = 3\n"
                  "auto_resolve_after_days = 0\n")
    # A run over thousands of builders takes long enough that a warm-up run adds
    # nothing but time; the smaller count gets one.
    warm_up = builders == min(ctx.scale.l6_builders)
    with targets.gateway_log_to(ctx.workdir / f"{label}.log"):
        runs, repeated = asyncio.run(run_digests(config_path, reps=ctx.scale.l6_reps,
                                                 warm_up=warm_up))
    exactly_once = all(run.queued == due and run.outbox_added == due
                       and run.recipients_added == due and run.delivered == due
                       and run.delivered_recipients == due for run in runs)
    return {
        "backend": backend, "builders": builders, "tickets": tickets, "due": due,
        "seed_seconds": seed_seconds,
        "seconds": [run.seconds for run in runs],
        "drain_seconds": [run.drain_seconds for run in runs],
        "digest_bytes": [run.digest_bytes // max(run.delivered, 1) for run in runs],
        "statements": sorted({run.statements for run in runs}),
        "queued": [run.queued for run in runs],
        "delivered": [run.delivered for run in runs],
        "exactly_once": (exactly_once and repeated.queued == 0 and repeated.outbox_added == 0
                         and repeated.delivered == 0),
        "repeat_statements": repeated.statements,
        "warm_up": warm_up,
    }
