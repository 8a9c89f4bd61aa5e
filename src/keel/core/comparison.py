"""Comparing experiment runs with statistics: which differences are real, which is best.

Input: one :class:`Arm` per run: its aggregate metrics and, when it was an
evaluation, its per-sample scores (``sample_id -> {metric: score}``).

For every metric and every arm other than the baseline:

- the arm's mean with a 95% bootstrap interval (from per-sample scores;
  aggregate-only runs have no interval);
- the delta against the baseline and its p-value: *paired* when the two
  runs scored the same samples (McNemar for 0/1 scores, a sign-flip
  permutation test otherwise), *unpaired* (Welch) when they did not;
- Holm's correction across the compared metrics of that arm, and
  ``significant`` = adjusted p < alpha;
- the sample size and the smallest effect the comparison could have detected
  (80% power).

Then the Pareto front over quality (max), cost and latency (min), and a
plain-language verdict naming the best arm on quality and the best
cost-performance trade-off.

A scorer that failed on more than half of an arm's samples
(:attr:`keel.core.scorers.ScorerErrors.failed`) does not vanish from the
comparison: its metric is compared (even when no arm has a score for it),
the failed arm's result is marked ``failed`` with no mean or test, that arm
is left out of the ranking and the Pareto front on it, and the verdict starts
with one line per failed scorer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.core import stats
from keel.core.scorers import ScorerErrors, count_scorer_errors

__all__ = ["SAMPLES_TABLE", "SAMPLE_ID", "SCORE_PREFIX", "Arm", "Comparison", "MetricResult", "compare_arms"]

#: An evaluation run logs its per-sample results as this table: a ``sample_id``
#: column and one ``score.<metric>`` column per scorer (plus inputs, outputs, cost...).
SAMPLES_TABLE = "samples"
SAMPLE_ID = "sample_id"
SCORE_PREFIX = "score."

LOWER_IS_BETTER = ("cost", "latency", "error", "failed", "hallucination", "tokens", "loss")


def lower_is_better(metric: str) -> bool:
    """True for metrics where smaller is better (cost, latency, error rates...)."""
    return any(word in metric.lower() for word in LOWER_IS_BETTER)


@dataclass(frozen=True)
class Arm:
    """One run in a comparison."""

    key: str
    label: str
    metrics: Mapping[str, float]
    samples: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    scorer_errors: Mapping[str, ScorerErrors] = field(default_factory=dict)

    @classmethod
    def from_table(
        cls, key: str, label: str, metrics: Mapping[str, float], rows: Sequence[Mapping[str, Any]]
    ) -> Arm:
        """An arm from a run's metrics and its samples table rows (see :data:`SAMPLES_TABLE`)."""
        samples: dict[str, dict[str, float]] = {}
        for i, row in enumerate(rows):
            sample_id = str(row.get(SAMPLE_ID, i))
            samples[sample_id] = {
                column[len(SCORE_PREFIX) :]: value
                for column, value in row.items()
                if column.startswith(SCORE_PREFIX) and isinstance(value, int | float) and not isinstance(value, bool)
            }
        errors = {name: e for name, e in count_scorer_errors(rows).items() if e.errors}
        return cls(key, label, dict(metrics), samples, errors)

    def failure(self, metric: str) -> ScorerErrors | None:
        """The failed scorer behind ``metric`` (its name, or ``name.key`` of a dict scorer), if any."""
        for name, errors in self.scorer_errors.items():
            if errors.failed and (metric == name or metric.startswith(name + ".")):
                return errors
        return None

    def scores(self, metric: str) -> dict[str, float]:
        """``sample_id -> score`` for one metric (samples without it are left out)."""
        out = {}
        for sample_id, values in self.samples.items():
            value = values.get(metric)
            if isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value):
                out[sample_id] = float(value)
        return out


