"""MLflow 3's logged models as keel use cases.

A *logged model* (``m-<32 hex>``, what ``mlflow.<flavor>.log_model`` and
``mlflow.set_active_model`` create) is a versioned artifact set of an experiment's
project, with params, tags, metrics and the run that produced it:

- its row is ``mlflow_logged_models`` (name, type, source run, status, lifecycle, params
  and tags); its id never changes and is never reused;
- its files are what MLflow's artifact proxy keeps under its artifact location
  ``mlflow-artifacts:/<experiment>/models/<id>/artifacts`` (``mlflow_artifacts`` rows,
  content-addressed objects on disk or S3, counted as referenced by verify and gc);
- the run that produced it records it as an output (lineage ``logged_model:<id>``, role
  ``source``; ``log_outputs`` adds ``step <n>`` edges, which MLflow's ``run.outputs`` lists);
- metrics logged with its ``model_id`` (``log_metric``/``log_batch``) are its metrics;
- registering it (``register_model("runs:/<run>/<name>")`` or ``models:/m-<id>``) makes a
  keel model version whose source is ``models:/m-<id>`` and whose run is its source run
  (see :mod:`keel.server.mlflow.logged_models`).

Every function answers MLflow's JSON shapes (``LoggedModel``: ``info`` and ``data``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keel.core.batch import WriteBatch
from keel.core.entities import now_ms
from keel.core.filters import And, Comparison, Field, Node, evaluate, parse_filter
from keel.errors import InvalidInput, NotFound
from keel.integrations.mlflow_rest.paging import page_of, page_size
from keel.meta.logged_models import LoggedModelRows
from keel.services.auth import Principal, require
from keel.services.mlflow_tracking import MlflowTracking
from keel.services.tracking import random_run_name

__all__ = [
    "LOGGED_MODEL_KIND",
    "MlflowLoggedModels",
    "ModelRow",
    "is_logged_model_id",
    "logged_model_uri_id",
]

#: The lineage kind of a logged model (``logged_model:m-<32 hex>``).
LOGGED_MODEL_KIND = "logged_model"
_ID = re.compile(r"m-[0-9a-f]{32}")
_URI = re.compile(r"models:/(m-[0-9a-f]{32})/?")
#: MLflow's LoggedModelStatus: proto number <-> name.
_STATUS = {
    0: "LOGGED_MODEL_STATUS_UNSPECIFIED",
    1: "LOGGED_MODEL_PENDING",
    2: "LOGGED_MODEL_READY",
    3: "LOGGED_MODEL_UPLOAD_FAILED",
}
_STATUS_NUMBER = {name: number for number, name in _STATUS.items()}
_PENDING = 1
_BAD_NAME_CHARS = ("/", ":", ".", "%", '"', "'")
_DEFAULT_PAGE = 100  # MLflow's SEARCH_LOGGED_MODEL_MAX_RESULTS_DEFAULT
_MAX_PAGE = 1000
_MODEL_VERSIONS_TAG = "mlflow.modelVersions"
#: Filterable and orderable attributes: MLflow's name (and aliases) -> the row's key.
_ATTRIBUTES = {
    "model_id": "model_id",
    "name": "name",
    "model_type": "model_type",
    "source_run_id": "source_run_id",
    "status": "status",
    "experiment_id": "experiment_id",
    "creation_time": "creation_timestamp_ms",
    "creation_timestamp": "creation_timestamp_ms",
    "creation_timestamp_ms": "creation_timestamp_ms",
    "last_updated_timestamp": "last_updated_timestamp_ms",
    "last_updated_timestamp_ms": "last_updated_timestamp_ms",
}
_PREFIXES = {"attributes": "attributes", "metrics": "metrics", "params": "params", "tags": "tags"}


def is_logged_model_id(value: Any) -> bool:
    """True for an MLflow logged-model id ``m-<32 hex>``."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def logged_model_uri_id(uri: Any) -> str | None:
    """The model id of ``models:/m-<32 hex>``, else None."""
    found = _URI.fullmatch(uri) if isinstance(uri, str) else None
    return found.group(1) if found else None


def _not_found(model_id: str) -> NotFound:
    return NotFound(
        f"Logged model with ID '{str(model_id)[:100]}' not found.",
        "list them: mlflow.search_logged_models(experiment_ids=[...])",
    )


