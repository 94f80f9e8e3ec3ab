"""Scheduled work inside `serve`: digests, auto-resolve, Sev 1 escalation, pruning.

APScheduler 3 decides when each job wakes up; the database decides what is
done once. Several instances may run the same jobs against one database,
because every action is claimed under a unique key first (see gateway.digest
and claim_ticket_action). Each job also runs once at start, so a gateway that
was down catches up with one run instead of one per missed time.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from gateway import fields
from gateway.config import Config, RemindersConfig
from gateway.digest import DigestRunner, DigestSettings
from gateway.errors import InvalidChange, StorageUnavailable, UnknownTicket
from gateway.support import TicketChange
from gateway.unsubscribe import load_unsubscribe_links

log = logging.getLogger(__name__)

# Seconds between the wake-ups of each job. The digest job only does work
# when a builder's scheduled time has passed, so waking often is cheap.
JOB_INTERVAL_SECONDS = {
    "digest": 60,
    "auto_resolve": 15 * 60,
    "escalate_sev1": 60,
    "prune_raw_inbound": 60 * 60,
}
# A claimed action that is not finished within this time (the instance died)
# may be taken over by another instance.
ACTION_LEASE = timedelta(minutes=10)
# Files that no attachment uses are deleted once they are this old.
UNUSED_BLOB_GRACE = timedelta(days=1)
ACTOR = "gateway"
WAITING = ("waiting_on_builder",)


class ScheduledWork:
    """The jobs, each callable on its own, as the scheduler and tests call them."""

    def __init__(
        self,
        *,
        store: Any,
        digests: DigestRunner,
        support: Any,
        reminders: RemindersConfig,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_queued: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self.digests = digests
        self._support = support
        self._reminders = reminders
        self._now = now
        self._on_queued = on_queued
        self.instance_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    async def send_digests(self) -> int:
        """Queue the digests of every scheduled period that has passed; return how many.

        The outbox worker composes and sends them (DigestRunner.compose_queued).
        """
        count = await self.digests.run_due()
        if count:
            self._on_queued()
        return count

    async def auto_resolve(self) -> int:
        """Resolve tickets that waited on the builder too long; return how many."""
        days = self._reminders.auto_resolve_after_days
        if not days:
            return 0
        summary = (
            f"We asked you a question and had no answer for {days:g} days, so the "
            "ticket was resolved automatically."
        )
        return await self._act(
            "auto_resolve",
            statuses=WAITING,
            older_than=timedelta(days=days),
            change=TicketChange(status="resolved", summary=summary),
        )

    async def escalate_sev1(self) -> int:
        """Escalate Sev 1 tickets still in review after the configured time; return how many."""
        minutes = self._reminders.escalate_sev1_after_minutes
        if not minutes:
            return 0
        return await self._act(
            "escalate",
            statuses=tuple(sorted(fields.IN_REVIEW_STATUSES)),
            older_than=timedelta(minutes=minutes),
            change=TicketChange(status="escalated"),
            severity="sev1",
        )

    async def prune_raw_inbound(self) -> int:
        """Drop raw inbound bytes of tickets closed before the retention time.

        Also deletes the files that no attachment uses, and the slices of raw
        messages that no inbound record uses, once they are a day old.
        """
        await self._prune_unused_blobs()
        await self._prune_unused_raw_parts()
        days = self._reminders.raw_retention_days
        if not days:
            return 0
        cutoff = self._now() - timedelta(days=days)
        async with self._store.write() as tx:
            pruned = await tx.prune_finished_inbound(finished_before=cutoff)
        if pruned:
            log.info("pruned the raw bytes of %d inbound message(s)", pruned)
        return pruned

    async def _prune_unused_blobs(self) -> None:
        # The day leaves the message that stored the files ample time to commit.
        cutoff = self._now() - UNUSED_BLOB_GRACE
        async with self._store.write() as tx:
            deleted = await tx.prune_unused_blobs(stored_before=cutoff)
        if deleted:
            log.info("deleted %d stored file(s) that no attachment uses", deleted)

    async def _prune_unused_raw_parts(self) -> None:
        # Same grace as for files: the message that wrote the slices has long
        # committed or failed by then.
        cutoff = self._now() - UNUSED_BLOB_GRACE
        async with self._store.write(bulk=True) as tx:
            deleted = await tx.prune_unused_raw_parts(stored_before=cutoff)
        if deleted:
            log.info("deleted %d raw message slice(s) that no inbound record uses", deleted)

    async def _act(
        self,
        action: str,
        *,
        statuses: Sequence[str],
        older_than: timedelta,
        change: TicketChange,
        severity: str | None = None,
    ) -> int:
        now = self._now()
        async with self._store.read() as tx:
            due = await tx.tickets_due_for_action(
                action, statuses=statuses, changed_before=now - older_than, now=now,
                severity=severity,
            )
        done = 0
        for ticket_id, number, since in due:
            if await self._act_once(action, ticket_id, number, since, statuses, change):
                done += 1
        if done:
            log.info("%s: %d ticket(s) changed", action, done)
            self._on_queued()
        return done

    async def _act_once(
        self,
        action: str,
        ticket_id: int,
        number: int,
        since: datetime,
        statuses: Sequence[str],
        change: TicketChange,
    ) -> bool:
        async with self._store.write() as tx:
            claimed = await tx.claim_ticket_action(
                action, ticket_id, wait_started_at=since, statuses=statuses,
                claimed_by=self.instance_id, now=self._now(), lease=ACTION_LEASE,
            )
        if not claimed:
            return False

        state = "done"
        try:
            await self._support.change(number, change, actor=ACTOR)
        except (InvalidChange, UnknownTicket) as exc:
            # NOTE: a builder reply that lands between the claim and this change
            # is not seen here, so that ticket is still changed.
            state = "skipped"
            log.info("%s skipped for #%d: %s", action, number, exc)

        async with self._store.write() as tx:
            await tx.finish_ticket_action(
                action, ticket_id, wait_started_at=since, state=state,
                claimed_by=self.instance_id, now=self._now(),
            )
        return state == "done"


async def make_scheduled_work(
    config: Config,
    desks: Any,
    *,
    now: Callable[[], datetime],
    on_queued: Callable[[], None] = lambda: None,
) -> ScheduledWork:
    """Build the jobs on the desks of one gateway (or of one CLI command)."""
    links = await load_unsubscribe_links(desks.store, public_url=config.web.public_url)
    digests = DigestRunner(
        store=desks.store,
        mailer=desks.mailer,
        settings=DigestSettings.from_config(config),
        unsubscribe_url=links.url,
        sender_address=config.sender_address,
        is_own_address=desks.addresses.is_own,
        now=now,
    )
    return ScheduledWork(
        store=desks.store,
        digests=digests,
        support=desks.support,
        reminders=config.reminders,
        now=now,
        on_queued=on_queued,
    )


class Scheduler:
    """Runs the scheduled jobs on the gateway's event loop with APScheduler."""

    def __init__(
        self, work: ScheduledWork, *, on_job_done: Callable[[str], None] | None = None
    ) -> None:
        """Prepare the jobs; ON_JOB_DONE, if given, is called with a job's name after each run."""
        self.work = work
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        jobs: dict[str, Callable[[], Awaitable[int]]] = {
            "digest": work.send_digests,
            "auto_resolve": work.auto_resolve,
            "escalate_sev1": work.escalate_sev1,
            "prune_raw_inbound": work.prune_raw_inbound,
        }
        started = datetime.now(UTC)
        for name, job in jobs.items():
            self._scheduler.add_job(
                _logged(name, job, on_job_done),
                "interval",
                seconds=JOB_INTERVAL_SECONDS[name],
                id=name,
                name=name,
                # After a pause (a suspended machine, a blocked loop) a job runs
                # once, however late and however many runs it missed, and a run
                # never overlaps the previous one.
                coalesce=True,
                max_instances=1,
                misfire_grace_time=None,
                # First run right at start, to catch up after downtime.
                next_run_time=started,
            )

    @property
    def jobs(self) -> list[Any]:
        """Return the APScheduler jobs."""
        return self._scheduler.get_jobs()

    def start(self) -> None:
        """Start the jobs on the running event loop."""
        self._scheduler.start()
        log.info("scheduler started with %d jobs", len(self.jobs))

    def shutdown(self) -> None:
        """Stop the jobs without waiting for a running one."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
            log.info("scheduler stopped")


def _logged(
    name: str,
    job: Callable[[], Awaitable[int]],
    on_job_done: Callable[[str], None] | None,
) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        try:
            await job()
        except StorageUnavailable as exc:
            log.warning("scheduled job %s found the database unavailable: %s", name, exc)
        except Exception:
            log.exception("scheduled job %s failed; it runs again at its next time", name)
        if on_job_done is not None:
            on_job_done(name)

    return run
