"""keel.evaluate, keel.compare and keel.reproduce with the real openai client and keel's stand-in server."""

from __future__ import annotations

import json

import openai
import pytest

import keel
from cli_inprocess import keel as run_keel
from cli_inprocess import keel_env, python_in
from keel.integrations.standin import StandInServer

CALC = [{"role": "system", "content": "Answer with the number only."}, {"role": "user", "content": "{{ question }}"}]
STEP = [
    {"role": "system", "content": "Think step by step. Answer with the number only."},
    {"role": "user", "content": "{{ question }}"},
]


@pytest.fixture
def server():
    with StandInServer() as running:
        yield running


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "eval.jsonl"
    rows = [{"id": f"q{i}", "question": f"What is {i} + {2 * i + 3}?", "answer": str(3 * i + 3)} for i in range(60)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def prompts(ws):
    keel.prompts.register("calc", template=CALC, changelog="first")
    keel.prompts.register("calc", template=STEP, changelog="step by step")


def _client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="standin", max_retries=0)


def test_evaluate_records_a_complete_run(server, dataset, prompts):
    def shouting(output, sample):  # a custom scorer: a plain function
        return float(output.isupper())

    result = keel.evaluate(
        data=str(dataset),
        prompt="calc@1.0.1",
        model={"name": "gpt-4", "temperature": 0.2},
        client=_client(server),
        scorers=[keel.scorers.exact_match("answer"), keel.scorers.token_f1("answer"), shouting],
        run_name="calc_v1.0.1_gpt4",
        project="calc",
        concurrency=4,
    )
    assert result.failed == 0 and result.scorer_errors == 0
    m = result.metrics
    assert 0.8 <= m["exact_match"] <= 1.0 and m["exact_match_ci_low"] <= m["exact_match"] <= m["exact_match_ci_high"]
    assert m["samples"] == 60 and m["cost_total"] > 0 and m["latency_p95_ms"] >= m["latency_p50_ms"] > 0
    assert m["prompt_tokens"] > 0 and m["cost_per_query"] == pytest.approx(m["cost_total"] / 60)
    run = keel.Client().get_run(result.run_id)
    assert run.params["prompt"] == "calc@1.0.1" and run.params["model"] == "gpt-4"
    assert run.params["model_params.temperature"] == 0.2 and run.tags["keel.eval"] == "1"
    table = keel.Client().table(result.run_id, "samples")
    assert len(table) == 60 and {"sample_id", "output", "score.exact_match", "score.shouting"} <= set(table.columns)
    inputs = {str(e.entity) for e in keel.Client().lineage(result.run_id) if e.direction == "input"}
    assert "prompt:calc@1.0.1" in inputs and any(i.startswith("dataset:") for i in inputs)


def test_three_configurations_compare_and_reproduce_identically(server, dataset, prompts):
    runs = []
    for prompt, model in (("calc@1.0.0", "gpt-3.5-turbo"), ("calc@1.0.1", "gpt-3.5-turbo"), ("calc@1.0.1", "gpt-4")):
        runs.append(
            keel.evaluate(
                str(dataset),
                prompt,
                {"name": model, "temperature": 0.2},
                _client(server),
                [keel.scorers.exact_match("answer")],
                project="calc",
            )  # fmt: skip
        )
    comparison = keel.compare([r.run_id for r in runs])
    assert (
        comparison.metrics == ("exact_match",) and comparison.result(runs[2].run_id, "exact_match").method == "mcnemar"
    )
    assert comparison.verdict and runs[2].run_id in comparison.pareto
    server.stop()  # replay needs no server
    report = keel.reproduce(runs[2].run_id)
    assert report.identical, report.differences
    assert keel.Client().get_run(report.new_run_id).tags["keel.reproduces"] == runs[2].run_id


def test_repeated_requests_in_auto_mode_still_reproduce(server, tmp_path, prompts):
    rows = [{"id": f"r{i}", "question": "What is 2 + 2?", "answer": "4"} for i in range(12)]
    result = keel.evaluate(rows, "calc@1.0.0", "gpt-4", _client(server), [keel.scorers.exact_match("answer")])
    server.stop()
    report = keel.reproduce(result.run_id)
    assert report.identical, report.differences


def test_reproduce_reports_changed_data_exactly(server, dataset, prompts):
    result = keel.evaluate(str(dataset), "calc@1.0.0", "gpt-4", _client(server), [keel.scorers.exact_match("answer")])
    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    rows[5]["answer"] = "-1"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = keel.reproduce(result.run_id)
    assert not report.identical
    assert report.differences[0].startswith(f"dataset {dataset} changed")
    assert any(d.startswith("sample q5: score.exact_match") for d in report.differences)


