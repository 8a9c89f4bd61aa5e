"""A/B tests: experiment definitions, deterministic assignment, and the analysis.

Pure: no I/O.

- An :class:`Experiment` has a name, a hypothesis, a unit (``user_id``,
  ``session``, ...), variants (each maps to a prompt version, a model version
  and/or config overrides) with allocation weights summing to 1, optional
  targeting conditions (the flag operators), a primary metric and guardrails.
- :func:`compile_assigner` makes the hot path: a unit falls in one of 10,000
  buckets by the experiment's recorded scheme (:mod:`keel.core.bucketing`:
  BLAKE2b-64 of name, salt and unit for new experiments; ``crc32`` for ones
  stored before the scheme was recorded) and each variant owns a contiguous
  range of buckets, so assignment is deterministic and sticky.
- :func:`analyze` turns exposures (unit -> variant) and outcomes (unit, metric,
  value) into per-variant sample sizes, means/rates with intervals, differences
  vs the control (first variant) with intervals and p-values (two-proportion z
  for 0/1 metrics, Welch otherwise), a sample-ratio-mismatch check (chi-square),
  the sample size needed for a chosen minimum detectable effect, guardrail
  breaches, and a plain-language verdict.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.core.bucketing import BUCKETS, LEGACY, bucketer, check_scheme
from keel.core.flags import Condition, _all, _condition, _matcher, parse_weights
from keel.core.stats import (
    bootstrap_ci,
    holm,
    sample_size_means,
    sample_size_proportions,
    srm_test,
    two_proportion_z,
    welch_diff,
    wilson_ci,
)
from keel.errors import InvalidInput

__all__ = [
    "CONVERSATION_METRICS",
    "SRM_ALPHA",
    "Analysis",
    "Comparison",
    "Experiment",
    "Guardrail",
    "Variant",
    "VariantStats",
    "analyze",
    "compile_assigner",
    "parse_experiment",
]

STATUSES = ("draft", "running", "stopped")
#: Metrics derived from conversation feedback: thumbs up rate (0/1 per feedback) and score.
CONVERSATION_METRICS = ("thumbs_up", "score")
SRM_ALPHA = 0.001
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")


@dataclass(frozen=True)
class Variant:
    """One arm: what it serves (prompt / model version, config overrides, any payload)."""

    name: str
    weight: float
    prompt: str | None = None
    model: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    payload: Any = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out: dict[str, Any] = {"name": self.name, "weight": self.weight}
        for key in ("prompt", "model", "payload"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.config:
            out["config"] = dict(self.config)
        return out


@dataclass(frozen=True)
class Guardrail:
    """A metric that must not get significantly worse (``worse``: "lower" or "higher")."""

    metric: str
    worse: str = "lower"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"metric": self.metric, "worse": self.worse}


@dataclass(frozen=True)
class Experiment:
    """An A/B test definition plus its lifecycle state."""

    name: str
    variants: tuple[Variant, ...]
    hypothesis: str = ""
    unit: str = "user_id"
    primary_metric: str = "thumbs_up"
    higher_is_better: bool = True
    guardrails: tuple[Guardrail, ...] = ()
    targeting: tuple[Condition, ...] = ()
    salt: str = ""
    status: str = "draft"
    started_at: int | None = None
    stopped_at: int | None = None
    created_at: int = 0
    author: str = ""
    resolved: dict[str, dict[str, Any]] = field(default_factory=dict)  # variant -> resolved versions
    bucketing: str = LEGACY  # the allocation scheme (keel.core.bucketing); recorded in the definition

    @property
    def control(self) -> str:
        """The first variant: the baseline of every comparison."""
        return self.variants[0].name

    def variant(self, name: str) -> Variant:
        """One variant by name (KeyError if absent)."""
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def definition(self) -> dict[str, Any]:
        """The definition (what :func:`parse_experiment` reads), without the lifecycle state."""
        return {
            "name": self.name,
            "hypothesis": self.hypothesis,
            "unit": self.unit,
            "variants": [v.to_dict() for v in self.variants],
            "primary_metric": self.primary_metric,
            "higher_is_better": self.higher_is_better,
            "guardrails": [g.to_dict() for g in self.guardrails],
            "targeting": {c.attribute: c.to_data() for c in self.targeting},
            "salt": self.salt,
            "bucketing": self.bucketing,
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: definition plus state."""
        out = self.definition()
        out.update(
            status=self.status,
            started_at=self.started_at,
            stopped_at=self.stopped_at,
            created_at=self.created_at,
            author=self.author,
            resolved=self.resolved,
        )
        return out


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(f"invalid experiment name {name!r}", "letters, digits, '_', '-', '.'; up to 200 characters")
    return name


