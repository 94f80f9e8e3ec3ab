"""Store the raw bytes of large messages in slices.

A message of many megabytes written in one transaction holds SQLite's single
writer for a quarter of a second or more, and every small message that arrives
meanwhile waits. The slices are written first, each in a transaction of its
own, and the inbound record refers to them by a key.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "raw_message_parts",
        sa.Column("parts_key", sa.String(length=32), nullable=False),
        sa.Column("start_byte", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("parts_key", "start_byte", name=op.f("pk_raw_message_parts")),
    )
    with op.batch_alter_table("raw_message_parts", schema=None) as batch_op:
        batch_op.create_index("ix_raw_message_parts_stored_at", ["stored_at"], unique=False)
    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("raw_parts_key", sa.String(length=32), nullable=True))
        batch_op.create_index("ix_inbound_messages_raw_parts_key", ["raw_parts_key"],
                              unique=False)
    if op.get_bind().dialect.name == "postgresql":
        # As for the other large values: skip pglz, which barely shrinks mail.
        op.execute("ALTER TABLE raw_message_parts ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    bind = op.get_bind()
    # The code before this revision reads only inbound_messages.raw, so the
    # slices go back into it, one message at a time.
    sliced = bind.execute(sa.text(
        "SELECT id, raw_parts_key FROM inbound_messages WHERE raw_parts_key IS NOT NULL"
    )).all()
    for inbound_id, key in sliced:
        parts = bind.execute(
            sa.text("SELECT data FROM raw_message_parts WHERE parts_key = :key "
                    "ORDER BY start_byte"),
            {"key": key},
        ).scalars().all()
        bind.execute(
            sa.text("UPDATE inbound_messages SET raw = :raw WHERE id = :id")
            .bindparams(sa.bindparam("raw", type_=sa.LargeBinary())),
            {"raw": b"".join(parts), "id": inbound_id},
        )
    op.drop_index("ix_inbound_messages_raw_parts_key", table_name="inbound_messages")
    if bind.dialect.name == "sqlite":
        # A batch copy of inbound_messages would break the foreign keys that
        # refer to it. SQLite 3.35 and later drop an unindexed column in place.
        op.execute("ALTER TABLE inbound_messages DROP COLUMN raw_parts_key")
    else:
        op.drop_column("inbound_messages", "raw_parts_key")
    op.drop_table("raw_message_parts")
