"""Reminder digests: one email per builder listing the tickets that wait on them.

Who gets what: a builder with at least one ticket in waiting_on_builder for
longer than `waiting_after`, that no digest listed within `repeat_after` and
that fewer than `max_reminders` digests listed in this wait. The most urgent
ticket comes first: by severity, then by the longest wait.

Scheduled runs follow a cron expression read in each builder's time zone.
Each run handles the latest scheduled time (the period) at or before now, so
a gateway that was down across several scheduled times sends one digest when
it is back. Every digest is claimed under the unique key (builder, period) in
the transaction that writes it to the outbox, so several instances, or a run
that restarts after a crash, never send a builder two digests for one period.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway import addresses, fields
from gateway.config import Config
from gateway.cron import crontab_trigger, latest_fire_time
from gateway.model import Builder, TicketState
from gateway.notices import NoticeRenderer

log = logging.getLogger(__name__)

# Builders handled per write transaction. Each batch keeps its composed emails
# in memory and costs the same handful of statements, whatever its size.
BATCH_BUILDERS = 200
EXCERPT_CHARS = 240
# Characters read from the database for an excerpt, before whitespace is folded.
_EXCERPT_READ_CHARS = 1000
# The time zone key of runs started by hand, which cover every builder.
MANUAL_RUN_ZONE = ""


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
    # Digests that listed it before in this wait.
    reminder_count: int
    # The start of support's latest public message, or None.
    question: str | None


@dataclass(frozen=True)
class DigestPlan:
    """The tickets one builder's digest lists, most urgent first."""

    builder: Builder
    tickets: tuple[WaitingTicket, ...]


@dataclass(frozen=True)
class ComposedDigest:
    """A digest ready for the outbox."""

    builder: Builder
    tickets: tuple[WaitingTicket, ...]
    message_id: str
    data: bytes


@dataclass(frozen=True)
class Period:
    """One digest period: its start and the time zones whose schedule it is."""

    start: datetime
    # None covers every builder (a run started by hand).
    timezones: tuple[str, ...] | None


