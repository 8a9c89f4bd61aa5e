"""``keel flags ...`` and ``keel ab ...`` as a user runs them (the CLI in-process: see ``tests/cli_inprocess.py``)."""

import json
import subprocess
import sys

import pytest

from cli_inprocess import keel as run_keel

FLAGS = """\
flags:
  use_new_prompt_v2:
    description: the v2 chat prompt
    rollout: 10
  reranker:
    variants: {off: null, cohere: cohere-rerank-v3}
    default: off
    rules:
      - if: {plan: enterprise}
        serve: cohere
"""


def keel(*args, cwd, check=True):
    out = run_keel(*args, cwd=cwd)
    if check and out.returncode != 0:
        raise AssertionError(f"keel {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out


@pytest.fixture
def folder(tmp_path):
    keel("init", cwd=tmp_path)
    (tmp_path / "flags.yaml").write_text(FLAGS)
    return tmp_path


def test_flags_commands(folder):
    listed = keel("flags", "list", cwd=folder).stdout
    assert "use_new_prompt_v2" in listed and "rollout 10%" in listed and "reranker" in listed
    shown = json.loads(keel("flags", "show", "reranker", "--json", cwd=folder).stdout)
    assert shown["variants"] == {"off": None, "cohere": "cohere-rerank-v3"} and shown["default"] == "off"

    ev = json.loads(keel("flags", "eval", "reranker", "--ctx", "user_id=42", "--ctx", "plan=enterprise", "--json",
                         cwd=folder).stdout)  # fmt: skip
    assert ev["variant"] == "cohere" and ev["reason"] == "rule 1"

    out = keel("flags", "rollout", "use_new_prompt_v2", "25%", "--reason", "no regressions", cwd=folder).stdout
    assert "rollout 25%" in out
    keel("flags", "kill", "use_new_prompt_v2", "-r", "incident 42", cwd=folder)
    ev = json.loads(keel("flags", "eval", "use_new_prompt_v2", "--ctx", "user_id=42", "--json", cwd=folder).stdout)
    assert ev["variant"] == "false" and ev["reason"] == "killed"
    keel("flags", "set", "use_new_prompt_v2", "--enable", "--rollout", "50", "-r", "recovered", cwd=folder)

    history = keel("flags", "history", "use_new_prompt_v2", cwd=folder).stdout
    assert "no regressions" in history and "incident 42" in history and "KILLED" in history and "rollout 50%" in history
    moves = json.loads(keel("flags", "history", "use_new_prompt_v2", "--json", cwd=folder).stdout)
    assert [m["new"] for m in moves] == ["1", "2", "3"]

    keel("flags", "set", "--file", "flags.yaml", cwd=folder)  # import every flag into the store
    assert "store" in keel("flags", "list", cwd=folder).stdout


def test_flags_bad_input(folder):
    bad = keel("flags", "rollout", "use_new_prompt_v2", "150%", cwd=folder, check=False)
    assert bad.returncode == 2 and "outside 0-100" in bad.stderr
    bad = keel("flags", "set", "p", "--spec", "{variants: {a: chat@1.0.0, b: x}}", cwd=folder, check=False)
    assert bad.returncode == 2 and "references prompt chat@1.0.0, which does not exist" in bad.stderr
    (folder / "flags.yaml").write_text("flags:\n  a:\n    rollout: 10\n  b: {rollout: [\n")
    bad = keel("flags", "list", cwd=folder, check=False)
    assert bad.returncode == 2 and "flags.yaml:" in bad.stderr and "malformed YAML" in bad.stderr
    assert "Traceback" not in bad.stderr
    missing = keel("flags", "eval", "nope", "--ctx", "user_id=1", cwd=folder, check=False)
    assert missing.returncode == 3


def test_ab_commands(folder):
    bad = keel("ab", "create", "exp", "--variant", "control", "--variant", "treatment", "--weights", "0.5,0.6",
               cwd=folder, check=False)  # fmt: skip
    assert bad.returncode == 2 and "sum to 1.1" in bad.stderr
    treatment = "treatment:model=gpt-4o,config.llm.temperature=0.2"
    keel("ab", "create", "exp", "--variant", "control", "--variant", treatment,
         "--weights", "0.5,0.5", "--hypothesis", "lower temperature helps", "--metric", "converted",
         cwd=folder)  # fmt: skip
    started = keel("ab", "start", "exp", "--reason", "go", cwd=folder).stdout
    assert "treatment: model=gpt-4o" in started
    script = (
        "import random\n"
        "from keel.sdk import ab\n"
        "rng = random.Random(1)\n"
        "for i in range(400):\n"
        "    a = ab.assign('exp', user_id=f'u{i}')\n"
        "    p = 0.5 if a.variant == 'treatment' else 0.3\n"
        "    ab.log_outcome('exp', f'u{i}', 'converted', float(rng.random() < p))\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=folder, check=True, timeout=60)
    status = json.loads(keel("ab", "status", "exp", "--json", cwd=folder).stdout)
    assert status["status"] == "running" and sum(status["exposures"].values()) == 400
    assert "exp" in keel("ab", "status", cwd=folder).stdout
    keel("ab", "stop", "exp", cwd=folder)
    twice = keel("ab", "stop", "exp", cwd=folder, check=False)
    assert twice.returncode == 4 and "already stopped" in twice.stderr
    report = json.loads(keel("ab", "analyze", "exp", "--json", cwd=folder).stdout)
    assert report["exposures"]["control"] + report["exposures"]["treatment"] == 400
    assert "converted" in report["metrics"]
    text = keel("ab", "analyze", "exp", "--mde", "0.05", cwd=folder).stdout
    assert "sample ratio ok" in text and "Verdict: ship treatment" in text and "per variant" in text
    assert report["design"]["type"] == "sequential" and "always valid" in text  # the default design, labelled
    design = ["--design", "fixed:mde=0.05,baseline=0.3", "--guardrail", "latency:higher:50"]
    made = keel("ab", "create", "planned", "-v", "a", "-v", "b", "--metric", "converted", *design, cwd=folder).stdout
    assert "Design: fixed horizon" in made
    planned = json.loads(keel("ab", "status", "planned", "--json", cwd=folder).stdout)
    assert planned["design"]["type"] == "fixed" and planned["design"]["n"] > 1000
    assert planned["guardrails"] == [{"metric": "latency", "worse": "higher", "margin": 50.0}]
    assert "design: fixed, " in keel("ab", "status", "planned", cwd=folder).stdout
    listing = keel("ab", "status", cwd=folder).stdout
    assert "fixed" in listing and "sequential" in listing
    bad = keel("ab", "create", "bad", "--variant", "a", "--variant", "b", "--design", "fixed", cwd=folder, check=False)
    assert bad.returncode == 2 and "needs its sample size" in bad.stderr
    again = keel("ab", "design", "exp", "sequential", cwd=folder, check=False)  # already stated: no change
    assert again.returncode == 4 and "only an experiment with no stated design" in again.stderr
