"""Simulations of A/B tests analysed the way a release owner uses them: looked at every day.

Seeded and vectorised over replications (numpy): each experiment is reduced to its
per-arm sufficient statistics after each day, and the decision at each look is made
by the functions the analysis uses (:mod:`keel.core.sequential`, :mod:`keel.core.stats`,
Holm across treatments and across guardrails). ``test_vectorised_decisions_match_analyze``
checks on a few replications that :func:`keel.core.abtests.analyze` gives the same
p-values and decisions, and ``test_whole_report_verdicts_follow_the_simulated_decision_rule``
that its whole verdict (winners, guardrail blocks, ship / do not ship / keep) follows the
rule applied here, so the figures here are the product's.

Checked (alpha = 0.05; 2,000 replications: a rate's sd is about 0.5 points):
- false "ship" under daily looks for 56 days <= 0.055, for the sequential design with
  1 to 4 treatments (up to 5 variants), 0/1 and continuous metrics;
- the same for the fixed-horizon design (its verdict waits for the planned n);
- the unstated design (the old analysis at every look) is shown to inflate it;
- a good variant is blocked by 3 guardrails that do not move at most alpha of the time;
- power at the planned n is 0.75..0.85 for both designs, with the correction for 1 or 3
  treatments in the plan.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from keel.core.ab_design import plan_n, rate_sd
from keel.core.abtests import analyze, parse_experiment
from keel.core.sequential import msprt_p, rate_variance
from keel.core.stats import holm, two_proportion_z

ALPHA = 0.05
DAYS = 56
PER_DAY = 100  # units per arm per day
REPS = 2000


def holm_reject(p: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Holm step-down over the last axis: True where rejected (NaN never is)."""
    p = np.where(np.isnan(p), np.inf, p)
    k = p.shape[-1]
    order = np.argsort(p, axis=-1)
    sorted_p = np.take_along_axis(p, order, axis=-1)
    passes = sorted_p < alpha / (k - np.arange(k))
    passes = np.cumprod(passes, axis=-1).astype(bool)  # stop at the first failure
    out = np.zeros_like(passes)
    np.put_along_axis(out, order, passes, axis=-1)
    return out


def test_holm_reject_matches_holm():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.1, size=(500, 4))
    expected = np.array([[q < ALPHA for q in holm(list(row))] for row in p])
    assert (holm_reject(p) == expected).all()


def binary_days(rng, rates, reps=REPS, days=DAYS, per_day=PER_DAY):
    """Cumulative successes per look: shape (days, reps, arms); n per arm is per_day * day."""
    daily = rng.binomial(per_day, np.asarray(rates), size=(days, reps, len(rates)))
    return np.cumsum(daily, axis=0)


def normal_days(rng, means, sd=1.0, reps=REPS, days=DAYS, per_day=PER_DAY):
    """Cumulative (sum, sum of squares) per look of normal data, from daily sufficient statistics."""
    mu = np.asarray(means, dtype=float)
    shape = (days, reps, len(mu))
    day_mean = mu + sd / math.sqrt(per_day) * rng.standard_normal(shape)
    day_ss = sd * sd * rng.chisquare(per_day - 1, size=shape)
    sums = np.cumsum(per_day * day_mean, axis=0)
    squares = np.cumsum(day_ss + per_day * day_mean**2, axis=0)
    return sums, squares


def seq_binary_p(successes, n, tau):
    """Always-valid p of each treatment against arm 0, as the analysis computes it."""
    rate = successes / n
    var = rate_variance(successes[..., 1:], n) + rate_variance(successes[..., :1], n)
    return msprt_p(rate[..., 1:] - rate[..., :1], var, tau * tau), rate[..., 1:] - rate[..., :1]


def seq_normal_p(sums, squares, n, tau_sd=0.1):
    mean = sums / n
    var_unit = (squares - n * mean**2) / (n - 1)
    var = var_unit[..., 1:] / n + var_unit[..., :1] / n
    pooled = np.sqrt(var_unit.mean(axis=-1, keepdims=True))
    diff = mean[..., 1:] - mean[..., :1]
    return msprt_p(diff, var, (tau_sd * pooled) ** 2), diff


