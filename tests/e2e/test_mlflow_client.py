"""The real ``mlflow`` client (mlflow-skinny 3.x) against a live keel server.

One uvicorn keel server on a SQLite store is shared by the module; the tests
point MLflow at it with ``MLFLOW_TRACKING_URI`` / ``MLFLOW_TRACKING_TOKEN`` (a
keel API token) and run MLflow user code unchanged, then check what keel sees
through its own API (``/api/v1``), and the other way round.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, Metric, Param, RunTag
from mlflow.exceptions import MlflowException, RestException
from test_server_api import Server, bootstrap, ok, start_server

from keel.services.tracking import TrackingService
from keel.services.workspace import open_store

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # MLflow's stage APIs are deprecated


@dataclass
class Keel:
    """The module's server, its admin client and tokens."""

    server: Server
    admin: httpx.Client
    tokens: dict[str, str]
    store: str = ""

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def keel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keel]:
    folder = tmp_path_factory.mktemp("mlflow-server")
    store = f"sqlite:///{folder / 'keel.db'}"
    root = bootstrap(store)
    server = start_server(store, folder)
    admin = server.client(root)
    tokens = {"root": root}
    ok(admin.post("/admin/users", json={"name": "rita"}), 201)
    tokens["rita"] = ok(admin.post("/admin/users/rita/tokens", json={"name": "mlflow"}), 201)["token"]
    ok(admin.put("/projects/*/grants/rita", json={"role": "reader"}))
    try:
        yield Keel(server, admin, tokens, store)
    finally:
        server.stop()


def use(keel: Keel, monkeypatch: pytest.MonkeyPatch, user: str = "root") -> None:
    """Point the MLflow client at the keel server as ``user``."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", keel.url)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", keel.tokens[user])
    mlflow.set_tracking_uri(keel.url)


@pytest.fixture(autouse=True)
def _as_root(keel: Keel, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    use(keel, monkeypatch)
    mlflow.set_experiment(experiment_id="0")
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()


def write(path: str, text: str) -> str:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
    return path


# -- section 2.2: logging and the model registry ------------------------------------------------------
def test_reference_registry_snippet_runs_unchanged_and_keel_sees_it(keel: Keel) -> None:
    write("model_config.yaml", "base_model: meta-llama/Llama-3-8B-Instruct\nquantization: AWQ-4bit\n")
    write("model/MLmodel", "flavors: {}\n")
    # Register model
    with mlflow.start_run():
        mlflow.log_params({"model_name": "llama-3-8b", "quantization": "AWQ-4bit", "fine_tune_dataset": "custom_v2"})
        mlflow.log_metrics({"eval_accuracy": 0.85, "eval_latency_ms": 120, "eval_cost_per_1k": 0.002})
        mlflow.log_artifact("model_config.yaml")
        mlflow.log_artifact("model/MLmodel", artifact_path="model")  # the model's files, for register_model
        run_id = mlflow.active_run().info.run_id
        # Register to Registry
        registered = mlflow.register_model(model_uri=f"runs:/{run_id}/model", name="chat-assistant")
    # Model stage management
    client = mlflow.tracking.MlflowClient()
    client.transition_model_version_stage(name="chat-assistant", version=registered.version, stage="Production")

    run = ok(keel.admin.get(f"/runs/{run_id}"))
    assert run["project"] == "default" and run["status"] == "finished"
    assert run["params"] == {"model_name": "llama-3-8b", "quantization": "AWQ-4bit", "fine_tune_dataset": "custom_v2"}
    assert run["metrics"] == {"eval_accuracy": 0.85, "eval_latency_ms": 120.0, "eval_cost_per_1k": 0.002}
    assert run["tags"]["mlflow.user"] == "root"
    paths = {a["path"] for a in ok(keel.admin.get(f"/runs/{run_id}/artifacts"))}
    assert paths == {"model_config.yaml", "model/MLmodel"}
    version = ok(keel.admin.get(f"/models/chat-assistant/versions/{registered.version}"))
    assert version["stage"] == "Production" and version["run_id"] == run_id
    assert version["source"] == f"runs:/{run_id}/model" and version["author"] == "root"
    moves = ok(keel.admin.get("/models/chat-assistant/history"))
    assert [(m["ref"], m["old"], m["new"], m["who"]) for m in moves] == [
        (f"stage:{registered.version}", "None", "Production", "root")
    ]


def _doc_snippet(heading: str) -> str:
    """The Python block under ``heading`` in docs/mlflow.md."""
    doc = (Path(__file__).parents[2] / "docs" / "mlflow.md").read_text()
    section = doc[doc.index(f"\n{heading}\n") :]
    return section[section.index("```python\n") + 10 : section.index("\n```", section.index("```python"))]


def test_documented_register_model_workaround_works(
    keel: Keel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/mlflow.md's way to register a model without log_model, run as written."""
    monkeypatch.chdir(tmp_path)
    names: dict[str, object] = {}
    exec(compile(_doc_snippet("## Registering a model without `log_model`"), "docs/mlflow.md", "exec"), names)
    first, second = names["first"], names["second"]
    for version, path in ((first, "model"), (second, "weights")):
        stored = ok(keel.admin.get(f"/models/chat-assistant/versions/{version.version}"))  # type: ignore[attr-defined]
        assert stored["source"] == f"runs:/{stored['run_id']}/{path}" and stored["run_id"] == version.run_id  # type: ignore[attr-defined]
        files = {a["path"] for a in ok(keel.admin.get(f"/runs/{stored['run_id']}/artifacts"))}
        assert f"{path}/config.json" in files
    # without the MLmodel file, MLflow's register_model fails on its own (what the docs warn about)
    with mlflow.start_run() as run:
        mlflow.log_artifact("model/config.json", artifact_path="bare")
    with pytest.raises(MlflowException, match="Unable to find a logged_model"):
        mlflow.register_model(f"runs:/{run.info.run_id}/bare", "chat-assistant")


