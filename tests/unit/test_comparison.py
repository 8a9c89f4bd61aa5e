"""keel.core.comparison: deltas, paired vs unpaired tests, Holm, Pareto front, verdict."""

import json
import math
import random

import pytest

from keel.core.comparison import Arm, compare_arms
from keel.core.directions import default_direction
from keel.core.scorers import ScorerErrors, count_scorer_errors


def _arm(key, p, cost, latency=500.0, n=200, seed=0, ids=None, metric="accuracy"):
    rng = random.Random(seed)
    ids = ids or [f"q{i}" for i in range(n)]
    samples = {sid: {metric: float(rng.random() < p)} for sid in ids}
    mean = sum(s[metric] for s in samples.values()) / len(samples)
    return Arm(key, key.upper(), {metric: mean, "cost_per_query": cost, "latency_p50_ms": latency}, samples)


def test_paired_binary_scores_use_mcnemar_and_a_big_gap_is_significant():
    base, better = _arm("base", 0.6, 0.002, seed=1), _arm("big", 0.95, 0.03, seed=2)
    c = compare_arms([base, better])
    result = c.result("big", "accuracy")
    assert result.method == "mcnemar" and result.n == 200 and result.significant
    assert result.delta == pytest.approx(better.metrics["accuracy"] - base.metrics["accuracy"])
    assert result.ci_low < result.mean < result.ci_high
    assert c.result("base", "accuracy").delta is None  # the baseline row


def test_runs_on_different_samples_are_compared_unpaired():
    a = _arm("a", 0.7, 0.01, ids=[f"a{i}" for i in range(100)])
    b = _arm("b", 0.7, 0.01, ids=[f"b{i}" for i in range(100)], seed=3)
    assert compare_arms([a, b]).result("b", "accuracy").method == "fisher exact"  # 0/1 scores: exact test


def test_holm_adjusts_across_metrics():
    rng = random.Random(4)
    ids = [f"q{i}" for i in range(80)]

    def arm(key, shift):
        samples = {s: {f"m{j}": rng.gauss(0.5 + shift * (j == 0), 0.1) for j in range(4)} for s in ids}
        return Arm(key, key, {}, samples)

    c = compare_arms([arm("a", 0.0), arm("b", 0.05)])
    results = [c.result("b", f"m{j}") for j in range(4)]
    assert all(r.p_adjusted >= r.p_value for r in results)
    assert results[0].significant


def test_pareto_front_and_verdict_name_the_best_and_the_best_value():
    arms = [
        _arm("v13_gpt4", 0.97, 0.03, 900, seed=5),
        _arm("v13_gpt35", 0.80, 0.0012, 400, seed=6),
        _arm("v12_gpt35", 0.65, 0.0012, 450, seed=7),
    ]
    c = compare_arms(arms)
    assert c.pareto == ("v13_gpt4", "v13_gpt35")
    # the baseline is best: the claim rests on the table's own (Holm-adjusted) tests against it
    assert c.verdict[0].startswith("V13_GPT4 (baseline) is best on accuracy: every other run is significantly worse")
    assert "closest, V13_GPT35: -" in c.verdict[0] and "higher is better (default for a known name)" in c.verdict[0]
    assert c.verdict[1].startswith("V13_GPT35 offers the best cost-performance (accuracy -")
    assert "at 4% of the cost of V13_GPT4" in c.verdict[1]
    md = c.to_markdown()
    assert "| accuracy |" in md and "Pareto front" in md and "V13_GPT4 (baseline)" in md
    assert c.to_dict()["pareto_front"] == ["v13_gpt4", "v13_gpt35"]


def test_aggregate_only_runs_compare_without_intervals():
    a = Arm("a", "a", {"accuracy": 0.8, "cost_per_query": 0.01})
    b = Arm("b", "b", {"accuracy": 0.85, "cost_per_query": 0.02})
    c = compare_arms([a, b])
    r = c.result("b", "accuracy")
    assert r.delta == pytest.approx(0.05) and r.p_value is None and math.isnan(r.ci_low)
    assert "significance is unknown" in c.verdict[0]


