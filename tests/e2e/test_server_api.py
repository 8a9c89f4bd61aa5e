"""The team server as a client meets it: a real uvicorn process on 127.0.0.1, called with httpx.

One server (SQLite file + local objects) is shared by the module; the
PostgreSQL + S3 test starts two more processes sharing one database and bucket.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli_inprocess import keel, keel_env
from servers import free_port

API = "/api/v1"
MAX_UPLOAD = 16 << 20


def server_cli(store: str, *args: str, objects: str | None = None) -> str:
    """``keel server ARGS --store STORE`` (in-process: see ``tests/cli_inprocess.py``; the
    ``keel server start`` and ``python -m keel.server`` processes are tested in
    ``test_server_cli.py``); its stdout."""
    extra = ["--objects", objects] if objects else []
    out = keel("server", *args, "--store", store, *extra, env=keel_env())
    assert out.returncode == 0, out.stderr
    return out.stdout


@dataclass
class Server:
    """A running ``python -m keel.server`` process."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, token: str | None = None) -> httpx.Client:
        """A client of this server (closed when it stops)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.clients.append(httpx.Client(base_url=self.url + API, headers=headers, timeout=30))
        return self.clients[-1]

    def stop(self, kill: bool = False) -> None:
        """Stop the server: SIGTERM (uvicorn's graceful stop, which lets requests in flight
        finish: a change-feed long poll for up to 5 s), or SIGKILL with ``kill``."""
        for client in self.clients:
            client.close()
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(store: str, folder: Path, objects: str | None = None, *extra: str) -> Server:
    port = free_port()
    log = folder / f"server-{port}.log"
    args = [sys.executable, "-m", "keel.server", "--store", store, "--port", str(port), "--log-level", "warning"]
    if objects:
        args += ["--objects", objects]
    with open(log, "wb") as out:
        process = subprocess.Popen([*args, *extra], stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()}")
        try:
            with httpx.Client() as probe:
                ready = probe.get(f"{server.url}{API}/health", timeout=1).status_code == 200
            if ready:
                return server
        except httpx.TransportError:
            time.sleep(0.05)
    server.stop()
    raise AssertionError(f"server did not answer within 30 s: {log.read_text()}")


def bootstrap(store: str, name: str = "root", objects: str | None = None) -> str:
    """The first admin's token, as printed once by ``keel server admin create``."""
    out = server_cli(store, "admin", "create", name, objects=objects)
    token = out.strip().splitlines()[-1]
    assert token.startswith("keel_")
    return token


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The error body, after checking it has the one shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "hint", "details"}
    assert body["error"]["message"]
    return dict(body["error"])


# -- the module's server ---------------------------------------------------------------------
@dataclass
class Team:
    server: Server
    db_file: Path
    admin: httpx.Client
    tokens: dict[str, str]

    users: dict[str, httpx.Client] = field(default_factory=dict)

    def as_user(self, name: str) -> httpx.Client:
        if name not in self.users:
            self.users[name] = self.server.client(self.tokens[name])
        return self.users[name]


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    folder = tmp_path_factory.mktemp("server")
    db_file = folder / "keel.db"
    store = f"sqlite:///{db_file}"
    root = bootstrap(store)
    server = start_server(store, folder, None, "--max-upload", str(MAX_UPLOAD))
    admin = server.client(root)
    tokens = {"root": root}
    ok(admin.post("/projects", json={"name": "alpha"}), 201)
    ok(admin.post("/projects", json={"name": "beta"}), 201)
    for name, grants in {
        "wendy": {"alpha": "writer", "*": "reader"},  # writes alpha, reads everything
        "rita": {"alpha": "reader"},  # reads alpha only
        "reg": {"@registries": "writer", "alpha": "reader"},  # writes prompts and models, reads alpha
        "pam": {"*": "writer"},  # writes everything, incl. the registries
    }.items():
        ok(admin.post("/admin/users", json={"name": name}), 201)
        tokens[name] = ok(admin.post(f"/admin/users/{name}/tokens", json={"name": "test"}), 201)["token"]
        for project, role in grants.items():
            ok(admin.put(f"/projects/{project}/grants/{name}", json={"role": role}))
    try:
        yield Team(server, db_file, admin, tokens)
    finally:
        server.stop()


