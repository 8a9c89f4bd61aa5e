"""The alias a run resolved travels to a keel server (the sdk's remote proxies over the real app):
a run's 8-field lineage rows and an older client's 7-field ones are stored, and
``keel.lineage.runs_using`` answers with the runs of the projects the caller may read only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import keel
from keel.core.batch import WriteBatch
from keel.core.entities import EntityRef, new_run_id, now_ms
from keel.objects.http import HttpObjectStore
from keel.sdk import session as sessions
from keel.sdk.remote import RemoteStore, remote
from keel.server import create_app
from keel.services.auth import AuthStore
from keel.services.tracking import TrackingService
from keel.transport import HttpClient
from keel.transport.asgi import ASGIAppTransport

URL = "http://testserver"


@contextmanager
def as_user(app: ASGIAppTransport, token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``keel.*`` talks to the in-process server with ``token`` (what KEEL_URI + a token do)."""
    monkeypatch.setenv("KEEL_URI", URL)
    monkeypatch.setenv("KEEL_SPOOL_DIR", str(tmp_path / f"spool-{token[:6]}"))
    client = HttpClient(URL, token, transport=app)
    store = RemoteStore(client, HttpObjectStore(URL, transport=client))
    sessions._SESSIONS[(URL, "")] = sessions.Session(remote(TrackingService, store), store)
    try:
        yield
    finally:
        sessions.reset()


def test_refs_travel_and_runs_using_shows_only_readable_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(f"sqlite:///{tmp_path / 'keel.db'}", str(tmp_path / "objects"))
    auth = AuthStore(app.state.keel.store.db)
    auth.create_user("root", is_admin=True)
    auth.create_user("rita")
    root, _ = auth.create_token("root", "test")
    rita, _ = auth.create_token("rita", "test")
    auth.grant("rita", "alpha", "reader", "root")
    with ASGIAppTransport(app) as transport:
        with as_user(transport, root, tmp_path, monkeypatch):
            runs = {}
            for project in ("alpha", "beta"):
                with keel.start_run(project=project) as run:
                    run.use(EntityRef("prompt", "chat", "1.3.0"), "prompt", ref="production")
                runs[project] = run.id
            old = new_run_id()  # an older client's batch: a 7-field lineage row, no ref
            t = now_ms()
            sessions.get_session().service.write_batch(
                WriteBatch(
                    new_runs=[(old, "alpha", "old", t, None, "{}")],
                    lineage=[(old, "input", "prompt", "chat", "1.3.0", "prompt", t)],
                )
            )
            edges = keel.lineage.runs_using("prompt:chat@production")
            assert [(e.run_id, e.entity.version, e.ref) for e in edges] == [
                (runs["beta"], "1.3.0", "production"),
                (runs["alpha"], "1.3.0", "production"),
            ]
            assert [(e.run_id, e.ref) for e in keel.lineage.of(old)] == [(old, "")]
        with as_user(transport, rita, tmp_path, monkeypatch):
            assert [e.run_id for e in keel.lineage.runs_using("prompt:chat@production")] == [runs["alpha"]]
            assert {e.run_id for e in keel.lineage.runs_using("prompt:chat")} == {runs["alpha"], old}
            assert keel.lineage.of(runs["alpha"])[0].ref == "production"
