"""Content digests of immutable records (finished runs, prompt and model versions, reflog
entries), checked by 'keel verify'. Rows written before this revision have none: verify
counts them as not covered, and 'keel verify --seal' computes them.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# A run's digest also names which of its parts changed (see keel.core.digests).
_COLUMNS = {"runs": 200, "prompt_versions": 64, "model_versions": 64, "reflog": 64}


def upgrade() -> None:
    # Nullable, no default: on both databases adding the column rewrites no row.
    for table, length in _COLUMNS.items():
        op.add_column(table, sa.Column("digest", sa.String(length)))


def downgrade() -> None:
    for table in _COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("digest")
