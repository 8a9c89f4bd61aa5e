"""HttpTransport against a tiny real ``http.server`` in a thread: errors, streaming,
keep-alive, reconnects, and the credentials file."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from keel.core.hashing import hash_bytes
from keel.errors import (
    Forbidden,
    IntegrityError,
    InvalidInput,
    KeelError,
    NotFound,
    StoreError,
    TooLarge,
    Unauthenticated,
)
from keel.objects.http import (
    HttpObjectStore,
    HttpTransport,
    credentials_path,
    forget_token,
    normalize_base_url,
    save_token,
    token_for,
)

BIG = 3 << 20
OBJECT = b"the bytes of one object"


class Handler(BaseHTTPRequestHandler):
    """Routes by path; records what it received in the server's ``seen`` list."""

    protocol_version = "HTTP/1.1"
    server: StubServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value: Any) -> None:
        self._reply(status, json.dumps(value, allow_nan=True).encode())

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def handle_one(self) -> None:
        served = self.server.per_connection.setdefault(self.client_address, 0)
        self.server.per_connection[self.client_address] = served + 1
        self.server.seen.append((self.command, self.path, dict(self.headers), self.client_address))
        path = self.path.split("?")[0]
        if path == "/refuse-early":  # answer, then hang up without reading the body
            self.send_response(413)
            body = json.dumps({"error": {"code": "too_large", "message": "over the limit", "hint": "split"}}).encode()
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            time.sleep(0.2)
            self.close_connection = True
            return
        if path != "/echo":  # what a real server does with a body it does not want
            self._body()
        if path.startswith("/api/v1/objects/"):  # redirects like a server on S3 would
            if "presigned" in self.headers.get("Prefer", ""):
                self.send_response(307)
                self.send_header("Location", self.server.bucket_url + "/bucket/blob?X-Amz-Signature=abc")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._reply(200, OBJECT, "application/octet-stream")
            return
        if path == "/bucket/blob":
            self._reply(200 if "X-Amz-Signature" in self.path else 403, OBJECT, "application/octet-stream")
            return
        if path == "/flaky" and served >= 1:  # drop a kept-alive connection without a reply
            self.close_connection = True
            return
        if path in ("/ok", "/flaky"):
            self._json(200, {"ok": True, "nan": math.nan, "query": self.path.partition("?")[2]})
        elif path == "/echo":
            body = self._body()
            self._json(
                200,
                {
                    "size": len(body),
                    "sha": hashlib.sha256(body).hexdigest(),
                    "chunked": self.headers.get("Transfer-Encoding") == "chunked",
                    "length": self.headers.get("Content-Length"),
                    "json": json.loads(body) if self.headers.get("Content-Type") == "application/json" else None,
                },
            )
        elif path == "/private":
            self._json(401, {"error": {"code": "unauthenticated", "message": "needs a token", "hint": "send one"}})
        elif path == "/auth":
            self._json(200, {"authorization": self.headers.get("Authorization")})
        elif path == "/not-found":
            self._json(404, {"error": {"code": "not_found", "message": "no run 'x'", "hint": "list runs"}})
        elif path == "/forbidden":
            self._json(403, {"error": {"code": "forbidden", "message": "needs writer", "hint": "ask"}})
        elif path == "/novel":
            self._json(409, {"error": {"code": "brand_new", "message": "new code", "hint": None}})
        elif path == "/too-large":
            self._reply(413, b"too big", "text/plain")
        elif path == "/teapot":
            self._reply(502, b"<html>bad gateway</html>", "text/html")
        elif path == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(BIG))
            self.end_headers()
            block = bytes(range(256)) * 4096
            for _ in range(BIG // len(block)):
                self.wfile.write(block)
        elif path == "/close-after":
            self._json(200, {"ok": True})
            self.close_connection = True  # closes without saying Connection: close
        elif path == "/slow":
            time.sleep(1.0)
            self._json(200, {})
        else:
            self._json(404, {"error": {"code": "not_found", "message": "no route", "hint": None}})

    do_GET = do_PUT = do_POST = do_HEAD = handle_one


class StubServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:  # a client gave up: fine
        pass

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[tuple[str, str, dict[str, str], Any]] = []
        self.per_connection: dict[Any, int] = {}
        self.bucket_url = self.url  # where presigned URLs point

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(scope="module")
def server() -> Iterator[StubServer]:
    srv = StubServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def transport(server: StubServer) -> Iterator[HttpTransport]:
    t = HttpTransport(server.url, "keel_secret_token", timeout=5)
    yield t
    t.close()


def _connections_used(server: StubServer, since: int) -> set[Any]:
    return {address for *_, address in server.seen[since:]}


def test_call_sends_and_reads_json_with_nan(transport: HttpTransport) -> None:
    got = transport.call("POST", "/echo", {"loss": math.inf, "x": [1, 2]})
    assert got["json"]["loss"] == math.inf
    assert transport.call("GET", "/ok", params={"a": "b c", "flag": True, "skip": None})["query"] == "a=b+c&flag=true"
    assert math.isnan(transport.call("GET", "/ok")["nan"])


def test_token_is_sent_and_hidden_from_repr(transport: HttpTransport, server: StubServer) -> None:
    assert transport.call("GET", "/auth") == {"authorization": "Bearer keel_secret_token"}
    assert "keel_secret_token" not in repr(transport)
    with HttpTransport(server.url) as anonymous:
        assert anonymous.call("GET", "/auth") == {"authorization": None}
        with pytest.raises(Unauthenticated) as err:  # the hint says how to get a token
            anonymous.call("GET", "/private")
        assert err.value.hint == f"run 'keel login {server.url}' or set KEEL_TOKEN"
    with pytest.raises(Unauthenticated) as err:
        transport.call("GET", "/private")
    assert err.value.hint == "send one"


def test_keel_errors_come_back_as_the_same_exception(transport: HttpTransport) -> None:
    with pytest.raises(NotFound) as missing:
        transport.call("GET", "/not-found")
    assert (missing.value.message, missing.value.hint) == ("no run 'x'", "list runs")
    with pytest.raises(Forbidden):
        transport.request("PUT", "/forbidden", body=b"data")
    with pytest.raises(KeelError) as novel:
        transport.call("GET", "/novel")
    assert novel.value.code == "brand_new"
    with pytest.raises(TooLarge):  # no keel body: mapped from the status
        transport.call("GET", "/too-large")
    with pytest.raises(StoreError, match=r"/teapot failed: HTTP 502"):
        transport.call("GET", "/teapot")
    with pytest.raises(NotFound):  # HEAD replies have no body
        transport.request("HEAD", "/not-found")
    # The connection is still usable after every error.
    assert transport.call("GET", "/ok")["ok"] is True


def test_bodies_stream_from_files_and_iterables(transport: HttpTransport, tmp_path: Path) -> None:
    data = os.urandom(BIG + 17)
    file = tmp_path / "blob"
    file.write_bytes(data)
    with open(file, "rb") as fh:
        got = transport.request("PUT", "/echo", body=fh).json()
    assert got == {**got, "size": len(data), "sha": hashlib.sha256(data).hexdigest(), "length": str(len(data))}
    assert not got["chunked"]

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    got = transport.request("PUT", "/echo", body=pieces()).json()
    assert got["chunked"] and got["size"] == len(data) and got["sha"] == hashlib.sha256(data).hexdigest()

    class Unsized(io.RawIOBase):  # a pipe-like reader: no length known
        def __init__(self) -> None:
            self.inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            return self.inner.read(size)

        def tell(self) -> int:
            raise OSError("not seekable")

    got = transport.request("PUT", "/echo", body=Unsized()).json()  # type: ignore[arg-type]
    assert got["chunked"] and got["size"] == len(data)


def test_an_error_sent_before_the_body_was_read_still_arrives(transport: HttpTransport) -> None:
    with pytest.raises(TooLarge, match="over the limit"):
        transport.request("PUT", "/refuse-early", body=os.urandom(8 << 20))
    assert transport.call("GET", "/ok")["ok"] is True


def test_download_streams_in_chunks(transport: HttpTransport) -> None:
    with transport.request("GET", "/big") as response:
        sizes = [len(chunk) for chunk in response.iter_chunks(1 << 18)]
    assert sum(sizes) == BIG and max(sizes) <= 1 << 18 and len(sizes) >= 12
    assert transport.call("GET", "/ok")["ok"] is True


def test_keep_alive_reuses_one_connection_per_thread(transport: HttpTransport, server: StubServer) -> None:
    start = len(server.seen)
    for _ in range(5):
        transport.call("GET", "/ok")
    assert len(_connections_used(server, start)) == 1

    start = len(server.seen)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                assert transport.call("GET", "/ok")["ok"] is True
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(server.seen) - start == 40
    assert len(_connections_used(server, start)) == 4
    late = threading.Thread(target=transport.call, args=("GET", "/ok"))
    late.start()
    late.join()
    assert len(transport._connections) == 2  # this thread's and the late one's: finished threads' were closed


def test_an_unfinished_reply_does_not_poison_the_connection(transport: HttpTransport) -> None:
    response = transport.request("GET", "/big")
    assert len(response._raw.read(1000)) == 1000  # read a little, then make another request
    assert transport.call("GET", "/ok")["ok"] is True
    response.close()
    assert transport.call("GET", "/ok")["ok"] is True


def test_reconnects_when_the_server_closed_a_kept_alive_connection(
    transport: HttpTransport, server: StubServer
) -> None:
    transport.call("GET", "/close-after")
    time.sleep(0.05)
    assert transport.call("GET", "/ok")["ok"] is True
    # The server takes the request on the old connection and hangs up without a reply.
    transport.call("GET", "/ok")
    start = len(server.seen)
    assert transport.request("PUT", "/flaky", body=b"again").json()["ok"] is True
    assert len(_connections_used(server, start)) == 2  # the dropped attempt, then a fresh connection


def test_unreachable_and_slow_servers_raise_store_errors(server: StubServer) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StoreError, match=f"cannot reach the keel server at http://127.0.0.1:{port}/ok") as err:
        HttpTransport(f"http://127.0.0.1:{port}").call("GET", "/ok")
    assert err.value.hint and "server is running" in err.value.hint
    with HttpTransport(server.url, timeout=0.2) as slow, pytest.raises(StoreError, match="no answer in time"):
        slow.call("GET", "/slow")


