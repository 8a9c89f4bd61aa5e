"""Recorded LLM calls: the index of cassette entries (request hash -> response object).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "llm_calls",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("endpoint", sa.String(100), nullable=False),
        sa.Column("model", sa.String(200), nullable=False, server_default=""),
        sa.Column("oid", sa.String(64), nullable=False),
        sa.Column("part", sa.Integer, nullable=False, server_default="0"),
        sa.Column("run_id", sa.String(32)),
        sa.Column("cassette", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("latency_ms", sa.Float),
        sa.Column("input_tokens", sa.BigInteger),
        sa.Column("output_tokens", sa.BigInteger),
        sa.Column("cost", sa.Float),
        sa.Column("system_fingerprint", sa.String(200)),
        sa.Column("streamed", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("context", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_index("ix_llm_calls_hash", "llm_calls", ["request_hash", "id"])
    op.create_index("ix_llm_calls_model", "llm_calls", ["endpoint", "model", "id"])
    op.create_index(
        "ix_llm_calls_run",
        "llm_calls",
        ["run_id", "id"],
        sqlite_where=sa.text("run_id IS NOT NULL"),
        postgresql_where=sa.text("run_id IS NOT NULL"),
    )
    op.create_index("ix_llm_calls_cassette", "llm_calls", ["cassette", "id"])


def downgrade() -> None:
    op.drop_table("llm_calls")
