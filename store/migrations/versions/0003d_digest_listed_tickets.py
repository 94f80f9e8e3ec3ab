"""Mark which recorded tickets a digest lists.

A digest lists at most a fixed number of the tickets that are due for it. The
run records every due ticket, marks those the bound leaves out as not listed,
and counts a reminder only for the listed ones. The digest then says how many
more tickets wait. Rows recorded before this revision were all listed.

Revision ID: 0003d
Revises: 0003c
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003d"
down_revision = "0003c"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("digest_claim_tickets", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("listed", sa.Boolean(), server_default=sa.true(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("digest_claim_tickets", schema=None) as batch_op:
        batch_op.drop_column("listed")
