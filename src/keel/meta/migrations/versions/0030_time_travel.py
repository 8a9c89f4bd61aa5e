"""Time travel across deletes, pinned model sources, and the alias a run resolved.

- ``model_version_tombstones``: what a deleted model version was (its row as JSON), when it
  was deleted and by whom, so "what did ``champion`` point at, at T" still answers with the
  version (marked deleted) after the version or the whole model is gone. Version numbers of
  a name restart only when the model itself is deleted and registered again, so one name and
  number may have several tombstones; the one deleted first after T is the one live at T.
- ``model_versions.source_digest``: the content a version registered from a local path or an
  object-store URI meant when it was registered (``sha256:<hex>`` of a file or a directory
  tree, ``etag:<...>`` / ``s3version:<...>`` of an object); ``keel verify`` reports drift.
- ``lineage.ref``: the alias a run resolved to reach the version it used (``production``
  for ``prompt:chat@production`` -> 1.3.0); empty when the version was named directly.

Revision ID: 0030
Revises: 0029
"""

import sqlalchemy as sa
from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_version_tombstones",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("row", sa.Text, nullable=False),
        sa.Column("deleted_at", sa.BigInteger, nullable=False),
        sa.Column("deleted_by", sa.String(200), nullable=False, server_default=""),
    )
    op.create_index(
        "ix_model_version_tombstones_version", "model_version_tombstones", ["model_name", "version", "deleted_at"]
    )
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("source_digest", sa.String(200)))
    with op.batch_alter_table("lineage") as batch:
        batch.add_column(sa.Column("ref", sa.String(100), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("lineage") as batch:
        batch.drop_column("ref")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("source_digest")
    op.drop_index("ix_model_version_tombstones_version", table_name="model_version_tombstones")
    op.drop_table("model_version_tombstones")