def looks(days=DAYS, per_day=PER_DAY):
    return (np.arange(1, days + 1) * per_day).reshape(days, 1, 1)


def ever(decisions: np.ndarray) -> float:
    """P(a decision on some look): decisions has shape (days, reps)."""
    return float(decisions.any(axis=0).mean())


@pytest.mark.parametrize("arms", [2, 3, 5])
def test_sequential_false_ship_under_daily_looks_binary(arms):
    rng = np.random.default_rng(100 + arms)
    successes = binary_days(rng, [0.3] * arms)
    n = looks()
    tau = 0.1 * math.sqrt(0.3 * 0.7)  # the default: a tenth of the metric's sd
    p, diff = seq_binary_p(successes, n, tau)
    ship = (holm_reject(p) & (diff > 0)).any(axis=-1)
    by_day = np.cumsum(ship, axis=0) > 0
    assert by_day[-1].mean() <= 0.055, by_day[-1].mean()
    assert by_day[6].mean() <= by_day[-1].mean()  # it can only grow, and stays under alpha


@pytest.mark.parametrize("arms", [2, 5])
def test_sequential_false_ship_under_daily_looks_continuous(arms):
    rng = np.random.default_rng(200 + arms)
    sums, squares = normal_days(rng, [0.0] * arms, sd=3.0)
    p, diff = seq_normal_p(sums, squares, looks())
    ship = (holm_reject(p) & (diff > 0)).any(axis=-1)
    assert ever(ship) <= 0.055, ever(ship)


def test_sequential_false_ship_with_a_stated_mde():
    """Tuned for the planned effect (tau = mde) instead of the default."""
    rng = np.random.default_rng(7)
    successes = binary_days(rng, [0.3, 0.3, 0.3, 0.3])
    p, diff = seq_binary_p(successes, looks(), 0.03)
    assert ever((holm_reject(p) & (diff > 0)).any(axis=-1)) <= 0.055


def test_unstated_design_inflates_false_ships_under_daily_looks():
    """The old analysis (a fixed-horizon two-proportion test at every look), labelled as such."""
    rng = np.random.default_rng(3)
    successes = binary_days(rng, [0.3, 0.3], reps=1000)
    n = looks()[:, :, 0]
    x_a, x_b = successes[..., 0], successes[..., 1]
    pooled = (x_a + x_b) / (2 * n)
    z = (x_b - x_a) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    significant = np.abs(z) > 1.959963984540054
    assert ever(significant) > 0.12  # the issue measured 0.159 by day 56


def test_fixed_horizon_false_ship_is_alpha_however_often_looked_at():
    """Interim looks are 'not decided'; the one decision uses the first n units per variant."""
    n_plan = plan_n("fixed", 0.03, baseline=0.3, sd=None, alpha=ALPHA, power=0.8, comparisons=4)
    rng = np.random.default_rng(11)
    reps = 2000
    successes = rng.binomial(n_plan, 0.3, size=(reps, 5))
    shipped = 0
    for row in successes:
        tests = [two_proportion_z(int(row[0]), n_plan, int(x), n_plan, 1 - ALPHA) for x in row[1:]]
        adjusted = holm([t[2] for t in tests])
        shipped += any(p < ALPHA and t[0] > 0 for p, t in zip(adjusted, tests, strict=True))
    assert shipped / reps <= 0.055, shipped / reps


def test_guardrails_that_do_not_move_rarely_block_a_good_variant():
    """3 guardrails x 4 treatments, no harm: P(some breach) <= alpha (Holm over all 12, one-sided)."""
    rng = np.random.default_rng(5)
    sums, squares = normal_days(rng, [0.0] * 5, sd=100.0)
    p, diff = seq_normal_p(sums, squares, looks())
    blocked = np.zeros(p.shape[:2], dtype=bool)
    for g in range(3):  # three independent guardrail metrics
        sums, squares = normal_days(np.random.default_rng(50 + g), [0.0] * 5, sd=100.0)
        p_g, diff_g = seq_normal_p(sums, squares, looks())
        p_harm = np.where(diff_g > 0, p_g, 1.0)  # "worse" = higher
        blocked_g = p_harm if g == 0 else np.concatenate([blocked_g, p_harm], axis=-1)  # noqa: F821
    blocked = holm_reject(blocked_g).any(axis=-1)
    assert ever(blocked) <= 0.055, ever(blocked)


