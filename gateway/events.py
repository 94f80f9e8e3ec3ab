"""Ticket events that other channels, such as Slack, follow.

Listeners run inside the transaction that made the change, so whatever they
queue (a Slack post, say) is committed with the change or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from gateway.model import TicketState


class TicketEvents(Protocol):
    """Listener interface for channels that mirror tickets, such as Slack."""

    async def ticket_opened(self, tx: Any, ticket: TicketState, message_id: int) -> None:
        """Handle a new ticket whose first message is MESSAGE_ID."""

    async def message_added(self, tx: Any, ticket: TicketState, message_id: int) -> None:
        """Handle a new builder message, support reply, note or system event."""

    async def ticket_changed(
        self,
        tx: Any,
        before: TicketState,
        after: TicketState,
        actor: str,
        changes: Sequence[str],
    ) -> None:
        """Handle a change of fields or status; CHANGES has one line per change."""


class NoEvents:
    """Listener that ignores every event, for a gateway without other channels."""

    async def ticket_opened(self, tx: Any, ticket: TicketState, message_id: int) -> None:
        return None

    async def message_added(self, tx: Any, ticket: TicketState, message_id: int) -> None:
        return None

    async def ticket_changed(
        self,
        tx: Any,
        before: TicketState,
        after: TicketState,
        actor: str,
        changes: Sequence[str],
    ) -> None:
        return None


class EventFanout:
    """Passes each event to several listeners in order."""

    def __init__(self, listeners: Sequence[TicketEvents] = ()) -> None:
        self.listeners: list[TicketEvents] = list(listeners)

    async def ticket_opened(self, tx: Any, ticket: TicketState, message_id: int) -> None:
        for listener in self.listeners:
            await listener.ticket_opened(tx, ticket, message_id)

    async def message_added(self, tx: Any, ticket: TicketState, message_id: int) -> None:
        for listener in self.listeners:
            await listener.message_added(tx, ticket, message_id)

    async def ticket_changed(
        self,
        tx: Any,
        before: TicketState,
        after: TicketState,
        actor: str,
        changes: Sequence[str],
    ) -> None:
        for listener in self.listeners:
            await listener.ticket_changed(tx, before, after, actor, changes)
