"""Knowledge bases through ``keel.kb``, on SQLite + local objects and on PostgreSQL + S3."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import keel
from keel.core.data_pointer import Pointer, format_pointer, pointer_name
from keel.core.embedders import HashingEmbedder
from keel.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from keel.sdk import kb as kbs
from keel.sdk import session as sessions


def _docs(n: int, prefix: str = "doc") -> list[dict]:
    topics = ["refunds", "shipping", "invoices", "passwords", "accounts"]
    return [
        {
            "text": f"{topics[i % 5].title()} guide {i}. " + f"How {topics[i % 5]} work for case {i}. " * 12,
            "source": f"{prefix}-{i:03d}.md",
            "metadata": {"topic": topics[i % 5], "i": i},
        }
        for i in range(n)
    ]


def test_two_versions_and_their_diff(ws: Path) -> None:
    kb = kbs.create("support-docs", chunk_size=200, chunk_overlap=40, metadata_fields=["topic"])
    report = kb.add_documents(_docs(6))
    assert report.staged == 6 and not report.skipped
    v1 = kb.commit("first import", author="ana")
    assert (v1.version, v1.parent, v1.author, v1.document_count, v1.created) == ("v1", None, "ana", 6, True)
    assert v1.chunk_count > 6 and v1.embedded_chunks == len(set(_chunk_ids(kb, "v1"))) and v1.reused_chunks == 0
    assert (v1.embedding_model, v1.dimension, v1.chunk_size, v1.chunk_overlap) == ("hashing-384", 384, 200, 40)
    assert len(v1.manifest_hash) == 64

    changed = _docs(6)
    changed[1]["text"] = "Shipping is free over 50 euros. Parcels arrive in 3 days."
    kb.add_documents([changed[1], {"text": "Refund policy: refunds take 5 days.", "source": "refund-policy.md"}])
    kb.remove_documents(["doc-005.md"])
    status = kb.status()
    assert (status.added, status.modified, status.removed) == (["refund-policy.md"], ["doc-001.md"], ["doc-005.md"])
    v2 = kb.commit("add refund policy")
    assert (v2.version, v2.parent, v2.document_count) == ("v2", 1, 6)
    assert not kb.status()

    diff = kb.diff("v1", "v2")
    assert [d.key for d in diff.changes.added] == ["refund-policy.md"]
    assert [d.key for d in diff.changes.removed] == ["doc-005.md"]
    assert [a.key for a, _b in diff.changes.modified] == ["doc-001.md"]
    assert diff.changes.unchanged_documents == 4 and diff.changes.config == []
    assert diff.changes.chunks_added and diff.changes.chunks_removed
    assert diff.to_dict()["documents"]["added"][0]["key"] == "refund-policy.md"
    assert [v.version for v in kb.log()] == ["v2", "v1"]
    assert kbs.get("support-docs").version().version == "v2"
    assert kbs.list_kbs()[0].latest_version == 2

    again = kb.commit("nothing new")
    assert again.version == "v2" and not again.created


def test_a_recommit_after_editing_ten_documents_embeds_only_their_chunks(ws: Path) -> None:
    kb = kbs.create("many", chunk_size=300, chunk_overlap=0)
    docs = _docs(40)
    kb.add_documents(docs)
    v1 = kb.commit("40 documents")
    for i in range(10):
        docs[i * 4]["text"] = f"Edited document {i}: a brand new text about returns number {i}."
    report = kb.add_documents(docs)
    assert report.staged == 10 and len(report.unchanged) == 30
    v2 = kb.commit("edit 10")
    assert v2.embedded_chunks == 10  # one new chunk per edited document (short texts)
    assert v2.reused_chunks == len(set(_chunk_ids(kb, "v2"))) - 10
    assert v1.embedded_chunks == len(set(_chunk_ids(kb, "v1")))


def _chunk_ids(kb: kbs.KnowledgeBase, version: str) -> list[str]:
    return [c for d in sessions.get_session().kb.manifest(kb.name, version).documents for c in d.chunks]


def test_a_chunker_change_says_how_much_it_reembeds_before_doing_it(ws: Path) -> None:
    kb = kbs.create("cfg", chunk_size=200, chunk_overlap=20)
    kb.add_documents(_docs(5))
    v1 = kb.commit("v1")
    kb.configure(chunk_size=100)
    assert kb.status().reembed_required
    with pytest.raises(Conflict) as caught:
        kb.commit("smaller chunks")
    assert "chunk_size 200 -> 100" in caught.value.message and "re-embed" in caught.value.message
    assert "reembed=True" in (caught.value.hint or "")
    assert [v.version for v in kb.log()] == ["v1"]  # nothing half-committed
    v2 = kb.commit("smaller chunks", reembed=True)
    assert v2.chunk_size == 100 and v2.embedded_chunks > 0
    assert [(c.field, c.old, c.new) for c in kb.diff("v1", "v2").changes.config] == [("chunk_size", 200, 100)]
    kb.configure(chunk_size=200)  # back: every embedding is stored already, so no question asked
    v3 = kb.commit("back to 200")
    assert v3.embedded_chunks == 0 and v3.reused_chunks == v1.embedded_chunks


def test_search_is_exact_and_returns_the_same_hits_every_time(ws: Path) -> None:
    kb = kbs.create("search", chunk_size=120, chunk_overlap=0, metadata_fields=["topic"])
    kb.add_documents(_docs(20) + [{"text": "How do refunds work? Ask within 30 days.", "source": "faq.md"}])
    v1 = kb.commit("v1")
    hits = kb.version("v1").search("how do refunds work?", top_k=5)
    assert len(hits) == 5 and hits[0].source == "faq.md" and hits[0].rank == 1
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(set(h.metadata) <= {"topic"} for h in hits)
    # The same process, then a fresh one (caches dropped): identical hits.
    assert kb.version("v1").search("how do refunds work?", top_k=5) == hits
    sessions.reset()
    from keel.services import kb_index

    kb_index._LOADED.clear()
    kb_index._TABLES.clear()
    assert kbs.search("search@v1", "how do refunds work?", top_k=5) == hits
    # Exact: the same as scoring every chunk with the embedder and sorting.
    exported = ws / "all.jsonl"
    kb.version("v1").export(exported)
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    query = HashingEmbedder(384).embed(["how do refunds work?"])[0]
    scores = np.array([r["embedding"] for r in rows], dtype=np.float32) @ query
    best = sorted(range(len(rows)), key=lambda i: (-scores[i], rows[i]["chunk_id"]))[:5]
    assert [rows[i]["chunk_id"] for i in best] == [h.chunk_id for h in hits]
    assert v1.chunk_count == len(rows)


def test_add_directory_records_the_tracked_data_version(ws: Path) -> None:
    folder = ws / "data" / "knowledge_base"
    folder.mkdir(parents=True)
    (folder / "refunds.md").write_text("# Refunds\n\nRefunds take 5 days.\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "shipping.txt").write_text("Shipping is free.\n")
    (folder / ".hidden").write_text("not a document")
    pointer = Pointer(kind="dir", path="knowledge_base", oid="ab" * 32, size=50, files=2)
    (folder.parent / pointer_name("knowledge_base")).write_text(format_pointer(pointer))

    kb = kbs.create("dir-kb", splitter="markdown", chunk_size=300, chunk_overlap=0)
    report = kb.add_directory("data/knowledge_base")
    assert sorted(report.added) == ["data/knowledge_base/refunds.md", "data/knowledge_base/sub/shipping.txt"]
    assert report.data_source == {"path": "data/knowledge_base", "oid": "ab" * 32}
    assert kb.status().data_sources == [{"path": "data/knowledge_base", "oid": "ab" * 32}]
    v1 = kb.commit("from tracked data")
    assert v1.data_sources == ({"path": "data/knowledge_base", "oid": "ab" * 32},)
    assert kb.diff("v1", "v1").changes.data[1] == v1.data_sources


def test_export_jsonl_and_parquet_round_trip(ws: Path) -> None:
    import pyarrow.parquet as pq

    kb = kbs.create("export", chunk_size=150, chunk_overlap=30)
    kb.add_documents(_docs(4))
    v1 = kb.commit("v1")
    jsonl = kb.version("v1").export(ws / "out" / "v1.jsonl")
    parquet = kb.version("v1").export(ws / "out" / "v1.parquet", format="parquet")
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    table = pq.read_table(parquet)
    assert len(rows) == table.num_rows == v1.chunk_count
    assert table.column("chunk_id").to_pylist() == [r["chunk_id"] for r in rows]
    assert table.column("text").to_pylist() == [r["text"] for r in rows]
    assert [json.loads(m) for m in table.column("metadata").to_pylist()] == [r["metadata"] for r in rows]
    from_parquet = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    from_jsonl = np.array([r["embedding"] for r in rows], dtype=np.float32)
    assert from_parquet.shape == (v1.chunk_count, 384) and np.array_equal(from_parquet, from_jsonl)
    assert table.schema.metadata[b"keel.version"] == b"v1"
    with pytest.raises(InvalidInput, match="unknown export format"):
        kb.version("v1").export(ws / "x.csv", format="csv")


def test_bad_documents_are_reported_and_nothing_is_half_committed(ws: Path) -> None:
    (ws / "ok.txt").write_text("A fine document about refunds.")
    (ws / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (ws / "empty.txt").write_text("  \n")
    (ws / "big.txt").write_text("x" * 2000)
    kb = kbs.create("bad", max_document_bytes=1000)
    report = kb.add_documents([ws / "ok.txt", ws / "latin1.txt", ws / "empty.txt"])
    assert report.added == ["ok.txt"]
    assert [(s.source, s.reason.split(":")[0]) for s in report.skipped] == [
        ("latin1.txt", "not UTF-8"),
        ("empty.txt", "empty"),
    ]
    assert "skipped 2" in report.summary()

    with pytest.raises(InvalidInput, match="over the 1000 bytes limit") as caught:
        kb.add_documents([ws / "ok.txt", {"text": "new", "source": "new.md"}, ws / "big.txt"])
    assert "--max-document-bytes" in (caught.value.hint or "")
    assert kb.status().added == ["ok.txt"]  # the failed call staged nothing
    with pytest.raises(NotFound):
        kb.add_documents([ws / "missing.txt"])
    with pytest.raises(InvalidInput, match="keys text, metadata, source"):
        kb.add_documents([{"body": "x"}])
    with pytest.raises(NotFound, match="no document"):
        kb.remove_documents(["nope.md"])

    with pytest.raises(NotFound, match="no knowledge base named 'nope'"):
        kbs.get("nope")
    with pytest.raises(NotFound, match="has no versions yet"):
        kb.version()
    with pytest.raises(AlreadyExists):
        kbs.create("bad")
    with pytest.raises(InvalidInput, match="chunk_overlap"):
        kbs.create("bad-config", chunk_size=10, chunk_overlap=10)
    with pytest.raises(InvalidInput, match="unknown embedding model"):
        kbs.create("bad-model", embedding_model="nosuch:model")

    kb.commit("v1")
    with pytest.raises(NotFound, match="has no version v7"):
        kb.version("v7")
    with pytest.raises(InvalidInput, match="invalid knowledge-base version"):
        kb.version("seven")
    with pytest.raises(InvalidInput, match="query is empty"):
        kb.search("  ")


class _WrongDimension:
    """An embedder that answers with 8 dimensions after promising 16."""

    id = "wrongdim:model"
    dimension = 16

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        dim = 16 if self.calls == 1 else 8
        return np.ones((len(texts), dim), dtype=np.float32)


def test_an_embedder_of_another_dimension_is_refused_and_nothing_changes(ws: Path) -> None:
    embedder = _WrongDimension()
    kb = kbs.create("dims", embedder=embedder)
    kb.add_documents([{"text": "first document", "source": "a"}])
    assert kb.commit("v1").dimension == 16
    kb.add_documents([{"text": "second document", "source": "b"}])
    with pytest.raises(InvalidInput, match="returned 8-dimensional vectors; this knowledge base holds 16"):
        kb.commit("v2")
    assert [v.version for v in kb.log()] == ["v1"] and kb.status().added == ["b"]
    with pytest.raises(InvalidInput, match="returned 8-dimensional"):
        kb.search("first")
    with pytest.raises(InvalidInput, match="is not this knowledge base's embedding model"):
        kbs.KnowledgeBase("dims", embedder=HashingEmbedder(16)).commit("x")


def test_search_records_the_version_as_a_run_input_and_commit_as_an_output(ws: Path) -> None:
    kb = kbs.create("lineage", chunk_size=100, chunk_overlap=0)
    kb.add_documents(_docs(3))
    with keel.start_run(project="rag") as run:
        v1 = kb.commit("built in a run")
        kb.version("v1").search("refunds", top_k=2)
        kb.version("v1").search("shipping", top_k=2)
    assert [str(e) for e in keel.lineage.inputs(run.id)] == ["kb:lineage@v1"]
    assert "kb:lineage@v1" in [str(e) for e in keel.lineage.outputs(run.id)]
    assert run.id in keel.lineage.used_by(v1.entity)


def test_staging_survives_the_process_and_add_is_idempotent(ws: Path) -> None:
    kb = kbs.create("persist")
    kb.add_documents(_docs(3))
    sessions.reset()
    again = kbs.get("persist")
    assert len(again.status().added) == 3
    assert again.add_documents(_docs(3)).unchanged == ["doc-000.md", "doc-001.md", "doc-002.md"]
    again.remove_documents(["doc-002.md"])  # never committed: simply unstaged
    assert again.commit("two").document_count == 2


# -- the OpenAI-compatible adapter against a real HTTP server --------------------------------
class _EmbeddingsHandler(BaseHTTPRequestHandler):
    dimension = 16
    requests: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vectors = HashingEmbedder(self.dimension).embed(texts)
        payload = {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)],
            "model": body["model"],
            "usage": {"prompt_tokens": 3 * len(texts), "total_tokens": 3 * len(texts)},
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def embeddings_server() -> Iterator[str]:
    _EmbeddingsHandler.requests = []
    _EmbeddingsHandler.dimension = 16
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EmbeddingsHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_the_openai_adapter_talks_to_any_compatible_server(tmp_path: Path, embeddings_server: str) -> None:
    from keel.sdk.workspace import init_workspace

    init_workspace(tmp_path)
    try:
        kb = kbs.create("remote", embedding_model="openai:test-embed", base_url=embeddings_server, api_key="sk-test")
        kb.add_documents(_docs(5))
        v1 = kb.commit("v1")
        assert v1.dimension == 16 and v1.embedding_model == "openai:test-embed"
        first = _EmbeddingsHandler.requests[0]
        assert first["path"] == "/v1/embeddings" and first["model"] == "test-embed"
        assert first["auth"] == "Bearer sk-test" and first["encoding_format"] == "float"
        hits = kb.search("how do refunds work?", top_k=3)
        assert hits[0].metadata["topic"] == "refunds"
        assert kb.search("how do refunds work?", top_k=3) == hits

        _EmbeddingsHandler.dimension = 8  # the server now answers with another dimension
        kb.add_documents([{"text": "a new document", "source": "new.md"}])
        with pytest.raises(InvalidInput, match="returned 8-dimensional vectors; this knowledge base holds 16"):
            kb.commit("v2")
        assert [v.version for v in kb.log()] == ["v1"]
    finally:
        sessions.reset()


def test_openai_model_names_need_no_prefix(tmp_path: Path, embeddings_server: str) -> None:
    """The reference's ``embedding_model: text-embedding-3-small`` embeds with OpenAI's API."""
    from keel.sdk.workspace import init_workspace

    init_workspace(tmp_path)
    try:
        kb = kbs.create("ref", embedding_model="text-embedding-3-small", base_url=embeddings_server, api_key="sk-test")
        kb.add_documents(_docs(3))
        assert kb.commit("v1").embedding_model == "text-embedding-3-small"
        assert _EmbeddingsHandler.requests[0]["model"] == "text-embedding-3-small"
        assert kb.search("how do refunds work?", top_k=1)[0].metadata["topic"] == "refunds"
    finally:
        sessions.reset()
