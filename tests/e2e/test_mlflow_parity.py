"""MLflow 3.17's own behaviour where keel maps MLflow (issue 19), through the real ``mlflow``
client and, where the client cannot make the call, over bare HTTP as MLflow's REST API
reference and its own test suite make it.

Each test runs on the module's SQLite server (the fixture of ``test_mlflow_client.py``) and
on one PostgreSQL + S3 server. What each pins down is MLflow's rule, taken from its server
(``mlflow/server/handlers.py``, ``mlflow/store/*/sqlalchemy_store.py``,
``mlflow/utils/validation.py``): a test fails against the keel server of before the change.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.exceptions import MlflowException, RestException
from test_mlflow_client import Keel, keel, use  # noqa: F401 - keel: the SQLite server (a fixture)
from test_server_api import bootstrap, ok, start_server

from keel.sdk.remote import open_remote, remote
from keel.services.tracking import TrackingService

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # MLflow's stage APIs are deprecated


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres-s3", marks=[pytest.mark.postgres, pytest.mark.s3])]
)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keel]:
    """A live keel server: the module's SQLite one, then one on PostgreSQL + S3."""
    if request.param == "sqlite":
        yield request.getfixturevalue("keel")
        return
    postgres = request.getfixturevalue("postgres_server")
    database, url = postgres.create_database()
    s3 = request.getfixturevalue("s3_server")
    objects = f"s3://{s3.create_bucket()}/objects?{urlencode({'endpoint_url': s3.endpoint_url})}"
    token = bootstrap(url, objects=objects)
    started = start_server(url, tmp_path_factory.mktemp("mlflow-pg"), objects)
    admin = started.client(token)
    ok(admin.post("/admin/users", json={"name": "rita"}), 201)
    tokens = {"root": token, "rita": ok(admin.post("/admin/users/rita/tokens", json={"name": "mlflow"}), 201)["token"]}
    ok(admin.put("/projects/*/grants/rita", json={"role": "reader"}))
    try:
        yield Keel(started, admin, tokens, url)
    finally:
        started.stop()
        postgres.drop_database(database)


