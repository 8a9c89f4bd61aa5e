"""The simulation suite of issue 27: keel's reported figures hold what they claim.

Seeded and time-bounded (each test a few seconds on one core). For every test keel reports:
type I error <= 0.055 under the null, alone and for whole comparison reports (up to 10 arms x
3 metrics, Holm across all of them); coverage of every reported interval at n = 5, 10, 30, 100
within 93-97%; power at keel's own detectable effect within 0.75-0.85.

0/1 intervals are checked exactly (every outcome enumerated), not simulated. Their pointwise
coverage oscillates with the true rate (discreteness: no binomial interval avoids it), so the
93-97% bound is on the coverage averaged over true rates 0.05..0.95, as Agresti & Coull (1998)
and Newcombe (1998) evaluate them, with a pointwise floor of 0.90.
"""

import math

import numpy as np
import pytest
import scipy.stats as st

from keel.core import exact, stats
from keel.core.comparison import Arm, compare_arms

ALPHA = 0.05
RATES = np.linspace(0.05, 0.95, 19)


# -- type I error ---------------------------------------------------------------------------
@pytest.mark.parametrize("n", [5, 10, 30, 100])
def test_paired_t_type_one_error(n):
    rng = np.random.default_rng(100 + n)
    reps = 4000
    a = rng.normal(0.6, 0.2, (reps, n))
    b = a + rng.normal(0, 0.1, (reps, n))  # same mean: the null
    rejected = sum(stats.paired_test(a[i], b[i]).p_value < ALPHA for i in range(reps))
    assert rejected / reps <= 0.055


@pytest.mark.parametrize("n", [5, 10, 30, 100])
def test_welch_type_one_error_with_unequal_variances(n):
    rng = np.random.default_rng(200 + n)
    reps = 4000
    a, b = rng.normal(0, 1, (reps, n)), rng.normal(0, 3, (reps, 2 * n))
    rejected = sum(stats.welch(a[i], b[i]) < ALPHA for i in range(reps))
    assert rejected / reps <= 0.055


@pytest.mark.parametrize("n", [5, 10, 30, 100])
def test_exact_binary_tests_type_one_error(n):
    # computed exactly: the probability of every outcome, summed where the test rejects
    for rate in (0.1, 0.5, 0.8):
        pmf = st.binom.pmf(np.arange(n + 1), n, rate)
        fisher = sum(
            pmf[x] * pmf[y] for x in range(n + 1) for y in range(n + 1) if exact.fisher_exact(x, n, y, n) < ALPHA
        )
        assert fisher <= ALPHA
    for discordance in (0.1, 0.4):
        assert exact.mcnemar_power(n, discordance, 0.0, ALPHA) <= ALPHA  # power at effect 0 = type I error


def _null_report(rng, arms, n):
    ids = [f"s{i}" for i in range(n)]
    shared_quality = rng.normal(0.5, 0.2, n)  # samples differ in difficulty; runs do not differ
    out = []
    for k in range(arms):
        correct = rng.random(n) < 0.7
        quality = shared_quality + rng.normal(0, 0.1, n)
        latency = rng.lognormal(6, 0.3, n)
        samples = {
            s: {"accuracy": float(correct[i]), "quality": float(quality[i]), "latency_ms": float(latency[i])}
            for i, s in enumerate(ids)
        }
        out.append(Arm(f"a{k}", f"a{k}", {}, samples))
    return compare_arms(out, directions={"quality": "higher"})


@pytest.mark.parametrize("arms", [3, 10])
def test_whole_report_false_claims_stay_at_alpha(arms):
    """A report of k identical runs on 3 metrics: no `*` anywhere and no "is best" verdict,
    except at rate <= alpha (Holm across every arm and metric: 27 tests for 10 arms)."""
    rng = np.random.default_rng(300 + arms)
    reps = 300 if arms == 10 else 600
    false_star = false_best = 0
    for _ in range(reps):
        report = _null_report(rng, arms, 20)
        false_star += any(r.significant for r in report.results)
        false_best += any(" is best on " in line for line in report.verdict)
    assert false_star / reps <= 0.055
    assert false_best / reps <= 0.055


# -- coverage -------------------------------------------------------------------------------
def _exact_coverage(n, interval):
    pmf = {p: st.binom.pmf(np.arange(n + 1), n, p) for p in RATES}
    return [sum(pmf[p][x] for x in range(n + 1) if interval(x, n)[0] <= p <= interval(x, n)[1]) for p in RATES]


