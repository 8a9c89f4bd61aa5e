"""The evaluation gate (``keel gate``, ``keel.gate``): did a change make quality worse?

A *candidate* evaluation run is compared with the *baseline* run: the evaluation of
what an alias (``production``) points at. The baseline is found through lineage:
the alias resolves to a prompt (or model) version, and the evaluation runs that used
that version as an input are its candidates; the latest finished one that scored the
metric wins, preferring runs on the candidate's dataset. The comparison uses keel's
statistics (:mod:`keel.core.stats`): a paired test on the samples both runs scored
(McNemar for 0/1 scores, the paired t test otherwise) or, when they share no sample,
an unpaired one (Fisher's exact test for 0/1 scores, Welch otherwise), said so in the report.

The gate **fails** when the candidate is worse than the baseline by more than
``max_drop`` (in the metric's own units; where lower is better, "worse" means higher:
the direction is declared on the runs, ``keel.direction.<metric>`` tags, or a known
name's default, :mod:`keel.core.directions`; undeclared, the gate takes higher is
better and says so) *and* the difference is significant
(p < ``alpha``). A small drop, or a large one the data cannot tell from noise,
passes; the report says which.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.core import stats
from keel.core.comparison import SAMPLES_TABLE, Arm
from keel.core.directions import HIGHER, resolve_direction
from keel.core.entities import EntityRef, RunRecord
from keel.errors import InvalidInput, NotFound
from keel.services.tracking import TrackingService

__all__ = ["GateResult", "find_baseline", "gate_runs", "regression_data", "require_metric", "run_prompt"]

#: How many changed samples the Markdown report lists (the JSON has them all).
SHOWN_SAMPLES = 10


@dataclass(frozen=True)
class GateResult:
    """The gate's decision and the comparison behind it (see the module docstring)."""

    metric: str
    candidate: str  # run id
    candidate_name: str
    baseline: str  # run id
    baseline_name: str
    baseline_target: str  # what the baseline evaluated: "prompt:calc@1.0.0", or "run:<id>" when named directly
    baseline_ref: str  # what was asked for: "production", "calc@production", "run:<id>"
    baseline_note: str  # how the baseline run was chosen
    max_drop: float
    alpha: float
    test: stats.TestResult
    paired: bool
    shared: int  # samples both runs scored
    baseline_mean: float
    baseline_ci: tuple[float, float]
    baseline_n: int
    candidate_mean: float
    candidate_ci: tuple[float, float]
    candidate_n: int
    worse: tuple[str, ...] = ()  # paired: sample ids that scored lower (higher when lower is better)
    better: tuple[str, ...] = ()
    other_metrics: tuple[tuple[str, float, float], ...] = ()  # (metric, baseline, candidate) aggregates
    notes: tuple[str, ...] = field(default_factory=tuple)
    direction: str = HIGHER  # "higher" or "lower" (keel.core.directions)

    @property
    def higher_is_better(self) -> bool:
        """False when lower is better (declared on the runs, or a cost/latency/duration name)."""
        return self.direction == HIGHER

    @property
    def drop(self) -> float:
        """How much worse the candidate is (positive: worse), in the metric's units."""
        delta = self.test.delta
        return -delta if self.higher_is_better else delta

    @property
    def significant(self) -> bool:
        """The difference is significant at ``alpha``."""
        return not math.isnan(self.test.p_value) and self.test.p_value < self.alpha

    @property
    def regression(self) -> bool:
        """A significant drop beyond ``max_drop``: the gate fails."""
        return self.significant and self.drop > self.max_drop

    @property
    def passed(self) -> bool:
        """The gate passes (no significant regression beyond the allowed drop)."""
        return not self.regression

    def reason(self) -> str:
        """One sentence: why the gate passed or failed."""
        word = "drop" if self.higher_is_better else "rise"
        p = _p(self.test.p_value)
        if self.regression:
            return (
                f"{self.metric} fell by {self.drop:.3g} (allowed {self.max_drop:g}), significant at "
                f"alpha={self.alpha:g} ({p})" if self.higher_is_better else
                f"{self.metric} rose by {self.drop:.3g} (allowed {self.max_drop:g}), significant at "
                f"alpha={self.alpha:g} ({p})"
            )  # fmt: skip
        if self.drop <= 0:
            return f"{self.metric} did not get worse (delta {self.test.delta:+.3g}, {p})"
        if self.drop <= self.max_drop:
            return f"the {word} of {self.drop:.3g} in {self.metric} is within the allowed {self.max_drop:g} ({p})"
        return (
            f"the {word} of {self.drop:.3g} in {self.metric} is not significant at alpha={self.alpha:g} ({p}); "
            + _power_text(self.test)
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``keel gate --json``)."""
        return {
            "passed": self.passed,
            "regression": self.regression,
            "reason": self.reason(),
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "max_drop": self.max_drop,
            "alpha": self.alpha,
            "candidate": {
                "run_id": self.candidate, "name": self.candidate_name, "mean": _finite(self.candidate_mean),
                "ci": [_finite(v) for v in self.candidate_ci], "n": self.candidate_n,
            },
            "baseline": {
                "run_id": self.baseline, "name": self.baseline_name, "mean": _finite(self.baseline_mean),
                "ci": [_finite(v) for v in self.baseline_ci], "n": self.baseline_n,
                "ref": self.baseline_ref, "target": self.baseline_target, "chosen": self.baseline_note,
            },
            "test": {
                "method": self.test.method, "paired": self.paired, "shared_samples": self.shared,
                "n": self.test.n, "delta": _finite(self.test.delta), "ci": [_finite(self.test.ci_low),
                _finite(self.test.ci_high)], "p_value": _finite(self.test.p_value), "mde": _finite(self.test.mde),
            },
            "worse_samples": list(self.worse),
            "better_samples": list(self.better),
            "other_metrics": [{"metric": m, "baseline": b, "candidate": c} for m, b, c in self.other_metrics],
            "notes": list(self.notes),
        }  # fmt: skip

    def to_markdown(self) -> str:
        """The report for a pull-request comment."""
        verdict = "FAILED: regression" if self.regression else "passed"
        mark = ":x:" if self.regression else ":white_check_mark:"
        lines = [
            f"### {mark} keel gate {verdict} on `{self.metric}`",
            "",
            f"{self.reason()}.",
            "",
            "| | run | " + f"{self.metric} [{(1 - self.alpha) * 100:.3g}% CI] | n |",
            "|---|---|---|---|",
            f"| baseline ({_cell(self.baseline_ref)}) | `{self.baseline[:8]}` {_cell(self.baseline_name)} | "
            f"{_interval(self.baseline_mean, self.baseline_ci)} | {self.baseline_n} |",
            f"| candidate | `{self.candidate[:8]}` {_cell(self.candidate_name)} | "
            f"{_interval(self.candidate_mean, self.candidate_ci)} | {self.candidate_n} |",
            "",
            f"Delta {self.test.delta:+.3g} [{_num(self.test.ci_low)}, {_num(self.test.ci_high)}], "
            f"{_p(self.test.p_value)} ({self._method()}); allowed {'drop' if self.higher_is_better else 'rise'} "
            f"{self.max_drop:g}, alpha {self.alpha:g}.",
        ]
        if self.paired:
            lines.append(
                f"Of {self.shared} shared samples, {len(self.worse)} got worse and {len(self.better)} got better."
            )
            if self.worse:
                shown = ", ".join(f"`{_cell(s)}`" for s in self.worse[:SHOWN_SAMPLES])
                more = f" and {len(self.worse) - SHOWN_SAMPLES} more" if len(self.worse) > SHOWN_SAMPLES else ""
                lines.append(f"Worse: {shown}{more}.")
        lines.append(f"Baseline: {self.baseline_note}.")
        lines.extend(f"Note: {note}." for note in self.notes)
        if self.other_metrics:
            lines += ["", "<details><summary>Other metrics</summary>", "", "| metric | baseline | candidate |",
                      "|---|---|---|"]  # fmt: skip
            lines += [f"| {m} | {_num(b)} | {_num(c)} |" for m, b, c in self.other_metrics]
            lines += ["", "</details>"]
        return "\n".join(lines) + "\n"

    def _method(self) -> str:
        if self.paired:
            return f"{self.test.method}, paired on {self.shared} shared samples"
        return f"{self.test.method}, unpaired"


def _finite(value: float) -> float | None:
    return value if isinstance(value, int | float) and math.isfinite(value) else None


def _num(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.3g}"


def _p(value: float) -> str:
    return "p unknown" if math.isnan(value) else f"p={value:.3g}"


def _interval(mean: float, ci: tuple[float, float]) -> str:
    if math.isnan(ci[0]):
        return _num(mean)
    return f"{_num(mean)} [{_num(ci[0])}, {_num(ci[1])}]"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (no pipes, no line breaks)."""
    return text.replace("|", "\\|").replace("\n", " ").replace("`", "'")


