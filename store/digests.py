"""Queries of reminder digests, digest opt-outs and scheduled ticket actions."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Integer,
    LargeBinary,
    String,
    and_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from gateway.digest import ComposedDigest, QueuedDigest, WaitingTicket
from gateway.model import Builder, TicketState
from store.models import (
    AttachmentRow,
    BlobRow,
    BuilderRow,
    DigestClaimRow,
    DigestClaimTicketRow,
    DigestOptOutRow,
    DigestRunRow,
    InboundRow,
    MailIndexRow,
    MessageRow,
    OutboxRow,
    RawPartRow,
    SuppressedAddressRow,
    TicketActionRow,
    TicketReminderRow,
    TicketRow,
    UtcDateTime,
)

log = logging.getLogger(__name__)

WAITING = "waiting_on_builder"
# The outbox kind of reminder digests.
DIGEST_KIND = "digest"
# Tickets whose raw inbound mail may be pruned: they take no more replies.
FINISHED_STATUSES = ("closed", "duplicate")
# Keys of raw message slices deleted per statement, well under SQLite's
# limit of bound parameters.
PRUNE_KEYS_PER_STATEMENT = 500


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

    async def finish_digest_periods(
        self, digest_counts: dict[str, int], period_start: datetime, *, now: datetime
    ) -> None:
        """Record that each time zone's digest period is handled; a repeat is ignored.

        DIGEST_COUNTS maps each time zone to the digests queued for it. One
        statement for every zone.
        """
        if not digest_counts:
            return
        statement = self._insert(DigestRunRow).on_conflict_do_nothing(
            index_elements=["timezone", "period_start"]
        )
        await self.session.execute(
            statement,
            [
                {
                    "timezone": timezone,
                    "period_start": period_start,
                    "outcome": "sent" if count else "nothing_waiting",
                    "digest_count": count,
                    "finished_at": now,
                }
                for timezone, count in digest_counts.items()
            ],
        )

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
        next_builders = (
            _due_tickets(
                select(TicketRow.builder_id).select_from(TicketRow),
                period_start=period_start, timezones=timezones,
                waiting_since=waiting_since, repeat_before=repeat_before,
                max_reminders=max_reminders, now=now,
            )
            .where(TicketRow.builder_id > after_builder_id)
            .distinct()
            .order_by(TicketRow.builder_id)
            .limit(builder_limit)
        )
        question = aliased(MessageRow)
        query = (
            _due_tickets(
                select(
                    TicketRow,
                    BuilderRow,
                    func.substr(question.body, 1, excerpt_chars),
                ).select_from(TicketRow),
                period_start=period_start, timezones=timezones,
                waiting_since=waiting_since, repeat_before=repeat_before,
                max_reminders=max_reminders, now=now,
            )
            .outerjoin(question, question.id == _latest_question_id())
            .where(TicketRow.builder_id.in_(next_builders))
            .order_by(TicketRow.builder_id, *_most_urgent_first())
        )
        rows = await self.session.execute(query)
        return [
            WaitingTicket(
                ticket=_ticket_state(ticket, builder),
                wait_started_at=ticket.status_changed_at,
                question=excerpt,
            )
            for ticket, builder, excerpt in rows
        ]

    async def claim_due_digests(
        self,
        *,
        period_start: datetime,
        timezones: Sequence[str] | None,
        waiting_since: datetime,
        repeat_before: datetime,
        max_reminders: int,
        claimed_by: str,
        message_id_prefix: str,
        message_id_domain: str,
        now: datetime,
    ) -> None:
        """Claim the digest of PERIOD_START for every builder it is due to, in one statement.

        The builders and tickets are those waiting_for_digest would return, in
        any number. Each claim gets the Message-ID
        MESSAGE_ID_PREFIX + builder id + "@" + MESSAGE_ID_DOMAIN. A builder whose
        digest another run claimed first is left out, because the unique key
        (builder, period) lets one insert succeed: DO NOTHING on the conflict.
        """
        message_id = (
            literal(message_id_prefix, String)
            + cast(TicketRow.builder_id, String)
            + literal("@" + message_id_domain, String)
        )
        due = (
            _due_tickets(
                select(
                    TicketRow.builder_id,
                    literal(period_start, UtcDateTime),
                    message_id,
                    func.count(TicketRow.id),
                    literal(claimed_by, String),
                    literal(now, UtcDateTime),
                ).select_from(TicketRow),
                period_start=period_start, timezones=timezones,
                waiting_since=waiting_since, repeat_before=repeat_before,
                max_reminders=max_reminders, now=now,
            )
            .group_by(TicketRow.builder_id)
        )
        statement = (
            self._insert(DigestClaimRow)
            .from_select(
                ["builder_id", "period_start", "message_id", "ticket_count",
                 "claimed_by", "claimed_at"],
                due,
            )
            .on_conflict_do_nothing(index_elements=["builder_id", "period_start"])
        )
        await self.session.execute(statement)

    async def record_claimed_tickets(
        self,
        *,
        period_start: datetime,
        claimed_by: str,
        waiting_since: datetime,
        repeat_before: datetime,
        max_reminders: int,
        max_listed: int,
    ) -> None:
        """Record the due tickets of each digest CLAIMED_BY won, and count their reminders.

        The tickets are those claim_due_digests counted. Each is stored for the
        outbox worker, which composes the digest from them. The digest lists
        the MAX_LISTED most urgent ones, and only those get their reminder
        count for the current wait raised by one, with PERIOD_START as the
        latest digest period. The others are stored as not listed, so the
        digest can count them, and stay due for the next period. Two
        statements, whatever the number of tickets.
        """
        due = _due_ticket_conditions(
            waiting_since=waiting_since, repeat_before=repeat_before,
            max_reminders=max_reminders,
        )
        rank = func.row_number().over(
            partition_by=DigestClaimRow.id, order_by=_most_urgent_first()
        )
        claimed_tickets = (
            select(DigestClaimRow.id, TicketRow.id, TicketRow.status_changed_at,
                   rank <= max_listed)
            .select_from(TicketRow)
            .join(
                DigestClaimRow,
                and_(
                    DigestClaimRow.builder_id == TicketRow.builder_id,
                    DigestClaimRow.period_start == period_start,
                    DigestClaimRow.claimed_by == claimed_by,
                ),
            )
            .outerjoin(TicketReminderRow, _current_reminder())
            .where(*due)
        )
        await self.session.execute(
            insert(DigestClaimTicketRow).from_select(
                ["claim_id", "ticket_id", "wait_started_at", "listed"], claimed_tickets
            )
        )

        listed = (
            select(
                DigestClaimTicketRow.ticket_id,
                DigestClaimTicketRow.wait_started_at,
                literal(1, Integer),
                literal(period_start, UtcDateTime),
            )
            .join(DigestClaimRow, DigestClaimRow.id == DigestClaimTicketRow.claim_id)
            .where(
                DigestClaimRow.period_start == period_start,
                DigestClaimRow.claimed_by == claimed_by,
                DigestClaimTicketRow.listed.is_(True),
            )
        )
        reminders = self._insert(TicketReminderRow).from_select(
            ["ticket_id", "wait_started_at", "reminder_count", "last_period_start"], listed
        )
        table = TicketReminderRow.__table__
        await self.session.execute(
            reminders.on_conflict_do_update(
                index_elements=["ticket_id", "wait_started_at"],
                set_={
                    "reminder_count": table.c.reminder_count + 1,
                    "last_period_start": reminders.excluded.last_period_start,
                },
            )
        )

    async def queue_claimed_digests(
        self, *, period_start: datetime, claimed_by: str, sender: str, now: datetime
    ) -> dict[str, int]:
        """Put one outbox row per digest CLAIMED_BY won; return the count per time zone.

        The rows have an empty payload: the outbox worker composes each email
        when it sends it (see compose_queued in gateway.digest). Two
        statements, whatever the number of digests.
        """
        claims = (
            select(BuilderRow.timezone)
            .select_from(DigestClaimRow)
            .join(BuilderRow, BuilderRow.id == DigestClaimRow.builder_id)
            .where(
                DigestClaimRow.period_start == period_start,
                DigestClaimRow.claimed_by == claimed_by,
            )
            .subquery()
        )
        rows = (
            select(
                literal("email", String),
                null(),
                literal(DIGEST_KIND, String),
                literal(sender, String),
                BuilderRow.email,
                DigestClaimRow.message_id,
                literal(b"", LargeBinary),
                literal("pending", String),
                literal(0, Integer),
                literal(now, UtcDateTime),
                literal(now, UtcDateTime),
            )
            .select_from(DigestClaimRow)
            .join(BuilderRow, BuilderRow.id == DigestClaimRow.builder_id)
            .where(
                DigestClaimRow.period_start == period_start,
                DigestClaimRow.claimed_by == claimed_by,
            )
            .order_by(DigestClaimRow.builder_id)
        )
        await self.session.execute(
            insert(OutboxRow).from_select(
                ["channel", "ticket_id", "kind", "sender", "recipient", "message_id",
                 "payload", "state", "attempts", "created_at", "next_attempt_at"],
                rows,
            )
        )
        counts = await self.session.execute(
            select(claims.c.timezone, func.count()).group_by(claims.c.timezone)
        )
        return {timezone: count for timezone, count in counts}

    async def queued_digests(
        self, outbox_ids: Sequence[int], *, excerpt_chars: int, now: datetime
    ) -> list[QueuedDigest]:
        """Return what the queued digest emails among OUTBOX_IDS list, as of NOW.

        A digest lists the tickets its run recorded as listed
        (record_claimed_tickets) that still wait on the builder in that same
        wait, most urgent first, and counts the recorded tickets that the bound
        left out and that still wait. Ids that are not queued digests are left
        out.
        """
        if not outbox_ids:
            return []
        claims = await self.session.execute(
            select(
                OutboxRow.id,
                OutboxRow.message_id,
                BuilderRow,
                DigestOptOutRow.builder_id,
                SuppressedAddressRow.address,
            )
            .join(DigestClaimRow, DigestClaimRow.message_id == OutboxRow.message_id)
            .join(BuilderRow, BuilderRow.id == DigestClaimRow.builder_id)
            .outerjoin(DigestOptOutRow, DigestOptOutRow.builder_id == BuilderRow.id)
            .outerjoin(
                SuppressedAddressRow,
                and_(SuppressedAddressRow.address == BuilderRow.email,
                     SuppressedAddressRow.suppressed_until > now),
            )
            .where(OutboxRow.id.in_(list(outbox_ids)), OutboxRow.kind == DIGEST_KIND)
            .order_by(OutboxRow.id)
        )
        found: dict[int, tuple[str, BuilderRow, bool, bool]] = {
            outbox_id: (message_id, builder, opted_out is not None, suppressed is not None)
            for outbox_id, message_id, builder, opted_out, suppressed in claims
        }
        if not found:
            return []
        question = aliased(MessageRow)
        rows = await self.session.execute(
            _recorded_tickets_still_waiting(
                select(
                    OutboxRow.id,
                    TicketRow,
                    func.substr(question.body, 1, excerpt_chars),
                ),
                outbox_ids=list(found),
                listed=True,
            )
            .outerjoin(question, question.id == _latest_question_id())
            .order_by(OutboxRow.id, *_most_urgent_first())
        )
        tickets: dict[int, list[WaitingTicket]] = {outbox_id: [] for outbox_id in found}
        for outbox_id, ticket, question_text in rows:
            builder = found[outbox_id][1]
            tickets[outbox_id].append(
                WaitingTicket(
                    ticket=_ticket_state(ticket, builder),
                    wait_started_at=ticket.status_changed_at,
                    question=question_text,
                )
            )
        left_out = await self.session.execute(
            _recorded_tickets_still_waiting(
                select(OutboxRow.id, func.count()), outbox_ids=list(found), listed=False
            ).group_by(OutboxRow.id)
        )
        more_waiting = {outbox_id: count for outbox_id, count in left_out}
        return [
            QueuedDigest(
                outbox_id=outbox_id,
                message_id=message_id,
                builder=_builder(builder),
                opted_out=opted_out,
                suppressed=suppressed,
                tickets=tuple(tickets[outbox_id]),
                more_waiting=more_waiting.get(outbox_id, 0),
            )
            for outbox_id, (message_id, builder, opted_out, suppressed) in found.items()
        ]

    async def lock_claimed_digests(
        self, outbox_ids: Sequence[int], *, worker: str
    ) -> set[int]:
        """Lock the digests among OUTBOX_IDS that WORKER may still store; return ids.

        Those are the pending digest rows that WORKER still claims and whose
        payload is still empty. A row whose claim ran out and that another
        worker claimed, composed or sent meanwhile is left out, so the digest
        is composed and sent once.
        """
        if not outbox_ids:
            return set()
        rows = await self.session.scalars(
            select(OutboxRow.id)
            .where(
                OutboxRow.id.in_(list(outbox_ids)),
                OutboxRow.kind == DIGEST_KIND,
                OutboxRow.state == "pending",
                OutboxRow.claimed_by == worker,
                func.length(OutboxRow.payload) == 0,
            )
            .with_for_update()
        )
        return set(rows)

    async def store_composed_digests(
        self, digests: Sequence[ComposedDigest], *, now: datetime
    ) -> None:
        """Write composed digests into their outbox rows, and index one-ticket digests."""
        if not digests:
            return
        table = OutboxRow.__table__
        await self.session.execute(
            update(table)
            .where(table.c.id == bindparam("outbox_id"), table.c.kind == DIGEST_KIND)
            .values(payload=bindparam("data")),
            [{"outbox_id": digest.outbox_id, "data": digest.data} for digest in digests],
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

    async def forget_digest_tickets(self, outbox_ids: Sequence[int]) -> None:
        """Drop the recorded tickets of digests that are composed or cancelled."""
        if not outbox_ids:
            return
        claims = (
            select(DigestClaimRow.id)
            .join(OutboxRow, OutboxRow.message_id == DigestClaimRow.message_id)
            .where(OutboxRow.id.in_(list(outbox_ids)), OutboxRow.kind == DIGEST_KIND)
        )
        await self.session.execute(
            delete(DigestClaimTicketRow).where(DigestClaimTicketRow.claim_id.in_(claims))
        )

    async def cancel_digest_emails(self, reasons: dict[int, str]) -> None:
        """Finish queued digest emails without sending them; REASONS maps outbox id to why."""
        if not reasons:
            return
        table = OutboxRow.__table__
        await self.session.execute(
            update(table)
            .where(table.c.id == bindparam("outbox_id"), table.c.kind == DIGEST_KIND)
            .values(state="cancelled", last_error=bindparam("reason"),
                    claimed_by=None, claimed_until=None),
            [{"outbox_id": outbox_id, "reason": reason}
             for outbox_id, reason in reasons.items()],
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
        sliced = await self.session.scalars(
            select(InboundRow.raw_parts_key)
            .where(InboundRow.ticket_id.in_(finished), InboundRow.raw_parts_key.is_not(None))
        )
        keys = sliced.all()
        result = await self.session.execute(
            update(InboundRow)
            .where(
                InboundRow.ticket_id.in_(finished),
                or_(InboundRow.raw.is_not(None), InboundRow.raw_parts_key.is_not(None)),
            )
            .values(raw=None, raw_parts_key=None)
        )
        for start in range(0, len(keys), PRUNE_KEYS_PER_STATEMENT):
            await self.session.execute(
                delete(RawPartRow)
                .where(RawPartRow.parts_key.in_(keys[start : start + PRUNE_KEYS_PER_STATEMENT]))
                .execution_options(synchronize_session=False)
            )
        return result.rowcount or 0

    async def prune_unused_raw_parts(self, *, stored_before: datetime) -> int:
        """Delete raw message slices that no inbound record uses, stored before a time.

        Such slices belong to large messages that were written in slices and then
        not recorded: a redelivery, or a process stopped in between. Returns how
        many slices were deleted.
        """
        used = select(InboundRow.id).where(InboundRow.raw_parts_key == RawPartRow.parts_key)
        result = await self.session.execute(
            delete(RawPartRow)
            .where(RawPartRow.stored_at < stored_before, ~used.exists())
            .execution_options(synchronize_session=False)
        )
        return result.rowcount or 0

    async def prune_unused_blobs(self, *, stored_before: datetime) -> int:
        """Delete blobs that no attachment uses and that were stored before a time.

        Such blobs are the files of large messages that were written first and
        then not applied. Returns how many blobs were deleted.
        """
        used = select(AttachmentRow.id).where(AttachmentRow.blob_id == BlobRow.id)
        try:
            async with self.session.begin_nested():
                result = await self.session.execute(
                    delete(BlobRow)
                    .where(BlobRow.stored_at < stored_before, ~used.exists())
                    .execution_options(synchronize_session=False)
                )
        except IntegrityError:
            # On PostgreSQL a message that committed meanwhile may use one of them.
            log.warning("unused blobs not deleted: a new attachment uses one of them; "
                        "the next run tries again")
            return 0
        return result.rowcount or 0

    def _insert(self, model: Any) -> Any:
        # Both dialects offer ON CONFLICT with the same API.
        if self.dialect == "postgresql":
            return postgresql.insert(model)
        return sqlite.insert(model)


def _due_ticket_conditions(
    *, waiting_since: datetime, repeat_before: datetime, max_reminders: int
) -> list[Any]:
    """Return the conditions of a ticket a digest lists, given the join _current_reminder."""
    reminder = TicketReminderRow
    return [
        TicketRow.status == WAITING,
        TicketRow.status_changed_at <= waiting_since,
        or_(
            reminder.id.is_(None),
            and_(
                reminder.reminder_count < max_reminders,
                reminder.last_period_start <= repeat_before,
            ),
        ),
    ]


def _current_reminder() -> Any:
    """Return the join condition of a ticket's reminder row for its current wait."""
    return and_(
        TicketReminderRow.ticket_id == TicketRow.id,
        TicketReminderRow.wait_started_at == TicketRow.status_changed_at,
    )


