"""Retention and purge (see keel.meta.retention, keel.services.retention and docs/retention.md):

- ``runs.deleted_at``: when a run was soft-deleted (epoch ms; NULL while it is not, and for
  runs deleted before this revision), so ``keel runs purge --older-than 30d`` counts from the
  deletion, not from when the run ran;
- ``retention_policies``: how long records of a ``kind`` (``conversations``, ``llm_calls``,
  ``traces``) are kept, per scope: a project name for traces, ``@registries`` for the
  workspace-wide conversations and recorded calls;
- ``maintenance_leases``: a named lease (``retention``) taken with a compare-and-set on
  ``until_ms``, so one server process at a time applies retention on a shared database.

Revision ID: 0026
Revises: 0025
"""

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("deleted_at", sa.BigInteger))
    op.create_table(
        "retention_policies",
        sa.Column("project", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("max_age_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False, server_default=""),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "maintenance_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False, server_default=""),
        sa.Column("until_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("maintenance_leases")
    op.drop_table("retention_policies")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("deleted_at")
