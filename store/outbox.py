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
        select(OutboxRow.id)
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
    ids = list(await session.scalars(due))
    if not ids:
        return []
    await session.execute(
        update(OutboxRow)
        .where(OutboxRow.id.in_(ids))
        .values(claimed_by=worker, claimed_until=now + lease)
    )
    # A payload can carry megabytes of files. Inside a short SQLite transaction,
    # such rows are still fetched on the connection's thread, off the event loop.
    size = await session.scalar(
        select(func.coalesce(func.sum(func.length(OutboxRow.payload)), 0))
        .where(OutboxRow.id.in_(ids))
    )
    large = (size or 0) > SHORT_STATEMENT_MAX_PARAMETER_BYTES
    with short_statements_on_loop(False) if large else nullcontext():
        rows = await session.scalars(
            select(OutboxRow).where(OutboxRow.id.in_(ids)).order_by(OutboxRow.id)
        )
        return list(rows)
