"""Exact tests for 0/1 scores and their exact power: Fisher's test (different samples) and
McNemar's test (the same samples), for :mod:`keel.core.stats`.

Why exact: at the sample sizes evaluations often have (5 to 50 samples) the normal
approximations call 0 of 3 vs 3 of 3 "p = 0.0" where Fisher's test says 0.10, and a
detectable effect computed from a normal formula promises what the test cannot deliver.
Power here is computed by summing over every outcome the test can see (no simulation,
no approximation), so the detectable effect is the one of the test actually used.

Everything is numpy on log-factorials; the rejection regions are cached per sample size.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = [
    "fisher_exact",
    "fisher_min_p",
    "fisher_power",
    "mcnemar_p",
    "mcnemar_power",
]

#: Relative tolerance when comparing probabilities of tables (as scipy and R do).
_TIES = 1 + 1e-7


@lru_cache(maxsize=8)
def _log_factorials(n: int) -> np.ndarray:
    return np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))))


def _log_comb(n: int, k: np.ndarray, lf: np.ndarray) -> np.ndarray:
    return lf[n] - lf[k] - lf[n - k]


def _binomial_pmf(n: int, p: float) -> np.ndarray:
    k = np.arange(n + 1)
    if p <= 0 or p >= 1:
        out = np.zeros(n + 1)
        out[0 if p <= 0 else n] = 1.0
        return out
    lf = _log_factorials(max(n, 1))
    return np.exp(_log_comb(n, k, lf) + k * math.log(p) + (n - k) * math.log1p(-p))


def _hypergeometric(n_a: int, n_b: int, total: int) -> tuple[np.ndarray, np.ndarray]:
    """Support (successes in a) and pmf of a's successes given ``total`` successes overall."""
    lf = _log_factorials(n_a + n_b)
    low, high = max(0, total - n_b), min(total, n_a)
    x = np.arange(low, high + 1)
    log_pmf = _log_comb(n_a, x, lf) + _log_comb(n_b, total - x, lf) - _log_comb(n_a + n_b, np.array(total), lf)
    return x, np.exp(log_pmf)


def fisher_exact(x_a: int, n_a: int, x_b: int, n_b: int) -> float:
    """Two-sided p-value of Fisher's exact test (tables no more likely than the observed one)."""
    x, pmf = _hypergeometric(n_a, n_b, x_a + x_b)
    observed = pmf[x == x_a][0]
    return float(min(1.0, pmf[pmf <= observed * _TIES].sum()))


def fisher_min_p(n_a: int, n_b: int) -> float:
    """The smallest p-value Fisher's test can give with these group sizes (a total split)."""
    if n_a == 0 or n_b == 0:
        return 1.0
    return min(fisher_exact(0, n_a, n_b, n_b), fisher_exact(n_a, n_a, 0, n_b))


@lru_cache(maxsize=32)
def _fisher_rejects(n_a: int, n_b: int, alpha: float) -> np.ndarray:
    """``rejects[x_a, x_b]``: Fisher's p < alpha for that table."""
    out = np.zeros((n_a + 1, n_b + 1), dtype=bool)
    for total in range(n_a + n_b + 1):
        x, pmf = _hypergeometric(n_a, n_b, total)
        order = np.sort(pmf)
        cumulative = np.cumsum(order)
        p = cumulative[np.searchsorted(order, pmf * _TIES, side="right") - 1]
        out[x, total - x] = p < alpha
    return out


def fisher_power(n_a: int, n_b: int, p_a: float, p_b: float, alpha: float) -> float:
    """Exact power of Fisher's test at true rates ``p_a``, ``p_b``."""
    rejects = _fisher_rejects(n_a, n_b, alpha)
    return float(_binomial_pmf(n_a, p_a) @ rejects @ _binomial_pmf(n_b, p_b))


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Two-sided McNemar p-value from the discordant counts: exact binomial below 25
    discordant pairs, else the continuity-corrected chi-square."""
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    if discordant < 25:
        k = min(only_a, only_b)
        tail = sum(math.comb(discordant, i) for i in range(k + 1)) / 2**discordant
        return min(1.0, 2 * tail)
    statistic = (abs(only_a - only_b) - 1) ** 2 / discordant
    return math.erfc(math.sqrt(statistic / 2))


@lru_cache(maxsize=64)
def _mcnemar_critical(n: int, alpha: float) -> np.ndarray:
    """For d = 0..n discordant pairs, the largest k (pairs one way) the test rejects at; -1: none."""
    out = np.full(n + 1, -1, dtype=np.int64)
    for d in range(1, n + 1):
        if d < 25:
            k = -1
            while k + 1 <= d // 2 and mcnemar_p(k + 1, d - k - 1) < alpha:
                k += 1
            out[d] = k
        else:  # (|d - 2k| - 1)^2 / d > chi2 quantile: solve for k, then check the edge exactly
            k = int(math.floor((d - 1 - math.sqrt(d) * _chi2_1_quantile(alpha)) / 2))
            while k >= 0 and mcnemar_p(k, d - k) >= alpha:
                k -= 1
            while k + 1 <= d // 2 and mcnemar_p(k + 1, d - k - 1) < alpha:
                k += 1
            out[d] = k
    return out


def _chi2_1_quantile(alpha: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(1 - alpha / 2)  # sqrt of the chi-square(1) quantile


def mcnemar_power(n: int, discordance: float, effect: float, alpha: float) -> float:
    """Exact power of McNemar's test on ``n`` pairs where a pair is discordant with probability
    ``discordance`` and the mean difference is ``effect`` (so ``effect <= discordance``)."""
    if discordance <= 0:
        return 0.0
    share = min(1.0, 0.5 * (1 + effect / discordance))  # P(a discordant pair favours b)
    critical = _mcnemar_critical(n, alpha)
    discordant = _binomial_pmf(n, discordance)
    power = 0.0
    for d in np.nonzero((critical >= 0) & (discordant > 1e-15))[0]:
        k = int(critical[d])
        split = _binomial_pmf(int(d), share)
        power += discordant[d] * (split[: k + 1].sum() + split[d - k :].sum())
    return float(power)
