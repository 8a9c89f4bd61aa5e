"""MLflow 3's logged models against a live keel server: the real ``mlflow`` client (mlflow-skinny 3.17).

``log_model`` (what every ``mlflow.<flavor>.log_model`` calls: ``mlflow.models.Model.log``),
``set_active_model``, ``register_model("runs:/<run>/<name>")`` and ``models:/m-<id>`` land in
keel as a logged model of the experiment's project (files in keel's object store, params,
metrics), a lineage output of its run, and a keel model version whose source is the logged
model. One server for the module (the fixture of ``test_mlflow_client.py``).

``Model.log`` validates a serving-input example with ``mlflow.models.utils``, which imports
pandas, which mlflow-skinny does not install; it ends with a notebook hint whose module
imports pandas too, and ``set_active_model`` writes a new model's MLmodel file with a dummy
signature (pandas again). The tests turn those steps off (``Model.get_serving_input`` answers
None, as for a model without an input example; no hint; the MLmodel file has no signature);
every request ``log_model`` and ``set_active_model`` make is the client's own.
"""

from __future__ import annotations

import json
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.exceptions import MlflowException, RestException
from mlflow.models import Model
from test_mlflow_client import Keel, keel, use  # noqa: F401 - keel: the module's server (a fixture)
from test_server_api import bootstrap, ok, start_server

from keel.services.tracking import TrackingService
from keel.services.workspace import open_store

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _save_model(path: str, mlflow_model: Model, config: dict[str, Any] | None = None, **_kwargs: Any) -> None:
    """A tiny flavor's save_model: the model is a JSON config."""
    os.makedirs(path, exist_ok=True)
    Path(path, "config.json").write_text(json.dumps(config or {}))
    mlflow_model.add_flavor("tinyflavor", config_file="config.json")
    mlflow_model.save(os.path.join(path, "MLmodel"))


TINY = types.ModuleType("tinyflavor")
TINY.save_model = _save_model  # type: ignore[attr-defined]
sys.modules["tinyflavor"] = TINY


def log_model(config: dict[str, Any], name: str, **kwargs: Any) -> Any:
    """``mlflow.<flavor>.log_model`` for the tiny flavor (what every flavor's does)."""
    return Model.log(artifact_path=None, name=name, flavor=TINY, config=config, **kwargs)


def load_config(uri: str, dst: Path) -> dict[str, Any]:
    """The tiny flavor's load_model: download the model and read its config."""
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(dst)))
    loaded: dict[str, Any] = json.loads((local / "config.json").read_text())
    return loaded


