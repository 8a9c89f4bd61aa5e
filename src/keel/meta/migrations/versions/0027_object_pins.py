"""Object pins (see keel.meta.references and docs/gc.md): ``object_pins`` lists objects a keel
server received through its objects API (``keel data push`` to a server). The versions that
name them live in the pushing client's database, so without a pin the server's garbage
collection would see them referenced by nothing.

Revision ID: 0027
Revises: 0026
"""

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "object_pins",
        sa.Column("oid", sa.String(64), primary_key=True),
        sa.Column("reason", sa.String(32), nullable=False, server_default=""),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("object_pins")
