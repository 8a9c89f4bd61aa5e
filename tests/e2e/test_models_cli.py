"""``keel models ...`` as a user runs it (the CLI in-process: see ``tests/cli_inprocess.py``)."""

import json
import subprocess
import sys
import time

import pytest

from cli_inprocess import keel as run_keel

CARD = """\
model:
  name: chat-assistant
  version: 3
  base_model: meta-llama/Llama-3-8B-Instruct
  quantization: AWQ-4bit
training:   {dataset: custom_instructions_v2, epochs: 3, learning_rate: 2e-5}
evaluation: {accuracy: 0.85, latency_p95_ms: 150, hallucination_rate: 0.03}
deployment: {stage: production, serving_framework: vllm, gpu: A100-40GB, replicas: 2}
"""


def keel(*args, cwd, check=True):
    out = run_keel(*args, cwd=cwd)
    if check and out.returncode != 0:
        raise AssertionError(f"keel {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out


@pytest.fixture
def folder(tmp_path):
    keel("init", cwd=tmp_path)
    (tmp_path / "card.yaml").write_text(CARD)
    (tmp_path / "card2.yaml").write_text(
        CARD.replace("accuracy: 0.85", "accuracy: 0.9").replace("epochs: 3", "epochs: 4")
    )
    (tmp_path / "model_config.yaml").write_text("base_model: llama\n")
    script = (
        "import keel\n"
        "with keel.start_run(project='chat') as run:\n"
        "    keel.log_params({'quantization': 'AWQ-4bit'})\n"
        "    keel.log_metrics({'eval_accuracy': 0.85})\n"
        "    keel.log_artifact('model_config.yaml')\n"
        "print(run.id)\n"
    )
    run_id = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.strip()
    return tmp_path, run_id


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """One workspace for the refusals below: none of them changes it."""
    folder = tmp_path_factory.mktemp("models-refusals")
    keel("init", cwd=folder)
    (folder / "bad.yaml").write_text("training:\n  epochs: many\n")
    return folder


def test_register_stage_alias_history_card_compare(folder):
    cwd, run_id = folder
    out = keel("models", "register", "chat-assistant", "--source", f"runs:/{run_id}/model_config.yaml",
               "--card", "card.yaml", cwd=cwd)  # fmt: skip
    assert out.stdout.strip() == f"registered chat-assistant@1 (run {run_id[:8]})"
    keel("models", "register", "chat-assistant", "--source", "hf://org/chat-v2", "--card", "card2.yaml",
         "-t", "team=nlp", cwd=cwd)  # fmt: skip
    assert keel("models", "stage", "chat-assistant", "1", "production", cwd=cwd).stdout.strip() == (
        "chat-assistant@1: None -> Production"
    )
    time.sleep(0.01)
    between = f"{int(time.time() * 1000)}ms"  # bare digits are refused: seconds or milliseconds?
    time.sleep(0.01)
    keel("models", "stage", "chat-assistant", "2", "Production", "--archive-existing", "-r", "better", cwd=cwd)
    out = keel("models", "alias", "chat-assistant", "champion", "2", "--reason", "wins eval", cwd=cwd)
    assert out.stdout.strip() == "chat-assistant@champion: (unset) -> 2"

    listed = json.loads(keel("models", "list", "--json", cwd=cwd).stdout)
    assert listed[0]["stages"] == {"Archived": [1], "Production": [2]} and listed[0]["aliases"] == {"champion": 2}
    shown = json.loads(keel("models", "show", "chat-assistant", "--json", cwd=cwd).stdout)
    assert [v["version"] for v in shown["versions"]] == [2, 1]
    one = json.loads(keel("models", "show", "chat-assistant", "--version", "1", "--json", cwd=cwd).stdout)
    assert one["lineage"]["params"] == {"quantization": "AWQ-4bit"} and one["stage"] == "Archived"
    at = json.loads(
        keel("models", "show", "chat-assistant", "--stage", "Production", "--at", between, "--json", cwd=cwd).stdout
    )
    assert at["version"] == 1
    text = keel("models", "show", "chat-assistant", "--alias", "champion", cwd=cwd).stdout
    assert "chat-assistant@2" in text and "serving_framework: vllm" in text

    history = json.loads(keel("models", "history", "chat-assistant", "--json", cwd=cwd).stdout)
    assert [(h["ref"], h["old"], h["new"]) for h in history] == [
        ("stage:1", "None", "Production"),
        ("stage:2", "None", "Production"),
        ("stage:1", "Production", "Archived"),
        ("champion", None, "2"),
    ]
    table = keel("models", "history", "chat-assistant", cwd=cwd).stdout
    assert "version 1 stage" in table and "wins eval" in table

    keel("models", "card", "chat-assistant", "1", "--export", "out.yaml", cwd=cwd)
    assert (cwd / "out.yaml").read_bytes() == CARD.encode()
    assert keel("models", "card", "chat-assistant", "1", cwd=cwd).stdout == CARD
    card = json.loads(keel("models", "card", "chat-assistant", "2", "--json", cwd=cwd).stdout)
    assert card["training"]["learning_rate"] == 2e-5

    diff = json.loads(keel("models", "compare", "chat-assistant", "1", "2", "--json", cwd=cwd).stdout)
    assert {c["path"] for c in diff["card"]} == {"training.epochs", "evaluation.accuracy"}
    assert {m["key"]: m["b"] for m in diff["metrics"]}["card.accuracy"] == 0.9
    assert "training.epochs" in keel("models", "compare", "chat-assistant", "1", "2", cwd=cwd).stdout

    out = keel("models", "alias", "chat-assistant", "champion", "--delete", cwd=cwd)
    assert out.stdout.strip() == "chat-assistant@champion: 2 -> (removed)"

    refused = keel("models", "delete", "chat-assistant", "--version", "1", cwd=cwd, check=False)
    assert refused.returncode == 2 and "needs --yes" in refused.stderr
    out = keel("models", "delete", "chat-assistant", "--version", "1", "--yes", "-r", "superseded", cwd=cwd)
    assert out.stdout.strip() == "deleted chat-assistant version 1"
    assert "version 1 deleted" in keel("models", "history", "chat-assistant", cwd=cwd).stdout
    keel("models", "delete", "chat-assistant", "--yes", cwd=cwd)
    assert json.loads(keel("models", "list", "--json", cwd=cwd).stdout) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["models", "show", "nope"], "no registered model named 'nope'"),
        (["models", "stage", "chat", "1", "Live"], "unknown stage 'Live'"),
        (["models", "register", "chat", "--source", "runs:/" + "0" * 32 + "/m"], "no run"),
        (["models", "register", "chat", "--source", "hf://x", "--card", "bad.yaml"], "training.epochs must be"),
        (["models", "register", "chat", "--source", "hf://x", "--card", "none.yaml"], "no model card file"),
        (["models", "alias", "chat", "champion"], "give a version to point at, or --delete"),
        (["models", "show", "chat", "--at", "yesterday", "--stage", "Production"], "is not a time"),
        (["models", "show", "chat", "--at", "1733500000000", "--stage", "Production"], "has no unit"),
        (["models", "show", "chat", "--at", "2026-12-07T10:00:00", "--alias", "x"], "has no time zone"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(workspace, args, message):
    out = keel(*args, cwd=workspace, check=False)
    assert out.returncode != 0
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr
