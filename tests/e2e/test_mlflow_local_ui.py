"""``keel ui`` as a drop-in ``mlflow ui``: the real MLflow client against a real ``keel ui``, no token.

One ``keel ui`` process serves a workspace for the module (the way a user starts it, in
the workspace's folder); MLflow code points at it with ``MLFLOW_TRACKING_URI`` alone. What
it serves without a token it serves to this machine only: requests naming another host
(DNS rebinding) or sent by another site's page are refused, and it will not listen on a
non-loopback address. The team server keeps asking for tokens. Renames: an experiment
renamed through MLflow (or ``keel projects rename``) is the keel project renamed, with
the old name in the audit log; a registered model's rename is refused in MLflow's shape.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from cli_inprocess import keel as run_keel
from keel.server import create_app
from keel.services.audit import current_user
from keel.transport.asgi import ASGIAppTransport
from servers import free_port

KEEL = Path(sys.executable).with_name("keel")
MLFLOW = "/api/2.0/mlflow"

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),  # MLflow's stage APIs are deprecated
    pytest.mark.skipif(sys.platform != "linux", reason="keel ui execs the server: POSIX processes"),
]


@dataclass
class LocalUI:
    """The module's ``keel ui``: its workspace folder and address."""

    folder: Path
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def keel(self, *args: str, code: int = 0) -> str:
        """``keel ARGS`` in the workspace (in this process); its stdout, or stderr when it fails."""
        out = run_keel(*args, cwd=self.folder, env=_env())
        assert out.returncode == code, out.stdout + out.stderr
        return out.stdout if code == 0 else out.stderr

    def keel_json(self, *args: str) -> Any:
        return json.loads(self.keel(*args, "--json"))

    def runs(self, project: str) -> list[dict[str, Any]]:
        """``keel runs list --project PROJECT``: what keel sees."""
        found: list[dict[str, Any]] = self.keel_json("runs", "list", "--project", project)["runs"]
        return found


def _env() -> dict[str, str]:
    """This environment without a store or an MLflow token it may name."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KEEL_SERVER_", "KEEL_URI", "KEEL_OBJECTS", "MLFLOW_TRACKING_TOKEN"))
    }


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalUI]:
    folder = tmp_path_factory.mktemp("local-ui")
    assert run_keel("init", cwd=folder, env=_env()).returncode == 0
    port = free_port()
    log = folder / "ui.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(KEEL), "ui", "--no-browser", "--port", str(port)],
            cwd=folder, env=_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    local = LocalUI(folder, port, process, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{local.url}/ui/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield local
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(autouse=True)
def _mlflow_at_keel_ui(ui: LocalUI, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """MLflow pointed at keel ui the way its users do it: the URI, and no token."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ui.url)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    mlflow.set_tracking_uri(ui.url)
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()


def test_mlflow_code_runs_against_keel_ui_without_a_token(ui: LocalUI, tmp_path: Path) -> None:
    assert f"MLFLOW_TRACKING_URI={ui.url}" in ui.log.read_text()  # what keel ui prints at start
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "MLmodel").write_text("flavors: {}\n")
    mlflow.set_experiment("local-exp")
    with mlflow.start_run(run_name="first") as run:
        mlflow.log_params({"lr": "0.01", "model": "llama-3-8b"})
        for step, loss in enumerate((0.9, 0.5, 0.3)):
            mlflow.log_metric("loss", loss, step=step)
        mlflow.log_metric("acc", 0.8)
        mlflow.log_artifacts(str(tmp_path / "model"), artifact_path="model")
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "local-model")
    with mlflow.start_run(run_name="second"):
        mlflow.log_metric("acc", 0.4)

    found = mlflow.search_runs(filter_string="metrics.acc > 0.5", output_format="list")
    assert [r.info.run_id for r in found] == [run.info.run_id]
    client = MlflowClient()
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [0.9, 0.5, 0.3]
    assert client.get_model_version("local-model", version.version).run_id == run.info.run_id

    # keel's own view of the workspace: the same run, and the model version by the local user
    assert {r["name"] for r in ui.runs("local-exp")} == {"first", "second"}
    shown = ui.keel_json("models", "show", "local-model")
    assert shown["versions"][0]["author"] == (current_user() or "local")
    assert shown["versions"][0]["source"] == f"runs:/{run.info.run_id}/model"


