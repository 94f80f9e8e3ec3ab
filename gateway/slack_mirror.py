"""Mirror tickets into Slack threads by queueing Slack calls in the outbox.

The mirror is a TicketEvents listener, so each call it queues is committed in
the same transaction as the ticket change, or not at all. The Slack worker
sends the calls later, in order per ticket. What a call shows is rendered when
it is sent, from the stored ticket.

A ticket operation started by a Slack request also marks that request's
receipt done in its transaction, so the effect and the receipt commit together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.model import TicketState

log = logging.getLogger(__name__)


@dataclass
class SlackOrigin:
    """The Slack person and message behind a ticket operation now running."""

    user_id: str
    user_name: str
    # The Slack message that was sent to the builder, when there is one.
    channel: str = ""
    ts: str = ""
    undo_seconds: int = 0
    # Filled in by the mirror: the held reply it recorded.
    reply_id: int | None = field(default=None)

    @property
    def source_key(self) -> str | None:
        """Return "channel/ts" of the source message, or None."""
        return f"{self.channel}/{self.ts}" if self.channel and self.ts else None


_origin: ContextVar[SlackOrigin | None] = ContextVar("slack_origin", default=None)


class RepeatedSlackRequest(Exception):
    """The same Slack request took effect elsewhere first; this transaction rolls back."""


@dataclass
class SlackReceipt:
    """The receipt of the Slack request being handled; KEY is set once it is claimed."""

    key: str = ""
    # The transaction that marked the receipt done, so that a second listener
    # call in that transaction does not find it done already.
    _finished_in: Any = field(default=None, repr=False)

    async def finish_in(self, tx: Any) -> None:
        """Mark the receipt done in TX; raise RepeatedSlackRequest when it was done before."""
        if not self.key or self._finished_in is tx:
            return
        if not await tx.finish_slack_receipt(self.key):
            raise RepeatedSlackRequest(self.key.split(":")[0])
        self._finished_in = tx


_receipt: ContextVar[SlackReceipt | None] = ContextVar("slack_receipt", default=None)


@contextmanager
def handling_slack_request() -> Iterator[SlackReceipt]:
    """Give the Slack request handled inside this block a receipt to fill in."""
    receipt = SlackReceipt()
    token = _receipt.set(receipt)
    try:
        yield receipt
    finally:
        _receipt.reset(token)


def current_receipt() -> SlackReceipt | None:
    """Return the receipt of the Slack request being handled, or None."""
    return _receipt.get()


@contextmanager
def acting_from_slack(origin: SlackOrigin) -> Iterator[SlackOrigin]:
    """Mark the ticket operations inside this block as coming from Slack."""
    token = _origin.set(origin)
    try:
        yield origin
    finally:
        _origin.reset(token)


class SlackMirror:
    """Queues a root message per ticket and a thread entry per conversation event."""

    def __init__(
        self, *, channel: str, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._channel = channel
        self._now = now

    async def ticket_opened(self, tx: Any, ticket: TicketState, message_id: int) -> None:
        """Queue the root message, and the first message's files into its thread."""
        await tx.set_slack_thread(ticket.id, self._channel, None)
        await self._queue(tx, ticket, "root", {})
        first = await tx.stored_message(message_id)
        if first is not None and first.attachment_count:
            await self._queue(tx, ticket, "files", {"message_id": message_id})

    async def message_added(self, tx: Any, ticket: TicketState, message_id: int) -> None:
        """Queue a thread entry for a message, except one written in Slack itself."""
        await _finish_receipt(tx)
        message = await tx.stored_message(message_id)
        if message is None or message.kind == "system":
            return
        origin = _origin.get()
        if origin is not None:
            if message.visibility == "public":
                await self._record_reply(tx, ticket, message_id, origin)
            # A note written in the thread is already there: no echo.
            return
        await self._queue(tx, ticket, "message", {"message_id": message_id})
        if message.attachment_count:
            await self._queue(tx, ticket, "files", {"message_id": message_id})

    async def ticket_changed(
        self,
        tx: Any,
        before: TicketState,
        after: TicketState,
        actor: str,
        changes: Sequence[str],
    ) -> None:
        """Queue a short line naming who changed what, and refresh the root message."""
        await _finish_receipt(tx)
        await self._queue(tx, after, "change", {"actor": actor, "changes": list(changes)})
        await self._queue(tx, after, "update_root", {})

    async def _record_reply(
        self, tx: Any, ticket: TicketState, message_id: int, origin: SlackOrigin
    ) -> None:
        now = self._now()
        reply_id = await tx.add_slack_reply(
            ticket_id=ticket.id,
            message_id=message_id,
            outbox_id=await tx.newest_reply_email(ticket.id),
            source_key=origin.source_key,
            user_id=origin.user_id,
            send_at=now + timedelta(seconds=origin.undo_seconds),
        )
        origin.reply_id = reply_id
        if not origin.ts:
            # Written in a modal or a command: show the text in the thread.
            await self._queue(tx, ticket, "reply_text",
                              {"message_id": message_id, "actor": origin.user_name})
        else:
            await self._queue(tx, ticket, "react",
                              {"channel": origin.channel, "ts": origin.ts,
                               "name": "outbox_tray"})
        await self._queue(tx, ticket, "reply_marker",
                          {"reply_id": reply_id, "actor": origin.user_name,
                           "undo_seconds": origin.undo_seconds})

    async def _queue(self, tx: Any, ticket: TicketState, kind: str,
                     payload: dict[str, Any]) -> None:
        outbox_id = await tx.enqueue_slack(ticket.id, channel=self._channel, kind=kind,
                                           payload=payload, now=self._now())
        log.debug("queued slack %s for #%d as outbox %d", kind, ticket.number, outbox_id)


async def _finish_receipt(tx: Any) -> None:
    receipt = _receipt.get()
    if receipt is not None:
        await receipt.finish_in(tx)
