"""Tracking rows: projects, runs, params, metrics, tags, artifacts, lineage.

Most reads go through SQLAlchemy Core. The hot paths (creating a run,
writing a :class:`WriteBatch`, loading the records of a search page) use the
driver directly through :meth:`Database.raw_write` / :meth:`Database.raw_read`
with portable SQL (``?`` placeholders rewritten per driver), because
SQLAlchemy's per-statement overhead (~0.2 ms) would otherwise dominate.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.core.batch import WriteBatch, lineage_rows
from keel.core.digests import RunContent
from keel.core.downsample import sort_series
from keel.core.entities import (
    RUN_ID_LENGTH,
    Artifact,
    EntityRef,
    LineageEdge,
    Metric,
    MetricSummary,
    Project,
    RunRecord,
    now_ms,
    project_not_found,
    run_not_found,
)
from keel.core.filters import Node, OrderBy
from keel.core.series import Chunk, group_metrics, pack_floats, pack_ints, unpack_floats, unpack_ints
from keel.core.values import decode_param
from keel.errors import AlreadyExists, InvalidInput, NotFound
from keel.meta import erasures
from keel.meta.dbapi import Connection, ConstraintViolation, like_prefix
from keel.meta.delivered import claim_batch
from keel.meta.digests import RunDigests
from keel.meta.engine import Database
from keel.meta.search import RECORD_COLUMNS, compile_search

__all__ = ["PurgeCandidate", "PurgeResult", "TrackingStore"]

_IN_CHUNK = 500  # ids per IN (...) list
_SEARCH_WINDOW = 1_000  # see TrackingStore.search: a first window of at least this many runs,
_WINDOW_FACTOR = 10  # and this many times the rows the page needs

_NEWER = (
    "excluded.step > latest_metrics.step OR (excluded.step = latest_metrics.step "
    "AND excluded.timestamp >= latest_metrics.timestamp)"
)
_UPSERT_LATEST = f"""
INSERT INTO latest_metrics (run_pk, key, value, is_nan, step, timestamp, min_value, max_value, count)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_pk, key) DO UPDATE SET
  value = CASE WHEN {_NEWER} THEN excluded.value ELSE latest_metrics.value END,
  is_nan = CASE WHEN {_NEWER} THEN excluded.is_nan ELSE latest_metrics.is_nan END,
  timestamp = CASE WHEN {_NEWER} THEN excluded.timestamp ELSE latest_metrics.timestamp END,
  step = CASE WHEN {_NEWER} THEN excluded.step ELSE latest_metrics.step END,
  min_value = CASE WHEN latest_metrics.min_value IS NULL OR excluded.min_value < latest_metrics.min_value
                   THEN excluded.min_value ELSE latest_metrics.min_value END,
  max_value = CASE WHEN latest_metrics.max_value IS NULL OR excluded.max_value > latest_metrics.max_value
                   THEN excluded.max_value ELSE latest_metrics.max_value END,
  count = latest_metrics.count + excluded.count
