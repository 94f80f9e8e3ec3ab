"""Index due outbox rows by channel first.

The email and Slack workers each claim the due rows of their own channel. With
an index on state and time alone, an email claim walks past every due Slack
call, and Slack calls that wait behind an earlier call of the same ticket stay
due while Slack is unreachable, so that walk grew with the backlog.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_due")
        batch_op.create_index("ix_outbox_due", ["channel", "state", "next_attempt_at"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_due")
        batch_op.create_index("ix_outbox_due", ["state", "next_attempt_at"], unique=False)