def test_stage_transitions_and_aliases_land_in_keels_reflog(keel: Keel) -> None:
    client = MlflowClient()
    client.create_registered_model("ranker", tags={"team": "search"}, description="reranks passages")
    versions = [client.create_model_version("ranker", f"s3://bucket/ranker/{i}").version for i in (1, 2)]
    assert versions == ["1", "2"]
    client.transition_model_version_stage("ranker", "1", "Production")
    client.transition_model_version_stage("ranker", "2", "Production", archive_existing_versions=True)
    client.set_registered_model_alias("ranker", "champion", "2")
    client.set_registered_model_alias("ranker", "champion", "1")
    client.delete_registered_model_alias("ranker", "champion")
    client.set_registered_model_alias("ranker", "challenger", "2")

    assert client.get_model_version("ranker", "1").current_stage == "Archived"
    assert client.get_model_version_by_alias("ranker", "challenger").version == "2"
    latest = client.get_latest_versions("ranker", stages=["Production"])
    assert [v.version for v in latest] == ["2"]
    model = client.get_registered_model("ranker")
    assert model.tags == {"team": "search"} and model.description == "reranks passages"
    assert model.aliases == {"challenger": "2"}
    client.set_model_version_tag("ranker", "2", "validated", "yes")
    client.update_model_version("ranker", "2", description="the better one")
    found = client.search_model_versions("name = 'ranker' and tags.validated = 'yes'")
    assert [(v.version, v.description) for v in found] == [("2", "the better one")]
    assert [m.name for m in client.search_registered_models("name LIKE 'rank%'")] == ["ranker"]

    moves = [(m["ref"], m["old"], m["new"], m["who"]) for m in ok(keel.admin.get("/models/ranker/history"))]
    assert moves == [
        ("stage:1", "None", "Production", "root"),
        ("stage:2", "None", "Production", "root"),
        ("stage:1", "Production", "Archived", "root"),
        ("champion", None, "2", "root"),
        ("champion", "2", "1", "root"),
        ("champion", "1", None, "root"),
        ("challenger", None, "2", "root"),
    ]
    client.delete_model_version("ranker", "1")
    assert [v["version"] for v in ok(keel.admin.get("/models/ranker/versions"))] == [2]


