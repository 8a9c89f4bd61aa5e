"""The service API (``/api/v1/svc``) through the ASGI app: only the table's methods, the
right role on the right scope, only known types, and nothing written when a call is refused."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keel.core.batch import WriteBatch
from keel.core.entities import now_ms
from keel.sdk.remote import wire_codec
from keel.server import create_app
from keel.services.auth import AuthStore
from keel.services.contract import operations

CODEC = wire_codec()
RUN_A = "a" * 32
RUN_B = "b" * 32


@dataclass
class Api:
    client: TestClient
    tokens: dict[str, str]
    context: Any

    def call(self, user: str, service: str, method: str, *args: Any, **kwargs: Any) -> tuple[int, Any]:
        body = {"args": CODEC.encode(list(args)), "kwargs": CODEC.encode(kwargs)}
        response = self.client.post(
            f"/api/v1/svc/{service}/{method}", json=body, headers={"Authorization": f"Bearer {self.tokens[user]}"}
        )
        data = response.json()
        if response.status_code == 200:
            return 200, CODEC.decode(data["result"])
        assert set(data) == {"error"} and set(data["error"]) == {"code", "message", "hint", "details"}
        return response.status_code, data["error"]

    def ok(self, user: str, service: str, method: str, *args: Any, **kwargs: Any) -> Any:
        status, result = self.call(user, service, method, *args, **kwargs)
        assert status == 200, result
        return result


def _new_run(run_id: str, project: str) -> WriteBatch:
    return WriteBatch(new_runs=[(run_id, project, "r", now_ms(), None, "{}")])


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    folder: Path = tmp_path_factory.mktemp("rpc")
    app = create_app(f"sqlite:///{folder / 'keel.db'}", str(folder / "objects"))
    auth = AuthStore(app.state.keel.store.db)
    tokens = {}
    grants = {
        "root": {},
        "wendy": {"alpha": "writer"},
        "rita": {"alpha": "reader", "@registries": "reader"},
        "reg": {"@registries": "writer"},
    }
    for name, roles in grants.items():
        auth.create_user(name, is_admin=name == "root")
        tokens[name], _ = auth.create_token(name, "test")
        for project, role in roles.items():
            auth.grant(name, project, role, "root")
    with TestClient(app, raise_server_exceptions=False) as client:
        api = Api(client, tokens, app.state.keel)
        api.ok("root", "tracking", "write_batch", _new_run(RUN_A, "alpha"))
        api.ok("root", "tracking", "write_batch", _new_run(RUN_B, "beta"))
        yield api


def test_every_declared_operation_is_its_own_documented_route(api: Api) -> None:
    paths = api.client.get("/api/v1/openapi.json").json()["paths"]
    for op in operations():
        assert f"/api/v1/svc/{op.service}/{op.name}" in paths
    assert "/api/v1/svc/{service}/{method}" not in paths


def test_every_operation_names_a_method_of_the_served_service_and_its_scope_argument(api: Api) -> None:
    for op in operations():
        method = getattr(getattr(api.context, op.service), op.name)
        if op.scope.param:
            assert op.scope.param in inspect.signature(method).parameters, op


def test_a_model_cannot_be_linked_to_a_run_the_caller_cannot_read(api: Api) -> None:
    status, _ = api.call("reg", "models", "register", "m", f"runs:/{RUN_B}/x")
    assert status == 404
    assert api.call("reg", "models", "versions_of_run", RUN_B)[0] == 404
    assert api.call("reg", "models", "get_model", "m")[0] == 404  # nothing was registered


def test_a_writer_logs_to_its_project_and_reads_it_back(api: Api) -> None:
    batch = WriteBatch(metrics=[(RUN_A, "loss", float("nan"), 0, now_ms())], params=[(RUN_A, "k", "str", "v", False)])
    api.ok("wendy", "tracking", "write_batch", batch)
    record = api.ok("wendy", "tracking", "get_run", RUN_A[:8])
    assert record.run_id == RUN_A and record.params == {"k": "v"} and record.metrics["loss"] != record.metrics["loss"]
    assert [m.key for m in api.ok("wendy", "tracking", "metric_summaries", RUN_A)] == ["loss"]


def test_roles_are_checked_on_the_project_a_call_touches(api: Api) -> None:
    # a reader reads but cannot write; nothing of the refused batch is stored
    assert api.ok("rita", "tracking", "get_run", RUN_A).run_id == RUN_A
    status, error = api.call("rita", "tracking", "write_batch", WriteBatch(tags=[(RUN_A, "t", "x")]))
    assert status == 403 and error["code"] == "forbidden"
    # no role at all: the run's project does not exist for the caller
    status, error = api.call("wendy", "tracking", "get_run", RUN_B)
    assert status == 404
    # a batch mixing a writable and an unwritable run is refused whole
    mixed = WriteBatch(tags=[(RUN_A, "t", "x"), (RUN_B, "t", "x")])
    assert api.call("wendy", "tracking", "write_batch", mixed)[0] == 404
    # a new run in a project the caller cannot write is not created
    status, _ = api.call("wendy", "tracking", "write_batch", _new_run("c" * 32, "beta"))
    assert status == 404
    assert api.call("root", "tracking", "get_run", "c" * 32)[0] == 404
    assert "t" not in api.ok("root", "tracking", "get_run", RUN_A).tags


def test_listing_shows_only_readable_projects_and_runs(api: Api) -> None:
    assert [p.name for p, _ in api.ok("wendy", "tracking", "list_projects")] == ["alpha"]
    runs, _token = api.ok("wendy", "tracking", "search_runs")
    assert {r.run_id for r in runs} == {RUN_A}
    assert len(api.ok("root", "tracking", "search_runs")[0]) == 2
    assert api.call("wendy", "tracking", "search_runs", ["beta"])[0] == 404
    assert api.ok("reg", "tracking", "search_runs")[0] == []


def test_registries_need_their_own_role_and_record_the_caller(api: Api) -> None:
    status, error = api.call("wendy", "prompts", "list_prompts")
    assert status == 403 and "registries" in error["message"]
    status, _ = api.call("rita", "prompts", "register", "greet", "Hi {{name}}")
    assert status == 403
    assert api.ok("rita", "prompts", "list_prompts") == []
    version, created = api.ok("reg", "prompts", "register", "greet", "Hi {{name}}", changelog="first", author="x")
    assert created and version.version == "1.0.0" and version.author == "reg"
    move = api.ok("reg", "prompts", "set_alias", "greet", "production", "1.0.0", who="mallory")
    assert move.who == "reg"
    assert api.ok("rita", "prompts", "get", "greet", "production").version == "1.0.0"


def test_methods_outside_the_table_are_refused_by_name(api: Api) -> None:
    for service, method in [("tracking", "store_bytes"), ("tracking", "__init__"), ("kb", "export")]:
        status, error = api.call("root", service, method, b"x")
        assert status == 400 and f"{service}.{method}" in error["message"]
    status, error = api.call("root", "os", "system", "true")
    assert status == 400 and "no service 'os'" in error["message"]


def test_unknown_types_and_bad_arguments_are_refused_before_anything_runs(api: Api) -> None:
    headers = {"Authorization": f"Bearer {api.tokens['root']}"}
    for args in (
        [{"$type": "subprocess.Popen", "fields": {"args": "true"}}],
        [{"$pickle": "gASV"}],
        [{"$type": "WriteBatch", "fields": {"tags": [], "shell": "x"}}],
    ):
        response = api.client.post("/api/v1/svc/tracking/write_batch", json={"args": args}, headers=headers)
        assert response.status_code == 400, response.text
    response = api.client.post("/api/v1/svc/tracking/get_run", json={"args": [RUN_A], "extra": 1}, headers=headers)
    assert response.status_code == 422
    assert api.call("root", "tracking", "get_run", RUN_A, "too", "many")[0] == 400
    assert api.call("root", "tracking", "write_batch", "not a batch")[0] == 400


def test_a_call_without_a_valid_token_is_401(api: Api) -> None:
    response = api.client.post("/api/v1/svc/tracking/list_projects", json={})
    assert response.status_code == 401
    response = api.client.post(
        "/api/v1/svc/tracking/list_projects", json={}, headers={"Authorization": "Bearer keel_forged"}
    )
    assert response.status_code == 401
