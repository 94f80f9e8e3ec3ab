"""Queries of the status page: builder links, login failures, builder views, metrics."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import column, delete, func, inspect, select, table, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from gateway import fields
from gateway.builder_links import BuilderLink
from gateway.metrics import DeskCounts
from gateway.paging import PageCursor, PageRequest
from gateway.model import (
    App,
    AttachmentInfo,
    Builder,
    TicketDetail,
    TicketPage,
)
from store.models import (
    AppRow,
    AttachmentRow,
    BlobRow,
    BuilderLinkRow,
    BuilderRow,
    InboundRow,
    LoginFailureRow,
    MessageRow,
    OutboxRow,
    TicketRow,
)
from store.paging import page_ids, read_order, slice_page
from store.views import attachment_info, builder_view, message_view, ticket_summary

log = logging.getLogger(__name__)

# Conversation entries a builder may read: public messages from either side.
# System events and internal notes stay on the support side.
BUILDER_VISIBLE_KINDS = ("builder", "support")

# Tables that other features add: (table, column counted by, metric name).
# /metrics reads one only when both the table and the column exist.
# NOTE: slack_receipts has no kind column yet, so Slack events appear in
# /metrics only once one is added.
OPTIONAL_COUNTS: tuple[tuple[str, str, str], ...] = (
    ("slack_receipts", "kind", "slack_events"),
    ("slack_events", "kind", "slack_events"),
    ("digest_runs", "outcome", "digest_runs"),
)


class WebQueries:
    """Queries for the status page, builder pages and /metrics (a Transaction mixin)."""

    session: AsyncSession

    # Builder links

    async def add_builder_link(
        self, builder_id: int, *, secret_sha256: str, now: datetime, expires_at: datetime
    ) -> int:
        """Store a new builder link and return its id."""
        row = BuilderLinkRow(
            builder_id=builder_id,
            secret_sha256=secret_sha256,
            created_at=now,
            expires_at=expires_at,
        )
        self.session.add(row)
        await self.session.flush()
        return row.id

    async def find_builder_link(self, link_id: int) -> BuilderLink | None:
        """Return one builder link, revoked or expired ones included, or None."""
        row = await self.session.get(BuilderLinkRow, link_id)
        if row is None:
            return None
        return BuilderLink(
            id=row.id,
            builder_id=row.builder_id,
            secret_sha256=row.secret_sha256,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
        )

    async def revoke_builder_links(self, builder_id: int, *, now: datetime) -> int:
        """Revoke every live link of one builder; return how many were revoked."""
        result = await self.session.execute(
            update(BuilderLinkRow)
            .where(BuilderLinkRow.builder_id == builder_id, BuilderLinkRow.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return result.rowcount or 0

    async def get_builder_by_id(self, builder_id: int) -> Builder | None:
        """Return a builder by id with its apps, or None."""
        row = await self.session.get(BuilderRow, builder_id)
        if row is None:
            return None
        apps = await self.session.scalars(
            select(AppRow).where(AppRow.builder_id == row.id).order_by(AppRow.name)
        )
        return builder_view(row, [App(a.name, a.uri) for a in apps])

    # Login failures

    async def record_login_failure(self, peer: str, *, now: datetime, forget_before: datetime) -> None:
        """Record a failed login from PEER and drop failures older than FORGET_BEFORE."""
        await self.session.execute(
            delete(LoginFailureRow).where(LoginFailureRow.failed_at < forget_before)
        )
        self.session.add(LoginFailureRow(peer=peer[:100], failed_at=now))
        await self.session.flush()

    async def count_login_failures(self, peer: str, *, since: datetime) -> int:
        """Return how many logins from PEER failed since a time."""
        count = await self.session.scalar(
            select(func.count())
            .select_from(LoginFailureRow)
            .where(LoginFailureRow.peer == peer[:100], LoginFailureRow.failed_at >= since)
        )
        return count or 0

    # Builder views

    async def list_builder_tickets(
        self,
        builder_id: int,
        *,
        page: int = 1,
        per_page: int,
        cursor: PageCursor | None = None,
    ) -> TicketPage:
        """Return one page of a builder's tickets with counts of their tickets only.

        A CURSOR reads the page next to its boundary row and ignores PAGE.
        """
        builder = await self.session.get(BuilderRow, builder_id)
        if builder is None:
            return TicketPage(total=0, open=0, label_counts={}, matched=0, page=page,
                              per_page=per_page)
        rows = await self.session.execute(
            select(TicketRow.status, func.count())
            .where(TicketRow.builder_id == builder_id)
            .group_by(TicketRow.status)
        )
        label_counts = {label: 0 for label in fields.BUILDER_LABELS}
        total = open_count = 0
        for status, count in rows:
            label_counts[fields.status_label(status)] += count
            total += count
            if status in fields.OPEN_STATUSES:
                open_count += count

        request = PageRequest(per_page=per_page, page=page, cursor=cursor)
        tickets = await self.session.scalars(
            select(TicketRow)
            .where(TicketRow.id.in_(
                page_ids([TicketRow.builder_id == builder_id], request).scalar_subquery()
            ))
            .order_by(*read_order(request))
        )
        found = slice_page(list(tickets), request, lambda row: (row.last_activity_at, row.id))
        return TicketPage(
            total=total,
            open=open_count,
            label_counts=label_counts,
            matched=total,
            page=None if cursor is not None else page,
            per_page=per_page,
            tickets=tuple(ticket_summary(ticket, builder) for ticket in found.rows),
            newer=found.newer,
            older=found.older,
        )

    async def get_builder_ticket(self, builder_id: int, number: int) -> TicketDetail | None:
        """Return a builder's ticket with public messages only, or None if not theirs."""
        found = (
            await self.session.execute(
                select(TicketRow, BuilderRow)
                .join(BuilderRow, BuilderRow.id == TicketRow.builder_id)
                .where(TicketRow.number == number, TicketRow.builder_id == builder_id)
            )
        ).first()
        if found is None:
            return None
        ticket, builder = found
        duplicate_of = None
        if ticket.duplicate_of_id is not None:
            duplicate_of = await self.session.scalar(
                select(TicketRow.number).where(TicketRow.id == ticket.duplicate_of_id)
            )
        messages = list(
            await self.session.scalars(
                select(MessageRow)
                .where(
                    MessageRow.ticket_id == ticket.id,
                    MessageRow.visibility == "public",
                    MessageRow.kind.in_(BUILDER_VISIBLE_KINDS),
                )
                .order_by(MessageRow.id)
            )
        )
        attachments = await self._attachments_of([m.id for m in messages])
        return TicketDetail(
            summary=ticket_summary(ticket, builder),
            description=ticket.description,
            resolution_summary=ticket.resolution_summary,
            duplicate_of=duplicate_of,
            status_changed_at=ticket.status_changed_at,
            messages=tuple(message_view(m, attachments.get(m.id, ())) for m in messages),
        )

    async def get_builder_attachment(
        self, builder_id: int, attachment_id: int
    ) -> tuple[AttachmentInfo, bytes] | None:
        """Return an attachment of a public message on one of the builder's tickets."""
        found = (
            await self.session.execute(
                select(AttachmentRow, BlobRow)
                .join(BlobRow, BlobRow.id == AttachmentRow.blob_id)
                .join(MessageRow, MessageRow.id == AttachmentRow.message_id)
                .join(TicketRow, TicketRow.id == MessageRow.ticket_id)
                .where(
                    AttachmentRow.id == attachment_id,
                    TicketRow.builder_id == builder_id,
                    MessageRow.visibility == "public",
                    MessageRow.kind.in_(BUILDER_VISIBLE_KINDS),
                )
            )
        ).first()
        if found is None:
            return None
        attachment, blob = found
        return attachment_info(attachment, blob.size_bytes, blob.sha256), blob.data

    async def _attachments_of(
        self, message_ids: Sequence[int]
    ) -> dict[int, list[AttachmentInfo]]:
        found: dict[int, list[AttachmentInfo]] = {}
        if not message_ids:
            return found
        rows = await self.session.execute(
            select(AttachmentRow, BlobRow.size_bytes, BlobRow.sha256)
            .join(BlobRow, BlobRow.id == AttachmentRow.blob_id)
            .where(AttachmentRow.message_id.in_(list(message_ids)))
            .order_by(AttachmentRow.id)
        )
        for attachment, size, sha256 in rows:
            found.setdefault(attachment.message_id, []).append(
                attachment_info(attachment, size, sha256)
            )
        return found

    # Metrics

    async def desk_counts(self) -> DeskCounts:
        """Return the counts that /metrics publishes, read from the database."""
        inbound = await self._count_by(InboundRow.outcome)
        tickets = await self._count_by(TicketRow.status)
        outbox = await self._count_by(OutboxRow.state)
        present = await self.session.run_sync(_optional_columns)
        optional: dict[str, dict[str, int]] = {}
        for table_name, column_name, metric in OPTIONAL_COUNTS:
            if column_name not in present.get(table_name, ()):
                continue
            source = table(table_name, column(column_name))
            optional[metric] = await self._count_by(source.c[column_name])
        return DeskCounts(
            inbound_by_outcome=inbound,
            tickets_by_status=tickets,
            outbox_by_state=outbox,
            optional=optional,
        )

    async def _count_by(self, grouped: object) -> dict[str, int]:
        rows = await self.session.execute(select(grouped, func.count()).group_by(grouped))
        return {str(key): count for key, count in rows}


def _optional_columns(session: Session) -> dict[str, set[str]]:
    inspector = inspect(session.connection())
    tables = set(inspector.get_table_names())
    return {
        name: {c["name"] for c in inspector.get_columns(name)}
        for name, _column, _metric in OPTIONAL_COUNTS
        if name in tables
    }
