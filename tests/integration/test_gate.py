"""keel.gate and ``keel gate`` over real runs in a SQLite workspace: the decision, the baseline
found through lineage, the report, and every bad input as a one-line error with exit 2.

The runs here are made directly (a ``samples`` table, metrics, the prompt version as a lineage
input, as keel.evaluate records them), so each case controls its scores exactly;
tests/e2e/test_gate_ci.py runs real evaluations against the stand-in model server.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import keel
from cli_inprocess import keel as run_keel
from keel.core.entities import EntityRef


@pytest.fixture
def calc(tmp_path: Path, workspace_template: Path) -> Iterator[Path]:
    """A workspace with prompt calc 1.0.0 (production) and 1.0.1."""
    from keel.sdk import session as sessions

    shutil.copytree(workspace_template, tmp_path / ".keel")
    keel.prompts.register("calc", "What is {{ question }}?", version="1.0.0", changelog="First")
    keel.prompts.register("calc", "Just the number: what is {{ question }}?", version="1.0.1", changelog="Terse")
    keel.prompts.set_alias("calc", "production", "1.0.0")
    yield tmp_path
    sessions.reset()


def _events(folder: Path) -> list[tuple[str, str, str, str]]:
    with contextlib.closing(sqlite3.connect(folder / ".keel" / "keel.db")) as db:
        query = "SELECT kind, project, subject, data FROM events WHERE kind = 'regression.detected'"
        return db.execute(query).fetchall()


def _eval_run(
    version: str, scores: list[float], *, ids: list[str] | None = None, metric: str = "exact_match",
    dataset: str = "d1", name: str | None = None,
) -> str:  # fmt: skip
    """An evaluation run of calc@version with these per-sample scores."""
    ids = ids or [f"q{i}" for i in range(len(scores))]
    with keel.start_run(project="gate", name=name or f"calc_v{version}", tags={"keel.eval": "1"}) as run:
        run.log_params({"prompt": f"calc@{version}", "dataset_hash": dataset, "model": "gpt-4"})
        run.log_input(EntityRef("prompt", "calc", version))
        rows = [{"sample_id": i, "output": "x", f"score.{metric}": s} for i, s in zip(ids, scores, strict=True)]
        run.log_table("samples", rows=rows)
        run.log_metrics({metric: sum(scores) / len(scores), "samples": len(scores), "cost_per_query": 0.001})
    return run.id


def test_a_significant_drop_fails_and_the_report_says_why(calc):
    base = _eval_run("1.0.0", [1.0] * 90 + [0.0] * 10)
    cand = _eval_run("1.0.1", [1.0] * 60 + [0.0] * 40)
    result = keel.gate(cand, baseline="production", metric="exact_match", max_drop=0.02)
    assert result.baseline == base and result.candidate == cand
    assert result.regression and not result.passed
    assert result.paired and result.shared == 100 and result.test.method == "mcnemar"
    assert result.test.delta == pytest.approx(-0.3) and result.drop == pytest.approx(0.3)
    assert len(result.worse) == 30 and result.better == ()
    assert result.baseline_target == "prompt:calc@1.0.0"
    md = result.to_markdown()
    assert md.startswith("### :x: keel gate FAILED: regression on `exact_match`")
    assert "exact_match fell by 0.3 (allowed 0.02)" in md
    assert "Of 100 shared samples, 30 got worse and 0 got better." in md
    assert "and 20 more" in md  # ten worse samples named, the rest counted
    assert "| cost_per_query | 0.001 | 0.001 |" in md
    assert json.loads(json.dumps(result.to_dict()))["regression"] is True
    events = _events(calc)  # the webhook event of a failed gate, in the outbox
    assert [(kind, project) for kind, project, _s, _d in events] == [("regression.detected", "gate")]
    subject, data = json.loads(events[0][2]), json.loads(events[0][3])
    assert subject == {"kind": "run", "run_id": cand, "name": "calc_v1.0.1"}
    assert data["metric"] == "exact_match" and data["baseline"]["run_id"] == base
    assert data["delta"] == pytest.approx(-0.3) and data["p_value"] < 0.05


def test_a_drop_within_the_allowance_or_not_significant_passes(calc):
    _eval_run("1.0.0", [1.0] * 90 + [0.0] * 10)
    small = _eval_run("1.0.1", [1.0] * 88 + [0.0] * 12)  # -0.02, within --max-drop 0.05
    result = keel.gate(small, metric="exact_match", max_drop=0.05)
    assert result.passed and "within the allowed 0.05" in result.reason()
    noisy = _eval_run("1.0.1", [1.0] * 86 + [0.0] * 14)  # -0.04 on 4 discordant pairs: not significant
    result = keel.gate(noisy, metric="exact_match")
    assert result.passed and not result.significant
    assert "is not significant at alpha=0.05" in result.reason() and "detects about" in result.reason()
    same = _eval_run("1.0.1", [1.0] * 90 + [0.0] * 10)
    assert keel.gate(same, metric="exact_match").reason().startswith("exact_match did not get worse")
    # 5 samples: McNemar cannot reach p < 0.05 however bad; the gate says so instead of a detectable effect
    five = _eval_run("1.0.2", [1.0] * 5, ids=[f"t{i}" for i in range(5)])
    tiny = _eval_run("1.0.3", [0.0] * 5, ids=[f"t{i}" for i in range(5)])
    reason = keel.gate(tiny, baseline=f"run:{five}", metric="exact_match").reason()
    assert "cannot reach significance" in reason and "needs n >= 6" in reason and "detects about" not in reason
    assert _events(calc) == []  # a gate that passes records no event


def test_runs_sharing_no_samples_use_the_unpaired_test_and_say_so(calc):
    _eval_run("1.0.0", [1.0] * 45 + [0.0] * 5, ids=[f"a{i}" for i in range(50)])
    cand = _eval_run("1.0.1", [1.0] * 20 + [0.0] * 30, ids=[f"b{i}" for i in range(50)])
    result = keel.gate(cand, metric="exact_match")
    assert not result.paired and result.shared == 0 and result.test.method == "fisher exact"
    assert result.regression
    md = result.to_markdown()
    assert "fisher exact, unpaired" in md and "the runs share no samples, so the test is unpaired (fisher exact)" in md


def test_partly_shared_samples_are_compared_on_the_shared_ones(calc):
    _eval_run("1.0.0", [1.0] * 40, ids=[f"q{i}" for i in range(40)])
    cand = _eval_run("1.0.1", [1.0] * 30, ids=[f"q{i}" for i in range(10, 40)])
    result = keel.gate(cand, metric="exact_match")
    assert result.paired and result.shared == 30 and result.passed
    assert any("share 30 of their samples (baseline 40, candidate 30)" in n for n in result.notes)


def test_lower_is_better_metrics_regress_upwards(calc):
    _eval_run("1.0.0", [0.1] * 40, metric="latency_error")
    cand = _eval_run("1.0.1", [0.1 + 0.01 * (i % 5 + 1) for i in range(40)], metric="latency_error")
    result = keel.gate(cand, metric="latency_error")
    assert not result.higher_is_better and result.test.method == "paired t"
    assert result.regression and "latency_error rose by" in result.reason()


def test_the_baseline_is_the_latest_finished_evaluation_of_the_alias_target(calc):
    older = _eval_run("1.0.0", [1.0] * 20, name="older")
    other_data = _eval_run("1.0.0", [0.0] * 20, dataset="d2", name="other-data")
    latest = _eval_run("1.0.0", [1.0] * 19 + [0.0], name="latest")
    with pytest.raises(RuntimeError), keel.start_run(project="gate", name="crashed", tags={"keel.eval": "1"}) as run:
        run.log_input(EntityRef("prompt", "calc", "1.0.0"))
        run.log_params({"dataset_hash": "d1"})
        run.log_metric("exact_match", 1.0)
        raise RuntimeError("the evaluation crashed")  # a failed run is never the baseline
    cand = _eval_run("1.0.1", [1.0] * 20)
    result = keel.gate(cand, metric="exact_match")
    assert result.baseline == latest, (older, other_data)
    assert "the latest finished of" in result.baseline_note and "on the candidate's dataset" in result.baseline_note
    by_name = keel.gate(cand, baseline="calc@production", metric="exact_match")
    assert by_name.baseline == latest
    given = keel.gate(cand, baseline=f"run:{older[:8]}", metric="exact_match")
    assert given.baseline == older and given.baseline_note == f"run {older[:8]}, as given"
    keel.prompts.set_alias("calc", "production", "1.0.1")  # the alias moved: its evaluation is the candidate's
    with pytest.raises(keel.InvalidInput, match="no finished evaluation run of prompt:calc@1.0.1"):
        keel.gate(cand, metric="exact_match")


def test_bad_input_is_one_line_and_exit_2(calc):
    _eval_run("1.0.0", [1.0] * 10)
    cand = _eval_run("1.0.1", [1.0] * 10)
    keel.flush()
    cases = [
        (["gate", "ffffffff"], "no run 'ffffffff' to gate"),
        (["gate", cand, "--metric", "f1"], "has no metric 'f1' (use --metric with one of: exact_match)"),
        (["gate", cand, "--baseline", "staging"], "prompt 'calc' has no alias 'staging'"),
        (["gate", cand, "--baseline", "run:eeeeeeee"], "eeeeeeee"),
        (["gate", cand, "--baseline", "nope@production"], "no prompt named 'nope'"),
        (["gate", cand, "--baseline", "flag:x@on"], "cannot gate against 'flag:x@on'"),
        (["gate", cand, "--max-drop", "-1"], "invalid --max-drop -1.0"),
        (["gate", cand, "--alpha", "1.5"], "invalid --alpha 1.5"),
    ]
    for args, needle in cases:
        out = run_keel(*args, cwd=calc)
        assert out.returncode == 2, (args, out.stderr)
        assert needle in out.stderr and out.stderr.count("\n") == 1, (args, out.stderr)
    keel.prompts.set_alias("calc", "production", "1.0.1")
    out = run_keel("gate", cand, cwd=calc)
    assert out.returncode == 2 and "no finished evaluation run of prompt:calc@1.0.1" in out.stderr
    assert "--baseline run:RUN_ID" in out.stderr


def test_cli_exit_codes_markdown_json_and_output_file(calc):
    _eval_run("1.0.0", [1.0] * 50)
    worse = _eval_run("1.0.1", [1.0] * 25 + [0.0] * 25)
    same = _eval_run("1.0.1", [1.0] * 50)
    keel.flush()
    failed = run_keel("gate", worse, "--baseline", "production", "--metric", "exact_match", "-o", "gate.md", cwd=calc)
    assert failed.returncode == 1
    assert failed.stdout == (calc / "gate.md").read_text() and failed.stdout.startswith("### :x: keel gate FAILED")
    assert failed.stderr.startswith("keel gate: regression: exact_match fell by 0.5")
    passed = run_keel("gate", same[:8], "--json", cwd=calc)
    assert passed.returncode == 0, passed.stderr
    out = json.loads(passed.stdout)
    assert out["passed"] is True and out["candidate"]["run_id"] == same
    assert out["test"] == {**out["test"], "method": "mcnemar", "paired": True, "shared_samples": 50, "p_value": 1.0}
    assert out["baseline"]["ref"] == "production" and out["baseline"]["target"] == "prompt:calc@1.0.0"


def test_a_candidate_whose_scorer_failed_is_bad_input(calc):
    _eval_run("1.0.0", [1.0] * 10)
    with keel.start_run(project="gate", name="judge-broke", tags={"keel.eval": "1"}) as run:
        run.log_input(EntityRef("prompt", "calc", "1.0.1"))
        rows = [{"sample_id": f"q{i}", "output": "x", "score.exact_match": 1.0 if i < 3 else None,
                 "scorer_errors": None if i < 3 else json.dumps({"exact_match": "ValueError: no answer field"})}
                for i in range(10)]  # fmt: skip
        run.log_table("samples", rows=rows)
        run.log_metric("exact_match", 1.0)
    keel.flush()
    out = run_keel("gate", run.id, cwd=calc)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "scorer 'exact_match' failed on 7 of 10 samples: ValueError: no answer field" in out.stderr
