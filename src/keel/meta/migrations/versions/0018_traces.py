"""Traces: one summary row per trace, its spans, the versions they used and their scores
(see keel.meta.traces and docs/traces.md). On PostgreSQL spans are partitioned by start time
(monthly partitions, see keel.meta.trace_partitions), so retention drops whole partitions.

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "traces",
        sa.Column("project_id", sa.BigInteger, nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(250), nullable=False),
        sa.Column("root_span_id", sa.String(16)),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
        sa.Column("end_ns", sa.BigInteger, nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("span_count", sa.Integer, nullable=False),
        sa.Column("error_count", sa.Integer, nullable=False),
        sa.Column("input_tokens", sa.BigInteger),
        sa.Column("output_tokens", sa.BigInteger),
        sa.Column("cost", sa.Float),
        sa.Column("model", sa.String(200)),
        sa.Column("prompt", sa.String(200)),
        sa.Column("run_id", sa.String(200)),
        sa.Column("conversation_id", sa.String(200)),
        sa.Column("user_id", sa.String(200)),
        sa.Column("tags", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("project_id", "trace_id", name="pk_traces"),
    )
    op.create_index("ix_traces_start", "traces", ["project_id", "start_ns"])
    op.create_index("ix_traces_duration", "traces", ["project_id", "duration_ms"])
    op.create_index("ix_traces_conversation", "traces", ["project_id", "conversation_id"])
    op.create_index("ix_traces_run", "traces", ["project_id", "run_id"])
    op.create_table(
        "spans",
        sa.Column("project_id", sa.BigInteger, nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("span_id", sa.String(16), nullable=False),
        sa.Column("parent_id", sa.String(16)),
        sa.Column("name", sa.String(250), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("status_message", sa.Text),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
        sa.Column("end_ns", sa.BigInteger, nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("model", sa.String(200)),
        sa.Column("input_tokens", sa.BigInteger),
        sa.Column("output_tokens", sa.BigInteger),
        sa.Column("cost", sa.Float),
        sa.Column("prompt", sa.String(200)),
        sa.Column("run_id", sa.String(200)),
        sa.Column("conversation_id", sa.String(200)),
        sa.Column("user_id", sa.String(200)),
        sa.Column("attributes", sa.Text, nullable=False, server_default="{}"),
        sa.Column("inputs", sa.Text),
        sa.Column("outputs", sa.Text),
        sa.Column("events", sa.Text),
        sa.Column("flags", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("project_id", "trace_id", "span_id", "start_ns", name="pk_spans"),
        postgresql_partition_by="RANGE (start_ns)",
    )
    if op.get_bind().dialect.name == "postgresql":
        # monthly partitions are added as spans arrive (keel.meta.trace_partitions); this one
        # holds what falls outside them (far past or future times)
        op.execute("CREATE TABLE spans_default PARTITION OF spans DEFAULT")
    op.create_index("ix_spans_start", "spans", ["project_id", "start_ns"])
    op.create_index("ix_spans_model", "spans", ["project_id", "model", "start_ns"])
    op.create_index("ix_spans_prompt", "spans", ["project_id", "prompt", "start_ns"])
    op.create_table(
        "trace_links",
        sa.Column("project_id", sa.BigInteger, nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("entity_id", sa.String(250), nullable=False),
        sa.Column("version", sa.String(200), nullable=False, server_default=""),
        sa.UniqueConstraint("project_id", "trace_id", "kind", "entity_id", "version", name="pk_trace_links"),
    )
    op.create_index("ix_trace_links_entity", "trace_links", ["kind", "entity_id", "version"])
    op.create_table(
        "trace_scores",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.BigInteger, nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("span_id", sa.String(16)),
        sa.Column("key", sa.String(250), nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("label", sa.Text),
        sa.Column("comment", sa.Text),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_trace_scores_trace", "trace_scores", ["project_id", "trace_id", "id"])


def downgrade() -> None:
    for table in ("trace_scores", "trace_links", "spans", "traces"):
        op.drop_table(table)
