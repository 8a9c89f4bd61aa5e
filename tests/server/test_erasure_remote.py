"""Erasing conversations and traces through a keel server: the remote proxies of
``conversations.delete`` and ``traces.delete`` over the real ASGI app in process. A reader is
refused with nothing erased (a dry run too: it is the writer's operation); a writer erases,
the audit row names the authenticated caller whatever ``who`` the client sent, and the audit
is shown to whoever may erase that kind there, not to readers."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from keel.core.conversations import ConversationBatch
from keel.errors import Forbidden, NotFound
from keel.objects.http import HttpObjectStore
from keel.sdk.remote import RemoteStore, remote
from keel.server import create_app
from keel.services.auth import AuthStore
from keel.services.conversations import ConversationService
from keel.services.erasures import ErasureService
from keel.services.traces import TraceService
from keel.transport import HttpClient
from keel.transport.asgi import ASGIAppTransport

URL = "http://testserver"


def _conversation(cid: str, user: str) -> tuple:
    return ConversationService.prepare(
        {"conversation_id": cid, "messages": [{"role": "user", "content": f"hi from {user}"}],
         "metadata": {"user_id": user}}
    )  # fmt: skip


def _span(user: str) -> dict:
    now = time.time_ns()
    return {
        "trace_id": secrets.token_hex(16),
        "span_id": secrets.token_hex(8),
        "name": "answer",
        "start_ns": now,
        "end_ns": now + 1000,
        "attributes": {"keel.user_id": user},
    }


def test_readers_are_refused_writers_erase_and_see_the_audit(tmp_path: Path) -> None:
    app = create_app(f"sqlite:///{tmp_path / 'keel.db'}", str(tmp_path / "objects"))
    keel = app.state.keel
    keel.conversations.write_batch(
        ConversationBatch([_conversation(f"c{i}", "u-42" if i < 3 else "u-7") for i in range(6)], [])
    )
    keel.traces.ingest([_span("u-42"), _span("u-42"), _span("u-7")], project="shop")
    auth = AuthStore(keel.store.db)
    auth.create_user("rita")
    token, _ = auth.create_token("rita", "support")
    auth.grant("rita", "@registries", "reader", "rita")
    auth.grant("rita", "shop", "reader", "rita")
    with ASGIAppTransport(app) as transport, HttpClient(URL, token, transport=transport) as client:
        store = RemoteStore(client, HttpObjectStore(URL, transport=client))
        conversations = remote(ConversationService, store)
        traces = remote(TraceService, store)
        audit = remote(ErasureService, store)
        for refused in (
            lambda: conversations.delete(filter="metadata.user_id = 'u-42'"),
            lambda: conversations.delete(filter="metadata.user_id = 'u-42'", dry_run=True),
            lambda: conversations.delete(["c0"]),
            lambda: traces.delete("shop", filter="user_id = 'u-42'"),
        ):
            with pytest.raises(Forbidden):
                refused()
        assert keel.conversations.count() == 6 and keel.traces.count("shop") == 3

        auth.grant("rita", "@registries", "writer", "rita")
        with pytest.raises(NotFound):
            conversations.delete(["c0", "no-such"])
        report = conversations.delete(filter="metadata.user_id = 'u-42'", who="somebody else")
        assert (report.matched, report.deleted) == (3, 3)
        with pytest.raises(Forbidden):  # still a reader on the project
            traces.delete("shop", filter="user_id = 'u-42'")
        (entry,) = audit.entries()  # the trace erasure was refused: no row; readers of shop see none
        assert (entry.actor, entry.kind, entry.filter, entry.id) == (
            "rita",
            "conversations",
            "metadata.user_id = 'u-42'",
            report.audit_id,
        )

        auth.grant("rita", "shop", "writer", "rita")
        assert traces.delete("shop", filter="user_id = 'u-42'").deleted == 2
        assert [e.kind for e in audit.entries()] == ["traces", "conversations"]
        auth.grant("rita", "shop", "reader", "rita")
        assert [e.kind for e in audit.entries()] == ["conversations"]  # shop's entry: writers only
    assert keel.conversations.count() == 3 and keel.conversations.count("metadata.user_id = 'u-7'") == 3
    assert keel.traces.count("shop") == 1
