"""Queries for bounces, suppressed addresses and the new-ticket rate per builder."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.robots import SentEmail
from store.models import (
    DeliveryFailureRow,
    MailIndexRow,
    OutboxRow,
    SuppressedAddressRow,
    TicketRow,
)


class MailSafetyQueries:
    """Transaction mixin: what the desk needs to recognise bounces and loops."""

    session: AsyncSession

    async def find_sent_email(self, message_ids: Sequence[str]) -> SentEmail | None:
        """Return the first outbox email with one of MESSAGE_IDS, in their order."""
        wanted = [found for found in message_ids if found][:50]
        if not wanted:
            return None
        rows = {
            row.message_id: row
            for row in await self.session.scalars(
                select(OutboxRow).where(OutboxRow.message_id.in_(wanted))
            )
        }
        for message_id in wanted:
            row = rows.get(message_id)
            if row is not None:
                return SentEmail(
                    outbox_id=row.id,
                    message_id=message_id,
                    kind=row.kind,
                    recipient=row.recipient,
                    ticket_id=row.ticket_id,
                    state=row.state,
                )
        return None

    async def is_own_message_id(self, message_id: str) -> bool:
        """Return True when the gateway itself sent a message with this Message-ID."""
        indexed = await self.session.scalar(
            select(MailIndexRow.message_id).where(
                MailIndexRow.message_id == message_id, MailIndexRow.outbound.is_(True)
            )
        )
        if indexed is not None:
            return True
        queued = await self.session.scalar(
            select(OutboxRow.id).where(OutboxRow.message_id == message_id).limit(1)
        )
        return queued is not None

    async def record_delivery_failure(
        self,
        sent: SentEmail,
        *,
        recipient: str,
        status: str | None,
        action: str,
        inbound_id: int | None,
        now: datetime,
    ) -> int:
        """Store what a bounce reported about one sent email; return the record id."""
        row = DeliveryFailureRow(
            outbox_id=sent.outbox_id,
            ticket_id=sent.ticket_id,
            inbound_id=inbound_id,
            recipient=recipient,
            status=status,
            action=action,
            received_at=now,
        )
        self.session.add(row)
        await self.session.flush()
        return row.id

    async def delivery_failures(self, outbox_id: int) -> list[tuple[str, str | None, str]]:
        """Return (recipient, status, action) of each bounce of one outbox email."""
        rows = await self.session.execute(
            select(
                DeliveryFailureRow.recipient,
                DeliveryFailureRow.status,
                DeliveryFailureRow.action,
            )
            .where(DeliveryFailureRow.outbox_id == outbox_id)
            .order_by(DeliveryFailureRow.id)
        )
        return [tuple(row) for row in rows]

    async def suppress_address(
        self, address: str, *, until: datetime, reason: str, now: datetime
    ) -> None:
        """Suppress mail to ADDRESS until UNTIL, extending an earlier suppression."""
        address = address.strip().lower()
        row = await self.session.get(SuppressedAddressRow, address)
        if row is not None:
            row.suppressed_until = max(row.suppressed_until, until)
            row.reason = reason
            await self.session.flush()
            return
        try:
            async with self.session.begin_nested():
                self.session.add(
                    SuppressedAddressRow(
                        address=address, suppressed_until=until, reason=reason,
                        created_at=now,
                    )
                )
                await self.session.flush()
        except IntegrityError:
            # Another instance stored a suppression for the same address first.
            row = await self.session.get(SuppressedAddressRow, address)
            if row is not None:
                row.suppressed_until = max(row.suppressed_until, until)
                await self.session.flush()

    async def suppressed_until(self, address: str, now: datetime) -> datetime | None:
        """Return when the suppression of ADDRESS ends, or None when it is not suppressed."""
        until = await self.session.scalar(
            select(SuppressedAddressRow.suppressed_until).where(
                SuppressedAddressRow.address == address.strip().lower()
            )
        )
        if until is None or until <= now:
            return None
        return until

    async def count_tickets_opened(self, builder_id: int, *, since: datetime) -> int:
        """Return how many tickets BUILDER_ID opened after SINCE."""
        count = await self.session.scalar(
            select(func.count())
            .select_from(TicketRow)
            .where(TicketRow.builder_id == builder_id, TicketRow.created_at > since)
        )
        return int(count or 0)
