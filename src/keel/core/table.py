"""Tables: named rows with fixed columns (eval samples, predictions).

A table is stored as one canonical JSON object
``{"columns": [...], "rows": [[...], ...]}``, so identical tables dedup and a
table reads back exactly as logged. Filtering uses the same filter language
as run search, with bare column names: ``score >= 0.8 and feedback = 'good'``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keel.core.filters import Field, evaluate, parse_filter
from keel.core.hashing import canonical_json
from keel.errors import InvalidInput

__all__ = ["Table"]


@dataclass(frozen=True)
class Table:
    """An immutable table: ``columns`` and ``rows`` (lists of values)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    @classmethod
    def build(
        cls,
        columns: Sequence[str] | None = None,
        rows: Sequence[Sequence[Any] | Mapping[str, Any]] = (),
    ) -> Table:
        """Build from row lists (with ``columns``) or from dicts (columns inferred)."""
        rows = list(rows)
        if columns is None:
            if not rows or not all(isinstance(r, Mapping) for r in rows):
                raise InvalidInput("a table needs columns", "pass columns=[...] or rows as dicts")
            seen: dict[str, None] = {}
            for row in rows:
                seen.update(dict.fromkeys(row))  # type: ignore[arg-type]
            columns = list(seen)
        columns = tuple(str(c) for c in columns)
        if len(set(columns)) != len(columns) or not columns:
            raise InvalidInput(f"table columns {list(columns)} must be non-empty and unique")
        width = len(columns)
        out = []
        for i, row in enumerate(rows):
            if isinstance(row, Mapping):
                values = tuple(row.get(c) for c in columns)
            else:
                values = tuple(row)
                if len(values) != width:
                    raise InvalidInput(
                        f"table row {i} has {len(values)} values but there are {width} columns",
                        "give one value per column",
                    )
            out.append(values)
        table = cls(columns, tuple(out))
        table.to_bytes()  # fail now, not in the background, if a value is not JSON
        return table

    def to_bytes(self) -> bytes:
        """The canonical stored form."""
        try:
            return canonical_json({"columns": list(self.columns), "rows": [list(r) for r in self.rows]})
        except (TypeError, ValueError) as exc:
            raise InvalidInput(
                f"a table value is not JSON: {exc}", "convert values to str/int/float/bool/None"
            ) from exc

    @classmethod
    def from_bytes(cls, data: bytes) -> Table:
        """Inverse of :meth:`to_bytes`."""
        doc = json.loads(data)
        return cls(tuple(doc["columns"]), tuple(tuple(r) for r in doc["rows"]))

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.to_dicts())

    def to_dicts(self) -> list[dict[str, Any]]:
        """Rows as ``{column: value}`` dicts."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def column(self, name: str) -> list[Any]:
        """All values of one column."""
        try:
            index = self.columns.index(name)
        except ValueError:
            raise InvalidInput(f"no column {name!r}", f"columns are {list(self.columns)}") from None
        return [row[index] for row in self.rows]

    def filter(self, expression: str) -> Table:
        """Rows matching a filter such as ``"score >= 0.8 and feedback != 'bad'"``."""
        node = parse_filter(expression, prefixes={})
        index = {c: i for i, c in enumerate(self.columns)}

        def unknown(field: Field) -> None:
            raise InvalidInput(f"no column {field.key!r} in the table", f"columns are {list(self.columns)}")

        def check(node_: Any) -> None:
            for item in getattr(node_, "items", ()):
                check(item)
            if hasattr(node_, "item"):
                check(node_.item)
            if hasattr(node_, "field") and node_.field.key not in index:
                unknown(node_.field)

        check(node)
        kept = tuple(row for row in self.rows if evaluate(node, lambda f: row[index[f.key]]))  # noqa: B023
        return Table(self.columns, kept)

    def to_pandas(self) -> Any:
        """A pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise InvalidInput("to_pandas() needs pandas", "pip install pandas") from exc
        return pd.DataFrame(list(self.rows), columns=list(self.columns))