def test_failures_are_recorded_and_the_run_continues(server, dataset, prompts):
    def broken(output, sample):
        if sample["id"] == "q1":
            raise RuntimeError("scorer bug")
        return 1.0

    result = keel.evaluate(str(dataset), "calc@1.0.0", "gpt-4", _client(server), [broken], concurrency=2)
    assert result.scorer_errors == 1 and result.failed == 0 and result.metrics["broken"] == 1.0
    row = next(r for r in result.samples if r["sample_id"] == "q1")
    assert row["score.broken"] is None and "scorer bug" in row["scorer_errors"]
    # Provider errors: retried with backoff, then failed samples; partial results kept.
    failing = keel.evaluate(str(dataset), "calc@1.0.0", "error-500", _client(server),
                            [keel.scorers.exact_match("answer")], retries=1, backoff=0.001)  # fmt: skip
    assert failing.failed == 60 and failing.metrics["failed_samples"] == 60
    assert "InternalServerError" in next(iter(failing.samples))["error"]
    # A replay with nothing recorded: each sample fails with ReplayMiss, naming the request.
    missing = keel.evaluate(str(dataset), "calc@1.0.0", "gpt-4o", _client(server),
                            [keel.scorers.exact_match("answer")], mode="replay")  # fmt: skip
    assert missing.failed == 60 and "ReplayMiss" in next(iter(missing.samples))["error"]


def test_bad_input_names_the_row_and_field(server, tmp_path, prompts):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "1 + 1?", "answer": "2"}\n{"id": "b", "answer": "3"}\n')
    with pytest.raises(keel.InvalidInput, match=r"dataset row 1 \(b\) has no field 'question'"):
        keel.evaluate(str(bad), "calc@1.0.0", "gpt-4", _client(server), [keel.scorers.exact_match("answer")])
    (tmp_path / "broken.jsonl").write_text('{"id": 1}\nnot json\n')
    with pytest.raises(keel.InvalidInput, match="line 2 is not valid JSON"):
        keel.evaluate(
            str(tmp_path / "broken.jsonl"), "calc@1.0.0", "gpt-4", _client(server), [keel.scorers.exact_match()]
        )
    with pytest.raises(keel.NotFound, match="no dataset file"):
        keel.evaluate("missing.jsonl", "calc@1.0.0", "gpt-4", _client(server), [keel.scorers.exact_match()])
    with pytest.raises(keel.InvalidInput, match="at least one scorer"):
        keel.evaluate([{"question": "1+1"}], "calc@1.0.0", "gpt-4", _client(server), [])
    with pytest.raises(keel.InvalidInput, match="has no name"):
        keel.evaluate([{"question": "1+1"}], "calc@1.0.0", "gpt-4", _client(server), [lambda o, s: 1.0])
    # A sample without the scorer's reference field: a scorer error on that sample, not a crash.
    result = keel.evaluate([{"question": "What is 1 + 1?"}], "calc@1.0.0", "gpt-4", _client(server),
                           [keel.scorers.exact_match("answer")])  # fmt: skip
    assert result.scorer_errors == 1


def test_llm_judge_uses_a_versioned_judge_prompt(server, prompts):
    keel.prompts.register("judge", template="Rate 1-5: {{ question }} -> {{ output }}. What is 2 + 3?",
                          changelog="judge")  # fmt: skip
    judge = keel.scorers.llm_judge("faithfulness", judge_prompt="judge@1.0.0", model="gpt-4", scale=5)
    result = keel.evaluate([{"id": "x", "question": "What is 2 + 2?"}], "calc@1.0.0", "gpt-4", _client(server),
                           [judge])  # fmt: skip
    assert result.scorer_errors == 0 and 0 < result.metrics["faithfulness"] <= 1.0


def test_llm_judge_at_concurrency_8_uses_the_evaluation_client(server, dataset, prompts):
    # The README's call: the judge has no client of its own and the samples run on 8 threads.
    keel.prompts.register("judge", template="Rate from 1 to 5: {{ question }} -> {{ output }}", changelog="judge")
    judge = keel.scorers.llm_judge("faithfulness", judge_prompt="judge@1.0.0", scale=5)
    result = keel.evaluate(str(dataset), "calc@1.0.0", "gpt-4", _client(server),
                           [keel.scorers.exact_match("answer"), judge], concurrency=8)  # fmt: skip
    assert result.scorer_errors == 0 and result.failed_scorers == []
    assert result.errors_by_scorer["faithfulness"].errors == 0 and result.errors_by_scorer["faithfulness"].samples == 60
    assert 0.6 <= result.metrics["faithfulness"] <= 1.0  # the stand-in judges in the upper part of the range
    assert server.requests_served == 120  # 60 answers and 60 judgements, all through the stand-in