@pytest.fixture(autouse=True)
def _as_root(server: Keel, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    use(server, monkeypatch)
    mlflow.set_experiment(experiment_id="0")
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture
def http(server: Keel) -> Iterator[httpx.Client]:
    """Bare HTTP to the server, as root."""
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.tokens['root']}"}) as client:
        yield client


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def error(response: httpx.Response, status: int, code: str) -> str:
    """MLflow's error body of ``response`` (status and code checked); its message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error_code", "message"} and body["error_code"] == code, body
    return str(body["message"])


def lineage(server: Keel, run_id: str) -> list[str]:
    """The run's lineage edges as keel's own API sees them (``output model:m@1`` ...)."""
    store = open_remote(server.url, server.tokens["root"])
    try:
        return [f"{e.direction} {e.entity}" for e in remote(TrackingService, store).lineage(run_id)]
    finally:
        store.close()


# -- 1. model-versions/create takes MLflow's run ids --------------------------------------------------------
def test_model_versions_record_run_ids_of_other_stores_as_mlflow_does(server: Keel) -> None:
    client = MlflowClient()
    name = unique("other-store")
    client.create_registered_model(name)
    foreign = uuid.uuid4().hex  # a well-formed id of a run this server does not have
    versions = [
        client.create_model_version(name, "runs:/run_id/model", "run_id"),  # MLflow's own tests do this
        client.create_model_version(name, "s3://bucket/models/a", foreign),
        client.create_model_version(name, "s3://bucket/models/b", "run_id"),
    ]
    assert [(v.version, v.run_id, v.source) for v in versions] == [
        ("1", "run_id", "runs:/run_id/model"),
        ("2", foreign, "s3://bucket/models/a"),
        ("3", "run_id", "s3://bucket/models/b"),
    ]
    found = client.search_model_versions(f"name = '{name}' and run_id = 'run_id'")
    assert [v.version for v in found] == ["3", "1"]  # MLflow's order: name, then version descending
    first = client.search_model_versions(f"name = '{name}'", max_results=2)
    rest = client.search_model_versions(f"name = '{name}'", max_results=2, page_token=first.token)
    assert [v.version for v in first] + [v.version for v in rest] == ["3", "2", "1"] and not rest.token
    client.transition_model_version_stage(name, "2", "Staging")
    assert {v.current_stage: v.version for v in client.get_latest_versions(name)} == {"None": "3", "Staging": "2"}
    stored = ok(server.admin.get(f"/models/{name}/versions/2"))
    assert stored["run_id"] == foreign and stored["source"] == "s3://bucket/models/a"

    # MLflow's refusals: a runs:/ source names the run_id; a proxied source lies in an existing run
    for source, run_id in (
        ("runs:/run_id/model", "run_id_1"),
        ("runs:/run_id/model", None),
        (f"mlflow-artifacts:/0/{foreign}/artifacts/model", foreign),
        ("s3://bucket/../elsewhere", None),
    ):
        with pytest.raises(RestException) as refused:
            client.create_model_version(name, source, run_id)
        assert refused.value.error_code == "INVALID_PARAMETER_VALUE", source


def test_a_keel_runs_model_version_is_linked_without_its_files_logged_yet(server: Keel) -> None:
    client = MlflowClient()
    name = unique("linked")
    run_id = client.create_run("0").info.run_id
    version = client.create_model_version(name, f"runs:/{run_id}/model", run_id)  # MLflow checks no files
    assert version.run_id == run_id and version.source == f"runs:/{run_id}/model"
    assert f"output model:{name}@1" in lineage(server, run_id)


# -- 2. the artifact proxy: any relative path, MLflow's MIME types ------------------------------------------
def test_artifact_proxy_serves_any_relative_path_with_mlflows_mime_types(
    server: Keel, http: httpx.Client, tmp_path: Path
) -> None:
    root = f"/api/2.0/mlflow-artifacts/artifacts/{unique('proxied')}"
    files = {"a.txt": b"0", "dir/b.txt": b"1", "dir/c.png": b"png", "dir/d.pdf": b"pdf", "dir/e.pkl": b"pkl",
             "dir/MLmodel": b"flavors: {}\n", "dir/mlproject": b"name: x\n"}  # fmt: skip
    for path, content in files.items():
        assert http.put(f"{root}/{path}", content=content).status_code == 200
    expected = {"a.txt": "text/plain", "dir/b.txt": "text/plain", "dir/c.png": "image/png",
                "dir/d.pdf": "application/pdf", "dir/e.pkl": "application/octet-stream", "dir/MLmodel": "text/plain",
                "dir/mlproject": "text/plain"}  # fmt: skip
    for path, mime in expected.items():
        got = http.get(f"{root}/{path}", headers={"Accept": "text/html"})  # the server's type wins
        assert got.status_code == 200 and got.content == files[path]
        assert got.headers["content-type"] == mime, path
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["content-disposition"].startswith("attachment;")
        assert path.rsplit("/", 1)[-1] in got.headers["content-disposition"]
    top = root.rsplit("/", 1)[-1]
    listing = http.get("/api/2.0/mlflow-artifacts/artifacts", params={"path": top}).json()
    assert listing == {"files": [{"path": "a.txt", "is_dir": False, "file_size": 1}, {"path": "dir", "is_dir": True}]}
    inner = http.get("/api/2.0/mlflow-artifacts/artifacts", params={"path": f"{top}/dir"}).json()["files"]
    assert [f["path"] for f in inner] == ["MLmodel", "b.txt", "c.png", "d.pdf", "e.pkl", "mlproject"]
    assert http.get("/api/2.0/mlflow-artifacts/artifacts", params={"path": f"{top}/none"}).json() == {}
    error(http.get(f"{root}/missing.txt"), 404, "RESOURCE_DOES_NOT_EXIST")
    error(http.get(f"{root}/dir"), 400, "INVALID_PARAMETER_VALUE")
    assert http.put(f"{root}/a.txt", content=b"again").status_code == 200  # MLflow overwrites
    assert http.get(f"{root}/a.txt").content == b"again"

    # the client's artifact repository reads the same paths (mlflow-artifacts:/ URIs)
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"mlflow-artifacts:/{top}/dir", dst_path=str(tmp_path))
    assert (Path(local) / "b.txt").read_bytes() == b"1"
    # a reader reads but does not write
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.tokens['rita']}"}) as reader:
        assert reader.get(f"{root}/dir/b.txt").content == b"1"
        error(reader.put(f"{root}/x.txt", content=b"x"), 403, "PERMISSION_DENIED")


def test_files_under_an_experiment_need_a_role_on_its_project(server: Keel, http: httpx.Client) -> None:
    """A path under an experiment (a logged model's files) belongs to its project."""
    client = MlflowClient()
    experiment_id = client.create_experiment(unique("proxy-scope"))
    elsewhere = unique("proxy-elsewhere")
    client.create_experiment(elsewhere)
    path = f"/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/models/m-{uuid.uuid4().hex}/artifacts/MLmodel"
    assert http.put(path, content=b"flavors: {}\n").status_code == 200
    assert http.get(path).headers["content-type"] == "text/plain"
    outsider = unique("outsider")
    ok(server.admin.post("/admin/users", json={"name": outsider}), 201)
    token = ok(server.admin.post(f"/admin/users/{outsider}/tokens", json={"name": "t"}), 201)["token"]
    ok(server.admin.put(f"/projects/{elsewhere}/grants/{outsider}", json={"role": "writer"}))
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as other:
        error(other.get(path), 404, "RESOURCE_DOES_NOT_EXIST")  # hidden: as a missing file
        error(other.put(path, content=b"x"), 404, "RESOURCE_DOES_NOT_EXIST")
    assert http.get(path).content == b"flavors: {}\n"


# -- 3. the implicit 'latest' alias ---------------------------------------------------------------------------
def test_load_prompt_without_a_version_is_the_latest_as_in_mlflow(server: Keel) -> None:
    name = unique("latest-prompt")
    mlflow.genai.register_prompt(name=name, template="Hello {{name}}.")
    mlflow.genai.register_prompt(name=name, template="Hello {{name}}, welcome.")
    assert mlflow.genai.load_prompt(name).version == 2  # prompts:/name@latest
    assert mlflow.genai.load_prompt(f"prompts:/{name}@latest").template == "Hello {{name}}, welcome."
    with pytest.raises(MlflowException, match="reserved"):
        mlflow.genai.set_prompt_alias(name, alias="latest", version=1)
    client = MlflowClient()
    model = unique("latest-model")
    client.create_registered_model(model)
    for i in range(3):
        client.create_model_version(model, f"s3://bucket/{model}/{i}")
    client.transition_model_version_stage(model, "2", "Production")
    assert client.get_model_version_by_alias(model, "latest").version == "3"
    with pytest.raises(RestException) as unknown:
        client.get_model_version_by_alias(model, "nope")
    assert unknown.value.error_code == "INVALID_PARAMETER_VALUE"  # MLflow's answer for an unknown alias


# -- 4. metric history pages --------------------------------------------------------------------------------
def test_metric_history_pages_with_max_results_in_mlflows_order(http: httpx.Client) -> None:
    client = MlflowClient()
    run_id = client.create_run("0").info.run_id
    for step in range(7):  # later steps logged with earlier timestamps: MLflow orders by timestamp first
        client.log_metric(run_id, "loss", 1.0 / (step + 1), timestamp=1_000 - step, step=step)
    store = client._tracking_client.store  # the client's REST store: its paged call
    pages, token = [], None
    while True:
        page = store.get_metric_history(run_id, "loss", max_results=3, page_token=token)
        pages.append([m.step for m in page])
        token = page.token
        if not token:
            break
    assert pages == [[6, 5, 4], [3, 2, 1], [0]]
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [6, 5, 4, 3, 2, 1, 0]
    whole = http.get("/api/2.0/mlflow/metrics/get-history", params={"run_id": run_id, "metric_key": "loss"}).json()
    assert len(whole["metrics"]) == 7 and "next_page_token" not in whole
    params = {"run_id": run_id, "metric_key": "loss", "max_results": 0}
    error(http.get("/api/2.0/mlflow/metrics/get-history", params=params), 400, "INVALID_PARAMETER_VALUE")


# -- 5. runs/get returns the run's dataset inputs -----------------------------------------------------------------
def test_get_run_returns_the_dataset_inputs_logged(server: Keel) -> None:
    client = MlflowClient()
    experiment_id = client.create_experiment(unique("inputs"))
    run_id = client.create_run(experiment_id).info.run_id
    train = Dataset("reviews", "d1g3st", "local", '{"uri": "/data/reviews.jsonl"}', '{"cols": 2}', '{"rows": 10}')
    context = [InputTag("mlflow.data.context", "training")]
    client.log_inputs(run_id, [DatasetInput(train, context), DatasetInput(Dataset("eval", "e1", "http", "{}"))])
    client.log_inputs(run_id, [DatasetInput(train, [InputTag("mlflow.data.context", "eval")])])  # kept as first
    inputs = client.get_run(run_id).inputs.dataset_inputs
    assert [(i.dataset.name, i.dataset.digest, i.dataset.source, i.dataset.schema, i.dataset.profile,
             [(t.key, t.value) for t in i.tags]) for i in inputs] == [
        ("reviews", "d1g3st", '{"uri": "/data/reviews.jsonl"}', '{"cols": 2}', '{"rows": 10}',
         [("mlflow.data.context", "training")]),
        ("eval", "e1", "{}", None, None, []),
    ]  # fmt: skip
    [found] = client.search_runs([experiment_id], f"attributes.run_id = '{run_id}'")
    assert [i.dataset.name for i in found.inputs.dataset_inputs] == ["reviews", "eval"]
    assert "input dataset:reviews@d1g3st" in lineage(server, run_id)
    # the experiment's dataset of that name and digest keeps the source it was first logged with
    other = client.create_run(experiment_id).info.run_id
    client.log_inputs(other, [DatasetInput(Dataset("reviews", "d1g3st", "local", '{"uri": "/elsewhere"}'))])
    assert client.get_run(other).inputs.dataset_inputs[0].dataset.source == '{"uri": "/data/reviews.jsonl"}'


# -- 6. MLflow's key rules on the MLflow API ---------------------------------------------------------------------
def test_mlflow_metric_names_are_accepted_on_the_mlflow_api_only(server: Keel) -> None:
    client = MlflowClient()
    run_id = client.create_run("0").info.run_id
    for key in ("-inf_metric", ".hidden", "a..b", "métrique"):
        client.log_metric(run_id, key, 1.0)
    client.log_param(run_id, "-param", "x")
    client.set_tag(run_id, "-tag", "y")
    run = client.get_run(run_id)
    assert set(run.data.metrics) == {"-inf_metric", ".hidden", "a..b", "métrique"}
    assert run.data.params == {"-param": "x"} and run.data.tags["-tag"] == "y"
    for key in ("a//b", "a/./b", "/abs", "..up", "x" * 251):
        with pytest.raises(RestException) as refused:
            client.log_metric(run_id, key, 1.0)
        assert refused.value.error_code == "INVALID_PARAMETER_VALUE", key
    # keel's own API keeps keel's rules
    body = {"metrics": [{"key": "-inf_metric", "value": 1.0, "step": 0}]}
    assert server.admin.post(f"/runs/{run_id}/batch", json=body).status_code == 400


# -- 7. runs/search breaks start-time ties by run id --------------------------------------------------------------
def test_search_runs_orders_runs_that_started_together_by_run_id(server: Keel) -> None:
    client = MlflowClient()
    experiment_id = client.create_experiment(unique("ties"))
    ids = [client.create_run(experiment_id, start_time=1_700_000_000_000).info.run_id for _ in range(5)]
    client.create_run(experiment_id, start_time=1_700_000_000_001)  # the newest comes first
    first = client.search_runs([experiment_id], max_results=3)
    second = client.search_runs([experiment_id], max_results=3, page_token=first.token)
    assert [r.info.run_id for r in [*first, *second]][1:] == sorted(ids)
    by_name = client.search_runs([experiment_id], order_by=["attributes.start_time ASC"])
    assert [r.info.run_id for r in by_name][:5] == sorted(ids)


# -- 8. tag != in experiments/search --------------------------------------------------------------------------
def test_search_experiments_not_equal_needs_the_tag(server: Keel) -> None:
    client = MlflowClient()
    prefix = unique("neq")
    client.create_experiment(f"{prefix}-a", tags={"team": "a"})
    client.create_experiment(f"{prefix}-b", tags={"team": "b"})
    client.create_experiment(f"{prefix}-none")
    found = client.search_experiments(filter_string=f"name LIKE '{prefix}-%' AND tags.team != 'a'")
    assert [e.name for e in found] == [f"{prefix}-b"]


# -- 9. set-tag / delete-tag on unknown and deleted runs ----------------------------------------------------------
def test_tags_of_unknown_and_deleted_runs_answer_as_mlflow(server: Keel) -> None:
    client = MlflowClient()
    for missing in (uuid.uuid4().hex, "unknown_run"):
        for call, args in ((client.set_tag, (missing, "k", "v")), (client.delete_tag, (missing, "k"))):
            with pytest.raises(RestException) as unknown:
                call(*args)
            assert unknown.value.error_code == "RESOURCE_DOES_NOT_EXIST"
            assert f"Run with id={missing} not found" in str(unknown.value)
    run_id = client.create_run("0").info.run_id
    client.set_tag(run_id, "k", "v")
    client.delete_run(run_id)
    for call, args in ((client.set_tag, (run_id, "k", "w")), (client.delete_tag, (run_id, "k"))):
        with pytest.raises(RestException, match="must be in the 'active' state") as deleted:
            call(*args)
        assert deleted.value.error_code == "INVALID_PARAMETER_VALUE"
    client.restore_run(run_id)
    client.delete_tag(run_id, "k")
    assert "k" not in client.get_run(run_id).data.tags


# -- 10. MLflow's request checks --------------------------------------------------------------------------------
def test_requests_mlflow_refuses_are_refused(http: httpx.Client) -> None:
    run_id = MlflowClient().create_run("0").info.run_id
    api = "/api/2.0/mlflow"
    refused: list[tuple[str, dict[str, Any]]] = [
        ("experiments/create", {"name": unique("loc"), "artifact_location": 5}),
        ("runs/log-parameter", {"run_id": run_id, "key": 5, "value": "x"}),
        ("runs/set-tag", {"run_id": run_id, "key": "t", "value": 5}),
        ("runs/log-metric", {"run_id": run_id, "key": "m", "value": 1.0}),
        ("runs/log-batch", {"run_id": run_id, "metrics": [{"key": "m", "value": 1.0}]}),
        ("runs/log-batch", {"run_id": "not an id!", "params": [{"key": "p", "value": "1"}]}),
    ]
    for path, body in refused:
        message = error(http.post(f"{api}/{path}", json=body), 400, "INVALID_PARAMETER_VALUE")
        assert "parameter" in message, (path, message)
    # what MLflow's parser takes is taken: numbers as text, a number for a double
    ok(http.post(f"{api}/runs/log-metric", json={"run_id": run_id, "key": "m", "value": "1.5", "timestamp": "3"}))
    assert MlflowClient().get_run(run_id).data.metrics == {"m": 1.5}


# -- unsupported endpoints -------------------------------------------------------------------------------------------
UNSUPPORTED = [
    ("GET", "/api/2.0/mlflow/webhooks", "webhooks"),
    ("POST", "/api/3.0/mlflow/gateway/endpoints/create", "AI gateway"),
    ("GET", "/api/3.0/mlflow/scorers/list", "scorers"),
    ("GET", "/api/3.0/mlflow/workspaces", "workspaces"),
    ("POST", "/api/3.0/mlflow/label-schemas/create", "labeling"),
    ("POST", "/api/2.0/mlflow/artifacts/presigned-upload-url", "presigned"),
    ("GET", "/api/2.0/mlflow/metrics/get-history-bulk-interval", "bulk metric history"),
    ("GET", "/api/3.0/mlflow/no-such-endpoint", "MLflow endpoint"),
    ("GET", "/ajax-api/2.0/mlflow/no-such-endpoint", "MLflow endpoint"),
    ("POST", "/ajax-api/3.0/mlflow/jobs/search", "jobs"),
    ("GET", "/ajax-api/2.0/mlflow-artifacts/artifacts/x.txt", "web UI artifact API"),
    ("POST", "/graphql", "GraphQL"),
    ("GET", "/get-artifact", "/get-artifact"),
    ("GET", "/model-versions/get-artifact", "/model-versions/get-artifact"),
    ("DELETE", "/api/2.0/mlflow-artifacts/artifacts/x.txt", "deleting artifacts"),
    ("POST", "/api/2.0/mlflow-artifacts/mpu/create/x.bin", "multipart"),
]


def test_unsupported_paths_answer_not_implemented_in_mlflows_shape(server: Keel, http: httpx.Client) -> None:
    for method, path, feature in UNSUPPORTED:
        message = error(http.request(method, path, json={} if method != "GET" else None), 501, "NOT_IMPLEMENTED")
        assert "is not supported by keel" in message and feature in message, (path, message)
    assert httpx.post(f"{server.url}/graphql", json={}).status_code == 401  # the token check comes first
    client = MlflowClient()
    with pytest.raises(MlflowException, match="webhooks is not supported by keel") as webhooks:
        client.list_webhooks()
    assert webhooks.value.error_code == "NOT_IMPLEMENTED"
    with pytest.raises(MlflowException, match="not supported by keel"):
        client.create_webhook(unique("hook"), "https://example.com/hook", ["model_version.created"])
