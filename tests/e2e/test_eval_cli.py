"""``keel eval run``: the documented example runs as written, and failed scorers fail the command.

The CLI runs in-process (``keel.cli.main.main``) against keel's stand-in model server.
"""

from __future__ import annotations

import json
import re
import shlex
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import keel
from keel.cli.eval import SPEC_HELP, build_scorers, grid, load_spec
from keel.cli.main import main
from keel.integrations.standin import StandInServer

DOC = (Path(__file__).parents[2] / "docs" / "evaluation.md").read_text()


@pytest.fixture
def server() -> Iterator[StandInServer]:
    from keel.sdk import session as sessions

    with StandInServer() as running:
        yield running
    sessions.reset()


def _documented_files() -> dict[str, str]:
    """The files the walkthrough shows, as ``**`path`**:`` followed by a fenced block."""
    return dict(re.findall(r"\*\*`([^`]+)`\*\*:\n\n```[a-z]*\n(.*?)```", DOC, re.S))


def _help_example() -> str:
    """The spec example in ``keel eval run --help`` (the second ``\\b`` paragraph)."""
    return textwrap.dedent(SPEC_HELP.split("\b\n")[2]).strip() + "\n"


def test_the_documented_example_runs_as_written(server, tmp_path, capsys):
    files = _documented_files()
    assert {"data/eval_set.jsonl", "eval.yaml", "prompts/judge.txt"} <= set(files)
    assert files["eval.yaml"] == _help_example()  # the docs and --help show the same spec
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert main(["eval", "run", "--help"]) == 0
    shown = capsys.readouterr().out
    assert all(line.strip() in shown for line in files["eval.yaml"].splitlines())

    block = next(b for b in re.findall(r"```bash\n(.*?)```", DOC, re.S) if "keel eval run eval.yaml" in b)
    for line in block.splitlines():
        words = shlex.split(line)
        if words[:3] == ["keel", "llm", "standin"]:
            continue  # the test's stand-in runs on a free port: --base-url below points at it
        if words[:3] == ["keel", "eval", "run"]:
            words += ["--base-url", server.base_url, "--json"]
        capsys.readouterr()
        assert main(words[1:]) == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out)
    runs = out["runs"]
    assert len(runs) == 8 and len({r["name"] for r in runs}) == 8  # 2 prompts x 2 models x 2 temperatures
    assert runs[2]["name"] == "calc_v1.0.0_gpt-3.5-turbo_temperature-0.2"
    assert out["comparison"]["baseline"] == runs[2]["run_id"]  # baseline: gpt-3.5-turbo, its first run
    assert out["comparison"]["metrics"] == ["exact_match", "token_f1", "faithfulness"]
    assert out["comparison"]["failed_scorers"] == []
    assert all(r["scorers"]["faithfulness"] == {"errors": 0, "samples": 6, "failed": False, "first_error": None}
               for r in runs)  # fmt: skip
    assert all(0.6 <= r["metrics"]["faithfulness"] <= 1 for r in runs)  # the judge scored every sample


def test_the_readme_spec_is_valid(tmp_path):
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Evaluating prompts and models, reproducibly")[1].split("\n## ")[0]
    (tmp_path / "eval.yaml").write_text(re.findall(r"```yaml\n(.*?)```", section, re.S)[0])
    spec = load_spec(tmp_path / "eval.yaml")
    assert [s.name for s in build_scorers(spec["scorers"])] == ["exact_match", "faithfulness"]
    assert len(grid(spec)) == 4


def test_a_failed_scorer_makes_eval_run_exit_1(server, tmp_path, capsys):
    assert main(["init"]) == 0
    keel.prompts.register("calc", template="Answer with the number only. What is {{ question }}?", changelog="a")
    keel.prompts.register("judge", template="Rate from 1 to 5: {{ context }} -> {{ output }}", changelog="b")
    (tmp_path / "data.jsonl").write_text(
        "".join(json.dumps({"id": f"q{i}", "question": f"{i} + 2", "answer": str(i + 2)}) + "\n" for i in range(4))
    )
    (tmp_path / "eval.yaml").write_text(
        "data: data.jsonl\nprompts: [calc@1.0.0]\nmodels: [gpt-4, gpt-3.5-turbo]\n"
        "scorers: [exact_match: answer, {llm_judge: {name: faithfulness, judge_prompt: judge@1.0.0}}]\n"
    )
    capsys.readouterr()
    assert main(["eval", "run", "eval.yaml", "--base-url", server.base_url]) == 1
    out, err = capsys.readouterr()
    assert "FAILED (4 errors)" in out  # the comparison keeps the metric, marked failed
    lines = err.strip().splitlines()
    assert len(lines) == 3, err
    for line, model in zip(lines, ("gpt-4", "gpt-3.5-turbo"), strict=False):
        assert re.fullmatch(
            rf"error: run [0-9a-f]{{8}} calc_v1\.0\.0_{re.escape(model)}: scorer 'faithfulness' failed on 4 of 4 "
            r"samples: InvalidInput: judge prompt judge@1\.0\.0 needs context, which the sample lacks \(.+\)",
            line,
        ), line
    assert lines[2] == "error: 2 failed scorer(s) above: fix them, or pass --allow-scorer-errors to exit 0"

    assert main(["eval", "run", "eval.yaml", "--base-url", server.base_url, "--allow-scorer-errors", "--json"]) == 0
    out, err = capsys.readouterr()
    assert [line.split(":")[0] for line in err.strip().splitlines()] == ["warning", "warning"]
    data = json.loads(out)
    assert [f["name"] for f in data["comparison"]["failed_scorers"]] == ["faithfulness", "faithfulness"]
    assert data["runs"][0]["scorers"]["faithfulness"]["failed"] is True

    assert main(["eval", "run", "eval.yaml", "--base-url", server.base_url, "--json"]) == 1  # JSON too

    (tmp_path / "eval.yaml").write_text((tmp_path / "eval.yaml").read_text() + "baseline: gpt-5\n")
    capsys.readouterr()
    assert main(["eval", "run", "eval.yaml", "--base-url", server.base_url]) == 2
    assert "error: baseline 'gpt-5' is none of the spec's prompts or models" in capsys.readouterr().err
