"""The rows of ``mlflow_prompts`` and ``mlflow_prompt_versions``: what MLflow's prompt registry
keeps beside keel's prompts (a prompt's MLflow description and tags, and the map of MLflow's
version numbers to keel's semver). The use cases are :mod:`keel.services.mlflow_registry`.

Rows are dicts of the table's columns (``tags`` as JSON text).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from keel.meta.engine import Database

__all__ = ["MlflowPromptRows"]

_PROMPT_COLUMNS = ("name", "description", "tags", "created_at", "updated_at")
_VERSION_COLUMNS = ("name", "version", "keel_version", "description", "tags", "created_at", "updated_at")
_SQL_PROMPT = "SELECT name, description, tags, created_at, updated_at FROM mlflow_prompts WHERE name = ?"
_SQL_PROMPTS = "SELECT name, description, tags, created_at, updated_at FROM mlflow_prompts"
_SQL_INSERT_PROMPT = (
    "INSERT INTO mlflow_prompts (name, description, tags, created_at, updated_at) VALUES (?, ?, ?, ?, ?)"
)
_SQL_HAS_PROMPT = "SELECT name FROM mlflow_prompts WHERE name = ?"
_SQL_DELETE_PROMPT = "DELETE FROM mlflow_prompts WHERE name = ?"
_SQL_VERSIONS = (
    "SELECT name, version, keel_version, description, tags, created_at, updated_at "
    "FROM mlflow_prompt_versions WHERE name = ? ORDER BY version"
)
_SQL_INSERT_VERSION = (
    "INSERT INTO mlflow_prompt_versions (name, version, keel_version, description, tags, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SQL_DELETE_VERSIONS = "DELETE FROM mlflow_prompt_versions WHERE name = ?"


def _assignments(values: Mapping[str, Any], allowed: Sequence[str]) -> tuple[str, list[Any]]:
    """``"a = ?, b = ?"`` and the values, for columns of ``allowed`` only."""
    columns = [c for c in allowed if c in values]
    if len(columns) != len(values):
        raise ValueError(f"unknown columns: {sorted(set(values) - set(columns))}")
    return ", ".join(f"{c} = ?" for c in columns), [values[c] for c in columns]


class MlflowPromptRows:
    """MLflow's prompt rows of one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- prompts ---------------------------------------------------------------------
    def prompt(self, name: str) -> dict[str, Any] | None:
        """The MLflow row of prompt ``name``, or None."""
        with self.db.read() as conn:
            row = conn.execute(_SQL_PROMPT, (name,)).first()
        return None if row is None else dict(row._mapping)

    def prompts(self) -> list[dict[str, Any]]:
        """Every MLflow prompt row."""
        with self.db.read() as conn:
            return list(conn.execute(_SQL_PROMPTS).mappings())

    def create_prompt(self, name: str, description: str, tags: str, now: int) -> None:
        """Add a prompt's row (``tags``: JSON text)."""
        with self.db.write() as conn:
            conn.execute(_SQL_INSERT_PROMPT, (name, description, tags, now, now))

    def set_prompt(self, name: str, values: Mapping[str, Any], exists: bool) -> None:
        """Update the prompt's row (``values``: ``tags``, ``updated_at``, maybe ``description``),
        or, when it has none (``exists`` False), add it with them (``created_at`` = ``updated_at``)."""
        with self.db.write() as conn:
            if exists:
                assignments, params = _assignments(values, _PROMPT_COLUMNS[1:])
                conn.execute(f"UPDATE mlflow_prompts SET {assignments} WHERE name = ?", (*params, name))  # noqa: S608
            else:
                row = {"description": "", **values, "name": name, "created_at": values["updated_at"]}
                conn.execute(_SQL_INSERT_PROMPT, tuple(row[c] for c in _PROMPT_COLUMNS))

    def delete_prompt(self, name: str) -> None:
        """Remove a prompt's row and its versions' rows."""
        with self.db.write() as conn:
            conn.execute(_SQL_DELETE_VERSIONS, (name,))
            conn.execute(_SQL_DELETE_PROMPT, (name,))

    # -- versions ----------------------------------------------------------------------
    def versions(self, name: str) -> list[dict[str, Any]]:
        """The version rows of prompt ``name``, by version number."""
        with self.db.read() as conn:
            return list(conn.execute(_SQL_VERSIONS, (name,)).mappings())

    def number_versions(self, name: str, keel_versions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Give the next numbers to those of ``keel_versions`` (oldest first; each with
        ``keel_version``, ``description`` and ``created_at``) that have none yet, in one
        transaction; every version row of the prompt after it, by number."""
        with self.db.write() as conn:
            rows = list(conn.execute(_SQL_VERSIONS, (name,)).mappings())
            seen = {r["keel_version"] for r in rows}
            number = max((r["version"] for r in rows), default=0)
            for version in keel_versions:
                if version["keel_version"] in seen:
                    continue
                number += 1
                row = {
                    "name": name,
                    "version": number,
                    "keel_version": version["keel_version"],
                    "description": version["description"],
                    "tags": "{}",
                    "created_at": version["created_at"],
                    "updated_at": version["created_at"],
                }
                conn.execute(_SQL_INSERT_VERSION, tuple(row[c] for c in _VERSION_COLUMNS))
                rows.append(row)
        return rows

    def add_version(self, row: Mapping[str, Any]) -> None:
        """Add a version row (every column; ``tags`` as JSON text) and the prompt's own row if
        it has none yet (no description, no tags), in one transaction."""
        with self.db.write() as conn:
            conn.execute(_SQL_INSERT_VERSION, tuple(row[c] for c in _VERSION_COLUMNS))
            if conn.execute(_SQL_HAS_PROMPT, (row["name"],)).first() is None:
                now = row["created_at"]
                conn.execute(_SQL_INSERT_PROMPT, (row["name"], "", "{}", now, now))

    def set_version(self, name: str, version: int, values: Mapping[str, Any]) -> None:
        """Update a version row (``values``: ``tags``, ``updated_at``, maybe ``description``)."""
        assignments, params = _assignments(values, _VERSION_COLUMNS[3:])
        sql = f"UPDATE mlflow_prompt_versions SET {assignments} WHERE name = ? AND version = ?"  # noqa: S608
        with self.db.write() as conn:
            conn.execute(sql, (*params, name, version))