# -- finding runs ---------------------------------------------------------------------
def run_prompt(tracking: TrackingService, record: RunRecord) -> EntityRef | None:
    """The prompt version an evaluation run used: its lineage input, else its ``prompt`` param."""
    for edge in tracking.lineage(record.run_id):
        if edge.direction == "input" and edge.entity.kind == "prompt" and edge.entity.version:
            return edge.entity
    value = record.params.get("prompt")
    if isinstance(value, str) and "@" in value:
        name, _, version = value.partition("@")
        return EntityRef("prompt", name, version)
    return None


def _target(prompts: Any, models: Any, baseline: str, candidate_prompt: EntityRef | None) -> tuple[EntityRef, str]:
    """The version ``baseline`` names, and a description of it (``prompt:calc@1.0.0 (calc@production)``)."""
    kind, sep, rest = baseline.partition(":")
    if not sep:
        kind, rest = "prompt", baseline
    if kind not in ("prompt", "model"):
        raise InvalidInput(
            f"cannot gate against {baseline!r}",
            "give an alias (--baseline production), NAME@ALIAS, model:NAME@ALIAS or run:RUN_ID",
        )
    name, at, selector = rest.rpartition("@")
    if not at:
        name, selector = "", rest
    if not name:
        if kind == "model" or candidate_prompt is None:
            raise InvalidInput(
                f"--baseline {baseline!r} names no {kind}" + ("" if kind == "model" else
                ", and the candidate run records no prompt version"),
                f"name it: --baseline {'model:' if kind == 'model' else ''}NAME@{selector or 'production'}",
            )  # fmt: skip
        name = candidate_prompt.id
    if not selector:
        raise InvalidInput(f"--baseline {baseline!r} names no alias or version", f"--baseline {name}@production")
    if kind == "prompt":
        version = prompts.resolve(name, selector)
    else:
        chosen = models.get(name, version=int(selector)) if selector.isdigit() else models.get(name, alias=selector)
        version = str(chosen.version)
    entity = EntityRef(kind, name, version)
    return entity, f"{entity} ({name}@{selector})" if selector != version else str(entity)