def test_base_urls_are_normalized() -> None:
    assert normalize_base_url("HTTP://Example.COM:8000/") == "http://example.com:8000"
    assert normalize_base_url("https://keel.example.com/team/") == "https://keel.example.com/team"
    for bad in ("ftp://x", "http://", "localhost:8000", "http://u:p@host"):
        with pytest.raises(InvalidInput):
            normalize_base_url(bad)


def test_credentials_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_CONFIG_DIR", str(tmp_path / "conf"))
    monkeypatch.delenv("KEEL_TOKEN", raising=False)
    assert token_for("http://a:1") is None
    path = save_token("http://A:1/", "keel_aaa")
    save_token("https://b.example.com", 'keel_"quoted"\\')
    assert path == credentials_path() == tmp_path / "conf" / "credentials.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token_for("http://a:1") == "keel_aaa"
    assert token_for("https://b.example.com/") == 'keel_"quoted"\\'
    monkeypatch.setenv("KEEL_TOKEN", "keel_env")
    assert token_for("http://a:1") == "keel_env"
    monkeypatch.delenv("KEEL_TOKEN")
    assert forget_token("http://a:1") and not forget_token("http://a:1")
    assert token_for("http://a:1") is None and token_for("https://b.example.com") is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(InvalidInput):
        save_token("http://a:1", "two words")


