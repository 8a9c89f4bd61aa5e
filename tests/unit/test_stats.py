"""keel.core.stats against scipy on known cases, and by simulation."""

import math

import numpy as np
import pytest
import scipy.stats as st

from keel.core import stats


@pytest.mark.parametrize("df", [1, 2.5, 7, 30, 200])
@pytest.mark.parametrize("t", [0.0, 0.1, 1.0, 2.5, 5.0, 12.0])
def test_student_t_tail_matches_scipy(t, df):
    assert stats.student_t_sf(t, df) == pytest.approx(st.t.sf(t, df), rel=1e-8, abs=1e-14)


def test_welch_matches_scipy():
    rng = np.random.default_rng(7)
    for _ in range(20):
        x = rng.normal(0, rng.uniform(0.5, 3), rng.integers(3, 80))
        y = rng.normal(rng.uniform(-1, 1), rng.uniform(0.5, 3), rng.integers(3, 80))
        assert stats.welch(x, y) == pytest.approx(st.ttest_ind(x, y, equal_var=False).pvalue, rel=1e-7)


def test_mcnemar_exact_and_chi_square_match_scipy():
    # Exact: 3 vs 9 discordant pairs.
    a = [1] * 3 + [0] * 9 + [1] * 20 + [0] * 5
    b = [0] * 3 + [1] * 9 + [1] * 20 + [0] * 5
    assert stats.mcnemar(a, b) == pytest.approx(st.binomtest(3, 12, 0.5).pvalue)
    # Chi-square with continuity correction: 10 vs 30 discordant pairs.
    a = [1] * 10 + [0] * 30 + [1] * 50
    b = [0] * 10 + [1] * 30 + [1] * 50
    expected = st.chi2.sf((abs(10 - 30) - 1) ** 2 / 40, 1)
    assert stats.mcnemar(a, b) == pytest.approx(expected)
    assert stats.mcnemar([1, 0], [1, 0]) == 1.0


def test_holm_matches_the_textbook_procedure():
    assert stats.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert stats.holm([0.2, math.nan]) == [0.2, pytest.approx(math.nan, nan_ok=True)]


def test_paired_continuous_scores_use_the_paired_t_test_as_scipy():
    # the sign-flip permutation test it replaces could not reach p < 0.05 below 6 samples, and its
    # bootstrap interval disagreed with its p; the t test and its interval always agree
    rng = np.random.default_rng(3)
    a = rng.normal(0, 1, 12)
    b = a + rng.normal(0.4, 1, 12)
    ours = stats.paired_test(a, b)
    theirs = st.ttest_rel(b, a)
    low, high = theirs.confidence_interval()
    assert ours.method == "paired t" and ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9)
    assert (ours.ci_low, ours.ci_high) == pytest.approx((low, high), rel=1e-9)


def test_binary_paired_scores_use_mcnemar():
    result = stats.paired_test([1, 1, 0, 1, 0, 1], [1, 1, 1, 1, 1, 1])
    assert result.method == "mcnemar" and result.delta == pytest.approx(2 / 6) and result.n == 6


def test_bootstrap_ci_covers_the_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(11)
    covered = 0
    for i in range(200):
        sample = rng.normal(5, 2, 60)
        low, high = stats.bootstrap_ci(sample, resamples=1000, seed=i)
        covered += low <= 5 <= high
    assert 0.88 <= covered / 200 <= 0.99


def test_an_a_a_comparison_flags_significance_at_about_alpha():
    rng = np.random.default_rng(5)
    flagged_paired = flagged_welch = 0
    trials = 300
    for _ in range(trials):
        a, b = rng.normal(0.7, 0.2, 50), rng.normal(0.7, 0.2, 50)
        flagged_paired += stats.paired_test(a, b).p_value < 0.05
        flagged_welch += stats.welch(a, b) < 0.05
    assert 0.02 <= flagged_paired / trials <= 0.09
    assert 0.02 <= flagged_welch / trials <= 0.09


def test_a_real_difference_is_detected_and_the_mde_is_sensible():
    rng = np.random.default_rng(2)
    a = rng.normal(0.70, 0.1, 200)
    b = a + 0.05 + rng.normal(0, 0.05, 200)
    result = stats.paired_test(a, b)
    assert result.p_value < 0.001 and result.ci_low < 0.05 < result.ci_high
    assert 0 < result.mde < 0.05
    unpaired = stats.unpaired_test(a, b)
    assert unpaired.method == "welch" and unpaired.ci_low < unpaired.delta < unpaired.ci_high


def test_results_are_deterministic():
    a, b = [0.1, 0.5, 0.7, 0.2] * 10, [0.2, 0.4, 0.9, 0.3] * 10
    assert stats.paired_test(a, b) == stats.paired_test(a, b)
    assert stats.bootstrap_ci(a) == stats.bootstrap_ci(a)


def test_pareto_front():
    points = {
        "gpt-4": {"accuracy": 0.90, "cost": 0.03, "latency": 900},
        "gpt-4o-mini": {"accuracy": 0.83, "cost": 0.0006, "latency": 400},
        "dominated": {"accuracy": 0.80, "cost": 0.001, "latency": 500},
        "tie": {"accuracy": 0.83, "cost": 0.0006, "latency": 400},
        "incomplete": {"accuracy": 0.99},
    }
    front = stats.pareto_front(points, {"accuracy": "max", "cost": "min", "latency": "min"})
    assert front == ["gpt-4", "gpt-4o-mini", "tie"]


def test_percentile_and_empty_inputs():
    assert stats.percentile([1, 2, 3, 4], 50) == 2.5
    assert math.isnan(stats.percentile([], 95))
    assert all(math.isnan(x) for x in stats.bootstrap_ci([]))
    assert stats.paired_test([], []).n == 0