def find_baseline(
    tracking: TrackingService,
    prompts: Any,
    models: Any,
    baseline: str,
    metric: str,
    candidate_prompt: EntityRef | None = None,
    dataset_hash: str | None = None,
    exclude: Sequence[str] = (),
) -> tuple[RunRecord, str, str]:
    """The evaluation run of what ``baseline`` names, what it evaluated, and why it was chosen.

    ``baseline`` is ``run:RUN_ID`` (that run), or an alias or version of a prompt
    (``production``, the candidate's prompt; ``calc@production``; ``prompt:calc@1.2.0``) or
    of a model (``model:classifier@champion``). Among the finished runs that used that
    version and scored ``metric``, those on ``dataset_hash`` come first; the latest wins.
    """
    if baseline.startswith("run:"):
        record = tracking.get_run(baseline[4:])
        return record, f"run:{record.run_id}", f"run {record.run_id[:8]}, as given"
    entity, described = _target(prompts, models, baseline, candidate_prompt)
    ids = [i for i in tracking.used_by(entity) if i not in exclude]
    records = [r for r in tracking.get_runs(ids) if r.status == "finished" and not r.deleted] if ids else []
    scored = [r for r in records if r.tags.get("keel.eval") and metric in r.metrics]
    if not scored:
        what = f"no finished evaluation run of {described} with the metric {metric!r}"
        if records:
            what += f" ({len(records)} finished run(s) used it, none scored {metric!r})"
        raise InvalidInput(
            what,
            f"evaluate it first (keel eval run with prompts: [{entity.id}@{entity.version}]) "
            "or name the baseline run: --baseline run:RUN_ID",
        )
    same_data = [r for r in scored if dataset_hash and r.params.get("dataset_hash") == dataset_hash]
    pool = same_data or scored
    chosen = max(pool, key=lambda r: (r.end_time or 0, r.start_time))
    note = f"run `{chosen.run_id[:8]}` evaluated {described}"
    if len(scored) > 1:
        note += f", the latest finished of {len(scored)} evaluation runs of it"
        if same_data and len(same_data) < len(scored):
            note += f" ({len(same_data)} on the candidate's dataset)"
    if dataset_hash and not same_data:
        note += "; it used a different dataset than the candidate"
    return chosen, str(entity), note


