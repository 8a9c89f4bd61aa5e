"""Rendering for the CLI: rich tables for people, ``--json`` for programs."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["console", "fmt", "key_values", "print_json", "table"]

_console: Any = None


def console() -> Any:
    """The shared rich console (created on first use)."""
    global _console
    if _console is None:
        from rich.console import Console

        # Piped output is not cut at 80 columns: it is read by tools, not folded by a terminal.
        _console = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200)
    return _console


def _default(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(value)
    return str(value)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def print_json(value: Any) -> None:
    """Write ``value`` as JSON on stdout (NaN/inf as strings, so it stays valid JSON)."""
    text = json.dumps(_json_safe(json.loads(json.dumps(value, default=_default))), indent=2, sort_keys=False)
    sys.stdout.write(text + "\n")


def fmt(value: Any) -> str:
    """A compact human form of a param/metric value."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.6g}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    title: str | None = None,
    highlight_rows: set[int] | None = None,
) -> None:
    """Print a rich table; rows in ``highlight_rows`` are emphasised."""
    from rich.table import Table

    out = Table(title=title, show_edge=False, header_style="bold", pad_edge=False)
    for i, column in enumerate(columns):
        # Identity columns never wrap; value columns shrink with an ellipsis.
        out.add_column(column, no_wrap=True, overflow="ellipsis", min_width=min(len(column), 12) if i else 8)
    for i, row in enumerate(rows):
        style = "bold yellow" if highlight_rows and i in highlight_rows else None
        out.add_row(*(fmt(v) for v in row), style=style)
    console().print(out)


def key_values(items: list[str] | None, what: str) -> dict[str, str]:
    """``["k=v", ...]`` from a repeatable option -> ``{k: v}`` (values as written)."""
    from keel.errors import InvalidInput

    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"invalid {what} {item!r}", f"write {what}s as key=value")
        out[key.strip()] = value
    return out
