"""A/B tests (keel.core.abtests) and their statistics (keel.core.stats), checked against scipy
and by simulation: an A/A test is significant at about the nominal rate, a known effect is
detected with about the planned power, allocation matches the weights."""

import math
import random

import numpy as np
import pytest
from scipy import stats as sps

from keel.core.abtests import analyze, compile_assigner, parse_experiment
from keel.core.stats import (
    chi2_sf,
    regularized_gamma_q,
    sample_size_means,
    sample_size_proportions,
    srm_test,
    two_proportion_z,
    welch_diff,
    wilson_ci,
)
from keel.errors import InvalidInput


def experiment(**extra):
    spec = {"name": "exp", "variants": [{"name": "control"}, {"name": "treatment"}], **extra}
    return parse_experiment(spec)


# -- statistics vs scipy ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("x", "df"), [(0.5, 1), (3.84, 1), (10, 3), (50, 20), (0.01, 5), (200, 150), (1e-6, 2), (80, 4)]
)
def test_chi2_sf_matches_scipy(x, df):
    assert chi2_sf(x, df) == pytest.approx(sps.chi2.sf(x, df), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize(("a", "x"), [(0.5, 0.1), (2.5, 7), (30, 25), (1, 1)])
def test_regularized_gamma_matches_scipy(a, x):
    from scipy.special import gammaincc

    assert regularized_gamma_q(a, x) == pytest.approx(gammaincc(a, x), rel=1e-10)


def test_srm_matches_scipy_chisquare():
    counts, weights = [5120, 4880], [0.5, 0.5]
    stat, p = srm_test(counts, weights)
    ref = sps.chisquare(counts, [5000, 5000])
    assert stat == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    stat, p = srm_test([210, 290, 500], [0.2, 0.3, 0.5])
    ref = sps.chisquare([210, 290, 500], [200, 300, 500])
    assert p == pytest.approx(ref.pvalue)
    assert math.isnan(srm_test([0, 0], [0.5, 0.5])[1])


def test_two_proportion_z_matches_the_textbook():
    diff, (low, high), p = two_proportion_z(300, 1000, 345, 1000)
    pooled = 645 / 2000
    z = 0.045 / math.sqrt(pooled * (1 - pooled) * 2 / 1000)
    assert p == pytest.approx(2 * sps.norm.sf(z))
    # the interval is Newcombe's hybrid score interval (Wald's gave [0, 0] for 0/500 vs 0/500)
    wa = sps.binomtest(300, 1000).proportion_ci(0.95, method="wilson")
    wb = sps.binomtest(345, 1000).proportion_ci(0.95, method="wilson")
    expected = (0.045 - math.hypot(0.345 - wb.low, wa.high - 0.3), 0.045 + math.hypot(wb.high - 0.345, 0.3 - wa.low))
    assert diff == pytest.approx(0.045)
    assert (low, high) == pytest.approx(expected, rel=1e-9)


def test_welch_diff_matches_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 80), rng.normal(0.4, 2, 120)
    diff, _ci, p = welch_diff(a, b)
    assert diff == pytest.approx(b.mean() - a.mean())
    assert p == pytest.approx(sps.ttest_ind(b, a, equal_var=False).pvalue, rel=1e-7)


def test_wilson_matches_scipy():
    low, high = wilson_ci(37, 120)
    ref = sps.binomtest(37, 120).proportion_ci(0.95, method="wilson")
    assert (low, high) == pytest.approx((ref.low, ref.high), rel=1e-9)


def test_sample_sizes():
    # the classic: 10% -> 12% at alpha 0.05, power 0.8 needs ~3,841 per arm (unpooled normal approximation)
    assert sample_size_proportions(0.10, 0.02) == pytest.approx(3841, abs=5)
    # means are sized for the t test (the normal formula's 252 falls short by one unit; see test_stats_planning.py)
    assert sample_size_means(2.0, 0.5) == 253