def _due_tickets(
    query: Any,
    *,
    period_start: datetime,
    timezones: Sequence[str] | None,
    waiting_since: datetime,
    repeat_before: datetime,
    max_reminders: int,
    now: datetime,
) -> Any:
    """Join QUERY (on tickets) to what decides a digest and keep the tickets it lists.

    Those are the due tickets (_due_ticket_conditions) of builders in TIMEZONES
    (None: every builder) who did not opt out, whose address is not suppressed
    at NOW, and who have no digest claimed for PERIOD_START.
    """
    claim = DigestClaimRow
    opt_out = DigestOptOutRow
    suppressed = SuppressedAddressRow
    conditions = _due_ticket_conditions(
        waiting_since=waiting_since, repeat_before=repeat_before,
        max_reminders=max_reminders,
    )
    conditions += [
        opt_out.builder_id.is_(None),
        claim.id.is_(None),
        suppressed.address.is_(None),
    ]
    if timezones is not None:
        conditions.append(BuilderRow.timezone.in_(list(timezones)))
    return (
        query.join(BuilderRow, BuilderRow.id == TicketRow.builder_id)
        .outerjoin(TicketReminderRow, _current_reminder())
        .outerjoin(opt_out, opt_out.builder_id == TicketRow.builder_id)
        .outerjoin(
            suppressed,
            and_(suppressed.address == BuilderRow.email, suppressed.suppressed_until > now),
        )
        .outerjoin(
            claim,
            and_(claim.builder_id == TicketRow.builder_id, claim.period_start == period_start),
        )
        .where(*conditions)
    )


