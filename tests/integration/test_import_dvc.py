"""`keel.import_from.dvc` on a repository written by the real dvc 3.67.1
(tests/fixtures/dvc_repo.tar.gz, made by make_dvc_repo.sh beside it): history with
two tags, a folder, a pipeline output; old tags check out through their .dvc files."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from data_helpers import git
from import_helpers import new_workspace

from keel.errors import IntegrityError, InvalidInput, NotFound
from keel.sdk import data, importers
from keel.sdk import session as sessions

FIXTURE = Path(__file__).parents[1] / "fixtures" / "dvc_repo.tar.gz"


@pytest.fixture
def repo(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "dvc_repo"
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "user.name", "Test")
    new_workspace(root, tmp_path_factory.getbasetemp())
    os.chdir(root)
    yield root
    sessions.reset()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def dvc_md5s(root: Path) -> dict[str, str]:
    """What the working tree's .dvc files say each file should be (folders through their manifests)."""
    out = {}
    for dvc_file in root.glob("data/*.dvc"):
        (entry,) = yaml.safe_load(dvc_file.read_text())["outs"]
        path = dvc_file.parent / entry["path"]
        digest = entry["md5"]
        if digest.endswith(".dir"):
            manifest = root / ".dvc" / "cache" / "files" / "md5" / digest[:2] / digest[2:]
            for item in yaml.safe_load(manifest.read_text()):
                out[str((path / item["relpath"]).relative_to(root))] = item["md5"]
        else:
            out[str(path.relative_to(root))] = digest
    return out


def workspace_md5s(root: Path, folders: tuple[str, ...] = ("data/train.csv", "data/kb")) -> dict[str, str]:
    out = {}
    for name in folders:
        path = root / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        out.update({str(p.relative_to(root)): md5(p) for p in files})
    return out


def test_imports_every_version_and_old_tags_check_out(repo: Path) -> None:
    calls: list[tuple[int, int]] = []
    summary = importers.dvc(progress=lambda done, total: calls.append((done, total)))
    assert summary.imported == {"version": 5, "file": 9, "pointer file": 3}
    assert calls[0] == (0, 5) and calls[-1] == (5, 5)
    for name in ("data/train.csv.keel", "data/kb.keel", "data/prepared.txt.keel"):
        assert (repo / name).is_file()
    assert [s.state for s in data.status()] == ["ok", "ok", "ok"]
    v1, v2 = git(repo, "rev-parse", "v1.0").strip(), git(repo, "rev-parse", "v2.0").strip()
    assert sorted(v.git_commit for v in data.log("data/train.csv")) == sorted([v1, v2])
    assert {v.files for v in data.log("data/kb")} == {3}

    again = importers.dvc()  # idempotent: nothing twice
    assert again.total_imported() == 0 and again.skipped == {"version": 5, "pointer file": 3}

    git(repo, "add", "data", ".keel/config.toml", ".keel/.gitignore")
    git(repo, "commit", "-q", "-m", "move to keel")
    data.gc(all_commits=True)  # keeps what the old commits' .dvc files name
    for tag in ("v1.0", "v2.0", "main"):
        git(repo, "checkout", "-q", tag)
        data.checkout()
        assert workspace_md5s(repo) == dvc_md5s(repo), tag
    assert (repo / "data" / "prepared.txt").read_text().strip() == "4"


def test_a_missing_cache_object_stops_the_import_before_anything_is_written(repo: Path) -> None:
    cache = repo / ".dvc" / "cache" / "files" / "md5"
    missing = cache / "62" / "da33269f1459829ab929859c2a1b20"  # train.csv at v1.0
    moved = repo.parent / "moved"
    shutil.move(missing, moved)
    with pytest.raises(NotFound, match=r"data/train.csv \(data/train.csv.dvc at [0-9a-f]{8}, md5 62da3"):
        importers.dvc()
    assert not (repo / "data" / "train.csv.keel").exists() and data.log() == []

    only_head = importers.dvc(revs=["v2.0"])  # what the cache has: v2.0's versions (the working tree's)
    assert only_head.imported == {"version": 3, "file": 5, "pointer file": 3}
    shutil.move(moved, missing)
    assert importers.dvc().imported == {"version": 2, "file": 4, "pointer file": 0}


def test_an_interrupted_import_finishes_on_the_next_run(repo: Path) -> None:
    damaged = repo / ".dvc" / "cache" / "files" / "md5" / "48" / "a24b70a0b376535542b996af517398"  # v2.0's prepared.txt
    good = damaged.read_bytes()
    os.chmod(damaged, stat.S_IWUSR | stat.S_IRUSR)
    damaged.write_bytes(b"9\n")
    with pytest.raises(IntegrityError, match="does not match its md5"):
        importers.dvc()
    assert not (repo / "data" / "kb.keel").exists()

    damaged.write_bytes(good)
    summary = importers.dvc()
    assert summary.imported["version"] + summary.skipped["version"] == 5 and summary.skipped["version"] >= 1
    assert [s.state for s in data.status()] == ["ok", "ok", "ok"]


def test_sources_that_are_not_dvc_repositories_are_refused(repo: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    new_workspace(plain, tmp_path.parent)
    with pytest.raises(InvalidInput, match="is not a DVC repository"):
        importers.dvc(plain)
    nested = repo / "sub"
    (nested / ".dvc").mkdir(parents=True)
    with pytest.raises(InvalidInput, match="is not the root of the keel workspace"):
        importers.dvc(nested)
    with pytest.raises(InvalidInput, match="unknown git revision"):
        importers.dvc(revs=["no-such-tag"])
    assert data.log() == []
