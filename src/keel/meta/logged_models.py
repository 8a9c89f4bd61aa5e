"""The rows of MLflow 3's logged models: ``mlflow_logged_models`` (one per ``m-<32 hex>``, with
its project's name when read) and ``mlflow_logged_model_metrics``, and the lineage edges
``logged_model:<id>`` a run records for the models it produced. The use cases are
:mod:`keel.services.mlflow_models`.

Model rows are read with :data:`MODEL_COLUMNS` plus ``project`` (the project's name);
``params`` and ``tags`` are JSON text here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from keel.meta.dbapi import ConstraintViolation
from keel.meta.engine import Database

__all__ = ["MODEL_COLUMNS", "LoggedModelRows"]

_CHUNK = 900  # values per IN (...) list
#: The columns of a model's row (and ``project``, its project's name, when read).
MODEL_COLUMNS = (
    "id",
    "model_id",
    "project_id",
    "name",
    "model_type",
    "source_run_id",
    "status",
    "status_message",
    "lifecycle_stage",
    "params",
    "tags",
    "created_at",
    "updated_at",
)
_METRIC_COLUMNS = ("model_pk", "key", "timestamp", "step", "run_id", "value", "dataset_name", "dataset_digest")
_SELECT_MODELS = (
    f"SELECT {', '.join('m.' + c for c in MODEL_COLUMNS)}, p.name AS project "  # noqa: S608 - constant names
    "FROM mlflow_logged_models m JOIN projects p ON p.id = m.project_id"
)
_SQL_MODEL = _SELECT_MODELS + " WHERE m.model_id = ?"
_SQL_INSERT = (
    "INSERT INTO mlflow_logged_models (model_id, project_id, name, model_type, source_run_id, status, "
    "lifecycle_stage, params, tags, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQL_SET_STATUS = "UPDATE mlflow_logged_models SET status = ?, updated_at = ? WHERE id = ?"
_SQL_SET_STAGE = "UPDATE mlflow_logged_models SET lifecycle_stage = ?, updated_at = ? WHERE id = ?"
# The JSON columns a merge may change (the column name is interpolated: only these).
_JSON_COLUMNS = ("params", "tags")
_SQL_INSERT_METRIC = (
    "INSERT INTO mlflow_logged_model_metrics (model_pk, key, timestamp, step, run_id, value, dataset_name, "
    "dataset_digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


class LoggedModelRows:
    """The logged-model rows of one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def model(self, model_id: str) -> Any:
        """The row of model ``model_id`` (with ``project``), or None."""
        with self.db.read() as conn:
            return conn.execute(_SQL_MODEL, (model_id,)).first()

    def active_models(self, projects: Sequence[str]) -> list[Any]:
        """The rows (with ``project``) of the models of projects named ``projects`` not deleted."""
        found: list[Any] = []
        with self.db.read() as conn:
            for part in _chunks(list(projects)):
                found += conn.execute(
                    f"{_SELECT_MODELS} WHERE p.name IN ({_marks(len(part))}) AND m.lifecycle_stage <> 'deleted'",
                    tuple(part),
                ).all()
        return found

    def metrics(self, model_pks: Sequence[int]) -> list[Any]:
        """The metric rows of models (by key, timestamp, step within each model), each with
        its model's ``model_id``."""
        columns = ", ".join("m." + c for c in _METRIC_COLUMNS)
        found: list[Any] = []
        with self.db.read() as conn:
            for part in _chunks(list(model_pks)):
                found += conn.execute(
                    f"SELECT {columns}, g.model_id FROM mlflow_logged_model_metrics m "  # noqa: S608 - placeholders
                    "JOIN mlflow_logged_models g ON g.id = m.model_pk "
                    f"WHERE m.model_pk IN ({_marks(len(part))}) ORDER BY m.key, m.timestamp, m.step",
                    tuple(part),
                ).all()
        return found

    def create(self, values: Mapping[str, Any]) -> None:
        """Add a model (``values``: every column but ``id`` and ``status_message``)."""
        columns = (
            "model_id",
            "project_id",
            "name",
            "model_type",
            "source_run_id",
            "status",
            "lifecycle_stage",
            "params",
            "tags",
            "created_at",
            "updated_at",
        )
        with self.db.write() as conn:
            conn.execute(_SQL_INSERT, tuple(values[c] for c in columns))

    def set_status(self, pk: int, status: int, now: int) -> None:
        """Set a model's status."""
        with self.db.write() as conn:
            conn.execute(_SQL_SET_STATUS, (status, now, pk))

    def set_lifecycle_stage(self, pk: int, stage: str, now: int) -> None:
        """Set a model's lifecycle stage (``deleted``: MLflow's soft delete)."""
        with self.db.write() as conn:
            conn.execute(_SQL_SET_STAGE, (stage, now, pk))

    def merge(self, pk: int, column: str, values: Mapping[str, str | None], now: int) -> None:
        """Merge ``values`` into the JSON object of ``column`` (``params`` or ``tags``; a None
        value removes the key), read again inside the transaction: no concurrent update is lost."""
        if column not in _JSON_COLUMNS:
            raise ValueError(f"not a JSON column of a logged model: {column!r}")
        with self.db.write() as conn:
            text = conn.execute(f"SELECT {column} FROM mlflow_logged_models WHERE id = ?", (pk,)).scalar_one()  # noqa: S608
            current = json.loads(text or "{}")
            for key, value in values.items():
                if value is None:
                    current.pop(key, None)
                else:
                    current[key] = value
            conn.execute(
                f"UPDATE mlflow_logged_models SET {column} = ?, updated_at = ? WHERE id = ?",  # noqa: S608
                (json.dumps(current), now, pk),
            )

    def add_metrics(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Add metric rows (every column); a point the model has already (same key, timestamp,
        step and run) is kept once. A row refused by a constraint (its model gone meanwhile)
        is left out, the others written."""
        values = [tuple(row[c] for c in _METRIC_COLUMNS) for row in rows]
        if not values:
            return
        try:
            with self.db.write() as conn:
                conn.executemany(_SQL_INSERT_METRIC, values)
        except ConstraintViolation:
            for value in values:
                try:
                    with self.db.write() as conn:
                        conn.execute(_SQL_INSERT_METRIC, value)
                except ConstraintViolation:
                    continue

    def outputs(self, run_ids: Sequence[str], kind: str) -> list[tuple[str, str, str]]:
        """``(run_id, model id, role)`` of the runs' output edges of kind ``kind`` whose role is
        ``step <n>`` (what ``log_outputs`` records), each run's in the order recorded."""
        found: list[tuple[str, str, str]] = []
        with self.db.read() as conn:
            for part in _chunks(list(run_ids)):
                found += conn.execute(
                    "SELECT r.run_id, l.entity_id, l.role FROM lineage l JOIN runs r ON r.id = l.run_pk "  # noqa: S608
                    f"WHERE r.run_id IN ({_marks(len(part))}) AND l.direction = 'output' AND l.entity_kind = ? "
                    "AND l.role LIKE 'step %' ORDER BY l.id",
                    (*part, kind),
                ).all()
        return found
