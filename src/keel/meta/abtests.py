"""A/B test rows: experiments, exposures (one per unit, first wins), outcomes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keel.core.entities import now_ms
from keel.meta.delivered import claim_batch
from keel.meta.engine import Database

__all__ = ["ExperimentRow", "ABStore"]


@dataclass(frozen=True)
class ExperimentRow:
    """A stored experiment (definition and resolved versions as dicts)."""

    name: str
    definition: dict[str, Any]
    status: str
    resolved: dict[str, Any]
    author: str
    created_at: int
    started_at: int | None
    stopped_at: int | None


def _exp(row: Any) -> ExperimentRow:
    return ExperimentRow(
        row.name,
        json.loads(row.definition),
        row.status,
        json.loads(row.resolved),
        row.author,
        int(row.created_at),
        None if row.started_at is None else int(row.started_at),
        None if row.stopped_at is None else int(row.stopped_at),
    )


_INSERT_EXPOSURE = (
    "INSERT INTO ab_exposures (experiment, unit, variant, resolved, run_id, at) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (experiment, unit) DO NOTHING"
)
_INSERT_OUTCOME = "INSERT INTO ab_outcomes (experiment, unit, metric, value, at) VALUES (?, ?, ?, ?, ?)"
_EXPERIMENT = (
    "SELECT name, definition, status, resolved, author, created_at, started_at, stopped_at FROM ab_experiments"
)
_SQL_GET = _EXPERIMENT + " WHERE name = ?"
_SQL_ALL = _EXPERIMENT + " ORDER BY name"
_SQL_CREATE = (
    "INSERT INTO ab_experiments (name, definition, status, resolved, author, created_at) "
    "VALUES (?, ?, 'draft', '{}', ?, ?)"
)
_SQL_SET_DEFINITION = "UPDATE ab_experiments SET definition = ? WHERE name = ?"
_STATUS_COLUMNS = ("started_at", "stopped_at", "resolved")  # what set_status may set besides the status
_SQL_ASSIGNMENTS = "SELECT unit, variant FROM ab_exposures WHERE experiment = ?"
_SQL_ASSIGNMENTS_ORDERED = _SQL_ASSIGNMENTS + " ORDER BY at, id"
_SQL_EXPOSURE = "SELECT variant, resolved, at FROM ab_exposures WHERE experiment = ? AND unit = ?"
_SQL_OUTCOMES = "SELECT unit, metric, value FROM ab_outcomes WHERE experiment = ?"
_SQL_FEEDBACK = "SELECT metadata, thumb, score FROM conversations WHERE (thumb IS NOT NULL OR score IS NOT NULL)"


class ABStore:
    """Statements over the A/B tables."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.insert_exposure = db.sql(_INSERT_EXPOSURE)
        self.insert_outcome = db.sql(_INSERT_OUTCOME)

    # -- experiments (inside the caller's transaction) ---------------------------------
    @staticmethod
    def get(conn: Any, name: str) -> ExperimentRow | None:
        """One experiment, or None."""
        row = conn.execute(_SQL_GET, (name,)).first()
        return None if row is None else _exp(row)

    @staticmethod
    def all(conn: Any) -> list[ExperimentRow]:
        """Every experiment, by name."""
        return [_exp(r) for r in conn.execute(_SQL_ALL).all()]

    @staticmethod
    def create(conn: Any, name: str, definition: dict[str, Any], author: str) -> None:
        """Insert a draft experiment."""
        conn.execute(_SQL_CREATE, (name, json.dumps(definition), author, now_ms()))

    @staticmethod
    def set_definition(conn: Any, name: str, definition: dict[str, Any]) -> None:
        """Replace the stored definition (the service allows it only for a design change)."""
        conn.execute(_SQL_SET_DEFINITION, (json.dumps(definition), name))

    @staticmethod
    def set_status(conn: Any, name: str, status: str, **values: Any) -> None:
        """Move the lifecycle (and set started_at / stopped_at / resolved)."""
        unknown = set(values) - set(_STATUS_COLUMNS)
        if unknown:
            raise TypeError(f"set_status cannot set {', '.join(sorted(unknown))}")
        if "resolved" in values:
            values["resolved"] = json.dumps(values["resolved"])
        columns = [c for c in _STATUS_COLUMNS if c in values]  # only known names reach the SQL
        assignments = "".join(f", {c} = ?" for c in columns)
        conn.execute(
            f"UPDATE ab_experiments SET status = ?{assignments} WHERE name = ?",  # noqa: S608
            (status, *(values[c] for c in columns), name),
        )

    # -- exposures and outcomes (raw, batched) ------------------------------------------
    def write(
        self, exposures: Sequence[tuple[Any, ...]], outcomes: Sequence[tuple[Any, ...]], batch_id: str | None = None
    ) -> None:
        """Insert a batch in one transaction (an exposure of an already exposed unit is ignored;
        nothing when ``batch_id`` names a batch already written: see :mod:`keel.meta.delivered`)."""
        with self.db.raw_write() as cur:
            if not claim_batch(self.db, cur, batch_id):
                return
            if exposures:
                cur.executemany(self.insert_exposure, list(exposures))
            if outcomes:
                cur.executemany(self.insert_outcome, list(outcomes))

    @staticmethod
    def assignments(conn: Any, name: str) -> dict[str, str]:
        """``{unit: variant}`` of every exposed unit."""
        return {u: v for u, v in conn.execute(_SQL_ASSIGNMENTS, (name,)).all()}

    @staticmethod
    def assignments_in_order(conn: Any, name: str) -> dict[str, str]:
        """``{unit: variant}`` in exposure order (a fixed-horizon analysis takes the first units)."""
        return {u: v for u, v in conn.execute(_SQL_ASSIGNMENTS_ORDERED, (name,)).all()}

    @staticmethod
    def exposure(conn: Any, name: str, unit: str) -> tuple[str, dict[str, Any], int] | None:
        """One unit's exposure: ``(variant, resolved, at)``, or None."""
        row = conn.execute(_SQL_EXPOSURE, (name, unit)).first()
        return None if row is None else (row[0], json.loads(row[1]), int(row[2]))

    @staticmethod
    def outcomes(conn: Any, name: str) -> list[tuple[str, str, float]]:
        """``(unit, metric, value)`` logged for an experiment."""
        return [(u, m, float(v)) for u, m, v in conn.execute(_SQL_OUTCOMES, (name,)).all()]

    @staticmethod
    def feedback(conn: Any, since: int | None, until: int | None) -> list[tuple[str, int | None, float | None]]:
        """``(metadata JSON, thumb, score)`` of conversation records with feedback in a time window."""
        bounds = [(c, v) for c, v in ((" AND timestamp >= ?", since), (" AND timestamp <= ?", until)) if v is not None]
        sql = _SQL_FEEDBACK + "".join(c for c, _ in bounds)
        return [(m, t, s) for m, t, s in conn.execute(sql, tuple(v for _, v in bounds)).all()]