@pytest.mark.parametrize("n", [5, 10, 30, 100])
def test_wilson_interval_coverage(n):
    bounds = {x: stats.wilson_ci(x, n) for x in range(n + 1)}
    coverage = _exact_coverage(n, lambda x, _n: bounds[x])
    assert 0.93 <= float(np.mean(coverage)) <= 0.97 and min(coverage) >= 0.90
    assert stats.mean_ci([1] * 10) == pytest.approx((0.7225, 1.0), abs=1e-4)  # 10 of 10: not [1, 1]


@pytest.mark.parametrize("n", [5, 10, 30, 100])
def test_newcombe_difference_coverage(n):
    k = np.arange(n + 1)
    bounds = np.array([[stats.newcombe_diff(a, n, b, n) for b in range(n + 1)] for a in range(n + 1)])
    coverage = []
    for p_a in RATES:
        for shift in (0.0, 0.1, -0.2):
            p_b = p_a + shift
            if 0 < p_b < 1:
                weight = np.outer(st.binom.pmf(k, n, p_a), st.binom.pmf(k, n, p_b))
                inside = (bounds[:, :, 0] <= shift + 1e-12) & (shift - 1e-12 <= bounds[:, :, 1])
                coverage.append(float((weight * inside).sum()))
    assert 0.93 <= float(np.mean(coverage)) <= 0.97 and min(coverage) >= 0.90
    assert stats.newcombe_diff(0, 500, 0, 500)[1] > 0.005  # Wald said [0, 0]


@pytest.mark.parametrize("n", [5, 10, 30, 100])
def test_paired_binary_interval_coverage(n):
    rng = np.random.default_rng(400 + n)
    covered, total = 0, 0
    for p_a in (0.3, 0.6, 0.8):
        for shift in (0.0, 0.1):
            reps = 500
            a = rng.random((reps, n)) < p_a
            # the candidate keeps most of a's answers and flips some: correlated pairs, true shift
            flip_up = rng.random((reps, n)) < (shift + 0.1) / (1 - p_a)
            flip_down = rng.random((reps, n)) < 0.1 / p_a
            b = np.where(a, ~flip_down, flip_up)
            true = shift  # P(b) - P(a) = (1 - p_a) * (shift + 0.1) / (1 - p_a) - p_a * 0.1 / p_a
            for i in range(reps):
                result = stats.paired_test(a[i].astype(float), b[i].astype(float))
                covered += result.ci_low <= true + 1e-12 and true - 1e-12 <= result.ci_high
                total += 1
    assert 0.93 <= covered / total <= 0.97


@pytest.mark.parametrize("n", [5, 10, 30, 100])
def test_t_intervals_coverage(n):
    """The mean's t interval, the paired difference's and Welch's difference's (normal data)."""
    rng = np.random.default_rng(500 + n)
    reps = 2000
    x = rng.normal(0.7, 0.15, (reps, n))
    y = x + rng.normal(0.05, 0.1, (reps, n))
    z = rng.normal(0.75, 0.3, (reps, n))
    mean = paired = welch = 0
    for i in range(reps):
        low, high = stats.mean_ci(x[i])
        mean += low <= 0.7 <= high
        result = stats.paired_test(x[i], y[i])
        paired += result.ci_low <= 0.05 <= result.ci_high
        _, (low, high), _ = stats.welch_diff(x[i], z[i])
        welch += low <= 0.05 <= high
    for hits in (mean, paired, welch):
        assert 0.93 <= hits / reps <= 0.97


def test_confidence_level_is_the_one_reported():
    rng = np.random.default_rng(6)
    reps, n = 2000, 10
    x = rng.normal(0, 1, (reps, n))
    hits = sum(stats.t_ci(x[i], 0.9)[0] <= 0 <= stats.t_ci(x[i], 0.9)[1] for i in range(reps))
    assert 0.88 <= hits / reps <= 0.92
    report = _null_report(rng, 2, 10)
    assert compare_arms(report.arms, alpha=0.1).legend().startswith("mean [90% CI]")


