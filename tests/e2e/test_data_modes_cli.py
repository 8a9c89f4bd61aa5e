"""``keel data`` as a user sees modes, an interrupted checkout and a ``.dvc`` file that
disagrees: real git, the CLI (in-process: see ``tests/cli_inprocess.py``)."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest

from cli_inprocess import Result
from cli_inprocess import keel as run_keel


def keel(*args: str, cwd: Path) -> Result:
    out = run_keel(*args, cwd=cwd)
    assert out.returncode == 0, f"keel {' '.join(args)}: {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    git("init", "-q", "-b", "main", cwd=root)
    git("config", "user.email", "me@example.com", cwd=root)
    git("config", "user.name", "Me", cwd=root)
    keel("init", cwd=root)
    return root


def test_modes_interrupted_checkouts_and_dvc_disagreements_as_printed(repo: Path):
    scripts = repo / "scripts"
    (scripts / "lib").mkdir(parents=True)
    (scripts / "run.sh").write_text("#!/bin/sh\necho run\n")
    (scripts / "lib" / "util.sh").write_text("helper\n")
    (repo / "data.csv").write_text("a,b\n1,2\n")
    keel("data", "add", "scripts", "data.csv", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "v1", cwd=repo)
    git("tag", "v1", cwd=repo)

    os.chmod(scripts / "run.sh", 0o755)
    out = keel("data", "status", cwd=repo)
    assert "modified: scripts\n    mode      scripts/run.sh  (644 -> 755)" in out.stdout
    keel("data", "add", "scripts", cwd=repo)
    assert "data up to date" in keel("data", "status", cwd=repo).stdout
    git("commit", "-q", "-am", "v2: run.sh executable", cwd=repo)
    diff = keel("data", "diff", "v1", "HEAD", cwd=repo).stdout
    assert "modified: scripts\n    mode      scripts/run.sh  (644 -> 755)" in diff

    git("checkout", "-q", "v1", cwd=repo)
    line = keel("data", "checkout", cwd=repo).stdout
    assert "1 mode changed" in line and not os.stat(scripts / "run.sh").st_mode & stat.S_IXUSR
    git("checkout", "-q", "main", cwd=repo)
    keel("data", "checkout", cwd=repo)
    assert os.stat(scripts / "run.sh").st_mode & stat.S_IXUSR

    # What a checkout killed with kill -9 leaves: the journal, and folders made for files never written.
    (repo / ".keel" / "data" / "checkout.journal").write_text("/scripts\nscripts/new/a/b.sh\n")
    (scripts / "new" / "a").mkdir(parents=True)
    out = keel("data", "status", cwd=repo)
    assert "modified: scripts (a checkout of it was interrupted: keel data checkout completes it)" in out.stdout
    assert "2 empty folders removed" in keel("data", "checkout", cwd=repo).stdout
    assert not (scripts / "new").exists()
    assert "data up to date" in keel("data", "status", cwd=repo).stdout

    # dvc add after keel add: the .dvc file names the new bytes, data.csv.keel the old.
    (repo / ".dvc").mkdir()
    new = b"a,b\n1,2\n3,4\n"
    (repo / "data.csv").write_bytes(new)
    md5 = hashlib.md5(new, usedforsecurity=False).hexdigest()
    (repo / "data.csv.dvc").write_text(f"outs:\n- md5: {md5}\n  size: {len(new)}\n  hash: md5\n  path: data.csv\n")
    out = keel("data", "status", cwd=repo)
    assert out.stderr.startswith("warning: data.csv.dvc and data.csv.keel disagree about data.csv: ")
    assert f"data.csv.dvc says md5 {md5[:12]}" in out.stderr and "modified: data.csv" in out.stdout
    refused = run_keel("data", "checkout", cwd=repo)
    assert refused.returncode != 0 and "not in the cache" in refused.stderr
    assert "note: data.csv.dvc and data.csv.keel disagree" in refused.stderr  # why it is not in the cache
    forced = keel("data", "checkout", "--force", cwd=repo)
    assert "checkout --force restores keel's version (data.csv.keel)" in forced.stderr
    assert (repo / "data.csv").read_text() == "a,b\n1,2\n"
