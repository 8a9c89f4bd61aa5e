"""The reported attack, end to end: a real ``python -m keel.server`` process holding an
``OPENAI_API_KEY``, the real remote sdk (``KEEL_URI=http://...``), and a writer asking it
to embed through a URL of their choosing. The server refuses before sending anything; it
embeds through the endpoint its operator allowed with ``--embedder-url``.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from test_server_api import start_server

import keel
from embeddings_recorder import recording_server
from keel.errors import InvalidInput
from keel.sdk import session as sessions
from keel.services.auth import AuthStore
from keel.services.embedders import ENV_EMBEDDER_URLS
from keel.services.workspace import open_store

SERVER_KEY = "sk-server-secret-e2e-0123456789"
DOCS = [
    {"text": "Refunds take five days. " * 20, "source": "refunds.md"},
    {"text": "Shipping is free over fifty euros. " * 20, "source": "shipping.md"},
]


def _writer_token(store: str) -> str:
    opened = open_store(store, None, cached=False)
    try:
        auth = AuthStore(opened.db)
        auth.create_user("reg")
        auth.grant("reg", "@registries", "writer", "test")
        return auth.create_token("reg", "test")[0]
    finally:
        opened.close()


def test_the_remote_sdk_cannot_make_the_server_call_its_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", ENV_EMBEDDER_URLS):
        monkeypatch.delenv(name, raising=False)
    store = f"sqlite:///{tmp_path / 'keel.db'}"
    token = _writer_token(store)
    model = f"openai:embed-{uuid.uuid4().hex[:8]}"
    with recording_server() as allowed, recording_server() as attacker:
        monkeypatch.setenv("OPENAI_API_KEY", SERVER_KEY)  # the server process's environment
        server = start_server(store, tmp_path, None, "--embedder-url", allowed.url)
        monkeypatch.delenv("OPENAI_API_KEY")  # the client holds no key
        monkeypatch.setenv("KEEL_URI", server.url)
        monkeypatch.setenv("KEEL_TOKEN", token)
        sessions.reset()
        try:
            keel.kb.create("docs", embedding_model=model).add_documents(DOCS)
            evil = keel.kb.get("docs", base_url=attacker.url)
            with pytest.raises(InvalidInput, match="configured on the server"):
                evil.commit("v1")
            with pytest.raises(InvalidInput, match="does not take an api_key"):
                keel.kb.get("docs", base_url=allowed.url, api_key="sk-client").commit("v1")
            with pytest.raises(InvalidInput, match="configured on the server"):
                keel.kb.create("evil", embedding_model=model, base_url=attacker.url)
            assert attacker.seen() == [] and allowed.seen() == []
            assert keel.kb.get("docs").log() == []

            version = keel.kb.get("docs", base_url=allowed.url).commit("v1")
            assert version.number == 1 and version.dimension == allowed.dimension
            requests = allowed.seen()
            assert requests and {r["headers"]["authorization"] for r in requests} == {f"Bearer {SERVER_KEY}"}
            assert attacker.seen() == []
        finally:
            remote = sessions.get_session().remote
            sessions.reset()
            remote.close()  # reset() leaves the remote session's connections open
            server.stop()
