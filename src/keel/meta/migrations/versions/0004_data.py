"""Data versioning: dataset versions (a data path at a content hash).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "dataset_versions",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("oid", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("files", sa.BigInteger, nullable=False),
        sa.Column("git_commit", sa.String(64), nullable=False, server_default=""),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("path", "oid", name="uq_dataset_versions_path_oid"),
    )
    op.create_index("ix_dataset_versions_oid", "dataset_versions", ["oid"])


def downgrade() -> None:
    op.drop_table("dataset_versions")
