"""gc beside writers and gc killed mid-way, on real stores.

- A second process logs runs with artifacts and recorded LLM calls while gc runs over and over;
  some of its artifacts have the same bytes as old, unreferenced objects gc is about to delete
  (the put finds them stored and freshens them). Afterwards every artifact and recording of
  every run reads back, and ``keel verify`` passes.
- ``keel gc`` killed with SIGKILL while it deletes leaves a store ``keel verify`` passes; the
  next gc finishes the job.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import keel
from keel.core.hashing import hash_bytes
from keel.objects import LocalObjectStore
from keel.sdk import llm
from keel.sdk import session as sessions
from keel.services import gc
from keel.services.verify import verify_store
from keel.services.workspace import Store

GRACE_S = 2.0
_WRITER = r"""
import json, sys
import openai
import keel
from keel.integrations.standin import StandInServer
from keel.sdk import llm
from keel.objects import s3

s3.FRESH_ENOUGH_S = 0.0  # S3 copies objects found stored only past ten minutes: gc's grace here is 2 s
shared = [line.encode() for line in json.loads(sys.argv[1])]
runs = []
with StandInServer() as server:
    client = openai.OpenAI(base_url=server.base_url, api_key="standin", max_retries=0)
    wrapped = llm.wrap(client, trace=False)
    for i in range(int(sys.argv[2])):
        with keel.start_run(project="writer") as run:
            with open(f"new-{i}.txt", "wb") as fh:
                fh.write(b"new content %d" % i)
            run.log_artifact(f"new-{i}.txt")
            with open(f"old-{i}.txt", "wb") as fh:  # the bytes of an old object nothing references
                fh.write(shared[i % len(shared)])
            run.log_artifact(f"old-{i}.txt")
            wrapped.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": f"{i} + 1?"}])
        runs.append(run.id)
    llm.flush()
    client.close()
print(json.dumps(runs))
"""


def _store() -> Store:
    return sessions.get_session().service.store  # type: ignore[no-any-return]


def _old_junk(store: Store, n: int) -> list[bytes]:
    """``n`` objects nothing references, older than the grace period."""
    contents = [f"old unreferenced object {i}".encode() for i in range(n)]
    oids = [store.objects.put_bytes(c) for c in contents]
    if isinstance(store.objects, LocalObjectStore):
        past = time.time() - 3600
        for oid in oids:
            os.utime(store.objects.path(oid), (past, past))
    else:
        time.sleep(GRACE_S + 1.1)  # S3 objects cannot be back-dated: let them age
    return contents


def test_gc_beside_a_process_writing_runs_artifacts_and_recordings_loses_nothing(ws: Path) -> None:
    with keel.start_run(project="before") as before:
        before.log_text("kept", "logged before gc")
    store = _store()
    junk = _old_junk(store, 20)
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, json.dumps([c.decode() for c in junk[:6]]), "6"],
        cwd=ws,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    removed = 0
    passes = 0
    while writer.poll() is None or passes < 2:
        removed += gc.collect(store, grace_s=GRACE_S).removed
        passes += 1
    out, err = writer.communicate()
    assert writer.returncode == 0, err.decode()[-2000:]
    assert removed >= 14 and passes >= 2  # the 14 old objects no writer touched went
    runs = json.loads(out)
    client = keel.Client()
    for run_id in [*runs, before.id]:
        for art in client.list_artifacts(run_id):
            assert hash_bytes(client.read_artifact(run_id, art.path)) == art.oid
    for run_id in runs:
        calls = llm.calls(run=run_id)
        assert len(calls) == 1
        store.objects.get_bytes(calls[0].oid)
    for content in junk[:6]:  # re-logged by the writer: freshened, then referenced
        assert store.objects.exists(hash_bytes(content))
    assert verify_store(store, database=False).ok


@pytest.fixture
def local_ws(tmp_path: Path, workspace_template: Path) -> Path:
    shutil.copytree(workspace_template, tmp_path / ".keel")
    yield tmp_path
    sessions.reset()


def test_gc_killed_while_deleting_leaves_a_store_verify_passes(local_ws: Path) -> None:
    with keel.start_run(project="kept") as run:
        for i in range(20):
            run.log_text(f"t{i}", f"referenced {i}")
    objects = LocalObjectStore(local_ws / ".keel" / "objects")
    referenced = sum(1 for _ in objects.iter_objects())
    past = time.time() - 3600
    n = 4000
    for fan in range(256):
        os.makedirs(objects.root / f"{fan:02x}", exist_ok=True)
    for i in range(n):  # unreferenced objects, written straight into the store's layout
        data = b"junk %d" % i
        path = str(objects.path(hash_bytes(data)))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        os.write(fd, data)
        os.close(fd)
        os.utime(path, (past, past))
    first_fan = objects.root / "00"
    keel_cli = [sys.executable, "-m", "keel", "gc", "--grace", "1m"]
    proc = subprocess.Popen(keel_cli, cwd=local_ws, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        if first_fan.exists() and not os.listdir(first_fan):  # it has begun deleting
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "gc finished before it could be killed: make the store bigger"
    left = sum(1 for _ in objects.iter_objects())
    assert referenced < left < n + referenced  # it was killed part-way
    verified = subprocess.run([sys.executable, "-m", "keel", "verify"], cwd=local_ws, capture_output=True)
    assert verified.returncode == 0, verified.stdout.decode()[-2000:]
    client = keel.Client()
    assert [client.text(run.id, f"t{i}") for i in range(20)] == [f"referenced {i}" for i in range(20)]
    report = gc.collect(_store(), grace_s=60)  # the next gc finishes the job
    assert report.removed == left - referenced + report.restored  # (one caught between rename and unlink is put back)
    assert sum(1 for _ in objects.iter_objects()) == referenced
    assert not [name for name in os.listdir(objects.tmp_folder()) if name.startswith("gc-")]
