"""Scheduled work: several instances, crashes, query counts, auto-resolve,
escalation and pruning."""

from __future__ import annotations

import asyncio
import email
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url

import databases
from adapters import outbound
from conftest import FakeClock, RunningGateway, make_config, running_gateway, sample
from digest_support import add_waiting, digests, listed_numbers, send_digests, text_of, work
from gateway.config import RemindersConfig
from gateway.delivery import OutboxWorker
from gateway.digest import DigestRunner, DigestSettings
from gateway.model import Builder
from gateway.scheduler import Scheduler, ScheduledWork, make_scheduled_work
from gateway.service import make_desks
from store import Store
from store.digests import DigestQueries

TUESDAY_9 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _second_instance(gateway: RunningGateway) -> tuple[Store, ScheduledWork]:
    """Return another instance's store and jobs on the same database."""
    async def build() -> tuple[Store, ScheduledWork]:
        store = Store(gateway.gateway.config.database.url)
        desks = await make_desks(gateway.gateway.config, store, gateway.clock)
        return store, await make_scheduled_work(gateway.gateway.config, desks,
                                                now=gateway.clock)

    return gateway.call(build)


def _waiting_builders(gateway: RunningGateway, count: int, tickets: int = 2) -> None:
    for index in range(count):
        for ticket in range(tickets):
            add_waiting(gateway, f"builder{index}@example.com",
                        f"Orders export number {ticket} does nothing",
                        since=TUESDAY_9 - timedelta(days=2, hours=ticket))


def _statements_for_digests(tmp_path: Path, builders: int) -> tuple[int, int, list[str]]:
    """Run the digest job over BUILDERS builders; return (queued, statements, recipients)."""
    clock = FakeClock(TUESDAY_9)
    with running_gateway(make_config(tmp_path), clock) as gateway:
        _waiting_builders(gateway, builders)
        statements: list[str] = []

        def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements.append(statement)

        engine = gateway.gateway.store._engine.sync_engine
        event.listen(engine, "before_cursor_execute", count)
        try:
            sent = send_digests(gateway)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        recipients = [d["To"].addresses[0].addr_spec for d in digests(gateway)]
        return sent, len(statements), recipients


def test_statements_do_not_grow_with_builders(tmp_path: Path) -> None:
    few_sent, few, few_recipients = _statements_for_digests(tmp_path / "few", 3)
    many_sent, many, many_recipients = _statements_for_digests(tmp_path / "many", 50)

    assert few_sent == 3
    assert many_sent == 50
    assert many == few
    assert len(set(few_recipients)) == len(few_recipients) == 3
    assert len(set(many_recipients)) == len(many_recipients) == 50


def test_two_schedulers_send_once(gateway: RunningGateway) -> None:
    _waiting_builders(gateway, 6)
    other_store, other = _second_instance(gateway)

    async def both() -> list[int]:
        return list(await asyncio.gather(work(gateway).send_digests(), other.send_digests()))

    try:
        counts = gateway.call(both)
    finally:
        gateway.call(other_store.close)

    recipients = sorted(d["To"].addresses[0].addr_spec for d in digests(gateway))
    assert sum(counts) == 6
    assert recipients == sorted(f"builder{i}@example.com" for i in range(6))


def test_racing_runners_claim_and_count_once(gateway: RunningGateway) -> None:
    _waiting_builders(gateway, 30, tickets=3)
    others = [_second_instance(gateway) for _ in range(2)]

    async def race() -> list[int]:
        runs = [work(gateway).digests.run_now()]
        runs += [other.digests.run_now() for _, other in others]
        return list(await asyncio.gather(*runs))

    try:
        counts = gateway.call(race)
    finally:
        for other_store, _ in others:
            gateway.call(other_store.close)
    delivered = digests(gateway)

    assert sum(counts) == 30
    assert gateway.sql("SELECT COUNT(*) FROM digest_claims") == [(30,)]
    assert gateway.sql("SELECT COUNT(*) FROM outbox WHERE kind = 'digest'") == [(30,)]
    assert gateway.sql(
        "SELECT reminder_count, COUNT(*) FROM ticket_reminders GROUP BY reminder_count"
    ) == [(1, 90)]
    assert len(delivered) == 30
    assert len({d["To"].addresses[0].addr_spec for d in delivered}) == 30
    assert all(len(listed_numbers(d)) == 3 for d in delivered)


