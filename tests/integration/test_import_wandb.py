"""`keel.import_from.wandb` on offline runs written by the real wandb package: config,
history, summary, a Table and a saved file; a failed run; idempotency, resume, bad folders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from import_helpers import new_workspace

from keel.errors import InvalidInput, NotFound
from keel.sdk import importers
from keel.sdk import session as sessions
from keel.services.importers.naming import derived_run_id
from keel.services.tracking import TrackingService

# Two runs as the reference logs them (section 4.1), written by wandb in offline mode.
_WRITER = r"""
import json, sys, wandb
out = sys.argv[1]
run = wandb.init(project="llm-prompt-optimization", dir=out, mode="offline", name="prompt-v1.3",
                 tags=["baseline", "gpt-4"], config={"prompt_version": "v1.3", "model": "gpt-4",
                 "temperature": 0.7, "rag": {"top_k": 5, "chunk_size": 512}, "system_prompt": "Be brief. " * 7000})
for step in range(4):
    wandb.log({"eval_accuracy": 0.7 + step * 0.05, "train": {"loss": 1.0 / (step + 1)}})
table = wandb.Table(columns=["query", "response", "score", "feedback"])
table.add_data("what is keel?", "a tool", 0.9, "good")
table.add_data("what is dvc?", "data versioning", 0.5, None)
wandb.log({"eval_samples": table})
with open(f"{out}/notes.txt", "w") as fh:
    fh.write("prompt notes\n")
wandb.save(f"{out}/notes.txt", base_path=out)
run.summary["best_accuracy"] = 0.91
run.summary["verdict"] = "ship it"
ids = {"ok": run.id}
run.finish()
run = wandb.init(project="llm-prompt-optimization", dir=out, mode="offline", name="crashy")
wandb.log({"eval_accuracy": 0.1})
ids["failed"] = run.id
run.finish(exit_code=3)
print(json.dumps(ids))
"""


@pytest.fixture(scope="module")
def wandb_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    out = tmp_path_factory.mktemp("wandb-runs")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true",
           "WANDB_DISABLE_CODE": "true", "WANDB_CONSOLE": "off", "WANDB_DIR": str(out)}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", _WRITER, str(out)], env=env, cwd=out, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out / "wandb", json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def workspace(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    new_workspace(tmp_path, tmp_path_factory.getbasetemp())
    yield tmp_path
    sessions.reset()


def _tracking() -> TrackingService:
    return TrackingService(sessions.get_session(create=False).service.store)


def _keel_id(wandb_id: str) -> str:
    return derived_run_id("wandb", f"/llm-prompt-optimization/{wandb_id}")


def test_imports_config_history_summary_tables_and_files(
    workspace: Path, wandb_dir: tuple[Path, dict[str, str]]
) -> None:
    folder, ids = wandb_dir
    calls: list[tuple[int, int]] = []
    summary = importers.wandb(folder, progress=lambda done, total: calls.append((done, total)))
    assert summary.imported["run"] == 2 and summary.imported["table"] == 1
    assert calls == [(0, 2), (1, 2), (2, 2)]

    tracking = _tracking()
    run = tracking.get_run(_keel_id(ids["ok"]))
    assert (run.project, run.name, run.status) == ("llm-prompt-optimization", "prompt-v1.3", "finished")
    assert run.params == {"prompt_version": "v1.3", "model": "gpt-4", "temperature": 0.7,
                          "rag.top_k": 5, "rag.chunk_size": 512}  # fmt: skip
    config = json.loads(tracking.read_artifact(run.run_id, "wandb-config.json"))
    assert config["system_prompt"] == "Be brief. " * 7000 and config["rag"] == {"top_k": 5, "chunk_size": 512}
    assert summary.imported["config value only in wandb-config.json"] == 1  # over the 64,000-character param limit
    assert run.tags["wandb.run_id"] == ids["ok"] and run.tags["wandb.tags"] == "baseline,gpt-4"
    assert run.tags["summary.verdict"] == "ship it" and run.metrics["best_accuracy"] == 0.91
    history = tracking.metric_history(run.run_id, "eval_accuracy")
    assert [(m.step, round(m.value, 6)) for m in history] == [(0, 0.7), (1, 0.75), (2, 0.8), (3, 0.85)]
    assert all(m.timestamp >= run.start_time for m in history)
    assert [m.value for m in tracking.metric_history(run.run_id, "train.loss")] == [1.0, 0.5, 1 / 3, 0.25]
    table = tracking.read_table(run.run_id, "eval_samples")
    assert table.columns == ("query", "response", "score", "feedback")
    assert table.rows == (("what is keel?", "a tool", 0.9, "good"), ("what is dvc?", "data versioning", 0.5, None))
    run_folder = next(folder.glob(f"*-{ids['ok']}"))
    assert tracking.read_artifact(run.run_id, "notes.txt") == (run_folder / "files" / "notes.txt").read_bytes()
    media = [a.path for a in tracking.list_artifacts(run.run_id, "media/table")]
    assert len(media) == 1 and media[0].endswith(".table.json")

    failed = tracking.get_run(_keel_id(ids["failed"]))
    assert failed.status == "failed" and failed.error == "exit code 3" and failed.name == "crashy"

    again = importers.wandb(folder)
    assert again.total_imported() == 0 and again.skipped["run"] == 2
    assert len(tracking.search_runs("llm-prompt-optimization")[0]) == 2


def test_an_interrupted_import_finishes_on_the_next_run(
    workspace: Path, wandb_dir: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    folder, ids = wandb_dir
    copy = tmp_path / "wandb"
    shutil.copytree(folder, copy, symlinks=True)
    table_file = next(copy.glob(f"*-{ids['ok']}/files/media/table/*.table.json"))
    saved = table_file.read_bytes()
    table_file.unlink()  # that run cannot be imported: the import stops there, with nothing of it written

    with pytest.raises(NotFound, match="table 'eval_samples'"):
        importers.wandb(copy)
    tracking = _tracking()
    before = {r.run_id for r in tracking.search_runs()[0]}
    assert before <= {_keel_id(ids["failed"])}  # the runs read before it (if any) are in

    table_file.write_bytes(saved)
    summary = importers.wandb(copy)
    runs = tracking.search_runs()[0]
    assert sorted(r.run_id for r in runs) == sorted(_keel_id(i) for i in ids.values())
    assert (summary.imported["run"], summary.skipped["run"]) == (2 - len(before), len(before))


def test_folders_that_are_not_wandb_are_refused(workspace: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="no folder"):
        importers.wandb(tmp_path / "missing")
    with pytest.raises(InvalidInput, match="is not a W&B folder"):
        importers.wandb(tmp_path / "empty")
    fake = tmp_path / "fake" / "offline-run-1-abc"
    fake.mkdir(parents=True)
    (fake / "run-abc.wandb").write_bytes(b"not a wandb file")
    with pytest.raises(InvalidInput, match="is not a W&B run file"):
        importers.wandb(tmp_path / "fake")
    assert _tracking().search_runs()[0] == []
