"""Tracking rows: projects, runs, params, metrics, tags, artifacts, lineage.

Reads go through SQLAlchemy Core; the hot write path (a :class:`WriteBatch`)
goes straight to the driver's ``executemany`` inside one transaction, which
is what lets a batch of 100k metrics land at several hundred thousand rows
per second on SQLite.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from keel.core.batch import WriteBatch
from keel.core.entities import (
    Artifact,
    EntityRef,
    LineageEdge,
    Metric,
    MetricSummary,
    Project,
    RunRecord,
    now_ms,
)
from keel.core.filters import Node, OrderBy
from keel.core.values import decode_param
from keel.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from keel.meta.engine import Database
from keel.meta.schema import artifacts, latest_metrics, lineage, metrics, params, projects, runs, tags
from keel.meta.search import compile_search

__all__ = ["TrackingStore"]

_IN_CHUNK = 500  # ids per IN (...) list

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
_INSERT_METRIC = "INSERT INTO metrics (run_pk, key, step, timestamp, value, is_nan) VALUES (?, ?, ?, ?, ?, ?)"
_INSERT_PARAM = "INSERT INTO params (run_pk, key, vtype, value) VALUES (?, ?, ?, ?) ON CONFLICT (run_pk, key) DO NOTHING"
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
    "INSERT INTO lineage (run_pk, direction, entity_kind, entity_id, entity_version, role, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_END_RUN = "UPDATE runs SET status = ?, end_time = ?, error = ? WHERE id = ?"


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _aggregate_latest(rows: list[tuple[str, str, float, int, int]]) -> dict[tuple[str, str], list[Any]]:
    """Per (run, key): [value, is_nan, step, timestamp, min, max, count] of one batch."""
    agg: dict[tuple[str, str], list[Any]] = {}
    for run_id, key, value, step, ts in rows:
        nan = value != value
        entry = agg.get((run_id, key))
        if entry is None:
            plain = None if nan else value
            agg[(run_id, key)] = [plain, nan, step, ts, plain, plain, 1]
            continue
        if step > entry[2] or (step == entry[2] and ts >= entry[3]):
            entry[0], entry[1], entry[2], entry[3] = (None if nan else value), nan, step, ts
        if not nan:
            if entry[4] is None or value < entry[4]:
                entry[4] = value
            if entry[5] is None or value > entry[5]:
                entry[5] = value
        entry[6] += 1
    return agg


class TrackingStore:
    """The tracking tables of one database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pks: dict[str, int] = {}  # run_id -> runs.id; immutable, so safe to cache
        self._lock = threading.Lock()
        self._sql = {name: db.sql(text) for name, text in {
            "metric": _INSERT_METRIC, "latest": _UPSERT_LATEST, "param": _INSERT_PARAM,
            "param_overwrite": _UPSERT_PARAM, "tag": _UPSERT_TAG, "artifact": _UPSERT_ARTIFACT,
            "edge": _INSERT_EDGE, "end": _END_RUN,
        }.items()}

    # -- projects ---------------------------------------------------------
    def ensure_project(self, conn: Any, name: str) -> int:
        """The id of project ``name``, creating it if needed (inside ``conn``'s transaction)."""
        found = conn.execute(select(projects.c.id).where(projects.c.name == name)).scalar()
        if found is not None:
            return int(found)
        try:
            with conn.begin_nested():
                result = conn.execute(insert(projects).values(name=name, created_at=now_ms()))
            return int(result.inserted_primary_key[0])
        except SAIntegrityError:  # created concurrently by another process
            return int(conn.execute(select(projects.c.id).where(projects.c.name == name)).scalar_one())

    def create_project(self, name: str, description: str = "") -> Project:
        """Create a project; raise AlreadyExists if the name is taken."""
        with self.db.write() as conn:
            if conn.execute(select(projects.c.id).where(projects.c.name == name)).scalar() is not None:
                raise AlreadyExists(f"project {name!r} exists already", "use it, or choose another name")
            now = now_ms()
            result = conn.execute(insert(projects).values(name=name, description=description, created_at=now))
            return Project(name, int(result.inserted_primary_key[0]), now, description)

    def list_projects(self) -> list[tuple[Project, int]]:
        """Every project with its number of (not deleted) runs, by name."""
        count = (
            select(func.count(runs.c.id))
            .where(runs.c.project_id == projects.c.id, runs.c.deleted.is_(False))
            .scalar_subquery()
        )
        with self.db.read() as conn:
            rows = conn.execute(select(projects, count.label("n")).order_by(projects.c.name)).all()
        return [(Project(r.name, r.id, r.created_at, r.description), int(r.n)) for r in rows]

    def project_ids(self, names: Iterable[str]) -> list[int]:
        """Ids of the named projects; raise NotFound for an unknown one."""
        names = list(names)
        with self.db.read() as conn:
            found = dict(conn.execute(select(projects.c.name, projects.c.id).where(projects.c.name.in_(names))).all())
        missing = [n for n in names if n not in found]
        if missing:
            raise NotFound(f"no project named {missing[0]!r}", "list projects with 'keel projects list'")
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
        """Insert a new running run (and its parent edge) in one transaction."""
        with self.db.write() as conn:
            if parent_id is not None:
                parent_pk = conn.execute(select(runs.c.id).where(runs.c.run_id == parent_id)).scalar()
                if parent_pk is None:
                    raise NotFound(f"parent run {parent_id} does not exist", "pass the id of an existing run")
            project_id = self.ensure_project(conn, project)
            result = conn.execute(
                insert(runs).values(
                    run_id=run_id, project_id=project_id, name=name, status="running",
                    start_time=start_time, parent_id=parent_id,
                    context=json.dumps(context or {}, sort_keys=True, default=str),
                )
            )
            pk = int(result.inserted_primary_key[0])
            if tag_rows:
                conn.exec_driver_sql(self._sql["tag"], [(pk, k, v) for k, v in tag_rows])
            if parent_id is not None:
                conn.exec_driver_sql(
                    self._sql["edge"], [(pk, "input", "run", parent_id, "", "parent", start_time)]
                )
        self._pks[run_id] = pk

    def resolve_run_id(self, prefix: str) -> str:
        """The full run id for a unique prefix (4+ hex digits) or a full id."""
        text = (prefix or "").strip().lower()
        if len(text) < 4 or any(c not in "0123456789abcdef" for c in text):
            raise InvalidInput(
                f"invalid run id {prefix!r}", "give a run id or a unique prefix of at least 4 hex digits"
            )
        if text in self._pks:
            return text
        with self.db.read() as conn:
            found = conn.execute(
                select(runs.c.run_id).where(runs.c.run_id.like(text + "%")).limit(2)
            ).scalars().all()
        if not found:
            raise NotFound(f"no run with id {prefix!r}", "list runs with 'keel runs list'")
        if len(found) > 1:
            raise InvalidInput(f"run id prefix {prefix!r} is ambiguous", "type more characters of the id")
        return str(found[0])

    def _pk_map(self, conn: Any, run_ids: Iterable[str]) -> dict[str, int]:
        wanted = [r for r in set(run_ids) if r not in self._pks]
        for chunk in _chunks(wanted):
            for run_id, pk in conn.execute(select(runs.c.run_id, runs.c.id).where(runs.c.run_id.in_(chunk))):
                self._pks[run_id] = int(pk)
        missing = [r for r in wanted if r not in self._pks]
        if missing:
            raise NotFound(f"run {missing[0]} does not exist", "start a run before logging to it")
        return self._pks

    def write_batch(self, batch: WriteBatch) -> None:
        """Write everything in ``batch`` in one transaction."""
        if not len(batch):
            return
        sql = self._sql
        with self.db.write() as conn:
            pks = self._pk_map(conn, batch.run_ids())
            if batch.params:
                plain = [(pks[r], k, t, v) for r, k, t, v, overwrite in batch.params if not overwrite]
                forced = [(pks[r], k, t, v) for r, k, t, v, overwrite in batch.params if overwrite]
                if plain:
                    conn.exec_driver_sql(sql["param"], plain)
                if forced:
                    conn.exec_driver_sql(sql["param_overwrite"], forced)
            if batch.tags:
                conn.exec_driver_sql(sql["tag"], [(pks[r], k, v) for r, k, v in batch.tags])
            if batch.metrics:
                conn.exec_driver_sql(
                    sql["metric"],
                    [
                        (pks[r], k, s, t, None, True) if v != v else (pks[r], k, s, t, v, False)
                        for r, k, v, s, t in batch.metrics
                    ],
                )
                latest = _aggregate_latest(batch.metrics)
                conn.exec_driver_sql(
                    sql["latest"], [(pks[r], k, *entry) for (r, k), entry in latest.items()]
                )
            if batch.artifacts:
                conn.exec_driver_sql(sql["artifact"], [(pks[r], *rest) for r, *rest in batch.artifacts])
            if batch.lineage:
                conn.exec_driver_sql(sql["edge"], [(pks[r], *rest) for r, *rest in batch.lineage])
            if batch.run_ends:
                conn.exec_driver_sql(
                    sql["end"], [(status, end, error, pks[r]) for r, status, end, error in batch.run_ends]
                )

    def set_deleted(self, run_id: str, deleted: bool) -> None:
        """Soft-delete or restore a run (its children are untouched)."""
        with self.db.write() as conn:
            result = conn.execute(update(runs).where(runs.c.run_id == run_id).values(deleted=deleted))
            if result.rowcount == 0:
                raise NotFound(f"no run with id {run_id!r}", "list runs with 'keel runs list'")

    def set_status(self, run_id: str, status: str, end_time: int | None, error: str | None = None) -> None:
        """Change a run's status directly (used when resuming a run)."""
        with self.db.write() as conn:
            conn.execute(update(runs).where(runs.c.run_id == run_id).values(status=status, end_time=end_time, error=error))

    # -- reading runs -----------------------------------------------------
    def _records(self, conn: Any, pks: Sequence[int]) -> list[RunRecord]:
        """Full records for ``pks`` (in that order): 4 queries, whatever the count."""
        if not pks:
            return []
        base: dict[int, Any] = {}
        p: dict[int, dict[str, Any]] = {pk: {} for pk in pks}
        m: dict[int, dict[str, float]] = {pk: {} for pk in pks}
        t: dict[int, dict[str, str]] = {pk: {} for pk in pks}
        for chunk in _chunks(list(pks)):
            rows = conn.execute(
                select(runs, projects.c.name.label("project"))
                .join(projects, projects.c.id == runs.c.project_id)
                .where(runs.c.id.in_(chunk))
            )
            for row in rows:
                base[row.id] = row
            for pk, key, vtype, value in conn.execute(
                select(params.c.run_pk, params.c.key, params.c.vtype, params.c.value).where(params.c.run_pk.in_(chunk))
            ):
                p[pk][key] = decode_param(vtype, value)
            for pk, key, value, nan in conn.execute(
                select(latest_metrics.c.run_pk, latest_metrics.c.key, latest_metrics.c.value, latest_metrics.c.is_nan)
                .where(latest_metrics.c.run_pk.in_(chunk))
            ):
                m[pk][key] = float("nan") if nan else float(value)
            for pk, key, value in conn.execute(
                select(tags.c.run_pk, tags.c.key, tags.c.value).where(tags.c.run_pk.in_(chunk))
            ):
                t[pk][key] = value
        records = []
        for pk in pks:
            row = base.get(pk)
            if row is None:
                continue
            self._pks[row.run_id] = pk
            records.append(
                RunRecord(
                    run_id=row.run_id, project=row.project, name=row.name, status=row.status,
                    start_time=row.start_time, end_time=row.end_time, parent_id=row.parent_id,
                    deleted=bool(row.deleted), error=row.error, context=json.loads(row.context or "{}"),
                    params=dict(sorted(p[pk].items())), metrics=dict(sorted(m[pk].items())),
                    tags=dict(sorted(t[pk].items())),
                )
            )
        return records

    def get_run(self, run_id: str) -> RunRecord:
        """The run with this full id; raise NotFound."""
        with self.db.read() as conn:
            pk = conn.execute(select(runs.c.id).where(runs.c.run_id == run_id)).scalar()
            if pk is None:
                raise NotFound(f"no run with id {run_id!r}", "list runs with 'keel runs list'")
            return self._records(conn, [int(pk)])[0]

    def get_runs(self, run_ids: Sequence[str]) -> list[RunRecord]:
        """Several runs in the given order (unknown ids are skipped)."""
        with self.db.read() as conn:
            pks = dict(conn.execute(select(runs.c.run_id, runs.c.id).where(runs.c.run_id.in_(list(run_ids)))).all())
            return self._records(conn, [int(pks[r]) for r in run_ids if r in pks])

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
        """One page of matching runs, and whether more follow."""
        stmt = compile_search(project_ids, node, order_by, include_deleted, only_deleted)
        with self.db.read() as conn:
            pks = [int(pk) for pk in conn.execute(stmt.limit(limit + 1).offset(offset)).scalars()]
            return self._records(conn, pks[:limit]), len(pks) > limit

    def children(self, run_id: str) -> list[str]:
        """Ids of the runs whose parent is ``run_id``, oldest first."""
        with self.db.read() as conn:
            return list(conn.execute(
                select(runs.c.run_id).where(runs.c.parent_id == run_id).order_by(runs.c.start_time, runs.c.id)
            ).scalars())

    def params_of(self, run_id: str) -> dict[str, tuple[str, str]]:
        """``key -> (vtype, text)`` of a run's params (to resume it)."""
        with self.db.read() as conn:
            pk = self._pk_map(conn, [run_id])[run_id]
            rows = conn.execute(select(params.c.key, params.c.vtype, params.c.value).where(params.c.run_pk == pk))
            return {k: (t, v) for k, t, v in rows}

    # -- metrics ----------------------------------------------------------
    def metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every value of one metric, by step then time."""
        with self.db.read() as conn:
            pk = self._pk_map(conn, [run_id])[run_id]
            rows = conn.execute(
                select(metrics.c.step, metrics.c.timestamp, metrics.c.value, metrics.c.is_nan)
                .where(metrics.c.run_pk == pk, metrics.c.key == key)
                .order_by(metrics.c.step, metrics.c.timestamp)
            ).all()
        return [Metric(key, float("nan") if nan else float(v), int(s), int(ts)) for s, ts, v, nan in rows]

    def metric_summaries(self, run_id: str) -> list[MetricSummary]:
        """Latest, min, max and count of each metric of a run."""
        lm = latest_metrics
        with self.db.read() as conn:
            pk = self._pk_map(conn, [run_id])[run_id]
            rows = conn.execute(select(lm).where(lm.c.run_pk == pk).order_by(lm.c.key)).all()

        def num(value: Any) -> float:
            return float("nan") if value is None else float(value)

        return [
            MetricSummary(
                r.key, float("nan") if r.is_nan else float(r.value), int(r.step), int(r.timestamp),
                num(r.min_value), num(r.max_value), int(r.count),
            )
            for r in rows
        ]

    # -- artifacts and lineage --------------------------------------------
    def list_artifacts(self, run_id: str, prefix: str = "") -> list[Artifact]:
        """A run's artifacts under ``prefix`` (a folder path or a file path)."""
        with self.db.read() as conn:
            pk = self._pk_map(conn, [run_id])[run_id]
            query = select(artifacts).where(artifacts.c.run_pk == pk).order_by(artifacts.c.path)
            if prefix:
                query = query.where(
                    (artifacts.c.path == prefix) | artifacts.c.path.startswith(prefix.rstrip("/") + "/", autoescape=True)
                )
            rows = conn.execute(query).all()
        return [Artifact(r.path, r.oid, int(r.size), r.kind) for r in rows]

    def edges(self, run_id: str) -> list[LineageEdge]:
        """A run's lineage: what it used (inputs) and made (outputs)."""
        with self.db.read() as conn:
            pk = self._pk_map(conn, [run_id])[run_id]
            rows = conn.execute(select(lineage).where(lineage.c.run_pk == pk).order_by(lineage.c.id)).all()
        return [
            LineageEdge(run_id, r.direction, EntityRef(r.entity_kind, r.entity_id, r.entity_version), r.role, r.created_at)
            for r in rows
        ]

    def runs_with_entity(self, entity: EntityRef, direction: str) -> list[str]:
        """Ids of runs that have ``entity`` as an input or output (any version if none given)."""
        query = (
            select(runs.c.run_id)
            .join(lineage, lineage.c.run_pk == runs.c.id)
            .where(
                lineage.c.direction == direction,
                lineage.c.entity_kind == entity.kind,
                lineage.c.entity_id == entity.id,
            )
            .distinct()
        )
        if entity.version:
            query = query.where(lineage.c.entity_version == entity.version)
        with self.db.read() as conn:
            return list(conn.execute(query).scalars())

    def referenced_oids(self) -> set[str]:
        """Every object id the metadata points at (for verify and gc)."""
        with self.db.read() as conn:
            return set(conn.execute(select(artifacts.c.oid).distinct()).scalars())

    def artifact_runs(self, oid: str) -> list[tuple[str, str]]:
        """``(run_id, path)`` of every artifact stored as ``oid``."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(runs.c.run_id, artifacts.c.path).join(runs, runs.c.id == artifacts.c.run_pk).where(artifacts.c.oid == oid)
            ).all()
        return [(r, p) for r, p in rows]

    def check_param_conflicts(self, rows: Sequence[tuple[str, str, str, str, bool]]) -> None:
        """Raise Conflict if a non-overwriting param row contradicts a stored value."""
        with self.db.read() as conn:
            for run_id, key, vtype, text, overwrite in rows:
                if overwrite:
                    continue
                pk = self._pk_map(conn, [run_id])[run_id]
                stored = conn.execute(
                    select(params.c.vtype, params.c.value).where(params.c.run_pk == pk, params.c.key == key)
                ).first()
                if stored is not None and tuple(stored) != (vtype, text):
                    raise Conflict(
                        f"param {key!r} of run {run_id[:8]} is {decode_param(*stored)!r}; "
                        f"cannot change it to {decode_param(vtype, text)!r}",
                        "params are fixed once logged: log a new key, or pass overwrite=True",
                    )