def test_crash_mid_run_then_restart_sends_once(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    _waiting_builders(gateway, 5)

    async def die(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("the process died here")

    # The run claims every digest, then dies before it queues them.
    with monkeypatch.context() as patch:
        patch.setattr(DigestQueries, "queue_claimed_digests", die)
        with pytest.raises(RuntimeError):
            send_digests(gateway)
    claims_after_crash = gateway.sql("SELECT COUNT(*) FROM digest_claims")
    reminders_after_crash = gateway.sql("SELECT COUNT(*) FROM ticket_reminders")

    sent_after_restart = send_digests(gateway)

    recipients = sorted(d["To"].addresses[0].addr_spec for d in digests(gateway))
    assert claims_after_crash == [(0,)]
    assert reminders_after_crash == [(0,)]
    assert sent_after_restart == 5
    assert recipients == sorted(f"builder{i}@example.com" for i in range(5))


class _WrappedMailer:
    """The real mailer, for subclasses that change how a digest is composed."""

    def __init__(self, mailer: Any) -> None:
        self._mailer = mailer

    def reply_address(self, ticket: Any) -> str:
        return self._mailer.reply_address(ticket)

    def new_message_id(self) -> str:
        return self._mailer.new_message_id()

    async def issue_builder_link(self, tx: Any, builder: Builder, **kwargs: Any) -> Any:
        return await self._mailer.issue_builder_link(tx, builder, **kwargs)

    def compose_unqueued(self, builder: Builder, notice: Any, **kwargs: Any) -> Any:
        return self._mailer.compose_unqueued(builder, notice, **kwargs)


class _CrashingMailer(_WrappedMailer):
    """The real mailer, except that composing for one address raises while BROKEN is set."""

    def __init__(self, mailer: Any, crash_on: str) -> None:
        super().__init__(mailer)
        self._crash_on = crash_on
        self.broken = True

    def compose_unqueued(self, builder: Builder, notice: Any, **kwargs: Any) -> Any:
        if self.broken and builder.email == self._crash_on:
            raise RuntimeError("the template engine failed here")
        return self._mailer.compose_unqueued(builder, notice, **kwargs)


def _runner_and_worker(
    gateway: RunningGateway, mailer: Any, **worker_options: Any
) -> tuple[DigestRunner, OutboxWorker]:
    """Return a digest runner that composes with MAILER, and an outbox worker using it."""
    config = gateway.gateway.config
    runner = DigestRunner(
        store=gateway.gateway.store,
        mailer=mailer,
        settings=DigestSettings(),
        unsubscribe_url=lambda builder: f"http://127.0.0.1:8080/unsubscribe/{builder.id}",
        sender_address="support@localhost",
        is_own_address=lambda address: False,
        now=gateway.clock,
    )
    worker = OutboxWorker(
        store=gateway.gateway.store,
        transport=outbound.transport_from_config(config.outbound),
        max_attempts=config.outbound.max_attempts,
        retry_base_seconds=config.outbound.retry_base_seconds,
        retry_max_seconds=config.outbound.retry_max_seconds,
        now=gateway.clock,
        prepare=runner.compose_queued,
        **worker_options,
    )
    return runner, worker


def test_composing_failure_is_retried_alone(gateway: RunningGateway) -> None:
    _waiting_builders(gateway, 5)
    config = gateway.gateway.config
    mailer = _CrashingMailer(gateway.gateway.mailer, "builder3@example.com")
    runner, worker = _runner_and_worker(gateway, mailer)
    queued = gateway.call(runner.run_due)

    while gateway.call(worker.run_once):
        pass
    first = sorted(d["To"].addresses[0].addr_spec for d in digests(gateway))
    [(attempts, error)] = gateway.sql(
        "SELECT attempts, last_error FROM outbox WHERE recipient = 'builder3@example.com'")
    mailer.broken = False
    gateway.clock.advance(seconds=config.outbound.retry_max_seconds + 1)
    while gateway.call(worker.run_once):
        pass
    final = sorted(d["To"].addresses[0].addr_spec for d in digests(gateway))

    assert queued == 5
    assert first == [f"builder{i}@example.com" for i in (0, 1, 2, 4)]
    assert attempts == 1
    assert "the template engine failed here" in error
    assert final == sorted(f"builder{i}@example.com" for i in range(5))


class _TakingOverMailer(_WrappedMailer):
    """The real mailer, except that composing a digest first runs TAKE_OVER once."""

    def __init__(self, mailer: Any, take_over: Callable[[], str | None]) -> None:
        super().__init__(mailer)
        self._take_over = take_over
        # The error of the take-over, or None when it succeeded.
        self.results: list[str | None] = []

    def compose_unqueued(self, builder: Builder, notice: Any, **kwargs: Any) -> Any:
        if not self.results:
            self.results.append(self._take_over())
        return self._mailer.compose_unqueued(builder, notice, **kwargs)


def _claim_for(url: str, outbox_id: int, worker: str) -> str | None:
    """Claim an outbox row for WORKER on a connection of its own, without waiting.

    Returns the error when another transaction locks the row or the database,
    else None.
    """
    if make_url(url).get_backend_name() == "sqlite":
        path = make_url(url).database
        connection = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("UPDATE outbox SET claimed_by = ? WHERE id = ?",
                                (worker, outbox_id))
            connection.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            return str(exc)
        finally:
            connection.close()
        return None

    async def claim() -> None:
        connection = await asyncpg.connect(url)
        try:
            async with connection.transaction():
                await connection.execute(
                    "SELECT id FROM outbox WHERE id = $1 FOR UPDATE NOWAIT", outbox_id)
                await connection.execute(
                    "UPDATE outbox SET claimed_by = $1 WHERE id = $2", worker, outbox_id
                )
        finally:
            await connection.close()

    try:
        databases.run_in_thread(claim)
    except asyncpg.LockNotAvailableError as exc:
        return str(exc)
    return None


def test_claim_taken_while_composing_sends_once(gateway: RunningGateway) -> None:
    add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                since=TUESDAY_9 - timedelta(days=2))
    send_digests(gateway)
    [(outbox_id,)] = gateway.sql("SELECT id FROM outbox WHERE kind = 'digest'")
    url = gateway.gateway.config.database.url
    # Another worker claims the row while this one composes the digest, as
    # after a lease that ran out. Composing locks nothing, so the claim succeeds.
    mailer = _TakingOverMailer(gateway.gateway.mailer,
                               lambda: _claim_for(url, outbox_id, "other-worker"))
    _, worker = _runner_and_worker(gateway, mailer, claim_lease_seconds=60)

    gateway.call(worker.run_once)
    left = gateway.sql("SELECT claimed_by, LENGTH(payload), state FROM outbox "
                       "WHERE id = :i", i=outbox_id)
    sent_by_first = gateway.outbox_files()
    gateway.clock.advance(seconds=61)
    delivered = digests(gateway)

    assert mailer.results == [None]
    assert left == [("other-worker", 0, "pending")]
    assert sent_by_first == []
    assert len(delivered) == 1
    final = gateway.sql("SELECT state FROM outbox WHERE id = :i", i=outbox_id)
    assert final == [("sent",)]


def test_auto_resolve_tells_builder_and_reply_reopens(ada: RunningGateway) -> None:
    ada.send(sample("thunderbird.eml"))
    support = ada.gateway.support_desk
    assert support is not None
    from gateway.support import TicketChange

    ada.call(lambda: support.change(
        1, TicketChange(status="waiting_on_builder", question="Which language?"),
        actor="grace"))
    ada.flush_outbox()
    ada.clock.advance(days=14, minutes=1)

    resolved = ada.call(work(ada).auto_resolve)
    ada.flush_outbox()
    notice = text_of(email.message_from_bytes(ada.outbox_files()[-1].read_bytes(),
                                              policy=policy.default))
    reply = sample("thunderbird.eml").replace(
        b"Subject: Search in the Recipes app", b"Subject: Re: [#1] Search in the Recipes app"
    ).replace(b"Message-ID: <", b"Message-ID: <again-")
    code, _ = ada.send(reply)

    assert resolved == 1
    assert "resolved automatically" in notice
    assert "14 days" in notice
    assert code == 250
    assert ada.ticket(1).summary.status == "reopened"


def test_auto_resolve_leaves_recent_waits(gateway: RunningGateway) -> None:
    add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                since=TUESDAY_9 - timedelta(days=13))

    resolved = gateway.call(work(gateway).auto_resolve)

    assert resolved == 0
    assert gateway.ticket(1).summary.status == "waiting_on_builder"


