"""keel.compare and 'keel runs compare --baseline' over real runs (SQLite and PostgreSQL + S3)."""

import json
import random

import pytest

import keel
from cli_inprocess import keel as run_keel
from cli_inprocess import python_in


def _eval_run(name, p, cost, latency, seed):
    rng = random.Random(seed)
    with keel.start_run(project="cmp", name=name) as run:
        rows = [{"sample_id": f"q{i}", "score.accuracy": float(rng.random() < p)} for i in range(150)]
        run.log_table("samples", rows=rows)
        keel.log_metrics(
            {
                "accuracy": sum(r["score.accuracy"] for r in rows) / 150,
                "cost_per_query": cost,
                "latency_p50_ms": latency,
            }
        )
    return run.id


def test_compare_evaluation_runs(ws):
    base = _eval_run("v1.2_gpt35", 0.65, 0.0012, 450, 1)
    best = _eval_run("v1.3_gpt4", 0.97, 0.03, 900, 2)
    cheap = _eval_run("v1.3_gpt35", 0.80, 0.0012, 400, 3)
    c = keel.compare([base, best, cheap], chart=ws / "tradeoff.svg")
    assert c.baseline == base and c.metrics == ("accuracy",)
    assert c.result(best, "accuracy").significant and c.result(best, "accuracy").method == "mcnemar"
    assert c.pareto == (best, cheap)
    assert c.verdict[0].startswith("v1.3_gpt4 is best on accuracy")
    assert c.verdict[1].startswith("v1.3_gpt35 offers the best cost-performance")
    assert (ws / "tradeoff.svg").read_text().lstrip().startswith("<?xml")
    again = keel.compare([best, cheap], baseline=cheap)
    assert again.baseline == cheap and again.result(best, "accuracy").delta > 0


def test_compare_bad_input(ws):
    run = _eval_run("a", 0.5, 0.01, 100, 1)
    with pytest.raises(keel.InvalidInput, match="at least two"):
        keel.compare([run])
    other = _eval_run("b", 0.5, 0.01, 100, 2)
    with pytest.raises(keel.InvalidInput, match="no compared run has the metric 'f1'"):
        keel.compare([run, other], metrics=["f1"])
    with pytest.raises(keel.InvalidInput, match=r"\.png or \.svg"):
        keel.compare([run, other], chart="chart.pdf")


def test_cli_compare_with_baseline(tmp_path):
    """``keel runs compare`` (the CLI in-process: see ``tests/cli_inprocess.py``)."""
    assert run_keel("init", cwd=tmp_path).returncode == 0
    ids = []
    with python_in(tmp_path):
        for name, p, cost in (("base", 0.6, 0.002), ("gpt4", 0.95, 0.03)):
            rng = random.Random(name)
            with keel.start_run(project="cmp", name=name) as run:
                rows = [{"sample_id": f"q{i}", "score.accuracy": float(rng.random() < p)} for i in range(100)]
                run.log_table("samples", rows=rows)
                keel.log_metrics({"accuracy": sum(r["score.accuracy"] for r in rows) / 100, "cost_per_query": cost,
                                  "latency_p50_ms": 500})  # fmt: skip
            ids.append(run.id)
    base, gpt4 = ids

    def keel_cli(*args):
        return run_keel(*args, cwd=tmp_path)

    shown = keel_cli("runs", "compare", gpt4[:8], "--baseline", base[:8])
    assert shown.returncode == 0, shown.stderr
    assert "(baseline)" in shown.stdout and "gpt4 is best on accuracy" in shown.stdout
    data = json.loads(keel_cli("runs", "compare", base, gpt4, "--json").stdout)
    assert data["statistics"]["results"][1]["significant"] is True
    md = keel_cli("runs", "compare", base, gpt4, "--markdown").stdout
    assert md.startswith("| metric | base (baseline) | gpt4 |")
    assert "Directions: accuracy: higher is better (default for a known name)" in shown.stdout
    assert "Holm-corrected over 1 test" in shown.stdout
    # a declared direction wins over the default, and says where it came from
    lower = keel_cli("runs", "compare", gpt4[:8], "--baseline", base[:8], "--direction", "accuracy=lower")
    assert lower.returncode == 0, lower.stderr
    assert "base (baseline) is best on accuracy" in lower.stdout and "(declared in the comparison)" in lower.stdout
    bad = keel_cli("runs", "compare", gpt4[:8], "--baseline", base[:8], "--direction", "accuracy=up")
    assert bad.returncode != 0 and "unknown direction 'up'" in bad.stderr
    chart = keel_cli("runs", "compare", base, gpt4, "--chart", "t.png")
    assert chart.returncode == 0 and (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    bad = keel_cli("runs", "compare", base, gpt4, "--metric", "nope")
    assert bad.returncode == 2 and "no compared run has the metric 'nope'" in bad.stderr
