"""Metric directions declared on a project (SQLite and PostgreSQL + S3): keel.compare and the
gate read them after the call's own directions and the runs' tags; projects that disagree are
refused; the CLI declares, lists and removes them."""

import json
import random

import pytest

import keel
from cli_inprocess import keel as run_keel
from cli_inprocess import python_in
from keel.sdk import directions


def _eval_run(project, name, p, seed, metric="hallucination_free"):
    rng = random.Random(seed)
    with keel.start_run(project=project, name=name) as run:
        rows = [{"sample_id": f"q{i}", f"score.{metric}": float(rng.random() < p)} for i in range(120)]
        run.log_table("samples", rows=rows)
        keel.log_metric(metric, sum(r[f"score.{metric}"] for r in rows) / 120)
    return run.id


def test_a_project_declaration_decides_which_run_is_better(ws):
    worse = _eval_run("bot", "worse", 0.40, 1)
    better = _eval_run("bot", "better", 0.85, 2)

    unknown = keel.compare([worse, better])
    assert not unknown.directions["hallucination_free"].known  # not guessed from "free"
    assert not any("is best" in line for line in unknown.verdict)

    assert directions.set("hallucination_free", "higher", project="bot") == {
        "project": "bot", "metric": "hallucination_free", "direction": "higher"}  # fmt: skip
    declared = keel.compare([worse, better])
    way = declared.directions["hallucination_free"]
    assert (way.way, way.source) == ("higher", "declared on the project")
    assert declared.verdict[0].startswith("better is best on hallucination_free")

    explicit = keel.compare([worse, better], directions={"hallucination_free": "lower"})  # the call wins
    assert explicit.directions["hallucination_free"].source == "declared in the comparison"

    directions.set("hallucination_free", "lower", project="bot")  # a change replaces it
    assert directions.declared("bot") == {"bot": {"hallucination_free": "lower"}}
    directions.unset("hallucination_free", project="bot")
    assert directions.declared("bot") == {}
    with pytest.raises(keel.InvalidInput, match="declares no direction"):
        directions.unset("hallucination_free", project="bot")


def test_projects_that_disagree_are_refused_and_bad_declarations_too(ws):
    a = _eval_run("team-a", "a", 0.5, 3)
    b = _eval_run("team-b", "b", 0.6, 4)
    directions.set("hallucination_free", "higher", project="team-a")
    directions.set("hallucination_free", "lower", project="team-b")
    with pytest.raises(keel.InvalidInput, match="declare both directions"):
        keel.compare([a, b])
    assert keel.compare([a, b], directions={"hallucination_free": "higher"}).directions["hallucination_free"].known
    with pytest.raises(keel.InvalidInput):
        directions.set("hallucination_free", "sideways", project="team-a")
    with pytest.raises(keel.NotFound):
        directions.set("hallucination_free", "higher", project="no-such-project")
    assert directions.declared(["team-a", "no-such-project"]) == {"team-a": {"hallucination_free": "higher"}}


def test_the_gate_reads_the_project_declaration(ws):
    base = _eval_run("gated", "base", 0.80, 5, metric="error_rate")
    cand = _eval_run("gated", "cand", 0.80, 5, metric="error_rate")  # the same scores
    undeclared = keel.gate(cand, baseline=f"run:{base}", metric="error_rate")
    assert any("not declared" in note for note in undeclared.notes)
    directions.set("error_rate", "lower", project="gated")
    declared = keel.gate(cand, baseline=f"run:{base}", metric="error_rate")
    assert declared.direction == "lower" and not any("not declared" in note for note in declared.notes)


def test_cli_declares_lists_and_removes(tmp_path):
    assert run_keel("init", cwd=tmp_path).returncode == 0
    with python_in(tmp_path):
        _eval_run("default", "r", 0.5, 6)
    done = run_keel("runs", "direction", "tokens_per_second", "higher", cwd=tmp_path)
    assert done.returncode == 0 and "higher is better for tokens_per_second" in done.stdout
    listed = run_keel("runs", "directions", "--json", cwd=tmp_path)
    assert json.loads(listed.stdout) == {"default": {"tokens_per_second": "higher"}}
    bad = run_keel("runs", "direction", "tokens_per_second", "up", cwd=tmp_path)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
    gone = run_keel("runs", "direction", "tokens_per_second", "--unset", cwd=tmp_path)
    assert gone.returncode == 0
    assert "no metric direction is declared" in run_keel("runs", "directions", cwd=tmp_path).stdout
