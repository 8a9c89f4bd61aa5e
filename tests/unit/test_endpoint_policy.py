"""EndpointPolicy: the user's own process takes the endpoints and keys it is given; a server
takes only the endpoints configured on it, never a caller's key or other embedder options."""

from __future__ import annotations

import pytest

from keel.errors import InvalidInput
from keel.services import embedders
from keel.services.embedders import ENV_EMBEDDER_URLS, EndpointPolicy, OpenAIEmbedder, endpoint_key

OPENAI = "openai:text-embedding-3-small"


def test_the_local_policy_takes_what_the_user_gives() -> None:
    policy = EndpointPolicy.local()
    assert policy.trusted
    given = {"base_url": "http://127.0.0.1:1/v1", "api_key": "sk-user", "batch_size": 8, "dimensions": None}
    assert policy.options(OPENAI, given) == {"base_url": "http://127.0.0.1:1/v1", "api_key": "sk-user", "batch_size": 8}
    assert isinstance(policy.resolve(OPENAI, given), OpenAIEmbedder)
    assert policy.options("sentence-transformers:/models/mine", {"device": "cpu"}) == {"device": "cpu"}


def test_a_server_allows_its_own_endpoints_only() -> None:
    env = {ENV_EMBEDDER_URLS: "http://tei.internal:8080/v1, https://Embed.Example.com/v1/", "OPENAI_BASE_URL": ""}
    policy = EndpointPolicy.server(["http://extra:9000/v1"], env)
    assert not policy.trusted
    assert policy.endpoints == ("http://extra:9000/v1", "http://tei.internal:8080/v1", "https://Embed.Example.com/v1/")
    # another spelling of a listed URL is the listed URL, in the server's spelling
    for spelling in ("https://embed.example.com/v1", "HTTPS://EMBED.EXAMPLE.COM/v1/", " https://embed.example.com/v1 "):
        assert policy.options(OPENAI, {"base_url": spelling}) == {"base_url": "https://Embed.Example.com/v1/"}
    # anything else is refused, whatever it looks like
    for url in (
        "http://127.0.0.1:9999/v1",
        "https://embed.example.com/v2",  # another path on a listed host
        "https://embed.example.com/v1/../../admin",
        "https://embed.example.com:444/v1",
        "https://embed.example.com/v1?x=1",
        "https://embed.example.com/v1#x",
        "https://user@embed.example.com/v1",
        "https://embed.example.com@evil.example/v1",
        "http://embed.example.com/v1",  # not https
        "file:///etc/passwd",
        "https://embed.example.com/v1 x",
        42,
    ):
        with pytest.raises(InvalidInput, match="configured on the server") as refused:
            policy.options(OPENAI, {"base_url": url})
        assert "operator" in refused.value.hint and "local workspace" in refused.value.hint


def test_the_servers_openai_base_url_is_allowed_and_no_base_url_means_the_servers_default() -> None:
    policy = EndpointPolicy.server(environ={"OPENAI_BASE_URL": "http://gateway:4000/v1"})
    assert policy.endpoints == ("http://gateway:4000/v1",)
    assert policy.options(OPENAI, {"base_url": "http://gateway:4000/v1/"}) == {"base_url": "http://gateway:4000/v1"}
    assert policy.options(OPENAI, {}) == {}
    assert policy.options(OPENAI, {"dimensions": 256}) == {"dimensions": 256}
    assert EndpointPolicy.server(environ={}).endpoints == ()


def test_a_server_refuses_a_callers_key_and_other_options_before_building_anything() -> None:
    policy = EndpointPolicy.server(environ={ENV_EMBEDDER_URLS: "http://tei:8080/v1"})
    with pytest.raises(InvalidInput, match="does not take an api_key") as refused:
        policy.options(OPENAI, {"base_url": "http://tei:8080/v1", "api_key": "sk-client"})
    assert "sk-client" not in str(refused.value) + refused.value.hint
    for model, options in (
        (OPENAI, {"batch_size": 1}),
        (OPENAI, {"organization": "x"}),
        ("hashing-64", {"base_url": "http://tei:8080/v1"}),
        ("all-MiniLM-L6-v2", {"device": "cuda:0"}),
        ("sentence-transformers:org/model", {"batch_size": 4}),
    ):
        with pytest.raises(InvalidInput, match="cannot be set through a keel server"):
            policy.options(model, options)
    for size in (0, -1, 65537, True, "256", 2.5):
        with pytest.raises(InvalidInput, match="invalid dimensions"):
            policy.options(OPENAI, {"dimensions": size})
    assert policy.options("hashing-64", {"base_url": None}) == {}  # None is "not given"


def test_a_server_loads_sentence_transformers_models_by_id_only(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local-model").mkdir()
    policy = EndpointPolicy.server(environ={})
    for name in ("all-MiniLM-L6-v2", "sentence-transformers:org/model-v2", "st:BAAI/bge-small-en-v1.5"):
        assert policy.options(name, {}) == {}
    for name in (
        "sentence-transformers:/etc",
        "st:./local-model",
        "local-model",  # an existing folder of the server
        "sentence-transformers:../x",
        "sentence-transformers:~/m",
        "sentence-transformers:org/sub/model",
        "sentence-transformers:C:\\models",
        "org/..",
    ):
        with pytest.raises(InvalidInput, match="by id only"):
            policy.options(name, {})


def test_a_server_registered_embedder_takes_no_options_from_callers() -> None:
    class Mine:
        id = "mine:v1"
        dimension = 3

        def embed(self, texts):  # pragma: no cover - never called
            raise AssertionError

    embedders.register_embedder("mine", lambda _name, **_opts: Mine())
    try:
        policy = EndpointPolicy.server(environ={})
        assert isinstance(policy.resolve("mine:v1", {}), Mine)
        with pytest.raises(InvalidInput, match="cannot be set through a keel server"):
            policy.resolve("mine:v1", {"url": "http://127.0.0.1:1"})
    finally:
        embedders._FACTORIES.pop("mine", None)


def test_an_invalid_configured_endpoint_is_refused() -> None:
    for bad in ("ftp://x/v1", "http://user:pw@x/v1", "x/v1", "http://x:notaport/v1"):
        with pytest.raises(InvalidInput, match="invalid embedder endpoint"):
            EndpointPolicy.server(environ={ENV_EMBEDDER_URLS: bad})
    # an unusable OPENAI_BASE_URL is simply not an allowed endpoint (the openai client reports it if used)
    assert EndpointPolicy.server(environ={"OPENAI_BASE_URL": "not a url"}).endpoints == ()


def test_endpoint_keys() -> None:
    assert endpoint_key("HTTP://Host:8080/v1/") == "http://host:8080/v1"
    assert endpoint_key("https://host") == "https://host"
    for bad in ("", "host/v1", "http://", "http://h/v1?", "http://h/v1#", "http://[::1/v1", "x" * 3000, None):
        assert endpoint_key(bad) is None


def test_the_embedder_cache_is_bounded() -> None:
    for size in range(1, embedders._CACHE_MAX + 20):
        embedders.resolve_embedder(f"hashing-{size}")
    assert len(embedders._CACHE) <= embedders._CACHE_MAX
    newest = embedders.resolve_embedder(f"hashing-{embedders._CACHE_MAX + 19}")
    assert embedders.resolve_embedder(f"hashing-{embedders._CACHE_MAX + 19}") is newest
