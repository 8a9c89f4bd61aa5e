"""Allocation independence, simulated: 1,000 flag/experiment names x 10,000 units of each id
shape (integer ids, UUIDs, emails), seeded.

For every pair of names and a 10% rollout (and a 50/50 split), the number of units in both
is compared with what independence gives for those two sets' sizes (hypergeometric: the
overlap's mean n_i n_j / N and variance n_i n_j (N - n_i)(N - n_j) / (N^2 (N - 1))). Over
the 499,500 pairs the z-scores of independent allocations are close to standard normal:
sd 1, max |z| about 5.3 and about 32 pairs beyond 4 sd (measured for blake2b, over the
three shapes and both thresholds: sd 0.9986-1.0014, max 4.7-5.1, 25-40 pairs). crc32, the
scheme flags stored before schemes were recorded keep, fails the same check by far (sd
1.105-2.31, max 7.5-62, 1,045-13,292 pairs beyond 4 sd): the last test shows the check
can fail.

Each test hashes 10 million units (about 4-5 s), then one matrix product per threshold.
"""

import random
import uuid

import numpy as np
import pytest

from keel.core.bucketing import BUCKETS, DEFAULT, LEGACY, bucketer

NAMES = [f"flag-{i}" for i in range(1000)]  # sequential names: the worst case for a linear hash
N_UNITS = 10_000


def _units(shape: str) -> list[object]:
    rng = random.Random(27)
    if shape == "integer":
        return list(range(1, N_UNITS + 1))
    if shape == "uuid":
        return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(N_UNITS)]
    return [f"{rng.choice(['ana', 'li', 'sam', 'joe'])}.{rng.randrange(10**7)}@example{rng.randrange(50)}.com"
            for _ in range(N_UNITS)]  # fmt: skip


def _buckets(scheme: str, units: list[object]) -> np.ndarray:
    out = np.empty((len(NAMES), len(units)), dtype=np.int16)
    for i, name in enumerate(NAMES):
        of = bucketer(scheme, name, "")
        out[i] = [of(u) for u in units]
    return out


def _pair_z(buckets: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlap z-scores of every pair of names (upper triangle), and each name's share's z."""
    inside = (buckets < threshold).astype(np.float32)
    n = inside.sum(axis=1).astype(np.float64)
    big_n = buckets.shape[1]
    overlap = (inside @ inside.T).astype(np.float64)  # exact: counts below 2**24
    mean = np.outer(n, n) / big_n
    var = np.outer(n * (big_n - n), n * (big_n - n)) / (big_n * big_n * (big_n - 1))
    pairs = ((overlap - mean) / np.sqrt(var))[np.triu_indices(len(n), 1)]
    p = threshold / BUCKETS
    share = (n - big_n * p) / np.sqrt(big_n * p * (1 - p))
    return pairs, share


def _independent(buckets: np.ndarray) -> list[str]:
    """What is wrong with the allocation (empty: independent and uniform)."""
    problems = []
    for threshold in (1000, 5000):  # a 10% rollout; a 50/50 split
        z, share = _pair_z(buckets, threshold)
        beyond = int((np.abs(z) > 4).sum())  # chance: about 32 of 499,500
        if not 0.98 <= z.std() <= 1.02:
            problems.append(f"{threshold}: sd of pair z {z.std():.4f}")
        if np.abs(z).max() > 6.0:  # chance of any pair beyond 6 sd: about 0.001
            problems.append(f"{threshold}: max |z| {np.abs(z).max():.1f}")
        if beyond > 70:
            problems.append(f"{threshold}: {beyond} pairs beyond 4 sd")
        if abs(z.mean()) > 0.02:
            problems.append(f"{threshold}: mean pair z {z.mean():.4f}")
        if not 0.9 <= share.std() <= 1.1 or np.abs(share).max() > 5:  # each name's rollout near its size
            problems.append(f"{threshold}: rollout sizes off (sd {share.std():.3f}, max {np.abs(share).max():.1f})")
    return problems


@pytest.mark.parametrize("shape", ["integer", "uuid", "email"])
def test_blake2b_allocations_are_independent_across_1000_names(shape):
    assert _independent(_buckets(DEFAULT, _units(shape))) == []


def test_the_check_catches_crc32s_correlation():
    problems = _independent(_buckets(LEGACY, _units("integer")))
    assert any("pairs beyond 4 sd" in p for p in problems), problems
