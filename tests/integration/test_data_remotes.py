"""Remotes: push, fetch and pull against a local folder and an S3-protocol server."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from data_helpers import commit, git, init_repo, make_kb, snapshot, write

from keel.errors import AlreadyExists, InvalidInput, NotFound, StoreError
from keel.sdk import data


@pytest.fixture
def repo(tmp_path: Path):
    from keel.sdk import session

    root = init_repo(tmp_path / "repo")
    os.chdir(root)
    yield root
    session.reset()


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def remote_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "remote")
    return request.getfixturevalue("s3_url")


def _remote_objects(url: str) -> set[str]:
    from keel.objects import open_object_store

    store = open_object_store(url)
    try:
        return set(store.iter_oids())
    finally:
        store.close()


def test_push_then_pull_into_a_fresh_clone(repo: Path, tmp_path: Path, remote_url: str):
    make_kb(repo, n=20)
    write(repo / "data" / "big.bin", os.urandom(400_000))
    data.add(["data/kb", "data/big.bin"])
    data.add_remote("storage", remote_url, default=True)
    commit(repo, "data v1")

    pushed = data.push()
    assert pushed.remote == "storage" and pushed.transferred == 3  # a pack, a loose file, a tree
    assert data.push().transferred == 0 and data.push().present == 3
    assert len(_remote_objects(remote_url)) == 3

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    os.chdir(clone)
    assert data.remotes() == ({"storage": remote_url}, "storage")
    fetched, checked_out = data.pull()
    assert fetched.transferred == 3 and checked_out.written == 21
    assert snapshot(clone / "data") == snapshot(repo / "data") | {".gitignore": (repo / "data/.gitignore").read_bytes()}
    assert [s.state for s in data.status()] == ["ok", "ok"]
    assert data.pull()[0].transferred == 0


def test_an_interrupted_push_is_completed_by_running_it_again(repo: Path, tmp_path: Path):
    remote = tmp_path / "remote"
    for n, folder in enumerate(("a", "b", "c")):
        make_kb(repo / folder, n=3 + n)  # b and c share some files with a: 3 packs, 3 trees
    data.add(["a/data/kb", "b/data/kb", "c/data/kb"])
    data.add_remote("storage", str(remote), default=True)
    assert data.push().transferred == 6
    # An interruption leaves some objects pushed, some not (and maybe a stray temp file).
    victims = sorted(p for p in remote.rglob("*") if p.is_file() and p.parent.name != "tmp")[:3]
    for victim in victims:
        victim.unlink()
    (remote / "tmp" / "partial-upload").write_bytes(b"half")
    again = data.push()
    assert again.transferred == 3 and again.present == 3

    commit(repo, "three folders")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    os.chdir(clone)
    data.pull()
    assert snapshot(clone / "b" / "data" / "kb") == snapshot(repo / "b" / "data" / "kb")


def test_a_corrupt_cache_object_is_fetched_again_from_the_remote(repo: Path, tmp_path: Path):
    kb = make_kb(repo, n=5)
    big = write(repo / "data" / "big.bin", os.urandom(300_000))
    results = data.add(["data/kb", "data/big.bin"])
    data.add_remote("storage", str(tmp_path / "remote"), default=True)
    data.push()
    for oid in [results[1].oid, *_packs_of(repo, results[0].oid)]:
        path = repo / ".keel" / "objects" / oid[:2] / oid[2:]
        os.chmod(path, 0o644)
        content = bytearray(path.read_bytes())
        content[10] ^= 0xFF
        path.write_bytes(bytes(content))
    expected = snapshot(repo / "data")
    shutil.rmtree(kb)
    big.unlink()
    data.checkout()
    assert snapshot(repo / "data") == expected
    checked, problems = data.verify()
    assert problems == []


def _packs_of(repo: Path, tree_oid: str) -> list[str]:
    text = (repo / ".keel" / "objects" / tree_oid[:2] / tree_oid[2:]).read_text()
    return [line.split()[1] for line in text.splitlines() if line.startswith("pack ")]


def test_fetch_reports_what_the_remote_does_not_have(repo: Path, tmp_path: Path):
    make_kb(repo, n=3)
    data.add(["data/kb"])
    data.add_remote("empty", str(tmp_path / "empty-remote"), default=True)
    commit(repo, "v1")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    os.chdir(clone)
    result = data.fetch()
    assert result.not_on_remote == ["data/kb"] and result.transferred == 0
    with pytest.raises(NotFound) as caught:
        data.checkout()
    assert "keel data pull" in (caught.value.hint or "")


def test_unreachable_remotes_fail_with_a_clear_message(repo: Path, tmp_path: Path):
    make_kb(repo, n=2)
    data.add(["data/kb"])
    data.add_remote("gone", str(tmp_path / "not-mounted" / "store"), default=True)
    with pytest.raises(StoreError) as caught:
        data.push()
    assert "unreachable" in str(caught.value) and "does not exist" in str(caught.value)

    data.add_remote("nobody", "s3://bucket/prefix?endpoint_url=http://127.0.0.1:9", default=True)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    start = time.monotonic()
    with pytest.raises(StoreError) as caught:
        data.push()
    assert "check the endpoint" in str(caught.value) or "check credentials" in str(caught.value)
    assert time.monotonic() - start < 30
    assert [s.state for s in data.status()] == ["ok"]  # nothing local changed


@pytest.mark.s3
def test_a_missing_bucket_is_reported(repo: Path, s3_url: str):
    make_kb(repo, n=2)
    data.add(["data/kb"])
    url = s3_url.replace("s3://", "s3://no-such-bucket-", 1)
    data.add_remote("wrong", url, default=True)
    with pytest.raises(StoreError) as caught:
        data.push()
    assert "does not exist" in str(caught.value)


def test_remote_configuration_lives_in_the_committed_config(repo: Path):
    config = repo / ".keel" / "config.toml"
    before = config.read_text()
    data.add_remote("first", "/srv/keel")
    data.add_remote("second", "s3://bucket/prefix", default=True)
    assert data.remotes() == ({"first": "/srv/keel", "second": "s3://bucket/prefix"}, "second")
    assert config.read_text().startswith(before.rstrip())  # the [store] section is kept as it was
    with pytest.raises(AlreadyExists):
        data.add_remote("first", "/elsewhere")
    data.add_remote("first", "/elsewhere", force=True)
    data.remove_remote("second")
    assert data.remotes() == ({"first": "/elsewhere"}, None)
    with pytest.raises(NotFound):
        data.remove_remote("second")
    for name, url in (("bad name", "/x"), ("ok", "ftp://host/x"), ("ok", " ")):
        with pytest.raises(InvalidInput):
            data.add_remote(name, url)
    data.add_remote("third", "/srv/third")
    with pytest.raises(InvalidInput) as caught:
        data.push()  # two remotes, neither the default
    assert "keel remote add -d" in (caught.value.hint or "")


def test_git_is_real(repo: Path):
    assert subprocess.run(["git", "--version"], capture_output=True).returncode == 0
