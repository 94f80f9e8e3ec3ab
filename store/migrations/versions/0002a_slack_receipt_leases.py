"""Give Slack receipts a state and a lease, so a retry can finish an interrupted request.

Revision ID: 0002a
Revises: 0002
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002a"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Receipts recorded before this revision were taken before their effect
    # and are never retried: they count as done.
    op.add_column(
        "slack_receipts",
        sa.Column("state", sa.String(length=20), server_default="done", nullable=False),
    )
    op.add_column(
        "slack_receipts",
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    with op.batch_alter_table("slack_receipts") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("state")
