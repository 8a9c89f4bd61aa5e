"""`keel.import_from.mlflow` on stores written by the real mlflow client: a SQLite
database and an mlruns folder, with runs, nested runs, metric histories, artifacts,
a registered model with stages and an alias, and a prompt."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from import_helpers import new_workspace

from keel.errors import InvalidInput, StoreError
from keel.sdk import importers
from keel.sdk import session as sessions
from keel.services.models import ModelService
from keel.services.prompts import PromptService
from keel.services.tracking import TrackingService
from servers import free_port


@contextlib.contextmanager
def _quiet_mlflow(uri: str) -> Iterator[None]:
    """mlflow warns (stages are deprecated, ...), refuses its file store unless told, and its
    file registry opens clients of the default tracking URI (which must then be ``uri``)."""
    env = {"MLFLOW_TRACKING_URI": uri, **({"MLFLOW_ALLOW_FILE_STORE": "true"} if uri.startswith("/") else {})}
    before = set(threading.enumerate())
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        for key, value in env.items():
            patch.setenv(key, value)
        warnings.simplefilter("ignore")
        yield
        for thread in set(threading.enumerate()) - before:  # register_prompt tags the prompt in a thread
            thread.join(timeout=30)


def write_mlflow(uri: str, artifacts: Path, files: Path) -> dict[str, Any]:
    """Log with the real MlflowClient: the reference's runs, a nested run, a model, a prompt."""
    from mlflow import MlflowClient

    files.mkdir(parents=True, exist_ok=True)
    (files / "system_prompt_v1.3.txt").write_text("You are a helpful assistant.\n")
    (files / "eval_results.json").write_bytes(b'{"accuracy": 0.85}\x00\xff')
    model_dir = files / "model"
    (model_dir / "sub").mkdir(parents=True, exist_ok=True)
    (model_dir / "MLmodel").write_text("flavors: {}\n")
    (model_dir / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 40)
    with _quiet_mlflow(uri):
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        exp = client.create_experiment("llm-prompt-optimization", artifact_location=str(artifacts))
        parent = client.create_run(exp, run_name="prompt_v1.3_gpt4", start_time=1_700_000_000_000)
        pid = parent.info.run_id
        for key, value in {"prompt_version": "v1.3", "model": "gpt-4", "temperature": 0.7, "top_k": 5}.items():
            client.log_param(pid, key, value)
        for step in range(5):
            client.log_metric(pid, "loss", 1.0 / (step + 1), timestamp=1_700_000_000_000 + step * 10, step=step)
        client.log_metric(pid, "accuracy", 0.85, timestamp=1_700_000_000_100, step=0)
        client.set_tag(pid, "team", "search")
        client.log_artifact(pid, str(files / "system_prompt_v1.3.txt"), "prompts")
        client.log_artifact(pid, str(files / "eval_results.json"))
        client.log_artifacts(pid, str(model_dir), "model")
        child = client.create_run(exp, run_name="child-eval", tags={"mlflow.parentRunId": pid},
                                  start_time=1_700_000_000_050)  # fmt: skip
        client.log_metric(child.info.run_id, "faithfulness", 0.92, timestamp=1_700_000_000_060, step=0)
        client.set_terminated(child.info.run_id, "FAILED", end_time=1_700_000_000_070)
        client.set_terminated(pid, "FINISHED", end_time=1_700_000_000_200)
        other = client.create_run("0", run_name="default-run", start_time=1_700_000_000_300)
        client.log_param(other.info.run_id, "x", "1")
        client.create_registered_model("chat-assistant", description="the bot", tags={"owner": "ml"})
        client.create_model_version("chat-assistant", f"runs:/{pid}/model", run_id=pid, tags={"base": "llama"})
        client.create_model_version("chat-assistant", f"runs:/{pid}/model", run_id=pid, description="second")
        client.create_model_version("chat-assistant", "s3://bucket/elsewhere/model")
        client.transition_model_version_stage("chat-assistant", "2", "Production")
        client.transition_model_version_stage("chat-assistant", "1", "Archived")
        client.set_registered_model_alias("chat-assistant", "champion", "2")
        client.register_prompt("summarize", "Summarize: {{ text }}", commit_message="first")
        client.register_prompt("summarize", "Summarize in {{ n }} words: {{ text }}", commit_message="shorter")
        client.set_prompt_alias("summarize", "production", 1)
        chat = [{"role": "system", "content": "You are {{ persona }}."}, {"role": "user", "content": "{{ question }}"}]
        client.register_prompt("assistant-chat", chat, commit_message="chat prompt")
    return {"parent": pid, "child": child.info.run_id, "other": other.info.run_id, "files": files}


