"""A keel server as a data remote: objects pushed through its objects API are pinned, so the
server's ``keel gc`` keeps them (the versions naming them live in the client's database)."""

from __future__ import annotations

import time
from pathlib import Path

from keel.core.hashing import hash_bytes
from keel.objects.http import HttpObjectStore
from keel.server import create_app
from keel.services import gc
from keel.services.auth import AuthStore
from keel.transport import HttpClient
from keel.transport.asgi import ASGIAppTransport

URL = "http://testserver"


def test_pushed_and_found_objects_are_pinned_and_survive_gc_an_orphan_does_not(tmp_path: Path) -> None:
    app = create_app(f"sqlite:///{tmp_path / 'keel.db'}", str(tmp_path / "objects"))
    store = app.state.keel.store
    auth = AuthStore(store.db)
    auth.create_user("wren")
    auth.create_user("reed")
    writer, _ = auth.create_token("wren", "t")
    reader, _ = auth.create_token("reed", "t")
    auth.grant("wren", "alpha", "writer", "wren")
    auth.grant("reed", "alpha", "reader", "wren")
    already = store.objects.put_bytes(b"stored before, say as a purged run's artifact")
    orphan = store.objects.put_bytes(b"nobody pushed or references this")
    big = b"z" * (2 << 20)  # streamed through a spool file
    with ASGIAppTransport(app) as transport:
        with HttpClient(URL, reader, transport=transport) as client:
            assert HttpObjectStore(URL, transport=client).exists_many([already]) == {already}
        assert gc.referenced(store, [already]) == set()  # a reader's check pins nothing
        with HttpClient(URL, writer, transport=transport) as client:
            sdk = HttpObjectStore(URL, transport=client)  # the remote sdk's uploads: rows will name them
            logged = sdk.put_bytes(b"an artifact the remote sdk uploaded")
            assert sdk.freshen_many([already]) == {already}
            assert gc.referenced(store, [logged, already]) == set()
            remote = HttpObjectStore(URL, transport=client)
            remote.pin = True  # keel data push
            small = remote.put_bytes(b"a pushed data file")
            (tmp_path / "big").write_bytes(big)
            large, _ = remote.put_file(tmp_path / "big")
            assert remote.freshen_many([already, hash_bytes(b"absent")]) == {already}  # a push relies on it
    report = gc.collect(store, grace_s=0, now=time.time() + 3600)
    assert sorted(report.removed_oids) == sorted([orphan, logged])  # no row names the sdk's upload
    assert {info.oid for info in store.objects.iter_objects()} == {already, small, large}
    assert gc.referenced(store, [small, large, already, orphan]) == {small, large, already}


def test_a_data_remote_at_a_server_pushes_with_pins_and_other_remotes_are_plain(tmp_path: Path) -> None:
    from keel.services import data_remote

    remote = data_remote._open(None, "origin", "http://127.0.0.1:9")  # type: ignore[arg-type]
    assert isinstance(remote, HttpObjectStore) and remote.pin is True
    remote.close()
    assert not hasattr(data_remote._open(None, "folder", str(tmp_path / "remote")), "pin")  # type: ignore[arg-type]
