"""Comparing experiment runs with statistics: which differences are real, which is best.

Input: one :class:`Arm` per run: its aggregate metrics, its tags (direction declarations)
and, when it was an evaluation, its per-sample scores (``sample_id -> {metric: score}``).

For every metric and every arm other than the baseline:

- the arm's mean with an interval at the comparison's confidence level (1 - alpha):
  Wilson's for 0/1 scores, Student's t otherwise (aggregate-only runs have none);
- the delta against the baseline and its p-value: *paired* when the two runs scored
  the same samples (McNemar for 0/1 scores, the paired t test otherwise), *unpaired*
  when they did not (Fisher's exact test for 0/1 scores, Welch otherwise);
- Holm's correction across *every* test of the comparison (all arms x all metrics), and
  ``significant`` = adjusted p < alpha; the verdict quotes the same adjusted p;
- the sample size and the smallest effect the test used detects with 80% power, or,
  when no outcome at this n could be significant, the n that could.

Each metric's direction is declared, not guessed (:mod:`keel.core.directions`). Then
the Pareto front over quality, cost and latency (metrics of known direction only), and a
plain-language verdict on the quality metric that says which direction it used; a metric
of unknown direction gets no "best" claim. Methods and references: docs/statistics.md.

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
from keel.core.directions import HIGHER, Direction, resolve_direction
from keel.core.scorers import ScorerErrors, count_scorer_errors

__all__ = ["SAMPLES_TABLE", "SAMPLE_ID", "SCORE_PREFIX", "Arm", "Comparison", "MetricResult", "compare_arms"]

#: An evaluation run logs its per-sample results as this table: a ``sample_id``
#: column and one ``score.<metric>`` column per scorer (plus inputs, outputs, cost...).
SAMPLES_TABLE = "samples"
SAMPLE_ID = "sample_id"
SCORE_PREFIX = "score."


@dataclass(frozen=True)
class Arm:
    """One run in a comparison."""

    key: str
    label: str
    metrics: Mapping[str, float]
    samples: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    scorer_errors: Mapping[str, ScorerErrors] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)  # keel.direction.<metric> declarations

    @classmethod
    def from_table(
        cls,
        key: str,
        label: str,
        metrics: Mapping[str, float],
        rows: Sequence[Mapping[str, Any]],
        tags: Mapping[str, str] | None = None,
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
        return cls(key, label, dict(metrics), samples, errors, dict(tags or {}))

    def failure(self, metric: str) -> ScorerErrors | None:
        """The failed scorer behind ``metric`` (its name, or ``name.key`` of a dict scorer), if any."""
        for name, errors in self.scorer_errors.items():
            if errors.failed and (metric == name or metric.startswith(name + ".")):
                return errors
        return None

    def scores(self, metric: str) -> dict[str, float]:
        """``sample_id -> score`` for one metric (samples without a finite score are left out)."""
        out = {}
        for sample_id, values in self.samples.items():
            value = values.get(metric)
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
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
    needed_n: int | None = None  # set when no outcome at this n could be significant
    min_p: float | None = None  # the smallest p-value the test can give at this n

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
            "min_p": self.min_p,
            "needed_n": self.needed_n,
            "failed": self.failed,
            "errors": self.errors,
        }

    def not_significant_text(self, alpha: float, tests: int = 1) -> str:
        """Why a difference was not called: unreachable at this n, or what n could detect."""
        if self.needed_n is not None:
            level = f"alpha {alpha:g}" + (f"/{tests}" if tests > 1 else "")
            return (
                f"n={self.n} cannot reach significance (smallest attainable p {self.min_p:.2g} >= {level}); "
                f"needs n >= {self.needed_n}"
            )
        text = f"Holm-adjusted p={self.p_adjusted:.2g}"
        if self.mde is None or math.isnan(self.mde):
            return text + f"; n={self.n}, detectable difference unknown (the scores do not vary)"
        if math.isinf(self.mde):
            return text + f"; at n={self.n} no difference is detectable with 80% power"
        return text + f"; n={self.n} detects about {self.mde:.2g} or more"


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
    directions: dict[str, Direction] = field(default_factory=dict)
    tests: int = 0  # the size of the Holm family: every test in the comparison

    @property
    def confidence(self) -> float:
        """The level of every interval shown (1 - alpha)."""
        return 1 - self.alpha

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
            "confidence": self.confidence,
            "correction": {"method": "holm", "tests": self.tests},
            "directions": {m: {"direction": d.way, "source": d.source} for m, d in self.directions.items()},
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

    def legend(self) -> str:
        """What the table shows, with the real confidence level and correction."""
        return (
            f"mean [{_level(self.confidence)} CI]  delta vs baseline  (* significant at alpha={self.alpha:g}, "
            f"Holm-corrected over {self.tests} test{'' if self.tests == 1 else 's'})"
        )

    def power_notes(self) -> list[str]:
        """Per compared run: the test, the sample size and the smallest detectable difference
        (or that this n cannot reach significance, and the n that can)."""
        out = []
        for arm in self.arms:
            if arm.key == self.baseline:
                continue
            tested = [r for r in self.results if r.arm == arm.key and r.method]
            if not tested:
                continue
            parts = []
            for r in tested:
                if r.needed_n is not None:
                    parts.append(
                        f"{r.metric} ({r.method}): cannot reach significance at this n; needs n >= {r.needed_n}"
                    )
                elif r.mde is None or math.isnan(r.mde):
                    parts.append(f"{r.metric} ({r.method}): unknown (the scores do not vary)")
                elif math.isinf(r.mde):
                    parts.append(f"{r.metric} ({r.method}): none at this n")
                else:
                    parts.append(f"{r.metric} {r.mde:.2g} ({r.method})")
            level = f"alpha={self.alpha:g}" + (f"/{self.tests}" if self.tests > 1 else "")
            out.append(
                f"{arm.label}: n={tested[0].n}; smallest difference detectable with 80% power at {level}: "
                + "; ".join(parts)
            )
        return out

    def direction_notes(self) -> list[str]:
        """One line per metric: the direction used and where it came from."""
        return [f"{m}: {d.describe()}" for m, d in self.directions.items()]

    def to_markdown(self) -> str:
        """A Markdown report: the table, the Pareto front and the verdict."""
        head = ["metric", *(f"{a.label}{' (baseline)' if a.key == self.baseline else ''}" for a in self.arms)]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for metric in self.metrics:
            cells = [self.cell(self.result(a.key, metric)) for a in self.arms]
            lines.append("| " + " | ".join([metric, *cells]) + " |")
        lines.append("")
        lines.append(self.legend()[0].upper() + self.legend()[1:] + ".")
        lines.append("Directions: " + "; ".join(self.direction_notes()) + ".")
        lines.extend(f"{line}." for line in self.power_notes())
        if self.pareto:
            lines.append("")
            lines.append("Pareto front (" + ", ".join(f"{k} {v}" for k, v in self.objectives.items()) + "): ")
            lines.append(", ".join(self.label(k) for k in self.pareto))
        if self.verdict:
            lines.append("")
            lines.extend(f"- {v}" for v in self.verdict)
        return "\n".join(lines) + "\n"


def _level(confidence: float) -> str:
    return f"{confidence * 100:.3g}%"


def _num(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _mean_ci(arm: Arm, metric: str, confidence: float) -> tuple[float, float, float, int]:
    scores = arm.scores(metric)
    if scores:
        values = list(scores.values())
        low, high = stats.mean_ci(values, confidence)
        return sum(values) / len(values), low, high, len(values)
    value = arm.metrics.get(metric, math.nan)
    return float(value), math.nan, math.nan, 0


def _test(base: Arm, arm: Arm, metric: str, alpha: float, family: int = 1) -> stats.TestResult | None:
    a, b = base.scores(metric), arm.scores(metric)
    if not a or not b:
        return None
    shared = sorted(set(a) & set(b))
    level = alpha / max(1, family)  # what a single real effect among the family must clear under Holm
    if len(shared) >= 2 and len(shared) >= 0.5 * min(len(a), len(b)):
        return stats.paired_test([a[s] for s in shared], [b[s] for s in shared], alpha=alpha, detect_alpha=level)
    return stats.unpaired_test(list(a.values()), list(b.values()), alpha=alpha, detect_alpha=level)


def compare_arms(
    arms: Sequence[Arm],
    baseline: str | None = None,
    metrics: Sequence[str] | None = None,
    quality: str | None = None,
    cost: str = "cost_per_query",
    latency: str = "latency_p50_ms",
    alpha: float = 0.05,
    directions: Mapping[str, str] | None = None,
    project_directions: Mapping[str, Mapping[str, str]] | None = None,
) -> Comparison:
    """Compare arms against a baseline (default: the first arm). ``metrics`` default to
    the metrics every arm has per-sample scores for, else the aggregate metrics they share.
    ``directions`` declares ``metric -> "higher" | "lower"``; ``project_directions`` holds the
    declarations of the arms' projects (``{project: {metric: direction}}``; see
    :mod:`keel.core.directions`)."""
    if len(arms) < 2:
        raise ValueError("a comparison needs at least two runs")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha!r}")
    base_key = baseline or arms[0].key
    base = next((a for a in arms if a.key == base_key), None)
    if base is None:
        raise ValueError(f"baseline {base_key!r} is not one of the compared runs")
    chosen = list(metrics) if metrics else _default_metrics(arms)
    tags = [a.tags for a in arms]
    resolved = {
        m: resolve_direction(m, directions, tags, project_directions)
        for m in dict.fromkeys([*chosen, cost, latency])
    }
    confidence = 1 - alpha
    family = sum(
        1
        for arm in arms
        if arm.key != base_key
        for m in chosen
        if arm.failure(m) is None and base.failure(m) is None and arm.scores(m) and base.scores(m)
    )
    rows: list[tuple[MetricResult, stats.TestResult | None]] = []
    for arm in arms:
        for metric in chosen:
            failure = arm.failure(metric)
            if failure is not None:
                nan = math.nan
                rows.append((MetricResult(metric, arm.key, nan, nan, nan, 0, failed=True, errors=failure.errors), None))
                continue
            mean, low, high, n = _mean_ci(arm, metric, confidence)
            if arm.key == base_key or base.failure(metric) is not None:
                rows.append((MetricResult(metric, arm.key, mean, low, high, n), None))
                continue
            test = _test(base, arm, metric, alpha, family)
            base_mean = _mean_ci(base, metric, confidence)[0]
            delta = mean - base_mean if test is None else test.delta
            rows.append((MetricResult(metric, arm.key, mean, low, high, n, delta), test))
    # One family: every arm against the baseline on every metric (Holm, 1979).
    adjusted = stats.holm([t.p_value if t is not None and not math.isnan(t.p_value) else math.nan for _, t in rows])
    tests = sum(1 for p in adjusted if not math.isnan(p))
    results: list[MetricResult] = []
    for (result, test), p_adj in zip(rows, adjusted, strict=True):
        if test is None:
            results.append(result)
            continue
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
                needed_n=test.needed_n,
                min_p=test.min_p,
            )
        )
    failed = {m for m in chosen if any(a.failure(m) for a in arms)}
    quality_metric = quality or next(
        (m for m in chosen if resolved[m].way == HIGHER and m not in failed),
        next((m for m in chosen if not resolved[m].known and m not in failed), chosen[0] if chosen else None),
    )
    if quality_metric is not None and quality_metric not in resolved:
        resolved[quality_metric] = resolve_direction(quality_metric, directions, tags, project_directions)
    shown = {m: resolved[m] for m in dict.fromkeys([*chosen, *([quality_metric] if quality_metric else [])])}
    objectives: dict[str, str] = {}
    points: dict[str, dict[str, float]] = {}
    quality_way = resolved[quality_metric].objective if quality_metric is not None else None
    if quality_metric is not None and quality_way is not None:
        objectives[quality_metric] = quality_way
        for metric in (cost, latency):
            objective = resolved[metric].objective
            if objective is not None and metric != quality_metric and all(metric in a.metrics for a in arms):
                objectives[metric] = objective
                shown.setdefault(metric, resolved[metric])
        for arm in arms:
            values = {m: float(arm.metrics.get(m, math.nan)) for m in objectives}
            if quality_metric not in arm.metrics or arm.scores(quality_metric):
                values[quality_metric] = _mean_ci(arm, quality_metric, confidence)[0]
            if arm.failure(quality_metric) is not None:
                values[quality_metric] = math.nan  # off the front: its quality is unknown
            points[arm.key] = values
    order = {a.key: i for i, a in enumerate(arms)}
    front = stats.pareto_front(points, objectives, key=order.__getitem__) if objectives else []
    comparison = Comparison(
        tuple(arms), base_key, tuple(chosen), tuple(results), tuple(front), objectives, (), alpha, shown, tests
    )
    cost_metric = cost if cost in objectives and resolved[cost].objective == "min" else None
    verdict = _verdict(comparison, quality_metric, cost_metric)
    return Comparison(
        tuple(arms), base_key, tuple(chosen), tuple(results), tuple(front), objectives, verdict, alpha, shown, tests
    )


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
        f"{e.summary()} in {c.label(key)}; it is left out of the comparison on {e.name}." for key, e in c.failed_scorers
    ]


def _table_result(c: Comparison, arm: str, metric: str) -> MetricResult | None:
    if metric not in c.metrics:
        return None
    return c.result(arm, metric)


def _significance(c: Comparison, r: MetricResult | None) -> str:
    """``significant, Holm-adjusted p=0.003`` (the table's figure), or why not."""
    if r is None or r.p_adjusted is None or math.isnan(r.p_adjusted):
        return "no per-sample scores, so significance is unknown"
    if r.significant:
        return f"significant, Holm-adjusted p={r.p_adjusted:.3g} over {c.tests} test{'' if c.tests == 1 else 's'}"
    return "not significant: " + r.not_significant_text(c.alpha, c.tests)


def _verdict(c: Comparison, quality: str | None, cost: str | None) -> tuple[str, ...]:
    failures = _failure_lines(c)
    if quality is None:
        return tuple(failures)
    direction = c.directions[quality]
    means = {}
    for a in c.arms:
        if a.failure(quality) is None:
            r = _table_result(c, a.key, quality)
            means[a.key] = r.mean if r is not None else _mean_ci(a, quality, c.confidence)[0]
    means = {k: v for k, v in means.items() if not math.isnan(v)}
    base = c.label(c.baseline) + " (baseline)"
    if not direction.known:
        lines = [
            f"No run is named best on {quality}: its direction is unknown (declare it with "
            f"directions={{'{quality}': 'higher'}}, a scorer's direction or the run tag keel.direction.{quality})."
        ]
        for key in means:
            r = _table_result(c, key, quality)
            if key != c.baseline and r is not None and r.significant and r.delta is not None:
                lines.append(f"{c.label(key)} differs from {base} on {quality}: {r.delta:+.3g}, {_significance(c, r)}.")
        return (*failures, *lines)
    higher = direction.way == HIGHER
    ranked = sorted(means, key=lambda k: means[k], reverse=higher)
    if len(ranked) < 2:
        return tuple(failures)
    best = ranked[0]
    how = direction.describe()
    lines = [*failures]
    if best == c.baseline:
        others = list(ranked[1:])
        closest = others[0]
        r = _table_result(c, closest, quality)
        delta = means[closest] - means[best]
        if all((x := _table_result(c, k, quality)) is not None and x.significant for k in others):
            lines.append(
                f"{base} is best on {quality}: every other run is significantly worse (closest, "
                f"{c.label(closest)}: {delta:+.3g}, {_significance(c, r)}); {how}."
            )
        else:
            lines.append(
                f"No run beats {base} on {quality}; the closest, {c.label(closest)} ({delta:+.3g}), is "
                f"{_significance(c, r)}; {how}."
            )
    else:
        r = _table_result(c, best, quality)
        delta = means[best] - means[c.baseline] if c.baseline in means else math.nan
        if r is not None and r.significant:
            runner_up = ranked[1]
            lead = (
                f" Its lead over {c.label(runner_up)} ({means[best] - means[runner_up]:+.3g}) is not tested: "
                f"compare with {c.label(best)} as the baseline."
                if runner_up != c.baseline
                else ""
            )
            lines.append(
                f"{c.label(best)} is best on {quality} ({delta:+.3g} vs {base}, {_significance(c, r)}); {how}.{lead}"
            )
        else:
            lines.append(
                f"{c.label(best)} scores best on {quality} but does not beat {base}: {delta:+.3g}, "
                f"{_significance(c, r)}; {how}."
            )
    if cost is not None:
        arms = {a.key: a for a in c.arms}
        best_cost = float(arms[best].metrics[cost])
        candidates = [k for k in c.pareto if k != best and k in means and float(arms[k].metrics[cost]) < best_cost]
        if candidates:

            def value_for_money(key: str) -> float:
                spend = float(arms[key].metrics[cost])
                return means[key] / spend if spend > 0 else math.inf

            pick = max(candidates, key=value_for_money) if higher else min(candidates, key=lambda k: means[k])
            share = float(arms[pick].metrics[cost]) / best_cost if best_cost > 0 else math.nan
            gap = means[pick] - means[best]
            lines.append(
                f"{c.label(pick)} offers the best cost-performance ({quality} {gap:+.3g} at "
                f"{share:.0%} of the cost of {c.label(best)})."
            )
        else:
            lines.append(f"{c.label(best)} is also the cheapest option on the Pareto front.")
    return tuple(lines)
