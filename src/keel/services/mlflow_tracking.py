"""MLflow's tracking API (experiments, runs, logging, search) as keel use cases.

The MLflow REST layer of the server (:mod:`keel.server.mlflow`) calls these; they
speak MLflow's JSON shapes (built by :mod:`keel.integrations.mlflow_rest.entities`)
and write through keel's own paths (:meth:`TrackingService.write_batch`), so what
MLflow logs is an ordinary keel run and every keel run is visible to MLflow.

Mapping (see ``docs/mlflow.md``):

- experiment <-> project. The experiment id is the project's id; experiment ``"0"``
  (``Default``) is project ``default``. MLflow-only fields (lifecycle stage,
  experiment tags) are rows of ``mlflow_experiments``.
- run <-> run, same 32-hex id. ``run_name`` / the ``mlflow.runName`` tag is the run
  name, ``mlflow.parentRunId`` its parent; other tags (``mlflow.user``,
  ``mlflow.source.*``) are kept as keel tags. MLflow's lifecycle stage is keel's
  soft delete.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update

from keel.core.batch import WriteBatch
from keel.core.entities import RunRecord, new_run_id, now_ms
from keel.core.filters import check_query
from keel.core.names import check_key, check_name
from keel.core.values import decode_param, encode_param, metric_value
from keel.errors import AlreadyExists, InvalidInput, NotFound
from keel.integrations.mlflow_rest.entities import (
    DEFAULT_EXPERIMENT_ID,
    DEFAULT_EXPERIMENT_NAME,
    experiment_json,
    run_json,
)
from keel.integrations.mlflow_rest.filters import KEEL_STATUS, order_rows, row_filter, run_filter, run_order_by
from keel.integrations.mlflow_rest.paging import page_of, page_size
from keel.meta.schema import mlflow_experiments, projects, runs, tags
from keel.services.tracking import DEFAULT_PROJECT, MAX_PAGE, TrackingService, random_run_name

__all__ = ["MlflowTracking", "view_flags"]

_EXPERIMENT_ATTRIBUTES = ("name", "experiment_id", "creation_time", "last_update_time", "lifecycle_stage")
_RUN_NAME_TAG = "mlflow.runName"
_PARENT_TAG = "mlflow.parentRunId"


def view_flags(view_type: Any) -> tuple[bool, bool]:
    """MLflow's ``run_view_type`` / ``view_type`` (name or number) as ``(include_deleted, only_deleted)``."""
    text = str(view_type or "ACTIVE_ONLY").upper()
    flags = {
        "ACTIVE_ONLY": (False, False),
        "1": (False, False),
        "DELETED_ONLY": (True, True),
        "2": (True, True),
        "ALL": (True, False),
        "3": (True, False),
    }
    if text not in flags:
        raise InvalidInput(f"invalid view type {view_type!r}", "use ACTIVE_ONLY, DELETED_ONLY or ALL")
    return flags[text]


