"""Reminder digests: one email per builder listing the tickets that wait on them.

Who gets what: a builder with at least one ticket in waiting_on_builder for
longer than `waiting_after`, that no digest listed within `repeat_after` and
that fewer than `max_reminders` digests listed in this wait. The most urgent
ticket comes first: by severity, then by the longest wait. A digest lists at
most MAX_LISTED_TICKETS of them and counts the rest. Only the listed ones count
as reminded, so the others stay due for the next period.

Scheduled runs follow a cron expression read in each builder's time zone.
Each run handles the latest scheduled time (the period) at or before now, so
a gateway that was down across several scheduled times sends one digest when
it is back. A run claims every due builder's digest under the unique key
(builder, period), records the reminders and queues one outbox row per claim,
with a fixed number of set-based statements in one transaction, whatever the
number of builders. Several instances, or a run that restarts after a crash,
therefore never send a builder two digests for one period.

The outbox worker composes each digest after it claims the row
(DigestRunner.compose_queued), from the tickets the run recorded that still
wait. A digest whose builder opted out, whose address is suppressed or never
reads mail, or that has nothing left to list by then is cancelled unsent.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway import addresses, fields
from gateway.config import Config
from gateway.cron import crontab_trigger, latest_fire_time
from gateway.model import Builder, OutgoingEmail, TicketState
from gateway.mailer import with_builder_link
from gateway.notices import NoticeRenderer

log = logging.getLogger(__name__)

# Builders per read of `digest --dry-run`, which lists digests without claiming them.
PREVIEW_PAGE_BUILDERS = 200
# The maximum number of tickets one digest lists. It counts the rest and points to
# the builder's page, because a long list is hard to act on, and the outbox worker
# reads each listed ticket's latest question when it composes the digest.
MAX_LISTED_TICKETS = 20
EXCERPT_CHARS = 240
# Characters read from the database for an excerpt, before whitespace is folded.
_EXCERPT_READ_CHARS = 1000
# The time zone key of runs started by hand, which cover every builder.
MANUAL_RUN_ZONE = ""
# The length of digest_claims.claimed_by, which contains a run token, then the instance.
_CLAIMED_BY_CHARS = 100


@dataclass(frozen=True)
class DigestSettings:
    """Schedule and thresholds of reminder digests."""

    schedule: str = "0 9 * * 1-5"
    waiting_after: timedelta = timedelta(hours=24)
    repeat_after: timedelta = timedelta(days=3)
    max_reminders: int = 3

    @classmethod
    def from_config(cls, config: Config) -> DigestSettings:
        """Read the [reminders] section."""
        reminders = config.reminders
        return cls(
            schedule=reminders.schedule,
            waiting_after=timedelta(hours=reminders.waiting_after_hours),
            repeat_after=timedelta(days=reminders.repeat_after_days),
            max_reminders=reminders.max_reminders,
        )


@dataclass(frozen=True)
class WaitingTicket:
    """A ticket that waits on its builder, as a digest lists it."""

    ticket: TicketState
    wait_started_at: datetime
    # The start of support's latest public message, or None.
    question: str | None


@dataclass(frozen=True)
class DigestPlan:
    """The tickets one builder's digest lists, most urgent first."""

    builder: Builder
    tickets: tuple[WaitingTicket, ...]
    # Due tickets that the digest leaves out because of MAX_LISTED_TICKETS.
    more_waiting: int = 0


@dataclass(frozen=True)
class QueuedDigest:
    """A digest in the outbox that is not composed yet, with what it lists now."""

    outbox_id: int
    message_id: str
    builder: Builder
    opted_out: bool
    # Mail to the builder's address is suppressed after a bounce.
    suppressed: bool
    # The claimed tickets that still wait in the same wait, most urgent first.
    tickets: tuple[WaitingTicket, ...]
    # Claimed tickets left out by MAX_LISTED_TICKETS that still wait.
    more_waiting: int = 0


