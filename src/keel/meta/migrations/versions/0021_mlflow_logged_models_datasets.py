"""MLflow 3's logged models and evaluation datasets (see keel.services.mlflow_models and
keel.services.mlflow_datasets):

- ``mlflow_logged_models``: a logged model (``m-<32 hex>``) of an experiment's project:
  name, type, the run that produced it, status, lifecycle, params and tags (JSON); its
  files are ``mlflow_artifacts`` rows under ``<experiment>/models/<id>/artifacts/``;
- ``mlflow_logged_model_metrics``: the metrics logged for a model (from a run);
- ``mlflow_datasets``: an evaluation dataset (``d-<32 hex>``): its keel data path, the
  dataset version its records are (a JSON Lines object), tags, experiments, schema, profile.

Revision ID: 0021
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "mlflow_logged_models",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.String(36), nullable=False),
        sa.Column("project_id", _Id, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("model_type", sa.String(500), nullable=False, server_default=""),
        sa.Column("source_run_id", sa.String(32)),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("status_message", sa.Text),
        sa.Column("lifecycle_stage", sa.String(32), nullable=False, server_default="active"),
        sa.Column("params", sa.Text, nullable=False, server_default="{}"),
        sa.Column("tags", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("model_id", name="uq_mlflow_logged_models_model_id"),
        sa.Index("ix_mlflow_logged_models_project_name", "project_id", "name"),
    )
    op.create_table(
        "mlflow_logged_model_metrics",
        sa.Column("model_pk", _Id, sa.ForeignKey("mlflow_logged_models.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(500), primary_key=True),
        sa.Column("timestamp", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("step", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("value", sa.Float),
        sa.Column("dataset_name", sa.String(500)),
        sa.Column("dataset_digest", sa.String(36)),
    )
    op.create_table(
        "mlflow_datasets",
        sa.Column("dataset_id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("oid", sa.String(64)),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("tags", sa.Text, nullable=False, server_default="{}"),
        sa.Column("experiment_ids", sa.Text, nullable=False, server_default="[]"),
        sa.Column("schema", sa.Text),
        sa.Column("profile", sa.Text),
        sa.Column("created_by", sa.String(255)),
        sa.Column("last_updated_by", sa.String(255)),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("path", name="uq_mlflow_datasets_path"),
        sa.Index("ix_mlflow_datasets_created_at", "created_at"),
    )


def downgrade() -> None:
    op.drop_table("mlflow_datasets")
    op.drop_table("mlflow_logged_model_metrics")
    op.drop_table("mlflow_logged_models")
