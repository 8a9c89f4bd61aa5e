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
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from keel.core.batch import MAX_ENTITY_ID_LENGTH, WriteBatch
from keel.core.entities import RunRecord, new_run_id, now_ms
from keel.core.filters import Field, OrderBy, check_query
from keel.core.limits import MAX_SORT_KEYS
from keel.core.names import check_name, mlflow_keys
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
from keel.integrations.mlflow_rest.validation import check_key_name, invalid_value
from keel.meta import mlflow as mlflow_rows
from keel.services.tracking import DEFAULT_PROJECT, MAX_PAGE, TrackingService, random_run_name

__all__ = ["MlflowTracking", "view_flags"]

_EXPERIMENT_ATTRIBUTES = ("name", "experiment_id", "creation_time", "last_update_time", "lifecycle_stage")
_RUN_NAME_TAG = "mlflow.runName"
_PARENT_TAG = "mlflow.parentRunId"
# MLflow's batch limits and dataset field sizes (mlflow.utils.validation).
_MAX_BATCH = {"metrics": 1000, "params": 100, "tags": 100}
_MAX_BATCH_ENTITIES = 1000
_DATASET_LIMITS = {"name": 500, "digest": 36, "source": 65535, "schema": 1048575, "profile": 16777215}
_INPUT_TAG_LIMITS = {"key": 255, "value": 500}


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
        self._default_seen = False  # project 'default' exists (it is never renamed, nor named so by a rename)

    # -- ids: read each time, never cached (another process may rename a project: keel.meta.projects) --

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
        name = self.tracking.repo.project_name(int(text))
        if name is None:
            raise NotFound(f"no experiment with id {text}", "list them: mlflow.search_experiments()")
        return name

    def _ensure_default(self) -> None:
        if self._default_seen:
            return
        with self._lock:
            if self._default_seen:
                return
            try:
                self.tracking.repo.project_ids([DEFAULT_PROJECT])
            except NotFound:
                try:
                    self.tracking.create_project(DEFAULT_PROJECT)
                except AlreadyExists:
                    pass
            self._default_seen = True

    # -- experiments -------------------------------------------------------------------
    def _experiments(self) -> list[dict[str, Any]]:
        """Every project as an MLflow experiment row (plain values, for filtering)."""
        self._ensure_default()
        with self.db.read() as conn:
            rows = mlflow_rows.experiments(conn)
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
        for key in tags:
            check_key_name(key, "tag", "key")
        created = self.tracking.create_project(project)
        now = now_ms()
        with self.db.write() as conn:
            mlflow_rows.add_experiment(conn, created.id, json.dumps(dict(tags)), now)
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
                merged[check_key_name(key, "tag", "key")] = str(value)
        with self.db.write() as conn:
            mlflow_rows.set_experiment(conn, row["pk"], stage or row["lifecycle_stage"], json.dumps(merged), now_ms())

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
            tags=[(run_id, check_key_name(k, "tag", "key"), str(v)) for k, v in plain.items()],
            lineage=[(run_id, "input", "run", parent, "", "parent", start)] if parent else [],
        )
        with mlflow_keys():  # MLflow's key rules on the MLflow API
            self.tracking.write_batch(batch)
        record = RunRecord(run_id, project, name, "running", start, parent_id=parent, tags=plain)
        return run_json(record, self.experiment_id(project))

    def run(self, run_id: str) -> RunRecord:
        """A keel run by its MLflow (= keel) id (a full id is read without resolving a prefix)."""
        if len(run_id) == 32:
            return self.tracking.repo.get_run(run_id)
        return self.tracking.get_run(run_id)

    def run_json(self, record: RunRecord) -> dict[str, Any]:
        """MLflow's ``Run`` with each metric's latest step and timestamp, and its dataset inputs."""
        summaries = self.tracking.repo.metric_summaries(record.run_id)
        metrics = [(s.key, s.latest, s.step, s.timestamp) for s in summaries]
        return self._with_inputs(
            [run_json(record, self.experiment_id(record.project), metrics)], self.dataset_inputs([record.run_id])
        )[0]

    @staticmethod
    def _with_inputs(found: list[dict[str, Any]], inputs: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        for run in found:
            listed = inputs.get(run["info"]["run_id"])
            if listed:
                run["inputs"] = {"dataset_inputs": listed}
        return found

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
            mlflow_rows.rename_run(conn, run_id, name)

    def log_batch(
        self,
        run_id: str,
        metrics: Iterable[Mapping[str, Any]],
        params: Iterable[Mapping[str, Any]],
        tag_items: Iterable[Mapping[str, Any]],
        single: bool = False,
    ) -> None:
        """MLflow's ``log-batch`` (and, ``single``, ``log-metric``/``log-parameter``/``set-tag``)
        as one keel write batch (one transaction), by MLflow's rules: its names for keys
        (``-inf_metric`` is a metric name), its batch limits, a timestamp required and not
        negative. A param logged again with another value is refused, as MLflow refuses it.
        """
        metrics, params, tag_items = list(metrics), list(params), list(tag_items)
        for kind, items in (("metrics", metrics), ("params", params), ("tags", tag_items)):
            if len(items) > _MAX_BATCH[kind]:
                raise InvalidInput(_too_many(kind, _MAX_BATCH[kind], len(items)))
        total = len(metrics) + len(params) + len(tag_items)
        if total > _MAX_BATCH_ENTITIES:
            raise InvalidInput(_too_many("metrics, params, and tags", _MAX_BATCH_ENTITIES, total))
        batch = WriteBatch()
        now = now_ms()
        names: dict[Any, str] = {}  # the same few keys come in every row: checked once each
        for index, m in enumerate(metrics):
            path = "" if single else f"metrics[{index}]"
            raw_key = m.get("key")
            key = names.get(raw_key) if isinstance(raw_key, str) else None
            if key is None:
                key = names[raw_key] = check_key_name(raw_key, "metric", _at(path, "name"))
            value = _double(m.get("value"))
            stamp = _long(m.get("timestamp"), now)
            if value is None:
                raise InvalidInput(
                    invalid_value(
                        _at(path, "value"),
                        m.get("value"),
                        f"(timestamp={stamp}). Please specify value as a valid double (64-bit floating point)",
                    )
                )
            if stamp is None or stamp < 0:
                raise InvalidInput(
                    invalid_value(
                        _at(path, "timestamp"),
                        m.get("timestamp"),
                        f"metric '{key}' (value={value}). Timestamp must be a nonnegative long (64-bit integer) ",
                    )
                )
            step = _long(m.get("step"), 0)
            if step is None:
                raise InvalidInput(
                    invalid_value(
                        _at(path, "step"),
                        m.get("step"),
                        f"metric '{key}' (value={value}). Step must be a valid long (64-bit integer).",
                    )
                )
            batch.metrics.append((run_id, key, metric_value(key, value), step, stamp))
        param_list = []
        for index, p in enumerate(params):
            key = check_key_name(p.get("key"), "param", "key" if single else f"params[{index}].key")
            param_list.append((key, p.get("value")))
        keys = [key for key, _value in param_list]
        if len(set(keys)) != len(keys):
            repeated = sorted({key for key in keys if keys.count(key) > 1})
            raise InvalidInput(
                f"Duplicate parameter keys have been submitted: {repeated}. Please ensure the request contains "
                "only one param value per param key."
            )
        if param_list:
            stored = self.tracking.repo.params_of(run_id)
            for key, value in param_list:
                text_value = "" if value is None else str(value)
                with mlflow_keys():  # encode_param checks the key by the rules of the API in use
                    vtype, text = encode_param(key, text_value)
                old = stored.get(key)
                if old is not None and old != (vtype, text) and str(decode_param(*old)) != text_value:
                    raise InvalidInput(
                        f"changing param values is not allowed: param {key!r} of run {run_id} is "
                        f"{decode_param(*old)!r}, not {text_value!r}",
                        "params are fixed once logged: log a new key",
                    )
                batch.params.append((run_id, key, vtype, text, False))
        for index, t in enumerate(tag_items):
            key = check_key_name(t.get("key"), "tag", "key" if single else f"tags[{index}].key")
            text = "" if t.get("value") is None else str(t.get("value"))
            if key == _RUN_NAME_TAG:
                self.rename_run(run_id, text)
            else:
                batch.tags.append((run_id, key, text))
        with mlflow_keys():  # MLflow's key rules on the MLflow API
            self.tracking.write_batch(batch)

    def delete_tag(self, run_id: str, key: str) -> None:
        """Remove one tag of a run (and from the run's summary, in the same transaction)."""
        with self.db.write() as conn:
            found = mlflow_rows.run_summary(conn, run_id)
            if found is None:
                raise NotFound(f"no run with id {run_id!r}", "check the run id")
            pk, summary = found
            if not mlflow_rows.delete_run_tag(conn, pk, key):
                raise NotFound(
                    f"No tag with name: {key} in run with id {run_id}", "see its tags: MlflowClient().get_run(run_id)"
                )
            doc = json.loads(summary or "{}")
            doc.get("tags", {}).pop(key, None)
            mlflow_rows.set_run_summary(conn, pk, json.dumps(doc, separators=(",", ":"), sort_keys=True))
            self.tracking.repo.reseal(conn, pk)  # a finished run's digest follows its tags

    def log_inputs(self, run_id: str, datasets: Iterable[Mapping[str, Any]]) -> None:
        """MLflow dataset inputs: a lineage edge ``dataset:<name>@<digest>`` of the run, and
        MLflow's fields (source, schema, profile, input tags) for ``runs/get``. As in MLflow,
        a dataset already logged in the experiment keeps its first source, schema and
        profile, and an input the run already has keeps its first tags."""
        now = now_ms()
        chosen: dict[tuple[str, str], dict[str, Any]] = {}
        for item in datasets:
            if not isinstance(item, Mapping):
                raise InvalidInput("a dataset input must be an object", 'send {"dataset": {...}, "tags": [...]}')
            found = _dataset_input(item)
            chosen.setdefault((found["name"], found["digest"]), found)
        if not chosen:
            return
        with self.db.read() as conn:
            pk, known, present, logged = mlflow_rows.dataset_input_state(conn, run_id, [n for n, _d in chosen])
        first: dict[tuple[str, str], Any] = {}
        for row in known:
            first.setdefault((row.name, row.digest), row)
        rows, edges = [], []
        for key, found in chosen.items():
            if key in logged:
                continue
            edges.append((run_id, "input", "dataset", key[0], key[1], "mlflow", now))
            if key in present:  # written by an attempt whose lineage write failed
                continue
            same = first.get(key)
            if same is not None:  # the experiment's dataset of that name and digest, as first logged
                found.update(source_type=same.source_type, source=same.source, schema=same.schema, profile=same.profile)
            rows.append({**found, "run_pk": pk, "tags": json.dumps(found["tags"]), "created_at": now})
        if rows:  # first: the lineage edge makes the input visible, with these fields
            with self.db.write() as conn:
                mlflow_rows.add_dataset_inputs(conn, rows)
        if edges:
            self.tracking.write_batch(WriteBatch(lineage=edges))

    def dataset_inputs(self, run_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """MLflow's ``dataset_inputs`` of each run: those logged through MLflow with their
        fields, and the datasets keel logged (``source_type`` ``keel``, the source their
        lineage reference)."""
        if not run_ids:
            return {}
        out: dict[str, list[dict[str, Any]]] = {}
        found = mlflow_rows.dataset_inputs(self.db, run_ids)
        for run_id, name, digest, source_type, source, schema, profile, tag_text in found:
            dataset: dict[str, Any] = {"name": name, "digest": digest}
            if source_type is None:  # logged by keel: no MLflow fields
                dataset.update(source_type="keel", source=f"dataset:{name}@{digest}" if digest else f"dataset:{name}")
                item: dict[str, Any] = {"dataset": dataset}
            else:
                dataset.update(source_type=source_type, source=source)
                dataset.update({k: v for k, v in (("schema", schema), ("profile", profile)) if v})
                input_tags = json.loads(tag_text or "[]")
                item = {"tags": input_tags, "dataset": dataset} if input_tags else {"dataset": dataset}
            out.setdefault(run_id, []).append(item)
        return out

    def metric_history(
        self, run_id: str, key: str, max_results: Any = None, page_token: Any = None
    ) -> tuple[list[dict[str, Any]], str]:
        """A page of one metric's values in MLflow's ``Metric`` shape and order (timestamp,
        step, value), and the next page's token (``""`` on the last page); every value when
        ``max_results`` is not given, as MLflow answers."""
        if max_results is not None and max_results != "":
            size = _long(max_results, None)
            if size is None or size <= 0:
                raise InvalidInput(
                    f"Invalid value {max_results} for parameter 'max_results' supplied. It must be a positive integer."
                )
        else:
            size = None
        points = self.tracking.repo.metric_history(run_id, key)
        points.sort(key=lambda m: (m.timestamp, m.step, math.isnan(m.value), 0.0 if math.isnan(m.value) else m.value))
        rows = [{"key": key, "value": m.value, "step": m.step, "timestamp": m.timestamp} for m in points]
        if size is None:
            return rows, ""
        return page_of(rows, size, page_token or None, limit=max(size, 1))

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
        order = _mlflow_order(run_order_by(order_by))
        check_query(node, order)
        records, token = self.tracking.search_parsed(
            list(project_names), node, order, limit, page_token or None, include_deleted, only_deleted
        )
        ids = {name: self.experiment_id(name) for name in {r.project for r in records}}
        found = [run_json(r, ids[r.project]) for r in records]
        return self._with_inputs(found, self.dataset_inputs([r.run_id for r in records])), token


_START_TIME = Field("attributes", "start_time")


def _mlflow_order(order: list[OrderBy]) -> list[OrderBy]:
    """MLflow's order of runs: the clauses given, then the newest start first (unless ordered
    by start time already), then the run id, so runs that started together page alike."""
    tail = [] if any(c.field == _START_TIME for c in order) else [OrderBy(_START_TIME, False)]
    tail.append(OrderBy(Field("attributes", "run_id"), True))
    return order + tail[: max(MAX_SORT_KEYS - len(order), 0)]


def _at(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _too_many(kind: str, limit: int, count: int) -> str:
    return (
        f"A batch logging request can contain at most {limit} {kind}. Got {count} {kind}. Please split up "
        f"{kind} across multiple requests and try again."
    )


def _double(value: Any) -> float | None:
    """A metric value as MLflow's JSON parse reads a double (numbers, their text, true/false)."""
    if isinstance(value, bool | int | float):
        try:
            return float(value)
        except OverflowError:
            return None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _long(value: Any, default: int | None) -> int | None:
    """A 64-bit integer as MLflow's JSON parse reads one (numbers, whole floats, their text);
    ``default`` when absent, None when not an integer."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and " " not in value:
        try:
            number = int(value)
        except ValueError:
            try:
                as_float = float(value)
            except ValueError:
                return None
            if not as_float.is_integer():
                return None
            number = int(as_float)
    else:
        return None
    return number if -(2**63) <= number < 2**63 else None


def _dataset_input(item: Mapping[str, Any]) -> dict[str, Any]:
    """One MLflow ``DatasetInput`` checked by MLflow's rules, as a row's fields."""
    dataset = item.get("dataset")
    if not isinstance(dataset, Mapping):
        raise InvalidInput("Dataset cannot be None", 'send {"dataset": {"name", "digest", "source_type", "source"}}')
    fields: dict[str, Any] = {}
    for name in ("name", "digest", "source_type", "source", "schema", "profile"):
        value = dataset.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidInput(invalid_value(f"dataset.{name}", value), "dataset fields are text")
        fields[name] = value
    for name in ("name", "digest", "source_type", "source"):
        fields[name] = fields[name] or ""
    if not fields["name"]:
        raise InvalidInput("Dataset name cannot be None", "name the dataset")
    for name, limit in _DATASET_LIMITS.items():
        if fields[name] is not None and len(fields[name]) > limit:
            raise InvalidInput(f"'{name}' exceeds the maximum length of {limit} characters")
    if len(fields["name"]) > MAX_ENTITY_ID_LENGTH:
        raise InvalidInput(
            f"dataset name {fields['name'][:80]!r}... is longer than {MAX_ENTITY_ID_LENGTH} characters",
            f"keel's lineage names a dataset in at most {MAX_ENTITY_ID_LENGTH} characters",
        )
    input_tags = []
    for tag in item.get("tags") or []:
        if not isinstance(tag, Mapping) or tag.get("key") is None:
            raise InvalidInput("InputTag key cannot be None", 'send [{"key": ..., "value": ...}]')
        if tag.get("value") is None:
            raise InvalidInput("InputTag value cannot be None", 'send [{"key": ..., "value": ...}]')
        key, value = str(tag["key"]), str(tag["value"])
        for what, text in (("key", key), ("value", value)):
            if len(text) > _INPUT_TAG_LIMITS[what]:
                raise InvalidInput(f"'{what}' exceeds the maximum length of {_INPUT_TAG_LIMITS[what]} characters")
        input_tags.append({"key": key, "value": value})
    fields["tags"] = input_tags
    return fields
