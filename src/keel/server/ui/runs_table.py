"""The runs table's columns: which params, metrics and tags to show, and how to sort by them.

A column is named like a filter field, ``metrics.accuracy``, ``params.rag.top_k``,
``tags.team`` or an attribute (``name``, ``status``, ``start_time``...). Sorting uses the
same names in the filter language's ``order by`` syntax, quoted when a key is not a plain
name, so the service's parser (never string-built SQL) does the rest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from keel.core.entities import RunRecord

__all__ = [
    "SORTABLE_ATTRIBUTES",
    "Column",
    "available_columns",
    "choose_columns",
    "field_ref",
    "parse_column",
    "sort_clause",
]

SORTABLE_ATTRIBUTES = ("name", "status", "start_time", "end_time")
_KINDS = ("metrics", "params", "tags")
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
DEFAULT_METRICS = 6
DEFAULT_PARAMS = 4


@dataclass(frozen=True)
class Column:
    """One chosen column: ``kind`` is ``metrics``, ``params`` or ``tags``; ``key`` the name."""

    kind: str
    key: str

    @property
    def name(self) -> str:
        """``kind.key``, the column's id in URLs."""
        return f"{self.kind}.{self.key}"

    @property
    def numeric(self) -> bool:
        """Metrics are right-aligned numbers."""
        return self.kind == "metrics"

    def value(self, record: RunRecord) -> Any:
        """The run's value in this column (None when it has none)."""
        return getattr(record, self.kind).get(self.key)


def field_ref(kind: str, key: str) -> str:
    """``kind.key`` in the filter language, back-quoted when ``key`` is not a plain dotted name."""
    if _PLAIN.match(key):
        return f"{kind}.{key}"
    return f"{kind}.`{key.replace('`', '')}`"


def parse_column(name: str) -> Column | None:
    """A :class:`Column` from ``metrics.acc``-style text, or None when it names no param/metric/tag."""
    kind, sep, key = name.partition(".")
    if not sep or not key or kind not in _KINDS:
        return None
    return Column(kind, key)


def sort_clause(column: str, descending: bool) -> str:
    """The ``order by`` clause for a column id (an attribute or ``kind.key``)."""
    parsed = parse_column(column)
    if parsed is not None:
        ref = field_ref(parsed.kind, parsed.key)
    else:
        ref = column
    return f"{ref} {'desc' if descending else 'asc'}"


def available_columns(records: Iterable[RunRecord]) -> dict[str, list[str]]:
    """Every metric, param and tag key on these runs, sorted, by kind."""
    keys: dict[str, set[str]] = {kind: set() for kind in _KINDS}
    for record in records:
        keys["metrics"].update(record.metrics)
        keys["params"].update(record.params)
        keys["tags"].update(k for k in record.tags if not k.startswith("keel."))
    return {kind: sorted(values) for kind, values in keys.items()}


def choose_columns(requested: Sequence[str], available: dict[str, list[str]]) -> list[Column]:
    """The requested columns, or by default the first metrics and params of the page."""
    if requested:
        return [c for c in (parse_column(name) for name in requested) if c is not None]
    return [Column("metrics", k) for k in available["metrics"][:DEFAULT_METRICS]] + [
        Column("params", k) for k in available["params"][:DEFAULT_PARAMS]
    ]
