"""A/B tests: experiment definitions, deterministic assignment, and the analysis.

Pure: no I/O.

- An :class:`Experiment` has a name, a hypothesis, a unit (``user_id``,
  ``session``, ...), variants (each maps to a prompt version, a model version
  and/or config overrides) with allocation weights summing to 1, optional
  targeting conditions (the flag operators), a primary metric, guardrails
  (optionally with a non-inferiority margin) and a design
  (:mod:`keel.core.ab_design`: sequential, fixed horizon, or unstated for
  definitions stored before designs existed).
- :func:`compile_assigner` makes the hot path: a unit falls in one of 10,000
  buckets by the experiment's recorded scheme (:mod:`keel.core.bucketing`:
  BLAKE2b-64 of name, salt and unit for new experiments; ``crc32`` for ones
  stored before the scheme was recorded) and each variant owns a contiguous
  range of buckets, so assignment is deterministic and sticky.
- :func:`analyze` turns exposures (unit -> variant) and outcomes (unit, metric,
  value) into per-variant sample sizes, means/rates with intervals (Wilson,
  Student's t), differences vs the control (first variant) with intervals and
  p-values under the design (sequential: always-valid mSPRT p-values and
  confidence sequences, :mod:`keel.core.sequential`; fixed and unstated:
  two-proportion z for 0/1 metrics, Welch otherwise, a fixed horizon reading only
  its first planned units), Holm-adjusted across treatments; guardrail checks
  (a one-sided harm test, Holm across guardrails x treatments, or
  non-inferiority against a margin); a sample-ratio-mismatch check (chi-square
  over the weighted arms; any unit in a 0-weight arm is a mismatch); the sample
  size the design needs, corrected for the number of treatments; and a
  plain-language verdict that starts with what the design makes it valid for.
  See docs/ab-statistics.md.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.core.ab_design import Design, parse_design, plan_n
from keel.core.bucketing import BUCKETS, LEGACY, bucketer, check_scheme
from keel.core.flags import Condition, _all, _condition, _matcher, parse_weights
from keel.core.sequential import (
    DEFAULT_TAU_SD,
    MIN_UNITS,
    confidence_sequence,
    msprt_p,
    rate_variance,
)
from keel.core.stats import (
    holm,
    srm_test,
    t_ci,
    two_proportion_z,
    welch_diff,
    wilson_ci,
)
from keel.errors import InvalidInput, KeelError

__all__ = [
    "CONVERSATION_METRICS",
    "SRM_ALPHA",
    "Analysis",
    "Comparison",
    "Design",
    "Experiment",
    "Guardrail",
    "GuardrailCheck",
    "Variant",
    "VariantStats",
    "analyze",
    "compile_assigner",
    "parse_experiment",
    "srm_check",
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
    """A metric that must not get worse (``worse``: "lower" or "higher").

    Without a ``margin`` the guardrail blocks a variant shown to be worse (a one-sided
    test, corrected across every guardrail and treatment). With a ``margin`` (absolute,
    in the metric's units) it is a non-inferiority check: the variant may ship only when
    its harm is shown to be smaller than the margin."""

    metric: str
    worse: str = "lower"
    margin: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out: dict[str, Any] = {"metric": self.metric, "worse": self.worse}
        if self.margin is not None:
            out["margin"] = self.margin
        return out


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
    design: Design = field(default_factory=Design)  # how the verdict may be read (keel.core.ab_design)

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
            "design": self.design.to_dict(),
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


def parse_experiment(
    spec: Mapping[str, Any], default_bucketing: str = LEGACY, default_design: str = "unstated"
) -> Experiment:
    """An experiment from its dict form; every mistake is an InvalidInput naming it.

    ``default_design`` is the design when the spec states none: a stored definition
    without one predates designs (``unstated``: analysed as it always was, labelled);
    a new experiment is created ``sequential`` (:mod:`keel.core.ab_design`).

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
        margin = g.get("margin")
        if margin is not None and (
            isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 < margin < math.inf
        ):
            raise InvalidInput(
                f"{where}: guardrail {g['metric']!r}: margin must be a number > 0, not {margin!r}",
                "the largest harm you accept, in the metric's units (e.g. margin: 50 for latency_ms)",
            )
        unknown_keys = set(g) - {"metric", "worse", "margin"}
        if unknown_keys:
            raise InvalidInput(f"{where}: guardrail {g['metric']!r} has unknown field(s) {sorted(unknown_keys)}",
                               "a guardrail has metric, worse, margin")  # fmt: skip
        guardrails.append(Guardrail(g["metric"], worse, None if margin is None else float(margin)))
    targeting = spec.get("targeting") or {}
    if not isinstance(targeting, Mapping):
        raise InvalidInput(f"{where}: targeting must map attributes to conditions", "e.g. {country: {in: [US]}}")
    unit = spec.get("unit", "user_id")
    if not isinstance(unit, str) or not unit:
        raise InvalidInput(f"{where}: unit must be an attribute name", "user_id or session")
    metric = spec.get("primary_metric") or "thumbs_up"
    higher_is_better = bool(spec.get("higher_is_better", True))
    design = parse_design(spec.get("design"), where, len(variants) - 1, higher_is_better, default_design)
    return Experiment(
        name=name,
        variants=tuple(variants),
        hypothesis=str(spec.get("hypothesis") or ""),
        unit=unit,
        primary_metric=str(metric),
        higher_is_better=higher_is_better,
        guardrails=tuple(guardrails),
        targeting=tuple(_condition(str(a), s, where) for a, s in targeting.items()),
        salt=str(spec.get("salt") or ""),
        bucketing=check_scheme(spec.get("bucketing") or default_bucketing, f"{where}: bucketing"),
        design=design,
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
    """A variant against the control on one metric.

    ``ci`` is a confidence interval (fixed horizon) or a confidence sequence
    (sequential); ``p_adjusted`` is Holm-adjusted across the treatments, and
    ``significant`` uses it (so the table and the verdict agree). ``decided`` is
    False on an interim look of a fixed-horizon design."""

    metric: str
    variant: str
    diff: float
    ci: tuple[float, float]
    p_value: float
    p_adjusted: float
    test: str
    significant: bool
    decided: bool = True

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
            "decided": self.decided,
        }


@dataclass(frozen=True)
class GuardrailCheck:
    """One guardrail on one treatment.

    ``method``: "harm test" (one-sided, Holm across every guardrail and treatment),
    "non-inferiority" (one-sided at alpha / treatments against the margin), or
    "two-sided test, uncorrected" (experiments with no stated design). ``bound`` is
    the confidence bound on the harmful side of the difference. ``status``: "ok",
    "breached", "non-inferior", "not shown non-inferior", "not decided", "no data"."""

    metric: str
    variant: str
    method: str
    margin: float | None
    diff: float
    bound: float
    p_adjusted: float
    status: str

    @property
    def blocks(self) -> bool:
        """True when this check keeps the variant from shipping."""
        return self.status in ("breached", "not shown non-inferior")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "metric": self.metric,
            "variant": self.variant,
            "method": self.method,
            "margin": self.margin,
            "diff": self.diff,
            "bound": self.bound,
            "p_adjusted": self.p_adjusted,
            "status": self.status,
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
    design: Design = field(default_factory=Design)
    decided: bool = True
    guardrail_checks: list[GuardrailCheck] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "experiment": self.experiment,
            "control": self.control,
            "primary_metric": self.primary_metric,
            "design": self.design.to_dict(),
            "design_label": self.design.label(),
            "decided": self.decided,
            "exposures": self.exposures,
            "srm": {"p_value": self.srm_p, "mismatch": self.srm},
            "metrics": {m: [s.to_dict() for s in rows] for m, rows in self.stats.items()},
            "binary": self.binary,
            "comparisons": [c.to_dict() for c in self.comparisons],
            "mde": self.mde,
            "required_n_per_variant": self.required_n,
            "guardrail_breaches": [c.to_dict() for c in self.guardrail_breaches],
            "guardrails": [g.to_dict() for g in self.guardrail_checks],
            "verdict": self.verdict,
            "alpha": self.alpha,
        }


