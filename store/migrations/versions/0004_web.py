"""Add builder status-page links, login failures and status-page indexes.

Revision ID: 0004
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "builder_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("builder_id", sa.Integer(), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["builder_id"], ["builders.id"],
            name=op.f("fk_builder_links_builder_id_builders"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_builder_links")),
    )
    with op.batch_alter_table("builder_links", schema=None) as batch_op:
        batch_op.create_index(
            "ix_builder_links_builder", ["builder_id", "created_at"], unique=False
        )

    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("peer", sa.String(length=100), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_failures")),
    )
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.create_index(
            "ix_login_failures_peer", ["peer", "failed_at"], unique=False
        )

    # The ticket page reads inbound records by ticket; /metrics counts by outcome.
    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.create_index("ix_inbound_ticket", ["ticket_id", "id"], unique=False)
        batch_op.create_index("ix_inbound_outcome", ["outcome"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_inbound_outcome")
        batch_op.drop_index("ix_inbound_ticket")
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.drop_index("ix_login_failures_peer")
    op.drop_table("login_failures")
    with op.batch_alter_table("builder_links", schema=None) as batch_op:
        batch_op.drop_index("ix_builder_links_builder")
    op.drop_table("builder_links")
