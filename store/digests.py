"""Queries of reminder digests, digest opt-outs and scheduled ticket actions."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from gateway.digest import ComposedDigest, WaitingTicket
from gateway.model import Builder, TicketState
from store.models import (
    BuilderRow,
    DigestClaimRow,
    DigestOptOutRow,
    DigestRunRow,
    InboundRow,
    MailIndexRow,
    MessageRow,
    OutboxRow,
    SuppressedAddressRow,
    TicketActionRow,
    TicketReminderRow,
    TicketRow,
)

log = logging.getLogger(__name__)

WAITING = "waiting_on_builder"
# Tickets whose raw inbound mail may be pruned: they take no more replies.
FINISHED_STATUSES = ("closed", "duplicate")


class DigestQueries:
    """Queries for digests and scheduled ticket actions (a Transaction mixin)."""

    session: AsyncSession
    dialect: str

    # Digest periods

    async def builder_timezones(self) -> list[str]:
        """Return every time zone name that at least one builder has."""
        rows = await self.session.scalars(select(BuilderRow.timezone).distinct())
        return sorted(rows)

    async def finished_digest_periods(
        self, period_start: datetime, timezones: Sequence[str]
    ) -> set[str]:
        """Return the time zones in TIMEZONES whose run for PERIOD_START is finished."""
        rows = await self.session.scalars(
            select(DigestRunRow.timezone).where(
                DigestRunRow.period_start == period_start,
                DigestRunRow.timezone.in_(list(timezones)),
            )
        )
        return set(rows)

    async def finish_digest_period(
        self, timezone: str, period_start: datetime, *, digest_count: int, now: datetime
    ) -> None:
        """Record that a time zone's digest period is handled; a repeat is ignored."""
        statement = (
            self._insert(DigestRunRow)
            .values(
                timezone=timezone,
                period_start=period_start,
                outcome="sent" if digest_count else "nothing_waiting",
                digest_count=digest_count,
                finished_at=now,
            )
            .on_conflict_do_nothing(index_elements=["timezone", "period_start"])
        )
        await self.session.execute(statement)

    # Digests

    async def waiting_for_digest(
        self,
        *,
        period_start: datetime,
        timezones: Sequence[str] | None,
        waiting_since: datetime,
        repeat_before: datetime,
        max_reminders: int,
        after_builder_id: int,
        builder_limit: int,
        excerpt_chars: int,
        now: datetime,
    ) -> list[WaitingTicket]:
        """Return the tickets to list for the next BUILDER_LIMIT builders after an id.

        A ticket qualifies when it has waited on its builder since WAITING_SINCE or
        earlier, was listed fewer than MAX_REMINDERS times in this wait and not
        after REPEAT_BEFORE, and its builder neither opted out nor has a digest
        for PERIOD_START, and mail to the builder is not suppressed after a bounce
        at NOW. Rows come by builder id, then severity, then the
        longest wait first. One statement, whatever the number of builders.
        """
        reminder = TicketReminderRow
        claim = DigestClaimRow
        opt_out = DigestOptOutRow
        suppressed = SuppressedAddressRow
        conditions: list[Any] = [
            TicketRow.status == WAITING,
            TicketRow.status_changed_at <= waiting_since,
            or_(
                reminder.id.is_(None),
                and_(
                    reminder.reminder_count < max_reminders,
                    reminder.last_period_start <= repeat_before,
                ),
            ),
            opt_out.builder_id.is_(None),
            claim.id.is_(None),
            suppressed.address.is_(None),
        ]
        if timezones is not None:
            conditions.append(BuilderRow.timezone.in_(list(timezones)))

        def joined(query: Any) -> Any:
            return (
                query.join(BuilderRow, BuilderRow.id == TicketRow.builder_id)
                .outerjoin(
                    reminder,
                    and_(
                        reminder.ticket_id == TicketRow.id,
                        reminder.wait_started_at == TicketRow.status_changed_at,
                    ),
                )
                .outerjoin(opt_out, opt_out.builder_id == TicketRow.builder_id)
                .outerjoin(
                    suppressed,
                    and_(suppressed.address == BuilderRow.email,
                         suppressed.suppressed_until > now),
                )
                .outerjoin(
                    claim,
                    and_(claim.builder_id == TicketRow.builder_id,
                         claim.period_start == period_start),
                )
            )

        next_builders = (
            joined(select(TicketRow.builder_id).select_from(TicketRow))
            .where(*conditions, TicketRow.builder_id > after_builder_id)
            .distinct()
            .order_by(TicketRow.builder_id)
            .limit(builder_limit)
        )
        latest_question_id = (
            select(func.max(MessageRow.id))
            .where(
                MessageRow.ticket_id == TicketRow.id,
                MessageRow.visibility == "public",
                MessageRow.kind == "support",
            )
            .correlate(TicketRow)
            .scalar_subquery()
        )
        question = aliased(MessageRow)
        query = (
            joined(
                select(
                    TicketRow,
                    BuilderRow,
                    func.coalesce(reminder.reminder_count, 0),
                    func.substr(question.body, 1, excerpt_chars),
                ).select_from(TicketRow)
            )
            .outerjoin(question, question.id == latest_question_id)
            .where(*conditions, TicketRow.builder_id.in_(next_builders))
            .order_by(
                TicketRow.builder_id,
                TicketRow.severity,
                TicketRow.status_changed_at,
                TicketRow.number,
            )
        )
        rows = await self.session.execute(query)
        return [
            WaitingTicket(
                ticket=_ticket_state(ticket, builder),
                wait_started_at=ticket.status_changed_at,
                reminder_count=count,
                question=excerpt,
            )
            for ticket, builder, count, excerpt in rows
        ]

    async def claim_digests(
        self,
        digests: Sequence[ComposedDigest],
        *,
        period_start: datetime,
        claimed_by: str,
        now: datetime,
    ) -> set[int]:
        """Claim each builder's digest for PERIOD_START; return the builder ids won.

        A builder whose digest another run already claimed is left out, because
        the unique key (builder, period) lets one insert succeed.
        """
        if not digests:
            return set()
        statement = (
            self._insert(DigestClaimRow)
            .values(
                [
                    {
                        "builder_id": digest.builder.id,
                        "period_start": period_start,
                        "message_id": digest.message_id,
                        "ticket_count": len(digest.tickets),
                        "claimed_by": claimed_by,
                        "claimed_at": now,
                    }
                    for digest in digests
                ]
            )
            .on_conflict_do_nothing(index_elements=["builder_id", "period_start"])
            .returning(DigestClaimRow.builder_id)
        )
        return set(await self.session.scalars(statement))

    async def record_reminders(
        self, tickets: Sequence[WaitingTicket], *, period_start: datetime
    ) -> None:
        """Count one more reminder for each ticket's current wait."""
        if not tickets:
            return
        statement = self._insert(TicketReminderRow).values(
            [
                {
                    "ticket_id": waiting.ticket.id,
                    "wait_started_at": waiting.wait_started_at,
                    "reminder_count": 1,
                    "last_period_start": period_start,
                }
                for waiting in tickets
            ]
        )
        table = TicketReminderRow.__table__
        statement = statement.on_conflict_do_update(
            index_elements=["ticket_id", "wait_started_at"],
            set_={
                "reminder_count": table.c.reminder_count + 1,
                "last_period_start": statement.excluded.last_period_start,
            },
        )
        await self.session.execute(statement)

    async def enqueue_digests(
        self, digests: Sequence[ComposedDigest], *, sender: str, now: datetime
    ) -> None:
        """Put composed digests in the outbox, and index one-ticket digests to their ticket."""
        if not digests:
            return
        await self.session.execute(
            OutboxRow.__table__.insert(),
            [
                {
                    "channel": "email",
                    "ticket_id": None,
                    "kind": "digest",
                    "sender": sender,
                    "recipient": digest.builder.email,
                    "message_id": digest.message_id,
                    "payload": digest.data,
                    "state": "pending",
                    "attempts": 0,
                    "created_at": now,
                    "next_attempt_at": now,
                }
                for digest in digests
            ],
        )
        # A reply to a digest that lists one ticket threads into that ticket.
        single = [digest for digest in digests if len(digest.tickets) == 1]
        if single:
            await self.session.execute(
                MailIndexRow.__table__.insert(),
                [
                    {
                        "message_id": digest.message_id,
                        "ticket_id": digest.tickets[0].ticket.id,
                        "outbound": True,
                        "created_at": now,
                    }
                    for digest in single
                ],
            )

    # Opt-outs

    async def opt_out_of_digests(self, builder_id: int, *, now: datetime) -> bool:
        """Stop digests to a builder; return False when the builder does not exist."""
        exists = await self.session.scalar(
            select(BuilderRow.id).where(BuilderRow.id == builder_id)
        )
        if exists is None:
            return False
        await self.session.execute(
            self._insert(DigestOptOutRow)
            .values(builder_id=builder_id, opted_out_at=now)
            .on_conflict_do_nothing(index_elements=["builder_id"])
        )
        return True

    async def digest_recipient(self, builder_id: int) -> tuple[str, bool] | None:
        """Return a builder's email and whether they opted out, or None."""
        row = (
            await self.session.execute(
                select(BuilderRow.email, DigestOptOutRow.builder_id)
                .outerjoin(DigestOptOutRow, DigestOptOutRow.builder_id == BuilderRow.id)
                .where(BuilderRow.id == builder_id)
            )
        ).first()
        if row is None:
            return None
        email, opted_out = row
        return email, opted_out is not None

    # Scheduled ticket actions

    async def tickets_due_for_action(
        self,
        action: str,
        *,
        statuses: Sequence[str],
        changed_before: datetime,
        now: datetime,
        severity: str | None = None,
        limit: int = 500,
    ) -> list[tuple[int, int, datetime]]:
        """Return (id, number, status_changed_at) of tickets that ACTION is due for.

        A ticket is due when its status is one of STATUSES since CHANGED_BEFORE or
        earlier and ACTION has no live claim for this stay in that status.
        """
        action_row = TicketActionRow
        query = (
            select(TicketRow.id, TicketRow.number, TicketRow.status_changed_at)
            .outerjoin(
                action_row,
                and_(
                    action_row.action == action,
                    action_row.ticket_id == TicketRow.id,
                    action_row.wait_started_at == TicketRow.status_changed_at,
                ),
            )
            .where(
                TicketRow.status.in_(list(statuses)),
                TicketRow.status_changed_at <= changed_before,
                or_(
                    action_row.id.is_(None),
                    and_(action_row.state == "claimed", action_row.claimed_until < now),
                ),
            )
            .order_by(TicketRow.status_changed_at, TicketRow.id)
            .limit(limit)
        )
        if severity is not None:
            query = query.where(TicketRow.severity == severity)
        rows = await self.session.execute(query)
        return [(ticket_id, number, since) for ticket_id, number, since in rows]

    async def claim_ticket_action(
        self,
        action: str,
        ticket_id: int,
        *,
        wait_started_at: datetime,
        statuses: Sequence[str],
        claimed_by: str,
        now: datetime,
        lease: timedelta,
    ) -> bool:
        """Claim ACTION for a ticket's current stay in STATUSES; return True when won.

        The ticket row stays locked until the transaction ends. A claim that
        another instance left unfinished past its lease is taken over.
        """
        current = (
            await self.session.execute(
                select(TicketRow.status, TicketRow.status_changed_at)
                .where(TicketRow.id == ticket_id)
                .with_for_update()
            )
        ).first()
        if current is None:
            return False
        status, since = current
        if status not in statuses or since != wait_started_at:
            return False
        inserted = await self.session.scalar(
            self._insert(TicketActionRow)
            .values(
                action=action,
                ticket_id=ticket_id,
                wait_started_at=wait_started_at,
                state="claimed",
                claimed_by=claimed_by,
                claimed_until=now + lease,
            )
            .on_conflict_do_nothing(
                index_elements=["action", "ticket_id", "wait_started_at"]
            )
            .returning(TicketActionRow.id)
        )
        if inserted is not None:
            return True
        result = await self.session.execute(
            update(TicketActionRow)
            .where(
                TicketActionRow.action == action,
                TicketActionRow.ticket_id == ticket_id,
                TicketActionRow.wait_started_at == wait_started_at,
                TicketActionRow.state == "claimed",
                TicketActionRow.claimed_until < now,
            )
            .values(claimed_by=claimed_by, claimed_until=now + lease)
        )
        return result.rowcount == 1

    async def finish_ticket_action(
        self,
        action: str,
        ticket_id: int,
        *,
        wait_started_at: datetime,
        state: str,
        claimed_by: str,
        now: datetime,
    ) -> None:
        """Mark a claimed action done or skipped."""
        await self.session.execute(
            update(TicketActionRow)
            .where(
                TicketActionRow.action == action,
                TicketActionRow.ticket_id == ticket_id,
                TicketActionRow.wait_started_at == wait_started_at,
                TicketActionRow.claimed_by == claimed_by,
            )
            .values(state=state, finished_at=now)
        )

    # Retention

    async def prune_finished_inbound(self, *, finished_before: datetime) -> int:
        """Drop the raw bytes of inbound mail whose ticket finished before a time.

        The ticket's conversation and the inbound record stay; only the raw
        message goes. Returns how many records lost their bytes.
        """
        finished = select(TicketRow.id).where(
            TicketRow.status.in_(FINISHED_STATUSES),
            TicketRow.status_changed_at < finished_before,
        )
        result = await self.session.execute(
            update(InboundRow)
            .where(InboundRow.ticket_id.in_(finished), InboundRow.raw.is_not(None))
            .values(raw=None)
        )
        return result.rowcount or 0

    def _insert(self, model: Any) -> Any:
        # Both dialects offer ON CONFLICT with the same API.
        if self.dialect == "postgresql":
            return postgresql.insert(model)
        return sqlite.insert(model)


def _ticket_state(ticket: TicketRow, builder: BuilderRow) -> TicketState:
    return TicketState(
        id=ticket.id,
        number=ticket.number,
        title=ticket.title,
        status=ticket.status,
        category=ticket.category,
        severity=ticket.severity,
        priority=ticket.priority,
        assignee=ticket.assignee,
        resolution_summary=ticket.resolution_summary,
        duplicate_of=None,
        app_name=ticket.app_name,
        builder=Builder(id=builder.id, email=builder.email, name=builder.name,
                        timezone=builder.timezone, apps=()),
    )