# -- the API document and the error shape ---------------------------------------------------------
def test_openapi_document_lists_every_domain(team: Team) -> None:
    doc = ok(team.server.client().get("/openapi.json"))
    paths = set(doc["paths"])
    for path in (
        "/api/v1/projects",
        "/api/v1/runs",
        "/api/v1/runs/{run_id}/batch",
        "/api/v1/runs/{run_id}/metric-history",
        "/api/v1/runs/{run_id}/artifacts/{path}",
        "/api/v1/prompts/{name}/versions",
        "/api/v1/models/{name}/versions/{version}/stage",
        "/api/v1/auth/tokens",
    ):
        assert path in paths
    assert "HTTPBearer" in doc["components"]["securitySchemes"]


def test_every_error_has_one_json_shape(team: Team) -> None:
    anonymous = team.server.client()
    assert error_of(anonymous.get("/no/such/route"), 404)["code"] == "not_found"
    assert error_of(anonymous.get("/projects"), 401)["code"] == "unauthenticated"
    assert anonymous.get("/projects").headers["www-authenticate"] == "Bearer"
    assert error_of(team.server.client("keel_forged").get("/projects"), 401)["message"] == "unknown API token"
    assert error_of(team.server.client("not-even-keel").get("/projects"), 401)["code"] == "unauthenticated"
    assert error_of(team.admin.delete("/projects"), 405)["code"] == "method_not_allowed"
    invalid = error_of(team.admin.post("/runs", json={"project": "alpha", "surprise": 1}), 422)
    assert invalid["code"] == "invalid_request" and "surprise" in invalid["message"]
    assert error_of(team.admin.post("/runs", content=b"{not json", headers={"content-type": "application/json"}), 422)
    missing = error_of(team.admin.get("/runs/0123456789abcdef0123456789abcdef"), 404)
    assert missing["code"] == "not_found" and missing["hint"]
    bad_filter = error_of(team.admin.get("/runs", params={"filter": "metrics.acc >>> 1; DROP TABLE runs"}), 400)
    assert bad_filter["code"] == "invalid_filter"
    assert error_of(team.admin.post("/projects", json={"name": "alpha"}), 409)["code"] == "already_exists"
    assert error_of(team.as_user("rita").post("/runs", json={"project": "alpha"}), 403)["code"] == "forbidden"


# -- tokens -------------------------------------------------------------------------------------------
def test_token_lifecycle_create_use_expire_revoke_and_audit(team: Team) -> None:
    ok(team.admin.post("/admin/users", json={"name": "tom"}), 201)
    first = ok(team.admin.post("/admin/users/tom/tokens", json={"name": "laptop", "expires_in_days": 1}), 201)
    tom = team.server.client(first["token"])
    me = ok(tom.get("/auth/whoami"))
    assert me["user"]["name"] == "tom" and me["user"]["created_at"] > 0
    assert me["token"]["id"] == first["id"] and me["grants"] == {}

    # A token can mint another for its user, but not one that outlives it.
    assert error_of(tom.post("/auth/tokens", json={"expires_in_days": None}), 400)["code"] == "invalid_input"
    short = ok(tom.post("/auth/tokens", json={"name": "ci", "expires_in_days": 0.00001}), 201)  # ~0.9 s
    assert "token" not in ok(tom.get("/auth/tokens"))[0]
    time.sleep(1.0)
    assert (
        error_of(team.server.client(short["token"]).get("/auth/whoami"), 401)["message"] == "this API token has expired"
    )

    second = ok(tom.post("/auth/tokens", json={"name": "spare", "expires_in_days": 0.5}), 201)
    ok(tom.delete(f"/auth/tokens/{second['id']}"))
    assert "revoked" in error_of(team.server.client(second["token"]).get("/auth/whoami"), 401)["message"]
    ok(team.admin.patch("/admin/users/tom", json={"disabled": True}))
    assert "disabled" in error_of(tom.get("/auth/whoami"), 401)["message"]
    # Someone else's token: not yours to revoke.
    assert error_of(team.as_user("rita").delete(f"/auth/tokens/{first['id']}"), 403)["code"] == "forbidden"

    actions = [(e["action"], e["target"]) for e in ok(team.admin.get("/admin/audit", params={"limit": 50}))]
    for action in ("user.create", "token.create", "token.revoke", "user.disable"):
        assert (action, "tom") in actions
    assert error_of(tom.get("/admin/audit"), 401)
    assert error_of(team.as_user("pam").get("/admin/audit"), 403)["code"] == "forbidden"

    # Only the hash is stored: the secret appears nowhere in the database file.
    with sqlite3.connect(team.db_file) as conn:
        hashes = {row[0] for row in conn.execute("SELECT token_hash FROM auth_tokens")}
    assert hashlib.sha256(first["token"].encode()).hexdigest() in hashes
    assert first["token"].encode() not in team.db_file.read_bytes()