@pytest.mark.parametrize("treatments", [1, 3])
def test_fixed_horizon_power_at_the_planned_n(treatments):
    n_plan = plan_n("fixed", 0.03, baseline=0.3, sd=None, alpha=ALPHA, power=0.8, comparisons=treatments)
    rng = np.random.default_rng(20 + treatments)
    reps = 2000
    rates = [0.3] + [0.33] + [0.3] * (treatments - 1)  # one treatment works
    successes = rng.binomial(n_plan, rates, size=(reps, treatments + 1))
    hits = 0
    for row in successes:
        tests = [two_proportion_z(int(row[0]), n_plan, int(x), n_plan, 1 - ALPHA) for x in row[1:]]
        adjusted = holm([t[2] for t in tests])
        hits += adjusted[0] < ALPHA and tests[0][0] > 0
    assert 0.75 <= hits / reps <= 0.85, (n_plan, hits / reps)


@pytest.mark.parametrize(("treatments", "tau"), [(1, 0.03), (3, 0.03), (1, 0.1 * math.sqrt(0.21))])
def test_sequential_power_at_the_planned_n(treatments, tau):
    """Tuned for the design's mde (tau = mde), or the default tenth of an sd when it states none."""
    mde = 0.03
    n_plan = plan_n("sequential", mde, baseline=0.3, sd=None, alpha=ALPHA, power=0.8, comparisons=treatments, tau=tau)
    rng = np.random.default_rng(30 + treatments)
    reps = 2000
    rates = [0.3] + [0.33] + [0.3] * (treatments - 1)
    successes = rng.binomial(n_plan, rates, size=(1, reps, treatments + 1))
    p, diff = seq_binary_p(successes, np.full((1, 1, 1), n_plan), tau)
    power = float((holm_reject(p)[..., 0] & (diff[..., 0] > 0)).mean())
    assert 0.75 <= power <= 0.85, (n_plan, power)


def test_planned_sizes_include_the_correction():
    one = plan_n("fixed", 0.03, baseline=0.3, sd=None, alpha=ALPHA, power=0.8, comparisons=1)
    three = plan_n("fixed", 0.03, baseline=0.3, sd=None, alpha=ALPHA, power=0.8, comparisons=3)
    seq = plan_n("sequential", 0.03, baseline=0.3, sd=None, alpha=ALPHA, power=0.8, comparisons=1)
    assert three > 1.3 * one  # z(1 - 0.05/6) vs z(0.975): about 1.4x the units
    assert seq > one  # looking any time costs units
    assert rate_sd(0.3, 0.03) == pytest.approx(math.sqrt((0.21 + 0.33 * 0.67) / 2))


def test_vectorised_decisions_match_analyze():
    """The simulation's p-values are the analysis's: same data through keel.core.abtests.analyze."""
    exp = parse_experiment(
        {"name": "sim", "variants": [{"name": "a"}, {"name": "b"}, {"name": "c"}], "design": "sequential"}
    )
    rng = random.Random(1)
    for rep in range(5):
        assignments, outcomes = {}, []
        for i in range(3 * 200):
            unit = f"r{rep}u{i}"
            arm = "abc"[i % 3]
            assignments[unit] = arm
            outcomes.append((unit, "thumbs_up", float(rng.random() < (0.3 if arm != "c" else 0.4))))
        result = analyze(exp, assignments, outcomes)
        sums = np.array([[sum(v for u, m, v in outcomes if assignments[u] == arm) for arm in "abc"]], dtype=float)
        tau = 0.1 * math.sqrt((sums.sum() + 1) / (600 + 2) * (1 - (sums.sum() + 1) / (600 + 2)))
        p, _ = seq_binary_p(sums, np.full((1, 1), 200.0), tau)
        got = [c.p_value for c in result.comparisons if c.metric == "thumbs_up"]
        assert got == pytest.approx(list(p[0]), rel=1e-9)
        expected = holm_reject(p)[0]
        assert [c.significant for c in result.comparisons if c.metric == "thumbs_up"] == list(expected)


