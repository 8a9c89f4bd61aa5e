"""What MLflow's tracking API reads and writes beside keel's own tracking paths: the
MLflow-only fields of experiments (``mlflow_experiments``), a run's name and tags changed
one at a time, and MLflow's fields of a run's dataset inputs (``mlflow_dataset_inputs``,
beside the lineage edges that are the inputs). The use cases are
:mod:`keel.services.mlflow_tracking`.

Functions take a connection of the caller's transaction (``db.read()`` / ``db.write()``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from keel.meta.dbapi import Connection
from keel.meta.engine import Database

__all__ = [
    "add_dataset_inputs",
    "add_experiment",
    "dataset_input_state",
    "dataset_inputs",
    "delete_run_tag",
    "experiments",
    "rename_run",
    "run_summary",
    "set_experiment",
    "set_run_summary",
]

_CHUNK = 900  # values per IN (...) list

_SQL_EXPERIMENTS = (
    "SELECT p.id, p.name, p.created_at, e.lifecycle_stage, e.tags, e.updated_at "
    "FROM projects p LEFT OUTER JOIN mlflow_experiments e ON e.project_id = p.id"
)
_SQL_ADD_EXPERIMENT = (
    "INSERT INTO mlflow_experiments (project_id, lifecycle_stage, tags, updated_at) VALUES (?, ?, ?, ?)"
)
_SQL_SET_EXPERIMENT = (
    "INSERT INTO mlflow_experiments (project_id, lifecycle_stage, tags, updated_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (project_id) DO UPDATE SET lifecycle_stage = excluded.lifecycle_stage, "
    "tags = excluded.tags, updated_at = excluded.updated_at"
)
_SQL_RENAME_RUN = "UPDATE runs SET name = ? WHERE run_id = ?"
_SQL_RUN_SUMMARY = "SELECT id, summary FROM runs WHERE run_id = ?"
_SQL_DELETE_TAG = "DELETE FROM tags WHERE run_pk = ? AND key = ?"
_SQL_SET_SUMMARY = "UPDATE runs SET summary = ? WHERE id = ?"
_SQL_RUN_PROJECT = "SELECT id, project_id FROM runs WHERE run_id = ?"
_SQL_INPUTS_OF_RUN = "SELECT name, digest FROM mlflow_dataset_inputs WHERE run_pk = ?"
_SQL_DATASET_EDGES = (
    "SELECT entity_id, entity_version FROM lineage WHERE run_pk = ? AND direction = 'input' AND entity_kind = 'dataset'"
)
_INPUT_COLUMNS = ("run_pk", "name", "digest", "source_type", "source", "schema", "profile", "tags", "created_at")
_SQL_ADD_INPUT = (
    'INSERT INTO mlflow_dataset_inputs (run_pk, name, digest, source_type, source, "schema", profile, tags, '
    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


# -- experiments ---------------------------------------------------------------------------


def experiments(conn: Connection) -> list[Any]:
    """Every project with its MLflow fields: rows ``(id, name, created_at, lifecycle_stage,
    tags, updated_at)``, the last three None for a project MLflow never changed."""
    return conn.execute(_SQL_EXPERIMENTS).all()


def add_experiment(conn: Connection, project_id: int, tags: str, now: int) -> None:
    """The MLflow fields of a new experiment (active; ``tags`` as JSON text)."""
    conn.execute(_SQL_ADD_EXPERIMENT, (project_id, "active", tags, now))


def set_experiment(conn: Connection, project_id: int, stage: str, tags: str, now: int) -> None:
    """Set an experiment's lifecycle stage and tags (JSON text), adding its row if it has none."""
    conn.execute(_SQL_SET_EXPERIMENT, (project_id, stage, tags, now))


# -- runs -------------------------------------------------------------------------------------


def rename_run(conn: Connection, run_id: str, name: str) -> None:
    """Give run ``run_id`` a new name."""
    conn.execute(_SQL_RENAME_RUN, (name, run_id))


