"""MLflow REST compatibility, what only MLflow has (see keel.services.mlflow_tracking):

- ``mlflow_artifacts``: files MLflow's artifact proxy stores at a path that is not a keel
  run's (``PUT /api/2.0/mlflow-artifacts/artifacts/<any relative path>``), by content hash;
- ``mlflow_dataset_inputs``: the MLflow fields of a run's dataset inputs (source, schema,
  profile, input tags); the input itself is the run's lineage edge ``dataset:<name>@<digest>``.

Revision ID: 0020
Revises: 0019
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "mlflow_artifacts",
        sa.Column("path", sa.String(1000), primary_key=True),
        sa.Column("oid", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Index("ix_mlflow_artifacts_oid", "oid"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "mlflow_dataset_inputs",
        sa.Column("run_pk", _Id, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(500), primary_key=True),
        sa.Column("digest", sa.String(100), primary_key=True),
        sa.Column("source_type", sa.Text, nullable=False, server_default=""),
        sa.Column("source", sa.Text, nullable=False, server_default=""),
        sa.Column("schema", sa.Text),
        sa.Column("profile", sa.Text),
        sa.Column("tags", sa.Text, nullable=False, server_default="[]"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mlflow_dataset_inputs")
    op.drop_table("mlflow_artifacts")
