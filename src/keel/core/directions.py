"""Which way is better for a metric: declared, never guessed from substrings.

Guessing from substrings recommended the worse run: ``hallucination_free``,
``error_free_rate``, ``tokens_per_second`` and ``glossary_accuracy`` ("loss" inside)
all came out lower-is-better. A direction now comes from, in order:

1. ``keel.compare(..., directions={"metric": "higher"})`` (or ``keel runs compare --direction``);
2. a declaration on the run: the tag ``keel.direction.<metric>`` = ``higher`` or ``lower``
   (``keel.evaluate`` writes it for every scorer that declares a ``direction``; the built-in
   scorers declare ``higher``); every compared run that declares one must agree;
3. a declaration on the runs' project (``keel runs direction METRIC higher``, stored in
   ``metric_directions``); projects of compared runs that declare opposite ones are refused;
4. a default for exact known names only (:func:`default_direction`): cost, latency and
   duration metrics are lower-is-better (``cost_per_query``, ``latency_p50_ms``,
   ``duration_s``...), keel's built-in scorers and ``accuracy`` higher-is-better.

Anything else has an unknown direction: comparisons name no "best" run on it, and every
verdict says which direction it used and where that came from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from keel.errors import InvalidInput

__all__ = [
    "DIRECTION_TAG",
    "HIGHER",
    "LOWER",
    "Direction",
    "default_direction",
    "direction_tags",
    "parse_direction",
    "resolve_direction",
]

HIGHER = "higher"
LOWER = "lower"

#: The run tag that declares a metric's direction: ``keel.direction.<metric>`` = higher | lower.
DIRECTION_TAG = "keel.direction."

_WORDS = {
    "higher": HIGHER, "max": HIGHER, "maximize": HIGHER, "maximise": HIGHER, "higher_is_better": HIGHER,
    "lower": LOWER, "min": LOWER, "minimize": LOWER, "minimise": LOWER, "lower_is_better": LOWER,
}  # fmt: skip

#: Lower is better: cost, latency and duration metrics, by name prefix or suffix (whole words).
_LOWER = re.compile(r"^(cost|latency|duration)(_.*)?$|^.*_(cost|latency|duration|ms|seconds)$")
#: Higher is better: keel's built-in scorers (keel.core.scorers) and plain accuracy.
_HIGHER = frozenset({"accuracy", "exact_match", "contains", "regex", "json_valid", "token_f1"})


@dataclass(frozen=True)
class Direction:
    """A metric's direction (``higher``, ``lower`` or None: unknown) and where it came from."""

    metric: str
    way: str | None
    source: str  # "declared in compare()", "declared on the runs", "default for a known name", "unknown"

    @property
    def known(self) -> bool:
        """True when a direction was declared or defaulted."""
        return self.way is not None

    @property
    def objective(self) -> str | None:
        """``max``, ``min`` or None, as :func:`keel.core.stats.pareto_front` takes it."""
        return None if self.way is None else ("max" if self.way == HIGHER else "min")

    def describe(self) -> str:
        """``higher is better (declared on the runs)`` or ``direction unknown``."""
        if self.way is None:
            return "direction unknown"
        return f"{self.way} is better ({self.source})"


def parse_direction(value: str, metric: str = "") -> str:
    """``higher`` or ``lower`` from a declaration (max/min and *_is_better are accepted too)."""
    way = _WORDS.get(str(value).strip().lower())
    if way is None:
        raise InvalidInput(
            f"unknown direction {value!r}{f' for {metric!r}' if metric else ''}", "use 'higher' or 'lower'"
        )
    return way


def default_direction(metric: str) -> str | None:
    """The direction of an exact known name (see the module docstring); None otherwise."""
    name = metric.lower()
    if name in _HIGHER:
        return HIGHER
    if _LOWER.match(name):
        return LOWER
    return None


def direction_tags(declared: Mapping[str, str]) -> dict[str, str]:
    """Run tags declaring ``metric -> direction`` (as ``keel.evaluate`` writes them for scorers)."""
    return {f"{DIRECTION_TAG}{metric}": parse_direction(way, metric) for metric, way in declared.items()}


def _declared_on_runs(metric: str, run_tags: Iterable[Mapping[str, str]]) -> str | None:
    found = {
        parse_direction(tags[DIRECTION_TAG + metric], metric) for tags in run_tags if DIRECTION_TAG + metric in tags
    }
    if len(found) > 1:
        raise InvalidInput(
            f"the compared runs declare both directions for {metric!r}",
            f"pass directions={{{metric!r}: 'higher'}} (or 'lower') to settle it",
        )
    return found.pop() if found else None


def _declared_on_projects(metric: str, projects: Mapping[str, Mapping[str, str]]) -> str | None:
    found = {parse_direction(declared[metric], metric) for declared in projects.values() if metric in declared}
    if len(found) > 1:
        names = sorted(name for name, declared in projects.items() if metric in declared)
        raise InvalidInput(
            f"the compared runs' projects ({', '.join(names)}) declare both directions for {metric!r}",
            f"pass directions={{{metric!r}: 'higher'}} (or 'lower') to settle it",
        )
    return found.pop() if found else None


def resolve_direction(
    metric: str,
    explicit: Mapping[str, str] | None = None,
    run_tags: Iterable[Mapping[str, str]] = (),
    projects: Mapping[str, Mapping[str, str]] | None = None,
) -> Direction:
    """A metric's direction: explicit, else declared on the runs, else on their projects
    (``projects``: ``{project name: {metric: direction}}``), else a known name's default."""
    if explicit and metric in explicit:
        return Direction(metric, parse_direction(explicit[metric], metric), "declared in the comparison")
    declared = _declared_on_runs(metric, run_tags)
    if declared is not None:
        return Direction(metric, declared, "declared on the runs")
    declared = _declared_on_projects(metric, projects or {})
    if declared is not None:
        return Direction(metric, declared, "declared on the project")
    default = default_direction(metric)
    if default is not None:
        return Direction(metric, default, "default for a known name")
    return Direction(metric, None, "unknown")
