"""Importers: what was imported from where, so re-running an import brings nothing twice (filled by the importers).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "import_ledger",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("source_id", sa.String(1000), nullable=False),
        sa.Column("keel_id", sa.String(1000), nullable=False),
        sa.Column("location", sa.Text, nullable=False, server_default=""),
        sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
        sa.Column("imported_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("source", "kind", "source_id", name="uq_import_ledger_source_item"),
    )


def downgrade() -> None:
    op.drop_table("import_ledger")