def _fmt(x: float, binary: bool) -> str:
    if math.isnan(x):
        return "n/a"
    return f"{x * 100:+.2f} pp" if binary else f"{x:+.4g}"


def srm_check(counts: Sequence[int], weights: Sequence[float]) -> tuple[float, bool]:
    """``(p_value, mismatch)`` of the sample-ratio check.

    A unit in a 0-weight arm is a mismatch by itself (p = 0): nothing should be
    assigned there. The chi-square test runs over the arms with weight > 0 only, so
    its degrees of freedom are (arms with weight) - 1."""
    if any(c > 0 and w <= 0 for c, w in zip(counts, weights, strict=True)):
        return 0.0, True
    live = [(c, w) for c, w in zip(counts, weights, strict=True) if w > 0]
    if len(live) < 2 or sum(c for c, _ in live) == 0:
        return math.nan, False
    _, p = srm_test([c for c, _ in live], [w for _, w in live])
    return p, not math.isnan(p) and p < SRM_ALPHA


def unit_values(
    assignments: Mapping[str, str], outcomes: Iterable[tuple[str, str, float]]
) -> dict[str, dict[str, float]]:
    """``{metric: {unit: value}}``: a unit's several values of a metric average to one."""
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
    return {m: {u: total / count for u, (total, count) in units.items()} for m, units in sums.items()}