class DigestRunner:
    """Finds who is due a digest, claims it and writes it to the outbox."""

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
        batch_builders: int = BATCH_BUILDERS,
    ) -> None:
        self._store = store
        self._mailer = mailer
        self._settings = settings
        self._unsubscribe_url = unsubscribe_url
        self._sender_address = sender_address
        self._is_own_address = is_own_address
        self._renderer = renderer or NoticeRenderer()
        self._now = now
        self._batch_builders = batch_builders
        self.instance_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    @property
    def enabled(self) -> bool:
        """Return False when reminders.max_reminders is 0, which turns digests off."""
        return self._settings.max_reminders > 0

    async def run_due(self) -> int:
        """Send the digests of every scheduled period not yet handled; return how many."""
        if not self.enabled:
            return 0
        now = self._now()
        async with self._store.read() as tx:
            zones = await tx.builder_timezones()
        sent = 0
        for period in due_periods(self._settings.schedule, zones, now):
            assert period.timezones is not None
            async with self._store.read() as tx:
                finished = await tx.finished_digest_periods(period.start, period.timezones)
            for zone in period.timezones:
                if zone in finished:
                    continue
                count = await self._send_period(Period(period.start, (zone,)),
                                                as_of=period.start)
                async with self._store.write() as tx:
                    await tx.finish_digest_period(zone, period.start, digest_count=count,
                                                  now=self._now())
                log.info("digest period %s for time zone %s: %d digest(s) queued",
                         period.start.isoformat(timespec="minutes"), zone or "UTC", count)
                sent += count
        return sent

    async def run_now(self) -> int:
        """Send every digest that is due now, ignoring the schedule; return how many."""
        if not self.enabled:
            return 0
        now = self._now()
        start = now.replace(second=0, microsecond=0)
        count = await self._send_period(Period(start, None), as_of=now)
        async with self._store.write() as tx:
            await tx.finish_digest_period(MANUAL_RUN_ZONE, start, digest_count=count, now=now)
        log.info("digest run by hand: %d digest(s) queued", count)
        return count

    async def preview(self) -> AsyncIterator[DigestPlan]:
        """Yield the digests that run_now would send, without claiming or sending."""
        if not self.enabled:
            return
        now = self._now()
        period = Period(now.replace(second=0, microsecond=0), None)
        after = 0
        while True:
            async with self._store.read() as tx:
                rows = await self._waiting(tx, period, as_of=now, after=after)
            plans = group_by_builder(rows)
            for plan in plans:
                if self._can_receive(plan.builder):
                    yield plan
            if len(plans) < self._batch_builders:
                return
            after = plans[-1].builder.id

    async def _send_period(self, period: Period, *, as_of: datetime) -> int:
        sent = 0
        after = 0
        while True:
            async with self._store.write() as tx:
                rows = await self._waiting(tx, period, as_of=as_of, after=after)
                plans = group_by_builder(rows)
                if not plans:
                    return sent
                after = plans[-1].builder.id
                now = self._now()
                composed = [self._compose(plan, now) for plan in plans
                            if self._can_receive(plan.builder)]
                won = await tx.claim_digests(composed, period_start=period.start,
                                             claimed_by=self.instance_id, now=now)
                winners = [digest for digest in composed if digest.builder.id in won]
                await tx.enqueue_digests(winners, sender=self._sender_address, now=now)
                await tx.record_reminders(
                    [waiting for digest in winners for waiting in digest.tickets],
                    period_start=period.start,
                )
            sent += len(winners)
            if len(composed) > len(winners):
                log.info("%d digest(s) of period %s were claimed by another run",
                         len(composed) - len(winners), period.start.isoformat())
            if len(plans) < self._batch_builders:
                return sent

    async def _waiting(
        self, tx: Any, period: Period, *, as_of: datetime, after: int
    ) -> list[WaitingTicket]:
        settings = self._settings
        return await tx.waiting_for_digest(
            period_start=period.start,
            timezones=period.timezones,
            waiting_since=as_of - settings.waiting_after,
            repeat_before=as_of - settings.repeat_after,
            max_reminders=settings.max_reminders,
            after_builder_id=after,
            builder_limit=self._batch_builders,
            excerpt_chars=_EXCERPT_READ_CHARS,
            now=self._now(),
        )

    def _can_receive(self, builder: Builder) -> bool:
        if addresses.is_robot_address(builder.email) or self._is_own_address(builder.email):
            log.warning("no digest for builder %d: the address never reads mail", builder.id)
            return False
        return True

    def _compose(self, plan: DigestPlan, now: datetime) -> ComposedDigest:
        notice = render_digest(
            self._renderer,
            plan,
            now=now,
            reply_address=self._mailer.reply_address,
            unsubscribe_url=self._unsubscribe_url(plan.builder),
        )
        single = plan.tickets[0].ticket if len(plan.tickets) == 1 else None
        message_id, data = self._mailer.compose_unqueued(
            plan.builder,
            notice,
            now=now,
            reply_to=self._mailer.reply_address(single) if single else None,
            extra_headers=unsubscribe_headers(self._unsubscribe_url(plan.builder)),
        )
        return ComposedDigest(plan.builder, plan.tickets, message_id, data)


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


def render_digest(
    renderer: NoticeRenderer,
    plan: DigestPlan,
    *,
    now: datetime,
    reply_address: Callable[[TicketState], str],
    unsubscribe_url: str,
) -> Any:
    """Render one builder's digest as an automatic notice."""
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
    count = len(tickets)
    if count == 1:
        subject = f"Reminder: [#{tickets[0]['number']}] {tickets[0]['title']}"
    else:
        subject = f"Reminder: {count} tickets wait for your answer"
    notice = renderer.render(
        "digest",
        subject,
        builder_name=plan.builder.name,
        tickets=tickets,
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