def test_fixed_horizon_guardrails_that_do_not_move_rarely_block():
    """3 guardrails x 2 treatments at the planned n, no harm: one-sided Welch, Holm over all 6."""
    from keel.core.stats import welch  # the p of welch_diff, which the analysis uses

    rng = np.random.default_rng(6)
    reps, n = 1000, 200
    blocked = 0
    for _ in range(reps):
        data = rng.normal(800, 100, size=(3, 3, n))  # guardrail x arm x unit
        one_sided = []
        for g in range(3):
            for arm in (1, 2):
                diff, p = data[g, arm].mean() - data[g, 0].mean(), welch(data[g, 0], data[g, arm])
                one_sided.append(p / 2 if diff > 0 else 1 - p / 2)  # worse = higher
        blocked += any(p < ALPHA for p in holm(one_sided))
    assert blocked / reps <= 0.055, blocked / reps


def test_whole_report_verdicts_follow_the_simulated_decision_rule():
    """The decision rule the simulations apply (Holm over treatments on the primary metric, a
    variant blocked by a Holm-corrected one-sided harm test over every guardrail x treatment,
    ship the best unblocked winner) is the one analyze() applies, on varied data."""
    names = ["control", "b", "c"]
    exp = parse_experiment(
        {"name": "sim", "variants": [{"name": n} for n in names], "design": "sequential",
         "guardrails": [{"metric": "latency", "worse": "higher"}, {"metric": "cost", "worse": "higher"}]}
    )  # fmt: skip
    rng = np.random.default_rng(12)
    n = 300
    outcomes_seen = {"ship": 0, "keep": 0, "blocked": 0}
    for _ in range(40):
        rates = [0.3, *rng.choice([0.3, 0.38, 0.42], size=2)]
        harm = {g: [0.0, *rng.choice([0.0, 0.0, 40.0], size=2)] for g in ("latency", "cost")}
        assignments, outcomes = {}, []
        ones = np.zeros(3)
        guard = {g: [[], [], []] for g in harm}
        for i in range(3 * n):
            arm, unit = i % 3, f"u{i}"
            assignments[unit] = names[arm]
            hit = float(rng.random() < rates[arm])
            ones[arm] += hit
            outcomes.append((unit, "thumbs_up", hit))
            for g in harm:
                value = float(rng.normal(800 + harm[g][arm], 100))
                guard[g][arm].append(value)
                outcomes.append((unit, g, value))
        result = analyze(exp, assignments, outcomes)
        # the simulation's rule, from sufficient statistics
        pooled = (ones.sum() + 1) / (3 * n + 2)
        p, diff = seq_binary_p(ones[None, :], np.full((1, 1), float(n)), 0.1 * math.sqrt(pooled * (1 - pooled)))
        winners = holm_reject(p)[0] & (diff[0] > 0)
        harm_p = []
        for g in harm:
            data = np.array(guard[g])
            sums, squares = data.sum(axis=1)[None, :], (data**2).sum(axis=1)[None, :]
            p_g, diff_g = seq_normal_p(sums, squares, np.full((1, 1), float(n)))
            harm_p += list(np.where(diff_g[0] > 0, p_g[0], 1.0))
        blocked = holm_reject(np.array(harm_p))
        blocked = blocked[:2] | blocked[2:]  # per treatment, over both guardrails
        ship = [k for k in range(2) if winners[k] and not blocked[k]]
        if ship:
            kind, expected = "ship", f"Verdict: ship {names[1 + max(ship, key=lambda k: diff[0][k])]}."
        elif blocked.any():
            kind, expected = "blocked", "Verdict: do not ship: a guardrail is breached."
        else:
            kind, expected = "keep", "Verdict: keep control (no variant is significantly better yet; looking again"
        outcomes_seen[kind] += 1
        assert result.verdict[-1].startswith(expected), (result.verdict[-1], expected)
        breached = {(c.metric, c.variant) for c in result.guardrail_checks if c.status == "breached"}
        assert {v for _, v in breached} == {names[1 + k] for k in range(2) if blocked[k]}
    assert all(outcomes_seen.values()), outcomes_seen  # every kind of verdict was exercised
