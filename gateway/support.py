"""Support operations on a ticket: reply, add a note, change fields.

The command line calls these today and Slack calls the same operations, so
every channel applies the same rules and sends the same notices.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway import fields, rules
from gateway.errors import InvalidChange, UnknownTicket
from gateway.events import NoEvents, TicketEvents
from gateway.mailer import NoticeMailer
from gateway.model import CheckedAttachment, TicketState
from gateway.notices import NoticeRenderer, ticket_subject
from gateway.tickets import add_status_event

log = logging.getLogger(__name__)

# The builder hears about these status changes; the rest are internal.
STATUS_NOTICES = {
    "waiting_on_builder": "status_waiting",
    "resolved": "status_resolved",
    "closed": "status_closed",
    "duplicate": "status_duplicate",
}


@dataclass(frozen=True)
class TicketChange:
    """The requested changes of `tickets set`; None leaves a field as it is."""

    status: str | None = None
    summary: str | None = None
    question: str | None = None
    severity: str | None = None
    category: str | None = None
    priority: str | None = None
    assignee: str | None = None
    duplicate_of: int | None = None


@dataclass(frozen=True)
class ChangeResult:
    """The result of a change: the ticket before and after, and a line per change."""

    before: TicketState
    after: TicketState
    changes: tuple[str, ...]
    emailed: str | None


class SupportDesk:
    """Ticket operations taken by the support team."""

    def __init__(
        self,
        *,
        store: Any,
        mailer: NoticeMailer,
        renderer: NoticeRenderer | None = None,
        events: TicketEvents | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._events: TicketEvents = events or NoEvents()
        self._mailer = mailer
        self._renderer = renderer or NoticeRenderer()
        self._now = now

    async def reply(
        self,
        number: int,
        text: str,
        *,
        author: str,
        attachments: tuple[CheckedAttachment, ...] = (),
        send_at: datetime | None = None,
    ) -> TicketState:
        """Add a public reply and email it to the builder (not before SEND_AT, if set)."""
        text = _require_text(text, "reply")
        now = self._now()
        async with self._store.write() as tx:
            ticket = await _lock(tx, number)
            if ticket.status in rules.FINISHED:
                raise InvalidChange(
                    f"ticket #{number} is {ticket.status}; reopen it before replying."
                )
            message_id = await tx.add_message(
                ticket.id, visibility="public", kind="support", author=author, body=text,
                attachments=attachments, now=now,
            )
            if ticket.status == "new":
                await tx.update_ticket(ticket.id, status="open", now=now)
                await add_status_event(tx, ticket, "open", author, now)
            else:
                await tx.update_ticket(ticket.id, now=now)
            notice = self._renderer.render(
                "support_reply",
                ticket_subject(ticket.number, ticket.title),
                builder_name=ticket.builder.name,
                number=ticket.number,
                title=ticket.title,
                text=text,
                author=author,
                status=ticket.status if ticket.status != "new" else "open",
            )
            email_id = await self._mailer.queue(tx, ticket.builder, notice, now=now,
                                                ticket=ticket, attachments=attachments)
            if send_at is not None and email_id is not None:
                # Held so that it can still be cancelled, e.g. by Undo in Slack.
                await tx.delay_email(email_id, until=send_at)
            after = await tx.lock_ticket_by_id(ticket.id)
            await self._events.message_added(tx, after, message_id)
            if after.status != ticket.status:
                await self._events.ticket_changed(
                    tx, ticket, after, author, (f"status {ticket.status} → {after.status}",)
                )
        log.info("support reply on #%d (%d characters)", number, len(text))
        return after

    async def note(self, number: int, text: str, *, author: str) -> TicketState:
        """Add an internal note; it is never emailed or shown to the builder."""
        text = _require_text(text, "note")
        now = self._now()
        async with self._store.write() as tx:
            ticket = await _lock(tx, number)
            message_id = await tx.add_message(
                ticket.id, visibility="internal", kind="support", author=author, body=text,
                now=now,
            )
            await tx.update_ticket(ticket.id, now=now)
            await self._events.message_added(tx, ticket, message_id)
        log.info("internal note on #%d (%d characters)", number, len(text))
        return ticket

    async def change(self, number: int, change: TicketChange, *, actor: str) -> ChangeResult:
        """Apply field and status changes with the same rules for every channel."""
        _check_values(change)
        now = self._now()
        async with self._store.write() as tx:
            ticket = await _lock(tx, number)
            if change.duplicate_of is not None:
                await _check_duplicate_target(tx, ticket, change.duplicate_of)
            status = change.status
            if status is None and change.duplicate_of is not None:
                status = "duplicate"
            if status is not None:
                rules.check_status_change(
                    ticket.status, status, summary=change.summary,
                    question=change.question, duplicate_of=change.duplicate_of,
                )
            elif change.summary or change.question:
                raise InvalidChange("--summary goes with --status resolved and --question "
                                    "with --status waiting_on_builder.")

            values, lines = _field_changes(ticket, change)
            if status is not None:
                lines.append(f"status {ticket.status} → {status}")
            if not lines:
                raise InvalidChange(f"nothing to change on ticket #{number}.")
            if status == "resolved":
                values["resolution_summary"] = change.summary.strip()  # type: ignore[union-attr]
            if status == "reopened":
                values["duplicate_of_id"] = None
            await tx.update_ticket(ticket.id, status=status, now=now,
                                   duplicate_of=change.duplicate_of, **values)
            await tx.add_message(ticket.id, visibility="internal", kind="system",
                                 author=actor, body=f"{actor} changed " + "; ".join(lines) + ".",
                                 now=now)
            if status == "waiting_on_builder" and change.question:
                await tx.add_message(ticket.id, visibility="public", kind="support",
                                     author=actor, body=change.question.strip(), now=now)
            after = await tx.lock_ticket_by_id(ticket.id)
            await self._events.ticket_changed(tx, ticket, after, actor, tuple(lines))
            emailed = None
            if status in STATUS_NOTICES:
                emailed = STATUS_NOTICES[status]
                notice = self._renderer.render(
                    emailed,
                    ticket_subject(after.number, after.title),
                    builder_name=after.builder.name,
                    number=after.number,
                    title=after.title,
                    question=(change.question or "").strip(),
                    summary=(change.summary or "").strip(),
                    duplicate_of=after.duplicate_of,
                )
                await self._mailer.queue(tx, after.builder, notice, now=now, ticket=after)
        log.info("ticket #%d changed by support: %d change(s)", number, len(lines))
        return ChangeResult(before=ticket, after=after, changes=tuple(lines), emailed=emailed)


async def _lock(tx: Any, number: int) -> TicketState:
    ticket = await tx.lock_ticket(number)
    if ticket is None:
        raise UnknownTicket(f"no ticket #{number}; see `support-gateway tickets list`.")
    return ticket


async def _check_duplicate_target(tx: Any, ticket: TicketState, other: int) -> None:
    if other == ticket.number:
        raise InvalidChange(f"ticket #{other} cannot be a duplicate of itself.")
    target = await tx.lock_ticket(other)
    if target is None:
        raise InvalidChange(f"ticket #{other} does not exist; name the ticket that "
                            "tracks the issue.")
    if target.builder.id != ticket.builder.id:
        raise InvalidChange(
            f"ticket #{other} belongs to another builder, who cannot follow it for "
            f"#{ticket.number}'s builder; link the tickets in an internal note instead."
        )
    if target.status == "duplicate":
        raise InvalidChange(
            f"ticket #{other} is itself a duplicate of #{target.duplicate_of}; "
            f"point to #{target.duplicate_of} instead."
        )


def _check_values(change: TicketChange) -> None:
    if change.severity is not None and change.severity not in fields.SEVERITIES:
        raise InvalidChange(f"unknown severity {change.severity!r}; use one of: "
                            f"{', '.join(fields.SEVERITIES)}.")
    if change.category is not None and change.category not in fields.CATEGORIES:
        raise InvalidChange(f"unknown category {change.category!r}; use one of: "
                            f"{', '.join(fields.CATEGORIES)}.")
    if change.priority is not None and change.priority.upper() not in fields.PRIORITIES:
        raise InvalidChange(f"unknown priority {change.priority!r}; use one of: "
                            f"{', '.join(fields.PRIORITIES)}.")


def _field_changes(ticket: TicketState, change: TicketChange) -> tuple[dict[str, Any], list[str]]:
    values: dict[str, Any] = {}
    lines: list[str] = []
    for name in ("severity", "category", "priority", "assignee"):
        wanted = getattr(change, name)
        if wanted is None:
            continue
        if name == "priority":
            wanted = wanted.upper()
        if name == "assignee":
            wanted = wanted.strip() or None
        if wanted != getattr(ticket, name):
            values[name] = wanted
            lines.append(f"{name} {getattr(ticket, name) or 'none'} → {wanted or 'none'}")
    return values, lines


def _require_text(text: str, what: str) -> str:
    text = text.strip()
    if not text:
        raise InvalidChange(f"the {what} is empty; write its text.")
    return text