def run_summary(conn: Connection, run_id: str) -> tuple[int, str | None] | None:
    """``(run pk, summary JSON)`` of run ``run_id``, or None when there is no such run."""
    row = conn.execute(_SQL_RUN_SUMMARY, (run_id,)).first()
    return None if row is None else (int(row.id), row.summary)


def delete_run_tag(conn: Connection, run_pk: int, key: str) -> bool:
    """Remove tag ``key`` of a run; False when the run has no such tag."""
    return bool(conn.execute(_SQL_DELETE_TAG, (run_pk, key)).rowcount)


def set_run_summary(conn: Connection, run_pk: int, summary: str) -> None:
    """Replace a run's summary (JSON text)."""
    conn.execute(_SQL_SET_SUMMARY, (summary, run_pk))


# -- dataset inputs ---------------------------------------------------------------------------


def dataset_input_state(
    conn: Connection, run_id: str, names: Sequence[str]
) -> tuple[int, list[Any], set[tuple[str, str]], set[tuple[str, str]]]:
    """What a run's new dataset inputs are checked against: ``(run pk, known, present, logged)``.

    ``known``: the MLflow fields of the inputs named ``names`` any run of the run's project
    logged (rows ``(name, digest, source_type, source, schema, profile)``, oldest first);
    ``present``: ``(name, digest)`` of the run's input rows; ``logged``: ``(name, digest)`` of
    the run's dataset lineage edges. Raises :class:`~keel.meta.dbapi.NoResult` for an unknown run.
    """
    pk, project_id = conn.execute(_SQL_RUN_PROJECT, (run_id,)).one()
    known: list[Any] = []
    unique = list(dict.fromkeys(names))
    for part in _chunks(unique):
        known += conn.execute(
            'SELECT d.name, d.digest, d.source_type, d.source, d."schema", d.profile, d.created_at '  # noqa: S608
            "FROM mlflow_dataset_inputs d JOIN runs r ON r.id = d.run_pk "
            f"WHERE r.project_id = ? AND d.name IN ({_marks(len(part))}) ORDER BY d.created_at",
            (project_id, *part),
        ).all()
    known.sort(key=lambda row: row.created_at)  # (stable: each chunk's order is kept)
    present = {(r.name, r.digest) for r in conn.execute(_SQL_INPUTS_OF_RUN, (pk,))}
    logged = {(r.entity_id, r.entity_version) for r in conn.execute(_SQL_DATASET_EDGES, (pk,))}
    return int(pk), known, present, logged


def add_dataset_inputs(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Add the MLflow fields of dataset inputs (each row: every column, ``tags`` as JSON text)."""
    conn.executemany(_SQL_ADD_INPUT, [tuple(row[c] for c in _INPUT_COLUMNS) for row in rows])


def dataset_inputs(db: Database, run_ids: Sequence[str]) -> list[tuple[Any, ...]]:
    """The dataset inputs of runs, each run's in the order logged: rows ``(run_id, name,
    digest, source_type, source, schema, profile, tags)``, the last five None for an input
    keel logged (no MLflow fields). One indexed read through a DBAPI cursor: ``runs/get``
    pays it on every call."""
    found: list[tuple[Any, ...]] = []
    with db.raw_read() as cur:
        for part in _chunks(list(run_ids)):
            cur.execute(db.sql(_dataset_inputs_sql(len(part))), tuple(part))
            found += cur.fetchall()
    return found


def _dataset_inputs_sql(n: int) -> str:
    return (
        'SELECT r.run_id, l.entity_id, l.entity_version, d.source_type, d.source, d."schema", d.profile, d.tags '
        "FROM lineage l JOIN runs r ON r.id = l.run_pk "
        "LEFT JOIN mlflow_dataset_inputs d "
        "ON d.run_pk = l.run_pk AND d.name = l.entity_id AND d.digest = l.entity_version "
        f"WHERE r.run_id IN ({_marks(n)}) AND l.direction = 'input' "  # noqa: S608 - only placeholders
        "AND l.entity_kind = 'dataset' ORDER BY l.created_at, l.id"
    )