def test_a_scorer_failing_on_most_samples_is_failed_and_stays_in_the_comparison(server, prompts):
    rows = [{"id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(10)]
    keel.prompts.register("judge", template="Rate from 1 to 5: {{ context }} -> {{ output }}", changelog="judge")
    judge = keel.scorers.llm_judge("faithfulness", judge_prompt="judge@1.0.0", scale=5)  # rows have no context

    def odd(output, sample):  # fails on exactly half of the samples: counted, not failed
        if int(sample["id"][1:]) % 2:
            raise ValueError("odd sample")
        return 1.0

    scorers = [keel.scorers.exact_match("answer"), judge, odd]
    runs = [keel.evaluate(rows, p, "gpt-4", _client(server), scorers) for p in ("calc@1.0.0", "calc@1.0.1")]
    errors = runs[0].errors_by_scorer
    judged = errors["faithfulness"]
    assert (judged.errors, judged.samples, judged.failed) == (10, 10, True)
    assert judged.first_error.startswith("InvalidInput: judge prompt judge@1.0.0 needs context")
    assert (errors["odd"].errors, errors["odd"].failed, errors["exact_match"].errors) == (5, False, 0)
    assert [e.name for e in runs[0].failed_scorers] == ["faithfulness"]
    assert "FAILED scorer 'faithfulness' failed on 10 of 10 samples" in repr(runs[0])

    comparison = keel.compare([r.run_id for r in runs])
    assert comparison.metrics == ("exact_match", "odd", "faithfulness")  # no run has a faithfulness score
    failed = comparison.result(runs[1].run_id, "faithfulness")
    assert failed.failed and failed.errors == 10 and comparison.cell(failed) == "FAILED (10 errors)"
    assert not comparison.result(runs[1].run_id, "odd").failed
    assert comparison.verdict[0] == (
        f"{judged.summary()} in {runs[0].name}; it is left out of the comparison on faithfulness."
    )
    # exact_match's direction comes from its scorer (recorded on the runs), and the verdict says so
    declared = "higher is better (declared on the runs)"
    assert any("on exact_match" in line and declared in line for line in comparison.verdict)
    data = comparison.to_dict()
    assert [(f["run"], f["name"], f["errors"]) for f in data["failed_scorers"]] == [
        (r.run_id, "faithfulness", 10) for r in runs
    ]


def test_cli_eval_run_and_reproduce(server, dataset, tmp_path):
    """``keel eval run`` and ``keel reproduce`` (in-process: see ``tests/cli_inprocess.py``)."""
    env = {k: v for k, v in keel_env().items() if k != "OPENAI_API_KEY"}
    assert run_keel("init", cwd=tmp_path, env=env).returncode == 0
    with python_in(tmp_path, env=env):
        keel.prompts.register("calc", template=CALC, changelog="first")
        keel.prompts.register("calc", template=STEP, changelog="step by step")
    (tmp_path / "eval.yaml").write_text(
        f"project: calc\ndata: {dataset}\nprompts: [calc@1.0.0, calc@1.0.1]\n"
        "models: [{name: gpt-4, temperature: 0.2}, gpt-3.5-turbo]\n"
        "scorers: [{exact_match: {field: answer}}, {token_f1: answer}]\nmode: auto\n"
    )

    def cli(*args, check=True):
        out = run_keel(*args, cwd=tmp_path, env=env)
        if check and out.returncode != 0:
            raise AssertionError(out.stderr)
        return out

    out = json.loads(cli("eval", "run", "eval.yaml", "--base-url", server.base_url, "--json").stdout)
    assert len(out["runs"]) == 4 and out["comparison"]["verdict"]
    text = cli("eval", "run", "eval.yaml", "--base-url", server.base_url).stdout
    assert "on exact_match" in text and "higher is better (declared on the runs)" in text
    run_id = out["runs"][3]["run_id"]
    server.stop()
    assert cli("reproduce", run_id[:8]).stdout.startswith("identical: run ")
    missing = cli("eval", "run", "eval.yaml", check=False)
    assert missing.returncode == 2 and "no model server" in missing.stderr
    (tmp_path / "bad.yaml").write_text("data: x.jsonl\nprompts: [a@1.0.0]\nmodels: [m]\nscorers: [nope]\n")
    bad = cli("eval", "run", "bad.yaml", "--base-url", "http://127.0.0.1:9/v1", check=False)
    assert bad.returncode == 2 and "unknown scorer kind 'nope'" in bad.stderr
