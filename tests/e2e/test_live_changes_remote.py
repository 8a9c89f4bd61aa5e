"""Live caches against a real keel server (issue 25): the change feed, and changes reaching a
running remote process within 2 s, across a server restart too.

One uvicorn server (SQLite file + local objects) per test; the sdk runs with
``KEEL_URI=http://...`` in this process and in a serving subprocess.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_server_api import Server, start_server

import keel
from keel.sdk import ab, flags, live
from keel.sdk import session as sessions
from keel.services.auth import AuthStore
from keel.services.workspace import open_store

DEADLINE = 2.0

SERVING = """
import json, sys, time
import keel
from keel.sdk import ab, flags

client = flags.client()
first = keel.prompts.load("chat@production").version
assert first == "1.0.0" and client.is_enabled("kill_me", user_id="u1") and ab.assign("exp", user_id="u1")
print("ready", flush=True)
seen, worst, calls = {}, 0.0, 0
deadline = time.time() + float(sys.argv[1])
while time.time() < deadline and len(seen) < 3:
    started = time.perf_counter()
    version = keel.prompts.load("chat@production").version
    enabled = client.is_enabled("kill_me", user_id="u1")
    assigned = ab.assign("exp", user_id="u1")
    worst = max(worst, time.perf_counter() - started)
    calls += 1
    now = time.time()
    if version != first:
        seen.setdefault("prompt", now)
    if not enabled:
        seen.setdefault("flag", now)
    if assigned is None:
        seen.setdefault("experiment", now)
    time.sleep(0.002)
