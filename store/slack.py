"""Queries for the Slack mirror: threads, receipts, queued posts and held replies."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from store.models import (
    AttachmentRow,
    BlobRow,
    MessageRow,
    OutboxRow,
    SlackReceiptRow,
    SlackReplyRow,
    SlackThreadRow,
    TicketRow,
)
from store.outbox import claim_outbox_rows

log = logging.getLogger(__name__)

SLACK_CHANNEL = "slack"


@dataclass(frozen=True)
class SlackJob:
    """One queued Slack call: its outbox id, ticket, kind and JSON payload."""

    id: int
    ticket_id: int
    channel: str
    kind: str
    payload: dict[str, Any]
    attempts: int


@dataclass(frozen=True)
class StoredMessage:
    """One conversation entry as the Slack mirror shows it."""

    id: int
    ticket_id: int
    visibility: str
    kind: str
    author: str
    body: str
    attachment_count: int


@dataclass(frozen=True)
class StoredFile:
    """The bytes of one attachment, for uploading into a thread."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class HeldReply:
    """A public reply sent from Slack, with its email's state in the outbox."""

    id: int
    ticket_id: int
    ticket_number: int
    message_id: int
    user_id: str
    state: str
    email_state: str | None
    send_at: datetime


class SlackQueries:
    """The Slack mirror's queries, mixed into Transaction."""

    session: AsyncSession

    # Receipts

    async def claim_slack_receipt(self, key: str, *, now: datetime, lease: timedelta) -> bool:
        """Claim the request KEY until NOW + LEASE; return False when it is done or claimed.

        A claim whose lease has ended (the instance died before the effect) is
        taken over, so a retry of that request takes effect after all.
        """
        key = key[:200]
        try:
            async with self.session.begin_nested():
                self.session.add(SlackReceiptRow(key=key, received_at=now, state="processing",
                                                 lease_until=now + lease))
                await self.session.flush()
        except IntegrityError:
            result = await self.session.execute(
                update(SlackReceiptRow)
                .where(
                    SlackReceiptRow.key == key,
                    SlackReceiptRow.state == "processing",
                    SlackReceiptRow.lease_until < now,
                )
                .values(lease_until=now + lease)
            )
            return result.rowcount == 1
        return True

    async def finish_slack_receipt(self, key: str) -> bool:
        """Mark the request KEY done; return False when it was done before or never claimed."""
        result = await self.session.execute(
            update(SlackReceiptRow)
            .where(SlackReceiptRow.key == key[:200], SlackReceiptRow.state == "processing")
            .values(state="done", lease_until=None)
        )
        return result.rowcount == 1

    # Threads

    async def slack_thread(self, ticket_id: int) -> tuple[str, str | None] | None:
        """Return (channel, root ts) of a ticket's thread, or None before it is queued."""
        row = await self.session.get(SlackThreadRow, ticket_id)
        if row is None:
            return None
        return row.channel, row.root_ts

    async def set_slack_thread(self, ticket_id: int, channel: str, root_ts: str | None) -> None:
        """Remember where a ticket's root message is, or will be, posted."""
        row = await self.session.get(SlackThreadRow, ticket_id)
        if row is None:
            self.session.add(SlackThreadRow(ticket_id=ticket_id, channel=channel,
                                            root_ts=root_ts))
        else:
            row.channel = channel
            row.root_ts = root_ts
        await self.session.flush()

    async def ticket_number_for_thread(self, channel: str, root_ts: str) -> int | None:
        """Return the number of the ticket whose root message is CHANNEL/ROOT_TS."""
        return await self.session.scalar(
            select(TicketRow.number)
            .join(SlackThreadRow, SlackThreadRow.ticket_id == TicketRow.id)
            .where(SlackThreadRow.channel == channel, SlackThreadRow.root_ts == root_ts)
        )

    async def ticket_number_for_id(self, ticket_id: int) -> int | None:
        """Return the number of the ticket with this id."""
        return await self.session.scalar(
            select(TicketRow.number).where(TicketRow.id == ticket_id)
        )

    # Conversation entries

    async def stored_message(self, message_id: int) -> StoredMessage | None:
        """Return one conversation entry with its attachment count, or None."""
        row = await self.session.get(MessageRow, message_id)
        if row is None:
            return None
        count = await self.session.scalar(
            select(func.count()).select_from(AttachmentRow)
            .where(AttachmentRow.message_id == message_id)
        )
        return StoredMessage(row.id, row.ticket_id, row.visibility, row.kind, row.author,
                             row.body, int(count or 0))

    async def message_files(self, message_id: int) -> list[StoredFile]:
        """Return the attachments of one conversation entry with their bytes."""
        rows = await self.session.execute(
            select(AttachmentRow.filename, AttachmentRow.content_type, BlobRow.data)
            .join(BlobRow, BlobRow.id == AttachmentRow.blob_id)
            .where(AttachmentRow.message_id == message_id)
            .order_by(AttachmentRow.id)
        )
        return [StoredFile(name, content_type, data) for name, content_type, data in rows]

    async def first_message_id(self, ticket_id: int) -> int | None:
        """Return the id of a ticket's first conversation entry."""
        return await self.session.scalar(
            select(func.min(MessageRow.id)).where(MessageRow.ticket_id == ticket_id)
        )

    # Queued Slack calls

    async def enqueue_slack(
        self, ticket_id: int, *, channel: str, kind: str, payload: dict[str, Any],
        now: datetime,
    ) -> int:
        """Queue one Slack call for a ticket; calls of one ticket run in queue order."""
        row = OutboxRow(
            channel=SLACK_CHANNEL,
            ticket_id=ticket_id,
            kind=kind,
            sender="",
            recipient=channel,
            message_id=None,
            payload=json.dumps(payload).encode(),
            state="pending",
            attempts=0,
            created_at=now,
            next_attempt_at=now,
        )
        self.session.add(row)
        await self.session.flush()
        return row.id

    async def claim_due_slack(
        self, *, worker: str, now: datetime, lease: timedelta, limit: int
    ) -> list[SlackJob]:
        """Claim due Slack calls, at most the oldest pending one of each ticket."""
        earlier = aliased(OutboxRow)
        waits_behind_earlier = exists().where(
            earlier.channel == SLACK_CHANNEL,
            earlier.state == "pending",
            earlier.ticket_id == OutboxRow.ticket_id,
            earlier.id < OutboxRow.id,
        )
        rows = await claim_outbox_rows(
            self.session,
            channel=SLACK_CHANNEL,
            worker=worker,
            now=now,
            lease=lease,
            limit=limit,
            order_by=(OutboxRow.id,),
            extra_conditions=(~waits_behind_earlier,),
        )
        return [
            SlackJob(row.id, row.ticket_id or 0, row.recipient, row.kind,
                     json.loads(row.payload), row.attempts)
            for row in rows
        ]

    async def pending_slack_count(self) -> int:
        """Return how many Slack calls wait in the outbox."""
        count = await self.session.scalar(
            select(func.count()).select_from(OutboxRow).where(
                OutboxRow.channel == SLACK_CHANNEL, OutboxRow.state == "pending"
            )
        )
        return int(count or 0)

    # Replies held for the undo window

    async def delay_email(self, message_id: str, *, until: datetime) -> None:
        """Hold a queued email (by its Message-ID) until UNTIL."""
        await self.session.execute(
            update(OutboxRow)
            .where(OutboxRow.message_id == message_id, OutboxRow.state == "pending")
            .values(next_attempt_at=until)
        )

    async def newest_reply_email(self, ticket_id: int) -> int | None:
        """Return the outbox id of the newest support reply email of a ticket."""
        return await self.session.scalar(
            select(func.max(OutboxRow.id)).where(
                OutboxRow.ticket_id == ticket_id,
                OutboxRow.channel == "email",
                OutboxRow.kind == "support_reply",
            )
        )

    async def add_slack_reply(
        self,
        *,
        ticket_id: int,
        message_id: int,
        outbox_id: int | None,
        source_key: str | None,
        user_id: str,
        send_at: datetime,
    ) -> int:
        """Record a public reply sent from Slack; return its id."""
        row = SlackReplyRow(ticket_id=ticket_id, message_id=message_id, outbox_id=outbox_id,
                            source_key=source_key, user_id=user_id, state="pending",
                            send_at=send_at)
        self.session.add(row)
        await self.session.flush()
        return row.id

    async def slack_reply_sent_from(self, source_key: str) -> bool:
        """Return True when the Slack message SOURCE_KEY was already sent to a builder."""
        found = await self.session.scalar(
            select(SlackReplyRow.id).where(SlackReplyRow.source_key == source_key)
        )
        return found is not None

    async def find_slack_reply(
        self, *, reply_id: int | None = None, source_key: str | None = None
    ) -> HeldReply | None:
        """Return a reply sent from Slack by id or by source message, or None."""
        query = (
            select(SlackReplyRow, TicketRow.number, OutboxRow.state)
            .join(TicketRow, TicketRow.id == SlackReplyRow.ticket_id)
            .outerjoin(OutboxRow, OutboxRow.id == SlackReplyRow.outbox_id)
        )
        if reply_id is not None:
            query = query.where(SlackReplyRow.id == reply_id)
        else:
            query = query.where(SlackReplyRow.source_key == source_key)
        found = (await self.session.execute(query)).first()
        if found is None:
            return None
        row, number, email_state = found
        return HeldReply(row.id, row.ticket_id, number, row.message_id, row.user_id,
                         row.state, email_state, row.send_at)

    async def cancel_slack_reply(self, reply_id: int, *, now: datetime) -> bool:
        """Cancel a held reply's email unless a worker took it; return True when cancelled.

        The conversation entry becomes internal, so it is never shown to the builder.
        """
        reply = await self.session.get(SlackReplyRow, reply_id, with_for_update=True)
        if reply is None or reply.state != "pending":
            return False
        if reply.outbox_id is not None:
            result = await self.session.execute(
                update(OutboxRow)
                .where(
                    and_(
                        OutboxRow.id == reply.outbox_id,
                        OutboxRow.state == "pending",
                        OutboxRow.attempts == 0,
                        or_(OutboxRow.claimed_until.is_(None),
                            OutboxRow.claimed_until < now),
                    )
                )
                .values(state="cancelled", last_error="withdrawn in Slack before sending")
            )
            if result.rowcount != 1:
                return False
        reply.state = "cancelled"
        await self.session.execute(
            update(MessageRow).where(MessageRow.id == reply.message_id)
            .values(visibility="internal")
        )
        await self.session.flush()
        return True
