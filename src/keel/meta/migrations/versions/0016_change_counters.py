"""Change counters: a row per registry kind (prompt, model, flag, experiment) that triggers
add 1 to in the transaction of every change, so running processes see a change with one
small query and refresh their caches (see keel.meta.changes).

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

from keel.meta.changes import create_triggers, drop_triggers

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "change_counters",
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("counter", sa.BigInteger, nullable=False, server_default="0"),
    )
    create_triggers(op.get_bind())


def downgrade() -> None:
    drop_triggers(op.get_bind())
    op.drop_table("change_counters")
