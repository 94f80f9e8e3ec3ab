"""SQL of keyset paging for ticket lists, newest activity first."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.paging import MAX_TICKET_ID, Direction, PageCursor, PageRequest
from store.models import TicketRow

Row = TypeVar("Row")

# Filtered lists count at most this many matches, so the count costs the same
# at any store size. When more match, they report this number as not exact.
MATCH_COUNT_LIMIT = 10_000

NEWEST_FIRST = (TicketRow.last_activity_at.desc(), TicketRow.id.desc())
OLDEST_FIRST = (TicketRow.last_activity_at.asc(), TicketRow.id.asc())


@dataclass(frozen=True)
class PageSlice(Generic[Row]):
    """The rows of one page, newest first, with the cursors of its neighbours."""

    rows: list[Row]
    newer: PageCursor | None
    older: PageCursor | None


async def count_matches(
    session: AsyncSession, conditions: Sequence[Any], *, limit: int | None = None
) -> tuple[int, bool]:
    """Return (count, exact) for the tickets that match CONDITIONS, counting at most LIMIT.

    LIMIT defaults to MATCH_COUNT_LIMIT. When more tickets match, the result
    is (LIMIT, False).
    """
    if limit is None:
        limit = MATCH_COUNT_LIMIT
    capped = select(TicketRow.id).where(*conditions).limit(limit + 1).subquery()
    count = await session.scalar(select(func.count()).select_from(capped)) or 0
    if count > limit:
        return limit, False
    return count, True


def page_ids(conditions: Sequence[Any], request: PageRequest) -> Select[tuple[int]]:
    """Return the SELECT of a page's ticket ids, plus one more to tell whether more follow.

    With a cursor the page is a range on (last_activity_at, id), which the
    index ix_tickets_last_activity serves in order, so no earlier row is read.
    """
    query = select(TicketRow.id).where(*conditions).limit(request.per_page + 1)
    cursor = request.cursor
    if cursor is None:
        return query.order_by(*NEWEST_FIRST).offset(request.offset)
    sort_key = tuple_(TicketRow.last_activity_at, TicketRow.id)
    boundary = (cursor.last_activity_at, cursor.ticket_id)
    if cursor.direction is Direction.OLDER:
        return query.where(sort_key < boundary).order_by(*NEWEST_FIRST)
    return query.where(sort_key > boundary).order_by(*OLDEST_FIRST)


def read_order(request: PageRequest) -> tuple[Any, ...]:
    """Return the ORDER BY that matches page_ids, away from the cursor's boundary."""
    cursor = request.cursor
    if cursor is not None and cursor.direction is Direction.NEWER:
        return OLDEST_FIRST
    return NEWEST_FIRST


def slice_page(
    rows: Sequence[Row],
    request: PageRequest,
    sort_key: Callable[[Row], tuple[datetime, int]],
) -> PageSlice[Row]:
    """Cut the rows read in read_order to one page, newest first, and make its cursors."""
    cursor = request.cursor
    found = list(rows)
    more_beyond = len(found) > request.per_page
    found = found[: request.per_page]
    if cursor is not None and cursor.direction is Direction.NEWER:
        found.reverse()
        more_newer = more_beyond
        more_older = not cursor.opens_oldest_page
    else:
        more_newer = cursor is not None or request.page > 1
        more_older = more_beyond
    if not found:
        return _empty_page(cursor)
    return PageSlice(
        rows=found,
        newer=PageCursor(Direction.NEWER, *sort_key(found[0])) if more_newer else None,
        older=PageCursor(Direction.OLDER, *sort_key(found[-1])) if more_older else None,
    )


def _empty_page(cursor: PageCursor | None) -> PageSlice[Any]:
    # An empty page reached by a cursor links back to the rows beyond its
    # boundary, the boundary row included. Ticket ids are whole numbers, so
    # moving the boundary id by one puts that row inside the range.
    if cursor is None or cursor.opens_oldest_page:
        return PageSlice(rows=[], newer=None, older=None)
    moment, ticket_id = cursor.last_activity_at, cursor.ticket_id
    if cursor.direction is Direction.OLDER:
        back = PageCursor(Direction.NEWER, moment, max(ticket_id - 1, 0))
        return PageSlice(rows=[], newer=back, older=None)
    back = PageCursor(Direction.OLDER, moment, min(ticket_id + 1, MAX_TICKET_ID))
    return PageSlice(rows=[], newer=None, older=back)