def test_auto_resolve_off_when_zero(tmp_path: Path, clock: FakeClock) -> None:
    config = make_config(tmp_path, reminders=RemindersConfig(auto_resolve_after_days=0))
    with running_gateway(config, clock) as gateway:
        add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                    since=TUESDAY_9 - timedelta(days=400))

        resolved = gateway.call(work(gateway).auto_resolve)

        assert resolved == 0
        assert gateway.ticket(1).summary.status == "waiting_on_builder"


def _sev1(gateway: RunningGateway, severity: str = "sev1") -> int:
    async def run() -> int:
        async with gateway.gateway.store.write() as tx:
            builder = await tx.upsert_builder("ada@example.com", name="Ada", timezone=None,
                                              apps=(), now=gateway.clock())
            _id, number = await tx.create_ticket(
                builder=builder, title="Published app returns error 500 for every user",
                description="Every page of the Client Portal answers with error 500.",
                app=None, category="published_app", severity=severity, now=gateway.clock(),
            )
        return number

    return gateway.call(run)


def test_sev1_in_review_is_escalated_once(gateway: RunningGateway) -> None:
    blocking = _sev1(gateway)
    major = _sev1(gateway, "sev2")
    gateway.clock.advance(minutes=61)

    first = gateway.call(work(gateway).escalate_sev1)
    again = gateway.call(work(gateway).escalate_sev1)

    assert first == 1
    assert again == 0
    assert gateway.ticket(blocking).summary.status == "escalated"
    assert gateway.ticket(major).summary.status == "new"


