"""Recorded LLM calls: the occurrence of each call, the n-th time (from 0) its request was
made in its run (or sequence, or recording session outside a run), so that replay gives
identical requests their own recordings in order (see keel.sdk.llm). Calls recorded before
have NULL and replay in the order they were stored.

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("llm_calls", sa.Column("occurrence", sa.Integer))  # no table copy: NULL for old rows


def downgrade() -> None:
    with op.batch_alter_table("llm_calls") as batch:
        batch.drop_column("occurrence")