"""
_INSERT_CHUNK = (
    "INSERT INTO metric_chunks (run_pk, key, count, min_step, max_step, steps, timestamps, vals) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_RUN = (
    "INSERT INTO runs (run_id, project_id, name, status, start_time, end_time, parent_id, error, context, "
    "summary, deleted, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
_INSERT_PARAM = (
    "INSERT INTO params (run_pk, key, vtype, value) VALUES (?, ?, ?, ?) ON CONFLICT (run_pk, key) DO NOTHING"
)
_UPSERT_PARAM = (
    "INSERT INTO params (run_pk, key, vtype, value) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (run_pk, key) DO UPDATE SET vtype = excluded.vtype, value = excluded.value"
)
_UPSERT_TAG = (
    "INSERT INTO tags (run_pk, key, value) VALUES (?, ?, ?) "
    "ON CONFLICT (run_pk, key) DO UPDATE SET value = excluded.value"
)
_UPSERT_ARTIFACT = (
    "INSERT INTO artifacts (run_pk, path, oid, size, kind, created_at) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (run_pk, path) DO UPDATE SET oid = excluded.oid, size = excluded.size, "
    "kind = excluded.kind, created_at = excluded.created_at"
)
_INSERT_EDGE = (
    "INSERT INTO lineage (run_pk, direction, entity_kind, entity_id, entity_version, role, created_at, ref) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_END_RUN = "UPDATE runs SET status = ?, end_time = ?, error = ? WHERE id = ?"
# Every table with rows of a run (by runs.id): a purge removes them with the run.
_RUN_TABLES = ("params", "tags", "metric_chunks", "latest_metrics", "artifacts", "lineage", "mlflow_dataset_inputs")


_PURGE_COLUMNS = (
    "runs.id, runs.run_id, projects.name, runs.deleted, COALESCE(runs.deleted_at, runs.end_time, runs.start_time)"
)


@dataclass(frozen=True)
class PurgeCandidate:
    """A run a purge names or selects: ``since`` is when it was deleted (else when it ended or started)."""

    pk: int
    run_id: str
    project: str
    deleted: bool
    since: int


@dataclass
class PurgeResult:
    """What :meth:`TrackingStore.purge` removed: the runs, ``(oid, size, created_at)`` of their
    artifact rows, ``(kind, id, version)`` of what their lineage says they made, the audit row."""

    run_ids: list[str] = field(default_factory=list)
    artifacts: list[tuple[str, int, int]] = field(default_factory=list)
    outputs: list[tuple[str, str, str]] = field(default_factory=list)
    audit_id: int | None = None


# A chunk's packed arrays and step range: (steps, timestamps, values, min step, max step)
Packed = tuple[bytes, bytes, bytes, int, int]


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _pack(chunk: Chunk) -> Packed:
    steps = chunk.steps
    return (
        pack_ints(steps),
        pack_ints(chunk.timestamps),
        pack_floats(chunk.values),
        min(steps),
        max(steps),
    )


def _fresh_contents(
    batch: WriteBatch, finished: set[str], chunks: list[Chunk], packed: list[Packed]
) -> dict[str, RunContent]:
    """The content of runs created and finished by one batch, from the batch itself: what
    the batch's statements leave in the tables (plain params first, the first of a key
    kept, then overwrites; the last tag and artifact of a key; the first lineage edge),
    so nothing is read back."""
    contents = {run_id: RunContent() for run_id in finished}
    get = contents.get
    forced = []
    for r, key, vtype, text, overwrite in batch.params:
        content = get(r)
        if content is not None:
            if overwrite:
                forced.append((content, key, vtype, text))
            elif key not in content.params:
                content.params[key] = (key, vtype, text)
    for content, key, vtype, text in forced:
        content.params[key] = (key, vtype, text)
    for r, key, value in batch.tags:
        content = get(r)
        if content is not None:
            content.tags[key] = (key, value)
    for c, (steps, stamps, vals, low, high) in zip(chunks, packed, strict=True):
        content = get(c.run_id)
        if content is not None:
            content.add_series(
                c.key,
                steps,
                stamps,
                vals,
                c.count,
                low,
                high,
                c.latest_value,
                c.latest_step,
                c.latest_timestamp,
                c.min,
                c.max,
            )
    for r, path, oid, size, kind, created_at in batch.artifacts:
        content = get(r)
        if content is not None:
            content.add_artifact(path, oid, size, kind, created_at)
    for r, direction, entity_kind, entity_id, version, role, at, *_ref in batch.lineage:
        content = get(r)
        if content is not None and (direction, entity_kind, entity_id, version, role) not in content.lineage:
            content.add_edge(direction, entity_kind, entity_id, version, role, at)
    return contents


class TrackingStore:
    """The tracking tables of one database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pks: dict[str, int] = {}  # run_id -> runs.id; immutable, so safe to cache
        self.digests = RunDigests(db)
        self._sql = {
            name: db.sql(text)
            for name, text in {
                "chunk": _INSERT_CHUNK,
                "run": _INSERT_RUN,
                "latest": _UPSERT_LATEST,
                "param": _INSERT_PARAM,
                "param_overwrite": _UPSERT_PARAM,
                "tag": _UPSERT_TAG,
                "artifact": _UPSERT_ARTIFACT,
                "edge": _INSERT_EDGE,
                "end": _END_RUN,
            }.items()
        }

    # -- projects ---------------------------------------------------------
    def ensure_project(self, conn: Any, name: str) -> int:
        """The id of project ``name``, creating it if needed (inside ``conn``'s transaction)."""
        found = conn.execute("SELECT id FROM projects WHERE name = ?", (name,)).scalar()
        if found is not None:
            return int(found)
        try:
            with conn.savepoint():
                created = conn.execute(
                    "INSERT INTO projects (name, created_at) VALUES (?, ?) RETURNING id", (name, now_ms())
                ).scalar_one()
            return int(created)
        except ConstraintViolation:  # created concurrently by another process
            return int(conn.execute("SELECT id FROM projects WHERE name = ?", (name,)).scalar_one())

    def create_project(self, name: str, description: str = "") -> Project:
        """Create a project; raise AlreadyExists if the name is taken."""
        with self.db.write() as conn:
            if conn.execute("SELECT id FROM projects WHERE name = ?", (name,)).scalar() is not None:
                raise AlreadyExists(f"project {name!r} exists already", "use it, or choose another name")
            now = now_ms()
            created = conn.execute(
                "INSERT INTO projects (name, description, created_at) VALUES (?, ?, ?) RETURNING id",
                (name, description, now),
            ).scalar_one()
            return Project(name, int(created), now, description)

    def list_projects(self) -> list[tuple[Project, int]]:
        """Every project with its number of (not deleted) runs, by name."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT projects.id, projects.name, projects.description, projects.created_at,"
                # COUNT(*), not COUNT(runs.id): read from ix_runs_project_live alone (1M runs: ~1.4 s -> ~0.15 s)
                " (SELECT COUNT(*) FROM runs WHERE runs.project_id = projects.id AND runs.deleted = ?) AS n"
                " FROM projects ORDER BY projects.name",
                (False,),
            ).all()
        return [(Project(r.name, r.id, r.created_at, r.description), int(r.n)) for r in rows]

    def run_count(self, project: str) -> int | None:
        """The number of (not deleted) runs of one project, None if there is no such project:
        one index range (ix_runs_project_live), not a count of every project's runs."""
        with self.db.raw_read() as cur:
            cur.execute(
                self.db.sql(
                    "SELECT COUNT(runs.project_id), MIN(projects.id) FROM projects"
                    " LEFT JOIN runs ON runs.project_id = projects.id AND runs.deleted = ? WHERE projects.name = ?"
                ),
                (False, project),
            )
            count, found = cur.fetchone()
        return None if found is None else int(count)

    def project_ids(self, names: Iterable[str]) -> list[int]:
        """Ids of the named projects; raise NotFound for an unknown one.

        Read each time, never cached: a project may be renamed (:mod:`keel.meta.projects`)
        by another process, which must never find the old name still pointing at it."""
        names = list(names)
        if not names:
            return []
        unique = sorted(set(names))
        marks = ", ".join("?" * len(unique))
        with self.db.raw_read() as cur:  # the driver directly: ~0.2 ms less than a Core statement
            cur.execute(self.db.sql(f"SELECT name, id FROM projects WHERE name IN ({marks})"), tuple(unique))  # noqa: S608 - placeholders
            found = {name: int(pk) for name, pk in cur.fetchall()}
        missing = [n for n in names if n not in found]
        if missing:
            raise project_not_found(missing[0])
        return [int(found[n]) for n in names]

    # -- runs -------------------------------------------------------------
    def create_run(
        self,
        run_id: str,
        project: str,
        name: str,
        start_time: int,
        parent_id: str | None = None,
        context: dict[str, Any] | None = None,
        tag_rows: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Insert a new running run (with its tags and parent edge) in one transaction."""
        if parent_id is not None:
            with self.db.raw_read() as cur:
                self._pk_map(cur, [parent_id])
        context_json = json.dumps(context or {}, sort_keys=True, default=str)
        self.write_batch(
            WriteBatch(
                new_runs=[(run_id, project, name, start_time, parent_id, context_json)],
                tags=[(run_id, k, v) for k, v in tag_rows],
                lineage=[(run_id, "input", "run", parent_id, "", "parent", start_time)] if parent_id else [],
            )
        )

    def _insert_runs(self, cur: Any, batch: WriteBatch, chunks: list[Chunk], packed: list[Packed]) -> set[str]:
        """Insert the batch's new runs already in their final state for this batch
        (status, end time, summary and, for a run that finishes in it, its digest
        included), so a short run is one row write. Returns the ids inserted."""
        fresh = {row[0] for row in batch.new_runs if row[0] not in self._pks}  # not on a retry
        if not fresh:
            return fresh
        docs: dict[str, dict[str, dict[str, Any]]] = {run_id: {} for run_id in fresh}
        for r, key, vtype, text, overwrite in batch.params:
            if r in docs:
                doc = docs[r].setdefault("params", {})
                if overwrite or key not in doc:
                    doc[key] = decode_param(vtype, text)
        for r, key, value in batch.tags:
            if r in docs:
                docs[r].setdefault("tags", {})[key] = value
        for c in chunks:  # one chunk per (run, key) per batch: its latest is the latest
            if c.run_id in docs:
                docs[c.run_id].setdefault("metrics", {})[c.key] = c.latest_value
        ends = {r: (status, end, error) for r, status, end, error in batch.run_ends if r in fresh}
        finished = {r for r, (status, _end, _error) in ends.items() if status != "running"}
        contents = _fresh_contents(batch, finished, chunks, packed) if finished else {}
        for run_id, project, name, start_time, parent_id, context_json in batch.new_runs:
            if run_id not in fresh:
                continue
            status, end, error = ends.get(run_id, ("running", None, None))
            summary = json.dumps(docs[run_id], separators=(",", ":"))
            digest = None
            content = contents.get(run_id)
            if content is not None:
                content.set_run(run_id, status, start_time, end, parent_id, error, context_json, summary)
                digest = content.digest()
            cur.execute(
                self._sql["run"],
                (
                    run_id,
                    self._project_id(cur, project),
                    name,
                    status,
                    start_time,
                    end,
                    parent_id,
                    error,
                    context_json,
                    summary,
                    False,
                    digest,
                ),
            )
            self._pks[run_id] = int(cur.fetchone()[0])
        return fresh

    def project_name(self, project_id: int) -> str | None:
        """The name of the project with id ``project_id``, or None (read each time: see :meth:`project_ids`)."""
        if not 0 < project_id < 1 << 63:
            return None
        with self.db.raw_read() as cur:
            cur.execute(self.db.sql("SELECT name FROM projects WHERE id = ?"), (project_id,))
            row = cur.fetchone()
        return None if row is None else str(row[0])

    def _project_id(self, cur: Any, name: str) -> int:
        """The id of project ``name``, created if new (not cached: see :meth:`project_ids`)."""
        select_sql = self.db.sql("SELECT id FROM projects WHERE name = ?")
        cur.execute(select_sql, (name,))
        row = cur.fetchone()
        if row is None:
            cur.execute(
                self.db.sql(
                    "INSERT INTO projects (name, description, created_at) VALUES (?, '', ?) "
                    "ON CONFLICT (name) DO NOTHING"
                ),
                (name, now_ms()),
            )
            cur.execute(select_sql, (name,))
            row = cur.fetchone()
        return int(row[0])

    def resolve_run_id(self, prefix: str, within: Sequence[str] | None = None) -> str:
        """The full run id for a unique prefix (4+ hex digits) or a full id.

        With ``within`` (project names), a prefix matches only runs in those projects, so a
        caller cannot probe ids it may not see; a full id already known to this process is
        returned at once, and the caller checks its project (see
        :func:`keel.services.contract.authorized_run`).
        """
        text = (prefix or "").strip().lower() if isinstance(prefix, str) else ""
        if not 4 <= len(text) <= RUN_ID_LENGTH or any(c not in "0123456789abcdef" for c in text):
            raise InvalidInput(
                f"invalid run id {str(prefix)[:80]!r}", "give a run id or a unique prefix of at least 4 hex digits"
            )
        if text in self._pks:  # a full id seen before; callers check who may see its project
            return text
        sql, args = "SELECT runs.run_id FROM runs", [text + "%"]  # hex digits only: nothing to escape
        if within is not None:
            names = list(within)
            sql += " JOIN projects ON projects.id = runs.project_id"
            where = f" AND projects.name IN ({', '.join('?' * len(names))})" if names else " AND 1 = 0"
            args += names
        else:
            where = ""
        with self.db.read() as conn:
            found = conn.execute(f"{sql} WHERE runs.run_id LIKE ?{where} LIMIT 2", tuple(args)).scalars()  # noqa: S608
        if not found:
            raise run_not_found(prefix)
        if len(found) > 1:
            raise InvalidInput(f"run id prefix {prefix!r} is ambiguous", "type more characters of the id")
        return str(found[0])

    def _pk_map(self, cur: Any, run_ids: Iterable[str]) -> dict[str, int]:
        """``run_id -> runs.id`` for ``run_ids`` (cached); raise NotFound for unknown ids.

        ``cur`` is a DBAPI cursor or a :class:`~keel.meta.dbapi.Connection`.
        """
        wanted = [r for r in set(run_ids) if r not in self._pks]
        if isinstance(cur, Connection):
            cur = cur.cursor()
        for chunk in _chunks(wanted):
            marks = ", ".join("?" * len(chunk))
            cur.execute(self.db.sql(f"SELECT run_id, id FROM runs WHERE run_id IN ({marks})"), tuple(chunk))  # noqa: S608
            rows = cur.fetchall()
            for run_id, pk in rows:
                self._pks[run_id] = int(pk)
        missing = [r for r in wanted if r not in self._pks]
        if missing:
            raise NotFound(f"run {missing[0]} does not exist", "start a run before logging to it")
        return self._pks

    def write_batch(self, batch: WriteBatch, batch_id: str | None = None) -> bool:
        """Write everything in ``batch`` in one transaction; False when ``batch_id`` names a batch
        already written (an SDK retry whose first attempt committed: nothing is written again)."""
        if not len(batch):
            return True
        sql = self._sql
        chunks = group_metrics(batch.metrics) if batch.metrics else []
        packed = [_pack(c) for c in chunks]
        created = {row[0] for row in batch.new_runs if row[0] not in self._pks}
        try:
            with self.db.raw_write() as cur:
                if not claim_batch(self.db, cur, batch_id):
                    return False
                self._insert_runs(cur, batch, chunks, packed)
                self._write_rows(cur, batch, sql, chunks, packed, created)
        except BaseException:
            for run_id in created:  # rolled back: forget the ids cached for them
                self._pks.pop(run_id, None)
            raise
        return True

    def _write_rows(
        self,
        cur: Any,
        batch: WriteBatch,
        sql: dict[str, str],
        chunks: list[Chunk],
        packed: list[Packed],
        created: set[str],
    ) -> None:
        pks = self._pk_map(cur, batch.run_ids())
        if batch.params:
            plain = [(pks[r], k, t, v) for r, k, t, v, overwrite in batch.params if not overwrite]
            forced = [(pks[r], k, t, v) for r, k, t, v, overwrite in batch.params if overwrite]
            if plain:
                cur.executemany(sql["param"], plain)
            if forced:
                cur.executemany(sql["param_overwrite"], forced)
        if batch.tags:
            cur.executemany(sql["tag"], [(pks[r], k, v) for r, k, v in batch.tags])
        if chunks:
            cur.executemany(
                sql["chunk"],
                [
                    (pks[c.run_id], c.key, c.count, low, high, steps, stamps, vals)
                    for c, (steps, stamps, vals, low, high) in zip(chunks, packed, strict=True)
                ],
            )
            cur.executemany(
                sql["latest"],
                [
                    (
                        pks[c.run_id],
                        c.key,
                        None if c.latest_value != c.latest_value else c.latest_value,
                        c.latest_value != c.latest_value,
                        c.latest_step,
                        c.latest_timestamp,
                        c.min,
                        c.max,
                        c.count,
                    )
                    for c in chunks
                ],
            )
        if batch.artifacts:
            cur.executemany(sql["artifact"], [(pks[r], *rest) for r, *rest in batch.artifacts])
        if batch.lineage:
            cur.executemany(sql["edge"], [(pks[r], *rest) for r, *rest in lineage_rows(batch.lineage)])
        ends = [(status, end, error, pks[r]) for r, status, end, error in batch.run_ends if r not in created]
        if ends:
            cur.executemany(sql["end"], ends)
        self._update_summaries(cur, batch, pks, chunks, created)
        self._seal(cur, batch, pks, created)

    def _seal(self, cur: Any, batch: WriteBatch, pks: dict[str, int], created: set[str]) -> None:
        """Digest (from the rows as now stored) every run this batch finished, and every
        finished run it changed; runs created and finished by it already have theirs."""
        ended = {pks[r] for r, *_ in batch.run_ends if r not in created}
        touched = {pks[r] for r in batch.run_ids() if r not in created} - ended
        if touched:
            ended.update(self.digests.finished(cur, touched))
        if ended:
            self.digests.seal(cur, ended)

    def _update_summaries(
        self, cur: Any, batch: WriteBatch, pks: dict[str, int], chunks: list[Any], created: set[str]
    ) -> None:
        """Rewrite ``runs.summary`` for every run whose params, tags or metrics changed.

        Params and tags merge into the stored document; metrics are re-read
        from ``latest_metrics`` (just upserted, so authoritative). Keys are
        stored sorted so reading needs no sort.
        """
        touched = {r for r, *_ in batch.params} | {r for r, *_ in batch.tags} | {c.run_id for c in chunks}
        touched -= created  # inserted with their summary already
        if not touched:
            return
        sql = self.db.sql
        ids = tuple(pks[r] for r in touched)
        docs: dict[int, dict[str, dict[str, Any]]] = {}
        metric_runs = {pks[c.run_id] for c in chunks}
        for part in _chunks(ids):
            marks = ", ".join("?" * len(part))
            cur.execute(sql(f"SELECT id, summary FROM runs WHERE id IN ({marks})"), part)
            for pk, summary in cur.fetchall():
                docs[pk] = json.loads(summary or "{}")
            metric_part = tuple(pk for pk in part if pk in metric_runs)
            if metric_part:
                marks = ", ".join("?" * len(metric_part))
                cur.execute(
                    sql(f"SELECT run_pk, key, value, is_nan FROM latest_metrics WHERE run_pk IN ({marks})"),
                    metric_part,
                )
                fresh: dict[int, dict[str, float]] = {}
                for pk, key, value, is_nan in cur.fetchall():
                    fresh.setdefault(pk, {})[key] = float("nan") if is_nan else float(value)
                for pk, values in fresh.items():
                    docs[pk]["metrics"] = values
        for r, key, vtype, text, overwrite in batch.params:
            doc = docs[pks[r]].setdefault("params", {})
            if overwrite or key not in doc:
                doc[key] = decode_param(vtype, text)
        for r, key, value in batch.tags:
            docs[pks[r]].setdefault("tags", {})[key] = value
        cur.executemany(
            sql("UPDATE runs SET summary = ? WHERE id = ?"),
            [(json.dumps(doc, separators=(",", ":"), sort_keys=True), pk) for pk, doc in docs.items()],
        )

    def set_deleted(self, run_id: str, deleted: bool) -> None:
        """Soft-delete or restore a run (its children are untouched); when it was deleted is
        kept (``deleted_at``) for ``keel runs purge --older-than``."""
        with self.db.write() as conn:
            result = conn.execute(
                "UPDATE runs SET deleted = ?, deleted_at = ? WHERE run_id = ?",
                (deleted, now_ms() if deleted else None, run_id),
            )
            if result.rowcount == 0:
                raise NotFound(f"no run with id {run_id!r}", "list runs with 'keel runs list'")

    def set_status(self, run_id: str, status: str, end_time: int | None, error: str | None = None) -> None:
        """Change a run's status directly (used when resuming a run): a running run has no
        digest; a run that is not running gets one of its rows, in the same transaction."""
        with self.db.write() as conn:
            conn.execute(
                "UPDATE runs SET status = ?, end_time = ?, error = ?, digest = NULL WHERE run_id = ?",
                (status, end_time, error, run_id),
            )
            if status != "running":
                self.digests.seal(conn, [self._pk_map(conn, [run_id])[run_id]])

    def reseal(self, conn: Any, run_pk: int) -> None:
        """Recompute a run's digest inside the caller's transaction (``conn``: a SQLAlchemy
        connection or a DBAPI cursor) after a keel write changed its rows outside
        :meth:`write_batch`; a running run keeps none (and is not read)."""
        finished = self.digests.finished(conn, [run_pk])
        if finished:
            self.digests.seal(conn, finished)

    # -- reading runs -----------------------------------------------------
    def _records_from_rows(self, rows: Sequence[Sequence[Any]]) -> list[RunRecord]:
        """Records from rows of :data:`RECORD_COLUMNS`; all summaries are decoded in one
        ``json.loads`` (a quarter faster than one call per run)."""
        docs = json.loads("[" + ",".join(row[11] or "{}" for row in rows) + "]")
        return [self._record(row, doc) for row, doc in zip(rows, docs, strict=True)]

    def _record(self, row: Sequence[Any], doc: dict[str, Any]) -> RunRecord:
        """A :class:`RunRecord` from a row of :data:`RECORD_COLUMNS` and its decoded summary."""
        pk, run_id, project, name, status, start, end, parent, deleted, error, context, _summary = row
        self._pks[run_id] = pk
        return RunRecord(
            run_id=run_id,
            project=project,
            name=name,
            status=status,
            start_time=int(start),
            end_time=None if end is None else int(end),
            parent_id=parent,
            deleted=bool(deleted),
            error=error,
            context_json=context or "{}",
            params=doc.get("params", {}),
            metrics=doc.get("metrics", {}),
            tags=doc.get("tags", {}),
        )

    def _records(self, pks: Sequence[int]) -> list[RunRecord]:
        """Records for ``pks``, in that order (one query per 500 runs)."""
        found: dict[int, RunRecord] = {}
        with self.db.read() as conn:
            for chunk in _chunks(list(pks)):
                marks = ", ".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT {RECORD_COLUMNS} FROM runs JOIN projects ON projects.id = runs.project_id"  # noqa: S608
                    f" WHERE runs.id IN ({marks})",
                    tuple(chunk),
                ).all()
                for row, record in zip(rows, self._records_from_rows(rows), strict=True):
                    found[row[0]] = record
        return [found[pk] for pk in pks if pk in found]

    def get_run(self, run_id: str) -> RunRecord:
        """The run with this full id; raise NotFound."""
        records = self.get_runs([run_id])
        if not records:
            raise run_not_found(run_id)
        return records[0]

    def get_runs(self, run_ids: Sequence[str]) -> list[RunRecord]:
        """Several runs in the given order (unknown ids are skipped)."""
        unknown = [r for r in run_ids if r not in self._pks]
        if unknown:
            with self.db.raw_read() as cur, contextlib.suppress(NotFound):
                self._pk_map(cur, unknown)
        return self._records([self._pks[r] for r in run_ids if r in self._pks])

    def search(
        self,
        project_ids: list[int] | None,
        node: Node | None,
        order_by: list[OrderBy],
        limit: int,
        offset: int = 0,
        include_deleted: bool = False,
        only_deleted: bool = False,
    ) -> tuple[list[RunRecord], bool]:
        """One page of matching runs, and whether more follow.

        Ordered by a metric over many runs, the best few by that metric usually hold the
        page: the query is first run on a window of them (``compile_search(window_edge=)``).
        A window that holds too few matches tells how selective the filter is; the next one is
        sized to hold about 1.5 times the rows the page needs. A window that holds none, or one
        that would span every run, gives way to the full query.
        """
        rows: list[Any] = []
        need = offset + limit + 1
        if order_by and order_by[0].field.kind == "metrics":
            bound = self._run_count_bound()
            window = max(_SEARCH_WINDOW, _WINDOW_FACTOR * need)
            while window < bound:
                edge = self._window_edge(order_by[0], window)
                if edge is None:
                    break
                rows = self._search_rows(
                    (project_ids, node, order_by, include_deleted, only_deleted, edge), limit, offset
                )
                found = offset + len(rows)  # every match in the window, when it did not fill the page
                if len(rows) > limit or found == 0:
                    break
                window = window * need * 3 // (2 * found)
        if len(rows) <= limit:  # the window did not settle it (or there was none)
            rows = self._search_rows((project_ids, node, order_by, include_deleted, only_deleted, None), limit, offset)
        return self._records_from_rows(rows[:limit]), len(rows) > limit

    def _window_edge(self, clause: OrderBy, window: int) -> float | None:
        """The value of the order metric ``window`` places from the best, over all runs (one
        index range read); None when fewer runs have one, or it is not finite."""
        direction = "ASC" if clause.ascending else "DESC"
        sql = (
            "SELECT value FROM latest_metrics WHERE key = ? AND value IS NOT NULL "
            f"ORDER BY value {direction} LIMIT 1 OFFSET ?"  # noqa: S608 - ASC or DESC
        )
        with self.db.raw_read() as cur:
            cur.execute(self.db.sql(sql), (clause.field.key, window - 1))
            row = cur.fetchone()
        return float(row[0]) if row is not None and math.isfinite(row[0]) else None

    def _run_count_bound(self) -> int:
        """An upper bound of the number of runs (the largest id): one index probe."""
        with self.db.raw_read() as cur:
            cur.execute("SELECT MAX(id) FROM runs")
            return int(cur.fetchone()[0] or 0)

    def _search_rows(self, query: tuple[Any, ...], limit: int, offset: int) -> list[Any]:
        """Run ``compile_search(*query)`` for one page (``limit + 1`` rows, to tell whether
        more follow), straight through the driver. Building the SQL costs microseconds;
        PostgreSQL's driver prepares a statement it sees repeatedly."""
        sql, args = compile_search(*query).page(limit + 1, offset)
        with self.db.raw_read() as cur:  # the driver directly: no wrapping per row
            cur.execute(self.db.sql(sql), args)
            return list(cur.fetchall())

    def children(self, run_id: str) -> list[str]:
        """Ids of the runs whose parent is ``run_id``, oldest first."""
        with self.db.read() as conn:
            return list(
                conn.execute("SELECT run_id FROM runs WHERE parent_id = ? ORDER BY start_time, id", (run_id,)).scalars()
            )

    def params_of(self, run_id: str) -> dict[str, tuple[str, str]]:
        """``key -> (vtype, text)`` of a run's params (to resume it)."""
        with self.db.read() as conn:
            pk = self._pk_map(conn, [run_id])[run_id]
            rows = conn.execute("SELECT key, vtype, value FROM params WHERE run_pk = ?", (pk,))
            return {k: (t, v) for k, t, v in rows}

    # -- metrics ----------------------------------------------------------
    def metric_series(self, run_id: str, key: str) -> tuple[list[int], list[int], list[float]]:
        """Steps, timestamps and values of one metric as parallel lists, by step, then time,
        then logging order (no per-point objects: a chart of 100,000 points reads these)."""
        sql = self.db.sql("SELECT steps, timestamps, vals FROM metric_chunks WHERE run_pk = ? AND key = ? ORDER BY id")
        with self.db.raw_read() as cur:
            pk = self._pk_map(cur, [run_id])[run_id]
            if self.db.is_sqlite:
                cur.execute(sql, (pk, key))
            else:  # psycopg: bytea as bytes on the wire, not hex text (100,000 points: ~35 -> ~12 ms)
                cur.execute(sql, (pk, key), binary=True)
            chunks = cur.fetchall()
        return sort_series(
            unpack_ints(b"".join(chunk[0] for chunk in chunks)),
            unpack_ints(b"".join(chunk[1] for chunk in chunks)),
            unpack_floats(b"".join(chunk[2] for chunk in chunks)),
        )

    def metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every value of one metric, by step, then time, then logging order."""
        steps, stamps, values = self.metric_series(run_id, key)
        return [Metric(key, value, step, ts) for step, ts, value in zip(steps, stamps, values, strict=True)]

    def metric_summaries(self, run_id: str) -> list[MetricSummary]:
        """Latest, min, max and count of each metric of a run."""
        with self.db.read() as conn:
            pk = self._pk_map(conn, [run_id])[run_id]
            rows = conn.execute(
                "SELECT key, value, is_nan, step, timestamp, min_value, max_value, count"
                " FROM latest_metrics WHERE run_pk = ? ORDER BY key",
                (pk,),
            ).all()

        def num(value: Any) -> float:
            return float("nan") if value is None else float(value)

        return [
            MetricSummary(
                r.key,
                float("nan") if r.is_nan else float(r.value),
                int(r.step),
                int(r.timestamp),
                num(r.min_value),
                num(r.max_value),
                int(r.count),
            )
            for r in rows
        ]

    # -- artifacts and lineage --------------------------------------------
    def list_artifacts(self, run_id: str, prefix: str = "") -> list[Artifact]:
        """A run's artifacts under ``prefix`` (a folder path or a file path)."""
        with self.db.read() as conn:
            pk = self._pk_map(conn, [run_id])[run_id]
            sql = "SELECT path, oid, size, kind FROM artifacts WHERE run_pk = ?"
            args: list[Any] = [pk]
            if prefix:
                sql += " AND (path = ? OR path LIKE ? ESCAPE '\\')"
                args += [prefix, like_prefix(prefix.rstrip("/") + "/")]
            rows = conn.execute(sql + " ORDER BY path", tuple(args)).all()
        return [Artifact(r.path, r.oid, int(r.size), r.kind) for r in rows]

    def edges(self, run_id: str) -> list[LineageEdge]:
        """A run's lineage: what it used (inputs) and made (outputs)."""
        with self.db.read() as conn:
            pk = self._pk_map(conn, [run_id])[run_id]
            rows = conn.execute(
                "SELECT direction, entity_kind, entity_id, entity_version, role, created_at, ref"
                " FROM lineage WHERE run_pk = ? ORDER BY id",
                (pk,),
            ).all()
        return [
            LineageEdge(
                run_id,
                r.direction,
                EntityRef(r.entity_kind, r.entity_id, r.entity_version),
                r.role,
                r.created_at,
                r.ref,
            )
            for r in rows
        ]

    def uses(
        self, kind: str, entity_id: str, ref: str | None = None, version: str | None = None, limit: int = 1000
    ) -> list[LineageEdge]:
        """The input edges of ``kind:entity_id`` (every run that used it), newest use first: of
        ``version`` only when given, resolved through alias ``ref`` only when given (ignoring
        case, as aliases do). Each edge names the version the run got, whatever the alias
        points at now."""
        sql = (
            "SELECT runs.run_id, lineage.entity_version, lineage.role, lineage.created_at, lineage.ref"
            " FROM lineage JOIN runs ON runs.id = lineage.run_pk"
            " WHERE lineage.entity_kind = ? AND lineage.entity_id = ? AND lineage.direction = 'input'"
        )
        args: tuple[Any, ...] = (kind, entity_id)
        if version is not None:
            sql += " AND lineage.entity_version = ?"
            args += (version,)
        if ref is not None:
            sql += " AND LOWER(lineage.ref) = ?"
            args += (ref.lower(),)
        sql += " ORDER BY lineage.created_at DESC, lineage.id DESC LIMIT ?"
        with self.db.read() as conn:
            rows = conn.execute(sql, (*args, limit)).all()
        return [
            LineageEdge(r.run_id, "input", EntityRef(kind, entity_id, r.entity_version), r.role, r.created_at, r.ref)
            for r in rows
        ]

    def runs_with_entity(self, entity: EntityRef, direction: str) -> list[str]:
        """Ids of runs that have ``entity`` as an input or output (any version if none given)."""
        sql = (
            "SELECT DISTINCT runs.run_id FROM runs JOIN lineage ON lineage.run_pk = runs.id"
            " WHERE lineage.direction = ? AND lineage.entity_kind = ? AND lineage.entity_id = ?"
        )
        args: tuple[Any, ...] = (direction, entity.kind, entity.id)
        if entity.version:
            sql += " AND lineage.entity_version = ?"
            args += (entity.version,)
        with self.db.read() as conn:
            return [str(r) for r in conn.execute(sql, args).scalars()]

    def referenced_oids(self) -> set[str]:
        """Every object id the metadata points at (for verify and gc): run artifacts, the
        files MLflow's artifact proxy keeps outside runs, and every version of MLflow's
        evaluation datasets (their records exist only in the store, under ``mlflow/datasets/``)."""
        with self.db.read() as conn:
            found = set(conn.execute("SELECT DISTINCT oid FROM artifacts").scalars())
            found.update(conn.execute("SELECT DISTINCT oid FROM mlflow_artifacts").scalars())
            found.update(
                conn.execute("SELECT DISTINCT oid FROM dataset_versions WHERE path LIKE 'mlflow/datasets/%'").scalars()
            )
            return found

    def artifact_runs(self, oid: str) -> list[tuple[str, str]]:
        """``(run_id, path)`` of every artifact stored as ``oid``."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT runs.run_id, artifacts.path FROM artifacts JOIN runs ON runs.id = artifacts.run_pk"
                " WHERE artifacts.oid = ?",
                (oid,),
            ).all()
        return [(r, p) for r, p in rows]

    # -- purging deleted runs (keel.services.tracking.TrackingService.purge_runs) ----------------
    def purge_candidates(
        self, run_ids: Sequence[str] | None, project_ids: Sequence[int] | None, before_ms: int | None
    ) -> list[PurgeCandidate]:
        """The runs a purge names (``run_ids``: every one, deleted or not, so the caller can
        refuse) or selects (deleted runs of ``project_ids``, all projects when None, deleted
        or ended before ``before_ms``), oldest first."""
        base = f"SELECT {_PURGE_COLUMNS} FROM runs JOIN projects ON projects.id = runs.project_id"  # noqa: S608
        found: list[Any] = []
        with self.db.read() as conn:
            if run_ids is not None:
                for chunk in _chunks(list(run_ids)):
                    marks = ", ".join("?" * len(chunk))
                    found += conn.execute(f"{base} WHERE runs.run_id IN ({marks})", tuple(chunk)).all()
            else:
                where: list[str] = ["runs.deleted = ?"]
                args: list[Any] = [True]
                if project_ids is not None:
                    where.append(f"runs.project_id IN ({', '.join('?' * len(project_ids)) or 'NULL'})")
                    args += list(project_ids)
                if before_ms is not None:
                    where.append("COALESCE(runs.deleted_at, runs.end_time, runs.start_time) < ?")
                    args.append(int(before_ms))
                found = conn.execute(f"{base} WHERE {' AND '.join(where)} ORDER BY runs.id", tuple(args)).all()
        out = [PurgeCandidate(int(r[0]), str(r[1]), str(r[2]), bool(r[3]), int(r[4])) for r in found]
        if before_ms is not None:
            out = [c for c in out if c.since < before_ms]
        return out

    def versions_from_runs(self, run_ids: Sequence[str]) -> list[tuple[str, int, str]]:
        """``(model, version, run_id)`` of every model version registered from one of ``run_ids``."""
        out: list[tuple[str, int, str]] = []
        with self.db.read() as conn:
            for chunk in _chunks(list(run_ids)):
                marks = ", ".join("?" * len(chunk))
                out += [
                    (str(name), int(version), str(run))
                    for name, version, run in conn.execute(
                        "SELECT registered_models.name, model_versions.version, model_versions.run_id"  # noqa: S608
                        " FROM model_versions JOIN registered_models ON registered_models.id = model_versions.model_id"
                        f" WHERE model_versions.run_id IN ({marks})"
                        " ORDER BY registered_models.name, model_versions.version",
                        tuple(chunk),
                    ).all()
                ]
        return out

    def runs_with_calls(self, run_ids: Sequence[str]) -> list[str]:
        """Those of ``run_ids`` with recorded LLM calls."""
        out: list[str] = []
        with self.db.read() as conn:
            for chunk in _chunks(list(run_ids)):
                marks = ", ".join("?" * len(chunk))
                out += [
                    str(r)
                    for r in conn.execute(
                        f"SELECT DISTINCT run_id FROM llm_calls WHERE run_id IN ({marks})",  # noqa: S608
                        tuple(chunk),
                    ).scalars()
                ]
        return sorted(out)

    def artifacts_of(self, pks: Sequence[int]) -> list[tuple[str, int, int]]:
        """``(oid, size, created_at)`` of every artifact row of the runs ``pks``."""
        out: list[tuple[str, int, int]] = []
        with self.db.read() as conn:
            for chunk in _chunks(list(pks)):
                marks = ", ".join("?" * len(chunk))
                out += [
                    (str(o), int(s), int(c))
                    for o, s, c in conn.execute(
                        f"SELECT oid, size, created_at FROM artifacts WHERE run_pk IN ({marks})",  # noqa: S608
                        tuple(chunk),
                    ).all()
                ]
        return out

    def purge(self, pks: Sequence[int], audit: dict[str, Any] | None = None) -> PurgeResult:
        """Remove the runs ``pks`` that are still deleted, with every row of theirs, in one
        transaction (with the audit row: ``audit`` holds :func:`keel.meta.erasures.record`'s
        fields but the counts).

        The runs are claimed first with an update that keeps them deleted (it takes their row
        locks on PostgreSQL): a run restored meanwhile is left alone, and a restore that comes
        after finds no run."""
        result = PurgeResult()
        with self.db.write() as conn:
            claimed: list[int] = []
            for chunk in _chunks(list(pks)):
                marks = ", ".join("?" * len(chunk))
                rows = conn.execute(
                    f"UPDATE runs SET deleted = ? WHERE id IN ({marks}) AND deleted = ? RETURNING id, run_id",  # noqa: S608
                    (True, *chunk, True),
                ).all()
                claimed += [int(r[0]) for r in rows]
                result.run_ids += [str(r[1]) for r in rows]
            for chunk in _chunks(claimed):
                marks = ", ".join("?" * len(chunk))
                result.artifacts += [
                    (str(o), int(s), int(c))
                    for o, s, c in conn.execute(
                        f"SELECT oid, size, created_at FROM artifacts WHERE run_pk IN ({marks})",  # noqa: S608
                        tuple(chunk),
                    ).all()
                ]
                result.outputs += [
                    (str(k), str(i), str(v))
                    for k, i, v in conn.execute(
                        "SELECT DISTINCT entity_kind, entity_id, entity_version FROM lineage"  # noqa: S608
                        f" WHERE direction = 'output' AND run_pk IN ({marks})",
                        tuple(chunk),
                    ).all()
                ]
                for table in _RUN_TABLES:
                    conn.execute(f"DELETE FROM {table} WHERE run_pk IN ({marks})", tuple(chunk))  # noqa: S608
                conn.execute(f"DELETE FROM runs WHERE id IN ({marks})", tuple(chunk))  # noqa: S608
            if audit is not None:
                n = len(result.run_ids)
                result.audit_id = erasures.record(conn, kind="runs", matched=n, deleted=n, **audit)
        for run_id in result.run_ids:
            self._pks.pop(run_id, None)
        return result

    def note_objects(self, audit_id: int, objects_removed: int, bytes_freed: int) -> None:
        """Add the objects a purge removed after its rows were committed to its audit row."""
        with self.db.write() as conn:
            erasures.update_objects(conn, audit_id, objects_removed, bytes_freed)