def parse_experiment(spec: Mapping[str, Any], default_bucketing: str = LEGACY) -> Experiment:
    """An experiment from its dict form; every mistake is an InvalidInput naming it.

    ``default_bucketing`` is the scheme when the spec names none: a stored definition
    without one was bucketed by ``crc32`` (the default); a new experiment is created with
    :data:`keel.core.bucketing.DEFAULT`."""
    name = _check_name(spec.get("name"))
    where = f"experiment {name!r}"
    raw = spec.get("variants")
    if isinstance(raw, Mapping):
        raw = [{"name": k, **(v if isinstance(v, Mapping) else {"payload": v})} for k, v in raw.items()]
    if not isinstance(raw, (list, tuple)) or len(raw) < 2:
        raise InvalidInput(
            f"{where} needs at least two variants", "e.g. variants: [{name: control}, {name: treatment}]"
        )
    names = []
    for item in raw:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) or not item["name"]:
            raise InvalidInput(f"{where}: each variant needs a name", "e.g. {name: treatment, prompt: chat@2.0.0}")
        names.append(item["name"])
    if len(set(names)) != len(names):
        raise InvalidInput(f"{where}: variant names repeat: {names}", "give each variant its own name")
    weights_in = spec.get("weights")
    if weights_in is None:
        given = [item.get("weight") for item in raw]
        if all(w is None for w in given):
            weights_in = {n: 1 / len(names) for n in names}
        elif any(w is None for w in given):
            raise InvalidInput(f"{where}: some variants have a weight and some do not", "give every variant a weight")
        else:
            weights_in = dict(zip(names, given, strict=True))
    weights = parse_weights(weights_in, f"{where}: allocation weights")
    if set(weights) != set(names):
        raise InvalidInput(f"{where}: weights name {sorted(weights)}, variants are {names}", "weigh every variant once")
    variants = []
    for item in raw:
        config = item.get("config") or {}
        if not isinstance(config, Mapping):
            raise InvalidInput(
                f"{where}: variant {item['name']!r} config must be a mapping", "e.g. {llm.model: gpt-4o}"
            )
        unknown = set(item) - {"name", "weight", "prompt", "model", "config", "payload"}
        if unknown:
            raise InvalidInput(f"{where}: variant {item['name']!r} has unknown field(s) {sorted(unknown)}",
                               "a variant has name, weight, prompt, model, config, payload")  # fmt: skip
        variants.append(
            Variant(
                item["name"],
                weights[item["name"]],
                None if item.get("prompt") is None else str(item["prompt"]),
                None if item.get("model") is None else str(item["model"]),
                dict(config),
                item.get("payload"),
            )
        )
    guardrails = []
    for g in spec.get("guardrails") or []:
        if isinstance(g, str):
            g = {"metric": g}
        if not isinstance(g, Mapping) or not isinstance(g.get("metric"), str):
            raise InvalidInput(f"{where}: a guardrail is {{metric: NAME, worse: lower|higher}}", "e.g. latency_ms")
        worse = g.get("worse", "lower")
        if worse not in ("lower", "higher"):
            raise InvalidInput(f"{where}: guardrail {g['metric']!r}: worse must be 'lower' or 'higher'", "")
        guardrails.append(Guardrail(g["metric"], worse))
    targeting = spec.get("targeting") or {}
    if not isinstance(targeting, Mapping):
        raise InvalidInput(f"{where}: targeting must map attributes to conditions", "e.g. {country: {in: [US]}}")
    unit = spec.get("unit", "user_id")
    if not isinstance(unit, str) or not unit:
        raise InvalidInput(f"{where}: unit must be an attribute name", "user_id or session")
    metric = spec.get("primary_metric") or "thumbs_up"
    return Experiment(
        name=name,
        variants=tuple(variants),
        hypothesis=str(spec.get("hypothesis") or ""),
        unit=unit,
        primary_metric=str(metric),
        higher_is_better=bool(spec.get("higher_is_better", True)),
        guardrails=tuple(guardrails),
        targeting=tuple(_condition(str(a), s, where) for a, s in targeting.items()),
        salt=str(spec.get("salt") or ""),
        bucketing=check_scheme(spec.get("bucketing") or default_bucketing, f"{where}: bucketing"),
    )