def test_credentials_default_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEEL_CONFIG_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert credentials_path() == tmp_path / "xdg" / "keel" / "credentials.toml"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert credentials_path() == tmp_path / "home" / ".config" / "keel" / "credentials.toml"
    (tmp_path / "xdg").mkdir()
    broken = tmp_path / "broken" / "credentials.toml"
    broken.parent.mkdir()
    broken.write_text("not = [toml")
    monkeypatch.setenv("KEEL_CONFIG_DIR", str(broken.parent))
    with pytest.raises(StoreError, match="cannot read"):
        token_for("http://a:1")


def test_the_object_store_follows_presigned_redirects(server: StubServer, tmp_path: Path) -> None:
    oid = hash_bytes(OBJECT)
    with HttpObjectStore(server.url, "keel_secret_token") as store:
        start = len(server.seen)
        assert store.get_bytes(oid) == OBJECT
        store.get_file(oid, tmp_path / "object")
        assert (tmp_path / "object").read_bytes() == OBJECT and store.presigned_downloads == 2
        to_bucket = [headers for _, path, headers, _ in server.seen[start:] if path.startswith("/bucket/")]
        assert len(to_bucket) == 2 and all("Authorization" not in h for h in to_bucket)  # the token stays home
        with pytest.raises(IntegrityError):  # what arrives is checked against the oid
            store.get_bytes(hash_bytes(b"other"))


def test_the_object_store_falls_back_when_the_bucket_is_unreachable(server: StubServer) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        server.bucket_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        with HttpObjectStore(server.url, "keel_secret_token") as store:
            assert store.get_bytes(hash_bytes(OBJECT)) == OBJECT
            assert store.presigned_downloads == 0 and store.presign is False
    finally:
        server.bucket_url = server.url
