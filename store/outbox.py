"""Row claims on the outbox, shared by the email and Slack workers."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from store.database import SHORT_STATEMENT_MAX_PARAMETER_BYTES, short_statements_on_loop
from store.models import OutboxRow


async def claim_outbox_rows(
    session: AsyncSession,
    *,
    channel: str,
    worker: str,
    now: datetime,
    lease: timedelta,
    limit: int,
    order_by: Sequence[Any],
    extra_conditions: Sequence[Any] = (),
) -> list[OutboxRow]:
    """Claim up to LIMIT due rows of CHANNEL for WORKER until the lease ends.

    A claim is a lease, not a lock: when a worker dies, its rows become due
    again once the lease ends. On PostgreSQL, SKIP LOCKED lets several
    instances claim different rows at once; SQLite writers take turns anyway.
    """
    due = (
        select(OutboxRow.id, func.length(OutboxRow.payload))
        .where(
            OutboxRow.channel == channel,
            OutboxRow.state == "pending",
            OutboxRow.next_attempt_at <= now,
            or_(OutboxRow.claimed_until.is_(None), OutboxRow.claimed_until < now),
            *extra_conditions,
        )
        .order_by(*order_by)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    sizes = {row_id: size for row_id, size in await session.execute(due)}
    if not sizes:
        return []
    ids = list(sizes)
    # A payload can carry megabytes of files. SQLite rewrites the whole row when
    # the claim sets its columns, and the fetch copies the payload, so inside a
    # short transaction large rows are claimed on the connection's thread.
    large = sum(size or 0 for size in sizes.values()) > SHORT_STATEMENT_MAX_PARAMETER_BYTES
    with short_statements_on_loop(False) if large else nullcontext():
        await session.execute(
            update(OutboxRow)
            .where(OutboxRow.id.in_(ids))
            .values(claimed_by=worker, claimed_until=now + lease)
        )
        rows = await session.scalars(
            select(OutboxRow).where(OutboxRow.id.in_(ids)).order_by(OutboxRow.id)
        )
        return list(rows)