def compile_assigner(exp: Experiment) -> Callable[[Any, Mapping[str, Any] | None], str | None]:
    """``assign(unit_id, context) -> variant name`` (None when targeting excludes the unit)."""
    bucket_of = bucketer(exp.bucketing, exp.name, exp.salt)
    ranges: list[tuple[int, str]] = []
    total = 0.0
    for v in exp.variants:
        total += v.weight
        ranges.append((min(BUCKETS, round(total * BUCKETS)), v.name))
    last = ranges[-1][1]
    target = _all([_matcher(c) for c in exp.targeting]) if exp.targeting else None
    if len(ranges) == 2 and target is None:
        upper, first = ranges[0]

        def two(unit: Any, ctx: Mapping[str, Any] | None = None) -> str | None:
            return first if bucket_of(unit) < upper else last

        return two

    def assign(unit: Any, ctx: Mapping[str, Any] | None = None) -> str | None:
        if target is not None and not target(ctx or {}):
            return None
        b = bucket_of(unit)
        for upper, name in ranges:
            if b < upper:
                return name
        return last

    return assign


# -- analysis ---------------------------------------------------------------------------
@dataclass(frozen=True)
class VariantStats:
    """One variant on one metric: units with a value, mean (or rate) and its interval."""

    variant: str
    n: int
    mean: float
    ci: tuple[float, float]
    sd: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"variant": self.variant, "n": self.n, "mean": self.mean, "ci": list(self.ci), "sd": self.sd}


@dataclass(frozen=True)
class Comparison:
    """A variant against the control on one metric."""

    metric: str
    variant: str
    diff: float
    ci: tuple[float, float]
    p_value: float
    p_adjusted: float
    test: str
    significant: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "metric": self.metric,
            "variant": self.variant,
            "diff": self.diff,
            "ci": list(self.ci),
            "p_value": self.p_value,
            "p_adjusted": self.p_adjusted,
            "test": self.test,
            "significant": self.significant,
        }


@dataclass(frozen=True)
class Analysis:
    """Everything ``keel ab analyze`` prints."""

    experiment: str
    control: str
    primary_metric: str
    exposures: dict[str, int]
    srm_p: float
    srm: bool
    stats: dict[str, list[VariantStats]]  # metric -> per variant
    comparisons: list[Comparison]
    binary: dict[str, bool]
    mde: float
    required_n: int
    guardrail_breaches: list[Comparison]
    verdict: list[str]
    alpha: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "experiment": self.experiment,
            "control": self.control,
            "primary_metric": self.primary_metric,
            "exposures": self.exposures,
            "srm": {"p_value": self.srm_p, "mismatch": self.srm},
            "metrics": {m: [s.to_dict() for s in rows] for m, rows in self.stats.items()},
            "binary": self.binary,
            "comparisons": [c.to_dict() for c in self.comparisons],
            "mde": self.mde,
            "required_n_per_variant": self.required_n,
            "guardrail_breaches": [c.to_dict() for c in self.guardrail_breaches],
            "verdict": self.verdict,
            "alpha": self.alpha,
        }


