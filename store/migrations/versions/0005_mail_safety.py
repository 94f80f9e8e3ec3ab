"""Store bounce suppressions and delivery failures; index outbox Message-IDs.

Revision ID: 0005
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "suppressed_addresses",
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("suppressed_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_suppressed_addresses")),
    )
    op.create_table(
        "delivery_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.Column("inbound_id", sa.Integer(), nullable=True),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=True),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["outbox_id"], ["outbox.id"],
            name=op.f("fk_delivery_failures_outbox_id_outbox"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"],
            name=op.f("fk_delivery_failures_ticket_id_tickets"),
        ),
        sa.ForeignKeyConstraint(
            ["inbound_id"], ["inbound_messages.id"],
            name=op.f("fk_delivery_failures_inbound_id_inbound_messages"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_failures")),
    )
    with op.batch_alter_table("delivery_failures", schema=None) as batch_op:
        batch_op.create_index("ix_delivery_failures_outbox", ["outbox_id"], unique=False)
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_message_id", ["message_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_message_id")
    with op.batch_alter_table("delivery_failures", schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_failures_outbox")
    op.drop_table("delivery_failures")
    op.drop_table("suppressed_addresses")
