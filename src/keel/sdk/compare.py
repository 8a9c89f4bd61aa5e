"""``keel.compare``: runs side by side with confidence intervals, significance and a verdict."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from keel.core.comparison import Comparison
from keel.sdk.session import get_session
from keel.services.compare import compare_runs, save_chart

__all__ = ["Comparison", "compare"]


def compare(
    runs: Sequence[Any],
    baseline: Any = None,
    metrics: Sequence[str] | None = None,
    quality: str | None = None,
    alpha: float = 0.05,
    chart: str | os.PathLike[str] | None = None,
    directions: Mapping[str, str] | None = None,
) -> Comparison:
    """Compare runs (ids, prefixes, or Run/RunRecord objects) against ``baseline`` (default: the first).

    For evaluation runs (a ``samples`` table with ``score.<metric>`` columns) every metric gets
    a (1 - alpha) interval (Wilson for 0/1 scores, Student's t otherwise) and a test against the
    baseline: paired when the runs scored the same samples (McNemar for 0/1 scores, the paired
    t test otherwise), else Fisher's exact test (0/1) or Welch; Holm-corrected across every run
    and metric. ``directions={"metric": "higher" | "lower"}`` declares which way is better
    (runs may declare it with ``keel.direction.<metric>`` tags, projects with
    ``keel.sdk.directions.set``; cost, latency and duration names default to lower); a metric
    of unknown direction gets no "best" claim. The result has the Pareto front over quality,
    ``cost_per_query`` and ``latency_p50_ms``, a plain-language ``verdict``, ``to_markdown()``
    and ``to_dict()``; ``chart="tradeoff.png"`` (or .svg) also draws the trade-off (needs
    ``keel[charts]``). Methods: docs/statistics.md.
    """
    session = get_session()
    session.writer.flush()
    ids = [_run_id(r) for r in runs]
    from keel.sdk.directions import service as directions_service

    result = compare_runs(
        session.service,
        ids,
        None if baseline is None else _run_id(baseline),
        metrics,
        quality,
        alpha,
        directions,
        declared=directions_service(session),
    )
    if chart is not None:
        save_chart(result, chart)
    return result


def _run_id(run: Any) -> str:
    for attribute in ("run_id", "id"):
        value = getattr(run, attribute, None)
        if isinstance(value, str):
            return value
    return str(run)