def test_spans_reach_keel_ui_over_otlp_without_a_token(ui: LocalUI) -> None:
    trace_id = "7" * 32
    span = {"traceId": trace_id, "spanId": "1" * 16, "name": "answer", "kind": 1,
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000500000000"}  # fmt: skip
    body = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"scope": {}, "spans": [span]}]}]}
    answer = httpx.post(f"{ui.url}/v1/traces", json=body, headers={"x-keel-project": "otel-local"})
    assert answer.status_code == 200, answer.text
    listed = ui.keel_json("traces", "list", "--project", "otel-local")
    assert [t["trace_id"] for t in listed] == [trace_id]


def test_other_hosts_and_other_sites_pages_are_refused(ui: LocalUI) -> None:
    create = f"{ui.url}{MLFLOW}/experiments/create"
    search = f"{ui.url}{MLFLOW}/experiments/search"
    refused = {
        "rebound host": httpx.post(create, json={"name": "rebound"}, headers={"Host": f"attacker.example:{ui.port}"}),
        "rebound read": httpx.get(search, params={"max_results": 5}, headers={"Host": "attacker.example"}),
        "cross-site origin": httpx.post(create, json={"name": "evil"}, headers={"Origin": "https://evil.example"}),
        "sandboxed page": httpx.post(create, json={"name": "evil2"}, headers={"Origin": "null"}),
        "other local port": httpx.post(create, json={"name": "evil3"}, headers={"Origin": "http://127.0.0.1:1"}),
        "fetch metadata": httpx.post(create, json={"name": "evil4"}, headers={"Sec-Fetch-Site": "cross-site"}),
        "cross-site read": httpx.get(search, params={"max_results": 5}, headers={"Sec-Fetch-Site": "cross-site"}),
    }
    for why, answer in refused.items():
        assert answer.status_code == 403, (why, answer.text)
        assert answer.json()["error_code"] == "PERMISSION_DENIED", why  # MLflow's shape on MLflow's paths
    otlp = httpx.post(f"{ui.url}/v1/traces", json={"resourceSpans": []}, headers={"Origin": "https://evil.example"})
    assert otlp.status_code == 403 and otlp.json()["error"]["code"] == "forbidden"
    form = httpx.post(f"{ui.url}/ui/projects", data={"name": "x"}, headers={"Sec-Fetch-Site": "cross-site"})
    assert form.status_code == 403
    # a link from another site still opens a page; this server's own pages and programs may write
    assert httpx.get(f"{ui.url}/ui/", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200
    own = {"Origin": ui.url, "Sec-Fetch-Site": "same-origin"}
    assert httpx.post(create, json={"name": "from-own-page"}, headers=own).status_code == 200
    by_name = httpx.post(create.replace("127.0.0.1", "localhost"), json={"name": "by-localhost"})
    assert by_name.status_code == 200, by_name.text

    names = {e.name for e in MlflowClient().search_experiments()}
    assert {"from-own-page", "by-localhost"} <= names
    assert not names & {"rebound", "evil", "evil2", "evil3", "evil4"}


def test_keel_ui_listens_on_loopback_only_and_keels_api_keeps_tokens(ui: LocalUI) -> None:
    out = subprocess.run(
        [str(KEEL), "ui", "--host", "0.0.0.0", "--no-browser", "--port", str(free_port())],
        cwd=ui.folder, env=_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "loopback" in out.stderr and "'0.0.0.0'" in out.stderr
    assert f"keel server start --store sqlite:///{ui.folder}/.keel/keel.db --host 0.0.0.0" in out.stderr
    # keel's own API (/api/v1) is not part of the drop-in: it still asks for a token
    assert httpx.get(f"{ui.url}/api/v1/projects").status_code == 401


def test_the_team_server_still_needs_a_token(tmp_path: Path) -> None:
    app = create_app(f"sqlite:///{tmp_path / 'team.db'}", str(tmp_path / "objects"))  # what 'keel server start' serves
    with ASGIAppTransport(app) as transport, httpx.Client(transport=transport, base_url="http://127.0.0.1") as client:
        mlflow_call = client.post(f"{MLFLOW}/experiments/create", json={"name": "x"})
        assert mlflow_call.status_code == 401 and mlflow_call.json()["error_code"] == "UNAUTHENTICATED"
        assert client.post("/v1/traces", json={"resourceSpans": []}).status_code == 401
        assert client.get(f"{MLFLOW}/experiments/search", params={"max_results": 1}).status_code == 401


# -- renames ---------------------------------------------------------------------------------------------------
def _audit(ui: LocalUI) -> list[dict[str, Any]]:
    entries = ui.keel_json("server", "audit", "--store", f"sqlite:///{ui.folder}/.keel/keel.db")
    return [e for e in entries if e["action"] == "project.rename"]


def test_renaming_an_experiment_renames_its_keel_project_and_keeps_the_old_name(ui: LocalUI) -> None:
    client = MlflowClient()
    experiment_id = client.create_experiment("before")
    with mlflow.start_run(experiment_id=experiment_id, run_name="kept") as run:
        mlflow.log_metric("acc", 0.7)
    client.rename_experiment(experiment_id, "after")

    assert client.get_experiment(experiment_id).name == "after"
    assert client.get_experiment_by_name("before") is None
    assert [r.info.run_id for r in client.search_runs([experiment_id])] == [run.info.run_id]
    projects = {p["name"] for p in ui.keel_json("projects", "list")}
    assert "after" in projects and "before" not in projects
    assert [r["run_id"] for r in ui.runs("after")] == [run.info.run_id]
    entry = _audit(ui)[0]
    assert entry["actor"] == (current_user() or "local") and entry["target"] == "after"
    assert entry["detail"] == {"old": "before", "new": "after", "project_id": int(experiment_id), "grants_moved": 0}

    # keel's CLI renames it too, and the running keel ui process sees it at once (no stale cache)
    assert ui.keel("projects", "rename", "after", "after-all").strip() == "renamed project after to after-all"
    assert client.get_experiment(experiment_id).name == "after-all"
    with mlflow.start_run(experiment_id=experiment_id):  # logs into the renamed project, by id
        mlflow.log_metric("acc", 0.9)
    mlflow.set_experiment("after")  # the old name is free again: a new, empty experiment
    assert mlflow.get_experiment_by_name("after").experiment_id != experiment_id  # type: ignore[union-attr]
    assert len(client.search_runs([experiment_id])) == 2
    assert [(e["detail"]["old"], e["detail"]["new"]) for e in _audit(ui)[:2]] == [
        ("after", "after-all"),
        ("before", "after"),
    ]
    assert "0 damaged" in ui.keel("verify")  # runs' digests do not cover their project's name


def test_renames_mlflow_refuses_or_keel_cannot_follow(ui: LocalUI) -> None:
    client = MlflowClient()
    taken = client.create_experiment("taken")
    gone = client.create_experiment("gone")
    client.delete_experiment(gone)
    cases = {
        "RESOURCE_ALREADY_EXISTS": lambda: client.rename_experiment(taken, "local-exp"),
        "INVALID_STATE": lambda: client.rename_experiment(gone, "back"),
        "INVALID_PARAMETER_VALUE": lambda: client.rename_experiment("0", "not-default"),
    }
    for code, call in cases.items():
        with pytest.raises(MlflowException) as refused:
            call()
        assert refused.value.error_code == code, refused.value
    assert client.get_experiment(taken).name == "taken"

    with mlflow.start_run() as run:
        mlflow.log_metric("acc", 0.5)
    client.create_registered_model("named-model")
    client.create_model_version("named-model", f"runs:/{run.info.run_id}", run_id=run.info.run_id)
    with pytest.raises(MlflowException, match="not supported by keel") as refused:
        client.rename_registered_model("named-model", "renamed-model")
    assert refused.value.error_code == "NOT_IMPLEMENTED"
    assert client.get_registered_model("named-model").latest_versions[0].version == "1"
    assert ui.keel("projects", "rename", "default", "other", code=2).startswith("error: project 'default' keeps")