def _pairs(items: Any, what: str) -> dict[str, str]:
    """MLflow's ``[{key, value}]`` as a dict (the last value of a repeated key)."""
    if items is None:
        return {}
    if not isinstance(items, list):
        raise InvalidInput(f"{what} must be a list of {{key, value}}", 'send [{"key": ..., "value": ...}]')
    out: dict[str, str] = {}
    for item in items:
        if not isinstance(item, Mapping) or not isinstance(item.get("key"), str) or not item["key"]:
            raise InvalidInput(f"each of {what} needs a key", 'send [{"key": ..., "value": ...}]')
        value = item.get("value")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise InvalidInput(f"{what} {item['key'][:100]!r} has a value that is not text", "send text values")
        out[item["key"]] = "" if value is None else str(value)
    return out


def _status(value: Any) -> int:
    """MLflow's status as JSON sends it (the enum's name, or its number)."""
    if isinstance(value, str) and value in _STATUS_NUMBER:
        return _STATUS_NUMBER[value]
    if isinstance(value, int) and not isinstance(value, bool) and value in _STATUS:
        return value
    if isinstance(value, str) and value.isdigit() and int(value) in _STATUS:
        return int(value)
    raise InvalidInput(f"Unknown model status: {str(value)[:60]}", f"use one of {', '.join(_STATUS.values())}")


@dataclass(frozen=True)
class ModelRow:
    """A stored logged model."""

    pk: int
    model_id: str
    project: str
    experiment_id: str
    name: str
    model_type: str
    source_run_id: str | None
    status: int
    status_message: str | None
    lifecycle_stage: str
    params: dict[str, str]
    tags: dict[str, str]
    created_at: int
    updated_at: int

    @property
    def artifact_path(self) -> str:
        """Where MLflow's artifact proxy keeps its files: ``<experiment>/models/<id>/artifacts``."""
        return f"{self.experiment_id}/models/{self.model_id}/artifacts"

    @property
    def artifact_uri(self) -> str:
        """MLflow's ``artifact_uri`` of the model."""
        return f"mlflow-artifacts:/{self.artifact_path}"

    @property
    def deleted(self) -> bool:
        """True once deleted (MLflow's lifecycle stage)."""
        return self.lifecycle_stage == "deleted"