# -- power at keel's own detectable effect --------------------------------------------------
@pytest.mark.parametrize("n", [10, 30])
def test_paired_t_power_at_the_reported_detectable_effect(n):
    rng = np.random.default_rng(700 + n)
    sd = 0.1  # the per-sample difference's true sd; paired_test reports the effect for the observed one
    mde = stats.min_detectable_effect(sd, n)
    reps = 2000
    diffs = rng.normal(mde, sd, (reps, n))
    hits = sum(stats.paired_test(np.zeros(n), diffs[i]).p_value < ALPHA for i in range(reps))
    assert 0.75 <= hits / reps <= 0.85


@pytest.mark.parametrize("n", [10, 30])
def test_welch_power_at_the_reported_detectable_effect(n):
    rng = np.random.default_rng(800 + n)
    reps = 2000
    mde = stats.unpaired_test(rng.normal(0, 1, n), rng.normal(0, 1, n)).mde
    hits = sum(
        stats.welch(rng.normal(0, 1, n), rng.normal(mde, 1, n)) < ALPHA for _ in range(reps)
    )  # the observed sds scatter around 1, so the power scatters around 0.8
    assert 0.70 <= hits / reps <= 0.90


@pytest.mark.parametrize("n", [12, 30, 60])
def test_fisher_power_at_the_reported_detectable_effect(n):
    base = [1.0] * (n // 2) + [0.0] * (n - n // 2)
    mde = stats.unpaired_test(base, base).mde
    power = exact.fisher_power(n, n, 0.5, 0.5 + mde, ALPHA)
    assert 0.8 <= power <= 0.85
    rng = np.random.default_rng(900 + n)
    reps = 2000
    x, y = rng.binomial(n, 0.5, reps), rng.binomial(n, 0.5 + mde, reps)
    simulated = np.mean([exact.fisher_exact(int(a), n, int(b), n) < ALPHA for a, b in zip(x, y, strict=True)])
    assert 0.75 <= simulated <= 0.85


@pytest.mark.parametrize("n", [20, 50, 100])
def test_mcnemar_power_at_the_reported_detectable_effect(n):
    rng = np.random.default_rng(1000 + n)
    a = (rng.random(n) < 0.7).astype(float)
    b = a.copy()
    b[: n // 5] = 1 - b[: n // 5]  # 20% discordant pairs, no net effect
    result = stats.paired_test(a, b)
    discordance = max((n // 5) / n, result.mde)
    share = 0.5 * (1 + result.mde / discordance)
    reps = 2000
    d = rng.binomial(n, discordance, reps)
    up = rng.binomial(d, share)
    hits = np.mean([exact.mcnemar_p(int(k - u), int(u)) < ALPHA for k, u in zip(d, up, strict=True)])
    assert 0.75 <= hits <= 0.85


# -- honest small samples -------------------------------------------------------------------
def test_sizes_that_cannot_reach_significance_say_so_and_how_many_would():
    five = stats.paired_test([0] * 5, [1] * 5)
    assert five.p_value == pytest.approx(0.0625) and not five.reachable and five.needed_n == 6
    three = stats.unpaired_test([0, 0, 0], [1, 1, 1])
    assert three.p_value == pytest.approx(0.1) and three.needed_n == 4  # Fisher; the z test said p = 0.0
    arms = [Arm("a", "A", {}, {f"s{i}": {"accuracy": 0.0} for i in range(5)}),
            Arm("b", "B", {}, {f"s{i}": {"accuracy": 1.0} for i in range(5)})]  # fmt: skip
    report = compare_arms(arms)
    assert "cannot reach significance" in report.verdict[0] and "needs n >= 6" in report.verdict[0]
    assert "detects about" not in report.verdict[0]


def test_identical_runs_never_promise_a_zero_detectable_effect():
    same = stats.paired_test([0.5, 0.7, 0.9, 0.4, 0.6, 0.8], [0.5, 0.7, 0.9, 0.4, 0.6, 0.8])
    assert same.p_value == 1.0 and (math.isnan(same.mde) or same.mde > 0)
    binary = stats.paired_test([1, 0, 1, 1, 0, 1, 1, 0], [1, 0, 1, 1, 0, 1, 1, 0])
    assert binary.mde > 0.3  # McNemar at n=8: only big effects are detectable


def test_tiny_unit_metrics_are_tested_like_any_other():
    rng = np.random.default_rng(11)
    cost = rng.normal(2e-6, 3e-7, 40)
    cheaper = cost - 4e-7 + rng.normal(0, 1e-7, 40)
    assert stats.paired_test(cost, cheaper).p_value < 1e-6  # was p = 1: differences below 1e-8 counted as 0
