"""Configuration snapshots: resolved, redacted configs by hash and environment.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "config_snapshots",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("env", sa.String(200), nullable=False),
        sa.Column("sources", sa.Text, nullable=False, server_default="[]"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("hash", "env", name="uq_config_snapshots_hash_env"),
    )
    op.create_index("ix_config_snapshots_env", "config_snapshots", ["env", "created_at"])


def downgrade() -> None:
    op.drop_table("config_snapshots")
