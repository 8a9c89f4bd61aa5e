"""A keel server as a data remote: real uvicorn processes (SQLite + local objects, and
PostgreSQL + S3), the real ``git``, the ``keel`` CLI (in-process: see ``tests/cli_inprocess.py``),
``keel remote add origin http://...``.

On S3 the pull must read the bytes from presigned URLs: the server's access log has
to show the 307 redirects.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_server_api import Server, start_server

from cli_inprocess import keel as run_keel
from keel.core.hashing import hash_bytes
from keel.errors import Forbidden, InvalidInput, Unauthenticated
from keel.objects import open_object_store
from keel.objects.http import HttpObjectStore
from keel.services.auth import AuthStore
from keel.services.data import DataRepo
from keel.services.data_remote import push
from keel.services.workspace import open_store
from keel.transport import HttpClient


@dataclass
class Remote:
    server: Server
    store: str
    objects: str | None
    root: str  # a site admin's token
    reader: str  # a token with only the reader role on one project

    @property
    def url(self) -> str:
        return self.server.url

    def redirects(self) -> int:
        """Presigned-download redirects the server answered so far (from its access log)."""
        return len(re.findall(r'"GET /api/v1/objects/[0-9a-f]{64}[^"]*" 307', self.server.log.read_text()))


def _remote(folder: Path, store: str, objects: str | None) -> Iterator[Remote]:
    opened = open_store(store, objects, cached=False)  # in process: faster than four admin commands
    try:
        auth = AuthStore(opened.db)
        auth.create_user("root", is_admin=True)
        auth.create_user("rita")
        auth.grant("rita", "vision", "reader", actor="root")
        root, reader = auth.create_token("root")[0], auth.create_token("rita")[0]
    finally:
        opened.close()
    server = start_server(store, folder, objects, "--log-level", "info")
    try:
        yield Remote(server, store, objects, root, reader)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sqlite_remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    folder = tmp_path_factory.mktemp("sqlite-server")
    yield from _remote(folder, f"sqlite:///{folder / 'keel.db'}", None)


@pytest.fixture(params=["sqlite", pytest.param("postgres-s3", marks=[pytest.mark.postgres, pytest.mark.s3])])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Remote]:
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_remote")
        return
    yield from _remote(tmp_path, request.getfixturevalue("pg_url"), request.getfixturevalue("s3_url"))


def _env(token: str | None, config: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KEEL_URI", "KEEL_OBJECTS", "KEEL_TOKEN")}
    if token:
        env["KEEL_TOKEN"] = token
    if config:
        env["KEEL_CONFIG_DIR"] = str(config)
    return env


def run(*args: str, cwd: Path) -> str:
    out = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120, env=_env(None, None))
    assert out.returncode == 0, f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out.stdout


def keel(*args: str, cwd: Path, token: str | None = None, config: Path | None = None) -> str:
    out = run_keel(*args, cwd=cwd, env=_env(token, config))
    assert out.returncode == 0, f"keel {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out.stdout


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_push_to_a_keel_server_then_pull_in_a_fresh_clone(tmp_path: Path, remote: Remote) -> None:
    config = tmp_path / "config"  # no stray credentials file: KEEL_TOKEN only
    repo = tmp_path / "project"
    repo.mkdir()
    run("git", "init", "-q", "-b", "main", cwd=repo)
    run("git", "config", "user.email", "me@example.com", cwd=repo)
    run("git", "config", "user.name", "Me", cwd=repo)
    keel("init", cwd=repo)
    data = repo / "data"
    (data / "kb" / "faq").mkdir(parents=True)
    (data / "train.jsonl").write_text("".join(f'{{"q": "question {i}"}}\n' for i in range(100)))
    for i in range(20):
        (data / "kb" / "faq" / f"doc{i:02d}.md").write_text(f"# FAQ {i}\n" + "answer " * i)
    (data / "kb" / "manual.pdf").write_bytes(os.urandom(2_500_000))  # several chunks on the wire
    keel("data", "add", "data/train.jsonl", "data/kb/", cwd=repo)
    keel("remote", "add", "-d", "origin", remote.url + "/", cwd=repo)
    listing = keel("remote", "list", cwd=repo)
    assert re.search(rf"^\* origin\s+{re.escape(remote.url)}$", listing, re.M), listing  # no trailing slash
    run("sh", "-c", "git add .keel data/*.keel data/.gitignore && git commit -q -m 'data v1'", cwd=repo)

    pushed = keel("data", "push", cwd=repo, token=remote.root, config=config)
    assert re.search(r"pushed [1-9]\d* object\(s\)", pushed), pushed
    assert "pushed 0 object(s)" in keel("data", "push", cwd=repo, token=remote.root, config=config)

    # Every object, packs and tree manifests included, is in the server's store like any other.
    repo_objects = DataRepo(repo)
    cached = {p.parent.name + p.name for p in repo_objects.cache.root.glob("??/*")}
    backend = open_object_store(remote.objects or str(Path(remote.store.removeprefix("sqlite:///")).parent / "objects"))
    try:
        assert cached and cached <= backend.exists_many(cached)
    finally:
        backend.close()

    before = remote.redirects()
    clone = tmp_path / "clone"
    run("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    fetched = keel("data", "pull", cwd=clone, token=remote.reader, config=config)  # a reader may pull
    assert re.search(r"fetched [1-9]\d* object\(s\)", fetched), fetched
    assert tree_bytes(clone / "data") == tree_bytes(data)
    if remote.objects:  # S3: the bytes came straight from the bucket
        assert remote.redirects() - before >= len(cached)
    else:
        assert remote.redirects() == before


def test_an_interrupted_push_completes_on_rerun(tmp_path: Path, sqlite_remote: Remote) -> None:
    repo = tmp_path / "project"
    repo.mkdir()
    keel("init", cwd=repo)
    (repo / "files").mkdir()
    for i in range(6):
        (repo / "files" / f"f{i}.bin").write_bytes(os.urandom(50_000 + i))
    keel("data", "add", *(f"files/f{i}.bin" for i in range(6)), cwd=repo)
    keel("remote", "add", "-d", "origin", sqlite_remote.url, cwd=repo)
    os.environ["KEEL_TOKEN"] = sqlite_remote.root
    try:
        calls = 0

        def stop_after_two(done: int, total: int) -> None:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise KeyboardInterrupt  # as if the user pressed Ctrl-C

        with pytest.raises(KeyboardInterrupt):
            push(DataRepo(repo), jobs=1, progress=stop_after_two)
    finally:
        del os.environ["KEEL_TOKEN"]
    pushed = keel("data", "push", cwd=repo, token=sqlite_remote.root, config=tmp_path)
    assert "pushed 4 object(s)" in pushed, pushed
    assert "pushed 0 object(s)" in keel("data", "push", cwd=repo, token=sqlite_remote.root, config=tmp_path)


def test_the_object_store_over_http(tmp_path: Path, sqlite_remote: Remote) -> None:
    store = HttpObjectStore(sqlite_remote.url, sqlite_remote.root)
    reader = HttpObjectStore(sqlite_remote.url, sqlite_remote.reader)
    try:
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(3_000_000))
        oid, size = store.put_file(big)
        assert size == 3_000_000 and store.exists(oid)
        small = store.put_bytes(b"small object")
        assert reader.get_bytes(small) == b"small object"
        reader.get_file(oid, tmp_path / "out" / "big.bin")
        assert (tmp_path / "out" / "big.bin").read_bytes() == big.read_bytes()
        absent = hash_bytes(b"absent")
        assert reader.exists_many([oid, small, absent, "not-an-oid"]) == {oid, small}
        assert not reader.exists(absent) and not reader.exists("nope")
        assert {oid, small} <= set(store.iter_oids())  # listing: site admins only
        with pytest.raises(Forbidden):
            list(reader.iter_oids())
        with pytest.raises(Forbidden):
            reader.put_bytes(b"a reader cannot write")
        refused = tmp_path / "refused.bin"
        refused.write_bytes(os.urandom(3_000_000))
        with pytest.raises(Forbidden):  # refused before the body is read: the error still arrives
            reader.put_file(refused)
        with pytest.raises(InvalidInput):
            store.transport.request("PUT", f"/api/v1/objects/{absent}", body=b"not the absent bytes")
        with HttpClient(sqlite_remote.url, "keel_forged") as forged, pytest.raises(Unauthenticated):
            HttpObjectStore(sqlite_remote.url, transport=forged).exists(oid)
        assert sqlite_remote.root not in repr(store) + repr(store.transport)
    finally:
        store.close()
        reader.close()
