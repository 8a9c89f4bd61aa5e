"""A/B test designs (keel.core.ab_design), the always-valid test (keel.core.sequential) and
the analysis under each design: fixed horizon waits for its n, sequential may decide at any
look, old experiments keep their analysis with a label; guardrails are corrected or checked
for non-inferiority; SRM counts units in 0-weight arms."""

import math
import random

import numpy as np
import pytest
from scipy import stats as sps

from keel.core.ab_design import Design, parse_design, plan_n
from keel.core.abtests import analyze, parse_experiment, srm_check
from keel.core.sequential import (
    MIN_UNITS,
    confidence_sequence,
    log_likelihood_ratio,
    msprt_p,
    rate_variance,
    sequential_power,
    sequential_sample_size,
)
from keel.core.stats import sample_size_proportions
from keel.errors import InvalidInput

TWO = [{"name": "control"}, {"name": "treatment"}]


def experiment(design=None, variants=TWO, **extra):
    spec = {"name": "exp", "variants": variants, **extra}
    if design is not None:
        spec["design"] = design
    return parse_experiment(spec)


def simulate(rates, n, seed, guard=None):
    """``n`` units per arm in exposure order (arms interleaved); 0/1 primary, optional guardrail means."""
    rng = random.Random(seed)
    names = ["control", "treatment", "third", "fourth"][: len(rates)]
    assignments, outcomes = {}, []
    for i in range(n * len(rates)):
        arm = i % len(rates)
        unit = f"u{i}"
        assignments[unit] = names[arm]
        outcomes.append((unit, "thumbs_up", float(rng.random() < rates[arm])))
        if guard is not None:
            outcomes.append((unit, "latency_ms", rng.gauss(guard[arm], 100)))
    return assignments, outcomes


# -- the always-valid test --------------------------------------------------------------------
def test_msprt_p_is_one_over_the_likelihood_ratio_and_matches_its_closed_form():
    d, v, t2 = 0.05, 0.0004, 0.0009
    expected = math.sqrt(v / (v + t2)) * math.exp(t2 * d * d / (2 * v * (v + t2)))
    assert float(np.exp(log_likelihood_ratio(d, v, t2))) == pytest.approx(expected, rel=1e-12)
    assert float(msprt_p(d, v, t2)) == pytest.approx(1 / expected, rel=1e-12)
    assert float(msprt_p(0.0, v, t2)) == 1.0  # no difference: no evidence
    assert math.isnan(float(msprt_p(d, 0.0, t2)))


def test_confidence_sequence_excludes_zero_exactly_when_p_is_below_alpha():
    rng = np.random.default_rng(0)
    d = rng.normal(0, 0.05, 5000)
    v = rng.uniform(1e-4, 1e-3, 5000)
    low, high = confidence_sequence(d, v, 0.0009, 0.05)
    p = msprt_p(d, v, 0.0009)
    excludes = (low > 0) | (high < 0)
    assert ((p <= 0.05) == excludes).mean() > 0.999  # equal up to rounding at the boundary
    assert excludes.any() and not excludes.all()


def test_confidence_sequence_covers_the_truth_at_every_look_at_once():
    """Time-uniform coverage: P(the truth is outside on SOME of 56 daily looks) <= alpha."""
    rng = np.random.default_rng(1)
    reps, days, per_day, true = 2000, 56, 100, 0.02
    a = np.cumsum(rng.binomial(per_day, 0.3, size=(days, reps)), axis=0)
    b = np.cumsum(rng.binomial(per_day, 0.3 + true, size=(days, reps)), axis=0)
    n = (np.arange(1, days + 1) * per_day)[:, None]
    d = b / n - a / n
    low, high = confidence_sequence(d, rate_variance(a, n) + rate_variance(b, n), 0.03**2, 0.05)
    missed = ((low > true) | (high < true)).any(axis=0).mean()
    assert missed <= 0.05, missed
    assert missed > 0.001  # not trivially wide


