"""Statistics for comparing experiments: intervals, tests, corrections, trade-offs.

Everything is deterministic (resampling uses a seeded generator) and pure.

- :func:`bootstrap_ci`: a percentile bootstrap interval for a mean.
- :func:`paired_test`: two runs scored on the same samples. Binary scores use
  McNemar's test (exact binomial below 25 discordant pairs, else the
  continuity-corrected chi-square); continuous scores use a sign-flip
  permutation test on the per-sample differences (exact when n <= 16).
- :func:`unpaired_test`: different samples: Welch's t-test.
- :func:`holm`: Holm-Bonferroni adjusted p-values across metrics.
- :func:`min_detectable_effect`: the smallest true difference the comparison
  would detect with 80% power at the given alpha (normal approximation).
- :func:`pareto_front`: the non-dominated configurations over objectives
  (maximise quality, minimise cost and latency).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from statistics import NormalDist
from typing import Any

import numpy as np

from keel.errors import InvalidInput

__all__ = [
    "TestResult",
    "Values",
    "bootstrap_ci",
    "chi2_sf",
    "holm",
    "is_binary",
    "mcnemar",
    "min_detectable_effect",
    "pareto_front",
    "regularized_gamma_q",
    "sample_size_means",
    "sample_size_proportions",
    "srm_test",
    "paired_test",
    "percentile",
    "student_t_ppf",
    "student_t_sf",
    "two_proportion_z",
    "unpaired_test",
    "welch",
    "welch_diff",
    "wilson_ci",
]

_NORMAL = NormalDist()

#: Scores: any sequence of numbers, or a numpy array.
Values = Sequence[float] | np.ndarray


@dataclass(frozen=True)
class TestResult:
    """The outcome of comparing a metric between a baseline (a) and a candidate (b)."""

    method: str
    n: int
    delta: float  # mean(b) - mean(a)
    p_value: float
    ci_low: float  # CI of the delta
    ci_high: float
    mde: float  # the smallest |delta| detectable with 80% power

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "method": self.method,
            "n": self.n,
            "delta": self.delta,
            "p_value": self.p_value,
            "ci": [self.ci_low, self.ci_high],
            "mde": self.mde,
        }


# -- input checks: a statistic of bad input is a plausible wrong number, so refuse it ----------
def _check_finite(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidInput(f"{name} must be a number, not {value!r}", f"pass a finite number as {name}")
    if not math.isfinite(value):
        raise InvalidInput(f"{name} is {value}", f"pass a finite number as {name}")


def _check_positive(name: str, value: float) -> None:
    _check_finite(name, value)
    if value <= 0:
        raise InvalidInput(f"{name} must be > 0, not {value:g}", f"pass the smallest change worth detecting as {name}")


def _check_probability(name: str, value: float, open_interval: bool = False) -> None:
    _check_finite(name, value)
    if open_interval and not 0 < value < 1:
        raise InvalidInput(f"{name} must be between 0 and 1 (exclusive), not {value:g}", f"e.g. {name}=0.05")
    if not 0 <= value <= 1:
        raise InvalidInput(f"{name} must be between 0 and 1, not {value:g}", f"pass a proportion as {name}")


def _check_count(name: str, value: int) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        and not (isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer())
    ):
        raise InvalidInput(f"{name} must be a whole number, not {value!r}", f"pass a count as {name}")
    if value < 0:
        raise InvalidInput(f"{name} must be >= 0, not {value}", f"pass a count as {name}")


def _array(values: Values) -> np.ndarray:
    data = np.asarray(values, dtype=np.float64)
    return data[~np.isnan(data)]


def percentile(values: Values, q: float) -> float:
    """The q-th percentile (0-100, linear interpolation); NaN for no values."""
    data = _array(values)
    return float(np.percentile(data, q)) if data.size else math.nan


def bootstrap_ci(values: Values, confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean (NaN, NaN for no values)."""
    data = _array(values)
    if data.size == 0:
        return math.nan, math.nan
    if data.size == 1 or np.all(data == data[0]):
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    means = _resampled_means(data, resamples, rng)
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def _resampled_means(data: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty(resamples)
    step = max(1, 4_000_000 // max(1, data.size))  # bound the index matrix to ~32 MB
    for start in range(0, resamples, step):
        count = min(step, resamples - start)
        idx = rng.integers(0, data.size, size=(count, data.size))
        out[start : start + count] = data[idx].mean(axis=1)
    return out


def is_binary(values: Values) -> bool:
    """True if every value is 0 or 1."""
    data = _array(values)
    return bool(data.size) and bool(np.all((data == 0) | (data == 1)))


def min_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest |delta| detectable at ``alpha`` (two-sided) with ``power``, for a
    difference whose per-sample standard deviation is ``sd`` over ``n`` samples."""
    if n <= 0 or not math.isfinite(sd):
        return math.inf
    z = _NORMAL.inv_cdf(1 - alpha / 2) + _NORMAL.inv_cdf(power)
    return z * sd / math.sqrt(n)


def mcnemar(a: Values, b: Values) -> float:
    """Two-sided p-value of McNemar's test on paired 0/1 outcomes."""
    x, y = np.asarray(a) > 0.5, np.asarray(b) > 0.5
    only_a = int(np.sum(x & ~y))
    only_b = int(np.sum(~x & y))
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    if discordant < 25:  # exact: binomial(discordant, 1/2), two-sided
        k = min(only_a, only_b)
        tail = sum(math.comb(discordant, i) for i in range(k + 1)) / 2**discordant
        return min(1.0, 2 * tail)
    statistic = (abs(only_a - only_b) - 1) ** 2 / discordant
    return math.erfc(math.sqrt(statistic / 2))  # chi-square, 1 degree of freedom


def _sign_flip_p(diffs: np.ndarray, resamples: int, rng: np.random.Generator) -> float:
    observed = abs(diffs.mean())
    if np.allclose(diffs, 0):
        return 1.0
    n = diffs.size
    if n <= 16:  # every sign pattern
        signs = np.array(list(product((1.0, -1.0), repeat=n)))
        means = np.abs((signs * diffs).mean(axis=1))
        return float(np.mean(means >= observed - 1e-12))
    hits = 0
    done = 0
    step = max(1, 4_000_000 // n)
    while done < resamples:
        count = min(step, resamples - done)
        signs = rng.choice((-1.0, 1.0), size=(count, n))
        hits += int(np.sum(np.abs((signs * diffs).mean(axis=1)) >= observed - 1e-12))
        done += count
    return (hits + 1) / (resamples + 1)


def paired_test(
    a: Values,
    b: Values,
    alpha: float = 0.05,
    resamples: int = 5000,
    seed: int = 0,
) -> TestResult:
    """Compare two runs scored on the same samples (``a[i]`` and ``b[i]`` are one sample)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError("paired scores need the same samples on both sides")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = int(x.size)
    if n == 0:
        return TestResult("none", 0, math.nan, math.nan, math.nan, math.nan, math.inf)
    diffs = y - x
    rng = np.random.default_rng(seed)
    if is_binary(x) and is_binary(y):
        method, p = "mcnemar", mcnemar(x, y)
    else:
        method, p = "paired permutation", _sign_flip_p(diffs, resamples, rng)
    low, high = bootstrap_ci(diffs, 1 - alpha, seed=seed)
    sd = float(diffs.std(ddof=1)) if n > 1 else math.inf
    return TestResult(method, n, float(diffs.mean()), p, low, high, min_detectable_effect(sd, n, alpha))


def unpaired_test(a: Values, b: Values, alpha: float = 0.05, seed: int = 0) -> TestResult:
    """Compare two runs scored on different samples (Welch's t-test; bootstrap CI of the delta)."""
    x, y = _array(a), _array(b)
    if x.size < 2 or y.size < 2:
        delta = float(y.mean() - x.mean()) if x.size and y.size else math.nan
        return TestResult("welch", int(min(x.size, y.size)), delta, math.nan, math.nan, math.nan, math.inf)
    p = welch(x, y)
    rng = np.random.default_rng(seed)
    deltas = _resampled_means(y, 2000, rng) - _resampled_means(x, 2000, rng)
    tail = alpha / 2 * 100
    se = math.sqrt(x.var(ddof=1) / x.size + y.var(ddof=1) / y.size)
    n = int(min(x.size, y.size))
    return TestResult(
        "welch",
        n,
        float(y.mean() - x.mean()),
        p,
        float(np.percentile(deltas, tail)),
        float(np.percentile(deltas, 100 - tail)),
        min_detectable_effect(se * math.sqrt(n), n, alpha),
    )


def welch(x: Values, y: Values) -> float:
    """Two-sided p-value of Welch's unequal-variance t-test."""
    a, b = _array(x), _array(y)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    if va + vb == 0:
        return 1.0 if a.mean() == b.mean() else 0.0
    t = (b.mean() - a.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    return min(1.0, 2 * student_t_sf(abs(float(t)), float(df)))


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2, 0.5, x)
    return tail if t >= 0 else 1.0 - tail


def student_t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (bisection on the tail)."""
    _check_probability("q", q, open_interval=True)
    _check_positive("df", df)
    if q == 0.5:
        return 0.0
    upper = q > 0.5
    tail = 1 - q if upper else q
    low, high = 0.0, 1.0
    while student_t_sf(high, df) > tail:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        if student_t_sf(mid, df) > tail:
            low = mid
        else:
            high = mid
        if high - low <= 1e-13 * max(1.0, high):
            break
    t = (low + high) / 2
    return t if upper else -t


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) (continued fraction, Lentz)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc(b, a, 1 - x)
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1) < 1e-14:
            break
    return math.exp(log_front) * f / a


def holm(p_values: Values) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order (NaN stays NaN)."""
    indexed = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    indexed.sort()
    m = len(indexed)
    out = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def pareto_front(
    points: Mapping[str, Mapping[str, float]],
    objectives: Mapping[str, str],
    key: Callable[[str], Any] | None = None,
) -> list[str]:
    """Names of the non-dominated points. ``objectives`` maps a metric to ``"max"`` or
    ``"min"``; points missing a metric are left out. Sorted by ``key`` (default: name)."""
    usable = {
        name: values
        for name, values in points.items()
        if all(m in values and not math.isnan(float(values[m])) for m in objectives)
    }

    def better_or_equal(p: Mapping[str, float], q: Mapping[str, float], metric: str) -> bool:
        return p[metric] >= q[metric] if objectives[metric] == "max" else p[metric] <= q[metric]

    def dominates(p: Mapping[str, float], q: Mapping[str, float]) -> bool:
        return all(better_or_equal(p, q, m) for m in objectives) and any(p[m] != q[m] for m in objectives)

    front = [n for n, v in usable.items() if not any(dominates(w, v) for o, w in usable.items() if o != n)]
    return sorted(front, key=key)


# -- A/B tests --------------------------------------------------------------------------
def regularized_gamma_q(a: float, x: float) -> float:
    """Q(a, x) = Gamma(a, x) / Gamma(a), the regularised upper incomplete gamma function
    (series below a + 1, Lentz continued fraction above, as in Numerical Recipes)."""
    if x <= 0:
        return 1.0
    if math.isinf(x):
        return 0.0
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(1000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1 / (d if abs(d) > tiny else tiny)
        c = b + an / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_front) * h)


def chi2_sf(x: float, df: float) -> float:
    """P(X > x) for a chi-square variable with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError("df must be > 0")
    return regularized_gamma_q(df / 2, x / 2)


def srm_test(counts: Sequence[int], weights: Sequence[float]) -> tuple[float, float]:
    """Sample-ratio-mismatch check: chi-square goodness of fit of ``counts`` to the
    expected allocation ``weights``; returns ``(statistic, p_value)`` (NaN without data)."""
    n = sum(counts)
    total = sum(weights)
    if n == 0 or len(counts) < 2 or total <= 0:
        return math.nan, math.nan
    stat = 0.0
    for observed, weight in zip(counts, weights, strict=True):
        expected = n * weight / total
        if expected > 0:
            stat += (observed - expected) ** 2 / expected
    return stat, chi2_sf(stat, len(counts) - 1)


def two_proportion_z(
    x_a: int, n_a: int, x_b: int, n_b: int, confidence: float = 0.95
) -> tuple[float, tuple[float, float], float]:
    """Rate b minus rate a: ``(difference, (low, high), two-sided p)``; the test pools the
    rates (H0: equal), the interval uses the unpooled standard error (Wald)."""
    if n_a == 0 or n_b == 0:
        return math.nan, (math.nan, math.nan), math.nan
    p_a, p_b = x_a / n_a, x_b / n_b
    diff = p_b - p_a
    pooled = (x_a + x_b) / (n_a + n_b)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    p = (1.0 if diff == 0 else 0.0) if se0 == 0 else 2 * _NORMAL.cdf(-abs(diff) / se0)
    se = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    z = _NORMAL.inv_cdf(1 - (1 - confidence) / 2)
    return diff, (diff - z * se, diff + z * se), min(1.0, p)


def welch_diff(a: Values, b: Values, confidence: float = 0.95) -> tuple[float, tuple[float, float], float]:
    """Mean of b minus mean of a: ``(difference, (low, high), two-sided Welch p)``."""
    x, y = _array(a), _array(b)
    if x.size < 2 or y.size < 2:
        return math.nan, (math.nan, math.nan), math.nan
    diff = float(y.mean() - x.mean())
    se = math.sqrt(x.var(ddof=1) / x.size + y.var(ddof=1) / y.size)
    z = _NORMAL.inv_cdf(1 - (1 - confidence) / 2)
    return diff, (diff - z * se, diff + z * se), welch(x, y)


def wilson_ci(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if n == 0:
        return math.nan, math.nan
    z = _NORMAL.inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _planning_alpha(alpha: float, power: float, comparisons: int) -> float:
    _check_probability("alpha", alpha, open_interval=True)
    _check_probability("power", power, open_interval=True)
    if isinstance(comparisons, bool) or not isinstance(comparisons, int) or comparisons < 1:
        raise InvalidInput(
            f"comparisons must be a whole number >= 1, not {comparisons!r}", "count the tests the analysis corrects for"
        )
    return alpha / comparisons  # Bonferroni: Holm's first (strictest) step, so the plan holds under Holm too


def sample_size_proportions(p: float, mde: float, alpha: float = 0.05, power: float = 0.8, comparisons: int = 1) -> int:
    """Units per variant to detect an absolute change ``mde`` from base rate ``p`` (two-sided).

    ``comparisons`` is the number of tests the analysis corrects for (treatments against
    control, metrics): the plan uses ``alpha / comparisons`` so the corrected analysis still
    has ``power`` at that size. The target rate ``p + mde`` must lie in [0, 1]."""
    _check_probability("p", p)
    _check_positive("mde", mde)
    level = _planning_alpha(alpha, power, comparisons)
    q = p + mde
    if q > 1:
        raise InvalidInput(
            f"a change of {mde:g} from rate {p:g} targets a rate of {q:g}, above 1",
            f"pass an mde of at most {1 - p:g}",
        )
    z = _NORMAL.inv_cdf(1 - level / 2) + _NORMAL.inv_cdf(power)
    variance = p * (1 - p) + q * (1 - q)
    return max(2, math.ceil(z * z * variance / (mde * mde)))


def sample_size_means(sd: float, mde: float, alpha: float = 0.05, power: float = 0.8, comparisons: int = 1) -> int:
    """Units per variant for Welch's / Student's two-sample t-test to detect a change ``mde``
    in a mean whose per-unit standard deviation is ``sd``.

    t-based: the normal-approximation size is raised until the t test at ``2n - 2`` degrees
    of freedom reaches the power (central-t approximation of the noncentral t, Chow, Shao &
    Wang 2008, section 3.2); ``comparisons`` as in :func:`sample_size_proportions`."""
    _check_finite("sd", sd)
    if sd < 0:
        raise InvalidInput(f"sd must be >= 0, not {sd:g}", "pass the per-unit standard deviation")
    _check_positive("mde", mde)
    level = _planning_alpha(alpha, power, comparisons)
    if sd == 0:
        return 2
    effect = mde / sd

    def power_at(n: int) -> float:  # P(T_{2n-2} > t_crit - d * sqrt(n / 2)), the central-t approximation
        df = 2 * n - 2
        return student_t_sf(student_t_ppf(1 - level / 2, df) - effect * math.sqrt(n / 2), df)

    z = _NORMAL.inv_cdf(1 - level / 2) + _NORMAL.inv_cdf(power)
    n = max(2, math.ceil(2 * (z / effect) ** 2))  # the normal-approximation size: never too many
    while power_at(n) < power:
        n += 1
    return n