def test_bad_input():
    with pytest.raises(ValueError, match="at least two"):
        compare_arms([Arm("a", "a", {})])
    with pytest.raises(ValueError, match="baseline"):
        compare_arms([Arm("a", "a", {}), Arm("b", "b", {})], baseline="zzz")


def test_directions_of_known_names_only():
    assert default_direction("cost_per_query") == default_direction("latency_p95_ms") == "lower"
    assert default_direction("accuracy") == default_direction("exact_match") == "higher"
    # substrings no longer decide: these were all taken as lower-is-better
    for name in ("hallucination_free", "error_free_rate", "tokens_per_second", "glossary_accuracy", "faithfulness"):
        assert default_direction(name) is None


def _eval_rows(n, scores, errors):
    """Samples-table rows as keel.evaluate writes them: ``errors[i]`` is the sample's scorer errors."""
    return [
        {"sample_id": f"q{i}", "output": "x", **{f"score.{k}": v for k, v in scores(i).items()},
         "scorer_errors": json.dumps(errors(i)) if errors(i) else None}
        for i in range(n)
    ]  # fmt: skip


def test_a_scorer_failing_on_more_than_half_of_the_samples_is_failed():
    # 51 of 100 samples: failed; 50 of 100: counted only. Samples without an output ran no scorer.
    rows = _eval_rows(100, lambda i: {"judge": None if i <= 50 else 0.8, "em": None if i < 50 else 1.0},
                      lambda i: {**({"judge": "InvalidInput: no client"} if i <= 50 else {}),
                                 **({"em": "KeyError: 'answer'"} if i < 50 else {})})  # fmt: skip
    rows.append({"sample_id": "dead", "output": None, "scorer_errors": None})
    counted = count_scorer_errors(rows, ["judge", "em", "f1"])
    assert (counted["judge"].errors, counted["judge"].samples, counted["judge"].failed) == (51, 100, True)
    assert (counted["em"].errors, counted["em"].failed) == (50, False)
    assert counted["f1"] == ScorerErrors("f1", 0, 100, None) and not counted["f1"].failed
    assert counted["judge"].summary() == "scorer 'judge' failed on 51 of 100 samples: InvalidInput: no client"
    assert not ScorerErrors("s", 0, 0).failed  # every call failed: failed samples, not a failed scorer


def test_a_failed_scorer_stays_in_the_comparison_marked_failed():
    good = Arm.from_table("good", "GOOD", {"cost_per_query": 0.02, "latency_p50_ms": 300},
                          _eval_rows(40, lambda i: {"acc": float(i % 4 != 0), "judge": 0.9}, lambda i: {}))
    broken = Arm.from_table("broken", "BROKEN", {"cost_per_query": 0.01, "latency_p50_ms": 200},
                            _eval_rows(40, lambda i: {"acc": float(i % 3 != 0), "judge": None},
                                       lambda i: {"judge": "InvalidInput: judge 'judge' has no client"}))  # fmt: skip
    c = compare_arms([good, broken], directions={"acc": "higher", "judge": "higher"})
    assert c.metrics == ("acc", "judge")  # not only the metric both runs scored
    result = c.result("broken", "judge")
    assert result.failed and result.errors == 40 and math.isnan(result.mean) and result.p_value is None
    assert c.cell(result) == "FAILED (40 errors)" and not c.result("good", "judge").failed
    assert c.verdict[0] == (
        "scorer 'judge' failed on 40 of 40 samples: InvalidInput: judge 'judge' has no client in BROKEN; "
        "it is left out of the comparison on judge."
    )
    assert "GOOD (baseline) on acc" in c.verdict[1]  # the quality metric is one that did not fail
    data = c.to_dict()
    assert data["failed_scorers"] == [{"run": "broken", "name": "judge", "errors": 40, "samples": 40,
                                       "first_error": "InvalidInput: judge 'judge' has no client"}]  # fmt: skip
    assert [r["failed"] for r in data["results"] if r["metric"] == "judge"] == [False, True]
    assert "FAILED (40 errors)" in c.to_markdown()
    # Ranked on the failed metric, the failed run is neither best nor on the Pareto front.
    on_judge = compare_arms([good, broken], quality="judge", directions={"judge": "higher"})
    assert on_judge.pareto == ("good",) and not any("is best" in line for line in on_judge.verdict)