# -- definitions and assignment ----------------------------------------------------------
def test_bad_experiments():
    with pytest.raises(InvalidInput, match="sum to 1.1"):
        experiment(weights={"control": 0.5, "treatment": 0.6})
    with pytest.raises(InvalidInput, match="at least two variants"):
        parse_experiment({"name": "e", "variants": [{"name": "a"}]})
    with pytest.raises(InvalidInput, match="repeat"):
        parse_experiment({"name": "e", "variants": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(InvalidInput, match="invalid experiment name"):
        parse_experiment({"name": "bad name!", "variants": [{"name": "a"}, {"name": "b"}]})
    with pytest.raises(InvalidInput, match="weights name"):
        experiment(weights={"control": 0.5, "other": 0.5})


def test_assignment_is_deterministic_and_matches_weights():
    exp = parse_experiment(
        {
            "name": "three",
            "variants": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
            "weights": {"a": 0.2, "b": 0.3, "c": 0.5},
        }
    )
    assign = compile_assigner(exp)
    n = 30_000
    got = [assign(f"u{i}", None) for i in range(n)]
    assert got == [compile_assigner(exp)(f"u{i}", None) for i in range(n)]
    for name, weight in (("a", 0.2), ("b", 0.3), ("c", 0.5)):
        sd = math.sqrt(weight * (1 - weight) / n)
        assert abs(got.count(name) / n - weight) < 4 * sd
    # the chi-square SRM check agrees the allocation is fine
    assert srm_test([got.count(x) for x in "abc"], [0.2, 0.3, 0.5])[1] > 0.001
    # another salt reshuffles
    other = compile_assigner(parse_experiment({**exp.definition(), "salt": "x"}))
    assert [other(f"u{i}", None) for i in range(200)] != got[:200]


def test_targeting_excludes_units():
    exp = experiment(targeting={"country": {"in": ["US"]}})
    assign = compile_assigner(exp)
    assert assign("u1", {"country": "DE"}) is None
    assert assign("u1", {"country": "US"}) in ("control", "treatment")


# -- analysis --------------------------------------------------------------------------------
def simulate(p_control, p_treatment, n, seed, continuous=False):
    rng = random.Random(seed)
    assignments, outcomes = {}, []
    for i in range(2 * n):
        unit = f"u{i}"
        variant = "control" if i % 2 == 0 else "treatment"
        assignments[unit] = variant
        p = p_control if variant == "control" else p_treatment
        if continuous:
            outcomes.append((unit, "thumbs_up", rng.gauss(p, 1.0)))
        else:
            outcomes.append((unit, "thumbs_up", 1.0 if rng.random() < p else 0.0))
    return assignments, outcomes


def test_aa_test_is_significant_at_about_the_nominal_rate():
    exp = experiment()
    reps, hits = 400, 0
    for seed in range(reps):
        assignments, outcomes = simulate(0.3, 0.3, 300, seed)
        result = analyze(exp, assignments, outcomes)
        hits += result.comparisons[0].significant
    rate = hits / reps
    # nominal 5%: 400 replications -> sd ~1.1 pp; allow ~3 sd
    assert 0.015 <= rate <= 0.09, rate


def test_known_effect_is_detected_with_the_planned_power():
    exp = experiment()
    n = sample_size_proportions(0.30, 0.06, power=0.8)
    reps, hits = 300, 0
    for seed in range(reps):
        assignments, outcomes = simulate(0.30, 0.36, n, 10_000 + seed)
        result = analyze(exp, assignments, outcomes, mde=0.06)
        hits += result.comparisons[0].significant and result.comparisons[0].diff > 0
    assert abs(result.required_n - n) < 0.1 * n  # from the observed control rate
    assert 0.72 <= hits / reps <= 0.88, hits / reps


def test_continuous_metric_uses_welch_and_detects_effect():
    exp = experiment(primary_metric="thumbs_up")
    assignments, outcomes = simulate(0.0, 0.5, 300, 3, continuous=True)
    result = analyze(exp, assignments, outcomes)
    c = result.comparisons[0]
    assert c.test == "Welch t" and c.significant and c.diff > 0
    assert result.binary["thumbs_up"] is False
    assert "ship treatment" in result.verdict[-1]


def test_srm_and_guardrails_are_flagged():
    exp = experiment(guardrails=[{"metric": "latency_ms", "worse": "higher"}])
    assignments = {f"u{i}": ("control" if i < 600 else "treatment") for i in range(1000)}
    rng = random.Random(0)
    outcomes = []
    for unit, variant in assignments.items():
        outcomes.append((unit, "thumbs_up", 1.0 if rng.random() < (0.3 if variant == "control" else 0.4) else 0.0))
        outcomes.append((unit, "latency_ms", rng.gauss(800 if variant == "control" else 1000, 100)))
    result = analyze(exp, assignments, outcomes)
    assert result.srm and result.srm_p < 1e-6
    assert [b.metric for b in result.guardrail_breaches] == ["latency_ms"]
    text = " ".join(result.verdict)
    assert "Sample ratio mismatch" in text and "GUARDRAIL BREACHED" in text and "do not ship" in text
    doc = result.to_dict()
    assert doc["srm"]["mismatch"] is True and doc["guardrail_breaches"][0]["metric"] == "latency_ms"


def test_no_data_verdict_and_units_averaged():
    exp = experiment()
    assert "No exposures yet" in analyze(exp, {}, []).verdict[0]
    result = analyze(
        exp, {"a": "control", "b": "treatment"}, [("a", "score", 1), ("a", "score", 3), ("zz", "score", 9)]
    )
    control = result.stats["score"][0]
    assert control.n == 1 and control.mean == 2.0