# -- the gate -----------------------------------------------------------------------------
def _arm(tracking: TrackingService, record: RunRecord) -> Arm:
    try:
        rows = tracking.read_table(record.run_id, SAMPLES_TABLE).to_dicts()
    except NotFound:
        rows = []
    return Arm.from_table(record.run_id, record.name or record.run_id[:8], record.metrics, rows)


def _scores(arm: Arm, record: RunRecord, metric: str) -> dict[str, float]:
    failure = arm.failure(metric)
    if failure is not None:
        raise InvalidInput(
            f"run {record.run_id[:8]} cannot be gated on {metric!r}: {failure.summary()}",
            "fix the scorer and evaluate again (keel eval run)",
        )
    scores = arm.scores(metric)
    if scores:
        return scores
    known = sorted({m for values in arm.samples.values() for m in values})
    if metric in record.metrics or not arm.samples:
        raise InvalidInput(
            f"run {record.run_id[:8]} has no per-sample scores for {metric!r} (not an evaluation run?)",
            "gate evaluation runs made by 'keel eval run' or keel.evaluate",
        )
    raise InvalidInput(
        f"run {record.run_id[:8]} has no metric {metric!r}",
        f"use --metric with one of: {', '.join(known)}" if known else "check the metric name",
    )


def require_metric(tracking: TrackingService, record: RunRecord, metric: str) -> None:
    """Raise :class:`InvalidInput` (naming the metrics it has) unless ``record`` scored ``metric``."""
    if metric not in record.metrics:
        _scores(_arm(tracking, record), record, metric)


