"""Every public statistics function refuses input that would give a plausible wrong number."""

import math

import pytest

from keel.core import stats
from keel.errors import InvalidInput

NAN, INF = math.nan, math.inf

BAD_CALLS = {
    "bootstrap_ci NaN": lambda: stats.bootstrap_ci([0.1, NAN]),
    "mean_ci inf": lambda: stats.mean_ci([0.1, INF]),
    "t_ci NaN": lambda: stats.t_ci([NAN, 1, 2]),
    "percentile inf": lambda: stats.percentile([1, INF], 50),
    "percentile q": lambda: stats.percentile([1, 2], 101),
    "paired lengths": lambda: stats.paired_test([1, 0, 1], [1, 0]),
    "paired NaN": lambda: stats.paired_test([0.1, NAN], [0.2, 0.3]),
    "paired alpha": lambda: stats.paired_test([0.1, 0.2], [0.2, 0.3], alpha=1.5),
    "unpaired inf": lambda: stats.unpaired_test([0.1, 0.2], [INF, 0.3]),
    "mcnemar lengths": lambda: stats.mcnemar([1, 0], [1]),
    "welch NaN": lambda: stats.welch([0.1, NAN, 0.3], [0.2, 0.3]),
    "welch_diff inf": lambda: stats.welch_diff([0.1, 0.2], [0.3, -INF]),
    "holm p > 1": lambda: stats.holm([0.2, 1.5]),
    "holm p < 0": lambda: stats.holm([-0.1]),
    "mde sd < 0": lambda: stats.min_detectable_effect(-1.0, 10),
    "mde n < 0": lambda: stats.min_detectable_effect(1.0, -3),
    "wilson x > n": lambda: stats.wilson_ci(11, 10),
    "wilson negative": lambda: stats.wilson_ci(-1, 10),
    "wilson confidence": lambda: stats.wilson_ci(3, 10, confidence=1.0),
    "two_proportion x > n": lambda: stats.two_proportion_z(5, 4, 1, 10),
    "two_proportion negative n": lambda: stats.two_proportion_z(0, -4, 1, 10),
    "newcombe x > n": lambda: stats.newcombe_diff(1, 10, 12, 10),
    "newcombe paired negative": lambda: stats.newcombe_paired(3, -1, 2, 4),
    "srm negative count": lambda: stats.srm_test([10, -1], [0.5, 0.5]),
    "srm lengths": lambda: stats.srm_test([10, 10, 10], [0.5, 0.5]),
    "srm negative weight": lambda: stats.srm_test([10, 10], [1.5, -0.5]),
    "chi2 NaN": lambda: stats.chi2_sf(NAN, 2),
    "chi2 df": lambda: stats.chi2_sf(1.0, 0),
    "t quantile q": lambda: stats.student_t_ppf(1.0, 3),
    "planner p": lambda: stats.sample_size_proportions(-0.1, 0.05),
    "planner mde": lambda: stats.sample_size_means(1.0, -0.5),
}


@pytest.mark.parametrize("call", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_bad_input_is_refused(call):
    with pytest.raises(InvalidInput) as caught:
        call()
    assert caught.value.hint  # says what to do


def test_srm_counts_units_in_zero_weight_arms_and_uses_the_weighted_arms_degrees_of_freedom():
    assert stats.srm_test([500, 500, 1], [0.5, 0.5, 0.0]) == (math.inf, 0.0)
    stat, p = stats.srm_test([520, 480, 0], [0.5, 0.5, 0.0])
    assert stat == pytest.approx(1.6) and p == pytest.approx(stats.chi2_sf(1.6, 1))  # 1 df, not 2


def test_welch_interval_uses_t_not_z():
    a, b = [1.0, 1.5, 2.0, 2.2, 0.9], [2.1, 2.9, 3.3, 2.0, 3.0]
    import scipy.stats as st

    ref = st.ttest_ind(b, a, equal_var=False).confidence_interval()
    _, (low, high), _ = stats.welch_diff(a, b)
    assert (low, high) == pytest.approx((ref.low, ref.high), rel=1e-9)
