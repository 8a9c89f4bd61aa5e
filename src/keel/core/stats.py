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
from functools import lru_cache
from statistics import NormalDist
from typing import Any

import numpy as np

from keel.core import exact
from keel.errors import InvalidInput

__all__ = [
    "TestResult",
    "Values",
    "bootstrap_ci",
    "chi2_sf",
    "mean_ci",
    "newcombe_diff",
    "newcombe_paired",
    "t_ci",
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
    """The outcome of comparing a metric between a baseline (a) and a candidate (b).

    ``ci_low``/``ci_high`` bound the delta at ``confidence``; ``mde`` is the smallest |delta|
    the test used detects with 80% power at ``alpha`` (NaN when the data cannot tell, inf when
    no effect reaches that power at this n); ``min_p`` is the smallest p-value the test can give
    at this n, and ``needed_n`` (when ``min_p >= alpha``) the n at which significance becomes possible."""

    method: str
    n: int
    delta: float  # mean(b) - mean(a)
    p_value: float
    ci_low: float  # CI of the delta
    ci_high: float
    mde: float  # the smallest |delta| detectable with 80% power
    confidence: float = 0.95
    min_p: float = 0.0
    needed_n: int | None = None

    @property
    def reachable(self) -> bool:
        """False when no outcome at this n could be significant at the test's alpha."""
        return self.needed_n is None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "method": self.method,
            "n": self.n,
            "delta": self.delta,
            "p_value": self.p_value,
            "ci": [self.ci_low, self.ci_high],
            "confidence": self.confidence,
            "mde": self.mde,
            "min_p": self.min_p,
            "needed_n": self.needed_n,
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


def _array(values: Values, name: str = "values") -> np.ndarray:
    """Scores as a float array; NaN or inf is refused (a mean of them is no figure at all)."""
    try:
        data = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be numbers", f"pass a list of numbers as {name}") from None
    if data.ndim != 1:
        raise InvalidInput(f"{name} must be a flat list of numbers", f"pass one score per sample as {name}")
    if not np.all(np.isfinite(data)):
        bad = data[~np.isfinite(data)][0]
        raise InvalidInput(f"{name} holds {bad}", "leave samples without a score out (keel drops them itself)")
    return data


def _check_confidence(confidence: float) -> None:
    _check_probability("confidence", confidence, open_interval=True)


def percentile(values: Values, q: float) -> float:
    """The q-th percentile (0-100, linear interpolation); NaN for no values."""
    data = _array(values)
    _check_finite("q", q)
    if not 0 <= q <= 100:
        raise InvalidInput(f"q must be between 0 and 100, not {q:g}", "e.g. q=95")
    return float(np.percentile(data, q)) if data.size else math.nan


def bootstrap_ci(values: Values, confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean (NaN, NaN for no values).

    Too narrow below about 30 values (covers 83% at n=5 for a nominal 95%): reports use
    :func:`mean_ci` instead."""
    data = _array(values)
    _check_confidence(confidence)
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


def t_ci(values: Values, confidence: float = 0.95) -> tuple[float, float]:
    """Student's t interval of the mean (NaN below 2 values)."""
    data = _array(values)
    _check_confidence(confidence)
    if data.size < 2:
        return math.nan, math.nan
    mean = float(data.mean())
    half = student_t_ppf(1 - (1 - confidence) / 2, data.size - 1) * float(data.std(ddof=1)) / math.sqrt(data.size)
    return mean - half, mean + half


def mean_ci(values: Values, confidence: float = 0.95) -> tuple[float, float]:
    """The interval reports show for a mean: Wilson's for 0/1 scores, Student's t otherwise.

    Both hold their nominal coverage from n = 5 (the simulation suite checks it); 10 of 10
    correct gives Wilson's [0.72, 1], not the bootstrap's [1, 1]."""
    data = _array(values)
    if data.size == 0:
        _check_confidence(confidence)
        return math.nan, math.nan
    if is_binary(data):
        return wilson_ci(int(data.sum()), int(data.size), confidence)
    return t_ci(data, confidence)


def min_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest |delta| a one-sample (paired) t test on ``n`` differences with standard deviation
    ``sd`` detects at ``alpha`` (two-sided) with ``power`` (central-t approximation); NaN when
    ``sd`` is 0 (no variation: the data cannot say), inf below 2 samples."""
    _check_finite("sd", sd)
    if sd < 0:
        raise InvalidInput(f"sd must be >= 0, not {sd:g}", "pass a standard deviation")
    _check_count("n", n)
    _check_probability("alpha", alpha, open_interval=True)
    _check_probability("power", power, open_interval=True)
    if n < 2:
        return math.inf
    if sd == 0:
        return math.nan
    df = n - 1
    return (student_t_ppf(1 - alpha / 2, df) + student_t_ppf(power, df)) * sd / math.sqrt(n)


def _paired_counts(a: Values, b: Values) -> tuple[int, int, int, int]:
    x, y = np.asarray(a) > 0.5, np.asarray(b) > 0.5
    return int(np.sum(x & y)), int(np.sum(x & ~y)), int(np.sum(~x & y)), int(np.sum(~x & ~y))


def mcnemar(a: Values, b: Values) -> float:
    """Two-sided p-value of McNemar's test on paired 0/1 outcomes (exact binomial below 25
    discordant pairs, else the continuity-corrected chi-square)."""
    x, y = _array(a, "a"), _array(b, "b")
    _same_length(x, y)
    _, only_a, only_b, _ = _paired_counts(x, y)
    return exact.mcnemar_p(only_a, only_b)


def _same_length(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape != y.shape:
        raise InvalidInput(
            f"paired scores need the same samples on both sides ({x.size} vs {y.size})",
            "pass one score per shared sample on each side, in the same order",
        )


def _smallest_n(reaches: Callable[[int], bool], start: int, limit: int = 100_000) -> int:
    n = start
    while not reaches(n) and n < limit:
        n = n + 1 if n < 64 else int(n * 1.1)
    return n


@lru_cache(maxsize=4096)
def _mcnemar_mde(n: int, discordant: int, alpha: float, power: float) -> float:
    """Smallest effect McNemar's test detects with ``power``: the discordance is the observed
    share of discordant pairs, raised to the effect where the effect needs more. Exact power
    up to 200 pairs, Connor's (1987) normal approximation above."""
    discordance = discordant / n
    z_alpha = _NORMAL.inv_cdf(1 - alpha / 2)

    def power_at(effect: float) -> float:
        share = max(discordance, effect)
        if n <= 200:
            return exact.mcnemar_power(n, share, effect, alpha)
        spread = math.sqrt(max(share - effect * effect, 1e-12))
        return _NORMAL.cdf((effect * math.sqrt(n) - z_alpha * math.sqrt(share)) / spread)

    if power_at(1.0) < power:
        return math.inf
    low, high = 0.0, 1.0
    for _ in range(30):
        mid = (low + high) / 2
        low, high = (low, mid) if power_at(mid) >= power else (mid, high)
        if high - low < 1e-3 * high:
            break
    return high


def paired_test(
    a: Values, b: Values, alpha: float = 0.05, power: float = 0.8, detect_alpha: float | None = None
) -> TestResult:
    """Compare two runs scored on the same samples (``a[i]`` and ``b[i]`` are one sample).

    0/1 scores: McNemar's test (exact below 25 discordant pairs), Newcombe's interval for the
    difference of paired proportions, the detectable effect from McNemar's exact power.
    Other scores: the paired t test and its interval (they always agree), the detectable
    effect from the t distribution. No threshold on tiny differences: a metric in
    micro-dollars is tested like one in dollars. Differences with no spread at all (every
    sample moved by the same amount) fall back on the sign test.

    ``detect_alpha`` (default ``alpha``) is the level the detectable effect and the
    reachability are computed at: a comparison corrected over m tests passes ``alpha / m``
    (Holm's strictest step), so it promises only what the corrected test can deliver."""
    x, y = _array(a, "a"), _array(b, "b")
    _same_length(x, y)
    _check_probability("alpha", alpha, open_interval=True)
    level = alpha if detect_alpha is None else detect_alpha
    _check_probability("detect_alpha", level, open_interval=True)
    n = int(x.size)
    confidence = 1 - alpha
    if n == 0:
        return TestResult("none", 0, math.nan, math.nan, math.nan, math.nan, math.inf, confidence, 1.0)
    diffs = y - x
    delta = float(diffs.mean())
    if is_binary(x) and is_binary(y):
        both, only_a, only_b, neither = _paired_counts(x, y)
        p = exact.mcnemar_p(only_a, only_b)
        low, high = newcombe_paired(both, only_a, only_b, neither, confidence)
        min_p = exact.mcnemar_p(0, n)
        needed = None if min_p < level else _smallest_n(lambda m: exact.mcnemar_p(0, m) < level, n)
        mde = _mcnemar_mde(n, only_a + only_b, level, power) if needed is None else math.inf
        return TestResult("mcnemar", n, delta, p, low, high, mde, confidence, min_p, needed)
    if n < 2:
        return TestResult("paired t", n, delta, math.nan, math.nan, math.nan, math.inf, confidence, 1.0, 2)
    sd = float(diffs.std(ddof=1))
    if sd == 0:
        # every sample moved by exactly delta: t is undefined; the sign test is exact here
        p = 1.0 if delta == 0 else min(1.0, 2 * 0.5**n)
        min_p = min(1.0, 2 * 0.5**n)
        needed = None if min_p < level else _smallest_n(lambda m: 2 * 0.5**m < level, n)
        return TestResult("sign test", n, delta, p, delta, delta, math.nan, confidence, min_p, needed)
    se = sd / math.sqrt(n)
    t = delta / se
    p = min(1.0, 2 * student_t_sf(abs(t), n - 1))
    half = student_t_ppf(1 - alpha / 2, n - 1) * se
    mde = min_detectable_effect(sd, n, level, power)
    return TestResult("paired t", n, delta, p, delta - half, delta + half, mde, confidence, 0.0)


def unpaired_test(
    a: Values, b: Values, alpha: float = 0.05, power: float = 0.8, detect_alpha: float | None = None
) -> TestResult:
    """Compare two runs scored on different samples.

    0/1 scores: Fisher's exact test, Newcombe's hybrid score interval, the detectable effect
    from Fisher's exact power (normal approximation above 200 per side, where the two agree).
    Other scores: Welch's t test with its t interval (Welch-Satterthwaite degrees of freedom).
    ``detect_alpha`` as in :func:`paired_test`."""
    x, y = _array(a, "a"), _array(b, "b")
    _check_probability("alpha", alpha, open_interval=True)
    level = alpha if detect_alpha is None else detect_alpha
    _check_probability("detect_alpha", level, open_interval=True)
    confidence = 1 - alpha
    n = int(min(x.size, y.size))
    if x.size == 0 or y.size == 0:
        return TestResult("none", n, math.nan, math.nan, math.nan, math.nan, math.inf, confidence, 1.0)
    delta = float(y.mean() - x.mean())
    if is_binary(x) and is_binary(y):
        x_a, x_b = int(x.sum()), int(y.sum())
        p = exact.fisher_exact(x_a, x.size, x_b, y.size)
        low, high = newcombe_diff(x_a, x.size, x_b, y.size, confidence)
        min_p = exact.fisher_min_p(x.size, y.size)
        needed = None
        if min_p >= level:
            needed = _smallest_n(lambda m: exact.fisher_min_p(m, m) < level, n)
        mde = _fisher_mde(x.size, y.size, x_a, level, power) if needed is None else math.inf
        return TestResult("fisher exact", n, delta, p, low, high, mde, confidence, min_p, needed)
    return _welch_test(x, y, alpha, power, level)


def _welch_test(
    x: np.ndarray, y: np.ndarray, alpha: float, power: float | None, level: float | None = None
) -> TestResult:
    confidence = 1 - alpha
    n = int(min(x.size, y.size))
    delta = float(y.mean() - x.mean()) if x.size and y.size else math.nan
    if x.size < 2 or y.size < 2:
        return TestResult("welch", n, delta, math.nan, math.nan, math.nan, math.inf, confidence, 1.0, 2)
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    if va + vb == 0:
        p = 1.0 if delta == 0 else 0.0
        return TestResult("welch", n, delta, p, delta, delta, math.nan, confidence, 0.0)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (x.size - 1) + vb**2 / (y.size - 1))
    p = min(1.0, 2 * student_t_sf(abs(delta) / se, df))
    half = student_t_ppf(1 - alpha / 2, df) * se
    level = alpha if level is None else level
    mde = math.nan if power is None else (student_t_ppf(1 - level / 2, df) + student_t_ppf(power, df)) * se
    return TestResult("welch", n, delta, p, delta - half, delta + half, mde, confidence, 0.0)


