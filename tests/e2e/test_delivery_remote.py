"""Delivery against real servers (issue 25): what was logged is what is stored.

- a keel server (uvicorn, SQLite store) killed with SIGKILL and started again on the same
  port while a client logs metrics and conversations in remote mode;
- a client that ends while the server is down: one line names the spool
  (``KEEL_SPOOL_DIR``), ``keel sync --status`` shows it, ``keel sync`` delivers it;
- a write batch sent twice with one id (a retry after a lost reply) is stored once;
- a FastAPI app under ``uvicorn --workers 2``, SIGTERM while requests are served: every
  conversation a request logged before its answer is stored.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from test_remote_cli import _users
from test_server_api import API, Server, start_server

from keel.core.batch import WriteBatch
from keel.sdk.remote import wire_codec
from keel.services.conversations import ConversationService
from keel.services.tracking import TrackingService
from keel.services.workspace import open_store
from servers import free_port

KEEL = Path(sys.executable).with_name("keel")
UVICORN = Path(sys.executable).with_name("uvicorn")


@dataclass
class Site:
    folder: Path
    store: str
    objects: str
    token: str
    server: Server

    @property
    def port(self) -> str:
        return self.server.url.rsplit(":", 1)[1]

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        env.update(
            KEEL_URI=self.server.url,
            KEEL_TOKEN=self.token,
            KEEL_CONFIG_DIR=str(self.folder / "cfg"),
            KEEL_SPOOL_DIR=str(self.folder / "spool"),
        )
        env.update(extra)
        return env

    def kill(self) -> None:
        self.server.process.kill()
        self.server.process.wait()

    def restart(self) -> None:
        """The server again, on the same port (as a redeploy would)."""
        log = self.folder / f"server-{time.monotonic_ns()}.log"
        args = [sys.executable, "-m", "keel.server", "--store", self.store, "--objects", self.objects]
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [*args, "--port", self.port, "--log-level", "warning"], stdout=out, stderr=subprocess.STDOUT
            )
        self.server = Server(self.server.url, process, log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.server.url}{API}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError(f"the server did not start again: {log.read_text()}")

    def stored(self, run_id: str) -> tuple[list[int], str, int]:
        store = open_store(self.store, self.objects, cached=False)
        try:
            tracking = TrackingService(store)
            steps = [m.step for m in tracking.metric_history(run_id, "m")]
            return steps, tracking.get_run(run_id).status, ConversationService(store).count()
        finally:
            store.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    store, objects = f"sqlite:///{tmp_path / 'server.db'}", str(tmp_path / "server-objects")
    tokens = _users(store, objects, {})
    server = start_server(store, tmp_path, objects)
    client = tmp_path / "client"
    client.mkdir()
    found = Site(tmp_path, store, objects, tokens["root"], server)
    try:
        yield found
    finally:
        found.server.stop()


LOGGER = """
import sys, time, keel
run = keel.start_run(project="remote", name="through a restart")
print(run.id, flush=True)
step, slowest = 0, 0.0
started = time.monotonic()
while time.monotonic() - started < float(sys.argv[1]):
    for _ in range(100):
        begin = time.perf_counter()
        run.log_metric("m", float(step), step=step)
        keel.conversations.log(conversation_id=f"c{step}", messages=[{"role": "user", "content": "hi"}])
        slowest = max(slowest, time.perf_counter() - begin)
        step += 1
    time.sleep(0.005)
run.finish()
keel.conversations.flush()
print(step, round(slowest, 4), flush=True)
"""


def test_a_server_killed_and_restarted_mid_logging_loses_nothing(site: Site) -> None:
    client = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(LOGGER), "7"],
        cwd=site.folder / "client",
        env=site.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert client.stdout is not None
    run_id = client.stdout.readline().strip()
    time.sleep(1.5)
    site.kill()  # a crash: nothing drained, connections reset
    time.sleep(2.5)
    site.restart()
    out, err = client.communicate(timeout=60)
    assert client.returncode == 0, err
    logged, slowest = out.split()
    assert float(slowest) < 0.2
    steps, status, conversations = site.stored(run_id)
    assert steps == list(range(int(logged))) and conversations == int(logged)
    assert status == "finished"
    assert not list((site.folder / "spool").rglob("*.seg"))  # all delivered: nothing left behind


ENDS_WHILE_DOWN = """
import keel
run = keel.start_run(project="remote", name="ends while the server is down")
print(run.id, flush=True)
input()  # the test stops the server
for step in range(3_000):
    run.log_metric("m", float(step), step=step)
    keel.conversations.log(conversation_id=f"c{step}", messages=[{"role": "user", "content": "hi"}])
