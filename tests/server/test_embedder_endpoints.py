"""The server never calls a URL a client chose, nor sends its secrets anywhere a client chose:
knowledge-base work on the server embeds only through endpoints configured on the server.

A real HTTP server on 127.0.0.1 (:mod:`embeddings_recorder`) stands in both for the
attacker's URL (it must receive nothing) and for the endpoint an operator configured
(it must receive the server's requests). Calls go through the ASGI app's service API
(``/api/v1/svc/kb/...``), as the remote sdk sends them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from embeddings_recorder import Recorder, recording_server
from keel.errors import InvalidInput
from keel.sdk.remote import wire_codec
from keel.server import create_app
from keel.server.context import ServerContext
from keel.services.auth import AuthStore
from keel.services.embedders import ENV_EMBEDDER_URLS
from keel.services.workspace import open_store

CODEC = wire_codec()
SERVER_KEY = "sk-server-secret-0123456789"
DOCS = [
    {"text": "Refunds take five days. " * 20, "source": "refunds.md"},
    {"text": "Shipping is free over fifty euros. " * 20, "source": "shipping.md"},
    {"text": "Invoices are sent by email. " * 20, "source": "invoices.md"},
]


@dataclass
class Api:
    client: TestClient
    tokens: dict[str, str]
    errors: list[dict[str, str]]

    def call(self, user: str, service: str, method: str, *args: Any, **kwargs: Any) -> tuple[int, Any]:
        body = {"args": CODEC.encode(list(args)), "kwargs": CODEC.encode(kwargs)}
        response = self.client.post(
            f"/api/v1/svc/{service}/{method}", json=body, headers={"Authorization": f"Bearer {self.tokens[user]}"}
        )
        data = response.json()
        if response.status_code == 200:
            return 200, CODEC.decode(data["result"])
        assert set(data) == {"error"} and {"code", "message", "hint"} <= set(data["error"])  # the one shape
        self.errors.append(data["error"])
        return response.status_code, data["error"]

    def ok(self, user: str, service: str, method: str, *args: Any, **kwargs: Any) -> Any:
        status, result = self.call(user, service, method, *args, **kwargs)
        assert status == 200, result
        return result

    def refused(self, user: str, service: str, method: str, *args: Any, **kwargs: Any) -> dict[str, str]:
        status, error = self.call(user, service, method, *args, **kwargs)
        assert status == 400 and error["code"] == "invalid_input", (status, error)
        return dict(error)


@contextmanager
def serving(folder: Path) -> Iterator[Api]:
    """The app on a fresh SQLite store, built with the environment as the test set it:
    ``reg`` writes the registries, ``rita`` reads them."""
    app = create_app(f"sqlite:///{folder / 'keel.db'}", str(folder / "objects"))
    auth = AuthStore(app.state.keel.store.db)
    tokens = {}
    for name, role in (("reg", "writer"), ("rita", "reader")):
        auth.create_user(name)
        tokens[name] = auth.create_token(name, "test")[0]
        auth.grant(name, "@registries", role, "test")
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client, tokens, [])


@pytest.fixture
def server_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No endpoint configured and no key, unless the test sets them."""
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", ENV_EMBEDDER_URLS):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _model() -> str:
    """A model name of its own per test: embedders are cached per process by name and options."""
    return f"openai:embed-{uuid.uuid4().hex[:8]}"


def _no_secret_in(api: Api, *secrets: str) -> None:
    for error in api.errors:
        for secret in secrets:
            assert secret not in error["message"] and secret not in error["hint"]


@pytest.mark.parametrize("server_key", [None, SERVER_KEY], ids=["no-server-key", "server-key"])
def test_a_base_url_a_client_chose_is_refused_and_never_called(
    tmp_path: Path, server_env: pytest.MonkeyPatch, server_key: str | None
) -> None:
    if server_key:
        server_env.setenv("OPENAI_API_KEY", server_key)
    model = _model()
    with recording_server() as attacker, serving(tmp_path) as api:
        # creating a KB with the attacker's endpoint: refused, no KB
        error = api.refused("reg", "kb", "create", "evil", model, base_url=attacker.url)
        assert "configured on the server" in error["message"] and "operator" in error["hint"]
        assert api.call("reg", "kb", "get", "evil")[0] == 404

        # a KB created without one, documents staged; then configured or committed with it: refused
        api.ok("reg", "kb", "create", "docs", model)
        api.ok("reg", "kb", "add_documents", "docs", DOCS)
        api.refused("reg", "kb", "configure", "docs", base_url=attacker.url)
        api.refused("reg", "kb", "configure", "docs", embedding_model=_model(), base_url=attacker.url)
        error = api.refused("reg", "kb", "commit", "docs", "v1", base_url=attacker.url)
        assert "local workspace" in error["hint"]
        api.refused("reg", "kb", "commit", "docs", "v1", True, base_url=attacker.url, api_key="sk-client")
        api.refused("reg", "kb", "commit", "docs", "v1", base_url=attacker.url + "/")
        api.refused("reg", "kb", "commit", "docs", "v1", base_url="http://user:pw@" + attacker.url[len("http://") :])

        # nothing reached the URL, nothing was committed or changed
        assert attacker.seen() == []
        assert api.ok("reg", "kb", "log", "docs") == []
        assert api.ok("reg", "kb", "get", "docs").embedding_model == model
        assert sorted(api.ok("reg", "kb", "status", "docs").added) == ["invoices.md", "refunds.md", "shipping.md"]
        _no_secret_in(api, SERVER_KEY, "sk-client")


