"""MLflow REST compatibility: MLflow experiment ids and MLflow-only fields, mapped onto keel.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "mlflow_experiments",
        sa.Column("project_id", _Id, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("lifecycle_stage", sa.String(20), nullable=False, server_default="active"),
        sa.Column("tags", sa.Text, nullable=False, server_default="{}"),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "mlflow_prompts",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("tags", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "mlflow_prompt_versions",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("keel_version", sa.String(50), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("tags", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mlflow_prompt_versions")
    op.drop_table("mlflow_prompts")
    op.drop_table("mlflow_experiments")
