"""Metric directions declared on a project (see keel.core.directions and keel.meta.directions):
``metric_directions`` says, per project and metric, whether higher or lower is better, so a
comparison of that project's runs needs no per-run tag or per-call argument.

Revision ID: 0029
Revises: 0028
"""

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metric_directions",
        sa.Column(
            "project_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("metric", sa.String(250), primary_key=True),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False, server_default=""),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("metric_directions")
