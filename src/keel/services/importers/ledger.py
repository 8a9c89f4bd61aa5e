"""The import ledger: what came from where, and the summary of one import.

A row says "item ``source_id`` of kind ``kind`` from ``source`` (mlflow,
wandb, dvc) became keel ``keel_id``". Importers consult it before writing
anything and add a row once an item is completely written, so running an
import twice brings nothing twice.

Items that take more than one transaction (a model version, then its stage,
then its aliases) are written so that a re-run converges: the first write
carries a marker (a run keeps its source id, a model version the tag
``mlflow.version``), and each later step is applied only if keel's state
differs from the source's. The ledger row comes last.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keel.core.entities import now_ms
from keel.meta.imports import ImportLedgerRows
from keel.services.workspace import Store

__all__ = ["ImportSummary", "Ledger", "Progress"]

#: Called as ``progress(done, total)`` while an import runs.
Progress = Callable[[int, int], None]


@dataclass
class ImportSummary:
    """What one import did: per kind of item, how many were imported and skipped."""

    source: str
    location: str
    imported: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str, imported: bool, n: int = 1) -> None:
        """Count ``n`` items of ``kind`` as imported (or skipped: already there)."""
        bucket = self.imported if imported else self.skipped
        bucket[kind] = bucket.get(kind, 0) + n
        other = self.skipped if imported else self.imported
        other.setdefault(kind, 0)

    def total_imported(self) -> int:
        """Items imported, all kinds together."""
        return sum(self.imported.values())

    def rows(self) -> list[tuple[str, int, int]]:
        """``(kind, imported, skipped)`` for each kind seen, in the order first seen."""
        kinds = list(dict.fromkeys([*self.imported, *self.skipped]))
        return [(k, self.imported.get(k, 0), self.skipped.get(k, 0)) for k in kinds]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "source": self.source,
            "location": self.location,
            "imported": dict(self.imported),
            "skipped": dict(self.skipped),
        }


class Ledger:
    """The ledger rows of one source system (``mlflow``, ``wandb`` or ``dvc``)."""

    def __init__(self, store: Store, source: str) -> None:
        self.db = store.db
        self.source = source
        self.rows = ImportLedgerRows(store.db, source)

    def known(self, kind: str, source_ids: Iterable[str]) -> dict[str, str]:
        """``{source_id: keel_id}`` of the given items already imported."""
        return self.rows.known(kind, list(dict.fromkeys(source_ids)))

    def details(self, kind: str, source_ids: Iterable[str] | None = None) -> dict[str, tuple[str, dict[str, Any]]]:
        """``{source_id: (keel_id, detail)}`` of imported items of ``kind`` (all, or those given)."""
        ids = None if source_ids is None else list(dict.fromkeys(source_ids))
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for source_id, keel_id, detail in self.rows.details(kind, ids):
            out[source_id] = (keel_id, json.loads(detail or "{}"))
        return out

    def record(
        self,
        kind: str,
        source_id: str,
        keel_id: str,
        location: str = "",
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Add one row (an item already listed is left as it is)."""
        self.record_many(kind, [(source_id, keel_id, detail or {})], location)

    def record_many(self, kind: str, rows: Iterable[tuple[str, str, Mapping[str, Any]]], location: str = "") -> None:
        """Add rows ``(source_id, keel_id, detail)`` in one transaction; listed items are left as they are."""
        rows = list(rows)
        if not rows:
            return
        listed = self.known(kind, [r[0] for r in rows])
        fresh = [r for r in rows if r[0] not in listed]
        if not fresh:
            return
        values = [
            (source_id, keel_id, json.dumps(dict(detail), sort_keys=True)) for source_id, keel_id, detail in fresh
        ]
        self.rows.add(kind, values, location, now_ms())
