"""Issue 28's prompt operations through a keel server (the sdk's remote proxies over the real
app, in process): rollback with steps, alias set at a time, latest and aliases as of a time,
and the alias case rule."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import keel
from keel.core.times import format_at
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
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``keel.*`` talks to an in-process keel server as its admin (what KEEL_URI + a token do)."""
    app = create_app(f"sqlite:///{tmp_path / 'keel.db'}", str(tmp_path / "objects"))
    auth = AuthStore(app.state.keel.store.db)
    auth.create_user("root", is_admin=True)
    token, _ = auth.create_token("root", "test")
    monkeypatch.setenv("KEEL_URI", URL)
    monkeypatch.setenv("KEEL_SPOOL_DIR", str(tmp_path / "spool"))
    with ASGIAppTransport(app) as transport:
        client = HttpClient(URL, token, transport=transport)
        store = RemoteStore(client, HttpObjectStore(URL, transport=client))
        sessions._SESSIONS[(URL, "")] = sessions.Session(remote(TrackingService, store), store)
        try:
            yield
        finally:
            sessions.reset()


def test_time_travel_and_rollback_through_a_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with served(tmp_path, monkeypatch):
        for text, version in (("A", "1.0.0"), ("B", "1.0.1"), ("C", "5.0.0"), ("D", "6.0.0")):
            keel.prompts.register("chat", template=text + " {{ q }}", changelog=text, version=version)
        moves = [keel.prompts.set_alias("chat", "Production", v) for v in ("1.0.0", "1.0.1", "5.0.0", "1.0.0", "6.0.0")]
        history = keel.prompts.history("chat", "PRODUCTION")
        assert [m.new for m in history] == ["1.0.0", "1.0.1", "5.0.0", "1.0.0", "6.0.0"]
        assert all(m.ref == "Production" and m.id for m in history)

        rows = [(3, "1.0.1"), (1, "6.0.0")]  # then undo that rollback: a rollback is a move
        for steps, expected in rows:
            assert keel.prompts.rollback("chat", "production", steps=steps).new == expected
        with pytest.raises(keel.Conflict, match="cannot be undone"):
            keel.prompts.rollback("chat", "production", steps=99)

        when = format_at(moves[2].at)
        assert keel.prompts.set_alias("chat", "production", at=when).new == "5.0.0"
        assert keel.prompts.resolve("chat", "production", at=moves[0].at) == "1.0.0"
        assert keel.prompts.get("chat", at=when).version == "6.0.0"  # registered before the moves
        assert keel.prompts.aliases_at("chat", when) == {"Production": "5.0.0"}
        assert [v.version for v in keel.prompts.versions("chat", at=when)][:1] == ["6.0.0"]
        for bad in ("2026-12-07T10:00:00", 1_733_500_000):
            with pytest.raises(keel.InvalidInput):
                keel.prompts.get("chat", at=bad)
        revert = keel.prompts.register("chat", template="A {{ q }}", changelog="")
        assert (revert.version, revert.info.changelog) == ("6.0.1", "Revert to 1.0.0")
