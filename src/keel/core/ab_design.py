"""The stated design of an A/B test: how and when its verdict may be read.

Pure: no I/O. A p-value is only as good as the rule for when it was looked at,
so every experiment records one of three designs in its definition:

``sequential`` (the default for new experiments)
    Always-valid inference (:mod:`keel.core.sequential`): look whenever you like,
    as often as you like; a "ship" at any look is wrong at most ``alpha`` of the
    time. ``mde`` (with ``baseline`` for a rate or ``sd`` for a mean) tunes the test
    and plans the sample size; without them the test is tuned for a tenth of a
    standard deviation.

``fixed``
    Fixed horizon: the planned ``n`` units per variant (given, or planned from
    ``mde`` and ``baseline`` / ``sd`` with the correction for the number of
    treatments) are analysed once. Before they are in, every look is "not
    decided"; after, the analysis uses the first ``n`` units of each variant in
    exposure order, so later looks do not change the verdict.

``unstated``
    Experiments stored before keel recorded designs. Their analysis is what it
    was (a fixed-horizon test at every look), labelled for what it is: valid for
    one look at a sample size chosen in advance, not for repeated looks. They may
    move to ``sequential`` (``ABService.set_design``), the one change allowed.

The plan's sample size includes the correction the analysis applies: with
``k`` treatments against one control, each is tested at ``alpha / k`` (Holm's
strictest step), so the planners are called with ``comparisons=k``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keel.core.sequential import sequential_sample_size
from keel.core.stats import sample_size_means, sample_size_proportions
from keel.errors import InvalidInput

__all__ = ["DESIGNS", "Design", "parse_design", "plan_n", "rate_sd"]

DESIGNS = ("sequential", "fixed", "unstated")
_FIELDS = {"type", "alpha", "power", "mde", "baseline", "sd", "n"}


@dataclass(frozen=True)
class Design:
    """How the experiment is analysed (see the module docstring)."""

    kind: str = "unstated"
    alpha: float = 0.05
    power: float = 0.8
    mde: float | None = None  # absolute, on the primary metric
    baseline: float | None = None  # the control's rate, for a 0/1 primary metric
    sd: float | None = None  # the per-unit standard deviation, for a continuous one
    n: int | None = None  # planned units per variant

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what :func:`parse_design` reads back unchanged)."""
        if self.kind == "unstated":
            return {"type": "unstated"}
        out: dict[str, Any] = {"type": self.kind, "alpha": self.alpha, "power": self.power}
        for key in ("mde", "baseline", "sd", "n"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    def label(self) -> str:
        """One line saying what the verdict of this design can be trusted for."""
        if self.kind == "sequential":
            planned = f"; planned {self.n} units per variant for power {self.power:g}" if self.n else ""
            return (
                f"Design: sequential (always-valid mSPRT p-values and confidence sequences at alpha {self.alpha:g}): "
                f"safe to look at any time{planned}."
            )
        if self.kind == "fixed":
            return (
                f"Design: fixed horizon, {self.n} units per variant at alpha {self.alpha:g}: "
                "the verdict is read once, at the planned n."
            )
        return (
            "Design: none stated (created before keel recorded designs): these p-values hold for one look at a "
            "sample size chosen in advance; looking daily and stopping at the first significant result ships a "
            "no-better variant more often than alpha (about 16% over 8 weeks at alpha 0.05). "
            "For repeated looks: keel ab design NAME sequential."
        )


def rate_sd(p: float, mde: float) -> float:
    """The per-unit sd averaged over a rate ``p`` and ``p + mde`` (for planning 0/1 metrics)."""
    q = min(1.0, max(0.0, p + mde))
    return math.sqrt((p * (1 - p) + q * (1 - q)) / 2)


def _number(value: Any, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput(f"{where}: design {what} must be a number, not {value!r}", f"e.g. {what}: 0.05")
    return float(value)


def plan_n(
    kind: str,
    mde: float,
    *,
    baseline: float | None,
    sd: float | None,
    alpha: float,
    power: float,
    comparisons: int,
    higher_is_better: bool = True,
    tau: float | None = None,
) -> int:
    """Units per variant for a design: fixed (the planners of :mod:`keel.core.stats`) or
    sequential (:func:`keel.core.sequential.sequential_sample_size`), corrected for
    ``comparisons`` treatments. A rate plans from ``baseline``; a mean from ``sd``. ``tau``:
    the effect scale the sequential test is tuned for (default ``mde``)."""
    if baseline is not None:
        # a lower-is-better rate falls by mde: the same plan as 1 - baseline rising by mde
        p = baseline if higher_is_better else 1 - baseline
        if kind == "fixed":
            return sample_size_proportions(p, mde, alpha, power, comparisons=comparisons)
        if p + mde > 1:
            raise InvalidInput(f"the target rate {p + mde:g} is above 1", "choose an mde the rate can move by")
        return sequential_sample_size(rate_sd(p, mde), mde, alpha, power, comparisons, tau)
    if sd is None:
        raise InvalidInput("a plan needs the baseline rate or the sd", "give baseline (0/1 metric) or sd")
    if kind == "fixed":
        return sample_size_means(sd, mde, alpha, power, comparisons=comparisons)
    return sequential_sample_size(sd, mde, alpha, power, comparisons, tau)


def parse_design(spec: Any, where: str, treatments: int, higher_is_better: bool, default: str) -> Design:
    """A design from a definition (``None``: ``default``; a string: just the type)."""
    if spec is None:
        spec = {"type": default}
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, Mapping):
        raise InvalidInput(
            f"{where}: design must be a mapping", "e.g. design: {type: sequential, mde: 0.02, baseline: 0.3}"
        )
    kind = spec.get("type", "sequential")
    if kind not in DESIGNS:
        raise InvalidInput(f"{where}: unknown design {kind!r}", "design type is sequential, fixed or unstated")
    unknown = set(spec) - _FIELDS
    if unknown:
        raise InvalidInput(f"{where}: unknown design field(s) {sorted(unknown)}", f"a design has {sorted(_FIELDS)}")
    if kind == "unstated":
        return Design()
    alpha = _number(spec.get("alpha", 0.05), "alpha", where)
    power = _number(spec.get("power", 0.8), "power", where)
    if not 0 < alpha < 0.5 or not 0.5 <= power < 1:
        raise InvalidInput(f"{where}: design alpha {alpha:g} / power {power:g}", "alpha in (0, 0.5), power in [0.5, 1)")
    mde = None if spec.get("mde") is None else _number(spec["mde"], "mde", where)
    if mde is not None and mde <= 0:
        raise InvalidInput(f"{where}: design mde must be > 0", "the smallest absolute change worth detecting")
    baseline = None if spec.get("baseline") is None else _number(spec["baseline"], "baseline", where)
    if baseline is not None and not 0 <= baseline <= 1:
        raise InvalidInput(f"{where}: design baseline {baseline:g} is not a rate", "a rate between 0 and 1")
    sd = None if spec.get("sd") is None else _number(spec["sd"], "sd", where)
    if sd is not None and sd <= 0:
        raise InvalidInput(f"{where}: design sd must be > 0", "the per-unit standard deviation of the metric")
    if baseline is not None and sd is not None:
        raise InvalidInput(f"{where}: design has both baseline and sd", "baseline for a 0/1 metric, sd for a mean")
    n_in = spec.get("n")
    if n_in is not None:
        if isinstance(n_in, bool) or not isinstance(n_in, int) or n_in < 2:
            raise InvalidInput(f"{where}: design n must be a whole number >= 2, not {n_in!r}", "units per variant")
        n: int | None = n_in
    elif mde is not None and (baseline is not None or sd is not None):
        try:
            n = plan_n(kind, mde, baseline=baseline, sd=sd, alpha=alpha, power=power,
                       comparisons=max(1, treatments), higher_is_better=higher_is_better)  # fmt: skip
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: cannot plan the design: {exc.message}", exc.hint) from None
    else:
        n = None
    if kind == "fixed" and n is None:
        raise InvalidInput(
            f"{where}: a fixed-horizon design needs its sample size",
            "give n (units per variant), or mde with baseline (0/1 metric) or sd (mean); or use design: sequential",
        )
    return Design(kind, alpha, power, mde, baseline, sd, n)