@pytest.fixture(scope="module")
def sqlite_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("mlflow-sqlite")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return uri, write_mlflow(uri, root / "artifacts", root / "files")


@pytest.fixture(scope="module")
def mlruns_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("mlflow-files")
    return root / "mlruns", write_mlflow(str(root / "mlruns"), root / "mlruns-artifacts", root / "files")


@pytest.fixture
def workspace(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    new_workspace(tmp_path, tmp_path_factory.getbasetemp())
    yield tmp_path
    sessions.reset()


def _services() -> tuple[TrackingService, ModelService, PromptService]:
    store = sessions.get_session(create=False).service.store
    tracking = TrackingService(store)
    return tracking, ModelService(store, tracking), PromptService(store)


def _mlflow_history(uri: str, run_id: str, key: str) -> list[tuple[int, int, float]]:
    from mlflow import MlflowClient

    with _quiet_mlflow(uri):
        history = MlflowClient(tracking_uri=uri).get_metric_history(run_id, key)
    return [(m.step, m.timestamp, m.value) for m in history]


def test_imports_runs_models_and_prompts_from_sqlite(ws: Path, sqlite_source: tuple[str, dict[str, Any]]) -> None:
    uri, ids = sqlite_source
    summary = importers.mlflow(uri)

    assert summary.imported["experiment"] == 2 and summary.imported["run"] == 3
    assert summary.imported["model version"] == 3 and summary.imported["prompt version"] == 3
    assert summary.imported["metric value"] == 7 and summary.imported["artifact"] == 4
    tracking, models, prompts = _services()
    parent = tracking.get_run(ids["parent"])
    assert parent.run_id == ids["parent"] and parent.project == "llm-prompt-optimization"
    assert (parent.name, parent.status, parent.start_time, parent.end_time) == (
        "prompt_v1.3_gpt4", "finished", 1_700_000_000_000, 1_700_000_000_200,
    )  # fmt: skip
    assert parent.params == {"prompt_version": "v1.3", "model": "gpt-4", "temperature": "0.7", "top_k": "5"}
    assert parent.tags["team"] == "search" and parent.tags["mlflow.runName"] == "prompt_v1.3_gpt4"
    assert parent.context["imported_from"]["system"] == "mlflow"
    history = [(m.step, m.timestamp, m.value) for m in tracking.metric_history(parent.run_id, "loss")]
    assert history == _mlflow_history(uri, ids["parent"], "loss") and len(history) == 5
    child = tracking.get_run(ids["child"])
    assert child.parent_id == parent.run_id and child.status == "failed" and child.end_time == 1_700_000_000_070
    assert tracking.children(parent.run_id) == [child.run_id]
    assert tracking.get_run(ids["other"]).project == "default"
    files: Path = ids["files"]
    assert {a.path for a in tracking.list_artifacts(parent.run_id)} == {
        "prompts/system_prompt_v1.3.txt", "eval_results.json", "model/MLmodel", "model/sub/weights.bin",
    }  # fmt: skip
    assert tracking.read_artifact(parent.run_id, "eval_results.json") == (files / "eval_results.json").read_bytes()
    weights = tracking.read_artifact(parent.run_id, "model/sub/weights.bin")
    assert weights == (files / "model" / "sub" / "weights.bin").read_bytes()

    versions = {v.version: v for v in models.versions("chat-assistant")}
    assert {n: (v.stage, v.aliases) for n, v in versions.items()} == {
        1: ("Archived", ()), 2: ("Production", ("champion",)), 3: ("None", ()),
    }  # fmt: skip
    assert versions[1].source == f"runs:/{parent.run_id}/model" and versions[1].run_id == parent.run_id
    assert versions[1].tags["base"] == "llama" and versions[1].tags["mlflow.version"] == "1"
    assert versions[3].source == "s3://bucket/elsewhere/model" and versions[2].description == "second"
    assert models.get_model("chat-assistant").description == "the bot"
    moves = models.history("chat-assistant")
    assert {(m.ref, m.new) for m in moves} >= {("stage:2", "Production"), ("stage:1", "Archived"), ("champion", "2")}
    assert all(m.who == "mlflow-import" for m in moves)

    summarize = {v.version: v for v in prompts.versions("summarize")}
    assert set(summarize) == {"1.0.0", "2.0.0"} and summarize["1.0.0"].aliases == ("production",)
    assert summarize["2.0.0"].content.template == "Summarize in {{ n }} words: {{ text }}"
    assert summarize["2.0.0"].changelog == "shorter"
    (chat,) = prompts.versions("assistant-chat")
    assert chat.version == "1.0.0" and chat.content.variables == ("persona", "question")
    assert [m["role"] for m in chat.content.to_dict()["template"]] == ["system", "user"]

    again = importers.mlflow(uri)  # idempotent: nothing twice
    assert again.total_imported() == 0
    assert again.skipped["run"] == 3 and again.skipped["model version"] == 3 and again.skipped["prompt version"] == 3
    assert len(tracking.search_runs(limit=100)[0]) == 3 and len(models.versions("chat-assistant")) == 3


def test_imports_an_mlruns_folder(workspace: Path, mlruns_source: tuple[Path, dict[str, Any]]) -> None:
    folder, ids = mlruns_source
    calls: list[tuple[int, int]] = []
    summary = importers.mlflow(str(folder), progress=lambda done, total: calls.append((done, total)))
    assert (summary.imported["run"], summary.imported["model version"], summary.imported["prompt version"]) == (3, 3, 3)
    assert calls[0] == (0, 9) and calls[-1] == (9, 9) and len(calls) == 10
    tracking, models, _ = _services()
    history = [(m.step, m.timestamp, m.value) for m in tracking.metric_history(ids["parent"], "loss")]
    assert history == _mlflow_history(str(folder), ids["parent"], "loss")
    assert tracking.get_run(ids["child"]).parent_id == ids["parent"]
    assert models.get("chat-assistant", alias="champion").version == 2
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ  # the importer put the environment back
    assert not (workspace / "mlflow.db").exists()  # and MLflow wrote nothing where it ran
    assert importers.mlflow(f"file://{folder}").total_imported() == 0


def test_an_interrupted_import_finishes_on_the_next_run(
    workspace: Path, mlruns_source: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    folder, ids = mlruns_source
    artifact = folder.parent / "mlruns-artifacts" / ids["parent"] / "artifacts" / "eval_results.json"
    good = artifact.read_bytes()
    artifact.unlink()
    artifact.symlink_to(tmp_path / "gone.json")  # a missing artifact file, met while importing that run
    try:
        with pytest.raises(StoreError, match=f"MLflow could not read the artifacts of run {ids['parent']}"):
            importers.mlflow(str(folder))
        tracking, models, _ = _services()
        imported = {r.run_id for r in tracking.search_runs(limit=100)[0]}
        assert ids["parent"] not in imported and imported  # the runs before it are in; it left nothing
        assert models.list_models() == []
    finally:
        artifact.unlink()
        artifact.write_bytes(good)

    summary = importers.mlflow(str(folder))
    assert summary.imported["run"] == 3 - len(imported) and summary.skipped["run"] == len(imported)
    assert {r.run_id for r in tracking.search_runs(limit=100)[0]} == {ids["parent"], ids["child"], ids["other"]}
    assert tracking.read_artifact(ids["parent"], "eval_results.json") == good
    assert len(models.versions("chat-assistant")) == 3


def test_sources_that_are_not_mlflow_are_refused(workspace: Path, tmp_path: Path) -> None:
    (tmp_path / "not-mlruns").mkdir()
    (tmp_path / "not-mlruns" / "notes.txt").write_text("hello")
    cases = {
        str(tmp_path / "missing"): "no mlruns folder",
        str(tmp_path / "not-mlruns"): "is not an mlruns folder",
        f"sqlite:///{tmp_path / 'missing.db'}": "no MLflow database",
        f"sqlite:///{workspace / '.keel' / 'keel.db'}": "is not an MLflow tracking database",
        "ftp://example.invalid/mlruns": "unsupported MLflow tracking URI",
    }
    for uri, message in cases.items():
        with pytest.raises(InvalidInput, match=message):
            importers.mlflow(uri)
    tracking, _, _ = _services()
    assert tracking.search_runs(limit=10)[0] == [] and not (tmp_path / "missing.db").exists()


def test_an_unreachable_server_is_a_clear_error(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the user's setting wins over keel's default
    with pytest.raises(StoreError, match=r"MLflow could not read the experiments of http://127\.0\.0\.1"):
        importers.mlflow(f"http://127.0.0.1:{free_port()}")


def test_a_missing_mlflow_package_names_the_extra(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (workspace / "mlruns" / "0").mkdir(parents=True)
    (workspace / "mlruns" / "0" / "meta.yaml").write_text("name: Default\n")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what an environment without the extra looks like
    with pytest.raises(InvalidInput, match=r"keel\[import-mlflow\]"):
        importers.mlflow("mlruns")