def gate_runs(
    tracking: TrackingService,
    candidate: str,
    baseline: RunRecord,
    metric: str,
    *,
    baseline_ref: str,
    baseline_target: str,
    baseline_note: str,
    max_drop: float = 0.0,
    alpha: float = 0.05,
    seed: int = 0,
    declared: Any = None,
) -> GateResult:
    """Gate run ``candidate`` (id or prefix) against the ``baseline`` run on ``metric``;
    ``declared``: a :class:`~keel.services.directions.DirectionService` for the directions
    the runs' projects declare."""
    if not math.isfinite(max_drop) or max_drop < 0:
        raise InvalidInput(f"invalid --max-drop {max_drop!r}", "a drop of 0 or more, e.g. --max-drop 0.02")
    if not 0 < alpha < 1:
        raise InvalidInput(f"invalid --alpha {alpha!r}", "a level between 0 and 1, e.g. --alpha 0.05")
    record = tracking.get_run(candidate)
    if record.run_id == baseline.run_id:
        raise InvalidInput(
            f"the candidate {record.run_id[:8]} is the baseline run itself",
            "gate a new evaluation run, or name another baseline: --baseline run:RUN_ID",
        )
    cand_arm, base_arm = _arm(tracking, record), _arm(tracking, baseline)
    a, b = _scores(base_arm, baseline, metric), _scores(cand_arm, record, metric)
    shared = [s for s in a if s in b]
    notes: list[str] = []
    if shared:
        test = stats.paired_test([a[s] for s in shared], [b[s] for s in shared], alpha=alpha)
        if len(shared) < max(len(a), len(b)):
            notes.append(
                f"the runs share {len(shared)} of their samples (baseline {len(a)}, candidate {len(b)}): "
                "only the shared ones are compared"
            )
    else:
        test = stats.unpaired_test(list(a.values()), list(b.values()), alpha=alpha)
        notes.append(f"the runs share no samples, so the test is unpaired ({test.method}) and weaker than a paired one")
    on_projects = declared.declared(sorted({baseline.project, record.project})) if declared is not None else None
    direction = resolve_direction(metric, None, [baseline.tags, record.tags], on_projects)
    if not direction.known:
        notes.append(
            f"the direction of {metric} is not declared: taken as higher is better "
            f"(declare it with: keel runs direction {metric} lower, or the run tag keel.direction.{metric}=lower)"
        )
    sign = 1.0 if direction.way in (None, HIGHER) else -1.0
    worse = tuple(s for s in shared if (b[s] - a[s]) * sign < 0)
    better = tuple(s for s in shared if (b[s] - a[s]) * sign > 0)
    base_dataset, cand_dataset = baseline.params.get("dataset_hash"), record.params.get("dataset_hash")
    if base_dataset and cand_dataset and base_dataset != cand_dataset:
        notes.append(f"the runs used different datasets ({str(base_dataset)[:12]} vs {str(cand_dataset)[:12]})")
    return GateResult(
        metric=metric,
        candidate=record.run_id,
        candidate_name=record.name,
        baseline=baseline.run_id,
        baseline_name=baseline.name,
        baseline_target=baseline_target,
        baseline_ref=baseline_ref,
        baseline_note=baseline_note,
        max_drop=float(max_drop),
        alpha=float(alpha),
        test=test,
        paired=bool(shared),
        shared=len(shared),
        baseline_mean=_mean(a),
        baseline_ci=stats.mean_ci(list(a.values()), 1 - alpha),
        baseline_n=len(a),
        candidate_mean=_mean(b),
        candidate_ci=stats.mean_ci(list(b.values()), 1 - alpha),
        candidate_n=len(b),
        worse=worse,
        better=better,
        other_metrics=_other_metrics(baseline.metrics, record.metrics, metric),
        notes=tuple(notes),
        direction=direction.way or HIGHER,
    )


def _power_text(test: stats.TestResult) -> str:
    """What this n can detect, or that it cannot reach significance at all (never a promise it cannot keep)."""
    if test.needed_n is not None:
        return (
            f"n={test.n} cannot reach significance (smallest attainable p {test.min_p:.2g}); needs n >= {test.needed_n}"
        )
    if math.isnan(test.mde):
        return f"n={test.n}, detectable difference unknown (the scores do not vary)"
    if math.isinf(test.mde):
        return f"at n={test.n} no difference is detectable with 80% power"
    return f"n={test.n} detects about {test.mde:.2g} or more"


def _mean(scores: Mapping[str, float]) -> float:
    return sum(scores.values()) / len(scores) if scores else math.nan


#: Aggregates a reviewer wants beside quality (when both runs have them).
_OTHER = ("samples", "failed_samples", "scorer_errors", "cost_per_query", "cost_total", "latency_p50_ms",
          "latency_p95_ms")  # fmt: skip


def _other_metrics(
    base: Mapping[str, float], cand: Mapping[str, float], metric: str
) -> tuple[tuple[str, float, float], ...]:
    keys = [k for k in base if k in cand and k != metric and "_ci_" not in k and not k.startswith(metric + "_ci")]
    keys.sort(key=lambda k: (k not in _OTHER, _OTHER.index(k) if k in _OTHER else 0, k))
    return tuple((k, float(base[k]), float(cand[k])) for k in keys)


def regression_data(result: GateResult) -> dict[str, Any]:
    """What a ``regression.detected`` event says about a failed gate: the metric, the baseline, the test."""
    return {
        "metric": result.metric,
        "baseline": {"run_id": result.baseline, "ref": result.baseline_ref, "target": result.baseline_target},
        "delta": _finite(result.test.delta),
        "p_value": _finite(result.test.p_value),
        "max_drop": result.max_drop,
        "alpha": result.alpha,
        "reason": result.reason(),
    }