def test_sev1_not_escalated_before_time(gateway: RunningGateway) -> None:
    number = _sev1(gateway)
    gateway.clock.advance(minutes=59)

    assert gateway.call(work(gateway).escalate_sev1) == 0
    assert gateway.ticket(number).summary.status == "new"


def test_two_instances_escalate_once(gateway: RunningGateway) -> None:
    number = _sev1(gateway)
    gateway.clock.advance(minutes=90)
    other_store, other = _second_instance(gateway)

    async def both() -> list[int]:
        return list(await asyncio.gather(work(gateway).escalate_sev1(),
                                         other.escalate_sev1()))

    try:
        counts = gateway.call(both)
    finally:
        gateway.call(other_store.close)

    changes = [m for m in gateway.ticket(number).messages
               if m.kind == "system" and "escalated" in m.body]
    assert sum(counts) == 1
    assert len(changes) == 1


def test_unfinished_claim_is_taken_over_after_lease(gateway: RunningGateway) -> None:
    number = _sev1(gateway)
    gateway.clock.advance(minutes=90)

    async def claim_and_die() -> bool:
        async with gateway.gateway.store.write() as tx:
            return await tx.claim_ticket_action(
                "escalate", 1, wait_started_at=TUESDAY_9, statuses=("new",),
                claimed_by="dead-instance", now=gateway.clock(),
                lease=timedelta(minutes=10),
            )

    assert gateway.call(claim_and_die)
    during_lease = gateway.call(work(gateway).escalate_sev1)
    gateway.clock.advance(minutes=11)
    after_lease = gateway.call(work(gateway).escalate_sev1)

    assert during_lease == 0
    assert after_lease == 1
    assert gateway.ticket(number).summary.status == "escalated"


def test_prune_keeps_conversation_of_closed_ticket(ada: RunningGateway) -> None:
    from gateway.support import TicketChange

    ada.send(sample("thunderbird.eml"))
    ada.send(sample("gmail_plain_and_html.eml"))
    support = ada.gateway.support_desk
    assert support is not None
    ada.call(lambda: support.change(1, TicketChange(status="closed"), actor="grace"))
    ada.clock.advance(days=91)

    pruned = ada.call(work(ada).prune_raw_inbound)

    rows = ada.sql("SELECT ticket_id, raw IS NULL FROM inbound_messages ORDER BY id")
    assert pruned == 1
    assert [(ticket, bool(gone)) for ticket, gone in rows] == [(1, True), (2, False)]
    assert ada.ticket(1).messages[0].body


def test_prune_waits_for_retention(ada: RunningGateway) -> None:
    from gateway.support import TicketChange

    ada.send(sample("thunderbird.eml"))
    support = ada.gateway.support_desk
    assert support is not None
    ada.call(lambda: support.change(1, TicketChange(status="closed"), actor="grace"))
    ada.clock.advance(days=89)

    assert ada.call(work(ada).prune_raw_inbound) == 0


def test_jobs_coalesce_and_never_overlap(gateway: RunningGateway) -> None:
    jobs = {job.id: job for job in Scheduler(work(gateway)).jobs}

    assert sorted(jobs) == ["auto_resolve", "digest", "escalate_sev1", "prune_raw_inbound"]
    for job in jobs.values():
        assert job.coalesce is True
        assert job.max_instances == 1
        assert job.misfire_grace_time is None


def test_started_scheduler_runs_digest_at_once(gateway: RunningGateway) -> None:
    add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                since=TUESDAY_9 - timedelta(days=2))
    digest_done = threading.Event()
    scheduler = Scheduler(
        work(gateway),
        on_job_done=lambda name: digest_done.set() if name == "digest" else None,
    )

    async def start() -> None:
        scheduler.start()

    gateway.call(start)
    try:
        finished = digest_done.wait(timeout=30)
    finally:
        gateway.call(_async(scheduler.shutdown))

    assert finished
    [digest] = digests(gateway)
    assert "Search ignores accented letters" in text_of(digest)


def _async(function: Any) -> Any:
    async def run() -> None:
        function()

    return run
