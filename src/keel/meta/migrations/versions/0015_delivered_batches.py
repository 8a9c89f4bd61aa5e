"""Idempotent delivery: the id of every batch the SDK delivered, written with its rows, so a
retried batch whose first attempt committed is stored once (see keel.meta.delivered).

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivered_batches",
        sa.Column("batch_id", sa.String(100), primary_key=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("delivered_batches")
