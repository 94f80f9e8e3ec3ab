"""Add the Slack thread, receipt and reply tables.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "slack_threads",
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=40), nullable=False),
        sa.Column("root_ts", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], ondelete="CASCADE",
            name=op.f("fk_slack_threads_ticket_id_tickets"),
        ),
        sa.PrimaryKeyConstraint("ticket_id", name=op.f("pk_slack_threads")),
        sa.UniqueConstraint("channel", "root_ts", name=op.f("uq_slack_threads_channel")),
    )
    op.create_table(
        "slack_receipts",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_slack_receipts")),
    )
    op.create_table(
        "slack_replies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=True),
        sa.Column("source_key", sa.String(length=100), nullable=True),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], ondelete="CASCADE",
            name=op.f("fk_slack_replies_ticket_id_tickets"),
        ),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], ondelete="CASCADE",
            name=op.f("fk_slack_replies_message_id_messages"),
        ),
        sa.ForeignKeyConstraint(
            ["outbox_id"], ["outbox.id"], name=op.f("fk_slack_replies_outbox_id_outbox"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slack_replies")),
        sa.UniqueConstraint("source_key", name=op.f("uq_slack_replies_source_key")),
    )


def downgrade() -> None:
    op.drop_table("slack_replies")
    op.drop_table("slack_receipts")
    op.drop_table("slack_threads")