def _fmt(x: float, binary: bool) -> str:
    if math.isnan(x):
        return "n/a"
    return f"{x * 100:+.2f} pp" if binary else f"{x:+.4g}"


def per_unit(
    assignments: Mapping[str, str], outcomes: Iterable[tuple[str, str, float]]
) -> dict[str, dict[str, list[float]]]:
    """``{metric: {variant: [per-unit mean]}}``: a unit's several values average to one."""
    sums: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for unit, metric, value in outcomes:
        if unit not in assignments or value is None or not math.isfinite(value):
            continue
        acc = sums[metric].get(unit)
        if acc is None:
            sums[metric][unit] = [value, 1.0]
        else:
            acc[0] += value
            acc[1] += 1
    out: dict[str, dict[str, list[float]]] = {}
    for metric, units in sums.items():
        by_variant: dict[str, list[float]] = defaultdict(list)
        for unit, (total, count) in units.items():
            by_variant[assignments[unit]].append(total / count)
        out[metric] = dict(by_variant)
    return out


def analyze(
    exp: Experiment,
    assignments: Mapping[str, str],
    outcomes: Iterable[tuple[str, str, float]],
    mde: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> Analysis:
    """The analysis of one experiment (see the module docstring).

    ``assignments``: unit -> variant (each exposed unit once); ``outcomes``:
    ``(unit, metric, value)``; a unit's several values of a metric are averaged.
    ``mde``: the absolute minimum detectable effect on the primary metric
    (default: 10% of the control's mean).
    """
    names = [v.name for v in exp.variants]
    counts = {n: 0 for n in names}
    for variant in assignments.values():
        if variant in counts:
            counts[variant] += 1
    _, srm_p = srm_test([counts[n] for n in names], [v.weight for v in exp.variants])
    srm = not math.isnan(srm_p) and srm_p < SRM_ALPHA
    values = per_unit(assignments, outcomes)
    metrics = [exp.primary_metric] + [g.metric for g in exp.guardrails if g.metric != exp.primary_metric]
    metrics += sorted(m for m in values if m not in metrics)
    stats: dict[str, list[VariantStats]] = {}
    binary: dict[str, bool] = {}
    comparisons: list[Comparison] = []
    for metric in metrics:
        data = values.get(metric, {})
        is_bin = bool(data) and all(x in (0.0, 1.0) for xs in data.values() for x in xs)
        binary[metric] = is_bin
        rows = []
        for n in names:
            xs = data.get(n, [])
            rows.append(_variant_stats(n, xs, is_bin))
        stats[metric] = rows
        raw: list[tuple[str, float, tuple[float, float], float, str]] = []
        control = data.get(exp.control, [])
        for n in names[1:]:
            xs = data.get(n, [])
            if is_bin:
                diff, ci, p = two_proportion_z(int(sum(control)), len(control), int(sum(xs)), len(xs), 1 - alpha)
                test = "two-proportion z"
            else:
                diff, ci, p = welch_diff(control, xs, 1 - alpha)
                test = "Welch t"
            raw.append((n, diff, ci, p, test))
        adjusted = holm([r[3] for r in raw]) if len(raw) > 1 else [r[3] for r in raw]
        for (n, diff, ci, p, test), p_adj in zip(raw, adjusted, strict=True):
            comparisons.append(Comparison(metric, n, diff, ci, p, p_adj, test, not math.isnan(p_adj) and p_adj < alpha))
    primary = stats[exp.primary_metric]
    base = primary[0]
    is_bin = binary[exp.primary_metric]
    if mde is None:
        mde = abs(base.mean) * 0.1 if math.isfinite(base.mean) and base.mean != 0 else math.nan
    if not math.isfinite(mde) or mde <= 0:
        required = -1
    elif is_bin:
        required = sample_size_proportions(base.mean, mde, alpha, power)
    else:
        pooled_sd = _pooled_sd(primary)
        required = sample_size_means(pooled_sd, mde, alpha, power) if math.isfinite(pooled_sd) else -1
    breaches = []
    for g in exp.guardrails:
        for c in comparisons:
            if c.metric == g.metric and c.significant and ((c.diff < 0) == (g.worse == "lower")):
                breaches.append(c)
    verdict = _verdict(exp, counts, srm, srm_p, primary, comparisons, is_bin, mde, required, breaches, alpha)
    return Analysis(
        exp.name, exp.control, exp.primary_metric, counts, srm_p, srm, stats, comparisons, binary,
        mde, required, breaches, verdict, alpha,
    )  # fmt: skip


def _variant_stats(name: str, xs: Sequence[float], is_bin: bool) -> VariantStats:
    n = len(xs)
    if n == 0:
        return VariantStats(name, 0, math.nan, (math.nan, math.nan), math.nan)
    mean = sum(xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else math.nan
    ci = wilson_ci(int(sum(xs)), n) if is_bin else bootstrap_ci(xs, resamples=1000)
    return VariantStats(name, n, mean, ci, sd)


def _pooled_sd(rows: Sequence[VariantStats]) -> float:
    num = sum((r.n - 1) * r.sd**2 for r in rows if r.n > 1)
    den = sum(r.n - 1 for r in rows if r.n > 1)
    return math.sqrt(num / den) if den > 0 else math.nan


def _verdict(
    exp: Experiment,
    counts: Mapping[str, int],
    srm: bool,
    srm_p: float,
    primary: list[VariantStats],
    comparisons: list[Comparison],
    is_bin: bool,
    mde: float,
    required: int,
    breaches: list[Comparison],
    alpha: float,
) -> list[str]:
    out = []
    total = sum(counts.values())
    if total == 0:
        return [f"No exposures yet: nobody has been assigned to {exp.name!r}."]
    if srm:
        out.append(
            f"Sample ratio mismatch (chi-square p = {srm_p:.2g}): the split {dict(counts)} does not match the "
            "weights; assignment or logging is broken, so do not trust these results."
        )
    metric = exp.primary_metric
    have = min((r.n for r in primary), default=0)
    for c in (c for c in comparisons if c.metric == metric):
        if math.isnan(c.p_value):
            out.append(f"{c.variant} vs {exp.control}: not enough {metric} data to compare yet.")
            continue
        better = (c.diff > 0) == exp.higher_is_better
        ci = f"{_fmt(c.ci[0], is_bin)} to {_fmt(c.ci[1], is_bin)}"
        if c.significant:
            word = "better" if better else "worse"
            out.append(
                f"{c.variant} is {word} than {exp.control} on {metric}: {_fmt(c.diff, is_bin)} "
                f"(95% CI {ci}, p = {c.p_adjusted:.3g}), significant at {alpha:g}."
            )
        else:
            need = f"; about {required} units per variant are needed to detect {_fmt(mde, is_bin).lstrip('+')}" \
                if required > 0 else ""  # fmt: skip
            out.append(
                f"No significant difference between {c.variant} and {exp.control} on {metric} yet: "
                f"{_fmt(c.diff, is_bin)} (95% CI {ci}, p = {c.p_adjusted:.3g}); {have} units per variant so far{need}."
            )
    for b in breaches:
        out.append(
            f"GUARDRAIL BREACHED: {b.metric} is significantly worse in {b.variant} "
            f"({_fmt(b.diff, False)}, p = {b.p_adjusted:.3g})."
        )
    winners = [
        c for c in comparisons if c.metric == metric and c.significant and ((c.diff > 0) == exp.higher_is_better)
    ]
    if winners and not srm and not breaches:
        best = max(winners, key=lambda c: c.diff if exp.higher_is_better else -c.diff)
        out.append(f"Verdict: ship {best.variant}.")
    elif breaches:
        out.append("Verdict: do not ship: a guardrail is breached.")
    elif srm:
        out.append("Verdict: fix the sample ratio mismatch before deciding.")
    else:
        out.append(f"Verdict: keep {exp.control} (no variant is significantly better yet).")
    return out
