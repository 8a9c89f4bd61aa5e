"""Conversations: a total token count, for records that log ``tokens_used`` as one number
(the reference's ``"tokens_used": 120``) with no prompt/completion split. Records stored
before have NULL; readers fall back to prompt + completion.

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("conversations", sa.Column("total_tokens", sa.BigInteger))  # no table copy: NULL for old rows


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("total_tokens")
