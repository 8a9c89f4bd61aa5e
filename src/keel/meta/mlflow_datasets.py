"""The rows of ``mlflow_datasets``: MLflow 3's evaluation datasets, each a keel data path whose
records are the dataset version ``oid`` (the use cases are :mod:`keel.services.mlflow_datasets`).

Rows are dicts of the table's columns; ``tags`` and ``experiment_ids`` are JSON text here.
Functions take a connection of the caller's transaction (``db.read()`` / ``db.write()``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keel.meta.dbapi import Connection

__all__ = [
    "COLUMNS",
    "all_rows",
    "delete",
    "experiments",
    "id_of_path",
    "insert",
    "row",
    "set_experiments",
    "set_records",
    "set_tags",
    "tags",
]

#: The table's columns, in the order rows are read.
COLUMNS = (
    "dataset_id",
    "name",
    "path",
    "oid",
    "digest",
    "tags",
    "experiment_ids",
    "schema",
    "profile",
    "created_by",
    "last_updated_by",
    "created_at",
    "updated_at",
)
_LIST = ", ".join(f'"{c}"' if c == "schema" else c for c in COLUMNS)
_SQL_ROW = f"SELECT {_LIST} FROM mlflow_datasets WHERE dataset_id = ?"  # noqa: S608 - constant column names
_SQL_ALL = f"SELECT {_LIST} FROM mlflow_datasets"  # noqa: S608 - constant column names
_SQL_INSERT = f"INSERT INTO mlflow_datasets ({_LIST}) VALUES ({', '.join('?' * len(COLUMNS))})"  # noqa: S608 - constants
_SQL_ID_OF_PATH = "SELECT dataset_id FROM mlflow_datasets WHERE path = ?"
_SQL_DELETE = "DELETE FROM mlflow_datasets WHERE dataset_id = ?"
_SQL_TAGS = "SELECT tags FROM mlflow_datasets WHERE dataset_id = ?"
_SQL_SET_TAGS = "UPDATE mlflow_datasets SET tags = ? WHERE dataset_id = ?"
_SQL_EXPERIMENTS = "SELECT experiment_ids FROM mlflow_datasets WHERE dataset_id = ?"
_SQL_SET_EXPERIMENTS = "UPDATE mlflow_datasets SET experiment_ids = ? WHERE dataset_id = ?"
# The records' columns a new version sets ("schema" only when it is known).
_RECORD_COLUMNS = ("oid", "digest", "updated_at", "last_updated_by", "profile", "schema")


def row(conn: Connection, dataset_id: str) -> dict[str, Any] | None:
    """The dataset's row, or None."""
    found = conn.execute(_SQL_ROW, (dataset_id,)).first()
    return None if found is None else dict(found._mapping)


def all_rows(conn: Connection) -> list[dict[str, Any]]:
    """Every dataset's row (in no particular order)."""
    return list(conn.execute(_SQL_ALL).mappings())


def id_of_path(conn: Connection, path: str) -> str | None:
    """The id of the dataset whose records live at data path ``path``, or None."""
    found = conn.execute(_SQL_ID_OF_PATH, (path,)).scalar()
    return None if found is None else str(found)


def insert(conn: Connection, values: Mapping[str, Any]) -> None:
    """Add a dataset (``values``: every column of :data:`COLUMNS`)."""
    conn.execute(_SQL_INSERT, tuple(values[c] for c in COLUMNS))


def delete(conn: Connection, dataset_id: str) -> None:
    """Remove a dataset's row (an unknown id is no error)."""
    conn.execute(_SQL_DELETE, (dataset_id,))


def tags(conn: Connection, dataset_id: str) -> tuple[str] | None:
    """``(tags JSON,)`` of a dataset, or None when there is no such dataset."""
    found = conn.execute(_SQL_TAGS, (dataset_id,)).first()
    return None if found is None else (found.tags,)


def set_tags(conn: Connection, dataset_id: str, text: str) -> None:
    """Replace a dataset's tags (JSON text)."""
    conn.execute(_SQL_SET_TAGS, (text, dataset_id))


def experiments(conn: Connection, dataset_id: str) -> tuple[str] | None:
    """``(experiment ids JSON,)`` of a dataset, or None when there is no such dataset."""
    found = conn.execute(_SQL_EXPERIMENTS, (dataset_id,)).first()
    return None if found is None else (found.experiment_ids,)


def set_experiments(conn: Connection, dataset_id: str, text: str) -> None:
    """Replace a dataset's experiment ids (JSON text)."""
    conn.execute(_SQL_SET_EXPERIMENTS, (text, dataset_id))


def set_records(conn: Connection, dataset_id: str, expected_oid: str | None, values: Mapping[str, Any]) -> bool:
    """Point the dataset at a new records version (``values``: ``oid``, ``digest``,
    ``updated_at``, ``last_updated_by``, ``profile`` and, when known, ``schema``) if it is
    still at ``expected_oid`` (None: no records yet); False when it changed meanwhile."""
    columns = [c for c in _RECORD_COLUMNS if c in values]
    assignments = ", ".join(f'"{c}" = ?' if c == "schema" else f"{c} = ?" for c in columns)
    same = "oid IS NULL" if expected_oid is None else "oid = ?"
    sql = f"UPDATE mlflow_datasets SET {assignments} WHERE dataset_id = ? AND {same}"  # noqa: S608 - constant names
    params = [values[c] for c in columns] + [dataset_id]
    if expected_oid is not None:
        params.append(expected_oid)
    return bool(conn.execute(sql, tuple(params)).rowcount)
