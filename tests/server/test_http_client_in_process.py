"""The HTTP client's transport seam: keel's own client against the real ASGI app, in process.

``HttpClient(..., transport=...)`` takes any ``httpx.BaseTransport``;
``ASGIAppTransport`` runs httpx's (async-only) ``ASGITransport`` on a helper
thread's event loop, so the same client code the sdk uses meets the server's real
routes, auth and error shape without a socket.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from keel.core.batch import WriteBatch
from keel.core.entities import now_ms
from keel.core.hashing import hash_bytes
from keel.errors import Forbidden, InvalidInput, NotFound, Unauthenticated
from keel.objects.http import HttpObjectStore
from keel.sdk.remote import RemoteStore, remote
from keel.server import create_app
from keel.services.auth import AuthStore
from keel.services.tracking import TrackingService
from keel.transport import HttpClient
from keel.transport.asgi import ASGIAppTransport

URL = "http://testserver"


@dataclass
class InProcess:
    app: ASGIAppTransport
    tokens: dict[str, str]

    def client(self, user: str | None) -> HttpClient:
        """keel's client, as ``user`` (None: no token), over the in-process transport."""
        return HttpClient(URL, self.tokens[user] if user else None, transport=self.app)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    folder: Path = tmp_path_factory.mktemp("in-process")
    app = create_app(f"sqlite:///{folder / 'keel.db'}", str(folder / "objects"))
    auth = AuthStore(app.state.keel.store.db)
    tokens = {}
    for name in ("root", "rita"):
        auth.create_user(name, is_admin=name == "root")
        tokens[name], _ = auth.create_token(name, "test")
    auth.grant("rita", "alpha", "reader", "root")
    with ASGIAppTransport(app) as transport:
        yield InProcess(transport, tokens)


def test_calls_and_errors_round_trip_through_the_app(server: InProcess) -> None:
    with server.client("root") as root:
        assert root.call("GET", "/api/v1/auth/whoami")["user"]["name"] == "root"
        with pytest.raises(NotFound) as missing:
            root.call("GET", f"/api/v1/runs/{'f' * 32}")
        assert missing.value.hint  # the server's hint arrives with the error
        tracking = remote(TrackingService, RemoteStore(root, HttpObjectStore(URL, transport=root)))  # the sdk's proxy
        tracking.write_batch(WriteBatch(new_runs=[("a" * 32, "alpha", "r", now_ms(), None, "{}")]))
        assert root.call("GET", f"/api/v1/runs/{'a' * 32}")["run_id"] == "a" * 32
    with server.client(None) as anonymous, pytest.raises(Unauthenticated) as err:
        anonymous.call("GET", "/api/v1/auth/whoami")
    assert err.value.hint == f"run 'keel login {URL}' or set KEEL_TOKEN"
    with HttpClient(URL, "keel_forged", transport=server.app) as forged, pytest.raises(Unauthenticated):
        forged.call("GET", "/api/v1/auth/whoami")


def test_the_object_store_streams_through_the_client(server: InProcess, tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    file = tmp_path / "big.bin"
    file.write_bytes(data)
    with server.client("root") as root, server.client("rita") as rita:
        store = HttpObjectStore(URL, transport=root)
        oid, size = store.put_file(file)  # sent from the file, in chunks
        assert (oid, size) == (hash_bytes(data), len(data))
        assert store.exists(oid) and store.exists_many([oid, hash_bytes(b"absent")]) == {oid}
        out = io.BytesIO()
        store._copy_to(oid, out)  # read in chunks and verified against the oid
        assert out.getvalue() == data
        with pytest.raises(InvalidInput):  # the server checks what it receives against the oid
            root.request("PUT", f"/api/v1/objects/{hash_bytes(b'x')}", body=b"not x").close()
        with pytest.raises(Forbidden):
            HttpObjectStore(URL, transport=rita).put_bytes(b"a reader cannot write")
