"""Issue 28 over plain REST (what a non-Python client sends): an alias set to where it was at a
time, rollback with ?steps=, reads ?at= a time (a deleted model version answers, marked deleted),
and the refusals in the one JSON error shape: a zoneless time, a version and a time together."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from keel.core.entities import now_ms
from keel.core.times import format_at
from keel.server import create_app
from keel.services.auth import AuthStore


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder: Path = tmp_path_factory.mktemp("rest-time-travel")
    app = create_app(f"sqlite:///{folder / 'keel.db'}", str(folder / "objects"))
    auth = AuthStore(app.state.keel.store.db)
    auth.create_user("root", is_admin=True)
    token, _ = auth.create_token("root", "test")
    with TestClient(app, raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


def _later(than: int) -> int:
    while now_ms() <= than:
        pass
    return now_ms()


def test_prompt_aliases_over_rest(client: TestClient) -> None:
    registered = {}
    for text, version in (("A", "1.0.0"), ("B", "1.0.1"), ("C", "5.0.0")):
        body = {"template": f"{text} {{{{ q }}}}", "changelog": text, "version": version}
        response = client.post("/api/v1/prompts/chat/versions", json=body)
        assert response.status_code == 201
        registered[version] = _later(response.json()["created_at"])
    moved = {}
    for version in ("1.0.0", "1.0.1", "5.0.0"):
        response = client.put("/api/v1/prompts/chat/aliases/production", json={"version": version})
        assert response.status_code == 200, response.text
        moved[version] = response.json()["at"]
        _later(moved[version])
    at = format_at(moved["1.0.0"])
    assert client.get("/api/v1/prompts/chat/versions/production", params={"at": at}).json()["version"] == "1.0.0"
    latest_then = client.get("/api/v1/prompts/chat", params={"at": format_at(registered["1.0.1"])})
    assert latest_then.json()["version"] == "1.0.1"
    rolled = client.post("/api/v1/prompts/chat/aliases/production/rollback", params={"steps": 2})
    assert rolled.status_code == 200 and rolled.json()["new"] == "1.0.0"
    back = client.put("/api/v1/prompts/chat/aliases/production", json={"at": format_at(moved["5.0.0"])})
    assert back.status_code == 200 and back.json()["new"] == "5.0.0"


def test_model_aliases_over_rest_answer_with_a_deleted_version(client: TestClient) -> None:
    for n in (1, 2):
        assert client.post("/api/v1/models/ranker/versions", json={"source": f"s3://b/r{n}"}).status_code == 201
    first = client.put("/api/v1/models/ranker/aliases/champion", json={"version": 2}).json()["at"]
    _later(first)
    client.put("/api/v1/models/ranker/aliases/champion", json={"version": 1})
    assert client.post("/api/v1/models/ranker/aliases/champion/rollback").json()["new"] == "2"
    client.put("/api/v1/models/ranker/aliases/champion", json={"version": 1})
    assert client.delete("/api/v1/models/ranker/versions/2", params={"reason": "bad"}).status_code == 200
    then = client.get("/api/v1/models/ranker/aliases/champion", params={"at": format_at(first)}).json()
    assert then["version"] == 2 and then["deleted"] is True


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/api/v1/prompts/chat/versions/production", {"params": {"at": "2026-12-07T10:00:00"}}),
        ("GET", "/api/v1/models/ranker/aliases/champion", {"params": {"at": "1733500000"}}),
        ("PUT", "/api/v1/prompts/chat/aliases/production", {"json": {"version": "1.0.0", "at": "1733500000s"}}),
        ("PUT", "/api/v1/models/ranker/aliases/champion", {"json": {}}),
        ("POST", "/api/v1/prompts/chat/aliases/production/rollback", {"params": {"steps": 0}}),
        ("PUT", "/api/v1/models/ranker/aliases/Production", {"json": {"version": 1}}),
    ],
)
def test_refusals_are_400_in_the_one_error_shape(client: TestClient, method: str, path: str, kwargs: dict) -> None:
    response = client.request(method, path, **kwargs)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and error["message"] and error["hint"]
