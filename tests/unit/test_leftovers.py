"""The spool folder and its sweep (keel.services.leftovers): names, ages, owners, refusals."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keel.errors import InvalidInput, StoreError
from keel.services.leftovers import age_from_env, new_spool_file, spool_dir, sweep_spool


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _aged(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_spool_dir_is_private_and_refuses_a_trap(tmp_path: Path) -> None:
    folder = spool_dir(tmp_path)
    assert folder == tmp_path / f"keel-server-{os.getuid()}"
    assert folder.stat().st_mode & 0o777 == 0o700
    fd, path = new_spool_file(folder, "upload")
    os.close(fd)
    assert Path(path).name.startswith(f"upload-{os.getpid()}-") and path.endswith(".part")

    other = tmp_path / "other"
    (other / "elsewhere").mkdir(parents=True)
    (other / f"keel-server-{os.getuid()}").symlink_to(other / "elsewhere")
    with pytest.raises(StoreError, match="not a folder owned by this user"):
        spool_dir(other)


def test_sweep_removes_old_files_of_dead_processes_only(tmp_path: Path) -> None:
    folder = spool_dir(tmp_path)
    dead = _dead_pid()
    old_dead = folder / f"upload-{dead}-abc.part"
    old_dead.write_bytes(b"x" * 10)
    _aged(old_dead, 7200)
    new_dead = folder / f"object-{dead}-def.part"
    new_dead.write_bytes(b"y")
    old_live = folder / f"upload-{os.getpid()}-ghi.part"
    old_live.write_bytes(b"z")
    _aged(old_live, 7200)
    stranger = folder / "notes.txt"
    stranger.write_bytes(b"keep")
    _aged(stranger, 7200)

    assert sweep_spool(folder, 3600) == (1, 10)
    assert not old_dead.exists()
    assert new_dead.exists() and old_live.exists() and stranger.exists()
    assert sweep_spool(folder, 0) == (1, 1)  # with no age limit, the dead process's new file goes too
    assert not new_dead.exists() and old_live.exists()
    assert sweep_spool(tmp_path / "missing", 0) == (0, 0)


def test_ages_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEEL_TEST_AGE", raising=False)
    assert age_from_env("KEEL_TEST_AGE", 60.0) == 60.0
    monkeypatch.setenv("KEEL_TEST_AGE", "0")
    assert age_from_env("KEEL_TEST_AGE", 60.0) == 0.0
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("KEEL_TEST_AGE", bad)
        with pytest.raises(InvalidInput):
            age_from_env("KEEL_TEST_AGE", 60.0)


def test_a_local_store_sweep_removes_stale_temporary_files(tmp_path: Path) -> None:
    from keel.objects.local import LocalObjectStore
    from keel.services.leftovers import sweep_store

    store = LocalObjectStore(tmp_path / "objects")
    oid = store.put_bytes(b"kept")
    stale = tmp_path / "objects" / "tmp" / "half-written"
    stale.write_bytes(b"x" * 100)
    _aged(stale, 7200)
    fresh = tmp_path / "objects" / "tmp" / "being-written"
    fresh.write_bytes(b"y")
    report = sweep_store(store, 3600)
    assert (report.store_files, report.store_bytes) == (1, 100)
    assert not stale.exists() and fresh.exists() and store.get_bytes(oid) == b"kept"