@dataclass(frozen=True)
class ComposedDigest:
    """A digest composed for its outbox row."""

    outbox_id: int
    message_id: str
    builder: Builder
    tickets: tuple[WaitingTicket, ...]
    data: bytes


@dataclass(frozen=True)
class Period:
    """One digest period: its start and the time zones whose schedule it is."""

    start: datetime
    # None covers every builder (a run started by hand).
    timezones: tuple[str, ...] | None


class DigestRunner:
    """Claims and queues the digests that are due, and composes them for the outbox worker."""

    def __init__(
        self,
        *,
        store: Any,
        mailer: Any,
        settings: DigestSettings,
        unsubscribe_url: Callable[[Builder], str],
        sender_address: str,
        is_own_address: Callable[[str], bool],
        renderer: NoticeRenderer | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._mailer = mailer
        self._settings = settings
        self._unsubscribe_url = unsubscribe_url
        self._sender_address = sender_address
        self._is_own_address = is_own_address
        self._renderer = renderer or NoticeRenderer()
        self._now = now
        self.instance_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    @property
    def enabled(self) -> bool:
        """Return False when reminders.max_reminders is 0, which turns digests off."""
        return self._settings.max_reminders > 0

    async def run_due(self) -> int:
        """Queue the digests of every scheduled period not yet handled; return how many."""
        if not self.enabled:
            return 0
        now = self._now()
        async with self._store.read() as tx:
            zones = await tx.builder_timezones()
        queued = 0
        for period in due_periods(self._settings.schedule, zones, now):
            assert period.timezones is not None
            async with self._store.read() as tx:
                finished = await tx.finished_digest_periods(period.start, period.timezones)
            open_zones = tuple(zone for zone in period.timezones if zone not in finished)
            if not open_zones:
                continue
            counts = await self._queue_period(Period(period.start, open_zones),
                                              as_of=period.start)
            for zone in open_zones:
                log.info("digest period %s for time zone %s: %d digest(s) queued",
                         period.start.isoformat(timespec="minutes"), zone or "UTC",
                         counts.get(zone, 0))
            queued += sum(counts.values())
        return queued

    async def run_now(self) -> int:
        """Queue every digest that is due now, ignoring the schedule; return how many."""
        if not self.enabled:
            return 0
        now = self._now()
        start = now.replace(second=0, microsecond=0)
        counts = await self._queue_period(Period(start, None), as_of=now)
        count = sum(counts.values())
        log.info("digest run by hand: %d digest(s) queued", count)
        return count

    async def preview(self) -> AsyncIterator[DigestPlan]:
        """Yield the digests that run_now would queue, without claiming or sending.

        Reads one page of builders at a time, so the preview never keeps every
        digest in memory.
        """
        if not self.enabled:
            return
        now = self._now()
        start = now.replace(second=0, microsecond=0)
        settings = self._settings
        after = 0
        while True:
            async with self._store.read() as tx:
                rows = await tx.waiting_for_digest(
                    period_start=start,
                    timezones=None,
                    waiting_since=now - settings.waiting_after,
                    repeat_before=now - settings.repeat_after,
                    max_reminders=settings.max_reminders,
                    after_builder_id=after,
                    builder_limit=PREVIEW_PAGE_BUILDERS,
                    excerpt_chars=_EXCERPT_READ_CHARS,
                    now=now,
                )
            plans = group_by_builder(rows)
            for plan in plans:
                if self._never_reads_mail(plan.builder) is None:
                    yield bounded(plan)
            if len(plans) < PREVIEW_PAGE_BUILDERS:
                return
            after = plans[-1].builder.id

    async def _queue_period(self, period: Period, *, as_of: datetime) -> dict[str, int]:
        """Claim, record and queue the period's digests in one transaction; return counts.

        The counts are per time zone (MANUAL_RUN_ZONE for a run by hand), and the
        period is recorded as finished for each zone in the same transaction.
        """
        settings = self._settings
        run = f"{secrets.token_hex(6)}:{self.instance_id}"[:_CLAIMED_BY_CHARS]
        # Each claim's Message-ID is this run's own unique id with the builder id added.
        local, _, domain = self._mailer.new_message_id().rpartition("@")
        due = {
            "waiting_since": as_of - settings.waiting_after,
            "repeat_before": as_of - settings.repeat_after,
            "max_reminders": settings.max_reminders,
        }
        async with self._store.write() as tx:
            now = self._now()
            await tx.claim_due_digests(
                period_start=period.start, timezones=period.timezones, claimed_by=run,
                message_id_prefix=f"{local}.", message_id_domain=domain, now=now, **due,
            )
            await tx.record_claimed_tickets(period_start=period.start, claimed_by=run,
                                            max_listed=MAX_LISTED_TICKETS, **due)
            counts = await tx.queue_claimed_digests(
                period_start=period.start, claimed_by=run, sender=self._sender_address,
                now=now,
            )
            if period.timezones is None:
                counts = {MANUAL_RUN_ZONE: sum(counts.values())}
            zones = period.timezones if period.timezones is not None else (MANUAL_RUN_ZONE,)
            await tx.finish_digest_periods(
                {zone: counts.get(zone, 0) for zone in zones}, period.start, now=now,
            )
        return counts

    async def compose_queued(
        self, emails: Sequence[OutgoingEmail], *, worker: str, now: datetime
    ) -> tuple[list[OutgoingEmail], list[tuple[OutgoingEmail, str]]]:
        """Compose the queued digests among EMAILS, which WORKER has claimed.

        Call it after the claim commits. The tickets are read in a read
        transaction and each digest is composed outside any transaction, so
        SQLite's single writer is free meanwhile. A short write transaction
        then stores each composed digest in its row, so a retry sends the same
        bytes, and cancels the digests that must not go out. It does so only
        for rows that WORKER still claims. Returns the emails to deliver (other
        kinds unchanged) and those whose composing failed, with the error. A
        digest whose claim ran out and went to another worker meanwhile is in
        neither list: that worker composes and sends it.
        """
        unsent = [email.id for email in emails if not email.data]
        if not unsent:
            return list(emails), []
        async with self._store.read() as tx:
            queued = {
                digest.outbox_id: digest
                for digest in await tx.queued_digests(
                    unsent, excerpt_chars=_EXCERPT_READ_CHARS, now=now
                )
            }
            cancelled = {
                digest.outbox_id: reason
                for digest in queued.values()
                if (reason := self._reason_not_to_send(digest)) is not None
            }
            sending = [digest for digest in queued.values()
                       if digest.outbox_id not in cancelled]
            # A digest about one ticket threads into that ticket's conversation.
            references: dict[int, list[str]] = {}
            for digest in sending:
                if len(digest.tickets) == 1:
                    ticket_id = digest.tickets[0].ticket.id
                    thread = await tx.thread_message_ids(ticket_id)
                    references[digest.outbox_id] = thread
        links = await self._issue_links(sending, now)

        composed: dict[int, ComposedDigest] = {}
        failed: list[tuple[OutgoingEmail, str]] = []
        for email in emails:
            digest = queued.get(email.id)
            if email.data or digest is None or email.id in cancelled:
                continue
            try:
                composed[email.id] = self._compose(
                    digest, links.get(email.id), references.get(email.id, []), now
                )
            except Exception as exc:
                # One digest that cannot be composed must not hold back the rest
                # of the batch, so it is retried like a failed delivery instead.
                log.exception("digest (outbox %d) could not be composed", email.id)
                failed.append((email, f"composing failed: {type(exc).__name__}: {exc}"))

        finished = await self._store_composed(composed, cancelled, worker=worker,
                                              now=now)
        for outbox_id, reason in cancelled.items():
            if outbox_id in finished:
                log.info("digest (outbox %d) to builder %d cancelled: %s",
                         outbox_id, queued[outbox_id].builder.id, reason)

        ready: list[OutgoingEmail] = []
        for email in emails:
            if email.id in finished and email.id in composed:
                ready.append(replace(email, data=composed[email.id].data))
            elif email.data or email.id not in queued:
                ready.append(email)
        return ready, failed

    async def _store_composed(
        self,
        composed: dict[int, ComposedDigest],
        cancelled: dict[int, str],
        *,
        worker: str,
        now: datetime,
    ) -> set[int]:
        """Store COMPOSED and cancel CANCELLED where WORKER still claims the row.

        Returns the outbox ids it stored or cancelled.
        """
        if not composed and not cancelled:
            return set()
        async with self._store.write(short=True) as tx:
            still_claimed = await tx.lock_claimed_digests([*composed, *cancelled],
                                                          worker=worker)
            await tx.store_composed_digests(
                [done for outbox_id, done in composed.items()
                 if outbox_id in still_claimed],
                now=now,
            )
            await tx.cancel_digest_emails(
                {outbox_id: reason for outbox_id, reason in cancelled.items()
                 if outbox_id in still_claimed}
            )
            await tx.forget_digest_tickets(sorted(still_claimed))
        for outbox_id in sorted((set(composed) | set(cancelled)) - still_claimed):
            log.warning("digest (outbox %d) left to another worker: the claim ran out "
                        "while it was composed", outbox_id)
        return still_claimed

    async def _issue_links(
        self, digests: Sequence[QueuedDigest], now: datetime
    ) -> dict[int, tuple[str, datetime] | None]:
        """Store a link to each digest's builder page in one transaction; return them.

        The links are keyed by outbox id.
        """
        if not digests:
            return {}
        async with self._store.write(short=True) as tx:
            return {
                digest.outbox_id: await self._mailer.issue_builder_link(
                    tx, digest.builder, now=now
                )
                for digest in digests
            }

    def _reason_not_to_send(self, digest: QueuedDigest) -> str | None:
        if digest.opted_out:
            return "the builder unsubscribed from digests"
        if digest.suppressed:
            return "mail to the address is suppressed after a bounce"
        never = self._never_reads_mail(digest.builder)
        if never is not None:
            return never
        if not digest.tickets:
            return "no listed ticket waits on the builder any more"
        return None

    def _never_reads_mail(self, builder: Builder) -> str | None:
        if addresses.is_robot_address(builder.email) or self._is_own_address(builder.email):
            log.warning("no digest for builder %d: the address never reads mail", builder.id)
            return "the address never reads mail"
        return None

    def _compose(
        self,
        digest: QueuedDigest,
        link: tuple[str, datetime] | None,
        references: list[str],
        now: datetime,
    ) -> ComposedDigest:
        notice = render_digest(
            self._renderer,
            DigestPlan(digest.builder, digest.tickets, digest.more_waiting),
            now=now,
            reply_address=self._mailer.reply_address,
            unsubscribe_url=self._unsubscribe_url(digest.builder),
            has_builder_link=link is not None,
        )
        notice = with_builder_link(notice, link)
        single = digest.tickets[0].ticket if len(digest.tickets) == 1 else None
        message_id, data = self._mailer.compose_unqueued(
            digest.builder,
            notice,
            now=now,
            message_id=digest.message_id,
            reply_to=self._mailer.reply_address(single) if single else None,
            references=references,
            extra_headers=unsubscribe_headers(self._unsubscribe_url(digest.builder)),
        )
        return ComposedDigest(digest.outbox_id, message_id, digest.builder, digest.tickets,
                              data)


def due_periods(schedule: str, zones: Sequence[str], now: datetime) -> list[Period]:
    """Return the latest scheduled period of each time zone, zones of one instant together."""
    grouped: dict[datetime, list[str]] = {}
    for zone in zones:
        start = latest_fire_time(crontab_trigger(schedule, builder_zone(zone)), now)
        if start is not None:
            grouped.setdefault(start.astimezone(UTC), []).append(zone)
    return [Period(start, tuple(grouped[start])) for start in sorted(grouped)]


def builder_zone(name: str) -> ZoneInfo:
    """Return a builder's time zone, or UTC when the stored name is unknown."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown builder time zone %r; using UTC", name)
        return ZoneInfo("UTC")


def group_by_builder(rows: Sequence[WaitingTicket]) -> list[DigestPlan]:
    """Group rows that come ordered by builder into one plan per builder."""
    plans: list[DigestPlan] = []
    current: list[WaitingTicket] = []
    for row in rows:
        if current and current[0].ticket.builder.id != row.ticket.builder.id:
            plans.append(DigestPlan(current[0].ticket.builder, tuple(current)))
            current = []
        current.append(row)
    if current:
        plans.append(DigestPlan(current[0].ticket.builder, tuple(current)))
    return plans


def bounded(plan: DigestPlan) -> DigestPlan:
    """Return PLAN listing at most MAX_LISTED_TICKETS tickets, counting the rest."""
    left_out = len(plan.tickets) - MAX_LISTED_TICKETS
    if left_out <= 0:
        return plan
    return DigestPlan(plan.builder, plan.tickets[:MAX_LISTED_TICKETS],
                      plan.more_waiting + left_out)


def render_digest(
    renderer: NoticeRenderer,
    plan: DigestPlan,
    *,
    now: datetime,
    reply_address: Callable[[TicketState], str],
    unsubscribe_url: str,
    has_builder_link: bool = False,
) -> Any:
    """Render one builder's digest as an automatic notice.

    Pass HAS_BUILDER_LINK when the email ends with a link to the builder's
    page, so that the line about tickets left out points to it.
    """
    tickets = [
        {
            "number": waiting.ticket.number,
            "title": waiting.ticket.title,
            "app": waiting.ticket.app_name or fields.ACCOUNT_LEVEL_APP,
            "severity": fields.SEVERITIES.get(waiting.ticket.severity,
                                              waiting.ticket.severity),
            "waited": describe_wait(now - waiting.wait_started_at),
            "question": excerpt(waiting.question),
            "reply_address": reply_address(waiting.ticket),
        }
        for waiting in plan.tickets
    ]
    count = len(tickets) + plan.more_waiting
    if count == 1:
        subject = f"Reminder: [#{tickets[0]['number']}] {tickets[0]['title']}"
    else:
        subject = f"Reminder: {count} tickets wait for your answer"
    notice = renderer.render(
        "digest",
        subject,
        builder_name=plan.builder.name,
        tickets=tickets,
        more_waiting=plan.more_waiting,
        has_builder_link=has_builder_link,
        unsubscribe_url=unsubscribe_url,
    )
    return replace(notice, auto_submitted="auto-generated")


def unsubscribe_headers(url: str) -> dict[str, str]:
    """Return the RFC 2369 and RFC 8058 headers of one-click unsubscription."""
    return {
        "List-Unsubscribe": f"<{url}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def describe_wait(waited: timedelta) -> str:
    """Return a wait in words: "2 days", "1 day, 3 hours" or "20 hours"."""
    hours = max(0, int(waited.total_seconds() // 3600))
    days, hours = divmod(hours, 24)
    if days == 0:
        return f"{hours} hour{'s' if hours != 1 else ''}"
    text = f"{days} day{'s' if days != 1 else ''}"
    if hours and days < 3:
        text += f", {hours} hour{'s' if hours != 1 else ''}"
    return text


def excerpt(text: str | None, limit: int = EXCERPT_CHARS) -> str | None:
    """Return TEXT on one line, cut at a word boundary near LIMIT characters."""
    if not text:
        return None
    folded = re.sub(r"\s+", " ", text).strip()
    if len(folded) <= limit:
        return folded
    cut = folded[:limit].rsplit(" ", 1)[0] or folded[:limit]
    return cut.rstrip(".,;: ") + " …"