# -- roles ------------------------------------------------------------------------------------------
def test_roles_decide_who_sees_and_writes_what(team: Team) -> None:
    wendy, rita, pam = team.as_user("wendy"), team.as_user("rita"), team.as_user("pam")
    in_alpha = ok(wendy.post("/runs", json={"project": "alpha", "name": "w1"}), 201)["run_id"]
    in_beta = ok(pam.post("/runs", json={"project": "beta", "name": "p1"}), 201)["run_id"]

    # rita reads alpha, cannot write it, and cannot see beta at all.
    assert ok(rita.get(f"/runs/{in_alpha}"))["name"] == "w1"
    assert error_of(rita.post(f"/runs/{in_alpha}/batch", json={"metrics": [{"key": "x", "value": 1}]}), 403)
    assert error_of(rita.delete(f"/runs/{in_alpha}"), 403)["code"] == "forbidden"
    assert error_of(rita.get(f"/runs/{in_beta}"), 404)["code"] == "not_found"
    assert error_of(rita.get("/runs", params={"project": "beta"}), 404)["code"] == "not_found"
    assert [p["name"] for p in ok(rita.get("/projects"))] == ["alpha"]
    seen = {r["project"] for r in ok(rita.get("/runs"))["runs"]}
    assert seen == {"alpha"}
    assert error_of(rita.get("/prompts"), 403)["code"] == "forbidden"

    # wendy writes alpha, reads beta (via '*'), cannot write beta or create projects.
    assert ok(wendy.get(f"/runs/{in_beta}"))["project"] == "beta"
    assert error_of(wendy.post("/runs", json={"project": "beta"}), 403)["code"] == "forbidden"
    assert error_of(wendy.post("/projects", json={"name": "gamma"}), 403)["code"] == "forbidden"
    assert error_of(wendy.put("/projects/alpha/grants/rita", json={"role": "writer"}), 403)

    # pam creates a project and becomes its admin: she can grant roles on it, not elsewhere.
    ok(pam.post("/projects", json={"name": "gamma"}), 201)
    ok(pam.put("/projects/gamma/grants/rita", json={"role": "writer"}))
    ok(team.as_user("rita").post("/runs", json={"project": "gamma"}), 201)
    assert error_of(pam.put("/projects/gamma/grants/rita", json={"role": "owner"}), 400)["code"] == "invalid_input"
    ok(pam.delete("/projects/gamma/grants/rita"))
    assert error_of(rita.post("/runs", json={"project": "gamma"}), 404)
    audit = ok(team.admin.get("/admin/audit"))
    assert any(e["action"] == "grant.revoke" and e["actor"] == "pam" for e in audit)


# -- runs ----------------------------------------------------------------------------------------------
def test_run_create_batch_log_search_history_finish_delete(team: Team) -> None:
    wendy = team.as_user("wendy")
    ids = []
    for i in range(3):
        run = ok(wendy.post("/runs", json={"project": "alpha", "name": f"lr-{i}", "context": {"git": {"c": "x"}}}), 201)
        assert run["status"] == "running" and run["context"] == {"git": {"c": "x"}}
        ids.append(run["run_id"])
        body = {
            "params": {"lr": 0.1 * (i + 1), "model": {"name": "gpt-x", "top_k": 5}},
            "metrics": [{"key": "loss", "value": 1.0 / (step + 1 + i), "step": step} for step in range(100)]
            + [{"key": "acc", "value": 0.5 + i / 10}],
            "tags": {"team": "search"},
        }
        assert ok(wendy.post(f"/runs/{run['run_id']}/batch", json=body))["written"] == 105

    run = ok(wendy.get(f"/runs/{ids[2][:10]}"))
    assert run["params"]["model.top_k"] == 5 and run["metrics"]["acc"] == pytest.approx(0.7)
    changed = wendy.post(f"/runs/{ids[2]}/batch", json={"params": {"lr": 9}})
    assert error_of(changed, 409)["code"] == "conflict"

    history = ok(wendy.get(f"/runs/{ids[0]}/metric-history", params={"key": "loss"}))
    assert history["steps"] == list(range(100)) and history["values"][0] == 1.0
    summaries = {m["key"]: m for m in ok(wendy.get(f"/runs/{ids[0]}/metrics"))}
    assert summaries["loss"]["count"] == 100

    query = {"project": "alpha", "filter": "metrics.acc > 0.55 and tags.team = 'search'", "order_by": "metrics.acc"}
    first = ok(wendy.get("/runs", params={**query, "limit": 1}))
    assert [r["run_id"] for r in first["runs"]] == [ids[1]]
    second = ok(wendy.get("/runs", params={**query, "limit": 1, "page_token": first["next_page_token"]}))
    assert [r["run_id"] for r in second["runs"]] == [ids[2]] and second["next_page_token"] is None

    finished = ok(wendy.patch(f"/runs/{ids[0]}", json={"status": "finished"}))
    assert finished["status"] == "finished" and finished["end_time"]
    ok(wendy.delete(f"/runs/{ids[0]}"))
    listed = {r["run_id"] for r in ok(wendy.get("/runs", params={"project": "alpha", "limit": 1000}))["runs"]}
    assert ids[0] not in listed
    assert [r["run_id"] for r in ok(wendy.get("/runs", params={"project": "alpha", "deleted": "only"}))["runs"]] == [
        ids[0]
    ]
    ok(wendy.post(f"/runs/{ids[0]}/restore"))
    assert ids[0] in {r["run_id"] for r in ok(wendy.get("/runs", params={"project": "alpha"}))["runs"]}