class MlflowTracking:
    """MLflow experiments and runs over keel projects and runs."""

    def __init__(self, tracking: TrackingService) -> None:
        self.tracking = tracking
        self.db = tracking.store.db
        self._lock = threading.Lock()
        self._names: dict[int, str] = {}  # project id -> name; projects are never renamed

    # -- ids ----------------------------------------------------------------------------
    def _project_names(self, refresh: bool = False) -> dict[int, str]:
        with self._lock:
            if refresh or not self._names:
                with self.db.read() as conn:
                    self._names = {int(pk): name for pk, name in conn.execute(select(projects.c.id, projects.c.name))}
            return self._names

    def experiment_id(self, project: str) -> str:
        """The MLflow experiment id of keel project ``project``."""
        if project == DEFAULT_PROJECT:
            return DEFAULT_EXPERIMENT_ID
        return str(self.tracking.repo.project_ids([project])[0])

    def project(self, experiment_id: Any) -> str:
        """The keel project of MLflow experiment ``experiment_id`` (NotFound if none)."""
        text = str(experiment_id).strip()
        if text == DEFAULT_EXPERIMENT_ID:
            self._ensure_default()
            return DEFAULT_PROJECT
        if not text.isdigit():
            raise InvalidInput(f"invalid experiment id {experiment_id!r}", "experiment ids are numbers: 0, 1, 2")
        pk = int(text)
        name = self._project_names().get(pk) or self._project_names(refresh=True).get(pk)
        if name is None:
            raise NotFound(f"no experiment with id {text}", "list them: mlflow.search_experiments()")
        return name

    def _ensure_default(self) -> None:
        if DEFAULT_PROJECT in self._project_names().values():
            return
        try:
            self.tracking.create_project(DEFAULT_PROJECT)
        except AlreadyExists:
            pass
        self._project_names(refresh=True)

    # -- experiments -------------------------------------------------------------------
    def _experiments(self) -> list[dict[str, Any]]:
        """Every project as an MLflow experiment row (plain values, for filtering)."""
        self._ensure_default()
        query = select(
            projects.c.id,
            projects.c.name,
            projects.c.created_at,
            mlflow_experiments.c.lifecycle_stage,
            mlflow_experiments.c.tags,
            mlflow_experiments.c.updated_at,
        ).select_from(projects.outerjoin(mlflow_experiments, mlflow_experiments.c.project_id == projects.c.id))
        with self.db.read() as conn:
            rows = conn.execute(query).all()
        out = []
        for pk, name, created, stage, tag_text, updated in rows:
            default = name == DEFAULT_PROJECT
            out.append(
                {
                    "experiment_id": DEFAULT_EXPERIMENT_ID if default else str(pk),
                    "pk": int(pk),
                    "name": DEFAULT_EXPERIMENT_NAME if default else name,
                    "project": name,
                    "creation_time": int(created),
                    "last_update_time": int(updated or created),
                    "lifecycle_stage": stage or "active",
                    "tags": json.loads(tag_text or "{}"),
                }
            )
        return out

    @staticmethod
    def _json(row: Mapping[str, Any]) -> dict[str, Any]:
        return experiment_json(
            row["experiment_id"],
            row["name"],
            row["creation_time"],
            row["last_update_time"],
            row["lifecycle_stage"],
            row["tags"],
        )

    def _row(self, experiment_id: Any) -> dict[str, Any]:
        project = self.project(experiment_id)
        for row in self._experiments():
            if row["project"] == project:
                return row
        raise NotFound(f"no experiment with id {experiment_id}", "list them: mlflow.search_experiments()")

    def get_experiment(self, experiment_id: Any) -> dict[str, Any]:
        """MLflow's ``Experiment`` for an id, with its project name under ``project``."""
        row = self._row(experiment_id)
        return {**self._json(row), "project": row["project"]}

    def get_experiment_by_name(self, name: str) -> dict[str, Any]:
        """MLflow's ``Experiment`` by name (``Default`` is project ``default``)."""
        for row in self._experiments():
            if row["name"] == name:
                return {**self._json(row), "project": row["project"]}
        raise NotFound(f"no experiment named {name!r}", "create it: mlflow.set_experiment(name)")

    def create_experiment(self, name: Any, tags: Mapping[str, str]) -> str:
        """Create a project for a new experiment; its id."""
        if not isinstance(name, str) or not name:
            raise InvalidInput("an experiment needs a name", "mlflow.create_experiment('my-experiment')")
        project = DEFAULT_PROJECT if name == DEFAULT_EXPERIMENT_NAME else check_name(name, "experiment name")
        created = self.tracking.create_project(project)
        now = now_ms()
        with self.db.write() as conn:
            conn.execute(
                insert(mlflow_experiments).values(
                    project_id=created.id, lifecycle_stage="active", tags=json.dumps(dict(tags)), updated_at=now
                )
            )
        self._project_names(refresh=True)
        return self.experiment_id(project)

    def _update_experiment(
        self, experiment_id: Any, stage: str | None = None, tags: Mapping[str, str | None] | None = None
    ) -> None:
        row = self._row(experiment_id)
        merged = {**row["tags"]}
        for key, value in (tags or {}).items():
            if value is None:
                if key not in merged:
                    raise NotFound(f"experiment {experiment_id} has no tag {key!r}", "see its tags")
                del merged[key]
            else:
                merged[check_key(key, "tag key")] = str(value)
        values = {
            "lifecycle_stage": stage or row["lifecycle_stage"],
            "tags": json.dumps(merged),
            "updated_at": now_ms(),
        }
        with self.db.write() as conn:
            changed = conn.execute(
                update(mlflow_experiments).where(mlflow_experiments.c.project_id == row["pk"]).values(**values)
            ).rowcount
            if not changed:
                conn.execute(insert(mlflow_experiments).values(project_id=row["pk"], **values))

    def set_experiment_lifecycle(self, experiment_id: Any, stage: str) -> None:
        """Delete (``deleted``) or restore (``active``) an experiment; its runs are untouched."""
        self._update_experiment(experiment_id, stage=stage)

    def set_experiment_tag(self, experiment_id: Any, key: str, value: str | None) -> None:
        """Set (or, with ``None``, delete) an experiment tag."""
        self._update_experiment(experiment_id, tags={key: value})

    def search_experiments(
        self,
        readable: Iterable[str] | None,
        view_type: Any,
        filter_string: str | None,
        order_by: Sequence[str] | None,
        max_results: Any,
        page_token: str | None,
    ) -> tuple[list[dict[str, Any]], str]:
        """A page of experiments the caller can read (``readable``: project names, None = all)."""
        include_deleted, only_deleted = view_flags(view_type)
        allowed = None if readable is None else set(readable)
        keep = row_filter(filter_string, _EXPERIMENT_ATTRIBUTES)

        def visible(row: Mapping[str, Any]) -> bool:
            if allowed is not None and row["project"] not in allowed:
                return False
            deleted = row["lifecycle_stage"] == "deleted"
            return deleted if only_deleted else (include_deleted or not deleted)

        rows = [row for row in self._experiments() if visible(row)]
        rows = [row for row in rows if keep(row)]
        ordered = order_rows(rows, order_by, _EXPERIMENT_ATTRIBUTES, ["creation_time DESC", "experiment_id"])
        page, token = page_of(ordered, max_results or 1000, page_token)
        return [self._json(row) for row in page], token

    # -- runs -----------------------------------------------------------------------------
    def create_run(
        self,
        project: str,
        run_name: str | None,
        start_time: int | None,
        tag_items: Mapping[str, str],
        user_id: str | None,
    ) -> dict[str, Any]:
        """Create a running run in ``project`` (one write); MLflow's ``Run``."""
        plain = dict(tag_items)
        name = run_name or plain.pop(_RUN_NAME_TAG, None) or random_run_name()
        plain.pop(_RUN_NAME_TAG, None)
        name = check_name(name, "run name")
        parent = plain.pop(_PARENT_TAG, None)
        if parent:
            parent = self.tracking.resolve_run_id(parent)
        if user_id and "mlflow.user" not in plain:
            plain["mlflow.user"] = user_id
        run_id = new_run_id()
        start = int(start_time) if start_time else now_ms()
        batch = WriteBatch(
            new_runs=[(run_id, project, name, start, parent, "{}")],
            tags=[(run_id, check_key(k, "tag key"), str(v)) for k, v in plain.items()],
            lineage=[(run_id, "input", "run", parent, "", "parent", start)] if parent else [],
        )
        self.tracking.write_batch(batch)
        record = RunRecord(run_id, project, name, "running", start, parent_id=parent, tags=plain)
        return run_json(record, self.experiment_id(project))

    def run(self, run_id: str) -> RunRecord:
        """A keel run by its MLflow (= keel) id (a full id is read without resolving a prefix)."""
        if len(run_id) == 32:
            return self.tracking.repo.get_run(run_id)
        return self.tracking.get_run(run_id)

    def run_json(self, record: RunRecord) -> dict[str, Any]:
        """MLflow's ``Run`` with each metric's latest step and timestamp."""
        summaries = self.tracking.repo.metric_summaries(record.run_id)
        metrics = [(s.key, s.latest, s.step, s.timestamp) for s in summaries]
        return run_json(record, self.experiment_id(record.project), metrics)

    def run_info(self, record: RunRecord) -> dict[str, Any]:
        """MLflow's ``RunInfo`` of a run."""
        info: dict[str, Any] = run_json(record, self.experiment_id(record.project), ())["info"]
        return info

    def update_run(
        self, record: RunRecord, status: str | None, end_time: int | None, run_name: str | None
    ) -> RunRecord:
        """Change a run's status (finish, fail, kill, resume) and/or its name; the run as it is now."""
        if run_name and run_name != record.name:
            self.rename_run(record.run_id, run_name)
            record = dataclasses.replace(record, name=run_name)
        if not status:
            return record
        keel_status = KEEL_STATUS.get(str(status).upper())
        if keel_status is None:
            raise InvalidInput(f"invalid run status {status!r}", f"use one of {', '.join(KEEL_STATUS)}")
        if keel_status == "running":
            if record.status != "running":
                self.tracking.resume_run(record.run_id)
            return dataclasses.replace(record, status="running", end_time=None)
        end = int(end_time) if end_time else now_ms()
        self.tracking.write_batch(WriteBatch(run_ends=[(record.run_id, keel_status, end, None)]))
        return dataclasses.replace(record, status=keel_status, end_time=end)

    def rename_run(self, run_id: str, name: str) -> None:
        """Give a run a new name (MLflow lets a run's name change; keel keeps one name per run)."""
        check_name(name, "run name")
        with self.db.write() as conn:
            conn.execute(update(runs).where(runs.c.run_id == run_id).values(name=name))

    def log_batch(
        self,
        run_id: str,
        metrics: Iterable[Mapping[str, Any]],
        params: Iterable[Mapping[str, Any]],
        tag_items: Iterable[Mapping[str, Any]],
    ) -> None:
        """MLflow's ``log-batch`` as one keel write batch (one transaction).

        A param logged again with another value is refused, as MLflow refuses it.
        """
        batch = WriteBatch()
        now = now_ms()
        keys: set[str] = set()
        for m in metrics:
            key = m.get("key")
            if key not in keys:
                key = check_key(key, "metric key")
                keys.add(key)
            key = str(key)
            value = m.get("value")
            if isinstance(value, str):  # proto JSON spells non-finite numbers as text
                value = float(value)
            if value is None:
                raise InvalidInput(f"metric {key!r} has no value", "send key, value, timestamp and step")
            batch.metrics.append(
                (run_id, key, metric_value(key, value), int(m.get("step") or 0), int(m.get("timestamp") or now))
            )
        param_list = [(check_key(p.get("key"), "param key"), p.get("value")) for p in params]
        if param_list:
            stored = self.tracking.repo.params_of(run_id)
            for key, value in param_list:
                text_value = "" if value is None else str(value)
                vtype, text = encode_param(key, text_value)
                old = stored.get(key)
                if old is not None and old != (vtype, text) and str(decode_param(*old)) != text_value:
                    raise InvalidInput(
                        f"changing param values is not allowed: param {key!r} of run {run_id} is "
                        f"{decode_param(*old)!r}, not {text_value!r}",
                        "params are fixed once logged: log a new key",
                    )
                batch.params.append((run_id, key, vtype, text, False))
        for t in tag_items:
            key, value = t.get("key"), "" if t.get("value") is None else str(t.get("value"))
            if key == _RUN_NAME_TAG:
                self.rename_run(run_id, value)
            else:
                batch.tags.append((run_id, check_key(key, "tag key"), value))
        self.tracking.write_batch(batch)

    def delete_tag(self, run_id: str, key: str) -> None:
        """Remove one tag of a run (and from the run's summary, in the same transaction)."""
        pk_query = select(runs.c.id, runs.c.summary).where(runs.c.run_id == run_id)
        with self.db.write() as conn:
            row = conn.execute(pk_query).first()
            if row is None:
                raise NotFound(f"no run with id {run_id!r}", "check the run id")
            removed = conn.execute(delete(tags).where(tags.c.run_pk == row.id, tags.c.key == key)).rowcount
            if not removed:
                raise NotFound(f"run {run_id} has no tag {key!r}", "see its tags: mlflow.get_run(run_id)")
            doc = json.loads(row.summary or "{}")
            doc.get("tags", {}).pop(key, None)
            conn.execute(
                update(runs)
                .where(runs.c.id == row.id)
                .values(summary=json.dumps(doc, separators=(",", ":"), sort_keys=True))
            )
            self.tracking.repo.reseal(conn, row.id)  # a finished run's digest follows its tags

    def log_inputs(self, run_id: str, datasets: Iterable[Mapping[str, Any]]) -> None:
        """MLflow dataset inputs as lineage edges ``dataset:<name>@<digest>`` of the run."""
        now = now_ms()
        edges = []
        for item in datasets:
            dataset = item.get("dataset") or {}
            name = dataset.get("name")
            if not name:
                raise InvalidInput("a dataset input needs a name", "log_input(dataset) with a named dataset")
            edges.append((run_id, "input", "dataset", str(name), str(dataset.get("digest") or ""), "mlflow", now))
        if edges:
            self.tracking.write_batch(WriteBatch(lineage=edges))

    def metric_history(self, run_id: str, key: str) -> list[dict[str, Any]]:
        """Every value of one metric, in MLflow's ``Metric`` shape."""
        return [
            {"key": key, "value": m.value, "step": m.step, "timestamp": m.timestamp}
            for m in self.tracking.repo.metric_history(run_id, key)
        ]

    def search_runs(
        self,
        project_names: Sequence[str],
        filter_string: str | None,
        view_type: Any,
        max_results: Any,
        order_by: Sequence[str] | None,
        page_token: str | None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """MLflow's ``search-runs``: the filter and order translated, run in SQL by keel.

        Every bound (page size, filter, sort keys, joins) is checked before any SQL runs.
        """
        include_deleted, only_deleted = view_flags(view_type)
        limit = page_size(max_results or None, 1000, MAX_PAGE)
        if page_token is not None and not isinstance(page_token, str):
            raise InvalidInput(f"invalid page_token {page_token!r}", "pass the next_page_token of a previous page")
        node = run_filter(filter_string)
        order = run_order_by(order_by)
        check_query(node, order)
        records, token = self.tracking.search_parsed(
            list(project_names), node, order, limit, page_token or None, include_deleted, only_deleted
        )
        ids = {name: self.experiment_id(name) for name in {r.project for r in records}}
        return [run_json(r, ids[r.project]) for r in records], token