def test_sequential_sample_size_gives_the_power_it_plans_for():
    n = sequential_sample_size(1.0, 0.1, power=0.8)
    assert sequential_power(1.0, 0.1, n) >= 0.8 > sequential_power(1.0, 0.1, n - 1)
    assert sequential_sample_size(1.0, 0.1, comparisons=3) > n  # corrected for 3 treatments
    assert n > sample_size_proportions(0.5, 0.1)  # looking any time costs units


@pytest.mark.parametrize(
    "call",
    [
        lambda: sequential_sample_size(1.0, 0.0),
        lambda: sequential_sample_size(1.0, -0.1),
        lambda: sequential_sample_size(-1.0, 0.1),
        lambda: sequential_sample_size(float("nan"), 0.1),
        lambda: sequential_sample_size(1.0, 0.1, alpha=1.5),
        lambda: sequential_sample_size(1.0, 0.1, power=1.0),
        lambda: sequential_sample_size(1.0, 0.1, comparisons=0),
        lambda: confidence_sequence(0.1, 0.01, 0.01, alpha=0),
    ],
)
def test_sequential_refuses_impossible_plans(call):
    with pytest.raises(InvalidInput):
        call()


# -- designs --------------------------------------------------------------------------------
def test_designs_parse_plan_and_round_trip():
    assert experiment().design == Design()  # a definition without one: unstated (stored before designs)
    seq = experiment("sequential").design
    assert seq.kind == "sequential" and seq.n is None and seq.alpha == 0.05
    fixed = experiment({"type": "fixed", "mde": 0.03, "baseline": 0.3}).design
    assert fixed.n == sample_size_proportions(0.3, 0.03, comparisons=1)
    three = experiment({"type": "fixed", "mde": 0.03, "baseline": 0.3}, variants=TWO + [{"name": "b"}, {"name": "c"}])
    assert three.design.n == sample_size_proportions(0.3, 0.03, comparisons=3) > fixed.n  # corrected plan
    planned = experiment({"type": "sequential", "mde": 0.03, "baseline": 0.3}).design
    assert planned.n == plan_n("sequential", 0.03, baseline=0.3, sd=None, alpha=0.05, power=0.8, comparisons=1)
    # the stored n is kept as planned, not re-planned by a later keel
    again = parse_experiment(three.definition())
    assert again.design == three.design and again.definition() == three.definition()
    stored = three.definition()
    stored["design"]["n"] = 1234
    assert parse_experiment(stored).design.n == 1234
    # a lower-is-better rate plans its fall
    down = experiment({"type": "fixed", "mde": 0.03, "baseline": 0.9}, higher_is_better=False)
    assert down.design.n == sample_size_proportions(0.1, 0.03)


@pytest.mark.parametrize(
    "design",
    [
        "bayesian",
        {"type": "fixed"},  # no n and nothing to plan it from
        {"type": "fixed", "mde": 0.03},
        {"type": "fixed", "n": 1},
        {"type": "fixed", "n": 10.5},
        {"type": "sequential", "mde": 0},
        {"type": "sequential", "mde": 0.03, "baseline": 1.2},
        {"type": "sequential", "mde": 0.03, "baseline": 0.3, "sd": 1},
        {"type": "fixed", "mde": 0.2, "baseline": 0.9},  # a rate of 1.1 cannot be planned for
        {"type": "sequential", "alpha": 0.7},
        {"type": "sequential", "horizon": 3},
        [1, 2],
    ],
)
def test_bad_designs_are_refused(design):
    with pytest.raises(InvalidInput):
        experiment(design)


def test_guardrail_margins_parse_and_round_trip():
    exp = experiment(guardrails=[{"metric": "latency_ms", "worse": "higher", "margin": 50}, "errors"])
    assert exp.guardrails[0].margin == 50.0 and exp.guardrails[1].margin is None
    assert parse_experiment(exp.definition()).guardrails == exp.guardrails
    assert "margin" not in exp.definition()["guardrails"][1]  # old definitions read back unchanged
    for bad in ({"metric": "x", "margin": 0}, {"metric": "x", "margin": "big"}, {"metric": "x", "limit": 3}):
        with pytest.raises(InvalidInput):
            experiment(guardrails=[bad])