def test_a_client_key_is_refused_even_for_an_allowed_endpoint(tmp_path: Path, server_env: pytest.MonkeyPatch) -> None:
    with recording_server() as allowed:
        server_env.setenv(ENV_EMBEDDER_URLS, allowed.url)
        server_env.setenv("OPENAI_API_KEY", SERVER_KEY)
        model = _model()
        with serving(tmp_path) as api:
            error = api.refused("reg", "kb", "create", "docs", model, base_url=allowed.url, api_key="sk-client")
            assert "api_key" in error["message"] and "its own credentials" in error["message"]
            api.ok("reg", "kb", "create", "docs", model)
            api.ok("reg", "kb", "add_documents", "docs", DOCS)
            api.refused("reg", "kb", "commit", "docs", "v1", base_url=allowed.url, api_key="sk-client")
            api.refused("reg", "kb", "commit", "docs", "v1", api_key="sk-client")
            api.refused("reg", "kb", "commit", "docs", "v1", batch_size=1)  # no other embedder option either
            assert allowed.seen() == []
            assert api.ok("reg", "kb", "log", "docs") == []
            _no_secret_in(api, SERVER_KEY, "sk-client")


def _commit_and_search(api: Api, model: str, recorder: Recorder, **options: Any) -> None:
    api.ok("reg", "kb", "create", "docs", model, **options)
    api.ok("reg", "kb", "add_documents", "docs", DOCS)
    version = api.ok("reg", "kb", "commit", "docs", "v1", **options)
    assert version.number == 1 and version.embedded_chunks > 0 and version.dimension == recorder.dimension
    found, hits = api.ok("rita", "kb", "search", "docs", "how long do refunds take?", 2, **options)
    assert found.number == 1 and hits[0].source == "refunds.md"


def test_the_server_embeds_through_its_own_configured_endpoint(tmp_path: Path, server_env: pytest.MonkeyPatch) -> None:
    with recording_server() as configured, recording_server() as attacker:
        server_env.setenv("OPENAI_BASE_URL", configured.url)
        server_env.setenv("OPENAI_API_KEY", SERVER_KEY)
        model = _model()
        with serving(tmp_path) as api:
            _commit_and_search(api, model, configured)
            requests = configured.seen()
            assert requests and {r["path"] for r in requests} == {"/v1/embeddings"}
            assert {r["headers"]["authorization"] for r in requests} == {f"Bearer {SERVER_KEY}"}
            assert {r["body"]["model"] for r in requests} == {model.partition(":")[2]}

            # a reader searching, or a writer committing, with another URL: refused, nothing sent there
            api.refused("rita", "kb", "search", "docs", "refunds", 2, None, None, base_url=attacker.url)
            api.ok("reg", "kb", "add_documents", "docs", [{"text": "Passwords reset by email.", "source": "pw.md"}])
            api.refused("reg", "kb", "commit", "docs", "v2", base_url=attacker.url)
            assert attacker.seen() == []
            assert [v.number for v in api.ok("reg", "kb", "log", "docs")] == [1]


def test_a_client_may_pick_an_endpoint_the_server_lists(tmp_path: Path, server_env: pytest.MonkeyPatch) -> None:
    with recording_server() as listed:
        server_env.setenv(ENV_EMBEDDER_URLS, f"http://127.0.0.1:1/v1, {listed.url}")
        server_env.setenv("OPENAI_API_KEY", SERVER_KEY)
        with serving(tmp_path) as api:
            # another spelling of the listed URL is the listed URL (the server sends its own spelling)
            _commit_and_search(api, _model(), listed, base_url=listed.url.replace("http:", "HTTP:") + "/")
            requests = listed.seen()
            assert requests and {r["path"] for r in requests} == {"/v1/embeddings"}


def test_sentence_transformers_models_are_named_by_id_not_by_a_path_on_the_server(
    tmp_path: Path, server_env: pytest.MonkeyPatch
) -> None:
    (tmp_path / "model").mkdir()
    with serving(tmp_path) as api:
        for name in ("sentence-transformers:/etc", f"sentence-transformers:{tmp_path / 'model'}", "../model", "~/m"):
            api.refused("reg", "kb", "create", "st", name)
        api.refused("reg", "kb", "create", "st", "sentence-transformers:org/model", device="cuda:0")
        api.ok("reg", "kb", "create", "st", "sentence-transformers:org/model")  # not loaded until a commit
        api.refused("reg", "kb", "create", "h", "hashing-64", base_url="http://127.0.0.1:1/v1")
        assert [kb.name for kb in api.ok("reg", "kb", "list_kbs")] == ["st"]


def test_an_invalid_endpoint_in_the_server_configuration_stops_the_server(
    tmp_path: Path, server_env: pytest.MonkeyPatch
) -> None:
    server_env.setenv(ENV_EMBEDDER_URLS, "ftp://example.com/v1")
    store = open_store(f"sqlite:///{tmp_path / 'keel.db'}", str(tmp_path / "objects"), cached=False)
    try:
        with pytest.raises(InvalidInput, match="invalid embedder endpoint"):
            ServerContext(store, tmp_path)
    finally:
        store.close()