@pytest.fixture(autouse=True)
def _as_root(keel: Keel, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:  # noqa: F811
    use(keel, monkeypatch)
    monkeypatch.setattr(Model, "get_serving_input", lambda self, path: None)  # needs pandas (see above)
    display = types.ModuleType("mlflow.models.display_utils")  # its notebook hint imports pandas too
    display.maybe_render_agent_eval_recipe = lambda info: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlflow.models.display_utils", display)
    utils = types.ModuleType("mlflow.models.utils")  # set_active_model's MLmodel spec: no signature (pandas)
    utils.get_external_mlflow_model_spec = lambda model: Model(  # type: ignore[attr-defined]
        artifact_path=model.artifact_location, model_uuid=model.model_id, model_id=model.model_id,
        run_id=model.source_run_id, metadata={"mlflow.model.isExternal": "true"},
    )  # fmt: skip
    monkeypatch.setitem(sys.modules, "mlflow.models.utils", utils)
    mlflow.set_experiment(experiment_id="0")
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.clear_active_model()


def lineage(keel: Keel, run_id: str) -> set[tuple[str, str, str]]:  # noqa: F811
    store = open_store(keel.store, None, cached=False)
    try:
        return {(e.direction, str(e.entity), e.role) for e in TrackingService(store).lineage(run_id)}
    finally:
        store.close()


# -- log_model, its run, its files -------------------------------------------------------------------------
def test_log_model_makes_a_logged_model_of_the_run_with_its_files_params_and_metrics(
    keel: Keel,  # noqa: F811
    tmp_path: Path,
) -> None:
    with mlflow.start_run() as run:
        mlflow.log_param("lr", "0.1")
        mlflow.log_metric("acc", 0.5)
        info = log_model({"temperature": 0.2}, name="model", params={"prompt": "v2"})
        mlflow.log_metric("f1", 0.75)  # logged after log_model, at its step: a metric of the model too
    run_id = run.info.run_id
    assert info.model_uri == f"models:/{info.model_id}" and info.model_id.startswith("m-") and len(info.model_id) == 34

    model = mlflow.get_logged_model(info.model_id)
    assert model.status == LoggedModelStatus.READY and model.name == "model" and model.source_run_id == run_id
    assert model.experiment_id == "0"
    assert model.artifact_location == f"mlflow-artifacts:/0/models/{info.model_id}/artifacts"
    assert model.params == {"lr": "0.1", "prompt": "v2"}  # the run's params and log_model's
    assert {(m.key, m.value, m.run_id, m.model_id) for m in model.metrics} == {
        ("acc", 0.5, run_id, info.model_id),
        ("f1", 0.75, run_id, info.model_id),
    }
    assert model.tags["mlflow.user"] == "root"
    # log_model logs the run's metrics again for the model: the run keeps each point once
    assert [m.value for m in MlflowClient().get_metric_history(run_id, "acc")] == [0.5]
    assert MlflowClient().get_run(run_id).outputs.model_outputs == [LoggedModelOutput(info.model_id, step=0)]
    assert {
        ("output", f"logged_model:{info.model_id}", "source"),
        ("output", f"logged_model:{info.model_id}", "step 0"),
    } <= lineage(keel, run_id)

    # the files: listed and downloaded through the artifact proxy, kept in keel's object store
    files = MlflowClient().list_logged_model_artifacts(info.model_id)
    assert sorted(f.path for f in files) == ["MLmodel", "config.json"]
    assert load_config(f"models:/{info.model_id}", tmp_path / "a") == {"temperature": 0.2}
    mlmodel = yaml.safe_load(mlflow.artifacts.load_text(f"{model.artifact_location}/MLmodel"))
    assert mlmodel["model_id"] == info.model_id and mlmodel["run_id"] == run_id and "tinyflavor" in mlmodel["flavors"]


def test_register_model_from_the_run_and_from_the_model_uri_makes_keel_versions(
    keel: Keel,  # noqa: F811
    tmp_path: Path,
) -> None:
    with mlflow.start_run() as run:
        info = log_model({"layers": 3}, name="ranker-model")
    run_id = run.info.run_id
    first = mlflow.register_model(f"runs:/{run_id}/ranker-model", "lm-ranker")  # no MLmodel in the run: the model
    second = mlflow.register_model(f"models:/{info.model_id}", "lm-ranker")
    for version in (first, second):
        assert version.source == f"models:/{info.model_id}" and version.run_id == run_id
        stored = ok(keel.admin.get(f"/models/lm-ranker/versions/{version.version}"))
        assert stored["source"] == f"models:/{info.model_id}" and stored["run_id"] == run_id
        assert stored["author"] == "root"
    assert ("output", "model:lm-ranker@1", "registered") in lineage(keel, run_id)  # the run made the version
    # models:/NAME/VERSION reads the logged model's files (get-download-uri: its artifact location)
    assert load_config("models:/lm-ranker/1", tmp_path / "v1") == {"layers": 3}
    uri = MlflowClient().get_model_version_download_uri("lm-ranker", "2")
    assert uri == f"mlflow-artifacts:/0/models/{info.model_id}/artifacts"
    versions = json.loads(mlflow.get_logged_model(info.model_id).tags["mlflow.modelVersions"])
    assert {"name": "lm-ranker", "version": 1} in versions and {"name": "lm-ranker", "version": 2} in versions

    # MLflow's source rules for a logged model's version
    client = MlflowClient()
    with pytest.raises(RestException) as caught:
        client.create_model_version("lm-ranker", f"runs:/{run_id}/ranker-model", model_id=info.model_id)
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE" and "model_id" in caught.value.message
    with pytest.raises(RestException) as caught:
        client.create_model_version("lm-ranker", "models:/m-" + "0" * 32, model_id="m-" + "0" * 32)
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"


def test_set_active_model_creates_then_reuses_one_model_and_collects_metrics(keel: Keel) -> None:  # noqa: F811
    active = mlflow.set_active_model(name="support-agent-v1")
    again = mlflow.set_active_model(name="support-agent-v1")
    assert again.model_id == active.model_id == mlflow.get_active_model_id()
    model = mlflow.get_logged_model(active.model_id)
    assert model.name == "support-agent-v1" and model.status == LoggedModelStatus.READY
    assert model.tags["mlflow.model.isExternal"] == "true"
    with mlflow.start_run() as run:
        mlflow.log_metric("answer_quality", 0.8)  # the active model's metric
        mlflow.log_metrics({"latency_ms": 120.0})
    metrics = {m.key: (m.value, m.run_id) for m in mlflow.get_logged_model(active.model_id).metrics}
    assert metrics == {"answer_quality": (0.8, run.info.run_id), "latency_ms": (120.0, run.info.run_id)}
    found = mlflow.search_logged_models(filter_string="name = 'support-agent-v1'", output_format="list")
    assert [m.model_id for m in found] == [active.model_id]


# -- search, tags, params, delete ----------------------------------------------------------------------------
def test_search_filters_orders_and_pages_like_mlflow(keel: Keel) -> None:  # noqa: F811
    experiment = MlflowClient().create_experiment("lm-search")
    client = MlflowClient()
    ids = []
    with mlflow.start_run(experiment_id=experiment) as run:
        for i, acc in enumerate((0.7, 0.9, 0.8)):
            model = client.create_logged_model(
                experiment, name=f"cand-{i}", source_run_id=run.info.run_id, params={"size": str(i)},
                tags={"family": "even" if i % 2 == 0 else "odd"}, model_type="agent",
            )  # fmt: skip
            client.log_metric(run.info.run_id, "acc", acc, model_id=model.model_id)
            client.log_metric(
                run.info.run_id, "acc", acc, model_id=model.model_id, dataset_name="eval", dataset_digest="e1", step=1
            )
            ids.append(model.model_id)

    def names(**kwargs: Any) -> list[str]:
        return [m.name for m in client.search_logged_models(experiment_ids=[experiment], **kwargs)]

    assert names() == ["cand-2", "cand-1", "cand-0"]  # newest first
    assert names(filter_string="metrics.acc >= 0.8", order_by=[{"field_name": "metrics.acc", "ascending": True}]) == [
        "cand-2", "cand-1",
    ]  # fmt: skip
    assert names(filter_string="tags.family = 'even' AND params.size != '0'") == ["cand-2"]
    assert names(filter_string="model_type = 'agent' AND name LIKE 'cand-%'") == ["cand-2", "cand-1", "cand-0"]
    assert names(order_by=[{"field_name": "name", "ascending": True}]) == ["cand-0", "cand-1", "cand-2"]
    assert names(datasets=[{"dataset_name": "eval"}], filter_string="metrics.acc > 0.75") == ["cand-2", "cand-1"]
    first = client.search_logged_models(experiment_ids=[experiment], max_results=2)
    assert len(first) == 2 and first.token
    rest = client.search_logged_models(experiment_ids=[experiment], max_results=2, page_token=first.token)
    assert [m.model_id for m in (*first, *rest)] == ids[::-1] and not rest.token
    with pytest.raises(MlflowException, match="INVALID_PARAMETER_VALUE"):
        names(filter_string="metrics.acc > 0.5 OR name = 'x'")
    with pytest.raises(MlflowException, match="INVALID_PARAMETER_VALUE"):
        names(order_by=[{"field_name": "params.size"}])


def test_tags_params_status_and_delete(keel: Keel, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    client = MlflowClient()
    model = client.create_logged_model("0", name="lifecycle", params={"a": "1"})
    assert model.status == LoggedModelStatus.PENDING and not model.source_run_id
    client.set_logged_model_tags(model.model_id, {"stage": "dev", "owner": "ada"})
    client.delete_logged_model_tag(model.model_id, "owner")
    client.log_model_params(model.model_id, {"b": "2"})
    client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
    got = client.get_logged_model(model.model_id)
    assert got.tags == {"stage": "dev"} and got.params == {"a": "1", "b": "2"}
    assert got.status == LoggedModelStatus.FAILED
    with pytest.raises(RestException) as caught:
        client.delete_logged_model_tag(model.model_id, "owner")
    assert caught.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(RestException) as caught:
        client.create_logged_model("0", name="bad/name")
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"

    use(keel, monkeypatch, "rita")  # a reader reads, and writes nothing
    assert MlflowClient().get_logged_model(model.model_id).name == "lifecycle"
    with pytest.raises(RestException) as caught:
        MlflowClient().set_logged_model_tags(model.model_id, {"stage": "prod"})
    assert caught.value.error_code == "PERMISSION_DENIED"
    use(keel, monkeypatch)

    client.delete_logged_model(model.model_id)
    with pytest.raises(RestException) as caught:
        client.get_logged_model(model.model_id)
    assert caught.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert client._tracking_client.store.get_logged_model(model.model_id, allow_deleted=True).name == "lifecycle"
    assert model.model_id not in {m.model_id for m in client.search_logged_models(experiment_ids=["0"])}
    with httpx.Client(base_url=keel.url, headers={"Authorization": f"Bearer {keel.tokens['root']}"}) as http:
        unknown = http.get("/api/2.0/mlflow/logged-models/m-" + "0" * 32)
        assert unknown.status_code == 404 and unknown.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


@pytest.mark.postgres
@pytest.mark.s3
def test_logged_models_on_postgres_and_s3(
    pg_url: str, s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = bootstrap(pg_url, objects=s3_url)
    server = start_server(pg_url, tmp_path, s3_url)
    try:
        use(Keel(server, server.client(token), {"root": token}), monkeypatch)
        mlflow.set_experiment("lm-on-postgres")
        with mlflow.start_run() as run:
            mlflow.log_metric("acc", 0.9)
            info = log_model({"k": "v"}, name="model")
        assert mlflow.get_logged_model(info.model_id).metrics[0].value == 0.9
        version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "pg-logged")
        assert version.source == f"models:/{info.model_id}"
        assert load_config("models:/pg-logged/1", tmp_path / "dl") == {"k": "v"}
    finally:
        server.stop()