# -- artifacts -------------------------------------------------------------------------------------
def _chunks(data: bytes, size: int = 256 << 10) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_artifacts_stream_up_and_down(team: Team) -> None:
    wendy = team.as_user("wendy")
    run_id = ok(wendy.post("/runs", json={"project": "alpha"}), 201)["run_id"]
    data = os.urandom(6 << 20)
    stored = ok(wendy.put(f"/runs/{run_id}/artifacts/model/weights.bin", content=_chunks(data)), 201)
    assert stored["size"] == len(data) and stored["path"] == "model/weights.bin"
    ok(wendy.put(f"/runs/{run_id}/artifacts/notes.txt", content=b"hello"), 201)

    listed = ok(wendy.get(f"/runs/{run_id}/artifacts", params={"prefix": "model"}))
    assert [(a["path"], a["size"]) for a in listed] == [("model/weights.bin", len(data))]
    digest = hashlib.sha256()
    with wendy.stream("GET", f"/runs/{run_id}/artifacts/model/weights.bin") as response:
        assert response.status_code == 200
        assert response.headers["x-keel-oid"] == stored["oid"]
        for chunk in response.iter_bytes():
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert team.as_user("rita").get(f"/runs/{run_id}/artifacts/notes.txt").content == b"hello"

    assert error_of(wendy.get(f"/runs/{run_id}/artifacts/nope.txt"), 404)["code"] == "not_found"
    assert error_of(team.as_user("rita").put(f"/runs/{run_id}/artifacts/x.txt", content=b"x"), 403)
    too_big = wendy.put(f"/runs/{run_id}/artifacts/big.bin", content=_chunks(b"\0" * (MAX_UPLOAD + 1)))
    assert error_of(too_big, 413)["code"] == "too_large"
    assert error_of(wendy.put(f"/runs/{run_id}/artifacts/%2E%2E/escape.txt", content=b"x"), 400)
    assert [a["path"] for a in ok(wendy.get(f"/runs/{run_id}/artifacts"))] == ["model/weights.bin", "notes.txt"]


# -- registries ---------------------------------------------------------------------------------------
def test_prompts_register_alias_load_history(team: Team) -> None:
    pam, wendy = team.as_user("pam"), team.as_user("wendy")
    body = {"template": "Answer {{ question }} briefly.", "model": "gpt-x", "changelog": "first"}
    v1 = ok(pam.post("/prompts/qa/versions", json=body), 201)
    assert v1["version"] == "1.0.0" and v1["created"] and v1["author"] == "pam"
    assert ok(pam.post("/prompts/qa/versions", json=body), 200)["created"] is False
    v2 = ok(
        pam.post("/prompts/qa/versions", json={**body, "template": "Answer {{ question }}.", "changelog": "x"}), 201
    )
    assert v2["version"] != v1["version"]

    move = ok(pam.put("/prompts/qa/aliases/production", json={"version": v1["version"], "reason": "ship"}))
    assert move["who"] == "pam" and move["new"] == v1["version"]
    assert ok(wendy.get("/prompts/qa/versions/production"))["content"]["template"] == body["template"]
    assert ok(wendy.get("/prompts/qa"))["version"] == v2["version"]
    assert [p["name"] for p in ok(wendy.get("/prompts"))] == ["qa"]
    assert len(ok(wendy.get("/prompts/qa/versions"))) == 2
    assert error_of(wendy.put("/prompts/qa/aliases/production", json={"version": v2["version"]}), 403)
    ok(pam.put("/prompts/qa/aliases/production", json={"version": v2["version"], "reason": "better"}))
    ok(pam.post("/prompts/qa/aliases/production/rollback"))
    moves = ok(wendy.get("/prompts/qa/history", params={"alias": "production"}))
    assert [m["new"] for m in moves] == [v1["version"], v2["version"], v1["version"]]
    assert error_of(wendy.get("/prompts/nope"), 404)["code"] == "not_found"