"""


def test_a_client_ending_while_the_server_is_down_leaves_a_spool_that_keel_sync_delivers(site: Site) -> None:
    client = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(ENDS_WHILE_DOWN)],
        cwd=site.folder / "client",
        env=site.env(KEEL_FLUSH_TIMEOUT="1"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert client.stdout is not None and client.stdin is not None
    run_id = client.stdout.readline().strip()
    site.kill()
    started = time.monotonic()
    _, err = client.communicate("\n", timeout=60)
    assert time.monotonic() - started < 1 + 5  # the exit deadline, plus start-up and one connect
    assert client.returncode == 0, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("keel: 6,002 logged records are spooled in ") and "`keel sync`" in line, err
    assert str(site.folder / "spool") in line
    env = site.env()
    status = subprocess.run(
        [str(KEEL), "sync", "--status", "--json"], cwd=site.folder / "client", env=env, capture_output=True, text=True
    )
    waiting = {entry["stream"]: entry["rows"] for entry in json.loads(status.stdout)}
    assert waiting == {"runs": 3_002, "conversations": 3_000}
    site.restart()
    synced = subprocess.run(
        [str(KEEL), "sync", "--json"], cwd=site.folder / "client", env=env, capture_output=True, text=True, timeout=60
    )
    assert synced.returncode == 0, synced.stdout + synced.stderr
    report = json.loads(synced.stdout)
    assert report["delivered"] == {"runs": 3_002, "conversations": 3_000} and report["complete"]
    steps, status_, conversations = site.stored(run_id)
    assert steps == list(range(3_000)) and conversations == 3_000 and status_ == "finished"


def test_a_batch_sent_twice_with_one_id_is_stored_once(site: Site) -> None:
    run_id = "b" * 32
    batch = WriteBatch(new_runs=[(run_id, "remote", "twice", 1, None, "{}")], metrics=[(run_id, "m", 1.0, 0, 1)])
    codec = wire_codec()
    body = {"args": codec.encode([batch]), "kwargs": codec.encode({"batch_id": "retry-1"})}
    with httpx.Client(headers={"Authorization": f"Bearer {site.token}"}, timeout=30) as http:
        for _ in range(2):  # the second is a retry whose first attempt committed
            reply = http.post(f"{site.server.url}{API}/svc/tracking/write_batch", json=body)
            assert reply.status_code == 200, reply.text
        refused = http.post(
            f"{site.server.url}{API}/svc/tracking/write_batch",
            json={"args": codec.encode([batch]), "kwargs": {"batch_id": "x" * 101}},
        )
    assert refused.status_code == 400 and "batch id" in refused.json()["error"]["message"]
    steps, status, _ = site.stored(run_id)
    assert steps == [0] and status == "running"


# -- a multi-worker app ------------------------------------------------------------------------------
APP = """
import keel
from fastapi import FastAPI

app = FastAPI()


@app.get("/async/{n}")
async def chat_async(n: int):
    keel.conversations.log(conversation_id=f"a{n}", messages=[{"role": "user", "content": f"hi {n}"}])
    return {"ok": n}


@app.get("/sync/{n}")
def chat_sync(n: int):
    keel.conversations.log(conversation_id=f"s{n}", messages=[{"role": "user", "content": f"hi {n}"}])
    return {"ok": n}
"""


def test_sigterm_to_a_multi_worker_app_loses_no_logged_record(tmp_path: Path) -> None:
    from keel.sdk.workspace import init_workspace

    init_workspace(tmp_path)
    (tmp_path / "app.py").write_text(APP)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    with open(tmp_path / "uvicorn.log", "wb") as log:
        server = subprocess.Popen(
            [str(UVICORN), "app:app", "--port", str(port), "--workers", "2", "--log-level", "warning"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/async/-1", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    answered: list[str] = ["a-1"]
    stop = threading.Event()

    def load(kind: str, first: int) -> None:
        n = first
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                try:
                    if http.get(f"{base}/{kind}/{n}").status_code == 200:
                        answered.append(f"{kind[0]}{n}")
                except httpx.HTTPError:
                    time.sleep(0.01)
                n += 1

    threads = [threading.Thread(target=load, args=(k, i * 1_000_000)) for i, k in enumerate(["async", "sync"] * 2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2.5)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        if server.poll() is None:
            server.kill()
            server.wait()
    assert len(answered) > 200
    store = open_store(f"sqlite:///{tmp_path / '.keel' / 'keel.db'}", str(tmp_path / ".keel" / "objects"), cached=False)
    try:
        stored = {c.conversation_id for c in ConversationService(store).search(limit=None)}
    finally:
        store.close()
    missing = set(answered) - stored
    assert not missing, f"{len(missing)} of {len(answered)} answered requests lost their record"
