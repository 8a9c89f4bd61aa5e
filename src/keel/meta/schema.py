"""The metadata schema, as SQLAlchemy Core tables.

Runs have an integer surrogate key (``runs.id``) used by the large tables
(metrics, params, ...) so their rows and indexes stay small; the public id is
``runs.run_id`` (32 hex digits). ``latest_metrics`` holds the latest, min,
max and count of every (run, metric) and is maintained per write batch, so
filtering and ordering runs by a metric is an index lookup, never a scan of
the metric history. NaN is stored as ``value = NULL, is_nan = true`` on both
backends (SQLite cannot store NaN); +/-inf are stored as themselves.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "artifacts",
    "latest_metrics",
    "lineage",
    "metadata",
    "metrics",
    "params",
    "projects",
    "runs",
    "tags",
]

metadata = MetaData()

# BigInteger autoincrement needs to be INTEGER on SQLite to alias the rowid.
_Id = BigInteger().with_variant(Integer(), "sqlite")

projects = Table(
    "projects",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("description", Text, nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False, unique=True),
    Column("project_id", _Id, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(250), nullable=False),
    Column("status", String(16), nullable=False),
    Column("start_time", BigInteger, nullable=False),
    Column("end_time", BigInteger),
    Column("parent_id", String(32)),
    Column("deleted", Boolean, nullable=False, server_default="0"),
    Column("error", Text),
    Column("context", Text, nullable=False, server_default="{}"),
    Index("ix_runs_project_start", "project_id", "start_time"),
    Index("ix_runs_parent", "parent_id"),
)



def _run_fk() -> ForeignKey:
    return ForeignKey("runs.id", ondelete="CASCADE")


params = Table(
    "params",
    metadata,
    Column("run_pk", _Id, _run_fk(), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("vtype", String(8), nullable=False),
    Column("value", Text, nullable=False),
    Index("ix_params_key_value", "key", "value"),
)

tags = Table(
    "tags",
    metadata,
    Column("run_pk", _Id, _run_fk(), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
    Index("ix_tags_key_value", "key", "value"),
)

metrics = Table(
    "metrics",
    metadata,
    Column("run_pk", _Id, _run_fk(), nullable=False),
    Column("key", String(250), nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Column("value", Float),
    Column("is_nan", Boolean, nullable=False),
    Index("ix_metrics_run_key_step", "run_pk", "key", "step"),
)

latest_metrics = Table(
    "latest_metrics",
    metadata,
    Column("run_pk", _Id, _run_fk(), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Float),
    Column("is_nan", Boolean, nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Column("min_value", Float),
    Column("max_value", Float),
    Column("count", BigInteger, nullable=False),
    Index("ix_latest_metrics_key_value", "key", "value"),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("run_pk", _Id, _run_fk(), primary_key=True),
    Column("path", String(1000), primary_key=True),
    Column("oid", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_artifacts_oid", "oid"),
)

lineage = Table(
    "lineage",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("run_pk", _Id, _run_fk(), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("entity_kind", String(32), nullable=False),
    Column("entity_id", String(250), nullable=False),
    Column("entity_version", String(100), nullable=False, server_default=""),
    Column("role", String(100), nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint(
        "run_pk", "direction", "entity_kind", "entity_id", "entity_version", "role",
        name="uq_lineage_edge",
    ),
    Index("ix_lineage_entity", "entity_kind", "entity_id", "entity_version"),
)
