"""Locking a ticket reads its state without its description."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from conftest import database_url
from store import Store

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
# Pasted log output can make a description megabytes long.
DESCRIPTION = "The build log follows.\n" + "step ok\n" * 200_000


@pytest.mark.parametrize("by", ["number", "id"])
def test_lock_skips_description(tmp_path: Path, by: str) -> None:
    async def run() -> tuple[list[str], Any, str]:
        store = Store(database_url(tmp_path))
        await store.upgrade()
        statements: list[str] = []

        def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements.append(statement)

        try:
            async with store.write() as tx:
                builder = await tx.upsert_builder(
                    "ada@example.com", name="Ada", timezone=None, apps=(), now=NOW
                )
                ticket_id, number = await tx.create_ticket(
                    builder=builder, title="Build log shows a blank page",
                    description=DESCRIPTION, app=None, category="bug", severity="sev3",
                    now=NOW,
                )
            event.listen(store._engine.sync_engine, "before_cursor_execute", record)
            async with store.write(short=True) as tx:
                if by == "number":
                    state = await tx.lock_ticket(number)
                else:
                    state = await tx.lock_ticket_by_id(ticket_id)
                assert state is not None
                await tx.update_ticket(state.id, now=NOW, status="in_progress")
            event.remove(store._engine.sync_engine, "before_cursor_execute", record)
            async with store.read() as tx:
                detail = await tx.get_ticket(number)
            assert detail is not None
            return statements, state, detail.description
        finally:
            await store.close()

    statements, state, description = asyncio.run(run())

    ticket_reads = [
        statement for statement in statements
        if statement.lstrip().startswith("SELECT") and "FROM tickets" in statement
    ]
    assert len(ticket_reads) == 1
    assert "tickets.description" not in ticket_reads[0]
    assert state.title == "Build log shows a blank page"
    assert state.status == "new"
    assert description == DESCRIPTION
