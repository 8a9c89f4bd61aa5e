"""What the registry pages (prompts, models, data, KBs, conversations, flags, A/B tests)
share: a side-by-side text diff, YAML views of structured values, filter literals, and
the runs of a lineage entity that the viewer may see, with their metrics summed up."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from keel.core.entities import RunRecord
from keel.core.prompt_content import PromptContent
from keel.core.times import format_at, parse_at
from keel.errors import KeelError
from keel.server.context import ServerContext
from keel.server.ui.sessions import UIUser

__all__ = [
    "MAX_RUNS",
    "AsOf",
    "DiffRow",
    "RunScores",
    "as_of",
    "card_items",
    "filter_literal",
    "prompt_text",
    "run_scores",
    "side_by_side",
    "yaml_text",
]

MAX_RUNS = 200  # runs read per lineage entity (the newest ids first)


@dataclass(frozen=True)
class AsOf:
    """A registry page's ``?at=`` moment: ``ms`` (None: now) and the text shown for it."""

    ms: int | None
    text: str


def as_of(value: str | None) -> AsOf:
    """The ``at`` query parameter of a registry page, read by the one time parser
    (:func:`keel.core.times.parse_at`: a zone is required), printed back with ``Z``."""
    if value is None or not value.strip():
        return AsOf(None, "")
    ms = parse_at(value)
    return AsOf(ms, format_at(ms))


_LINES = re.compile(r"[^\n]*\n|[^\n]+")


@dataclass(frozen=True)
class DiffRow:
    """One row of a side-by-side diff. ``kind``: ``equal``, ``changed``, ``removed`` (only
    on the left), ``added`` (only on the right); line numbers are 1-based, None when absent."""

    kind: str
    left_no: int | None
    left: str
    right_no: int | None
    right: str


def _split(text: str) -> list[str]:
    return [line.rstrip("\n") for line in _LINES.findall(text)]


def side_by_side(old: str, new: str) -> list[DiffRow]:
    """The lines of ``old`` and ``new`` aligned for a two-column diff."""
    a, b = _split(old), _split(new)
    rows: list[DiffRow] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            rows.extend(
                DiffRow("equal", i + 1, a[i], j + 1, b[j]) for i, j in zip(range(i1, i2), range(j1, j2), strict=True)
            )
            continue
        left, right = list(range(i1, i2)), list(range(j1, j2))
        for k in range(max(len(left), len(right))):
            i = left[k] if k < len(left) else None
            j = right[k] if k < len(right) else None
            kind = "changed" if i is not None and j is not None else ("removed" if j is None else "added")
            rows.append(
                DiffRow(
                    kind,
                    None if i is None else i + 1,
                    "" if i is None else a[i],
                    None if j is None else j + 1,
                    "" if j is None else b[j],
                )
            )
    return rows


def prompt_text(content: PromptContent) -> str:
    """A prompt's template as text: chat messages as ``[role]`` lines followed by their content."""
    if isinstance(content.template, str):
        return content.template
    return "\n".join(f"[{message['role']}]\n{message['content']}\n" for message in content.template)


def _plain(value: Any) -> Any:
    """Tuples and read-only dicts as plain lists and dicts (what YAML can dump)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def yaml_text(value: Any) -> str:
    """A structured value as block YAML (keys in their order); empty for None."""
    if value is None:
        return ""
    return str(yaml.safe_dump(_plain(value), sort_keys=False, allow_unicode=True, default_flow_style=False)).rstrip()


def card_items(card: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """A card's top-level entries as ``(key, text, is_block)``: scalars as text, the rest as YAML."""
    out = []
    for key, value in card.items():
        if isinstance(value, Mapping | list | tuple):
            out.append((str(key), yaml_text(value), True))
        else:
            out.append((str(key), "" if value is None else str(value), False))
    return out


def filter_literal(value: str) -> str:
    """``value`` as a quoted string of keel's filter language (quotes and backslashes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


@dataclass
class RunScores:
    """The runs (readable by the viewer) that used one entity, and their metrics' means."""

    runs: list[RunRecord] = field(default_factory=list)
    hidden: int = 0  # runs in projects the viewer cannot read
    means: dict[str, float] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """How many runs are shown."""
        return len(self.runs)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def run_scores(context: ServerContext, viewer: UIUser, run_ids: Iterable[str]) -> RunScores:
    """The runs of ``run_ids`` the viewer may read (at most :data:`MAX_RUNS`, the last ones),
    and for each metric the mean of the runs' latest values."""
    ids = list(dict.fromkeys(run_ids))[-MAX_RUNS:]
    if not ids:
        return RunScores()
    try:
        records = context.tracking.get_runs(ids)
    except KeelError:  # a run deleted meanwhile: read them one by one
        records = []
        for run_id in ids:
            try:
                records.append(context.tracking.get_run(run_id))
            except KeelError:
                continue
    shown = [r for r in records if not r.deleted and viewer.can(r.project, "reader")]
    values: dict[str, list[float]] = {}
    for record in shown:
        for key, value in record.metrics.items():
            if isinstance(value, int | float) and math.isfinite(value):
                values.setdefault(key, []).append(float(value))
    means = {key: _mean(v) for key, v in sorted(values.items())}
    return RunScores(shown, len(records) - len(shown), means)
