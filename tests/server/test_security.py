"""Hostile and broken requests through the ASGI app: each refused with the right status,
in the one error shape, with nothing written.

One app per module (a SQLite file and a local object folder), with small body limits:
a writer on ``alpha`` (reader everywhere else), a reader on ``alpha``, and a site admin.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from keel.core.entities import now_ms
from keel.server import create_app
from keel.services.auth import AuthStore

API = "/api/v1"
MAX_JSON = 4096
MAX_UPLOAD = 2048


@dataclass
class Site:
    client: TestClient
    tokens: dict[str, str]
    db_file: Path
    objects: Path
    auth: AuthStore
    alpha_run: str
    beta_run: str

    def as_(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def stored_objects(self) -> int:
        return sum(1 for p in self.objects.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("security")
    db_file = folder / "keel.db"
    app = create_app(f"sqlite:///{db_file}", str(folder / "objects"), max_upload=MAX_UPLOAD, max_json=MAX_JSON)
    auth = AuthStore(app.state.keel.store.db)
    tokens = {}
    for name, admin in (("root", True), ("wendy", False), ("rita", False)):
        auth.create_user(name, is_admin=admin)
        tokens[name] = auth.create_token(name, "test")[0]
    auth.grant("wendy", "alpha", "writer", "test")
    auth.grant("wendy", "*", "reader", "test")
    auth.grant("rita", "alpha", "reader", "test")
    with TestClient(app, raise_server_exceptions=False) as client:
        root = {"Authorization": f"Bearer {tokens['root']}"}
        for project in ("alpha", "beta", "gamma"):
            ok(client.post(f"{API}/projects", json={"name": project}, headers=root), 201)
        alpha = ok(client.post(f"{API}/runs", json={"project": "alpha"}, headers=root), 201)["run_id"]
        beta = ok(client.post(f"{API}/runs", json={"project": "beta"}, headers=root), 201)["run_id"]
        body = {"params": {"x": "1", "model": "a"}, "metrics": [{"key": "a", "value": 0.5}]}
        ok(client.post(f"{API}/runs/{alpha}/batch", json=body, headers=root))
        yield Site(client, tokens, db_file, folder / "objects", auth, alpha, beta)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The error body, after checking the status and the one shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "hint", "details"}, body
    assert body["error"]["message"] and body["error"]["code"]
    return dict(body["error"])


def metric_count(site: Site, run_id: str) -> int:
    summaries = ok(site.client.get(f"{API}/runs/{run_id}/metrics", headers=site.as_("root")))
    return sum(s["count"] for s in summaries)


def artifacts_of(site: Site, run_id: str) -> list[Any]:
    return list(ok(site.client.get(f"{API}/runs/{run_id}/artifacts", headers=site.as_("root"))))


# -- paths -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "%2e%2e/escape.txt",
        "a/%2e%2e/%2e%2e/escape.txt",
        "%2e%2e%2fescape.txt",
        "%2Fetc%2Fpasswd",
        "..%5c..%5cescape.txt",
        "a%5c..%5c..%5cescape.txt",
        "safe%00.txt",
        "tab%09name.txt",
    ],
)
def test_artifact_paths_that_escape_or_smuggle_are_refused_and_nothing_is_written(site: Site, path: str) -> None:
    before = site.stored_objects()
    url = f"{API}/runs/{site.alpha_run}/artifacts/{path}"
    response = site.client.put(url, content=b"payload", headers=site.as_("wendy"))
    assert error_of(response, 400)["code"] == "invalid_input"
    assert error_of(site.client.get(url, headers=site.as_("wendy")), 400)["code"] == "invalid_input"
    assert site.stored_objects() == before
    assert artifacts_of(site, site.alpha_run) == []


def test_an_absolute_artifact_path_is_refused(site: Site) -> None:
    # A double slash makes the route's path parameter start with "/".
    response = site.client.put(f"{API}/runs/{site.alpha_run}/artifacts//etc/passwd", content=b"x",
                               headers=site.as_("wendy"))  # fmt: skip
    assert error_of(response, 400)["code"] == "invalid_input"
    # A literal "../" is resolved by the client before it is sent: whatever it reaches refuses the PUT.
    response = site.client.put(f"{API}/runs/{site.alpha_run}/artifacts/../../../escape.txt", content=b"x",
                               headers=site.as_("wendy"))  # fmt: skip
    error_of(response, response.status_code)
    assert response.status_code in (400, 404, 405)
    assert artifacts_of(site, site.alpha_run) == []


# -- sizes and shapes ----------------------------------------------------------------------------
def test_a_json_body_over_the_limit_is_413_by_length_or_while_streaming(site: Site) -> None:
    url = f"{API}/runs/{site.alpha_run}/batch"
    metrics = [{"key": "big", "value": float(i), "step": i} for i in range(200)]
    assert error_of(site.client.post(url, json={"metrics": metrics}, headers=site.as_("wendy")), 413)["code"] == (
        "too_large"
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted as it arrives
        yield b'{"metrics": ['
        for i in range(200):
            yield b'{"key": "big", "value": 1.0, "step": %d},' % i
        yield b'{"key": "big", "value": 1.0}]}'

    headers = {**site.as_("wendy"), "Content-Type": "application/json"}
    assert error_of(site.client.post(url, content=chunks(), headers=headers), 413)["code"] == "too_large"
    # A pydantic-validated route too (FastAPI reads those bodies whole).
    big_run = {"project": "alpha", "tags": {f"t{i}": "v" * 40 for i in range(100)}}
    assert error_of(site.client.post(f"{API}/runs", json=big_run, headers=site.as_("wendy")), 413)
    assert all(s["key"] != "big" for s in ok(site.client.get(f"{API}/runs/{site.alpha_run}/metrics",
                                                             headers=site.as_("wendy"))))  # fmt: skip


def test_an_artifact_body_is_bounded_by_max_upload_not_by_the_json_limit(site: Site) -> None:
    url = f"{API}/runs/{site.alpha_run}/artifacts/blob.bin"
    response = site.client.put(url, content=b"x" * (MAX_UPLOAD + 1), headers=site.as_("wendy"))
    assert error_of(response, 413)["code"] == "too_large"
    assert artifacts_of(site, site.alpha_run) == []


@pytest.mark.parametrize(
    "body",
    [b'{"metrics": [', b"{'metrics': []}", b"[1, 2]", b'"text"', b"", b'{"metrics": [{"key": "a", "value": 1}'],
)
def test_malformed_json_is_422_in_the_one_shape(site: Site, body: bytes) -> None:
    headers = {**site.as_("wendy"), "Content-Type": "application/json"}
    for url in (f"{API}/runs/{site.alpha_run}/batch", f"{API}/runs"):
        assert error_of(site.client.post(url, content=body, headers=headers), 422)["code"] == "invalid_request"


@pytest.mark.parametrize(
    "body",
    [
        {"metrics": [], "sql": "DROP TABLE runs"},
        {"metrics": [{"key": "a", "value": 1.0, "unit": "s"}]},
        {"metrics": {"keys": ["a"], "values": [1.0], "units": ["s"]}},
        {"metrics": {"keys": ["a", "b"], "values": [1.0]}},
        {"metrics": [{"key": "a", "value": "high"}]},
        {"metrics": [{"key": ["a"], "value": 1.0}]},
        {"metrics": [{"value": 1.0}]},
        {"tags": {"t": 1}},
        {"overwrite_params": "yes"},
    ],
)
def test_unknown_fields_and_wrong_types_are_422_and_nothing_is_written(site: Site, body: dict[str, Any]) -> None:
    before = metric_count(site, site.alpha_run)
    response = site.client.post(f"{API}/runs/{site.alpha_run}/batch", json=body, headers=site.as_("wendy"))
    assert error_of(response, 422)["code"] == "invalid_request"
    assert metric_count(site, site.alpha_run) == before


def test_unknown_fields_on_other_routes_are_422(site: Site) -> None:
    response = site.client.post(f"{API}/runs", json={"project": "alpha", "owner": "me"}, headers=site.as_("wendy"))
    assert "owner" in error_of(response, 422)["message"]
    response = site.client.patch(f"{API}/runs/{site.alpha_run}", json={"status": "finished", "x": 1},
                                 headers=site.as_("wendy"))  # fmt: skip
    assert error_of(response, 422)["code"] == "invalid_request"


# -- filters ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("filter_", "order_by"),
    [
        ("params.x = '1' OR 1=1 --", None),
        ("params.x = '1'; DROP TABLE runs; --", None),
        ('metrics."a; DROP TABLE runs" > 0', None),
        ("params.x = '' OR ''=''", None),
        ("params.x = '1' UNION SELECT * FROM auth_tokens --", None),
        ("metrics.a > 0", "metrics.a; DROP TABLE runs"),
        ("metrics.a > 0", "(SELECT token_hash FROM auth_tokens)"),
    ],
)
def test_filters_that_try_injection_are_parsed_or_refused_never_run(
    site: Site, filter_: str, order_by: str | None
) -> None:
    params: dict[str, Any] = {"project": "alpha", "filter": filter_}
    if order_by:
        params["order_by"] = order_by
    response = site.client.get(f"{API}/runs", params=params, headers=site.as_("wendy"))
    if response.status_code == 200:
        # Parsed as data: the literal never matches, so no run comes back.
        assert response.json()["runs"] == []
    else:
        assert error_of(response, 400)["code"] in ("invalid_filter", "invalid_input")
    with sqlite3.connect(site.db_file) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"runs", "auth_tokens", "auth_users"} <= tables
        assert conn.execute("SELECT COUNT(*) FROM auth_tokens").fetchone()[0] >= 3
    # The real filter still finds the real run.
    found = ok(site.client.get(f"{API}/runs", params={"project": "alpha", "filter": "params.x = '1'"},
                               headers=site.as_("wendy")))  # fmt: skip
    assert [r["run_id"] for r in found["runs"]] == [site.alpha_run]


def test_a_project_name_that_tries_injection_is_just_a_name(site: Site) -> None:
    response = site.client.get(f"{API}/runs", params={"project": "alpha' OR '1'='1"}, headers=site.as_("wendy"))
    assert response.status_code in (400, 404)
    error_of(response, response.status_code)


# -- tokens -------------------------------------------------------------------------------------------
def _other_servers_token(tmp_path: Path) -> str:
    other = create_app(f"sqlite:///{tmp_path / 'other.db'}", str(tmp_path / "objects"))
    auth = AuthStore(other.state.keel.store.db)
    auth.create_user("root", is_admin=True)
    token = auth.create_token("root", "elsewhere")[0]
    other.state.keel.store.close()
    return token


def test_expired_revoked_and_forged_tokens_are_401(site: Site, tmp_path: Path) -> None:
    expiring, _ = site.auth.create_token("wendy", "short", now_ms() + 50)
    revoked, info = site.auth.create_token("wendy", "revoked")
    site.auth.revoke_token(info.id, "test")
    real = site.tokens["wendy"]
    forged = {
        "random": "keel_" + "A" * 43,
        "right prefix, wrong secret": real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB"),
        "another server's": _other_servers_token(tmp_path),
        "no prefix": real.removeprefix("keel_"),
        "truncated": real[:-1],
    }
    time.sleep(0.1)
    forged["expired"] = expiring
    forged["revoked"] = revoked
    for what, token in forged.items():
        for method, url in (("GET", f"{API}/runs/{site.alpha_run}"), ("POST", f"{API}/runs/{site.alpha_run}/batch")):
            response = site.client.request(method, url, json={"metrics": [{"key": "f", "value": 1}]},
                                           headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            assert error_of(response, 401)["code"] == "unauthenticated", what
            assert response.headers["www-authenticate"] == "Bearer"
    for header in ({"Authorization": f"Basic {real}"}, {"Authorization": "Bearer "}, {"X-Token": real}):
        error_of(site.client.get(f"{API}/runs/{site.alpha_run}", headers=header), 401)
    assert all(s["key"] != "f" for s in ok(site.client.get(f"{API}/runs/{site.alpha_run}/metrics",
                                                           headers=site.as_("root"))))  # fmt: skip


# -- roles ---------------------------------------------------------------------------------------------
def test_a_writer_on_one_project_cannot_touch_another(site: Site) -> None:
    wendy = site.as_("wendy")  # writer on alpha, reader on everything
    beta = site.beta_run
    attempts = [
        site.client.post(f"{API}/runs", json={"project": "beta"}, headers=wendy),
        site.client.post(f"{API}/runs/{beta}/batch", json={"metrics": [{"key": "w", "value": 1}]}, headers=wendy),
        site.client.put(f"{API}/runs/{beta}/artifacts/w.txt", content=b"w", headers=wendy),
        site.client.patch(f"{API}/runs/{beta}", json={"status": "killed"}, headers=wendy),
        site.client.delete(f"{API}/runs/{beta}", headers=wendy),
    ]
    for response in attempts:
        assert error_of(response, 403)["code"] == "forbidden"
    assert metric_count(site, beta) == 0 and artifacts_of(site, beta) == []
    run = ok(site.client.get(f"{API}/runs/{beta}", headers=site.as_("root")))
    assert run["status"] == "running" and not run.get("deleted")


def test_a_user_with_no_role_on_a_project_gets_404_and_writes_nothing(site: Site) -> None:
    rita = site.as_("rita")  # reader on alpha only
    beta = site.beta_run
    assert error_of(site.client.get(f"{API}/runs/{beta}", headers=rita), 404)["code"] == "not_found"
    response = site.client.post(f"{API}/runs/{beta}/batch", json={"metrics": [{"key": "r", "value": 1}]}, headers=rita)
    error_of(response, 404)
    error_of(site.client.put(f"{API}/runs/{beta}/artifacts/r.txt", content=b"r", headers=rita), 404)
    error_of(site.client.post(f"{API}/runs", json={"project": "gamma"}, headers=rita), 404)
    assert metric_count(site, beta) == 0 and artifacts_of(site, beta) == []


def test_a_reader_cannot_write(site: Site) -> None:
    rita = site.as_("rita")  # reader on alpha
    alpha = site.alpha_run
    before = metric_count(site, alpha)
    attempts = [
        site.client.post(f"{API}/runs", json={"project": "alpha"}, headers=rita),
        site.client.post(f"{API}/runs/{alpha}/batch", json={"metrics": {"keys": ["r"], "values": [1]}}, headers=rita),
        site.client.put(f"{API}/runs/{alpha}/artifacts/r.txt", content=b"r", headers=rita),
        site.client.patch(f"{API}/runs/{alpha}", json={"status": "failed"}, headers=rita),
        site.client.delete(f"{API}/runs/{alpha}", headers=rita),
    ]
    for response in attempts:
        assert error_of(response, 403)["code"] == "forbidden"
    assert metric_count(site, alpha) == before and artifacts_of(site, alpha) == []