# -- section 4.2: tracking an LLM experiment --------------------------------------------------------------------
def test_reference_llm_tracking_snippet_runs_unchanged(keel: Keel) -> None:
    write("prompts/system_prompt_v1.3.txt", "You are a helpful assistant.\n")
    write("eval_results.json", '{"accuracy": 0.85}\n')
    with mlflow.start_run(run_name="prompt_v1.3_gpt4"):
        # Log parameters
        mlflow.log_params(
            {
                "prompt_version": "v1.3",
                "model": "gpt-4",
                "temperature": 0.7,
                "chunk_size": 512,
                "top_k": 5,
            }
        )
        # Log metrics
        mlflow.log_metrics(
            {
                "accuracy": 0.85,
                "faithfulness": 0.92,
                "relevancy": 0.88,
                "avg_latency_ms": 1200,
                "cost_per_query": 0.05,
            }
        )
        # Log prompt files
        mlflow.log_artifact("prompts/system_prompt_v1.3.txt")
        mlflow.log_artifact("eval_results.json")
    [run] = ok(keel.admin.get("/runs", params={"filter": "name = 'prompt_v1.3_gpt4'"}))["runs"]
    assert run["params"] == {"prompt_version": "v1.3", "model": "gpt-4", "temperature": "0.7", "chunk_size": "512",
                             "top_k": "5"}  # fmt: skip
    assert run["metrics"]["faithfulness"] == 0.92 and run["metrics"]["avg_latency_ms"] == 1200.0
    paths = {a["path"] for a in ok(keel.admin.get(f"/runs/{run['run_id']}/artifacts"))}
    assert paths == {"system_prompt_v1.3.txt", "eval_results.json"}
    found = mlflow.search_runs(
        filter_string="params.model = 'gpt-4' and metrics.accuracy >= 0.85", output_format="list"
    )
    assert [r.info.run_id for r in found] == [run["run_id"]]


# -- tracking: search, nested runs, histories, artifacts ----------------------------------------------------
def test_search_runs_filters_and_orders_like_mlflow(keel: Keel) -> None:
    experiment_id = mlflow.set_experiment("search-me").experiment_id
    for i, (model, acc) in enumerate([("a", 0.9), ("b", 0.7), ("a", 0.8), ("c", 0.95)]):
        with mlflow.start_run(run_name=f"run-{i}"):
            mlflow.log_param("model", model)
            mlflow.log_metric("acc", acc)
            mlflow.set_tag("stage", "eval" if i % 2 else "train")
    runs = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string="metrics.acc > 0.75 and params.model != 'c' and attributes.status = 'FINISHED'",
        order_by=["metrics.acc DESC"],
        output_format="list",
    )
    assert [r.info.run_name for r in runs] == ["run-0", "run-2"]
    by_name = mlflow.search_runs(
        [experiment_id], "tags.mlflow.runName LIKE 'run-%' and tags.stage = 'eval'", order_by=["attributes.run_name"],
        output_format="list",
    )  # fmt: skip
    assert [r.info.run_name for r in by_name] == ["run-1", "run-3"]
    assert len(MlflowClient().search_runs([experiment_id], max_results=3)) == 3
    with pytest.raises(MlflowException, match="INVALID_PARAMETER_VALUE"):
        mlflow.search_runs([experiment_id], "metrics.acc >>> 1", output_format="list")
    experiment = MlflowClient().get_experiment_by_name("search-me")
    assert experiment.experiment_id == experiment_id and experiment.lifecycle_stage == "active"
    names = [e.name for e in mlflow.search_experiments(filter_string="name LIKE 'search-%'")]
    assert names == ["search-me"]


def test_nested_runs_metric_history_batches_and_lifecycle(keel: Keel) -> None:
    with mlflow.start_run(run_name="parent") as parent:
        with mlflow.start_run(run_name="child", nested=True) as child:
            for step in range(5):
                mlflow.log_metric("loss", 1 / (step + 1), step=step)
    client = MlflowClient()
    got = client.get_run(child.info.run_id)
    assert got.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert got.data.metrics == {"loss": 0.2}
    history = client.get_metric_history(child.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(s, 1 / (s + 1)) for s in range(5)]
    assert ok(keel.admin.get(f"/runs/{child.info.run_id}"))["parent_id"] == parent.info.run_id

    run_id = client.create_run("0", run_name="batch").info.run_id
    client.log_batch(
        run_id,
        metrics=[Metric("m", float(i), 1_700_000_000_000 + i, i) for i in range(2500)],
        params=[Param("lr", "0.01")],
        tags=[RunTag("note", "x")],
    )
    client.log_inputs(run_id, [DatasetInput(Dataset("eval-set", "d1g3st", "local", "/data/eval.jsonl"))])
    store = open_store(keel.store, None, cached=False)
    try:
        edges = TrackingService(store).lineage(run_id)
    finally:
        store.close()
    assert [str(e.entity) for e in edges if e.entity.kind == "dataset"] == ["dataset:eval-set@d1g3st"]
    client.delete_tag(run_id, "note")
    client.set_terminated(run_id, "FAILED")
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and "note" not in run.data.tags and run.data.params == {"lr": "0.01"}
    assert len(client.get_metric_history(run_id, "m")) == 2500
    with pytest.raises(MlflowException, match="changing param values is not allowed"):
        client.log_param(run_id, "lr", "0.02")
    client.delete_run(run_id)
    assert client.get_run(run_id).info.lifecycle_stage == "deleted"
    assert ok(keel.admin.get(f"/runs/{run_id}"))["deleted"] is True
    client.restore_run(run_id)
    assert client.get_run(run_id).info.lifecycle_stage == "active"


