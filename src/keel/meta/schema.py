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

``digest`` columns (runs, prompt and model versions, reflog) hold a BLAKE3 of
what the record stores, computed when it becomes immutable and checked by
``keel verify`` (:mod:`keel.core.digests`); NULL: not covered (running, or
written before revision 0014).

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
    "ab_experiments",
    "ab_exposures",
    "ab_outcomes",
    "artifacts",
    "auth_audit",
    "auth_grants",
    "auth_tokens",
    "auth_users",
    "change_counters",
    "config_snapshots",
    "conversation_feedback",
    "conversations",
    "dataset_versions",
    "delivered_batches",
    "flag_sets",
    "import_ledger",
    "kb_embeddings",
    "kb_staged",
    "kb_versions",
    "knowledge_bases",
    "latest_metrics",
    "lineage",
    "llm_calls",
    "metadata",
    "metric_chunks",
    "model_version_tombstones",
    "model_versions",
    "params",
    "projects",
    "prompt_versions",
    "prompts",
    "reflog",
    "refs",
    "registered_models",
    "runs",
    "spans",
    "tags",
    "trace_links",
    "trace_scores",
    "traces",
    "ui_login_attempts",
    "ui_sessions",
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
    Column("digest", String(200)),  # set when the run finishes: see keel.core.digests
    Column("deleted_at", BigInteger),  # when it was soft-deleted (0026): purge --older-than counts from it
    Index("ix_runs_project_start", "project_id", "start_time"),
    Index("ix_runs_project_live", "project_id", "deleted", "start_time"),  # counts read the index alone (0022)
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
    # the alias the run resolved to reach this version ('production'); '' when named directly
    Column("ref", String(100), nullable=False, server_default=""),
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
    Column("digest", String(64)),  # chained to the previous entry of the same ref
    Index("ix_reflog_entity", "kind", "name", "ref", "at"),
)

# One row per kind of registry state (prompt, model, flag, experiment): a counter that database
# triggers add 1 to in the transaction of every change of that kind (a ref or reflog row, a
# version registered or deleted, a flag set, an experiment's state). Running processes poll it
# to refresh their caches (see keel.meta.changes).
change_counters = Table(
    "change_counters",
    metadata,
    Column("kind", String(32), primary_key=True),
    Column("counter", BigInteger, nullable=False, server_default="0"),
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
    Column("digest", String(64)),
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
    Column("digest", String(64)),  # of what never changes: not stage, description, tags
    # what a local-path or object-store source meant at registration: sha256:<hex>, etag:..., s3version:...
    Column("source_digest", String(200)),
    UniqueConstraint("model_id", "version", name="uq_model_versions_version"),
    Index("ix_model_versions_stage", "model_id", "stage", "version"),
    Index(
        "ix_model_versions_run",
        "run_id",
        sqlite_where=text("run_id IS NOT NULL"),
        postgresql_where=text("run_id IS NOT NULL"),
    ),
)

