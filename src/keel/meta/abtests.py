"""A/B test rows: experiments, exposures (one per unit, first wins), outcomes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update

from keel.core.entities import now_ms
from keel.meta.delivered import claim_batch
from keel.meta.engine import Database
from keel.meta.schema import ab_experiments, ab_exposures, ab_outcomes, conversations

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


class ABStore:
    """Statements over the A/B tables."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.insert_exposure = db.sql(_INSERT_EXPOSURE)
        self.insert_outcome = db.sql(_INSERT_OUTCOME)

    # -- experiments (Core, inside the caller's transaction) ---------------------------
    @staticmethod
    def get(conn: Any, name: str) -> ExperimentRow | None:
        """One experiment, or None."""
        row = conn.execute(select(ab_experiments).where(ab_experiments.c.name == name)).first()
        return None if row is None else _exp(row)

    @staticmethod
    def all(conn: Any) -> list[ExperimentRow]:
        """Every experiment, by name."""
        return [_exp(r) for r in conn.execute(select(ab_experiments).order_by(ab_experiments.c.name))]

    @staticmethod
    def create(conn: Any, name: str, definition: dict[str, Any], author: str) -> None:
        """Insert a draft experiment."""
        conn.execute(
            insert(ab_experiments).values(
                name=name,
                definition=json.dumps(definition),
                status="draft",
                resolved="{}",
                author=author,
                created_at=now_ms(),
            )  # fmt: skip
        )

    @staticmethod
    def set_status(conn: Any, name: str, status: str, **values: Any) -> None:
        """Move the lifecycle (and set started_at / stopped_at / resolved)."""
        if "resolved" in values:
            values["resolved"] = json.dumps(values["resolved"])
        conn.execute(update(ab_experiments).where(ab_experiments.c.name == name).values(status=status, **values))

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
        rows = conn.execute(
            select(ab_exposures.c.unit, ab_exposures.c.variant).where(ab_exposures.c.experiment == name)
        )
        return {u: v for u, v in rows}

    @staticmethod
    def exposure(conn: Any, name: str, unit: str) -> tuple[str, dict[str, Any], int] | None:
        """One unit's exposure: ``(variant, resolved, at)``, or None."""
        row = conn.execute(
            select(ab_exposures.c.variant, ab_exposures.c.resolved, ab_exposures.c.at).where(
                ab_exposures.c.experiment == name, ab_exposures.c.unit == unit
            )
        ).first()
        return None if row is None else (row[0], json.loads(row[1]), int(row[2]))

    @staticmethod
    def outcomes(conn: Any, name: str) -> list[tuple[str, str, float]]:
        """``(unit, metric, value)`` logged for an experiment."""
        rows = conn.execute(
            select(ab_outcomes.c.unit, ab_outcomes.c.metric, ab_outcomes.c.value).where(
                ab_outcomes.c.experiment == name
            )
        )
        return [(u, m, float(v)) for u, m, v in rows]

    @staticmethod
    def feedback(conn: Any, since: int | None, until: int | None) -> list[tuple[str, int | None, float | None]]:
        """``(metadata JSON, thumb, score)`` of conversation records with feedback in a time window."""
        query = select(conversations.c.metadata, conversations.c.thumb, conversations.c.score).where(
            (conversations.c.thumb.is_not(None)) | (conversations.c.score.is_not(None))
        )
        if since is not None:
            query = query.where(conversations.c.timestamp >= since)
        if until is not None:
            query = query.where(conversations.c.timestamp <= until)
        return [(m, t, s) for m, t, s in conn.execute(query)]