def test_artifacts_round_trip(keel: Keel, tmp_path: Path) -> None:
    write("report/summary.txt", "all good\n")
    write("report/plots/curve.csv", "x,y\n1,2\n")
    with mlflow.start_run() as run:
        mlflow.log_artifacts("report", artifact_path="report")
        mlflow.log_dict({"temperature": 0.2}, "config/params.json")
        mlflow.log_text("hello", "notes.txt")
    client = MlflowClient()
    run_id = run.info.run_id
    assert [(f.path, f.is_dir) for f in client.list_artifacts(run_id)] == [
        ("config", True), ("notes.txt", False), ("report", True),
    ]  # fmt: skip
    assert [f.path for f in client.list_artifacts(run_id, "report")] == ["report/plots", "report/summary.txt"]
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="report", dst_path=str(tmp_path)))
    assert (local / "plots" / "curve.csv").read_text() == "x,y\n1,2\n"
    assert mlflow.artifacts.load_dict(f"runs:/{run_id}/config/params.json") == {"temperature": 0.2}
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/notes.txt") == "hello"
    keel_paths = {a["path"] for a in ok(keel.admin.get(f"/runs/{run_id}/artifacts"))}
    assert keel_paths == {"report/summary.txt", "report/plots/curve.csv", "config/params.json", "notes.txt"}


def test_runs_written_by_keel_are_visible_to_mlflow(keel: Keel) -> None:
    ok(keel.admin.post("/projects", json={"name": "native"}), 201)
    created = ok(keel.admin.post("/runs", json={"project": "native", "name": "from-keel"}), 201)
    body = {"params": {"k": 3, "flag": True}, "metrics": [{"key": "score", "value": 0.5, "step": 2}]}
    ok(keel.admin.post(f"/runs/{created['run_id']}/batch", json=body))
    ok(keel.admin.patch(f"/runs/{created['run_id']}", json={"status": "finished"}))
    experiment = MlflowClient().get_experiment_by_name("native")
    assert experiment is not None
    [run] = mlflow.search_runs([experiment.experiment_id], output_format="list")
    assert run.info.run_id == created["run_id"] and run.info.run_name == "from-keel"
    assert run.info.status == "FINISHED" and run.info.experiment_id == experiment.experiment_id
    assert run.data.params == {"k": "3", "flag": "True"} and run.data.metrics == {"score": 0.5}
    assert MlflowClient().get_metric_history(run.info.run_id, "score")[0].step == 2


