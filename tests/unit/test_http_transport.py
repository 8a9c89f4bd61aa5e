"""The HTTP client (keel.transport) against tiny real servers on 127.0.0.1: errors,
streaming, keep-alive, reconnects, retries with backoff, timeouts, proxies from the
environment, TLS with a private CA, and the credentials file."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import socket
import ssl
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
from keel.objects.http import HttpObjectStore
from keel.transport import (
    HttpClient,
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
        if path.startswith("/unavailable-twice/"):  # 503 (or 429 with Retry-After) twice, then 200
            hits = self.server.hits[path] = self.server.hits.get(path, 0) + 1
            if hits <= 2:
                if "rate" in path:
                    self.send_response(429)
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._json(503, {"error": {"code": "store", "message": "database away", "hint": "retry later"}})
                return
            self._json(200, {"ok": True, "hits": hits})
            return
        if path == "/wait-long":  # asks for a wait longer than the client will do
            self.server.hits[path] = self.server.hits.get(path, 0) + 1
            self.send_response(503)
            self.send_header("Retry-After", "3600")
            self.send_header("Content-Length", "0")
            self.end_headers()
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
            self.server.hits[path] = self.server.hits.get(path, 0) + 1
            self._reply(502, b"<html>\n<body>bad\n gateway</body>\n</html>", "text/html")
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
        self.hits: dict[str, int] = {}
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
def transport(server: StubServer) -> Iterator[HttpClient]:
    t = HttpClient(server.url, "keel_secret_token", timeout=5, backoff=0.01)
    yield t
    t.close()


def _connections_used(server: StubServer, since: int) -> set[Any]:
    return {address for *_, address in server.seen[since:]}


def test_call_sends_and_reads_json_with_nan(transport: HttpClient) -> None:
    got = transport.call("POST", "/echo", {"loss": math.inf, "x": [1, 2]})
    assert got["json"]["loss"] == math.inf
    assert transport.call("GET", "/ok", params={"a": "b c", "flag": True, "skip": None})["query"] == "a=b+c&flag=true"
    assert math.isnan(transport.call("GET", "/ok")["nan"])


def test_token_is_sent_and_hidden_from_repr(transport: HttpClient, server: StubServer) -> None:
    assert transport.call("GET", "/auth") == {"authorization": "Bearer keel_secret_token"}
    assert "keel_secret_token" not in repr(transport)
    with HttpClient(server.url) as anonymous:
        assert anonymous.call("GET", "/auth") == {"authorization": None}
        with pytest.raises(Unauthenticated) as err:  # the hint says how to get a token
            anonymous.call("GET", "/private")
        assert err.value.hint == f"run 'keel login {server.url}' or set KEEL_TOKEN"
    with pytest.raises(Unauthenticated) as err:
        transport.call("GET", "/private")
    assert err.value.hint == "send one"


def test_keel_errors_come_back_as_the_same_exception(transport: HttpClient) -> None:
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
    with pytest.raises(StoreError, match=r"/teapot failed: HTTP 502"):  # retried first: GET is idempotent
        transport.call("GET", "/teapot")
    with pytest.raises(NotFound):  # HEAD replies have no body
        transport.request("HEAD", "/not-found")
    # The connection is still usable after every error.
    assert transport.call("GET", "/ok")["ok"] is True


def test_bodies_stream_from_files_and_iterables(transport: HttpClient, tmp_path: Path) -> None:
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


def test_an_error_sent_before_the_body_was_read_still_arrives(transport: HttpClient) -> None:
    with pytest.raises(TooLarge, match="over the limit"):
        transport.request("PUT", "/refuse-early", body=os.urandom(8 << 20))
    assert transport.call("GET", "/ok")["ok"] is True


def test_download_streams_in_chunks(transport: HttpClient) -> None:
    with transport.request("GET", "/big") as response:
        sizes = [len(chunk) for chunk in response.iter_chunks(1 << 18)]
    assert sum(sizes) == BIG and max(sizes) <= 1 << 18 and len(sizes) >= 12
    assert transport.call("GET", "/ok")["ok"] is True


def test_keep_alive_reuses_one_connection_per_thread(transport: HttpClient, server: StubServer) -> None:
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
    assert 1 <= len(_connections_used(server, start)) <= 4  # one pool: at most one connection per thread
    start = len(server.seen)
    for _ in range(5):  # ... kept alive for the next calls
        transport.call("GET", "/ok")
    assert len(_connections_used(server, start)) == 1


def test_an_unfinished_reply_does_not_poison_the_connection(transport: HttpClient) -> None:
    response = transport.request("GET", "/big")
    chunks = response.iter_chunks(1000)
    assert len(next(chunks)) == 1000  # read a little, then make another request
    assert transport.call("GET", "/ok")["ok"] is True
    chunks.close()
    assert response.closed
    assert transport.call("GET", "/ok")["ok"] is True


def test_reconnects_when_the_server_closed_a_kept_alive_connection(transport: HttpClient, server: StubServer) -> None:
    transport.call("GET", "/close-after")
    time.sleep(0.05)
    assert transport.call("GET", "/ok")["ok"] is True
    # The server takes the request on the old connection and hangs up without a reply.
    transport.call("GET", "/ok")
    start = len(server.seen)
    assert transport.request("PUT", "/flaky", body=b"again").json()["ok"] is True
    assert len(_connections_used(server, start)) == 2  # the dropped attempt, then a fresh connection


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_and_slow_servers_raise_store_errors(server: StubServer) -> None:
    port = _closed_port()
    started = time.monotonic()
    with pytest.raises(StoreError, match=f"cannot reach the keel server at http://127.0.0.1:{port}/ok") as err:
        HttpClient(f"http://127.0.0.1:{port}", backoff=0.01).call("POST", "/ok", {"x": 1})
    assert err.value.hint and "server is running" in err.value.hint
    assert time.monotonic() - started < 2
    with HttpClient(server.url, timeout=0.2) as slow, pytest.raises(StoreError, match="no answer in time"):
        slow.call("GET", "/slow")


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_server_that_never_answers_is_an_error_in_bounded_time(silent_server: str) -> None:
    for method in ("GET", "POST"):
        started = time.monotonic()
        with HttpClient(silent_server, timeout=0.3, backoff=0.01) as client:
            with pytest.raises(StoreError, match="no answer in time") as err:
                client.call(method, "/api/v1/auth/whoami")
        assert time.monotonic() - started < 3  # a read timeout is not retried: the wait does not multiply
        assert "\n" not in str(err.value)


def test_idempotent_calls_are_retried_on_503_and_429(transport: HttpClient, server: StubServer) -> None:
    assert transport.call("GET", "/unavailable-twice/get") == {"ok": True, "hits": 3}
    assert transport.request("PUT", "/unavailable-twice/put", body=b"data").json()["hits"] == 3
    assert transport.call("POST", "/unavailable-twice/marked", {"a": 1}, idempotent=True)["hits"] == 3
    started = time.monotonic()
    assert transport.call("GET", "/unavailable-twice/rate")["hits"] == 3  # Retry-After: 0 is honoured
    assert time.monotonic() - started < 2


def test_calls_that_are_not_idempotent_are_not_retried(transport: HttpClient, server: StubServer) -> None:
    with pytest.raises(StoreError, match="database away") as err:  # the server's own error comes back
        transport.call("POST", "/unavailable-twice/post", {"a": 1})
    assert err.value.hint == "retry later"
    assert server.hits["/unavailable-twice/post"] == 1

    def pieces() -> Iterator[bytes]:  # a body that cannot be sent twice
        yield b"once"

    with pytest.raises(StoreError):
        transport.request("PUT", "/unavailable-twice/iterator", body=pieces())
    assert server.hits["/unavailable-twice/iterator"] == 1


def test_retries_stop_after_the_limit_and_on_a_long_retry_after(server: StubServer) -> None:
    before = server.hits.get("/teapot", 0)
    with HttpClient(server.url, retries=2, backoff=0.01) as client:
        with pytest.raises(StoreError, match=r"^GET http://127.0.0.1:\d+/teapot failed: HTTP 502 Bad Gateway: ") as err:
            client.call("GET", "/teapot")
        assert server.hits["/teapot"] - before == 3 and "\n" not in str(err.value)  # the first try and two retries
        assert err.value.hint and "retry later" in err.value.hint
        started = time.monotonic()
        with pytest.raises(StoreError, match="HTTP 503"):
            client.call("GET", "/wait-long")
        assert server.hits["/wait-long"] == 1 and time.monotonic() - started < 2


def test_backoff_grows_and_is_jittered() -> None:
    client = HttpClient("http://127.0.0.1:9", backoff=1.0, max_backoff=8.0)
    delays = [[client._delay(attempt) for attempt in (1, 2, 3, 4, 5)] for _ in range(50)]
    for row in delays:
        for attempt, delay in enumerate(row, 1):
            ceiling = min(8.0, 2 ** (attempt - 1))
            assert ceiling / 2 <= delay <= ceiling
    assert len({row[2] for row in delays}) > 1  # two clients do not retry in step
    client.close()


def _clear_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_proxies_from_the_environment_are_honoured(server: StubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_proxies(monkeypatch)
    proxy = f"http://user:secret@127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    with HttpClient(server.url, backoff=0.01) as client, pytest.raises(StoreError) as err:
        client.call("GET", "/ok")
    assert f"through the proxy http://127.0.0.1:{proxy.rsplit(':', 1)[1]}" in err.value.message
    assert "secret" not in str(err.value) and err.value.hint and "NO_PROXY" in err.value.hint
    https_url = f"https://127.0.0.1:{_closed_port()}"  # HTTPS_PROXY is the one used for https:// URLs
    monkeypatch.delenv("HTTP_PROXY")
    with HttpClient(https_url, backoff=0.01) as client, pytest.raises(StoreError, match="through the proxy"):
        client.call("GET", "/ok")
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with HttpClient(server.url) as client:  # NO_PROXY: straight to the server
        assert client.call("GET", "/ok")["ok"] is True


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A private CA, and a certificate for 127.0.0.1 it signed: (ca.pem, cert.pem, key.pem)."""
    import datetime
    import ipaddress

    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, key: Any, issuer: str, signer: Any, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("keel test CA", ca_key, "keel test CA", ca_key, True)
    cert = build("127.0.0.1", key, "keel test CA", ca_key, False)
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def test_tls_is_verified_against_the_ca_the_user_configures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_proxies(monkeypatch)
    monkeypatch.delenv("KEEL_CA_BUNDLE", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    ca, cert, key = _certificates(tmp_path)
    srv = StubServer()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{srv.server_address[1]}"
    try:
        with HttpClient(url, backoff=0.01) as untrusted, pytest.raises(StoreError, match="TLS with") as err:
            untrusted.call("GET", "/ok")
        assert err.value.hint and "KEEL_CA_BUNDLE" in err.value.hint
        with HttpClient(url, verify=ca) as client:
            assert client.call("GET", "/ok")["ok"] is True
        monkeypatch.setenv("KEEL_CA_BUNDLE", str(ca))
        with HttpClient(url) as client:
            assert client.call("GET", "/ok")["ok"] is True
        monkeypatch.setenv("KEEL_CA_BUNDLE", str(tmp_path / "missing.pem"))
        with pytest.raises(InvalidInput, match="KEEL_CA_BUNDLE"):
            HttpClient(url)
        monkeypatch.delenv("KEEL_CA_BUNDLE")
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # the usual variable works too
        with HttpClient(url) as client:
            assert client.call("GET", "/ok")["ok"] is True
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_client_sends_no_cookies_and_logs_no_signatures(
    transport: HttpClient, server: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="httpx"):
        with transport.open_url(server.url + "/bucket/blob?X-Amz-Signature=s3cr3t") as response:
            assert response.read() == OBJECT
    assert "s3cr3t" not in caplog.text and "/bucket/blob" in caplog.text
    assert "Authorization" not in server.seen[-1][2]


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
    server.bucket_url = f"http://127.0.0.1:{_closed_port()}"
    try:
        with HttpObjectStore(server.url, "keel_secret_token") as store:
            assert store.get_bytes(hash_bytes(OBJECT)) == OBJECT
            assert store.presigned_downloads == 0 and store.presign is False
    finally:
        server.bucket_url = server.url
