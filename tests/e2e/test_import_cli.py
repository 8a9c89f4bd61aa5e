"""``keel import mlflow|wandb|dvc`` as a user runs them: sources written by the real mlflow
and wandb packages (in processes of their own) and by dvc (the fixture repository); the keel
CLI runs in-process (see ``tests/cli_inprocess.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from cli_inprocess import Result
from cli_inprocess import keel as run_keel

FIXTURE = Path(__file__).parents[1] / "fixtures" / "dvc_repo.tar.gz"

_MLFLOW_WRITER = r"""
import sys, warnings
warnings.simplefilter("ignore")
from mlflow import MlflowClient
client = MlflowClient(tracking_uri=sys.argv[1], registry_uri=sys.argv[1])
exp = client.create_experiment("chat")
run = client.create_run(exp, run_name="prompt_v1.3_gpt4")
client.log_param(run.info.run_id, "model", "gpt-4")
for step in range(3):
    client.log_metric(run.info.run_id, "accuracy", 0.8 + step / 100, step=step)
client.set_terminated(run.info.run_id)
client.create_registered_model("chat-assistant")
client.create_model_version("chat-assistant", "s3://models/chat", run_id=run.info.run_id)
client.transition_model_version_stage("chat-assistant", "1", "Staging")
print(run.info.run_id)
"""

_WANDB_WRITER = r"""
import sys, wandb
run = wandb.init(project="llm-prompt-optimization", dir=sys.argv[1], mode="offline", config={"temperature": 0.7})
wandb.log({"eval_accuracy": 0.85})
run.finish()
"""


def run(
    *args: str, cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("KEEL_URI", "KEEL_OBJECTS")}
    out = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120, env={**base, **(env or {})})
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def keel(*args: str, cwd: Path, check: bool = True) -> Result:
    out = run_keel(*args, cwd=cwd)
    if check and out.returncode != 0:
        raise AssertionError(f"keel {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def test_import_mlflow_and_wandb(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    keel("init", cwd=project)
    mlruns = tmp_path / "mlruns"
    mlflow_env = {"MLFLOW_ALLOW_FILE_STORE": "true", "MLFLOW_TRACKING_URI": str(mlruns)}
    run_id = run(sys.executable, "-c", _MLFLOW_WRITER, str(mlruns), cwd=tmp_path, env=mlflow_env).stdout.strip()
    wandb_env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true", "WANDB_CONSOLE": "off"}
    run(sys.executable, "-c", _WANDB_WRITER, str(tmp_path), cwd=tmp_path, env=wandb_env)

    out = keel("import", "mlflow", "--from", str(mlruns), cwd=project).stdout
    assert "model version" in out and f"imported 7 item(s) from mlflow ({mlruns})" in out
    shown = json.loads(keel("runs", "show", run_id, "--json", cwd=project).stdout)
    assert shown["project"] == "chat" and shown["params"] == {"model": "gpt-4"}
    assert [s["count"] for s in shown["metric_summaries"]] == [3]

    summary = json.loads(keel("import", "wandb", "--from", str(tmp_path / "wandb"), "--json", cwd=project).stdout)
    assert summary["imported"]["run"] == 1
    runs = json.loads(keel("runs", "list", "-p", "llm-prompt-optimization", "--json", cwd=project).stdout)["runs"]
    assert [(r["params"], r["metrics"]) for r in runs] == [({"temperature": 0.7}, {"eval_accuracy": 0.85})]

    bad = keel("import", "mlflow", "--from", str(tmp_path / "nothing"), cwd=project, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: no mlruns folder") and not bad.stdout
    bad = keel("import", "wandb", "--from", str(project), cwd=project, check=False)
    assert bad.returncode == 2 and "is not a W&B folder" in bad.stderr


def test_import_dvc_then_check_out_an_old_tag(tmp_path: Path) -> None:
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    repo = tmp_path / "dvc_repo"
    keel("init", cwd=repo)
    out = keel("import", "dvc", cwd=repo).stdout
    assert "imported 17 item(s) from dvc" in out and "git add the new *.keel files" in out
    run("git", "add", "data", ".keel", cwd=repo)
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "keel data", cwd=repo)

    run("git", "checkout", "-q", "v1.0", cwd=repo)
    keel("data", "checkout", cwd=repo)
    assert (repo / "data" / "train.csv").read_text() == "query,answer\nwhat is keel,a tool\nwhat is dvc,another tool\n"
    assert sorted(p.name for p in (repo / "data" / "kb" / "faq").iterdir()) == ["q1.md"]
    assert "up to date" in keel("data", "status", cwd=repo).stdout

    bad = keel("import", "dvc", "--repo", str(tmp_path), cwd=repo, check=False)
    assert bad.returncode == 2 and "is not a DVC repository" in bad.stderr
