"""Sample-size planners (keel.core.stats): t-based sizing, corrected alpha, impossible targets refused.

Power is checked against the noncentral t (scipy) and the two-proportion normal power."""

import math

import pytest
import scipy.stats as st

from keel.core import stats
from keel.errors import InvalidInput


def _t_power(effect: float, n: int, alpha: float) -> float:
    df = 2 * n - 2
    nc = effect * math.sqrt(n / 2)
    crit = st.t.ppf(1 - alpha / 2, df)
    return float(st.nct.sf(crit, df, nc) + st.nct.cdf(-crit, df, nc))


@pytest.mark.parametrize(
    "sd,mde,k", [(1, 2, 1), (1, 3, 1), (1, 5, 1), (1, 0.5, 1), (1, 0.5, 3), (2, 0.5, 1), (3, 1, 5)]
)
def test_sample_size_means_is_the_smallest_n_with_the_power_of_the_t_test(sd, mde, k):
    n = stats.sample_size_means(sd, mde, comparisons=k)
    alpha = 0.05 / k
    assert _t_power(mde / sd, n, alpha) >= 0.8 - 0.005
    if n > 2:
        assert _t_power(mde / sd, n - 1, alpha) < 0.8 + 0.005
    # large effects: the old normal formula promised n=2 with 19% power
    assert _t_power(mde / sd, n, alpha) > 0.75


def test_sample_size_proportions_matches_the_textbook_and_corrects_alpha():
    assert stats.sample_size_proportions(0.10, 0.02) == pytest.approx(3841, abs=5)
    one = stats.sample_size_proportions(0.30, 0.06)
    three = stats.sample_size_proportions(0.30, 0.06, comparisons=3)
    z1 = st.norm.ppf(1 - 0.05 / 2) + st.norm.ppf(0.8)
    z3 = st.norm.ppf(1 - 0.05 / 6) + st.norm.ppf(0.8)
    assert three / one == pytest.approx((z3 / z1) ** 2, rel=0.01)


@pytest.mark.parametrize(
    "call",
    [
        lambda: stats.sample_size_proportions(0.927, 0.0927),  # targets a 102% rate
        lambda: stats.sample_size_proportions(0.5, 0),
        lambda: stats.sample_size_proportions(0.5, -0.1),
        lambda: stats.sample_size_proportions(1.2, 0.1),
        lambda: stats.sample_size_proportions(math.nan, 0.1),
        lambda: stats.sample_size_proportions(0.5, 0.1, alpha=0),
        lambda: stats.sample_size_proportions(0.5, 0.1, power=1),
        lambda: stats.sample_size_proportions(0.5, 0.1, comparisons=0),
        lambda: stats.sample_size_means(1.0, 0),
        lambda: stats.sample_size_means(-1.0, 0.5),
        lambda: stats.sample_size_means(math.inf, 0.5),
        lambda: stats.sample_size_means(1.0, math.nan),
        lambda: stats.sample_size_means(1.0, 0.5, comparisons=-2),
    ],
)
def test_planners_refuse_impossible_targets(call):
    with pytest.raises(InvalidInput):
        call()


def test_student_t_quantile_matches_scipy():
    for df in (1, 2.5, 4, 30, 500):
        for q in (0.01, 0.1, 0.5, 0.8, 0.975, 0.9995):
            assert stats.student_t_ppf(q, df) == pytest.approx(st.t.ppf(q, df), rel=1e-9, abs=1e-12)
