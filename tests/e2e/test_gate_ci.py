"""The CI recipe of docs/ci.md runs as written: docs/ci/keel-gate.yml's steps against the stand-in.

Each test makes a git repository with a prompt (calc 1.0.0 on the base commit), changes it
as a pull request would (1.0.1), and runs the workflow's steps that have an id (``base``,
``check``, ``sync``, ``eval``, ``gate``) with bash and the real ``keel`` script, as GitHub
Actions would. A planted regression (a rewording the stand-in model no longer reads as a
sum) must fail the gate (exit 1, a FAILED report); an A/A pair (a rewording that asks the
same) must pass it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from keel.integrations.standin import StandInServer

ROOT = Path(__file__).parents[2]
WORKFLOW = ROOT / "docs" / "ci" / "keel-gate.yml"
DOC = ROOT / "docs" / "ci.md"
BIN = Path(sys.executable).parent

BASE_PROMPT = "Answer with the number only. What is {{ question }}?\n"
SAME_PROMPT = "Reply with just the number. What is {{ question }}?\n"  # A/A: the same question, reworded
WORSE_PROMPT = "Answer with the number only. What do you get when you add {{ question | replace(' + ', ' and ') }}?\n"


@pytest.fixture(scope="module")
def standin() -> Iterator[StandInServer]:
    with StandInServer() as server:
        yield server


def _steps() -> list[dict]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    return [s for s in workflow["jobs"]["gate"]["steps"] if "id" in s]


def _write_prompt(repo: Path, version: str, text: str, changes: list[str]) -> None:
    folder = repo / "prompts" / "calc"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "system_prompt.txt").write_text(text)
    (repo / "prompts" / "prompt_config.yaml").write_text(
        f'calc:\n  version: "{version}"\n  model: "gpt-4"\n  system_prompt: "prompts/calc/system_prompt.txt"\n'
    )
    (folder / "CHANGELOG.md").write_text("# Changelog\n\n" + "".join(changes))


def _repo(tmp_path: Path, candidate: str) -> tuple[Path, str]:
    """A repository whose base commit has calc 1.0.0 and whose working tree is the PR (1.0.1)."""
    repo = tmp_path / "repo"
    (repo / "eval").mkdir(parents=True)
    rows = [f'{{"id": "q{i}", "question": "{7 * i % 97} + {13 * i % 89}", "answer": "{7 * i % 97 + 13 * i % 89}"}}'
            for i in range(1, 61)]  # fmt: skip
    (repo / "eval" / "gate_set.jsonl").write_text("\n".join(rows) + "\n")
    spec = DOC.read_text().split("**`eval/gate.yaml`**:\n\n```yaml\n")[1].split("```")[0]
    (repo / "eval" / "gate.yaml").write_text(spec)
    _write_prompt(repo, "1.0.0", BASE_PROMPT, ["## 1.0.0\nFirst version.\n"])
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@example.com"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "base"], cwd=repo, check=True)
    base = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True)
    _write_prompt(repo, "1.0.1", candidate, ["## 1.0.1\nReworded.\n\n", "## 1.0.0\nFirst version.\n"])
    return repo, base.stdout.strip()


def _run_workflow(tmp_path: Path, repo: Path, base: str, standin: StandInServer) -> dict[str, str]:
    """Run the workflow's steps with an id, in order, as GitHub Actions would; the gate's outputs."""
    outputs = tmp_path / "github_output"
    outputs.write_text("")
    (tmp_path / "runner").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_"))}
    env |= {
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "OPENAI_BASE_URL": standin.base_url,  # the workflow starts its own on :8765; this one is on a free port
        "GITHUB_OUTPUT": str(outputs),
        "RUNNER_TEMP": str(tmp_path / "runner"),
        "BASE": base,
        "HOME": str(tmp_path),
        "KEEL_URI": "",  # GitHub's value of an unset repository variable: no team store
        "KEEL_TOKEN": "",
    }
    for step in _steps():
        script = step["run"]
        assert "${{" not in script  # expressions live in env: and if:, which this test provides
        done = subprocess.run(["bash", "-e", "-c", script], cwd=repo, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"step {step['id']}: {done.stderr}"
    return dict(line.split("=", 1) for line in outputs.read_text().splitlines())


def test_a_planted_regression_fails_the_gate(tmp_path, standin):
    repo, base = _repo(tmp_path, WORSE_PROMPT)
    outputs = _run_workflow(tmp_path, repo, base, standin)
    assert outputs == {"exit": "1"}
    report = (repo / "gate.md").read_text()
    assert report.startswith("### :x: keel gate FAILED: regression on `exact_match`")
    assert "baseline (production)" in report and "calc_v1.0.1_gpt-4" in report
    assert "mcnemar, paired on 60 shared samples" in report


def test_an_a_a_pair_passes_the_gate(tmp_path, standin):
    repo, base = _repo(tmp_path, SAME_PROMPT)
    outputs = _run_workflow(tmp_path, repo, base, standin)
    assert outputs == {"exit": "0"}
    report = (repo / "gate.md").read_text()
    assert report.startswith("### :white_check_mark: keel gate passed on `exact_match`")
    assert "prompt:calc@1.0.0 (calc@production)" in report


def test_a_prompt_version_is_evaluated_like_the_baseline_then_reused(tmp_path, workspace_template, standin):
    import shutil

    import openai

    import keel
    from cli_inprocess import keel as run_keel
    from keel.sdk import session as sessions

    shutil.copytree(workspace_template, tmp_path / ".keel")
    rows = [{"id": f"q{i}", "question": f"{i} + {2 * i}", "answer": str(3 * i)} for i in range(1, 41)]
    keel.prompts.register("calc", BASE_PROMPT, version="1.0.0", changelog="First")
    keel.prompts.register("calc", WORSE_PROMPT, version="1.0.1", changelog="Reworded")
    keel.prompts.set_alias("calc", "production", "1.0.0")
    client = openai.OpenAI(base_url=standin.base_url, api_key="none")
    baseline = keel.evaluate(rows, "calc@production", "gpt-4", client, [keel.scorers.exact_match("answer")])
    sessions.reset()

    first = run_keel("gate", "calc@1.0.1", "--baseline", "production", "--json", cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    out = json.loads(first.stdout)
    assert out["baseline"]["run_id"] == baseline.run_id and out["test"]["shared_samples"] == 40
    assert out["notes"][0].startswith("the candidate prompt:calc@1.0.1 was evaluated now")
    again = run_keel("gate", "calc@1.0.1", "--baseline", "production", "--json", cwd=tmp_path)
    assert again.returncode == 1
    assert json.loads(again.stdout)["candidate"]["run_id"] == out["candidate"]["run_id"]  # reused, not re-run
    assert not json.loads(again.stdout)["notes"]
    unknown = run_keel("gate", "calc@9.9.9", cwd=tmp_path)
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