def test_models_register_stage_alias_get_history(team: Team) -> None:
    pam = team.as_user("pam")
    run_id = ok(pam.post("/runs", json={"project": "beta"}), 201)["run_id"]
    ok(pam.put(f"/runs/{run_id}/artifacts/model.pkl", content=b"weights"), 201)
    v1 = ok(pam.post("/models/ranker/versions", json={"source": f"runs:/{run_id}/model.pkl"}), 201)
    v2 = ok(pam.post("/models/ranker/versions", json={"source": "s3://elsewhere/ranker-2", "tags": {"k": "v"}}), 201)
    assert (v1["version"], v2["version"]) == (1, 2) and v1["run_id"] == run_id and v1["author"] == "pam"

    ok(pam.put("/models/ranker/versions/1/stage", json={"stage": "production", "reason": "launch"}))
    ok(pam.put("/models/ranker/aliases/champion", json={"version": 2, "reason": "a/b winner"}))
    wendy = team.as_user("wendy")
    assert ok(wendy.get("/models/ranker/stages/Production"))["version"] == 1
    assert ok(wendy.get("/models/ranker/aliases/champion"))["version"] == 2
    assert ok(wendy.get("/models/ranker/versions/2"))["tags"] == {"k": "v"}
    summary = ok(wendy.get("/models/ranker"))
    assert summary["latest_version"] == 2 and summary["aliases"] == {"champion": 2}
    assert [m["name"] for m in ok(wendy.get("/models"))] == ["ranker"]
    assert [(h["ref"], h["who"]) for h in ok(wendy.get("/models/ranker/history"))] == [
        ("stage:1", "pam"),
        ("champion", "pam"),
    ]
    assert error_of(wendy.post("/models/ranker/versions", json={"source": "x"}), 403)["code"] == "forbidden"
    # A registry writer may register models, but not link a run she cannot write.
    reg = team.as_user("reg")
    ok(reg.post("/models/other/versions", json={"source": "s3://b/other"}), 201)
    alpha_run = ok(wendy.post("/runs", json={"project": "alpha"}), 201)["run_id"]
    assert error_of(reg.post("/models/other/versions", json={"source": "x", "run_id": alpha_run}), 403)
    assert error_of(reg.post("/runs", json={"project": "alpha"}), 403)
    assert [p["name"] for p in ok(reg.get("/projects"))] == ["alpha"]
    assert error_of(wendy.get("/models/ranker/versions/9"), 404)["code"] == "not_found"


# -- PostgreSQL + S3, two processes --------------------------------------------------------------------
@pytest.mark.postgres
@pytest.mark.s3
def test_two_servers_share_postgres_and_s3(pg_url: str, s3_url: str, tmp_path: Path) -> None:
    token = bootstrap(pg_url, objects=s3_url)
    first = start_server(pg_url, tmp_path, s3_url)
    second = start_server(pg_url, tmp_path, s3_url)
    try:
        a, b = first.client(token), second.client(token)
        ok(a.post("/projects", json={"name": "shared"}), 201)
        run_id = ok(a.post("/runs", json={"project": "shared"}), 201)["run_id"]
        metrics = [{"key": "loss", "value": float(s), "step": s} for s in range(1000)]
        ok(b.post(f"/runs/{run_id}/batch", json={"metrics": metrics, "params": {"p": 1}}))
        data = os.urandom(3 << 20)
        ok(a.put(f"/runs/{run_id}/artifacts/blob.bin", content=_chunks(data)), 201)

        assert b.get(f"/runs/{run_id}/artifacts/blob.bin").content == data
        assert ok(a.get(f"/runs/{run_id}/metric-history", params={"key": "loss"}))["steps"] == list(range(1000))
        found = ok(b.get("/runs", params={"project": "shared", "filter": "params.p = 1"}))["runs"]
        assert [r["run_id"] for r in found] == [run_id]
        # A token revoked through one process is refused by the other at once.
        minted = ok(a.post("/auth/tokens", json={"name": "tmp", "expires_in_days": 1}), 201)
        ok(second.client(minted["token"]).get("/auth/whoami"))
        ok(a.delete(f"/auth/tokens/{minted['id']}"))
        assert error_of(second.client(minted["token"]).get("/auth/whoami"), 401)["code"] == "unauthenticated"
    finally:
        first.stop()
        second.stop()
