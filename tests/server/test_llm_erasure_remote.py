"""Erasing recorded LLM calls through a keel server: the remote proxy of ``llm.delete_calls``
over the real ASGI app in process. A reader is refused with nothing erased; a writer erases,
and the audit row names the authenticated caller, whatever ``who`` the client sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.core.entities import now_ms
from keel.errors import Forbidden, NotFound
from keel.meta import erasures
from keel.objects.http import HttpObjectStore
from keel.sdk.remote import RemoteStore, remote
from keel.server import create_app
from keel.services.auth import AuthStore
from keel.services.llm import LlmService, PendingCall
from keel.transport import HttpClient
from keel.transport.asgi import ASGIAppTransport

URL = "http://testserver"


def _calls(user: str, count: int) -> list[PendingCall]:
    return [
        PendingCall(
            "chat.completions",
            {"model": "gpt-4", "messages": [{"role": "user", "content": f"{user} says {i}"}]},
            {"id": f"c{i}", "object": "chat.completion", "model": "gpt-4", "choices": []},
            1.0,
            now_ms(),
            context={"metadata": {"user_id": user}},
        )
        for i in range(count)
    ]


def test_a_reader_is_refused_and_a_writer_erases(tmp_path: Path) -> None:
    app = create_app(f"sqlite:///{tmp_path / 'keel.db'}", str(tmp_path / "objects"))
    local = app.state.keel.llm
    local.write(_calls("u-42", 4) + _calls("u-7", 4))
    before = [(r.id, r.oid, r.part) for r in local.calls()]
    auth = AuthStore(app.state.keel.store.db)
    auth.create_user("rita")
    token, _ = auth.create_token("rita", "support")
    auth.grant("rita", "@registries", "reader", "rita")
    with ASGIAppTransport(app) as transport, HttpClient(URL, token, transport=transport) as client:
        service = remote(LlmService, RemoteStore(client, HttpObjectStore(URL, transport=client)))
        with pytest.raises(Forbidden):
            service.delete_calls(filter="metadata.user_id = 'u-42'")
        with pytest.raises(Forbidden):
            service.delete_calls(filter="metadata.user_id = 'u-42'", dry_run=True)
        assert [(r.id, r.oid, r.part) for r in local.calls()] == before

        auth.grant("rita", "@registries", "writer", "rita")
        with pytest.raises(NotFound):
            service.delete_calls(ids=[before[0][0], 10_000])
        report = service.delete_calls(filter="metadata.user_id = 'u-42'", who="somebody else")
    assert (report.matched, report.deleted, report.objects_removed) == (4, 4, 1)
    left = local.calls()
    assert {r.context["metadata"]["user_id"] for r in left} == {"u-7"}
    assert all(local.read(r).request["messages"][0]["content"].startswith("u-7 says") for r in left)
    with app.state.keel.store.db.read() as conn:
        (entry,) = erasures.listing(conn)
    assert (entry.actor, entry.kind, entry.deleted, entry.id) == ("rita", "llm_calls", 4, report.audit_id)