def _by_variant(
    assignments: Mapping[str, str], units: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    for metric, values in units.items():
        by_variant: dict[str, list[float]] = defaultdict(list)
        for unit, value in values.items():
            if unit in assignments:
                by_variant[assignments[unit]].append(value)
        out[metric] = dict(by_variant)
    return out


def per_unit(
    assignments: Mapping[str, str], outcomes: Iterable[tuple[str, str, float]]
) -> dict[str, dict[str, list[float]]]:
    """``{metric: {variant: [per-unit mean]}}``: a unit's several values average to one."""
    return _by_variant(assignments, unit_values(assignments, outcomes))


def _horizon(
    assignments: Mapping[str, str], primary: Mapping[str, float], variants: Sequence[str], n: int
) -> tuple[dict[str, str], int]:
    """The units of a fixed-horizon analysis: per variant, units in exposure order (the
    order of ``assignments``) up to the one that brings its primary-metric count to ``n``.
    Returns them and the smallest count reached."""
    seen = dict.fromkeys(variants, 0)
    kept: dict[str, str] = {}
    for unit, variant in assignments.items():
        if variant not in seen or seen[variant] >= n:
            continue
        kept[unit] = variant
        if unit in primary:
            seen[variant] += 1
    return kept, min(seen.values(), default=0)


@dataclass
class _Raw:
    """One treatment against the control on one metric, before any correction."""

    variant: str
    diff: float
    p: float  # two-sided
    test: str
    ci: tuple[float, float]  # at the display level
    bounds: Callable[[float], tuple[float, float]]  # two-sided interval at a given alpha


def _fixed_raw(variant: str, control: Sequence[float], xs: Sequence[float], is_bin: bool, alpha: float) -> _Raw:
    if is_bin:
        xa, na, xb, nb = int(sum(control)), len(control), int(sum(xs)), len(xs)

        def bounds(level: float) -> tuple[float, float]:
            return two_proportion_z(xa, na, xb, nb, 1 - level)[1]

        diff, ci, p = two_proportion_z(xa, na, xb, nb, 1 - alpha)
        return _Raw(variant, diff, p, "two-proportion z", ci, bounds)

    def welch_bounds(level: float) -> tuple[float, float]:
        return welch_diff(control, xs, 1 - level)[1]

    diff, ci, p = welch_diff(control, xs, 1 - alpha)
    return _Raw(variant, diff, p, "Welch t", ci, welch_bounds)


def _moments(xs: Sequence[float], is_bin: bool) -> tuple[int, float, float]:
    """``(n, mean, variance of the mean)``; a rate's variance uses the add-one rate."""
    n = len(xs)
    if n == 0:
        return 0, math.nan, math.nan
    mean = sum(xs) / n
    if is_bin:
        return n, mean, float(rate_variance(sum(xs), n))
    var = sum((x - mean) ** 2 for x in xs) / (n - 1) if n > 1 else math.nan
    return n, mean, var / n


def _sequential_raw(
    variant: str, control: Sequence[float], xs: Sequence[float], is_bin: bool, tau: float, alpha: float
) -> _Raw:
    na, ma, va = _moments(control, is_bin)
    nb, mb, vb = _moments(xs, is_bin)
    nan2 = (math.nan, math.nan)
    if min(na, nb) < MIN_UNITS or not math.isfinite(va + vb) or not (math.isfinite(tau) and tau > 0):
        diff = mb - ma if na and nb else math.nan
        return _Raw(variant, diff, math.nan, "mSPRT (always valid)", nan2, lambda level: nan2)
    diff, var, tau2 = mb - ma, va + vb, tau * tau
    if var <= 0:  # identical constant values in both arms: no evidence of a difference
        var = 1e-300

    def bounds(level: float) -> tuple[float, float]:
        low, high = confidence_sequence(diff, var, tau2, level)
        return float(low), float(high)

    return _Raw(variant, diff, float(msprt_p(diff, var, tau2)), "mSPRT (always valid)", bounds(alpha), bounds)


def _tau(exp: Experiment, metric: str, rows: Sequence[VariantStats], is_bin: bool) -> float:
    """The effect scale the mixture is tuned for: the design's mde (primary metric), a
    guardrail's margin, else a tenth of the metric's pooled sd."""
    if metric == exp.primary_metric and exp.design.mde is not None:
        return exp.design.mde
    margins = [g.margin for g in exp.guardrails if g.metric == metric and g.margin is not None]
    if margins:
        return min(margins)
    if is_bin:
        x = sum(r.mean * r.n for r in rows if r.n)
        n = sum(r.n for r in rows)
        p = (x + 1) / (n + 2)
        return DEFAULT_TAU_SD * math.sqrt(p * (1 - p))
    return DEFAULT_TAU_SD * _pooled_sd(rows)


def analyze(
    exp: Experiment,
    assignments: Mapping[str, str],
    outcomes: Iterable[tuple[str, str, float]],
    mde: float | None = None,
    alpha: float | None = None,
    power: float = 0.8,
) -> Analysis:
    """The analysis of one experiment under its design (see the module docstring).

    ``assignments``: unit -> variant (each exposed unit once), in exposure order
    (a fixed-horizon design analyses the first planned units of each variant);
    ``outcomes``: ``(unit, metric, value)``; a unit's several values of a metric are
    averaged. ``mde``: the absolute minimum detectable effect on the primary metric
    for the sample-size line (default: the design's, else 10% of the control's mean).
    ``alpha``: default the design's (0.05 without one).
    """
    design = exp.design
    alpha = design.alpha if alpha is None else alpha
    names = [v.name for v in exp.variants]
    counts = dict.fromkeys(names, 0)
    for variant in assignments.values():
        if variant in counts:
            counts[variant] += 1
    srm_p, srm = srm_check([counts[n] for n in names], [v.weight for v in exp.variants])
    units = unit_values(assignments, outcomes)
    decided = True
    if design.kind == "fixed" and design.n is not None:
        live = [v.name for v in exp.variants if v.weight > 0]
        assignments, reached = _horizon(assignments, units.get(exp.primary_metric, {}), live, design.n)
        decided = reached >= design.n
    values = _by_variant(assignments, units)
    metrics = [exp.primary_metric] + [g.metric for g in exp.guardrails if g.metric != exp.primary_metric]
    metrics += sorted(m for m in values if m not in metrics)
    treatments = max(1, len(names) - 1)
    level = alpha / treatments if design.kind == "sequential" else alpha  # a CS simultaneous over treatments
    stats: dict[str, list[VariantStats]] = {}
    binary: dict[str, bool] = {}
    comparisons: list[Comparison] = []
    raws: dict[str, list[_Raw]] = {}
    for metric in metrics:
        data = values.get(metric, {})
        is_bin = bool(data) and all(x in (0.0, 1.0) for xs in data.values() for x in xs)
        binary[metric] = is_bin
        rows = [_variant_stats(n, data.get(n, []), is_bin) for n in names]
        stats[metric] = rows
        control = data.get(exp.control, [])
        if design.kind == "sequential":
            tau = _tau(exp, metric, rows, is_bin)
            raw = [_sequential_raw(n, control, data.get(n, []), is_bin, tau, level) for n in names[1:]]
        else:
            raw = [_fixed_raw(n, control, data.get(n, []), is_bin, alpha) for n in names[1:]]
        raws[metric] = raw
        adjusted = holm([r.p for r in raw]) if len(raw) > 1 else [r.p for r in raw]
        for r, p_adj in zip(raw, adjusted, strict=True):
            significant = bool(decided and not math.isnan(p_adj) and p_adj < alpha)  # a bool, not numpy's
            diff, p_raw, p_adj = float(r.diff), float(r.p), float(p_adj)
            comparisons.append(Comparison(metric, r.variant, diff, r.ci, p_raw, p_adj, r.test, significant, decided))
    primary = stats[exp.primary_metric]
    is_bin = binary[exp.primary_metric]
    mde, required = _plan(exp, primary, is_bin, mde, alpha, power, treatments)
    if design.kind == "unstated":
        checks = _unstated_guardrails(exp, comparisons)
    else:
        checks = _guardrails(exp, raws, alpha, treatments, decided)
    breached = {(c.metric, c.variant) for c in checks if c.status == "breached"}
    breaches = [c for c in comparisons if (c.metric, c.variant) in breached]
    verdict = _verdict(exp, counts, srm, srm_p, primary, comparisons, is_bin, mde, required, checks, alpha, decided)
    return Analysis(
        exp.name, exp.control, exp.primary_metric, counts, srm_p, srm, stats, comparisons, binary,
        mde, required, breaches, verdict, alpha, design, decided, checks,
    )  # fmt: skip


def _plan(
    exp: Experiment,
    primary: Sequence[VariantStats],
    is_bin: bool,
    mde: float | None,
    alpha: float,
    power: float,
    treatments: int,
) -> tuple[float, int]:
    """``(mde, units per variant)``: the design's plan when it has one, else a plan from
    the data so far (corrected for the number of treatments, for the design's test)."""
    design = exp.design
    if design.kind == "fixed" and design.n is not None:
        return (design.mde if design.mde is not None else math.nan), design.n
    if mde is None and design.mde is not None:
        mde = design.mde
        if design.n is not None:
            return mde, design.n
    base = primary[0]
    if mde is None:
        mde = abs(base.mean) * 0.1 if math.isfinite(base.mean) and base.mean != 0 else math.nan
    if not math.isfinite(mde) or mde <= 0:
        return mde, -1
    kind = "sequential" if design.kind == "sequential" else "fixed"
    # the sequential plan is for the test that runs: tuned for the design's mde, else the default
    tau = _tau(exp, exp.primary_metric, primary, is_bin) if kind == "sequential" else None
    if tau is not None and not (math.isfinite(tau) and tau > 0):
        return mde, -1
    try:
        if is_bin:
            return mde, plan_n(kind, mde, baseline=base.mean, sd=None, alpha=alpha, power=power,
                               comparisons=treatments, higher_is_better=exp.higher_is_better, tau=tau)  # fmt: skip
        sd = _pooled_sd(primary)
        if not (math.isfinite(sd) and sd > 0):
            return mde, -1
        return mde, plan_n(kind, mde, baseline=None, sd=sd, alpha=alpha, power=power, comparisons=treatments, tau=tau)
    except KeelError:  # an impossible target (a rate beyond 1): no plan rather than a wrong one
        return mde, -1


def _harm(g: Guardrail, diff: float) -> float:
    """How much worse the variant is on the guardrail (positive = worse)."""
    return -diff if g.worse == "lower" else diff


def _guardrails(
    exp: Experiment, raws: Mapping[str, list[_Raw]], alpha: float, treatments: int, decided: bool
) -> list[GuardrailCheck]:
    """Harm tests (one-sided, Holm over every guardrail x treatment) and non-inferiority
    checks (one-sided at alpha / treatments against the margin: a variant ships only if
    every one passes, an intersection-union test, so no correction across guardrails)."""
    sequential = exp.design.kind == "sequential"
    harm: list[tuple[Guardrail, _Raw, float]] = []
    out: list[GuardrailCheck] = []
    ni_level = alpha / treatments
    for g in exp.guardrails:
        for r in raws.get(g.metric, []):
            if g.margin is None:
                if math.isnan(r.p):
                    one_sided = math.nan
                elif sequential:  # always-valid two-sided p: valid (conservative) one-sided
                    one_sided = r.p if _harm(g, r.diff) > 0 else 1.0
                else:
                    one_sided = r.p / 2 if _harm(g, r.diff) > 0 else 1 - r.p / 2
                harm.append((g, r, one_sided))
                continue
            # sequential: the harm side of the (two-sided) confidence sequence; fixed: a
            # two-sided interval at 2 * level has a one-sided bound at level
            low, high = r.bounds(ni_level if sequential else 2 * ni_level)
            bound = -low if g.worse == "lower" else high
            if math.isnan(bound):
                status = "not decided" if not decided else "not shown non-inferior"
            elif not decided:
                status = "not decided"
            else:
                status = "non-inferior" if bound < g.margin else "not shown non-inferior"
            check = GuardrailCheck(g.metric, r.variant, "non-inferiority", g.margin, r.diff, bound, math.nan, status)
            out.append(check)
    adjusted = holm([p for _, _, p in harm]) if harm else []
    for (g, r, _), p_adj in zip(harm, adjusted, strict=True):
        low, high = r.ci
        bound = -low if g.worse == "lower" else high
        if math.isnan(p_adj):
            status = "no data"
        elif not decided:
            status = "not decided"
        else:
            status = "breached" if p_adj < alpha else "ok"
        out.append(GuardrailCheck(g.metric, r.variant, "harm test", None, r.diff, bound, p_adj, status))
    return out


def _unstated_guardrails(exp: Experiment, comparisons: Sequence[Comparison]) -> list[GuardrailCheck]:
    """Experiments with no stated design keep their old rule: a guardrail is breached when
    its two-sided test (Holm across treatments only) is significant in the worse direction."""
    out = []
    for g in exp.guardrails:
        for c in comparisons:
            if c.metric != g.metric:
                continue
            worse = (c.diff < 0) == (g.worse == "lower")
            low, high = c.ci
            bound = -low if g.worse == "lower" else high
            status = "no data" if math.isnan(c.p_adjusted) else ("breached" if c.significant and worse else "ok")
            out.append(GuardrailCheck(g.metric, c.variant, "two-sided test, uncorrected", None, c.diff, bound,
                                      c.p_adjusted, status))  # fmt: skip
    return out


def _variant_stats(name: str, xs: Sequence[float], is_bin: bool) -> VariantStats:
    n = len(xs)
    if n == 0:
        return VariantStats(name, 0, math.nan, (math.nan, math.nan), math.nan)
    mean = sum(xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else math.nan
    # Wilson for rates, Student's t for means: nominal coverage from n = 5 (a percentile
    # bootstrap covered 0.83 at n = 5; see docs/statistics.md)
    ci = wilson_ci(int(sum(xs)), n) if is_bin else t_ci(xs)
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
    checks: list[GuardrailCheck],
    alpha: float,
    decided: bool,
) -> list[str]:
    design = exp.design
    out = [design.label()]
    total = sum(counts.values())
    if total == 0:
        return [f"No exposures yet: nobody has been assigned to {exp.name!r}.", *out]
    if srm:
        out.append(
            f"Sample ratio mismatch (chi-square p = {srm_p:.2g}): the split {dict(counts)} does not match the "
            "weights (or a unit is in a 0-weight arm); assignment or logging is broken, so do not trust these results."
        )
    metric = exp.primary_metric
    have = min((r.n for r, v in zip(primary, exp.variants, strict=True) if v.weight > 0), default=0)
    treatments = max(1, len(exp.variants) - 1)
    if design.kind == "sequential":
        interval = f"{100 * (1 - alpha / treatments):.4g}% confidence sequence"
        p_word = "always-valid p" + (" (Holm)" if treatments > 1 else "")
    else:
        interval = f"{100 * (1 - alpha):.4g}% CI"
        p_word = "p" + (" (Holm)" if treatments > 1 else "")
    if not decided:
        out.append(
            f"Not decided: {have} of {design.n} planned units per variant have {metric} so far. A fixed-horizon "
            "verdict is read once, at the planned n; deciding on an interim look ships a no-better variant more "
            "often than alpha."
        )
    for c in (c for c in comparisons if c.metric == metric):
        if math.isnan(c.p_value):
            short = f" (the sequential test needs {MIN_UNITS} units per arm)" if design.kind == "sequential" else ""
            out.append(f"{c.variant} vs {exp.control}: not enough {metric} data to compare yet{short}.")
            continue
        better = (c.diff > 0) == exp.higher_is_better
        ci = f"{_fmt(c.ci[0], is_bin)} to {_fmt(c.ci[1], is_bin)}"
        if not decided:
            out.append(f"Interim, not a decision: {c.variant} vs {exp.control} on {metric}: {_fmt(c.diff, is_bin)} "
                       f"({interval} {ci}).")  # fmt: skip
        elif c.significant:
            word = "better" if better else "worse"
            out.append(
                f"{c.variant} is {word} than {exp.control} on {metric}: {_fmt(c.diff, is_bin)} "
                f"({interval} {ci}, {p_word} = {c.p_adjusted:.3g}), significant at {alpha:g}."
            )
        else:
            need = f"; about {required} units per variant are needed to detect {_fmt(mde, is_bin).lstrip('+')}" \
                if required > 0 else ""  # fmt: skip
            out.append(
                f"No significant difference between {c.variant} and {exp.control} on {metric} yet: "
                f"{_fmt(c.diff, is_bin)} ({interval} {ci}, {p_word} = {c.p_adjusted:.3g}); "
                f"{have} units per variant so far{need}."
            )
    for b in checks:
        if b.status == "breached":
            out.append(
                f"GUARDRAIL BREACHED: {b.metric} is significantly worse in {b.variant} "
                f"({_fmt(b.diff, False)}, p = {b.p_adjusted:.3g}, {b.method})."
            )
        elif b.status == "not shown non-inferior":
            out.append(
                f"GUARDRAIL NOT SHOWN SAFE: {b.metric} in {b.variant} may be worse by up to {b.bound:.4g} "
                f"(margin {b.margin:g}); it cannot ship until the harm is shown to be under the margin."
            )
    blocked = {b.variant for b in checks if b.blocks}
    winners = [
        c for c in comparisons if c.metric == metric and c.significant and ((c.diff > 0) == exp.higher_is_better)
    ]
    if design.kind == "unstated":  # the old rule: any breach blocks every variant
        blocked = {v.name for v in exp.variants} if blocked else set()
    shippable = [c for c in winners if c.variant not in blocked]
    if not decided:
        out.append(f"Verdict: not decided yet ({have} of {design.n} planned units per variant).")
    elif shippable and not srm:
        best = max(shippable, key=lambda c: c.diff if exp.higher_is_better else -c.diff)
        out.append(f"Verdict: ship {best.variant}.")
    elif any(b.status == "breached" for b in checks) or winners:
        out.append("Verdict: do not ship: a guardrail is breached." if any(b.status == "breached" for b in checks)
                   else "Verdict: do not ship: a guardrail is not shown safe.")  # fmt: skip
    elif srm:
        out.append("Verdict: fix the sample ratio mismatch before deciding.")
    elif design.kind == "sequential":
        out.append(
            f"Verdict: keep {exp.control} (no variant is significantly better yet; looking again later is safe)."
        )
    else:
        out.append(f"Verdict: keep {exp.control} (no variant is significantly better yet).")
    return out
