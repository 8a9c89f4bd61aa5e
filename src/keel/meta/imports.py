"""The rows of ``import_ledger``: item ``source_id`` of kind ``kind`` from ``source`` (mlflow,
wandb, dvc) became keel ``keel_id``. The use cases are :mod:`keel.services.importers.ledger`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from keel.meta.dbapi import ConstraintViolation
from keel.meta.engine import Database

__all__ = ["ImportLedgerRows"]

_CHUNK = 500  # values per IN (...) list
_SQL_ALL = "SELECT source_id, keel_id, detail FROM import_ledger WHERE source = ? AND kind = ?"
_SQL_INSERT = (
    "INSERT INTO import_ledger (source, kind, source_id, keel_id, location, detail, imported_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


class ImportLedgerRows:
    """The ledger rows of one source system (``mlflow``, ``wandb`` or ``dvc``) in one database."""

    def __init__(self, db: Database, source: str) -> None:
        self.db = db
        self.source = source

    def known(self, kind: str, source_ids: Sequence[str]) -> dict[str, str]:
        """``{source_id: keel_id}`` of those of ``source_ids`` (distinct) listed already."""
        found: dict[str, str] = {}
        with self.db.read() as conn:
            for part in _chunks(source_ids):
                rows = conn.execute(
                    "SELECT source_id, keel_id FROM import_ledger "  # noqa: S608 - only placeholders
                    f"WHERE source = ? AND kind = ? AND source_id IN ({_marks(len(part))})",
                    (self.source, kind, *part),
                )
                found.update({s: k for s, k in rows})
        return found

    def details(self, kind: str, source_ids: Sequence[str] | None = None) -> list[tuple[str, str, str]]:
        """``(source_id, keel_id, detail JSON)`` of the listed items of ``kind`` (all, or those
        of ``source_ids``, distinct)."""
        with self.db.read() as conn:
            if source_ids is None:
                return [tuple(row) for row in conn.execute(_SQL_ALL, (self.source, kind))]
            rows: list[Any] = []
            for part in _chunks(source_ids):
                rows += conn.execute(
                    f"{_SQL_ALL} AND source_id IN ({_marks(len(part))})",  # noqa: S608 - only placeholders
                    (self.source, kind, *part),
                ).all()
        return [tuple(row) for row in rows]

    def add(self, kind: str, rows: Sequence[tuple[str, str, str]], location: str, now: int) -> None:
        """Add rows ``(source_id, keel_id, detail JSON)`` in one transaction; when another import
        of the same source listed some meanwhile, the others are added one by one."""
        values = [(self.source, kind, source_id, keel_id, location, detail, now) for source_id, keel_id, detail in rows]
        try:
            with self.db.write() as conn:
                conn.executemany(_SQL_INSERT, values)
        except ConstraintViolation:  # another import of the same source got there first
            for value in values:
                try:
                    with self.db.write() as conn:
                        conn.execute(_SQL_INSERT, value)
                except ConstraintViolation:
                    continue