@dataclass(frozen=True)
class MetricResult:
    """One metric of one arm, against the baseline."""

    metric: str
    arm: str
    mean: float
    ci_low: float
    ci_high: float
    n: int
    delta: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    significant: bool | None = None
    method: str = ""
    mde: float | None = None
    failed: bool = False  # the scorer failed on most of this run's samples: no mean, no test
    errors: int = 0  # samples on which the scorer failed in this run

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "metric": self.metric,
            "run": self.arm,
            "mean": self.mean,
            "ci": [self.ci_low, self.ci_high],
            "n": self.n,
            "delta": self.delta,
            "p_value": self.p_value,
            "p_adjusted": self.p_adjusted,
            "significant": self.significant,
            "method": self.method,
            "mde": self.mde,
            "failed": self.failed,
            "errors": self.errors,
        }


@dataclass(frozen=True)
class Comparison:
    """The result of :func:`compare_arms`."""

    arms: tuple[Arm, ...]
    baseline: str
    metrics: tuple[str, ...]
    results: tuple[MetricResult, ...]
    pareto: tuple[str, ...]
    objectives: dict[str, str]
    verdict: tuple[str, ...]
    alpha: float = 0.05

    def result(self, arm: str, metric: str) -> MetricResult:
        """The result for one arm (key) and metric."""
        for r in self.results:
            if r.arm == arm and r.metric == metric:
                return r
        raise KeyError((arm, metric))

    def label(self, key: str) -> str:
        """An arm's display label."""
        return next(a.label for a in self.arms if a.key == key)

    @property
    def failed_scorers(self) -> tuple[tuple[str, ScorerErrors], ...]:
        """``(run key, scorer errors)`` of every scorer that failed on most of a run's samples."""
        return tuple((a.key, e) for a in self.arms for e in a.scorer_errors.values() if e.failed)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "baseline": self.baseline,
            "runs": [{"run_id": a.key, "name": a.label} for a in self.arms],
            "metrics": list(self.metrics),
            "alpha": self.alpha,
            "results": [r.to_dict() for r in self.results],
            "pareto_front": list(self.pareto),
            "objectives": dict(self.objectives),
            "verdict": list(self.verdict),
            "failed_scorers": [
                {"run": key, "name": e.name, "errors": e.errors, "samples": e.samples, "first_error": e.first_error}
                for key, e in self.failed_scorers
            ],
        }

    def cell(self, result: MetricResult) -> str:
        """``0.850 [0.80, 0.90]  +0.050 *`` for tables (``FAILED (40 errors)`` for a failed scorer)."""
        if result.failed:
            return f"FAILED ({result.errors} errors)"
        text = _num(result.mean)
        if not math.isnan(result.ci_low):
            text += f" [{_num(result.ci_low)}, {_num(result.ci_high)}]"
        if result.delta is not None:
            text += f"  {result.delta:+.3g}"
            if result.significant:
                text += " *"
        return text

    def power_notes(self) -> list[str]:
        """Per compared run: the test, the sample size and the smallest detectable difference."""
        out = []
        for arm in self.arms:
            if arm.key == self.baseline:
                continue
            tested = [r for r in self.results if r.arm == arm.key and r.method]
            if tested:
                first = tested[0]
                mde = ", ".join(f"{r.metric} {r.mde:.2g}" for r in tested if r.mde is not None and math.isfinite(r.mde))
                out.append(
                    f"{arm.label}: {first.method}, n={first.n}; smallest difference detectable with 80% power: "
                    f"{mde or 'unknown'}"
                )
        return out

    def to_markdown(self) -> str:
        """A Markdown report: the table, the Pareto front and the verdict."""
        head = ["metric", *(f"{a.label}{' (baseline)' if a.key == self.baseline else ''}" for a in self.arms)]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for metric in self.metrics:
            cells = [self.cell(self.result(a.key, metric)) for a in self.arms]
            lines.append("| " + " | ".join([metric, *cells]) + " |")
        lines.append("")
        lines.append(
            f"Mean [95% CI]  delta vs baseline; * = significant at alpha={self.alpha} after Holm's correction."
        )
        lines.extend(f"{line}." for line in self.power_notes())
        if self.pareto:
            lines.append("")
            lines.append("Pareto front (" + ", ".join(f"{k} {v}" for k, v in self.objectives.items()) + "): ")
            lines.append(", ".join(self.label(k) for k in self.pareto))
        if self.verdict:
            lines.append("")
            lines.extend(f"- {v}" for v in self.verdict)
        return "\n".join(lines) + "\n"