# A deleted model version's row (JSON), so "as of T" still answers with it, marked deleted.
model_version_tombstones = Table(
    "model_version_tombstones",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("model_name", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("row", Text, nullable=False),
    Column("deleted_at", BigInteger, nullable=False),
    Column("deleted_by", String(200), nullable=False, server_default=""),
    Index("ix_model_version_tombstones_version", "model_name", "version", "deleted_at"),
)

# -- data versioning ------------------------------------------------------------------
# One row per (data path, content hash) added with 'keel data add': runs link to it
# through lineage edges ``dataset:<path>@<oid>``. The bytes are in the object store.
dataset_versions = Table(
    "dataset_versions",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("path", String(1000), nullable=False),
    Column("oid", String(64), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("files", BigInteger, nullable=False),
    Column("git_commit", String(64), nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("path", "oid", name="uq_dataset_versions_path_oid"),
    Index("ix_dataset_versions_oid", "oid"),
)

# -- knowledge bases ----------------------------------------------------------------
# A knowledge base's current configuration; its versions are immutable rows that
# point at objects (manifest, chunk table, search index). ``kb_staged`` holds the
# documents added or removed since the last commit (one row per document key), so
# 'keel kb add' and 'keel kb commit' can run in separate processes. ``kb_embeddings``
# says where the embedding of (embedder, chunk id) is stored: row ``pack_row`` of the
# float32 matrix object ``pack_oid``; a commit embeds only chunks not listed here.
knowledge_bases = Table(
    "knowledge_bases",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("description", Text, nullable=False, server_default=""),
    Column("embedding_model", String(200), nullable=False),
    Column("dimension", Integer),
    Column("splitter", String(32), nullable=False),
    Column("chunk_size", Integer, nullable=False),
    Column("chunk_overlap", Integer, nullable=False),
    Column("metadata_fields", Text, nullable=False, server_default="[]"),
    Column("max_document_bytes", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

kb_versions = Table(
    "kb_versions",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("kb_id", _Id, ForeignKey("knowledge_bases.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("parent", Integer),
    Column("message", Text, nullable=False, server_default=""),
    Column("author", String(200), nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("document_count", BigInteger, nullable=False),
    Column("chunk_count", BigInteger, nullable=False),
    Column("embedding_model", String(200), nullable=False),
    Column("dimension", Integer, nullable=False),
    Column("splitter", String(32), nullable=False),
    Column("chunk_size", Integer, nullable=False),
    Column("chunk_overlap", Integer, nullable=False),
    Column("manifest_oid", String(64), nullable=False),
    Column("chunks_oid", String(64), nullable=False),
    Column("index_oid", String(64), nullable=False),
    Column("data_sources", Text, nullable=False, server_default="[]"),
    Column("embedded_chunks", BigInteger, nullable=False, server_default="0"),
    Column("reused_chunks", BigInteger, nullable=False, server_default="0"),
    UniqueConstraint("kb_id", "version", name="uq_kb_versions_version"),
    Index("ix_kb_versions_manifest", "manifest_oid"),
)

kb_staged = Table(
    "kb_staged",
    metadata,
    Column("kb_id", _Id, ForeignKey("knowledge_bases.id", ondelete="CASCADE"), primary_key=True),
    Column("doc_key", String(1000), primary_key=True),
    Column("action", String(8), nullable=False),
    Column("document_oid", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

kb_embeddings = Table(
    "kb_embeddings",
    metadata,
    Column("embedder", String(200), primary_key=True),
    Column("chunk_id", String(64), primary_key=True),
    Column("pack_oid", String(64), nullable=False),
    Column("pack_row", Integer, nullable=False),
    sqlite_with_rowid=False,
)

# -- conversations ----------------------------------------------------------------------
# Append-only records logged by apps (messages and metadata as compact JSON text). The
# latest feedback is kept on the record itself (thumb 1/-1, score, comment), so filters
# and aggregates never join; every feedback that arrives later is also appended to
# ``conversation_feedback`` (``record_pk`` NULL while its conversation is not stored yet).
conversations = Table(
    "conversations",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("conversation_id", String(200), nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Column("model", String(200)),
    Column("prompt_version", String(200)),
    Column("run_id", String(32)),
    Column("messages", Text, nullable=False),
    Column("metadata", Text, nullable=False, server_default="{}"),
    Column("thumb", Integer),
    Column("score", Float),
    Column("comment", Text),
    Column("feedback_at", BigInteger),
    Column("prompt_tokens", BigInteger),
    Column("completion_tokens", BigInteger),
    Column("latency_ms", Float),
    Column("created_at", BigInteger, nullable=False),
    Column("total_tokens", BigInteger),  # given as a total, else prompt + completion (0017)
    Index("ix_conversations_cid", "conversation_id", "id"),
    Index("ix_conversations_time", "timestamp"),
    Index("ix_conversations_prompt_time", "prompt_version", "timestamp"),
    Index("ix_conversations_model_time", "model", "timestamp"),
    Index(
        "ix_conversations_thumb_time",
        "thumb",
        "timestamp",
        sqlite_where=text("thumb IS NOT NULL"),
        postgresql_where=text("thumb IS NOT NULL"),
    ),
    Index(
        "ix_conversations_run",
        "run_id",
        sqlite_where=text("run_id IS NOT NULL"),
        postgresql_where=text("run_id IS NOT NULL"),
    ),
)

conversation_feedback = Table(
    "conversation_feedback",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("conversation_id", String(200), nullable=False),
    Column("record_pk", _Id, ForeignKey("conversations.id", ondelete="CASCADE")),
    Column("thumb", Integer),
    Column("score", Float),
    Column("comment", Text),
    Column("at", BigInteger, nullable=False),
    Index("ix_conversation_feedback_cid", "conversation_id", "id"),
    Index(
        "ix_conversation_feedback_pending",
        "conversation_id",
        sqlite_where=text("record_pk IS NULL"),
        postgresql_where=text("record_pk IS NULL"),
    ),
    # 0025: deleting a record looks its feedback up by record_pk (the foreign key's cascade)
    Index(
        "ix_conversation_feedback_record",
        "record_pk",
        sqlite_where=text("record_pk IS NOT NULL"),
        postgresql_where=text("record_pk IS NOT NULL"),
    ),
)

# -- recorded LLM calls -------------------------------------------------------------------
# The index of every recorded call: request hash -> the pack object holding the request
# and response (``oid``, entry ``part`` of it), with what a listing or a cost report needs. Live recordings carry the
# run they were made in; imported cassettes their name (``cassette``), never a run.
llm_calls = Table(
    "llm_calls",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("request_hash", String(64), nullable=False),
    Column("endpoint", String(100), nullable=False),
    Column("model", String(200), nullable=False, server_default=""),
    Column("oid", String(64), nullable=False),
    Column("part", Integer, nullable=False, server_default="0"),
    Column("run_id", String(32)),
    Column("cassette", String(200), nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("latency_ms", Float),
    Column("input_tokens", BigInteger),
    Column("output_tokens", BigInteger),
    Column("cost", Float),
    Column("system_fingerprint", String(200)),
    Column("streamed", Boolean, nullable=False, server_default="0"),
    Column("context", Text, nullable=False, server_default="{}"),
    Column("occurrence", Integer),  # the n-th identical request of its run; NULL before 0019
    Index("ix_llm_calls_hash", "request_hash", "id"),
    Index("ix_llm_calls_model", "endpoint", "model", "id"),
    Index(
        "ix_llm_calls_run",
        "run_id",
        "id",
        sqlite_where=text("run_id IS NOT NULL"),
        postgresql_where=text("run_id IS NOT NULL"),
    ),
    Index("ix_llm_calls_cassette", "cassette", "id"),
    Index("ix_llm_calls_oid", "oid"),  # 0028: the calls of a pack (erasure, gc)
)

# -- configuration snapshots -------------------------------------------------------------
# A resolved, redacted configuration as loaded for one environment: its canonical JSON is
# the object ``hash`` (stored once); one row per (hash, env). Runs that used it have the
# lineage input ``config:<env>@<hash[:12]>``.
config_snapshots = Table(
    "config_snapshots",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("hash", String(64), nullable=False),
    Column("env", String(200), nullable=False),
    Column("sources", Text, nullable=False, server_default="[]"),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("hash", "env", name="uq_config_snapshots_hash_env"),
    Index("ix_config_snapshots_env", "env", "created_at"),
)

# -- feature flags and A/B tests ----------------------------------------------------------
# A flag set is versioned per environment: every change stores the whole set (JSON) as the
# next version; the flag's move is appended to the reflog (kind "flag", name = flag key,
# ref = env, old/new = flag-set versions) with who and why.
flag_sets = Table(
    "flag_sets",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("env", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("flags", Text, nullable=False),
    Column("author", String(200), nullable=False, server_default=""),
    Column("reason", Text, nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("env", "version", name="uq_flag_sets_env_version"),
)

# An experiment's definition (JSON) and lifecycle; status moves go to the reflog (kind
# "experiment", ref "status"). Exposures: one row per (experiment, unit), with the variant
# and the versions it resolved to. Outcomes: logged values per unit and metric.
ab_experiments = Table(
    "ab_experiments",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("definition", Text, nullable=False),
    Column("status", String(20), nullable=False, server_default="draft"),
    Column("resolved", Text, nullable=False, server_default="{}"),
    Column("author", String(200), nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("started_at", BigInteger),
    Column("stopped_at", BigInteger),
)

ab_exposures = Table(
    "ab_exposures",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("experiment", String(200), nullable=False),
    Column("unit", String(200), nullable=False),
    Column("variant", String(200), nullable=False),
    Column("resolved", Text, nullable=False, server_default="{}"),
    Column("run_id", String(32)),
    Column("at", BigInteger, nullable=False),
    UniqueConstraint("experiment", "unit", name="uq_ab_exposures_unit"),
)

ab_outcomes = Table(
    "ab_outcomes",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("experiment", String(200), nullable=False),
    Column("unit", String(200), nullable=False),
    Column("metric", String(200), nullable=False),
    Column("value", Float, nullable=False),
    Column("at", BigInteger, nullable=False),
    Index("ix_ab_outcomes_exp_metric", "experiment", "metric"),
)

# -- team server: users, API tokens, project roles, audit ----------------------------------
# A token is shown once; only the SHA-256 of its secret is stored (``token_hash``), so a
# leaked database cannot be replayed as credentials. ``auth_grants.project`` is a project
# name, ``@registries`` (the prompt and model registries) or ``*`` (every project and both).
# ``auth_audit`` records every admin action (users, tokens, grants) with who and when.
auth_users = Table(
    "auth_users",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("is_admin", Boolean, nullable=False, server_default="0"),
    Column("disabled", Boolean, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    Column("password_hash", String(200)),  # scrypt with a per-user salt; NULL: no password sign-in
)

auth_tokens = Table(
    "auth_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", _Id, ForeignKey("auth_users.id", ondelete="CASCADE"), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger),
    Column("revoked_at", BigInteger),
    Index("ix_auth_tokens_user", "user_id"),
)

auth_grants = Table(
    "auth_grants",
    metadata,
    Column("user_id", _Id, ForeignKey("auth_users.id", ondelete="CASCADE"), primary_key=True),
    Column("project", String(200), primary_key=True),
    Column("role", String(20), nullable=False),
    Column("granted_by", String(200), nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
)

auth_audit = Table(
    "auth_audit",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(50), nullable=False),
    Column("target", String(400), nullable=False, server_default=""),
    Column("detail", Text, nullable=False, server_default="{}"),
    Index("ix_auth_audit_at", "at"),
)

# -- MLflow REST compatibility: what only MLflow has --------------------------------------
# An MLflow experiment is a keel project (experiment id = project id; "0" = project
# "default"); this row holds the MLflow-only fields. MLflow prompts are keel prompts:
# MLflow numbers their versions 1, 2, 3 where keel has semver, so each MLflow version
# number maps to the keel version it registered or read (several numbers may share one
# keel version when MLflow re-registers identical content).
mlflow_experiments = Table(
    "mlflow_experiments",
    metadata,
    Column("project_id", _Id, ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    Column("lifecycle_stage", String(20), nullable=False, server_default="active"),
    Column("tags", Text, nullable=False, server_default="{}"),
    Column("updated_at", BigInteger, nullable=False),
)

mlflow_prompts = Table(
    "mlflow_prompts",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("description", Text, nullable=False, server_default=""),
    Column("tags", Text, nullable=False, server_default="{}"),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

mlflow_prompt_versions = Table(
    "mlflow_prompt_versions",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("keel_version", String(50), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("tags", Text, nullable=False, server_default="{}"),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# Files MLflow's artifact proxy stores at a path that is not a keel run's (MLflow serves any
# relative path under its artifact root), by content hash.
mlflow_artifacts = Table(
    "mlflow_artifacts",
    metadata,
    Column("path", String(1000), primary_key=True),
    Column("oid", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_mlflow_artifacts_oid", "oid"),
    sqlite_with_rowid=False,
)

# The MLflow fields of a run's dataset input (the input itself is the lineage edge
# dataset:<name>@<digest>): MLflow's source, schema, profile and input tags (a JSON list).
mlflow_dataset_inputs = Table(
    "mlflow_dataset_inputs",
    metadata,
    Column("run_pk", _Id, _run_fk(), primary_key=True),
    Column("name", String(500), primary_key=True),
    Column("digest", String(100), primary_key=True),
    Column("source_type", Text, nullable=False, server_default=""),
    Column("source", Text, nullable=False, server_default=""),
    Column("schema", Text),
    Column("profile", Text),
    Column("tags", Text, nullable=False, server_default="[]"),
    Column("created_at", BigInteger, nullable=False),
)

# MLflow 3's logged models (``m-<32 hex>``) of an experiment's project: params and tags are
# JSON objects; the files are ``mlflow_artifacts`` rows under ``<experiment>/models/<id>/artifacts/``;
# the metrics logged for a model (from a run) have rows of their own.
mlflow_logged_models = Table(
    "mlflow_logged_models",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("model_id", String(36), nullable=False),
    Column("project_id", _Id, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(500), nullable=False),
    Column("model_type", String(500), nullable=False, server_default=""),
    Column("source_run_id", String(32)),
    Column("status", Integer, nullable=False),
    Column("status_message", Text),
    Column("lifecycle_stage", String(32), nullable=False, server_default="active"),
    Column("params", Text, nullable=False, server_default="{}"),
    Column("tags", Text, nullable=False, server_default="{}"),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("model_id", name="uq_mlflow_logged_models_model_id"),
    Index("ix_mlflow_logged_models_project_name", "project_id", "name"),
)

mlflow_logged_model_metrics = Table(
    "mlflow_logged_model_metrics",
    metadata,
    Column("model_pk", _Id, ForeignKey("mlflow_logged_models.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(500), primary_key=True),
    Column("timestamp", BigInteger, primary_key=True, autoincrement=False),
    Column("step", BigInteger, primary_key=True, autoincrement=False),
    Column("run_id", String(32), primary_key=True),
    Column("value", Float),
    Column("dataset_name", String(500)),
    Column("dataset_digest", String(36)),
)

# MLflow 3's evaluation datasets (``d-<32 hex>``): each is the keel data path ``path``, and its
# records are the dataset version ``oid`` (a JSON Lines object; None before the first records).
mlflow_datasets = Table(
    "mlflow_datasets",
    metadata,
    Column("dataset_id", String(36), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("path", String(1000), nullable=False),
    Column("oid", String(64)),
    Column("digest", String(64), nullable=False),
    Column("tags", Text, nullable=False, server_default="{}"),
    Column("experiment_ids", Text, nullable=False, server_default="[]"),
    Column("schema", Text),
    Column("profile", Text),
    Column("created_by", String(255)),
    Column("last_updated_by", String(255)),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("path", name="uq_mlflow_datasets_path"),
    Index("ix_mlflow_datasets_created_at", "created_at"),
)

# Web UI browser sessions: only the SHA-256 of the session id (the HttpOnly cookie)
# is stored. ``ui_login_attempts`` holds recent sign-in attempts, so every server
# process applies the same rate limit per user name and per client address.
ui_sessions = Table(
    "ui_sessions",
    metadata,
    Column("session_hash", String(64), primary_key=True),
    Column("user_id", _Id, ForeignKey("auth_users.id", ondelete="CASCADE"), nullable=False),
    Column("method", String(20), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Index("ix_ui_sessions_user", "user_id"),
)

ui_login_attempts = Table(
    "ui_login_attempts",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("user_name", String(200), nullable=False),
    Column("address", String(100), nullable=False),
    Column("ok", Boolean, nullable=False),
    Index("ix_ui_login_attempts_user", "user_name", "at"),
    Index("ix_ui_login_attempts_address", "address", "at"),
)


# -- importers (MLflow, W&B, DVC) -------------------------------------------------------
# One row per item brought in by 'keel import': which source system, what kind of item
# (run, model_version, prompt_version, object, ...), its id there, and what it became in
# keel (a run id, NAME@VERSION, an oid). Re-running an import skips what is listed here,
# and DVC history resolves md5 -> keel object through it. ``detail`` is JSON.
import_ledger = Table(
    "import_ledger",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("source", String(16), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("source_id", String(1000), nullable=False),
    Column("keel_id", String(1000), nullable=False),
    Column("location", Text, nullable=False, server_default=""),
    Column("detail", Text, nullable=False, server_default="{}"),
    Column("imported_at", BigInteger, nullable=False),
    UniqueConstraint("source", "kind", "source_id", name="uq_import_ledger_source_item"),
)


# -- idempotent delivery ----------------------------------------------------------------
# The id of every batch the SDK delivered (runs, conversations, LLM calls, A/B exposures),
# written in the transaction of the batch's rows, so a batch retried after its first attempt
# committed is recognised and skipped (see keel.meta.delivered). The SDK's ids start with the
# batch's creation time (12 hex digits of ms), so pruning after 7 days is a range of the key:
# one B-tree in all (WITHOUT ROWID on SQLite), one page more per committed batch.
delivered_batches = Table(
    "delivered_batches",
    metadata,
    Column("batch_id", String(100), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)


# -- traces (see docs/traces.md and keel.meta.traces) ---------------------------------------
# A trace's summary row, kept up to date as its spans arrive in any order (a late span
# creates it; the root fills its name). Spans are append-only, keyed by (project, trace,
# span): a duplicate span id is ignored. ``trace_links`` names the versions spans used
# (prompt, model, KB, config, flag, A/B arm) so lineage finds traces; ``trace_scores``
# holds feedback and evaluation scores. Times are nanoseconds since the epoch (OTLP's).
traces = Table(
    "traces",
    metadata,
    Column("project_id", BigInteger, nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("name", String(250), nullable=False),
    Column("root_span_id", String(16)),
    Column("start_ns", BigInteger, nullable=False),
    Column("end_ns", BigInteger, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("status", String(8), nullable=False),
    Column("span_count", Integer, nullable=False),
    Column("error_count", Integer, nullable=False),
    Column("input_tokens", BigInteger),
    Column("output_tokens", BigInteger),
    Column("cost", Float),
    Column("model", String(200)),
    Column("prompt", String(200)),
    Column("run_id", String(200)),
    Column("conversation_id", String(200)),
    Column("user_id", String(200)),
    Column("tags", Text, nullable=False, server_default="{}"),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("project_id", "trace_id", name="pk_traces"),
    Index("ix_traces_start", "project_id", "start_ns"),
    Index("ix_traces_duration", "project_id", "duration_ms"),
    Index("ix_traces_conversation", "project_id", "conversation_id"),
    Index("ix_traces_run", "project_id", "run_id"),
)

spans = Table(
    "spans",
    metadata,
    Column("project_id", BigInteger, nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("span_id", String(16), nullable=False),
    Column("parent_id", String(16)),
    Column("name", String(250), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("status", String(8), nullable=False),
    Column("status_message", Text),
    Column("start_ns", BigInteger, nullable=False),
    Column("end_ns", BigInteger, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("model", String(200)),
    Column("input_tokens", BigInteger),
    Column("output_tokens", BigInteger),
    Column("cost", Float),
    Column("prompt", String(200)),
    Column("run_id", String(200)),
    Column("conversation_id", String(200)),
    Column("user_id", String(200)),
    Column("attributes", Text, nullable=False, server_default="{}"),
    Column("inputs", Text),
    Column("outputs", Text),
    Column("events", Text),
    Column("flags", Integer, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    # start_ns is part of the key: PostgreSQL partitions spans by it (keel.meta.trace_partitions)
    UniqueConstraint("project_id", "trace_id", "span_id", "start_ns", name="pk_spans"),
    Index("ix_spans_start", "project_id", "start_ns"),
    Index("ix_spans_model", "project_id", "model", "start_ns"),
    Index("ix_spans_prompt", "project_id", "prompt", "start_ns"),
    postgresql_partition_by="RANGE (start_ns)",
)

trace_links = Table(
    "trace_links",
    metadata,
    Column("project_id", BigInteger, nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("entity_id", String(250), nullable=False),
    Column("version", String(200), nullable=False, server_default=""),
    UniqueConstraint("project_id", "trace_id", "kind", "entity_id", "version", name="pk_trace_links"),
    Index("ix_trace_links_entity", "kind", "entity_id", "version"),
)

trace_scores = Table(
    "trace_scores",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("project_id", BigInteger, nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("span_id", String(16)),
    Column("key", String(250), nullable=False),
    Column("value", Float),
    Column("label", Text),
    Column("comment", Text),
    Column("source", String(32), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_trace_scores_trace", "project_id", "trace_id", "id"),
)

# -- events and webhooks (0023) ----------------------------------------------------------
# the outbox (keel.meta.events) and webhooks (keel.meta.hooks): see migration 0023

events = Table(
    "events",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),
    Column("project", String(200)),
    Column("subject", Text, nullable=False),
    Column("data", Text),
    Column("created_at", BigInteger, nullable=False),
    Column("dispatched", Integer, nullable=False, server_default="0"),
    Index("ix_events_pending", "dispatched", "id"),
    Index("ix_events_project", "project", "id"),
)

hook_subscriptions = Table(
    "hook_subscriptions",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("project", String(200)),
    Column("events", Text, nullable=False),
    Column("subject_kind", String(32)),
    Column("subject_name", String(500)),
    Column("url", Text, nullable=False),
    Column("secret", String(128), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("active", Integer, nullable=False, server_default="1"),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(255), nullable=False, server_default=""),
    Index("ix_hook_subscriptions_project", "project"),
)

hook_deliveries = Table(
    "hook_deliveries",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("subscription_id", _Id, ForeignKey("hook_subscriptions.id", ondelete="CASCADE"), nullable=False),
    Column("event_id", _Id, ForeignKey("events.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_at", BigInteger, nullable=False),
    Column("lease_until", BigInteger, nullable=False, server_default="0"),
    Column("leased_by", String(64)),
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Float),
    Column("created_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger),
    UniqueConstraint("subscription_id", "event_id", name="uq_hook_deliveries_subscription_event"),
    Index("ix_hook_deliveries_due", "status", "next_at"),
    Index("ix_hook_deliveries_subscription", "subscription_id", "id"),
)

hook_attempts = Table(
    "hook_attempts",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("delivery_id", _Id, ForeignKey("hook_deliveries.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Float, nullable=False),
    Column("response", Text),
    Column("worker", String(64), nullable=False, server_default=""),
    Index("ix_hook_attempts_delivery", "delivery_id", "attempt"),
)

__all__ += ["events", "hook_attempts", "hook_deliveries", "hook_subscriptions"]

# -- protected refs and change requests (0024) ---------------------------------------------------
protected_refs = Table(
    "protected_refs",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("name", String(500), nullable=False),
    Column("ref", String(255), nullable=False),
    Column("approvals", Integer, nullable=False),
    Column("self_approval", Integer, nullable=False, server_default="0"),
    Column("created_by", String(255), nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("kind", "name", "ref", name="uq_protected_refs_kind_name_ref"),
)

change_requests = Table(
    "change_requests",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("name", String(500), nullable=False),
    Column("ref", String(255), nullable=False),
    Column("from_target", Text),
    Column("to_target", Text, nullable=False),
    Column("requester", String(255), nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("evidence", Text, nullable=False, server_default="{}"),
    Column("required", Integer, nullable=False),
    Column("self_approval", Integer, nullable=False, server_default="0"),
    Column("status", String(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index("ix_change_requests_status", "status", "id"),
    Index("ix_change_requests_subject", "kind", "name", "ref"),
)

change_reviews = Table(
    "change_reviews",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("request_id", _Id, ForeignKey("change_requests.id", ondelete="CASCADE"), nullable=False),
    Column("reviewer", String(255), nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("comment", Text, nullable=False, server_default=""),
    Column("at", BigInteger, nullable=False),
    UniqueConstraint("request_id", "reviewer", name="uq_change_reviews_request_reviewer"),
)

__all__ += ["change_requests", "change_reviews", "protected_refs"]

# -- the erasure audit (0025) ---------------------------------------------------------------------
# One row per erasure: who, when, what kind, the filter or the number of ids, the counts, why.
# Never the erased content nor the erased ids (see keel.meta.erasures).
erasures = Table(
    "erasures",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("actor", String(255), nullable=False, server_default=""),
    Column("kind", String(32), nullable=False),
    Column("scope", String(200), nullable=False, server_default=""),
    Column("filter", Text, nullable=False, server_default=""),
    Column("ids", Integer, nullable=False, server_default="0"),
    Column("matched", BigInteger, nullable=False, server_default="0"),
    Column("deleted", BigInteger, nullable=False, server_default="0"),
    Column("objects_removed", BigInteger, nullable=False, server_default="0"),
    Column("bytes_freed", BigInteger, nullable=False, server_default="0"),
    Column("reason", String(16), nullable=False, server_default="request"),
    Index("ix_erasures_at", "at"),
)

__all__ += ["erasures"]

# -- retention and purge (0026) -------------------------------------------------------------------
# How long records of a kind are kept, per scope (a project for traces, "@registries" for the
# workspace-wide conversations and recorded LLM calls); a named lease so one server process at a
# time applies retention (see keel.meta.retention).
retention_policies = Table(
    "retention_policies",
    metadata,
    Column("project", String(200), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("max_age_ms", BigInteger, nullable=False),
    Column("updated_by", String(255), nullable=False, server_default=""),
    Column("updated_at", BigInteger, nullable=False),
)

maintenance_leases = Table(
    "maintenance_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False, server_default=""),
    Column("until_ms", BigInteger, nullable=False),
)

__all__ += ["maintenance_leases", "retention_policies"]

# -- object pins (0027) -----------------------------------------------------------------------------
# Objects a keel server received through its objects API (a client's `keel data push`): the
# versions naming them are in the client's database, so gc keeps them (keel.meta.references).
object_pins = Table(
    "object_pins",
    metadata,
    Column("oid", String(64), primary_key=True),
    Column("reason", String(32), nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
)

__all__ += ["object_pins"]

# -- metric directions declared on a project (0029): see keel.meta.directions ------------------
metric_directions = Table(
    "metric_directions",
    metadata,
    Column("project_id", _Id, ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    Column("metric", String(250), primary_key=True),
    Column("direction", String(8), nullable=False),
    Column("updated_by", String(200), nullable=False, server_default=""),
    Column("updated_at", BigInteger, nullable=False),
)

__all__ += ["metric_directions"]
