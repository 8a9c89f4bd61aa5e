"""Always-valid inference for A/B tests that are looked at while they run.

Pure: no I/O. Every function takes scalars or numpy arrays (vectorised over
replications, which is how the simulation suite runs thousands of experiments).

A fixed-horizon test (Welch, two-proportion z) is valid for ONE look at a
sample size chosen in advance. Looked at daily and stopped at the first
"significant", its false-positive rate grows with the number of looks
(100 units per arm per day, alpha 0.05: 0.08 by day 7, 0.16 by day 56). The
mixture sequential probability ratio test (mSPRT) of Johari, Koomen, Pekelis
and Walsh ("Peeking at A/B tests", KDD 2017; "Always valid inference",
Operations Research 2022) is valid at every look, however many:

- the estimate of the difference ``d`` (treatment minus control) is about
  normal with variance ``V`` (``s_a^2 / n_a + s_b^2 / n_b``, plug-in);
- against a normal mixture of alternatives ``theta ~ N(0, tau^2)`` the
  likelihood ratio is ``L = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2)))``;
- under no difference ``L`` is a nonnegative martingale with mean 1, so by
  Ville's inequality ``P(L >= 1/alpha at any look) <= alpha``. The always-valid
  p-value is ``min(1, 1/L)`` (and the running minimum over looks is still valid);
- inverting the same test gives a confidence sequence (Howard, Ramdas,
  McAuliffe and Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence
  sequences", Annals of Statistics 2021): ``d +- half_width`` with
  ``half_width^2 = V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V))``.
  It covers the true difference at every look at once with probability
  ``>= 1 - alpha``, and excludes 0 exactly when ``p <= alpha``, so the table and
  the verdict never disagree.

``tau`` is the scale of effects the test is tuned for: the design's minimum
detectable effect when the plan states one (the test is most powerful near it),
otherwise a tenth of the metric's standard deviation. The guarantee holds for
any ``tau`` fixed before the data: only power depends on it.

The price of looking whenever you like is a larger sample for the same power:
:func:`sequential_sample_size` plans it (the n at which a single look has the
requested power; looks before it can only stop earlier).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from keel.errors import InvalidInput

__all__ = [
    "DEFAULT_TAU_SD",
    "MIN_UNITS",
    "log_likelihood_ratio",
    "msprt_p",
    "confidence_sequence",
    "rate_variance",
    "sequential_power",
    "sequential_sample_size",
]

#: Without a stated effect size, the mixture is tuned for a tenth of a standard deviation.
DEFAULT_TAU_SD = 0.1
#: Units per arm before the normal approximation is trusted; fewer: "not decided".
MIN_UNITS = 30
_NORMAL = NormalDist()


def _check_alpha(alpha: float) -> None:
    if not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise InvalidInput(f"alpha must be between 0 and 1, not {alpha!r}", "e.g. alpha=0.05")


def log_likelihood_ratio(diff: np.ndarray | float, var: np.ndarray | float, tau2: np.ndarray | float) -> np.ndarray:
    """``log L`` of the normal-mixture SPRT (NaN where ``var`` is not positive and finite)."""
    d = np.asarray(diff, dtype=np.float64)
    v = np.asarray(var, dtype=np.float64)
    t = np.asarray(tau2, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = 0.5 * np.log(v / (v + t)) + t * d * d / (2 * v * (v + t))
    return np.where((v > 0) & np.isfinite(v) & (t > 0), out, np.nan)


def msprt_p(diff: np.ndarray | float, var: np.ndarray | float, tau2: np.ndarray | float) -> np.ndarray:
    """Always-valid two-sided p-value ``min(1, 1/L)``: ``P(p <= alpha at any look) <= alpha``."""
    log_l = log_likelihood_ratio(diff, var, tau2)
    with np.errstate(over="ignore"):
        return np.where(np.isnan(log_l), np.nan, np.minimum(1.0, np.exp(-np.maximum(log_l, -700.0))))


def confidence_sequence(
    diff: np.ndarray | float, var: np.ndarray | float, tau2: np.ndarray | float, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)``: covers the true difference at every look at once with probability ``>= 1 - alpha``."""
    _check_alpha(alpha)
    d = np.asarray(diff, dtype=np.float64)
    v = np.asarray(var, dtype=np.float64)
    t = np.asarray(tau2, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        half = np.sqrt(v * (v + t) / t * (2 * math.log(1 / alpha) + np.log((v + t) / v)))
    half = np.where((v > 0) & np.isfinite(v) & (t > 0), half, np.nan)
    return d - half, d + half


def rate_variance(successes: np.ndarray | float, n: np.ndarray | float) -> np.ndarray:
    """Variance of an observed rate, ``p~(1 - p~) / n`` with ``p~ = (x + 1) / (n + 2)``.

    The add-one rate keeps the variance positive at 0 of n or n of n (a plug-in
    ``p(1 - p)`` of 0 would make the first look after no events look certain)."""
    x = np.asarray(successes, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    p = (x + 1) / (m + 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m > 0, p * (1 - p) / m, np.nan)


def _threshold_z(var: float, tau2: float, alpha: float) -> float:
    """The |d| / sqrt(V) above which the mSPRT rejects at this look."""
    return math.sqrt((var + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((var + tau2) / var)))


def sequential_power(
    sd: float, mde: float, n: int, alpha: float = 0.05, comparisons: int = 1, tau: float | None = None
) -> float:
    """Power of one look at ``n`` units per arm for a true difference ``mde`` (per-unit sd ``sd``;
    the mSPRT at ``alpha / comparisons``, tuned for ``tau``, default ``mde``)."""
    _check_alpha(alpha)
    if not (math.isfinite(sd) and sd > 0 and math.isfinite(mde) and mde > 0 and n >= 1):
        raise InvalidInput("sd, mde and n must be positive and finite", "e.g. sd=0.5, mde=0.02, n=5000")
    tau = mde if tau is None else tau
    var = 2 * sd * sd / n
    c = _threshold_z(var, tau * tau, alpha / comparisons)
    shift = mde / math.sqrt(var)
    return _NORMAL.cdf(shift - c) + _NORMAL.cdf(-shift - c)


def sequential_sample_size(
    sd: float, mde: float, alpha: float = 0.05, power: float = 0.8, comparisons: int = 1, tau: float | None = None
) -> int:
    """Units per arm at which one look of the mSPRT has ``power`` to detect ``mde``.

    The test may stop earlier (any look can cross); by this n, a single look at it
    alone already has the requested power. ``comparisons``: treatments corrected for
    (Bonferroni: the test runs at ``alpha / comparisons``)."""
    _check_alpha(alpha)
    if not 0 < power < 1:
        raise InvalidInput(f"power must be between 0 and 1, not {power!r}", "e.g. power=0.8")
    if isinstance(comparisons, bool) or not isinstance(comparisons, int) or comparisons < 1:
        raise InvalidInput(f"comparisons must be a whole number >= 1, not {comparisons!r}", "count the treatments")
    if not (math.isfinite(sd) and sd > 0):
        raise InvalidInput(f"sd must be positive and finite, not {sd!r}", "the per-unit standard deviation")
    if not (math.isfinite(mde) and mde > 0):
        raise InvalidInput(f"mde must be positive and finite, not {mde!r}", "the smallest change worth detecting")
    low, high = 1, 2
    while sequential_power(sd, mde, high, alpha, comparisons, tau) < power:
        low, high = high, high * 2
        if high > 10**12:
            raise InvalidInput("the plan needs more than 10^12 units per arm", "choose a larger mde")
    while high - low > 1:
        mid = (low + high) // 2
        if sequential_power(sd, mde, mid, alpha, comparisons, tau) >= power:
            high = mid
        else:
            low = mid
    return high
