"""Keyset (cursor) paging of ticket lists, newest activity first.

Ticket lists are ordered by (last_activity_at, id), both descending. A cursor
names the boundary row of a page by that sort key and the direction to read
from it. The next page is then a range read on the tickets index, so a deep
page costs the same as the first, unlike an OFFSET that skips every earlier
row.

A cursor is an opaque token: base64url of the JSON list
["older" | "newer", ISO 8601 timestamp, ticket id]. It is not signed and not
secret. An edited cursor that still decodes only moves the position. It
never widens a query, because the filters come from the request itself.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

# Longer than any cursor this module encodes (at most about 90 characters).
MAX_CURSOR_LENGTH = 200
# tickets.id is an INTEGER column: PostgreSQL rejects a larger value in a query.
MAX_TICKET_ID = 2**31 - 1
# The sort key below every real ticket. The oldest page reads newer rows from it.
BEFORE_OLDEST = (datetime(1, 1, 1, tzinfo=UTC), 0)


class InvalidCursor(ValueError):
    """Raised for a token that is not a cursor this module encoded, such as a cut or edited one."""


class Direction(Enum):
    """The side of the boundary row that a page lies on."""

    OLDER = "older"
    NEWER = "newer"


@dataclass(frozen=True)
class PageCursor:
    """The sort key of a page's boundary row and the direction to read from it.

    The boundary row itself is not on the page that the cursor opens.
    """

    direction: Direction
    last_activity_at: datetime
    ticket_id: int

    @classmethod
    def oldest_page(cls) -> PageCursor:
        """Return the cursor of the last page: newer than every ticket's sort key."""
        return cls(Direction.NEWER, *BEFORE_OLDEST)

    @property
    def opens_oldest_page(self) -> bool:
        return (self.last_activity_at, self.ticket_id) == BEFORE_OLDEST


@dataclass(frozen=True)
class PageRequest:
    """One page to read: after a cursor, or by page number with OFFSET."""

    per_page: int
    page: int = 1
    cursor: PageCursor | None = None

    @property
    def offset(self) -> int:
        return 0 if self.cursor is not None else (self.page - 1) * self.per_page


def encode_cursor(cursor: PageCursor) -> str:
    """Return the URL-safe token for CURSOR."""
    payload = [
        cursor.direction.value,
        cursor.last_activity_at.astimezone(UTC).isoformat(timespec="microseconds"),
        cursor.ticket_id,
    ]
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> PageCursor:
    """Return the cursor that TOKEN encodes, or raise InvalidCursor naming the fault."""
    payload = _decode_payload(token)
    if not isinstance(payload, list) or len(payload) != 3:
        raise InvalidCursor("it does not contain a direction, a timestamp and an id")
    direction_name, timestamp, ticket_id = payload
    try:
        direction = Direction(direction_name)
    except ValueError as exc:
        raise InvalidCursor("the direction must be older or newer") from exc
    return PageCursor(direction, _read_timestamp(timestamp), _read_ticket_id(ticket_id))


def _decode_payload(token: str) -> object:
    if not token or len(token) > MAX_CURSOR_LENGTH:
        raise InvalidCursor(f"the length must be 1 to {MAX_CURSOR_LENGTH} characters")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        return json.loads(raw.decode())
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursor("it is not base64url-encoded JSON") from exc


def _read_timestamp(value: object) -> datetime:
    if not isinstance(value, str):
        raise InvalidCursor("the timestamp is not a string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidCursor("the timestamp is not ISO 8601") from exc
    if moment.tzinfo is None:
        raise InvalidCursor("the timestamp has no UTC offset")
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise InvalidCursor("the timestamp is out of range in UTC") from exc


def _read_ticket_id(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidCursor("the ticket id is not a whole number")
    if not 0 <= value <= MAX_TICKET_ID:
        raise InvalidCursor(f"the ticket id must be from 0 to {MAX_TICKET_ID}")
    return value
