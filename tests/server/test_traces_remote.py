"""Traces' ties through a keel server, in process (the sdk's remote proxies over the real app):
``keel.lineage.used_by`` returns only the traces of projects the caller may read, and
conversation feedback on a trace is shown to those who may read conversations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

import keel
from keel.core.conversations import ConversationBatch
from keel.core.entities import now_ms
from keel.core.traces import SpanBatch
from keel.errors import NotFound
from keel.objects.http import HttpObjectStore
from keel.sdk import session as sessions
from keel.sdk.remote import RemoteStore, remote
from keel.server import create_app
from keel.services.auth import AuthStore
from keel.services.tracking import TrackingService
from keel.transport import HttpClient
from keel.transport.asgi import ASGIAppTransport

URL = "http://testserver"
ALPHA, BETA = "a" * 32, "b" * 32
START = 1_790_000_000_000_000_000


@dataclass
class Server:
    app: ASGIAppTransport
    tokens: dict[str, str]


def _span(trace_id: str, prompt: str, conversation: str | None = None) -> dict[str, object]:
    attributes: dict[str, object] = {"keel.prompt": prompt}
    if conversation:
        attributes["keel.conversation_id"] = conversation
    return {
        "trace_id": trace_id,
        "span_id": trace_id[:16],
        "name": "turn",
        "start_ns": START + (1 if trace_id == BETA else 0),
        "end_ns": START + 10_000_000,
        "attributes": attributes,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder: Path = tmp_path_factory.mktemp("traces-remote")
    app = create_app(f"sqlite:///{folder / 'keel.db'}", str(folder / "objects"))
    auth = AuthStore(app.state.keel.store.db)
    tokens = {}
    for name in ("root", "rita", "reg"):
        auth.create_user(name, is_admin=name == "root")
        tokens[name], _ = auth.create_token(name, "test")
    auth.grant("rita", "alpha", "reader", "root")  # alpha only: no conversations
    auth.grant("reg", "alpha", "reader", "root")
    auth.grant("reg", "@registries", "reader", "root")  # alpha, and conversations
    context = app.state.keel
    spans = [("alpha", _span(ALPHA, "chat@1.3.0", "c-9")), ("beta", _span(BETA, "chat@1.3.0"))]
    assert context.traces.write_batch(SpanBatch(spans=spans)).stored == 2
    context.conversations.write_batch(ConversationBatch(feedback=[("c-9", -1, None, "too slow", now_ms())]))
    with ASGIAppTransport(app) as transport:
        yield Server(transport, tokens)


@contextmanager
def as_user(server: Server, user: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``keel.*`` talks to the in-process server as ``user`` (what KEEL_URI + a token do)."""
    monkeypatch.setenv("KEEL_URI", URL)
    monkeypatch.setenv("KEEL_SPOOL_DIR", str(tmp_path / f"spool-{user}"))
    client = HttpClient(URL, server.tokens[user], transport=server.app)
    store = RemoteStore(client, HttpObjectStore(URL, transport=client))
    sessions._SESSIONS[(URL, "")] = sessions.Session(remote(TrackingService, store), store)
    try:
        yield
    finally:
        sessions.reset()


def test_used_by_returns_only_readable_traces(server: Server, tmp_path: Path, monkeypatch) -> None:
    with as_user(server, "root", tmp_path, monkeypatch):
        found = keel.lineage.used_by("prompt:chat@1.3.0")
        assert found == [] and [(t.project, t.trace_id) for t in found.traces] == [("beta", BETA), ("alpha", ALPHA)]
    with as_user(server, "rita", tmp_path, monkeypatch):
        found = keel.lineage.used_by("prompt:chat@1.3.0")
        assert [(t.project, t.trace_id) for t in found.traces] == [("alpha", ALPHA)]
        service = sessions.get_session().traces
        with pytest.raises(NotFound):  # a project it cannot read is refused, as if it did not exist
            service.used_by("prompt", "chat", "1.3.0", 10, ["beta"])
        assert service.used_by("prompt", "chat", None, 10, ["alpha"])[0]["trace_id"] == ALPHA


def test_conversation_feedback_needs_the_conversations_reader(server: Server, tmp_path: Path, monkeypatch) -> None:
    with as_user(server, "reg", tmp_path, monkeypatch):
        scores = keel.traces.get(ALPHA[:8], project="alpha").scores
        assert [(s.key, s.label, s.comment, s.source) for s in scores] == [
            ("thumb", "down", "too slow", "conversation")
        ]
    with as_user(server, "rita", tmp_path, monkeypatch):
        detail = keel.traces.get(ALPHA, project="alpha")  # keel.traces follows the session to rita's
        assert detail.trace.conversation_id == "c-9" and detail.scores == []
        with pytest.raises(NotFound):
            keel.traces.get(BETA, project="beta")
