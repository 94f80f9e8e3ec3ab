"""Scheduled work run by three gateway processes at once, on one PostgreSQL database.

Every instance runs the digest, auto-resolve and Sev 1 escalation jobs as soon
as it starts. The database is prepared before the three start, and the test
holds a lock on the claim tables until every instance waits on it, so all
three claim the same work at the same moment.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import databases
from cluster import Cluster, running_cluster
from conftest import POSTGRES
from gateway.model import App
from sqlalchemy import text

from store import Store

pytestmark = pytest.mark.skipif(
    POSTGRES is None, reason="needs PostgreSQL: set GATEWAY_TEST_DATABASE_URL=postgresql://USER@HOST:PORT/DB"
)

BUILDERS = {
    "ada@example.com": "Ada Lovelace",
    "grace@example.com": "Grace Hopper",
    "linus@example.com": "Linus Pauling",
}
# Every minute is a digest time, so a digest is due the moment an instance starts.
REMINDERS = """
[reminders]
schedule = "* * * * *"
waiting_after_hours = 1.0
repeat_after_days = 3.0
max_reminders = 3
auto_resolve_after_days = 2.0
escalate_sev1_after_minutes = 10.0
"""
QUESTION = "Which browser and version do you use when the page stays blank?"


def test_three_instances_run_jobs_once(tmp_path: Path) -> None:
    assert POSTGRES is not None
    url = POSTGRES.create()
    tickets = databases.run_in_thread(lambda: _prepare(url))

    with _claims_held(url) as release, running_cluster(
        url, tmp_path, count=3, extra_config=REMINDERS
    ) as three:
        # Three jobs per instance: digest, auto-resolve and escalation.
        three.wait_until(lambda: _lock_waiters(three) >= 3 * len(three.instances), 30,
                         "every job of every instance to wait for the claim tables")
        release()
        three.wait_until(lambda: _settled(three, tickets), 60,
                         "digests, auto-resolve and escalation")
        time.sleep(3.0)  # the slower instances finish their first runs
        three.wait_until(lambda: _unsent(three) == 0, 60, "every email to be sent")

        digests = three.query("select recipient from outbox where kind = 'digest'")
        reminders = [e.recipient for e in three.accepted if e.subject.startswith("Reminder")]
        statuses = dict(three.query("select number, status from tickets"))
        status_events = dict(three.query(
            "select t.number, count(*) from messages m join tickets t on t.id = m.ticket_id "
            "where m.kind = 'system' and m.body like 'gateway changed status%' "
            "group by t.number"))
        resolved_notices = three.query(
            "select count(*) from outbox where kind = 'status_resolved'")
        actions = three.query(
            "select action, ticket_id, state, count(*) from ticket_actions "
            "group by action, ticket_id, state")

    assert Counter(r for (r,) in digests) == Counter({address: 1 for address in BUILDERS})
    assert Counter(reminders) == Counter({address: 1 for address in BUILDERS})
    assert {statuses[n] for n in tickets["stale"]} == {"resolved"}
    assert {statuses[n] for n in tickets["sev1"]} == {"escalated"}
    assert {statuses[n] for n in tickets["fresh"]} == {"waiting_on_builder"}
    assert {n: status_events.get(n) for n in tickets["stale"] + tickets["sev1"]} == {
        n: 1 for n in tickets["stale"] + tickets["sev1"]}
    assert resolved_notices == [(len(tickets["stale"]),)]
    assert len(actions) == len(tickets["stale"]) + len(tickets["sev1"])
    assert {state for _, _, state, _ in actions} == {"done"}
    assert {count for _, _, _, count in actions} == {1}


async def _prepare(url: str) -> dict[str, list[int]]:
    """Store the tickets the jobs act on; return their numbers by kind."""
    now = datetime.now(UTC)
    store = Store(url)
    numbers: dict[str, list[int]] = {"fresh": [], "stale": [], "sev1": []}
    # (kind, builder, title, severity, status, since)
    plan = [
        *[("fresh", address, "Calendar view shows the wrong week", "sev3",
           "waiting_on_builder", now - timedelta(hours=3)) for address in BUILDERS],
        ("stale", "ada@example.com", "Export to CSV drops the last column", "sev3",
         "waiting_on_builder", now - timedelta(days=3)),
        ("stale", "grace@example.com", "Invite email never arrives", "sev3",
         "waiting_on_builder", now - timedelta(days=4)),
        ("sev1", "linus@example.com", "Every published app returns 502", "sev1",
         "new", now - timedelta(minutes=30)),
        ("sev1", "ada@example.com", "Login fails for all users", "sev1",
         "open", now - timedelta(minutes=45)),
    ]
    try:
        for kind, address, title, severity, status, since in plan:
            async with store.write() as tx:
                builder = await tx.upsert_builder(address, name=BUILDERS[address],
                                                  timezone="UTC", apps=(), now=since)
                ticket_id, number = await tx.create_ticket(
                    builder=builder, title=title,
                    description="The page stays blank after signing in.",
                    app=App("Client Portal", "https://portal.example.com"),
                    category="published_app", severity=severity, now=since,
                )
                if status == "waiting_on_builder":
                    await tx.add_message(ticket_id, visibility="public", kind="support",
                                         author="Grace Hopper", body=QUESTION, now=since)
                await tx.update_ticket(ticket_id, status=status, now=since)
            numbers[kind].append(number)
    finally:
        await store.close()
    return numbers


@contextmanager
def _claims_held(url: str) -> Iterator[Callable[[], None]]:
    """Hold an EXCLUSIVE lock on the claim tables until the caller releases it.

    Reads go on, but every claim (an insert into digest_claims or
    ticket_actions) waits for the lock.
    """
    locked, released = threading.Event(), threading.Event()

    async def hold() -> None:
        store = Store(url)
        try:
            async with store.write() as tx:
                await tx.session.execute(
                    text("lock table digest_claims, ticket_actions in exclusive mode"))
                locked.set()
                while not released.is_set():
                    await asyncio.sleep(0.05)
        finally:
            await store.close()

    holder = threading.Thread(target=databases.run_in_thread, args=(hold,))
    holder.start()
    assert locked.wait(30), "could not lock the claim tables"
    try:
        yield released.set
    finally:
        released.set()
        holder.join(timeout=30)


def _lock_waiters(cluster: Cluster) -> int:
    [(count,)] = cluster.query(
        "select count(*) from pg_stat_activity "
        "where datname = current_database() and wait_event_type = 'Lock'")
    return count


def _settled(cluster: Cluster, tickets: dict[str, list[int]]) -> bool:
    [(digests,)] = cluster.query("select count(*) from outbox where kind = 'digest'")
    [(changed,)] = cluster.query(
        "select count(*) from tickets where status in ('resolved', 'escalated')")
    return digests >= len(BUILDERS) and changed >= len(tickets["stale"]) + len(tickets["sev1"])


def _unsent(cluster: Cluster) -> int:
    [(count,)] = cluster.query("select count(*) from outbox where state <> 'sent'")
    return count
