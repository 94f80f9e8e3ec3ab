"""Record when each blob was stored and index attachments by blob.

The intake writes the files of a large message before the message itself, so a
message that is then rejected leaves blobs that no attachment uses. The
scheduled clean-up deletes those once they are old enough; it needs the time
each blob was stored and a quick way to find the attachments of a blob.

Revision ID: 0007
Revises: 0006m
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006m"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stored_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("attachments", schema=None) as batch_op:
        batch_op.create_index("ix_attachments_blob", ["blob_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("attachments", schema=None) as batch_op:
        batch_op.drop_index("ix_attachments_blob")
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.drop_column("stored_at")
