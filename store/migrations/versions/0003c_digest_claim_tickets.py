"""Record the tickets of each claimed digest, and index digest claims.

A digest run claims digests and records what each lists; the outbox worker
composes each email later from that record, finding the claim by the
Message-ID of its outbox row. The run selects its own claims by period and
claimer.

Revision ID: 0003c
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003c"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "digest_claim_tickets",
        sa.Column("claim_id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("wait_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["claim_id"], ["digest_claims.id"],
            name=op.f("fk_digest_claim_tickets_claim_id_digest_claims"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"],
            name=op.f("fk_digest_claim_tickets_ticket_id_tickets"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("claim_id", "ticket_id", name=op.f("pk_digest_claim_tickets")),
    )
    with op.batch_alter_table("digest_claims", schema=None) as batch_op:
        batch_op.create_index(
            "ix_digest_claims_run", ["period_start", "claimed_by"], unique=False
        )
        batch_op.create_index("ix_digest_claims_message_id", ["message_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("digest_claims", schema=None) as batch_op:
        batch_op.drop_index("ix_digest_claims_message_id")
        batch_op.drop_index("ix_digest_claims_run")
    op.drop_table("digest_claim_tickets")
