"""Conversions from table rows to the frozen values other packages read."""

from __future__ import annotations

from collections.abc import Sequence

from gateway import fields
from gateway.model import (
    App,
    AttachmentInfo,
    Builder,
    InboundView,
    MessageView,
    TicketSummary,
)
from store.models import AttachmentRow, BuilderRow, InboundRow, MessageRow, TicketRow


def builder_view(row: BuilderRow, apps: Sequence[App]) -> Builder:
    """Return a builder with its apps."""
    return Builder(id=row.id, email=row.email, name=row.name, timezone=row.timezone,
                   apps=tuple(apps))


def ticket_summary(ticket: TicketRow, builder: BuilderRow) -> TicketSummary:
    """Return a ticket as lists show it."""
    return TicketSummary(
        id=ticket.id,
        number=ticket.number,
        title=ticket.title,
        status=ticket.status,
        status_label=fields.status_label(ticket.status),
        category=ticket.category,
        severity=ticket.severity,
        priority=ticket.priority,
        app_name=ticket.app_name,
        app_uri=ticket.app_uri,
        builder_email=builder.email,
        builder_name=builder.name,
        assignee=ticket.assignee,
        created_at=ticket.created_at,
        last_activity_at=ticket.last_activity_at,
    )


def inbound_view(row: InboundRow, ticket_number: int | None) -> InboundView:
    """Return an inbound record without its raw bytes."""
    return InboundView(
        id=row.id,
        received_at=row.received_at,
        mail_from=row.mail_from,
        message_id=row.message_id,
        size_bytes=row.size_bytes,
        outcome=row.outcome,
        detail=row.detail,
        ticket_number=ticket_number,
    )


def message_view(row: MessageRow, attachments: Sequence[AttachmentInfo]) -> MessageView:
    """Return a conversation entry with its attachments."""
    return MessageView(
        id=row.id,
        visibility=row.visibility,
        kind=row.kind,
        author=row.author,
        body=row.body,
        created_at=row.created_at,
        attachments=tuple(attachments),
    )


def attachment_info(row: AttachmentRow, size_bytes: int, sha256: str) -> AttachmentInfo:
    """Return an attachment's description without its bytes."""
    return AttachmentInfo(
        id=row.id,
        filename=row.filename,
        content_type=row.content_type,
        size_bytes=size_bytes,
        sha256=sha256,
    )
