"""The erasure audit (see keel.meta.erasures and keel.core.erasure):

- ``erasures``: one row per erasure (on request, by retention, or a purge of deleted runs):
  when (``at``, epoch ms), who (``actor``), what kind of records (conversations, llm_calls,
  traces, runs), the project (``""`` for workspace-wide kinds), the filter text as given
  (``""`` when ids were given), how many ids were given, how many records matched and were
  deleted, the objects removed and the bytes freed, and why (request, retention, purge).
  It never holds the erased content, nor the erased ids: an audit entry must not keep what
  the erasure removed;
- ``ix_conversation_feedback_record``: feedback rows by the record they were applied to.
  Deleting a conversation record checks ``conversation_feedback.record_pk`` (its foreign key,
  ON DELETE CASCADE) for that record: without an index each deleted record scans the whole
  feedback table, so erasing 100,000 records would scan it 100,000 times.

Revision ID: 0025
Revises: 0024
"""

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False, server_default=""),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("scope", sa.String(200), nullable=False, server_default=""),
        sa.Column("filter", sa.Text, nullable=False, server_default=""),
        sa.Column("ids", sa.Integer, nullable=False, server_default="0"),
        sa.Column("matched", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("deleted", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("objects_removed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("bytes_freed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("reason", sa.String(16), nullable=False, server_default="request"),
        sa.Index("ix_erasures_at", "at"),
    )
    op.create_index(
        "ix_conversation_feedback_record",
        "conversation_feedback",
        ["record_pk"],
        sqlite_where=sa.text("record_pk IS NOT NULL"),
        postgresql_where=sa.text("record_pk IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_conversation_feedback_record", table_name="conversation_feedback")
    op.drop_table("erasures")