@lru_cache(maxsize=4096)
def _fisher_mde(n_a: int, n_b: int, successes_a: int, alpha: float, power: float) -> float:
    """Smallest |change| from the baseline's rate Fisher's test detects with ``power``
    (towards the roomier side of the rate)."""
    rate = successes_a / n_a
    up = rate <= 0.5
    room = 1 - rate if up else rate
    if n_a + n_b > 400:  # normal approximation (two-proportion test) where it is accurate
        z = _NORMAL.inv_cdf(1 - alpha / 2) + _NORMAL.inv_cdf(power)

        def reaches(effect: float) -> bool:
            other = rate + effect if up else rate - effect
            return z * math.sqrt(rate * (1 - rate) / n_a + other * (1 - other) / n_b) <= effect
    else:

        def reaches(effect: float) -> bool:
            other = rate + effect if up else rate - effect
            return exact.fisher_power(n_a, n_b, rate, other, alpha) >= power

    if not reaches(room):
        return math.inf
    low, high = 0.0, room
    for _ in range(30):
        mid = (low + high) / 2
        low, high = (low, mid) if reaches(mid) else (mid, high)
        if high - low < 1e-3 * high:
            break
    return high


def welch(x: Values, y: Values) -> float:
    """Two-sided p-value of Welch's unequal-variance t-test."""
    a, b = _array(x, "x"), _array(y, "y")
    if a.size < 2 or b.size < 2:
        raise InvalidInput("Welch's test needs at least 2 values on each side", "score more samples")
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


