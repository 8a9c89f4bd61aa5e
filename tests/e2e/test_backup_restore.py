"""``keel backup DEST`` / ``keel restore SRC`` on a SQLite workspace (issue 26), with real processes.

The backup is taken by the ``keel`` command (run in-process: see ``tests/cli_inprocess.py``)
while another process keeps logging to the same
workspace (metrics in one transaction per step, a new artifact every few steps). The backup
must be a consistent snapshot (every step it holds has all its metrics; every object its
rows name is in it), the writer must not notice, and a workspace restored from it must pass
``keel verify`` and hold every run, metric, artifact and prompt of the seed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backup_helpers import check_restored, seed
from cli_inprocess import Result, keel
from keel._version import __version__
from keel.errors import AlreadyExists, InvalidInput
from keel.services.backup import backup_store, restore_backup
from keel.services.tracking import TrackingService
from keel.services.workspace import init_workspace, open_store

METRICS = 5  # metrics the writer logs per step, in one transaction

WRITER = """
import os, sys, time
from keel.core.batch import WriteBatch
from keel.core.entities import now_ms
from keel.services.tracking import TrackingService
from keel.services.workspace import open_store

folder, progress, stop = sys.argv[1], sys.argv[2], sys.argv[3]
store = open_store(start=folder, cached=False)
tracking = TrackingService(store)
run = tracking.start_run("live", "writer").run_id
step = 0
deadline = time.monotonic() + 60
while not os.path.exists(stop) and time.monotonic() < deadline:
    ts = now_ms()
    batch = WriteBatch(metrics=[(run, f"m{k}", float(step), step, ts) for k in range(METRICS)])
    if step % 5 == 0:
        data = os.urandom(50_000)
        batch.artifacts = [(run, f"live/{step}.bin", tracking.objects.put_bytes(data), len(data), "file", ts)]
    tracking.write_batch(batch)
    step += 1
    with open(progress + ".tmp", "w") as out:
        out.write(f"{run} {step}")
    os.replace(progress + ".tmp", progress)
    time.sleep(0.002)
store.close()
""".replace("METRICS", str(METRICS))


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}


def _keel(cwd: Path, *args: str) -> Result:
    return keel(*args, cwd=cwd, env=_env())


def _progress(path: Path) -> tuple[str, int]:
    try:
        run, steps = path.read_text().split()
    except (FileNotFoundError, ValueError):
        return "", 0
    return run, int(steps)


def _wait_steps(path: Path, at_least: int, writer: subprocess.Popen[bytes]) -> tuple[str, int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run, steps = _progress(path)
        if steps >= at_least:
            return run, steps
        assert writer.poll() is None, "the writer exited early"
        time.sleep(0.02)
    raise AssertionError(f"the writer did not reach {at_least} steps")


def test_backup_while_a_writer_logs_then_restore_and_verify(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    init_workspace(workspace)
    store = open_store(start=workspace, cached=False)
    try:
        seeded = seed(store)
    finally:
        store.close()

    progress, stop = tmp_path / "progress", tmp_path / "stop"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    log = open(tmp_path / "writer.log", "wb")  # noqa: SIM115 - closed below
    writer = subprocess.Popen(
        [sys.executable, str(script), str(workspace), str(progress), str(stop)], env=_env(), stdout=log, stderr=log
    )
    try:
        _wait_steps(progress, 20, writer)
        dest = tmp_path / "backups" / "first"
        result = _keel(workspace, "backup", str(dest))
        assert result.returncode == 0, result.stderr
        assert "backed up to" in result.stdout
        _run, after_backup = _progress(progress)
        _wait_steps(progress, after_backup + 20, writer)  # the writer went on, unhindered
    finally:
        stop.touch()
        try:
            writer.wait(30)
        finally:
            log.close()
    assert writer.returncode == 0, (tmp_path / "writer.log").read_text()
    live_run, final_steps = _progress(progress)

    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["keel_version"] == __version__
    assert manifest["format"] == "keel-backup"
    assert manifest["database"]["tables"]["runs"] == len(seeded.runs) + 1
    assert manifest["objects"]["count"] >= len(set(seeded.artifacts.values()))
    assert manifest["objects"]["linked"] == manifest["objects"]["count"]  # same file system: hard links
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]  # no staging folder left

    restored = tmp_path / "restored"
    result = _keel(tmp_path, "restore", str(dest), str(restored))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 corrupt, 0 missing; ok" in result.stdout

    store = open_store(start=restored, cached=False)
    try:
        check_restored(store, seeded)
        tracking = TrackingService(store)
        steps = [[m.step for m in tracking.metric_history(live_run, f"m{k}")] for k in range(METRICS)]
        held = len(steps[0])
        assert 20 <= held < final_steps  # taken while the writer ran: some of its steps, not all
        assert all(s == list(range(held)) for s in steps)  # each step whole: a consistent snapshot
        artifacts = tracking.list_artifacts(live_run)
        assert len(artifacts) == (held + 4) // 5  # every artifact row of the snapshot, and its object
        for artifact in artifacts:
            assert len(tracking.read_artifact(live_run, artifact.path)) == 50_000
    finally:
        store.close()

    # The backup folder opens as it is, too: KEEL_URI at its database.
    listed = keel(
        "runs", "list", "--project", "backup", "--json", cwd=tmp_path,
        env={**_env(), "KEEL_URI": f"sqlite:///{dest / 'keel.db'}"},
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert {run["run_id"] for run in json.loads(listed.stdout)["runs"]} == set(seeded.runs)


def test_backup_copies_on_request_and_refuses_what_it_cannot_do(tmp_path: Path, pg_url: str) -> None:
    workspace = tmp_path / "ws"
    init_workspace(workspace)
    store = open_store(start=workspace, cached=False)
    try:
        seeded = seed(store, runs=2, big=1000)
        report = backup_store(store, tmp_path / "copy", link=False)
        assert report.manifest["objects"]["copied"] == report.objects > 0
        oid = next(iter(store.objects.iter_oids()))
        assert os.stat(tmp_path / "copy" / "objects" / oid[:2] / oid[2:]).st_nlink == 1
        with pytest.raises(AlreadyExists):
            backup_store(store, tmp_path / "copy")  # not an empty folder
        with pytest.raises(InvalidInput, match="inside the store"):
            backup_store(store, workspace / ".keel" / "objects" / "bk")
    finally:
        store.close()
    restored = restore_backup(tmp_path / "copy", tmp_path / "restored")
    assert restored.verify.ok and restored.objects == report.objects
    with pytest.raises(AlreadyExists):
        restore_backup(tmp_path / "copy", tmp_path / "restored")  # a store is there already
    store = open_store(start=tmp_path / "restored", cached=False)
    try:
        check_restored(store, seeded)
    finally:
        store.close()

    # PostgreSQL is backed up with pg_dump (docs/operations.md), not with keel backup.
    result = keel(
        "backup", str(tmp_path / "pg"), cwd=tmp_path,
        env={**_env(), "KEEL_URI": pg_url, "KEEL_OBJECTS": str(tmp_path / "objects")},
    )  # fmt: skip
    assert result.returncode != 0
    assert "pg_dump" in result.stderr and "operations.md" in result.stderr
    assert not (tmp_path / "pg").exists()