def test_parse_design_default_is_the_callers():
    assert parse_design(None, "e", 1, True, "sequential").kind == "sequential"
    assert parse_design(None, "e", 1, True, "unstated").kind == "unstated"
    assert "none stated" in Design().label() and "sequential" in parse_design("sequential", "e", 1, True, "x").label()


# -- analysis under each design ---------------------------------------------------------------
def test_fixed_horizon_interim_looks_are_not_decided():
    exp = experiment({"type": "fixed", "n": 2000})
    assignments, outcomes = simulate([0.3, 0.45], 1000, 1)
    result = analyze(exp, assignments, outcomes)
    assert not result.decided and not any(c.significant for c in result.comparisons)
    assert all(not c.decided for c in result.comparisons)
    assert "Not decided: 1000 of 2000" in " ".join(result.verdict)
    assert result.verdict[-1].startswith("Verdict: not decided yet")
    assert result.to_dict()["decided"] is False and result.required_n == 2000


def test_fixed_horizon_verdict_uses_the_first_planned_units_only():
    exp = experiment({"type": "fixed", "n": 500})
    first, first_out = simulate([0.3, 0.45], 500, 2)
    at_n = analyze(exp, first, first_out)
    assert at_n.decided and at_n.verdict[-1] == "Verdict: ship treatment."
    # later units (here: a treatment that turned bad) do not move a verdict already read
    later, later_out = simulate([0.6, 0.1], 700, 3)
    later = {f"late-{u}": v for u, v in later.items()}
    later_out = [(f"late-{u}", m, v) for u, m, v in later_out]
    after = analyze(exp, {**first, **later}, first_out + later_out)
    assert [s.n for s in after.stats["thumbs_up"]] == [500, 500]
    assert after.comparisons[0].p_value == at_n.comparisons[0].p_value
    assert after.exposures == {"control": 1200, "treatment": 1200}  # SRM and counts see every unit


def test_sequential_decides_at_any_look_and_table_agrees_with_verdict():
    exp = experiment("sequential")
    assignments, outcomes = simulate([0.3, 0.42], 800, 4)
    result = analyze(exp, assignments, outcomes)
    c = result.comparisons[0]
    assert c.test == "mSPRT (always valid)" and c.significant and result.verdict[-1] == "Verdict: ship treatment."
    assert c.ci[0] > 0  # the confidence sequence excludes 0 exactly when significant
    assert "always-valid p" in " ".join(result.verdict) and "confidence sequence" in " ".join(result.verdict)
    null = analyze(exp, *simulate([0.3, 0.3], 800, 5))
    n = null.comparisons[0]
    assert not n.significant and n.ci[0] < 0 < n.ci[1]
    assert "looking again later is safe" in null.verdict[-1]


def test_sequential_waits_for_enough_units():
    exp = experiment("sequential")
    result = analyze(exp, *simulate([0.0, 1.0], MIN_UNITS - 1, 6))
    assert math.isnan(result.comparisons[0].p_value) and not result.comparisons[0].significant
    assert f"needs {MIN_UNITS} units per arm" in " ".join(result.verdict)


def test_sequential_treatments_are_corrected():
    variants = TWO + [{"name": "third"}, {"name": "fourth"}]
    exp = experiment("sequential", variants=variants)
    result = analyze(exp, *simulate([0.3, 0.3, 0.3, 0.4], 600, 7))
    primary = [c for c in result.comparisons if c.metric == "thumbs_up"]
    raw = sorted(c.p_value for c in primary)
    assert min(c.p_adjusted for c in primary) == pytest.approx(min(1.0, 3 * raw[0]))  # Holm's first step
    assert "98.33% confidence sequence" in " ".join(result.verdict)  # simultaneous: alpha / 3 each


