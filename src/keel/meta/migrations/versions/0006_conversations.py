"""Conversations: logged records (latest feedback inline) and later feedback events.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("conversation_id", sa.String(200), nullable=False),
        sa.Column("timestamp", sa.BigInteger, nullable=False),
        sa.Column("model", sa.String(200)),
        sa.Column("prompt_version", sa.String(200)),
        sa.Column("run_id", sa.String(32)),
        sa.Column("messages", sa.Text, nullable=False),
        sa.Column("metadata", sa.Text, nullable=False, server_default="{}"),
        sa.Column("thumb", sa.Integer),
        sa.Column("score", sa.Float),
        sa.Column("comment", sa.Text),
        sa.Column("feedback_at", sa.BigInteger),
        sa.Column("prompt_tokens", sa.BigInteger),
        sa.Column("completion_tokens", sa.BigInteger),
        sa.Column("latency_ms", sa.Float),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_conversations_cid", "conversations", ["conversation_id", "id"])
    op.create_index("ix_conversations_time", "conversations", ["timestamp"])
    op.create_index("ix_conversations_prompt_time", "conversations", ["prompt_version", "timestamp"])
    op.create_index("ix_conversations_model_time", "conversations", ["model", "timestamp"])
    op.create_index(
        "ix_conversations_thumb_time",
        "conversations",
        ["thumb", "timestamp"],
        sqlite_where=sa.text("thumb IS NOT NULL"),
        postgresql_where=sa.text("thumb IS NOT NULL"),
    )
    op.create_index(
        "ix_conversations_run",
        "conversations",
        ["run_id"],
        sqlite_where=sa.text("run_id IS NOT NULL"),
        postgresql_where=sa.text("run_id IS NOT NULL"),
    )
    op.create_table(
        "conversation_feedback",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("conversation_id", sa.String(200), nullable=False),
        sa.Column("record_pk", _Id, sa.ForeignKey("conversations.id", ondelete="CASCADE")),
        sa.Column("thumb", sa.Integer),
        sa.Column("score", sa.Float),
        sa.Column("comment", sa.Text),
        sa.Column("at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_conversation_feedback_cid", "conversation_feedback", ["conversation_id", "id"])
    op.create_index(
        "ix_conversation_feedback_pending",
        "conversation_feedback",
        ["conversation_id"],
        sqlite_where=sa.text("record_pk IS NULL"),
        postgresql_where=sa.text("record_pk IS NULL"),
    )


def downgrade() -> None:
    for table in ("conversation_feedback", "conversations"):
        op.drop_table(table)
