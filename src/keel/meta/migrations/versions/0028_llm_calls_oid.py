"""Recorded LLM calls: an index on the pack object of each call (``llm_calls.oid``).

Erasing calls (keel.services.llm: ``LlmService.delete_calls``) reads every call of the packs
that held an erased one, to write the kept ones into new packs, and checks that nothing points
at an old pack any more before deleting it; garbage collection asks the same of any object
(keel.meta.references). Without the index each of those is a scan of the whole table.

Revision ID: 0028
Revises: 0027
"""

from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_llm_calls_oid", "llm_calls", ["oid"])


def downgrade() -> None:
    op.drop_index("ix_llm_calls_oid", table_name="llm_calls")