# -- section 4.2-style prompt registry ------------------------------------------------------------------------
def test_prompt_registry_round_trip_maps_integers_to_semver(keel: Keel) -> None:
    first = mlflow.genai.register_prompt(name="support-answer", template="Answer {{question}} politely.",
                                         commit_message="first cut")  # fmt: skip
    second = mlflow.genai.register_prompt(
        name="support-answer", template="Answer {{question}} politely, citing {{source}}.", commit_message="cite"
    )
    assert (first.version, second.version) == (1, 2)
    mlflow.genai.set_prompt_alias("support-answer", alias="production", version=1)
    loaded = mlflow.genai.load_prompt("prompts:/support-answer@production")
    assert loaded.version == 1 and loaded.format(question="why?") == "Answer why? politely."
    assert mlflow.genai.load_prompt("support-answer", version=2).template.endswith("citing {{source}}.")
    assert [p.name for p in mlflow.genai.search_prompts("name = 'support-answer'")] == ["support-answer"]

    keel_versions = ok(keel.admin.get("/prompts/support-answer/versions"))
    assert [v["version"] for v in keel_versions] == ["2.0.0", "1.0.0"]  # a new variable: a major bump
    assert keel_versions[1]["changelog"] == "first cut" and keel_versions[1]["author"] == "root"
    assert ok(keel.admin.get("/prompts/support-answer/versions/production"))["version"] == "1.0.0"
    history = ok(keel.admin.get("/prompts/support-answer/history"))
    assert [(m["ref"], m["new"], m["who"]) for m in history] == [("production", "1.0.0", "root")]

    body = {"template": "Answer {{question}} politely, citing {{source}}. Be brief.", "changelog": "shorter"}
    ok(keel.admin.post("/prompts/support-answer/versions", json=body), 201)
    third = mlflow.genai.load_prompt("support-answer", version=3)
    assert third.template.endswith("Be brief.")
    assert [m.name for m in MlflowClient().search_registered_models()] == ["chat-assistant", "ranker"]


# -- errors and auth -----------------------------------------------------------------------------------------------
def test_unsupported_endpoints_and_malformed_requests_answer_in_mlflows_shape(keel: Keel) -> None:
    with httpx.Client(base_url=keel.url, headers={"Authorization": f"Bearer {keel.tokens['root']}"}) as http:
        traces = http.post("/api/2.0/mlflow/traces", json={})
        assert traces.status_code == 501
        assert traces.json()["error_code"] == "NOT_IMPLEMENTED" and "not supported by keel" in traces.json()["message"]
        malformed = http.post(
            "/api/2.0/mlflow/runs/create", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert malformed.status_code == 400 and malformed.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        missing = http.get("/api/2.0/mlflow/runs/get", params={"run_id": "0" * 32})
        assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        anonymous = httpx.get(f"{keel.url}/api/2.0/mlflow/experiments/get", params={"experiment_id": "0"})
        assert anonymous.status_code == 401 and anonymous.json()["error_code"] == "UNAUTHENTICATED"
    with pytest.raises(MlflowException, match="not supported by keel"):
        MlflowClient().list_webhooks()
    MlflowClient().create_experiment("twice")
    with pytest.raises(MlflowException, match="RESOURCE_ALREADY_EXISTS"):
        MlflowClient().create_experiment("twice")


def test_reader_token_reads_but_cannot_write(keel: Keel, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = MlflowClient().create_run("0", run_name="owned").info.run_id
    use(keel, monkeypatch, "rita")
    reader = MlflowClient()
    assert reader.get_run(run_id).info.run_name == "owned"
    for write_call in (
        lambda: reader.create_run("0"),
        lambda: reader.log_metric(run_id, "x", 1.0),
        lambda: reader.create_registered_model("not-mine"),
    ):
        with pytest.raises(RestException) as caught:
            write_call()
        assert caught.value.error_code == "PERMISSION_DENIED"
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == keel.tokens["rita"]


@pytest.mark.postgres
@pytest.mark.s3
def test_mlflow_client_on_postgres_and_s3(
    pg_url: str, s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = bootstrap(pg_url, objects=s3_url)
    server = start_server(pg_url, tmp_path, s3_url)
    try:
        use(Keel(server, server.client(token), {"root": token}), monkeypatch)
        mlflow.set_experiment("on-postgres")
        write("weights/MLmodel", "flavors: {}\n")
        with mlflow.start_run() as run:
            mlflow.log_params({"lr": "0.1"})
            for step in range(3):
                mlflow.log_metric("loss", 1.0 - step / 10, step=step)
            mlflow.log_artifact("weights/MLmodel", artifact_path="weights")
        version = mlflow.register_model(f"runs:/{run.info.run_id}/weights", "pg-model")
        MlflowClient().set_registered_model_alias("pg-model", "champion", version.version)
        assert MlflowClient().get_model_version_by_alias("pg-model", "champion").run_id == run.info.run_id
        [found] = mlflow.search_runs(filter_string="metrics.loss < 0.9", output_format="list")
        assert found.info.run_id == run.info.run_id and found.data.params == {"lr": "0.1"}
        assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/weights/MLmodel") == "flavors: {}\n"
    finally:
        server.stop()