@lru_cache(maxsize=4096)
def student_t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom: a Cornish-Fisher start,
    then safeguarded Newton steps on the tail (bisection whenever a step leaves the bracket)."""
    _check_probability("q", q, open_interval=True)
    _check_positive("df", df)
    if q == 0.5:
        return 0.0
    upper = q > 0.5
    tail = 1 - q if upper else q
    z = _NORMAL.inv_cdf(1 - tail)
    t = (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )
    low, high = 0.0, max(1.0, t)
    while student_t_sf(high, df) > tail:
        low, high = high, high * 2
    t = min(max(t, low), high)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    for _ in range(100):
        excess = student_t_sf(t, df) - tail  # decreasing in t
        if excess > 0:
            low = t
        else:
            high = t
        density = math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))
        step = t + excess / density if density > 0 else math.nan
        new = step if low < step < high else (low + high) / 2
        if abs(new - t) <= 1e-12 * max(1.0, abs(t)):
            t = new
            break
        t = new
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
    """Holm-Bonferroni adjusted p-values, in the input order (NaN, no test, stays NaN)."""
    for p in p_values:
        if not (math.isnan(p) or 0 <= p <= 1):
            raise InvalidInput(f"a p-value of {p}", "p-values lie between 0 and 1 (NaN for no test)")
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
    _check_finite("x", x)
    _check_positive("df", df)
    return regularized_gamma_q(df / 2, x / 2)


def srm_test(counts: Sequence[int], weights: Sequence[float]) -> tuple[float, float]:
    """Sample-ratio-mismatch check: chi-square goodness of fit of ``counts`` to the
    expected allocation ``weights``; returns ``(statistic, p_value)`` (NaN without data).

    Arms with weight 0 expect no units: they do not count as categories (the degrees of
    freedom are the weighted arms minus one), and any unit in one is a mismatch (p = 0)."""
    if len(counts) != len(weights):
        raise InvalidInput(f"{len(counts)} counts for {len(weights)} weights", "pass one count per variant")
    for c in counts:
        _check_count("count", c)
    for w in weights:
        _check_finite("weight", w)
        if w < 0:
            raise InvalidInput(f"weights must be >= 0, not {w:g}", "pass each variant's share of traffic")
    n = sum(counts)
    total = sum(weights)
    weighted = [(c, w) for c, w in zip(counts, weights, strict=True) if w > 0]
    if n == 0 or total <= 0:
        return math.nan, math.nan
    if any(c > 0 for c, w in zip(counts, weights, strict=True) if w == 0):
        return math.inf, 0.0
    if len(weighted) < 2:
        return 0.0, 1.0  # everything where it belongs: one arm takes all the traffic
    stat = sum((c - n * w / total) ** 2 / (n * w / total) for c, w in weighted)
    return stat, chi2_sf(stat, len(weighted) - 1)


def _check_rate(x: int, n: int, side: str = "") -> None:
    _check_count(f"x{side}", x)
    _check_count(f"n{side}", n)
    if x > n:
        raise InvalidInput(f"{x} successes out of {n}", "successes cannot exceed the trials")


def wilson_ci(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (NaN for n = 0)."""
    _check_rate(successes, n)
    _check_confidence(confidence)
    if n == 0:
        return math.nan, math.nan
    z = _NORMAL.inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: no 2.8e-17 from rounding
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def newcombe_diff(x_a: int, n_a: int, x_b: int, n_b: int, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval (1998, method 10) for rate b minus rate a, from the two
    Wilson intervals: 0/500 vs 0/500 gives about [-0.0077, 0.0077], not Wald's [0, 0]."""
    _check_rate(x_a, n_a, "_a")
    _check_rate(x_b, n_b, "_b")
    if n_a == 0 or n_b == 0:
        return math.nan, math.nan
    p_a, p_b = x_a / n_a, x_b / n_b
    low_a, high_a = wilson_ci(x_a, n_a, confidence)
    low_b, high_b = wilson_ci(x_b, n_b, confidence)
    diff = p_b - p_a
    return (
        diff - math.sqrt((p_b - low_b) ** 2 + (high_a - p_a) ** 2),
        diff + math.sqrt((high_b - p_b) ** 2 + (p_a - low_a) ** 2),
    )


def newcombe_paired(both: int, only_a: int, only_b: int, neither: int, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's interval (1998, method 10) for the difference of paired proportions
    (b's rate minus a's), from the counts of the 2x2 table of pairs."""
    for name, value in (("both", both), ("only_a", only_a), ("only_b", only_b), ("neither", neither)):
        _check_count(name, value)
    n = both + only_a + only_b + neither
    if n == 0:
        return math.nan, math.nan
    p_b, p_a = (both + only_b) / n, (both + only_a) / n
    low_b, high_b = wilson_ci(both + only_b, n, confidence)
    low_a, high_a = wilson_ci(both + only_a, n, confidence)
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = (both * neither - only_a * only_b) / math.sqrt(margins) if margins > 0 else 0.0  # the pairs' correlation
    diff = p_b - p_a
    dl_b, du_b, dl_a, du_a = p_b - low_b, high_b - p_b, p_a - low_a, high_a - p_a
    return (
        diff - math.sqrt(max(0.0, dl_b**2 - 2 * phi * dl_b * du_a + du_a**2)),
        diff + math.sqrt(max(0.0, du_b**2 - 2 * phi * du_b * dl_a + dl_a**2)),
    )


def two_proportion_z(
    x_a: int, n_a: int, x_b: int, n_b: int, confidence: float = 0.95
) -> tuple[float, tuple[float, float], float]:
    """Rate b minus rate a: ``(difference, (low, high), two-sided p)``; the test pools the
    rates (H0: equal), the interval is Newcombe's (:func:`newcombe_diff`), not Wald's."""
    _check_rate(x_a, n_a, "_a")
    _check_rate(x_b, n_b, "_b")
    _check_confidence(confidence)
    if n_a == 0 or n_b == 0:
        return math.nan, (math.nan, math.nan), math.nan
    p_a, p_b = x_a / n_a, x_b / n_b
    diff = p_b - p_a
    pooled = (x_a + x_b) / (n_a + n_b)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    p = (1.0 if diff == 0 else 0.0) if se0 == 0 else 2 * _NORMAL.cdf(-abs(diff) / se0)
    return diff, newcombe_diff(x_a, n_a, x_b, n_b, confidence), min(1.0, p)


def welch_diff(a: Values, b: Values, confidence: float = 0.95) -> tuple[float, tuple[float, float], float]:
    """Mean of b minus mean of a: ``(difference, (low, high), two-sided Welch p)``; the interval
    uses Student's t at the Welch-Satterthwaite degrees of freedom (it agrees with the p)."""
    _check_confidence(confidence)
    result = _welch_test(_array(a, "a"), _array(b, "b"), 1 - confidence, None)  # no detectable effect asked
    return result.delta, (result.ci_low, result.ci_high), result.p_value


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
