"""Feature flags (versioned flag sets per environment) and A/B tests (experiments, exposures, outcomes).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "flag_sets",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("env", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("flags", sa.Text, nullable=False),
        sa.Column("author", sa.String(200), nullable=False, server_default=""),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("env", "version", name="uq_flag_sets_env_version"),
    )
    op.create_table(
        "ab_experiments",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("definition", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="draft"),
        sa.Column("resolved", sa.Text, nullable=False, server_default="{}"),
        sa.Column("author", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("started_at", sa.BigInteger),
        sa.Column("stopped_at", sa.BigInteger),
    )
    op.create_table(
        "ab_exposures",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("experiment", sa.String(200), nullable=False),
        sa.Column("unit", sa.String(200), nullable=False),
        sa.Column("variant", sa.String(200), nullable=False),
        sa.Column("resolved", sa.Text, nullable=False, server_default="{}"),
        sa.Column("run_id", sa.String(32)),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("experiment", "unit", name="uq_ab_exposures_unit"),
    )
    op.create_table(
        "ab_outcomes",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("experiment", sa.String(200), nullable=False),
        sa.Column("unit", sa.String(200), nullable=False),
        sa.Column("metric", sa.String(200), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_ab_outcomes_exp_metric", "ab_outcomes", ["experiment", "metric"])


def downgrade() -> None:
    op.drop_table("ab_outcomes")
    op.drop_table("ab_exposures")
    op.drop_table("ab_experiments")
    op.drop_table("flag_sets")
