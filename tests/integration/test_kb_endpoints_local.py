"""In the user's own process the embedder endpoint and key are the user's (as before the
server's endpoint policy), and a knowledge base never stores the key it was given."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from embeddings_recorder import recording_server
from keel.sdk import kb as kbs
from keel.sdk import session as sessions
from keel.sdk.workspace import init_workspace
from keel.services.embedders import ENV_EMBEDDER_URLS

KEY = "sk-local-secret-0123456789"


def test_a_local_kb_uses_the_users_endpoint_and_key_and_stores_neither_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", ENV_EMBEDDER_URLS):
        monkeypatch.delenv(name, raising=False)
    init_workspace(tmp_path)
    model = f"openai:embed-{uuid.uuid4().hex[:8]}"
    try:
        with recording_server() as mine:
            kb = kbs.create("docs", embedding_model=model, base_url=mine.url, api_key=KEY)
            kb.add_documents([{"text": "Refunds take five days. " * 20, "source": "refunds.md"}])
            assert kb.commit("v1").number == 1
            assert kb.search("refunds", top_k=1)[0].source == "refunds.md"
            assert {r["headers"]["authorization"] for r in mine.seen()} == {f"Bearer {KEY}"}
    finally:
        sessions.reset()
    stored = [p for p in (tmp_path / ".keel").rglob("*") if p.is_file()]
    assert stored and not [p for p in stored if KEY.encode() in p.read_bytes()]