def _num(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _mean_ci(arm: Arm, metric: str, seed: int) -> tuple[float, float, float, int]:
    scores = arm.scores(metric)
    if scores:
        values = list(scores.values())
        low, high = stats.bootstrap_ci(values, seed=seed)
        return sum(values) / len(values), low, high, len(values)
    value = arm.metrics.get(metric, math.nan)
    return float(value), math.nan, math.nan, 0


def _test(base: Arm, arm: Arm, metric: str, alpha: float, seed: int) -> stats.TestResult | None:
    a, b = base.scores(metric), arm.scores(metric)
    if not a or not b:
        return None
    shared = sorted(set(a) & set(b))
    if len(shared) >= 2 and len(shared) >= 0.5 * min(len(a), len(b)):
        return stats.paired_test([a[s] for s in shared], [b[s] for s in shared], alpha=alpha, seed=seed)
    return stats.unpaired_test(list(a.values()), list(b.values()), alpha=alpha, seed=seed)


def compare_arms(
    arms: Sequence[Arm],
    baseline: str | None = None,
    metrics: Sequence[str] | None = None,
    quality: str | None = None,
    cost: str = "cost_per_query",
    latency: str = "latency_p50_ms",
    alpha: float = 0.05,
    seed: int = 0,
) -> Comparison:
    """Compare arms against a baseline (default: the first arm). ``metrics`` default to
    the metrics every arm has per-sample scores for, else the aggregate metrics they share."""
    if len(arms) < 2:
        raise ValueError("a comparison needs at least two runs")
    base_key = baseline or arms[0].key
    base = next((a for a in arms if a.key == base_key), None)
    if base is None:
        raise ValueError(f"baseline {base_key!r} is not one of the compared runs")
    chosen = list(metrics) if metrics else _default_metrics(arms)
    results: list[MetricResult] = []
    for arm in arms:
        per_arm: list[MetricResult] = []
        tests: list[stats.TestResult | None] = []
        for metric in chosen:
            failure = arm.failure(metric)
            if failure is not None:
                nan = math.nan
                per_arm.append(MetricResult(metric, arm.key, nan, nan, nan, 0, failed=True, errors=failure.errors))
                tests.append(None)
                continue
            mean, low, high, n = _mean_ci(arm, metric, seed)
            if arm.key == base_key or base.failure(metric) is not None:
                per_arm.append(MetricResult(metric, arm.key, mean, low, high, n))
                tests.append(None)
                continue
            test = _test(base, arm, metric, alpha, seed)
            tests.append(test)
            base_mean = _mean_ci(base, metric, seed)[0]
            delta = mean - base_mean if test is None else test.delta
            per_arm.append(MetricResult(metric, arm.key, mean, low, high, n, delta))
        adjusted = stats.holm([t.p_value if t is not None else math.nan for t in tests])
        for i, (result, test) in enumerate(zip(per_arm, tests, strict=True)):
            if test is None:
                results.append(result)
                continue
            p_adj = adjusted[i]
            results.append(
                MetricResult(
                    result.metric,
                    result.arm,
                    result.mean,
                    result.ci_low,
                    result.ci_high,
                    test.n,
                    result.delta,
                    test.p_value,
                    p_adj,
                    bool(not math.isnan(p_adj) and p_adj < alpha),
                    test.method,
                    test.mde,
                )
            )
    failed = {m for m in chosen if any(a.failure(m) for a in arms)}
    quality_metric = quality or next(
        (m for m in chosen if not lower_is_better(m) and m not in failed),
        next((m for m in chosen if not lower_is_better(m)), chosen[0] if chosen else None),
    )
    objectives: dict[str, str] = {}
    points: dict[str, dict[str, float]] = {}
    if quality_metric is not None:
        objectives[quality_metric] = "min" if lower_is_better(quality_metric) else "max"
        for metric in (cost, latency):
            if all(metric in a.metrics for a in arms):
                objectives[metric] = "min"
        for arm in arms:
            values = {m: float(arm.metrics.get(m, math.nan)) for m in objectives}
            if quality_metric not in arm.metrics or arm.scores(quality_metric):
                values[quality_metric] = _mean_ci(arm, quality_metric, seed)[0]
            if arm.failure(quality_metric) is not None:
                values[quality_metric] = math.nan  # off the front: its quality is unknown
            points[arm.key] = values
    order = {a.key: i for i, a in enumerate(arms)}
    front = stats.pareto_front(points, objectives, key=order.__getitem__) if objectives else []
    comparison = Comparison(tuple(arms), base_key, tuple(chosen), tuple(results), tuple(front), objectives, (), alpha)
    verdict = _verdict(comparison, quality_metric, cost if cost in objectives else None, seed)
    return Comparison(tuple(arms), base_key, tuple(chosen), tuple(results), tuple(front), objectives, verdict, alpha)


def _default_metrics(arms: Sequence[Arm]) -> list[str]:
    scored = [set(_sample_metrics(a)) for a in arms]
    failed = [{e.name for e in a.scorer_errors.values() if e.failed} for a in arms]
    if all(s or f for s, f in zip(scored, failed, strict=True)):
        candidates = dict.fromkeys(m for a in arms for m in _sample_metrics(a))
        candidates.update(dict.fromkeys(n for f in failed for n in sorted(f)))
        # A metric every run scored, or failed to score: a failed scorer is shown as failed, never dropped.
        return [m for m in candidates if all(m in s or a.failure(m) for s, a in zip(scored, arms, strict=True))]
    common = set.intersection(*(set(a.metrics) for a in arms))
    return [m for m in arms[0].metrics if m in common]


def _sample_metrics(arm: Arm) -> list[str]:
    seen: dict[str, None] = {}
    for values in arm.samples.values():
        seen.update(dict.fromkeys(values))
    return list(seen)


def _failure_lines(c: Comparison) -> list[str]:
    return [
        f"{e.summary()} in {c.label(key)}; it is left out of the comparison on {e.name}."
        for key, e in c.failed_scorers
    ]


def _verdict(c: Comparison, quality: str | None, cost: str | None, seed: int) -> tuple[str, ...]:
    failures = _failure_lines(c)
    if quality is None:
        return tuple(failures)
    higher = not lower_is_better(quality)
    means = {a.key: math.nan if a.failure(quality) else _mean_ci(a, quality, seed)[0] for a in c.arms}
    ranked = sorted((k for k in means if not math.isnan(means[k])), key=lambda k: means[k], reverse=higher)
    if len(ranked) < 2:
        return tuple(failures)
    best, runner_up = ranked[0], ranked[1]
    arms = {a.key: a for a in c.arms}
    test = _test(arms[runner_up], arms[best], quality, c.alpha, seed)
    delta = means[best] - means[runner_up]
    if test is None:
        verdict = "no per-sample scores, so significance is unknown"
    elif test.p_value < c.alpha:
        verdict = f"significant, p={test.p_value:.3g}"
    else:
        verdict = f"not significant, p={test.p_value:.2g}; n={test.n} detects about {test.mde:.2g} or more"
    lines = [
        *failures,
        f"{c.label(best)} is best on {quality} ({delta:+.3g} vs {c.label(runner_up)}, {verdict})."
    ]
    if cost is not None:
        best_cost = float(arms[best].metrics[cost])
        candidates = [k for k in c.pareto if k != best and float(arms[k].metrics[cost]) < best_cost]
        if candidates:

            def value_for_money(key: str) -> float:
                spend = float(arms[key].metrics[cost])
                return means[key] / spend if spend > 0 else math.inf

            pick = max(candidates, key=value_for_money)
            share = float(arms[pick].metrics[cost]) / best_cost if best_cost > 0 else math.nan
            gap = means[pick] - means[best]
            lines.append(
                f"{c.label(pick)} offers the best cost-performance ({quality} {gap:+.3g} at "
                f"{share:.0%} of the cost of {c.label(best)})."
            )
        else:
            lines.append(f"{c.label(best)} is also the cheapest option on the Pareto front.")
    return tuple(lines)
