"""Downloads stream from the object store while they are hashed (issue 26), on a real server.

``python -m keel.server`` (uvicorn) over SQLite with local objects, then with S3 (moto):
a 64 MiB artifact comes back byte for byte in a chunked response whose first byte arrives
long before the last, with no temporary copy anywhere; after the stored object is corrupted
behind keel's back (same size, other bytes), every download of it is broken off (the HTTP
client sees an incomplete body), the keel client raises IntegrityError, and the server logs
the corrupt object at ERROR and goes on serving. A missing object is a 404 before any byte.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from test_server_api import bootstrap
from test_server_leftovers import Proc

from keel.core.hashing import hash_bytes
from keel.errors import IntegrityError
from keel.objects.http import HttpObjectStore

API = "/api/v1"
SIZE = 64 << 20


@pytest.fixture(scope="module", params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One server and object per backend, for the module's tests in order: streamed, corrupted, removed."""
    tmp_path = tmp_path_factory.mktemp("served")
    store = f"sqlite:///{tmp_path / 'keel.db'}"
    if request.param == "local":
        objects = str(tmp_path / "objects")
        bucket = None
    else:
        s3 = request.getfixturevalue("s3_server")
        bucket = s3.create_bucket()
        objects = f"s3://{bucket}/keel?{urlencode({'endpoint_url': s3.endpoint_url})}"
    token = bootstrap(store, objects=objects)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    server = Proc(store, objects, tmp_path, tmp)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        run = httpx.post(f"{server.url}{API}/runs", json={"project": "p"}, headers=headers).json()["run_id"]
        data = os.urandom(SIZE)
        put = httpx.put(f"{server.url}{API}/runs/{run}/artifacts/big.bin", content=data, headers=headers, timeout=60)
        assert put.status_code == 201, put.text
        yield {
            "kind": request.param,
            "server": server,
            "headers": headers,
            "token": token,
            "run": run,
            "data": data,
            "oid": put.json()["oid"],
            "objects": objects,
            "bucket": bucket,
            "tmp": tmp,
            "s3": request.getfixturevalue("s3_server") if bucket else None,
        }
    finally:
        server.stop()


def _corrupt(served: dict[str, Any]) -> None:
    """Change bytes of the stored object behind keel's back (its size stays)."""
    oid, data = served["oid"], served["data"]
    bad = data[: SIZE // 2] + bytes(b ^ 0xFF for b in data[SIZE // 2 : SIZE // 2 + 16]) + data[SIZE // 2 + 16 :]
    if served["kind"] == "local":
        path = Path(served["objects"]) / oid[:2] / oid[2:]
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        path.write_bytes(bad)
    else:
        served["s3"].client.put_object(Bucket=served["bucket"], Key=f"keel/{oid[:2]}/{oid[2:]}", Body=bad)


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_download_streams_while_hashing(served: dict[str, Any]) -> None:
    server, headers, data = served["server"], served["headers"], served["data"]
    url = f"{server.url}{API}/runs/{served['run']}/artifacts/big.bin"
    started = time.perf_counter()
    received = bytearray()
    first = None
    with httpx.stream("GET", url, headers=headers, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["transfer-encoding"] == "chunked"
        assert response.headers["x-keel-size"] == str(SIZE)
        assert response.headers["x-keel-oid"] == served["oid"]
        assert response.headers["content-disposition"] == 'attachment; filename="big.bin"'
        for chunk in response.iter_bytes():
            if first is None:
                first = time.perf_counter() - started
                assert _files_under(served["tmp"]) == []  # no temporary copy of the object
            received += chunk
    total = time.perf_counter() - started
    assert bytes(received) == data
    assert first is not None and first < total / 2, (first, total)

    via_objects = httpx.get(f"{server.url}{API}/objects/{served['oid']}", headers=headers, timeout=60)
    assert via_objects.status_code == 200 and hash_bytes(via_objects.content) == served["oid"]


def test_a_corrupt_object_breaks_the_download_off(served: dict[str, Any], tmp_path: Path) -> None:
    server, headers, oid = served["server"], served["headers"], served["oid"]
    _corrupt(served)
    for path in (f"/runs/{served['run']}/artifacts/big.bin", f"/objects/{oid}"):
        got = 0
        with pytest.raises(httpx.RemoteProtocolError):
            with httpx.stream("GET", f"{server.url}{API}{path}", headers=headers, timeout=60) as response:
                assert response.status_code == 200
                for chunk in response.iter_bytes():
                    got += len(chunk)
        assert got == SIZE  # every byte came, then no end of the body: the client cannot take it as complete

    remote = HttpObjectStore(server.url, served["token"], presign=False)
    try:
        with pytest.raises(IntegrityError, match="corrupt"):
            remote.get_file(oid, tmp_path / "out.bin")
        assert not (tmp_path / "out.bin").exists()
    finally:
        remote.close()

    deadline = time.monotonic() + 5
    while f"object {oid} is corrupt" not in server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.log.read_text().splitlines()
    reported = [
        line
        for line in log
        if " ERROR keel.server [" in line and f"object {oid} is corrupt: its {SIZE} bytes hash to" in line
    ]
    assert len(reported) == 3  # each of the three downloads
    aborted = [line for line in log if "answered 500: DownloadAborted: the download of object " + oid in line]
    assert len(aborted) == 3 and all(" ERROR keel.server [" in line for line in aborted)
    assert httpx.get(f"{server.url}{API}/health", timeout=5).status_code == 200  # the server goes on


def test_a_missing_object_is_a_404_before_any_byte(served: dict[str, Any]) -> None:
    server, headers, oid = served["server"], served["headers"], served["oid"]
    if served["kind"] == "local":
        path = Path(served["objects"]) / oid[:2] / oid[2:]
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        path.unlink()
    else:
        served["s3"].client.delete_object(Bucket=served["bucket"], Key=f"keel/{oid[:2]}/{oid[2:]}")
    for path in (f"/runs/{served['run']}/artifacts/big.bin", f"/objects/{oid}"):
        response = httpx.get(f"{server.url}{API}{path}", headers=headers, timeout=30)
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "not_found"
