"""Comparing runs with statistics (``keel.compare``, ``keel runs compare --baseline``).

Loads each run's metrics and, for evaluation runs, its per-sample table
(:data:`keel.core.comparison.SAMPLES_TABLE`), then hands them to
:func:`keel.core.comparison.compare_arms`. Charts need matplotlib
(``keel[charts]``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from keel.core.comparison import SAMPLES_TABLE, Arm, Comparison, compare_arms
from keel.core.directions import parse_direction
from keel.errors import InvalidInput, NotFound
from keel.services.tracking import TrackingService

__all__ = ["compare_runs", "save_chart"]


def compare_runs(
    tracking: TrackingService,
    run_ids: Sequence[str],
    baseline: str | None = None,
    metrics: Sequence[str] | None = None,
    quality: str | None = None,
    alpha: float = 0.05,
    directions: Mapping[str, str] | None = None,
    declared: Any = None,
) -> Comparison:
    """Compare runs (ids or unique prefixes) against a baseline (default: the first).

    ``directions`` declares ``metric -> "higher" | "lower"``; runs may declare theirs with
    ``keel.direction.<metric>`` tags, projects with ``declared`` (a
    :class:`~keel.services.directions.DirectionService`: its ``declared(projects)`` is asked for
    the compared runs' projects); see :mod:`keel.core.directions`."""
    if not (isinstance(alpha, int | float) and 0 < alpha < 1):
        raise InvalidInput(f"invalid alpha {alpha!r}", "a level between 0 and 1, e.g. alpha=0.05")
    explicit = {m: parse_direction(way, m) for m, way in (directions or {}).items()}
    if len(run_ids) < 2:
        raise InvalidInput("a comparison needs at least two runs", "keel runs compare RUN RUN [RUN...]")
    records = tracking.get_runs([tracking.resolve_run_id(r) for r in run_ids])
    base = tracking.resolve_run_id(baseline) if baseline else records[0].run_id
    if base not in {r.run_id for r in records}:
        records = [tracking.get_run(base), *records]
    arms = []
    for record in records:
        try:
            rows = tracking.read_table(record.run_id, SAMPLES_TABLE).to_dicts()
        except NotFound:
            rows = []
        label = record.name or record.run_id[:8]
        arms.append(Arm.from_table(record.run_id, label, record.metrics, rows, record.tags))
    missing = [m for m in metrics or () if not any(m in a.metrics or a.scores(m) or a.failure(m) for a in arms)]
    if missing:
        raise InvalidInput(f"no compared run has the metric {missing[0]!r}", "check the metric names")
    on_projects = declared.declared(sorted({r.project for r in records})) if declared is not None else None
    return compare_arms(
        arms,
        baseline=base,
        metrics=metrics,
        quality=quality,
        alpha=alpha,
        directions=explicit,
        project_directions=on_projects,
    )


def save_chart(comparison: Comparison, path: str | os.PathLike[str]) -> Path:
    """Draw the quality-vs-cost trade-off (PNG or SVG by the file's suffix)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InvalidInput("charts need matplotlib", "pip install 'keel[charts]'") from None
    out = Path(path)
    if out.suffix.lower() not in (".png", ".svg"):
        raise InvalidInput(f"cannot draw a chart as {out.suffix or 'no suffix'}", "use a .png or .svg file")
    objectives = list(comparison.objectives)
    if len(objectives) < 2:
        raise InvalidInput("a trade-off chart needs a cost or latency metric on every run", "log cost_per_query")
    quality, x_metric = objectives[0], objectives[1]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm in comparison.arms:
        result = comparison.result(arm.key, quality) if quality in comparison.metrics else None
        y = result.mean if result is not None else float(arm.metrics.get(quality, math.nan))
        x = float(arm.metrics.get(x_metric, math.nan))
        on_front = arm.key in comparison.pareto
        ax.scatter([x], [y], s=70, marker="o" if on_front else "x", zorder=3)
        if result is not None and not math.isnan(result.ci_low):
            ax.errorbar([x], [y], yerr=[[y - result.ci_low], [result.ci_high - y]], fmt="none", capsize=4)
        ax.annotate(arm.label, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    front = sorted(
        (float(a.metrics[x_metric]), comparison.result(a.key, quality).mean if quality in comparison.metrics
         else float(a.metrics[quality]))
        for a in comparison.arms if a.key in comparison.pareto
    )  # fmt: skip
    if len(front) > 1:
        ax.plot([p[0] for p in front], [p[1] for p in front], linestyle="--", linewidth=1, label="Pareto front")
        ax.legend()
    ax.set_xlabel(x_metric)
    ax.set_ylabel(quality)
    if all(float(a.metrics.get(x_metric, 0)) > 0 for a in comparison.arms):
        ax.set_xscale("log")
    ax.set_title(f"{quality} vs {x_metric}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