print(json.dumps({"seen": seen, "worst": worst, "calls": calls}), flush=True)
"""


@dataclass
class Remote:
    server: Server
    folder: Path
    store: str
    objects: str
    tokens: dict[str, str]

    def env(self, user: str = "root") -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        env.update(KEEL_URI=self.server.url, KEEL_TOKEN=self.tokens[user], KEEL_CONFIG_DIR=str(self.folder / "cfg"))
        return env

    def get(self, path: str, user: str = "root", **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        headers.update(kwargs.pop("headers", {}))
        with httpx.Client(headers=headers, timeout=30) as client:
            return client.get(f"{self.server.url}/api/v1{path}", **kwargs)


def _users(database: str, objects: str) -> dict[str, str]:
    store = open_store(database, objects, cached=False)  # creates the schema, as the server would
    try:
        auth = AuthStore(store.db)
        auth.create_user("root", is_admin=True)
        tokens = {"root": auth.create_token("root", "test")[0]}
        auth.create_user("pat")  # a reader of one project only: not of the registries
        auth.grant("pat", "p1", "reader", "root")
        tokens["pat"] = auth.create_token("pat", "test")[0]
        return tokens
    finally:
        store.close()


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Remote]:
    store, objects = f"sqlite:///{tmp_path / 'server.db'}", str(tmp_path / "server-objects")
    tokens = _users(store, objects)
    server = start_server(store, tmp_path, objects)
    found = Remote(server, tmp_path, store, objects, tokens)
    for key, value in found.env().items():
        if key.startswith("KEEL_"):
            monkeypatch.setenv(key, value)
    try:
        yield found
    finally:
        sessions.reset()
        # A graceful stop would wait for the long polls still in flight (up to 5 s): nothing
        # here is about the server's own stop, so it is killed.
        found.server.stop(kill=True)


def _setup() -> None:
    keel.prompts.register("chat", "v1 {{q}}", changelog="v1")
    keel.prompts.register("chat", "v2 {{q}}", changelog="v2")
    keel.prompts.set_alias("chat", "production", "1.0.0")
    flags.set("kill_me", rollout=100)
    ab.create("exp", [{"name": "a"}, {"name": "b"}], weights={"a": 0.5, "b": 0.5})
    ab.start("exp")


def _serving(remote: Remote, seconds: float = 30) -> subprocess.Popen[str]:
    script = remote.folder / "serve_app.py"
    script.write_text(textwrap.dedent(SERVING))
    process = subprocess.Popen(
        [sys.executable, str(script), str(seconds)],
        cwd=remote.folder,
        env=remote.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if line != "ready":
        process.kill()
        _out, err = process.communicate()
        raise AssertionError(f"the serving process did not start: {line}{err}")
    return process


def _change_all() -> dict[str, float]:
    changed = {}
    keel.prompts.set_alias("chat", "production", "1.0.1", reason="roll forward")
    changed["prompt"] = time.time()
    flags.kill("kill_me", reason="incident")
    changed["flag"] = time.time()
    ab.stop("exp")
    changed["experiment"] = time.time()
    return changed


def _lags(process: subprocess.Popen[str], changed: dict[str, float]) -> tuple[dict[str, float], dict[str, Any]]:
    try:
        out, err = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    lags = {kind: result["seen"][kind] - changed[kind] for kind in changed if kind in result["seen"]}
    assert set(lags) == set(changed), result
    return lags, result


def test_the_change_feed(remote: Remote) -> None:
    first = remote.get("/changes")
    assert first.status_code == 200, first.text
    body = first.json()
    assert {"prompt", "model", "flag", "experiment"} <= set(body["counters"])
    assert first.headers["etag"] == f'"{body["token"]}"'
    assert remote.get("/changes", headers={"If-None-Match": first.headers["etag"]}).status_code == 304
    started = time.monotonic()
    assert remote.get("/changes", params={"since": body["token"], "wait": 0.6}).status_code == 304
    assert time.monotonic() - started >= 0.5  # it waited

    replies: list[httpx.Response] = []
    waiting = threading.Thread(
        target=lambda: replies.append(remote.get("/changes", params={"since": body["token"], "wait": 15}))
    )
    waiting.start()
    time.sleep(0.5)
    with httpx.Client(headers={"Authorization": f"Bearer {remote.tokens['root']}"}, timeout=30) as client:
        moved_at = time.monotonic()
        made = client.post(
            f"{remote.server.url}/api/v1/prompts/chat/versions", json={"template": "hi", "changelog": "x"}
        )
        assert made.status_code == 201, made.text
    waiting.join(20)
    assert replies and replies[0].status_code == 200
    assert time.monotonic() - moved_at < 1.5  # the long poll answered at the change
    after = replies[0].json()
    assert after["counters"]["prompt"] > body["counters"]["prompt"] and after["token"] != body["token"]

    assert remote.get("/changes", user="").status_code == 401
    assert remote.get("/changes", user="pat").status_code == 403  # not a reader of the registries
    for bad in ("nan", "-1", "inf"):
        assert remote.get("/changes", params={"wait": bad}).status_code == 400, bad
    assert remote.get("/changes", params={"since": "x" * 100}).status_code == 400
    assert math.isfinite(float(remote.get("/changes").json()["counters"]["prompt"]))


def test_changes_reach_a_remote_process_within_2_seconds(remote: Remote) -> None:
    _setup()
    process = _serving(remote)
    time.sleep(1.0)
    changed = _change_all()
    lags, result = _lags(process, changed)
    assert max(lags.values()) < DEADLINE, lags
    assert result["worst"] < 0.05, result


def test_a_server_restart_serves_stale_then_changes_arrive(remote: Remote) -> None:
    _setup()
    process = _serving(remote, seconds=60)
    time.sleep(1.0)
    port = int(remote.server.url.rsplit(":", 1)[1])
    remote.server.stop()  # the app keeps serving from its caches
    time.sleep(3.0)
    remote.server = _start_on(remote, port)
    time.sleep(live.MAX_BACKOFF + 1.0)  # the feed reconnects
    changed = _change_all()
    lags, result = _lags(process, changed)
    assert max(lags.values()) < DEADLINE, lags
    assert result["worst"] < 0.05, result  # the request path never waited on the server


def _start_on(remote: Remote, port: int) -> Server:
    """The server again, on the port it had (``start_server`` picks a new one)."""
    args = [sys.executable, "-m", "keel.server", "--store", remote.store, "--objects", remote.objects]
    log = remote.folder / f"server-{port}-again.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([*args, "--port", str(port), "--log-level", "warning"], stdout=out, stderr=out)
    server = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with httpx.Client() as probe:
                if probe.get(f"{server.url}/api/v1/health", timeout=1).status_code == 200:
                    return server
        except httpx.TransportError:
            time.sleep(0.05)
    server.stop()
    raise AssertionError(f"the server did not come back: {log.read_text()}")
