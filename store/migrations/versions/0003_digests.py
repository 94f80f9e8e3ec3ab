"""Add reminder digests, digest opt-outs and claims for scheduled ticket actions.

Revision ID: 0003
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "digest_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("digest_count", sa.Integer(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_digest_runs")),
        sa.UniqueConstraint(
            "timezone", "period_start", name=op.f("uq_digest_runs_timezone")
        ),
    )
    op.create_table(
        "digest_claims",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("builder_id", sa.Integer(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_id", sa.String(length=998), nullable=False),
        sa.Column("ticket_count", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(length=100), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["builder_id"], ["builders.id"],
            name=op.f("fk_digest_claims_builder_id_builders"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_digest_claims")),
        sa.UniqueConstraint(
            "builder_id", "period_start", name=op.f("uq_digest_claims_builder_id")
        ),
    )
    op.create_table(
        "ticket_reminders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("wait_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reminder_count", sa.Integer(), nullable=False),
        sa.Column("last_period_start", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"],
            name=op.f("fk_ticket_reminders_ticket_id_tickets"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ticket_reminders")),
        sa.UniqueConstraint(
            "ticket_id", "wait_started_at", name=op.f("uq_ticket_reminders_ticket_id")
        ),
    )
    op.create_table(
        "ticket_actions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("wait_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("claimed_by", sa.String(length=100), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"],
            name=op.f("fk_ticket_actions_ticket_id_tickets"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ticket_actions")),
        sa.UniqueConstraint(
            "action", "ticket_id", "wait_started_at", name=op.f("uq_ticket_actions_action")
        ),
    )
    op.create_table(
        "digest_opt_outs",
        sa.Column("builder_id", sa.Integer(), nullable=False),
        sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["builder_id"], ["builders.id"],
            name=op.f("fk_digest_opt_outs_builder_id_builders"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("builder_id", name=op.f("pk_digest_opt_outs")),
    )
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tickets_status_changed", ["status", "status_changed_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_index("ix_tickets_status_changed")
    op.drop_table("digest_opt_outs")
    op.drop_table("ticket_actions")
    op.drop_table("ticket_reminders")
    op.drop_table("digest_claims")
    op.drop_table("digest_runs")