class MlflowLoggedModels:
    """MLflow's logged models over keel's projects, runs, lineage and object store."""

    def __init__(self, tracking: MlflowTracking) -> None:
        self.tracking = tracking
        self.db = tracking.db
        self.rows = LoggedModelRows(self.db)

    # -- rows ------------------------------------------------------------------------------
    def _row(self, found: Any) -> ModelRow:
        return ModelRow(
            pk=int(found.id),
            model_id=found.model_id,
            project=found.project,
            experiment_id=self.tracking.experiment_id(found.project),
            name=found.name,
            model_type=found.model_type or "",
            source_run_id=found.source_run_id,
            status=int(found.status),
            status_message=found.status_message,
            lifecycle_stage=found.lifecycle_stage,
            params=json.loads(found.params or "{}"),
            tags=json.loads(found.tags or "{}"),
            created_at=int(found.created_at),
            updated_at=int(found.updated_at),
        )

    def row(self, model_id: Any, allow_deleted: bool = False) -> ModelRow:
        """The stored model ``model_id`` (NotFound for an unknown one, or a deleted one unless
        ``allow_deleted``)."""
        if not is_logged_model_id(model_id):
            raise _not_found(str(model_id))
        found = self.rows.model(model_id)
        if found is None:
            raise _not_found(model_id)
        row = self._row(found)
        if row.deleted and not allow_deleted:
            raise _not_found(model_id)
        return row

    def _metrics(self, pks: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
        if not pks:
            return {}
        found = self.rows.metrics(pks)
        out: dict[int, list[dict[str, Any]]] = {}
        for r in found:
            metric: dict[str, Any] = {
                "key": r.key,
                "value": float("nan") if r.value is None else r.value,
                "timestamp": int(r.timestamp),
                "step": int(r.step),
                "run_id": r.run_id,
                "model_id": r.model_id,
            }
            if r.dataset_name:
                metric["dataset_name"] = r.dataset_name
            if r.dataset_digest:
                metric["dataset_digest"] = r.dataset_digest
            out.setdefault(int(r.model_pk), []).append(metric)
        return out

    @staticmethod
    def to_json(row: ModelRow, metrics: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
        """MLflow's ``LoggedModel`` of ``row`` (empty lists left out, as MLflow's JSON does)."""
        info: dict[str, Any] = {
            "model_id": row.model_id,
            "experiment_id": row.experiment_id,
            "name": row.name,
            "creation_timestamp_ms": row.created_at,
            "last_updated_timestamp_ms": row.updated_at,
            "artifact_uri": row.artifact_uri,
            "status": _STATUS.get(row.status, _STATUS[0]),
            "model_type": row.model_type,
            "source_run_id": row.source_run_id or "",
        }
        if row.status_message:
            info["status_message"] = row.status_message
        if row.tags:
            info["tags"] = [{"key": k, "value": v} for k, v in sorted(row.tags.items())]
        data: dict[str, Any] = {}
        if row.params:
            data["params"] = [{"key": k, "value": v} for k, v in sorted(row.params.items())]
        if metrics:
            data["metrics"] = list(metrics)
        return {"info": info, "data": data}

    def model_json(self, row: ModelRow) -> dict[str, Any]:
        """MLflow's ``LoggedModel`` of ``row`` with its metrics."""
        return self.to_json(row, self._metrics([row.pk]).get(row.pk, []))

    # -- writes ------------------------------------------------------------------------------
    def create(
        self,
        project: str,
        name: Any,
        model_type: Any,
        source_run_id: str | None,
        params: Any,
        tags: Any,
        link: bool,
    ) -> ModelRow:
        """A new PENDING logged model of ``project`` (the experiment's). ``link``: the source run is
        a keel run the caller may write, which records the model as its output (lineage)."""
        if name is not None and not isinstance(name, str):
            raise InvalidInput("name must be text", "name the model")
        if name is not None and name != "" and any(c in name for c in _BAD_NAME_CHARS):
            raise InvalidInput(
                f"Invalid model name ({name[:200]!r}) provided. Model name must be a non-empty string and cannot "
                "contain the following characters: ('/', ':', '.', '%', '\"', \"'\")",
                "name the model with letters, digits, '-' and '_'",
            )
        name = name or random_run_name()
        if len(name) > 500:
            raise InvalidInput("a logged model's name is at most 500 characters", "use a shorter name")
        if model_type is not None and (not isinstance(model_type, str) or len(model_type) > 500):
            raise InvalidInput("model_type must be text of at most 500 characters", "send a short type")
        if source_run_id is not None and len(source_run_id) > 32:
            raise InvalidInput("source_run_id is at most 32 characters", "send the run's id")
        param_values, tag_values = _pairs(params, "params"), _pairs(tags, "tags")
        model_id = f"m-{uuid.uuid4().hex}"
        now = now_ms()
        project_id = self.tracking.tracking.repo.project_ids([project])[0]
        self.rows.create(
            {
                "model_id": model_id,
                "project_id": project_id,
                "name": name,
                "model_type": model_type or "",
                "source_run_id": source_run_id or None,
                "status": _PENDING,
                "lifecycle_stage": "active",
                "params": json.dumps(param_values),
                "tags": json.dumps(tag_values),
                "created_at": now,
                "updated_at": now,
            }
        )
        if link and source_run_id:
            self.record_outputs(source_run_id, [(model_id, None)])
        return self.row(model_id)

    def finalize(self, row: ModelRow, status: Any) -> ModelRow:
        """Set the model's status (READY or UPLOAD_FAILED, as ``log_model`` does at its end)."""
        self.rows.set_status(row.pk, _status(status), now_ms())
        return self.row(row.model_id)

    def delete(self, row: ModelRow) -> None:
        """Mark the model deleted (MLflow's soft delete: its id stays taken, its files stay)."""
        self.rows.set_lifecycle_stage(row.pk, "deleted", now_ms())

    def set_tags(self, row: ModelRow, tags: Any) -> None:
        """Set tags (a repeated key keeps its last value)."""
        values = _pairs(tags, "tags")
        if values:
            self._merge(row, "tags", values)

    def _merge(self, row: ModelRow, column: str, values: Mapping[str, str | None]) -> None:
        """Merge ``values`` into the JSON column, re-read inside the transaction (no update lost)."""
        self.rows.merge(row.pk, column, values, now_ms())

    def delete_tag(self, row: ModelRow, key: str) -> None:
        """Remove one tag (RESOURCE_DOES_NOT_EXIST when the model has none of that key)."""
        if key not in row.tags:
            raise NotFound(
                f"No tag with key {key[:200]!r} found for model with ID {row.model_id!r}.",
                "see its tags: mlflow.get_logged_model(model_id).tags",
            )
        self._merge(row, "tags", {key: None})

    def log_params(self, row: ModelRow, params: Any) -> None:
        """Add params; one logged already keeps its value (changing it is refused, as for runs)."""
        values = _pairs(params, "params")
        for key, value in values.items():
            old = row.params.get(key)
            if old is not None and old != value:
                raise InvalidInput(
                    f"changing param values is not allowed: param {key[:200]!r} of model {row.model_id} is "
                    f"{old[:100]!r}, not {value[:100]!r}",
                    "params are fixed once logged: log a new key",
                )
        if values:
            self._merge(row, "params", values)

    def add_model_version(self, row: ModelRow, name: str, version: int) -> None:
        """Record a registered version of the model in its ``mlflow.modelVersions`` tag, as MLflow's
        server does when the version is created (the client appends its own entry after)."""
        entry = {"name": name, "version": version}
        current = row.tags.get(_MODEL_VERSIONS_TAG)
        try:
            listed = json.loads(current) if current else []
        except ValueError:
            listed = []
        if not isinstance(listed, list):
            listed = []
        if entry not in listed:
            listed.append(entry)
        self._merge(row, "tags", {_MODEL_VERSIONS_TAG: json.dumps(listed)})

    # -- run outputs and model metrics ---------------------------------------------------------
    def record_outputs(self, run_id: str, models: Iterable[tuple[str, int | None]]) -> None:
        """The run produced these models: lineage outputs ``logged_model:<id>`` (role ``source``
        when the model is created from the run, ``step <n>`` from ``log_outputs``)."""
        now = now_ms()
        edges = [
            (run_id, "output", LOGGED_MODEL_KIND, model_id, "", "source" if step is None else f"step {step}", now)
            for model_id, step in models
        ]
        if edges:
            self.tracking.tracking.write_batch(WriteBatch(lineage=edges))

    def outputs(self, run_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """MLflow's ``model_outputs`` of each run (``{model_id, step}``, from ``log_outputs``)."""
        if not run_ids:
            return {}
        out: dict[str, list[dict[str, Any]]] = {}
        for run_id, model_id, role in self.rows.outputs(run_ids, LOGGED_MODEL_KIND):
            out.setdefault(run_id, []).append({"model_id": model_id, "step": int(role.split(" ", 1)[1])})
        return out

    def with_outputs(self, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """MLflow ``Run`` JSONs with their ``outputs.model_outputs`` (when they have any)."""
        listed = self.outputs([run["info"]["run_id"] for run in found])
        for run in found:
            outputs = listed.get(run["info"]["run_id"])
            if outputs:
                run["outputs"] = {"model_outputs": outputs}
        return found

    def new_run_metrics(self, caller: Principal, run_id: str, metrics: list[Any]) -> list[Any]:
        """The metrics a run's ``log_metric``/``log_batch`` writes to the run: all of them, except
        one logged for a model (``model_id``) that the run already has, same step, timestamp and
        value (``log_model`` logs a run's metrics again for its model; MLflow keeps such a point
        once). The models named must exist, and the caller may write their projects."""
        tagged = [m for m in metrics if isinstance(m, Mapping) and m.get("model_id")]
        if not tagged:
            return metrics
        for model_id in {str(m["model_id"]) for m in tagged}:
            row = self.row(model_id)
            if caller.rank(row.project) == 0:
                raise _not_found(model_id)
            require(caller, row.project, "writer")
        history: dict[str, set[tuple[int, int, float]]] = {}
        for key in {str(m.get("key")) for m in tagged}:
            points = self.tracking.tracking.repo.metric_history(run_id, key)
            history[key] = {(p.step, p.timestamp, p.value) for p in points}

        def known(metric: Mapping[str, Any]) -> bool:
            try:
                point = (int(metric.get("step") or 0), int(metric["timestamp"]), float(metric["value"]))
            except (KeyError, TypeError, ValueError):
                return False
            return point in history.get(str(metric.get("key")), set())

        return [m for m in metrics if not (isinstance(m, Mapping) and m.get("model_id") and known(m))]

    def log_metrics(self, run_id: str, metrics: Iterable[Any]) -> None:
        """The metrics a run logged with a ``model_id`` are the model's metrics too (a point
        already recorded for the model is kept once); the others are left out."""
        rows: dict[tuple[int, str, int, int], dict[str, Any]] = {}
        known: dict[str, ModelRow] = {}
        for metric in metrics:
            if not isinstance(metric, Mapping) or not metric.get("model_id"):
                continue
            model_id = str(metric.get("model_id"))
            if model_id not in known:
                known[model_id] = self.row(model_id)
            value = metric.get("value")
            number = float(value) if isinstance(value, int | float | str) and not isinstance(value, bool) else None
            key = (
                known[model_id].pk,
                str(metric.get("key")),
                int(metric.get("timestamp") or 0),
                int(metric.get("step") or 0),
            )
            rows[key] = {
                "model_pk": key[0],
                "key": key[1],
                "timestamp": key[2],
                "step": key[3],
                "run_id": run_id,
                "value": None if number is None or number != number else number,
                "dataset_name": metric.get("dataset_name") or None,
                "dataset_digest": metric.get("dataset_digest") or None,
            }
        self.rows.add_metrics(list(rows.values()))

    # -- search --------------------------------------------------------------------------------
    def search(
        self,
        experiments: Mapping[str, str],
        filter_string: Any,
        datasets: Any,
        max_results: Any,
        order_by: Any,
        page_token: Any,
    ) -> tuple[list[dict[str, Any]], str]:
        """MLflow's ``search_logged_models`` over the projects of ``experiments`` (experiment id ->
        project): active models matching the filter (``AND`` of comparisons on attributes,
        ``metrics.*``, ``params.*``, ``tags.*``), ordered, paged."""
        size = page_size(max_results if max_results not in (None, "", 0) else None, _DEFAULT_PAGE, _MAX_PAGE)
        wanted = _dataset_filters(datasets)
        checks = _comparisons(filter_string)
        order = _order(order_by)
        names = list(dict.fromkeys(experiments.values()))
        if not names:
            return [], ""
        rows = [self._row(r) for r in self.rows.active_models(names)]
        metrics = self._metrics([r.pk for r in rows])
        items = []
        for row in rows:
            listed = metrics.get(row.pk, [])
            if wanted:
                listed_in = [m for m in listed if any(_on_dataset(m, d) for d in wanted)]
                if not listed_in:
                    continue
            else:
                listed_in = listed
            plain = {
                "model_id": row.model_id,
                "name": row.name,
                "model_type": row.model_type,
                "source_run_id": row.source_run_id or "",
                "status": row.status,
                "experiment_id": row.experiment_id,
                "creation_timestamp_ms": row.created_at,
                "last_updated_timestamp_ms": row.updated_at,
            }
            if all(_holds(check, plain, row, listed_in) for check in checks):
                items.append((row, plain, listed))
        items.sort(key=lambda item: item[0].model_id)
        items.sort(key=lambda item: -item[0].created_at)
        for field_name, ascending, dataset in reversed(order):
            items = _sorted(items, field_name, ascending, dataset)
        page, token = page_of(items, size, page_token if isinstance(page_token, str) else None, limit=_MAX_PAGE)
        return [self.to_json(row, listed) for row, _plain, listed in page], token


def _dataset_filters(datasets: Any) -> list[dict[str, str | None]]:
    if not datasets:
        return []
    if not isinstance(datasets, list):
        raise InvalidInput("datasets must be a list", 'send [{"dataset_name": ...}]')
    out = []
    for item in datasets:
        if not isinstance(item, Mapping) or not item.get("dataset_name"):
            raise InvalidInput("`dataset_name` in the `datasets` clause must be specified.", "name the dataset")
        out.append({"dataset_name": str(item["dataset_name"]), "dataset_digest": item.get("dataset_digest") or None})
    return out


def _on_dataset(metric: Mapping[str, Any], dataset: Mapping[str, str | None]) -> bool:
    if metric.get("dataset_name") != dataset["dataset_name"]:
        return False
    return dataset["dataset_digest"] is None or metric.get("dataset_digest") == dataset["dataset_digest"]


def _comparisons(text: Any) -> list[Comparison]:
    """MLflow's logged-model filter: comparisons joined by AND, read by keel's filter parser."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return []
    if not isinstance(text, str):
        raise InvalidInput("filter must be text", "e.g. \"name = 'model' AND metrics.accuracy > 0.9\"")
    node: Node = parse_filter(text, _PREFIXES, "attributes")
    items = list(node.items) if isinstance(node, And) else [node]
    out = []
    for item in items:
        if not isinstance(item, Comparison):
            raise InvalidInput(
                f"Invalid filter string: {text[:200]!r}. Expected a list of comparisons separated by 'AND' "
                "(e.g. 'metrics.loss > 0.1 AND params.lr = 0.01').",
                "join comparisons with AND",
            )
        field = item.field
        if field.kind in (None, "attributes"):
            key = _ATTRIBUTES.get(field.key.strip("`"))
            if key is None:
                raise InvalidInput(
                    f"Invalid attribute {field.key[:100]!r} in the filter",
                    f"filter on metrics.*, params.*, tags.* or one of: {', '.join(sorted(_ATTRIBUTES))}",
                )
            field = Field("attributes", key)
        out.append(Comparison(field, item.op, item.value))
    return out


def _constant(value: Any) -> Any:
    return lambda _field: value


def _holds(check: Comparison, plain: Mapping[str, Any], row: ModelRow, metrics: Sequence[Mapping[str, Any]]) -> bool:
    kind, key = check.field.kind, check.field.key
    if kind == "metrics":  # any logged value of the metric (on the datasets asked for) matches
        values = [m["value"] for m in metrics if m["key"] == key]
        return any(evaluate(check, _constant(v)) for v in values)
    if kind == "params":
        return key in row.params and evaluate(check, lambda _f: row.params[key])
    if kind == "tags":
        return key in row.tags and evaluate(check, lambda _f: row.tags[key])
    return evaluate(check, lambda _f: plain.get(key))


def _order(order_by: Any) -> list[tuple[str, bool, dict[str, str | None] | None]]:
    """MLflow's structured ``order_by`` (``{field_name, ascending, dataset_name, dataset_digest}``)."""
    if not order_by:
        return []
    if not isinstance(order_by, list):
        raise InvalidInput("order_by must be a list", 'send [{"field_name": "metrics.accuracy", "ascending": false}]')
    out: list[tuple[str, bool, dict[str, str | None] | None]] = []
    for item in order_by:
        if not isinstance(item, Mapping) or not isinstance(item.get("field_name"), str):
            raise InvalidInput("each order_by needs a field_name", 'send {"field_name": "creation_timestamp"}')
        name = item["field_name"]
        ascending = item.get("ascending", True) not in (False, "false", "False")
        if "." in name:
            entity, key = name.split(".", 1)
            if entity != "metrics":
                raise InvalidInput(
                    f"Invalid order by field name: {name[:100]}. Only metrics are supported.", "order by metrics.<key>"
                )
            dataset: dict[str, str | None] = {
                "dataset_name": item.get("dataset_name") or None,
                "dataset_digest": item.get("dataset_digest") or None,
            }
            out.append((f"metrics.{key}", ascending, dataset))
        else:
            key = _ATTRIBUTES.get(name)
            if key is None:
                raise InvalidInput(
                    f"Invalid order by field name: {name[:100]}", f"order by one of {', '.join(_ATTRIBUTES)}"
                )
            out.append((key, ascending, None))
    return out


def _sorted(items: list[Any], field_name: str, ascending: bool, dataset: Mapping[str, Any] | None) -> list[Any]:
    """``items`` stably sorted by one field, models without a value last (as MLflow sorts)."""

    def value(item: Any) -> Any:
        _row, plain, listed = item
        if not field_name.startswith("metrics."):
            return plain.get(field_name)
        key = field_name[len("metrics.") :]
        found = [
            m
            for m in listed
            if m["key"] == key
            and (dataset is None or dataset["dataset_name"] is None or m.get("dataset_name") == dataset["dataset_name"])
            and (
                dataset is None
                or dataset["dataset_digest"] is None
                or m.get("dataset_digest") == dataset["dataset_digest"]
            )
        ]
        if not found:
            return None
        latest = max(found, key=lambda m: (m["timestamp"], m["step"]))
        return latest["value"]

    present = [item for item in items if value(item) is not None]
    missing = [item for item in items if value(item) is None]
    present.sort(key=value, reverse=not ascending)
    return present + missing
