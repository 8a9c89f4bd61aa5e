"""No leftovers (issue 26): a server killed mid-upload leaves a spool file and an unfinished
S3 multipart upload; the next start removes both. Real processes: ``python -m keel.server``
(uvicorn) on SQLite + an S3 server (moto), killed with SIGKILL during a streamed upload.

Also: an upload that fails (the client goes away mid-body) removes its spool file at once;
a failed multipart upload is aborted by the store; ``keel server sweep`` removes only what
belongs to dead processes and is old enough, and only under the store's prefix.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from botocore.exceptions import ClientError
from test_remote_cli import _users

from cli_inprocess import keel
from keel.errors import KeelError
from keel.objects.s3 import S3ObjectStore
from keel.services.leftovers import new_spool_file, spool_dir, sweep_spool
from servers import S3Server, free_port

API = "/api/v1"
SIZE = 100 << 20  # the upload the server is killed in


class Proc:
    """A ``python -m keel.server`` process with its own TMPDIR."""

    def __init__(self, store: str, objects: str, folder: Path, tmp: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"server-{self.port}.log"
        args = [sys.executable, "-m", "keel.server", "--store", store, "--objects", objects]
        args += ["--port", str(self.port), "--log-level", "info"]
        environment = {**os.environ, "TMPDIR": str(tmp), **(env or {})}
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=environment)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}{API}/live", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"the server did not start: {self.log.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def site(s3_server: S3Server, tmp_path: Path) -> Iterator[dict[str, Any]]:
    bucket = s3_server.create_bucket()
    objects = f"s3://{bucket}/keel?{urlencode({'endpoint_url': s3_server.endpoint_url})}"
    store = f"sqlite:///{tmp_path / 'keel.db'}"
    token = _users(store, objects, {})["root"]  # in-process: `keel server admin create` is tested elsewhere
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    yield {"store": store, "objects": objects, "bucket": bucket, "token": token, "tmp": tmp, "s3": s3_server}


def _uploads(s3: S3Server, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
    return list(s3.client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []))


def _spool_files(tmp: Path) -> list[Path]:
    folder = tmp / f"keel-server-{os.getuid()}"
    return sorted(folder.glob("*.part")) if folder.is_dir() else []


def _body(size: int) -> Iterator[bytes]:
    block = os.urandom(1 << 20)
    for index in range(size >> 20):
        yield index.to_bytes(8, "big") + block[8:]


@pytest.mark.s3
def test_kill_9_mid_upload_then_restart_sweeps_spool_file_and_multipart_upload(
    site: dict[str, Any], tmp_path: Path
) -> None:
    s3, bucket, tmp = site["s3"], site["bucket"], site["tmp"]
    server = Proc(site["store"], site["objects"], tmp_path, tmp)
    headers = {"Authorization": f"Bearer {site['token']}"}
    try:
        run = httpx.post(f"{server.url}{API}/runs", json={"project": "p"}, headers=headers).json()["run_id"]
        failure: list[BaseException] = []

        def upload() -> None:
            try:
                httpx.put(
                    f"{server.url}{API}/runs/{run}/artifacts/big.bin",
                    content=_body(SIZE),
                    headers={**headers, "Content-Type": "application/octet-stream"},
                    timeout=60,
                )
            except httpx.TransportError as exc:  # the server dies under it
                failure.append(exc)

        sender = threading.Thread(target=upload, daemon=True)
        sender.start()
        deadline = time.monotonic() + 45
        while not _uploads(s3, bucket) and time.monotonic() < deadline:
            assert sender.is_alive(), "the upload finished before a multipart upload was seen"
            time.sleep(0.01)
        assert _uploads(s3, bucket), "no multipart upload started"
        os.kill(server.process.pid, signal.SIGKILL)  # mid-way through the bucket upload
        server.process.wait(10)
        sender.join(30)
    finally:
        server.stop()
    assert failure, "the client should have seen the connection die"
    left = _spool_files(tmp)
    assert len(left) == 1 and left[0].name.startswith(f"upload-{server.process.pid}-")
    assert left[0].stat().st_size == SIZE
    assert [u["Key"] for u in _uploads(s3, bucket)][0].startswith("keel/")

    # A restart with the thresholds at 0 s: both leftovers go; the new server works.
    ages = {"KEEL_SERVER_SWEEP_TMP_AGE": "0", "KEEL_SERVER_SWEEP_UPLOAD_AGE": "0"}
    again = Proc(site["store"], site["objects"], tmp_path, tmp, ages)
    try:
        assert _spool_files(tmp) == []
        assert _uploads(s3, bucket) == []
        log = again.log.read_text()
        assert "removed 1 leftover spool file(s)" in log and "aborted 1 abandoned multipart upload(s)" in log
        data = os.urandom(3 << 20)
        put = httpx.put(f"{again.url}{API}/runs/{run}/artifacts/small.bin", content=data, headers=headers)
        assert put.status_code == 201, put.text
        assert _spool_files(tmp) == []  # removed once stored
    finally:
        again.stop()


@pytest.mark.s3
def test_an_upload_cut_off_by_its_client_leaves_no_spool_file(site: dict[str, Any], tmp_path: Path) -> None:
    server = Proc(site["store"], site["objects"], tmp_path, site["tmp"])
    try:
        headers = {"Authorization": f"Bearer {site['token']}"}
        run = httpx.post(f"{server.url}{API}/runs", json={"project": "p"}, headers=headers).json()["run_id"]
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                f"PUT {API}/runs/{run}/artifacts/cut.bin HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {site['token']}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {50 << 20}\r\n\r\n".encode()
            )
            for _ in range(10):
                sock.sendall(os.urandom(1 << 20))
            deadline = time.monotonic() + 10
            while not _spool_files(site["tmp"]) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _spool_files(site["tmp"]), "the server should be spooling the body"
        deadline = time.monotonic() + 10
        while _spool_files(site["tmp"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _spool_files(site["tmp"]) == []
        assert server.process.poll() is None
    finally:
        server.stop()


@pytest.mark.s3
def test_a_failed_multipart_upload_is_aborted(site: dict[str, Any], tmp_path: Path) -> None:
    s3, bucket = site["s3"], site["bucket"]
    store = S3ObjectStore(bucket, "keel", s3.endpoint_url)
    real = store._client.upload_part
    calls = 0

    def flaky(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "UploadPart")
        return real(**kwargs)

    store._client.upload_part = flaky
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(24 << 20))
    try:
        with pytest.raises(KeelError):
            store.put_file(path)
    finally:
        store.close()
    assert calls >= 2
    assert _uploads(s3, bucket) == []
    assert "Contents" not in s3.client.list_objects_v2(Bucket=bucket)


@pytest.mark.s3
def test_keel_server_sweep_removes_only_what_is_abandoned(site: dict[str, Any], tmp_path: Path) -> None:
    s3, bucket, tmp = site["s3"], site["bucket"], site["tmp"]
    folder = spool_dir(tmp)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = time.time() - 7200
    files = {}
    for name, pid in (("deadold", dead.pid), ("aliveold", os.getpid())):
        fd, path = new_spool_file(folder, "upload")
        os.close(fd)
        target = folder / f"upload-{pid}-{name}.part"
        os.rename(path, target)
        os.utime(target, (old, old))
        files[name] = target
    fd, fresh = new_spool_file(folder, "upload")  # this process's, and new
    os.close(fd)
    (folder / "notes.txt").write_text("not a spool file")
    os.utime(folder / "notes.txt", (old, old))
    for key in ("keel/ab/cdef", "other/ab/cdef"):
        s3.client.create_multipart_upload(Bucket=bucket, Key=key)

    result = keel(
        "server", "sweep", "--store", site["store"], "--objects", site["objects"], "--tmp-dir", str(tmp),
        "--upload-age", "0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "spool files removed: 1" in result.stdout and "multipart uploads aborted: 1" in result.stdout
    assert not files["deadold"].exists()
    assert files["aliveold"].exists() and Path(fresh).exists() and (folder / "notes.txt").exists()
    assert [u["Key"] for u in _uploads(s3, bucket)] == ["other/ab/cdef"]  # another prefix: not ours
    assert sweep_spool(folder, 0) == (0, 0)  # the rest belongs to a live process
