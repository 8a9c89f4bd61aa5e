"""Comparisons: declared directions, one correction for the table and the verdict (issue 27)."""

import re

import numpy as np
import pytest

from keel.core.comparison import Arm, compare_arms
from keel.core.directions import resolve_direction
from keel.errors import InvalidInput


def _binary_arm(key, correct, metric, tags=None):
    return Arm(key, key.upper(), {}, {f"s{i}": {metric: float(c)} for i, c in enumerate(correct)}, tags=tags or {})


def _rates(rate, n=100):
    return [1] * int(rate * n) + [0] * (n - int(rate * n))


def test_a_metric_of_unknown_direction_gets_no_best_claim():
    # the case: 'hallucination_free' has "hallucination" inside and was taken as lower-is-better
    base, cand = (
        _binary_arm("base", _rates(0.8), "hallucination_free"),
        _binary_arm("cand", _rates(0.4), "hallucination_free"),
    )
    report = compare_arms([base, cand])
    assert not any("is best" in line for line in report.verdict)
    assert report.verdict[0].startswith("No run is named best on hallucination_free: its direction is unknown")
    assert "CAND differs from BASE (baseline) on hallucination_free: -0.4, significant" in report.verdict[1]
    assert report.pareto == () and report.directions["hallucination_free"].way is None


def test_a_declared_direction_decides_and_the_verdict_says_where_it_came_from():
    base, cand = (
        _binary_arm("base", _rates(0.8), "hallucination_free"),
        _binary_arm("cand", _rates(0.4), "hallucination_free"),
    )
    report = compare_arms([base, cand], directions={"hallucination_free": "higher"})
    assert report.verdict[0].startswith("BASE (baseline) is best on hallucination_free")
    assert report.verdict[0].endswith("higher is better (declared in the comparison).")
    tagged = [_binary_arm(k, _rates(r), "hallucination_free", {"keel.direction.hallucination_free": "higher"})
              for k, r in (("base", 0.8), ("cand", 0.4))]  # fmt: skip
    assert "higher is better (declared on the runs)" in compare_arms(tagged).verdict[0]


def test_runs_that_declare_opposite_directions_are_refused():
    tags = [{"keel.direction.m": "higher"}, {"keel.direction.m": "lower"}]
    with pytest.raises(InvalidInput, match="both directions"):
        resolve_direction("m", None, tags)
    assert resolve_direction("m", {"m": "lower"}, tags).way == "lower"  # an explicit declaration settles it
    with pytest.raises(InvalidInput, match="unknown direction"):
        resolve_direction("m", {"m": "up"})


def test_the_table_and_the_verdict_quote_the_same_adjusted_p():
    rng = np.random.default_rng(12)
    n = 60
    ids = [f"s{i}" for i in range(n)]
    base_scores = rng.normal(0.5, 0.1, (n, 3))
    shift = np.array([0.035, 0.0, 0.0])  # raw p around 0.02 on m0: not significant after Holm over 6 tests
    arms = [
        Arm("base", "BASE", {}, {s: {f"m{j}": float(base_scores[i, j]) for j in range(3)} for i, s in enumerate(ids)})
    ]
    for key, extra in (("b", shift), ("c", 0 * shift)):
        noise = rng.normal(0, 0.1, (n, 3))
        arms.append(Arm(key, key.upper(), {},
                        {s: {f"m{j}": float(base_scores[i, j] + extra[j] + noise[i, j]) for j in range(3)}
                         for i, s in enumerate(ids)}))  # fmt: skip
    report = compare_arms(arms, quality="m0", directions={"m0": "higher"})
    row = report.result("b", "m0")
    assert report.tests == 6 and row.p_adjusted > row.p_value
    quoted = re.search(r"Holm-adjusted p=([0-9.e-]+)", " ".join(report.verdict))
    assert quoted is not None and float(quoted.group(1)) == pytest.approx(row.p_adjusted, rel=0.05)
    assert ("significant, Holm" in " ".join(report.verdict)) == bool(row.significant)
    assert ("*" in report.cell(row)) == bool(row.significant)


def test_holm_runs_across_arms_and_metrics_together():
    arms = [_binary_arm(f"a{k}", _rates(0.7, 40), "accuracy") for k in range(5)]
    report = compare_arms(arms)
    assert report.tests == 4 and "Holm-corrected over 4 tests" in report.legend()
    assert "alpha=0.05/4" in report.power_notes()[0]  # detectable effects at the corrected level
