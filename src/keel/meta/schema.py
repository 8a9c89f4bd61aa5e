"""The metadata schema, as SQLAlchemy Core tables.

Runs have an integer surrogate key (``runs.id``) used by the large tables
(params, metric chunks, ...) so their rows and indexes stay small; the public
id is ``runs.run_id`` (32 hex digits).

Metric history is stored columnar: each write batch adds, per (run, metric),
one ``metric_chunks`` row whose ``steps``/``timestamps``/``vals`` are packed
little-endian int64/int64/float64 arrays (NaN and +/-inf kept bit for bit).
Logging 100k values is then a handful of rows, not 100k index insertions.
``latest_metrics`` holds the latest, min, max and count of every (run,
metric), maintained per batch, so filtering and ordering runs by a metric is
an index lookup, never a scan of history. On SQLite the key/value tables are
``WITHOUT ROWID`` (clustered on their primary key): one B-tree fewer to
write per commit.

``runs.summary`` is a JSON copy of a run's params, latest metrics and tags,
written in the same transaction as the rows it mirrors. Filtering and
ordering use the indexed tables; reading a page of runs reads one row per
run instead of one per value (the difference between ~30 ms and a few ms for
a page of 500 runs). There NaN is stored as
``value = NULL, is_nan = true`` (SQLite cannot store NaN in a REAL column).
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
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

__all__ = [
    "artifacts",
    "prompt_versions",
    "prompts",
    "reflog",
    "refs",
    "latest_metrics",
    "lineage",
    "metadata",
    "metric_chunks",
    "model_versions",
    "params",
    "projects",
    "registered_models",
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
    Column("summary", Text, nullable=False, server_default="{}"),
    Index("ix_runs_project_start", "project_id", "start_time"),
    Index(
        "ix_runs_parent",
        "parent_id",
        sqlite_where=text("parent_id IS NOT NULL"),
        postgresql_where=text("parent_id IS NOT NULL"),
    ),
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
    sqlite_with_rowid=False,
)

tags = Table(
    "tags",
    metadata,
    Column("run_pk", _Id, _run_fk(), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
    Index("ix_tags_key_value", "key", "value"),
    sqlite_with_rowid=False,
)

metric_chunks = Table(
    "metric_chunks",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("run_pk", _Id, _run_fk(), nullable=False),
    Column("key", String(250), nullable=False),
    Column("count", Integer, nullable=False),
    Column("min_step", BigInteger, nullable=False),
    Column("max_step", BigInteger, nullable=False),
    Column("steps", LargeBinary, nullable=False),
    Column("timestamps", LargeBinary, nullable=False),
    Column("vals", LargeBinary, nullable=False),
    Index("ix_metric_chunks_run_key", "run_pk", "key"),
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
    sqlite_with_rowid=False,
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
    sqlite_with_rowid=False,
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
        "run_pk",
        "direction",
        "entity_kind",
        "entity_id",
        "entity_version",
        "role",
        name="uq_lineage_edge",
    ),
    Index("ix_lineage_entity", "entity_kind", "entity_id", "entity_version"),
)


# -- refs: the only mutable thing; every move is appended to the reflog --------
refs = Table(
    "refs",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("name", String(200), nullable=False),
    Column("ref", String(100), nullable=False),
    Column("target", String(100), nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("kind", "name", "ref", name="uq_refs_kind_name_ref"),
)

reflog = Table(
    "reflog",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("name", String(200), nullable=False),
    Column("ref", String(100), nullable=False),
    Column("old_target", String(100)),
    Column("new_target", String(100)),
    Column("at", BigInteger, nullable=False),
    Column("who", String(200), nullable=False, server_default=""),
    Column("reason", Text, nullable=False, server_default=""),
    Index("ix_reflog_entity", "kind", "name", "ref", "at"),
)

# -- the prompt registry ----------------------------------------------------------
prompts = Table(
    "prompts",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("description", Text, nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
)

prompt_versions = Table(
    "prompt_versions",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("prompt_id", _Id, ForeignKey("prompts.id", ondelete="CASCADE"), nullable=False),
    Column("version", String(50), nullable=False),
    Column("major", Integer, nullable=False),
    Column("minor", Integer, nullable=False),
    Column("patch", Integer, nullable=False),
    Column("content", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("variables", Text, nullable=False),
    Column("changelog", Text, nullable=False),
    Column("author", String(200), nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("prompt_id", "version", name="uq_prompt_versions_version"),
    Index("ix_prompt_versions_hash", "prompt_id", "content_hash"),
)

# -- the model registry -------------------------------------------------------------
# A version's stage is a column (get-by-stage is one indexed lookup); every stage
# change is also appended to the reflog as ref ``stage:<version>``, and aliases
# are ordinary refs of kind ``model``.
registered_models = Table(
    "registered_models",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("description", Text, nullable=False, server_default=""),
    Column("tags", Text, nullable=False, server_default="{}"),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("model_id", _Id, ForeignKey("registered_models.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("source", Text, nullable=False),
    Column("run_id", String(32)),
    Column("stage", String(16), nullable=False, server_default="None"),
    Column("description", Text, nullable=False, server_default=""),
    Column("tags", Text, nullable=False, server_default="{}"),
    Column("card", Text, nullable=False, server_default="{}"),
    Column("card_text", Text),
    Column("author", String(200), nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("model_id", "version", name="uq_model_versions_version"),
    Index("ix_model_versions_stage", "model_id", "stage", "version"),
    Index(
        "ix_model_versions_run",
        "run_id",
        sqlite_where=text("run_id IS NOT NULL"),
        postgresql_where=text("run_id IS NOT NULL"),
    ),
)