def _most_urgent_first() -> tuple[Any, ...]:
    """Return the order of tickets within one digest: by severity, then longest wait."""
    return (TicketRow.severity, TicketRow.status_changed_at, TicketRow.number)


def _recorded_tickets_still_waiting(
    query: Any, *, outbox_ids: Sequence[int], listed: bool
) -> Any:
    """Join QUERY to the recorded tickets of digest emails OUTBOX_IDS that still wait.

    Keeps the tickets recorded as LISTED (or as left out by the bound) that
    still wait on the builder in the wait they were recorded for.
    """
    return (
        query.select_from(OutboxRow)
        .join(DigestClaimRow, DigestClaimRow.message_id == OutboxRow.message_id)
        .join(
            DigestClaimTicketRow,
            and_(
                DigestClaimTicketRow.claim_id == DigestClaimRow.id,
                DigestClaimTicketRow.listed.is_(listed),
            ),
        )
        .join(
            TicketRow,
            and_(
                TicketRow.id == DigestClaimTicketRow.ticket_id,
                TicketRow.status == WAITING,
                TicketRow.status_changed_at == DigestClaimTicketRow.wait_started_at,
            ),
        )
        .where(OutboxRow.id.in_(list(outbox_ids)))
    )


def _latest_question_id() -> Any:
    """Return the id of support's latest public message on the ticket of the outer query."""
    return (
        select(func.max(MessageRow.id))
        .where(
            MessageRow.ticket_id == TicketRow.id,
            MessageRow.visibility == "public",
            MessageRow.kind == "support",
        )
        .correlate(TicketRow)
        .scalar_subquery()
    )


def _builder(builder: BuilderRow) -> Builder:
    return Builder(id=builder.id, email=builder.email, name=builder.name,
                   timezone=builder.timezone, apps=())


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
        builder=_builder(builder),
    )