def test_unstated_design_keeps_the_old_analysis_with_a_label():
    exp = experiment()
    result = analyze(exp, *simulate([0.3, 0.4], 600, 8))
    assert result.comparisons[0].test == "two-proportion z"
    assert result.verdict[0].startswith("Design: none stated")
    assert result.verdict[-1] == "Verdict: ship treatment."


def test_non_inferiority_guardrail_within_margin_ships_beyond_margin_blocks():
    guard = [{"metric": "latency_ms", "worse": "higher", "margin": 30}]
    for design in ("sequential", {"type": "fixed", "n": 1500}):
        exp = experiment(design, guardrails=guard)
        fine = analyze(exp, *simulate([0.3, 0.4], 1500, 9, guard=[800, 802]))
        check = fine.guardrail_checks[0]
        assert check.method == "non-inferiority" and check.status == "non-inferior" and check.bound < 30
        assert fine.verdict[-1] == "Verdict: ship treatment."
        slow = analyze(exp, *simulate([0.3, 0.4], 1500, 10, guard=[800, 840]))
        assert slow.guardrail_checks[0].status == "not shown non-inferior"
        assert "GUARDRAIL NOT SHOWN SAFE" in " ".join(slow.verdict)
        assert slow.verdict[-1] == "Verdict: do not ship: a guardrail is not shown safe."


def test_harm_guardrail_breach_blocks_only_that_variant():
    variants = TWO + [{"name": "third"}]
    exp = experiment("sequential", variants=variants, guardrails=[{"metric": "latency_ms", "worse": "higher"}])
    result = analyze(exp, *simulate([0.3, 0.42, 0.40], 1500, 11, guard=[800, 900, 800]))
    status = {c.variant: c.status for c in result.guardrail_checks}
    assert status == {"treatment": "breached", "third": "ok"}
    assert [b.variant for b in result.guardrail_breaches] == ["treatment"]
    assert result.verdict[-1] == "Verdict: ship third."
    doc = result.to_dict()
    assert doc["guardrails"][0]["method"] == "harm test" and doc["design"]["type"] == "sequential"


def test_srm_counts_units_in_zero_weight_arms():
    weights = [0.5, 0.5, 0.0]
    assert srm_check([5000, 5000, 0], weights) == (1.0, False)
    assert srm_check([5000, 5000, 1], weights) == (0.0, True)  # one unit where none may go
    p, mismatch = srm_check([5100, 4900, 0], weights)
    assert p == pytest.approx(sps.chisquare([5100, 4900]).pvalue, rel=1e-9) and not mismatch  # 1 df, not 2
    assert math.isnan(srm_check([0, 0, 0], weights)[0])
    exp = experiment(variants=[{"name": "control", "weight": 0.5}, {"name": "treatment", "weight": 0.5},
                               {"name": "off", "weight": 0}])  # fmt: skip
    assignments = {f"u{i}": ["control", "treatment"][i % 2] for i in range(100)} | {"stray": "off"}
    result = analyze(exp, assignments, [])
    assert result.srm and "0-weight arm" in " ".join(result.verdict)


def test_analysis_travels_to_a_keel_servers_clients():
    """The remote SDK gets the same Analysis: design, guardrail checks and all (keel.core.wire)."""
    import json

    from keel.core.wire import Codec, core_types

    codec = Codec(core_types())
    guard = [{"metric": "latency_ms", "worse": "higher", "margin": 30}, {"metric": "latency_ms", "worse": "higher"}]
    exp = experiment({"type": "fixed", "n": 400}, guardrails=guard)
    result = analyze(exp, *simulate([0.3, 0.4], 500, 13, guard=[800, 805]))
    back = codec.decode(json.loads(json.dumps(codec.encode(result))))
    assert back.design == exp.design and back.guardrail_checks == result.guardrail_checks
    assert back.verdict == result.verdict and back.decided
    assert codec.decode(json.loads(json.dumps(codec.encode(exp)))) == exp
