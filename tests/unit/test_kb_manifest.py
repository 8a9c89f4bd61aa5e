"""Documents, version manifests and their diff."""

import pytest

from keel.core.kb_manifest import (
    DocumentEntry,
    KBManifest,
    diff_manifests,
    document_bytes,
    document_id,
    parse_document,
)
from keel.errors import IntegrityError, InvalidInput

CONFIG = {"embedding_model": "hashing-384", "dimension": 384, "splitter": "characters", "chunk_size": 512,
          "chunk_overlap": 100, "metadata_fields": []}  # fmt: skip


def test_document_ids_are_content_hashes_of_text_metadata_and_source():
    a = document_id("Refunds take 5 days.", {"lang": "en"}, "refunds.md")
    assert a == document_id("Refunds take 5 days.", {"lang": "en"}, "refunds.md")
    assert a != document_id("Refunds take 5 days.", {"lang": "fr"}, "refunds.md")
    assert a != document_id("Refunds take 5 days.", {"lang": "en"}, "other.md")
    doc = parse_document(document_bytes("text", {"b": 1, "a": [1, 2]}, "x"))
    assert doc == {"text": "text", "metadata": {"a": [1, 2], "b": 1}, "source": "x"}


def test_bad_documents_are_refused():
    with pytest.raises(InvalidInput):
        document_bytes(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="metadata must be a dict"):
        document_bytes("t", ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="is not JSON"):
        document_bytes("t", {"when": object()})
    with pytest.raises(IntegrityError):
        parse_document(b"[1, 2]", "abc")


def _entry(key, id_, chunks):
    return DocumentEntry(key, id_, key, tuple(chunks))


def test_manifests_are_canonical_and_round_trip():
    docs = [_entry("b.md", "2" * 64, ["c2"]), _entry("a.md", "1" * 64, ["c1", "c3"])]
    one = KBManifest.build(CONFIG, docs, [{"path": "kb", "oid": "f" * 64}])
    two = KBManifest.build(
        dict(reversed(list(CONFIG.items()))), list(reversed(docs)), [{"path": "kb", "oid": "f" * 64}]
    )
    assert one.encode() == two.encode()
    assert [d.key for d in one.documents] == ["a.md", "b.md"] and one.chunk_count == 3
    assert KBManifest.parse(one.encode()) == one
    with pytest.raises(IntegrityError):
        KBManifest.parse(b'{"format": "something else"}')


def test_diff_reports_documents_chunks_and_config():
    a = KBManifest.build(
        CONFIG,
        [
            _entry("keep.md", "1" * 64, ["k1"]),
            _entry("edit.md", "2" * 64, ["e1", "e2"]),
            _entry("gone.md", "3" * 64, ["g1"]),
        ],
    )
    b = KBManifest.build(
        {**CONFIG, "chunk_size": 256},
        [
            _entry("keep.md", "1" * 64, ["k1"]),
            _entry("edit.md", "4" * 64, ["e1", "e3"]),
            _entry("new.md", "5" * 64, ["n1"]),
        ],
    )
    diff = diff_manifests(a, b)
    assert [d.key for d in diff.added] == ["new.md"]
    assert [d.key for d in diff.removed] == ["gone.md"]
    assert [(x.key, x.id[0], y.id[0]) for x, y in diff.modified] == [("edit.md", "2", "4")]
    assert diff.unchanged_documents == 1
    assert diff.chunks_added == ["e3", "n1"] and diff.chunks_removed == ["e2", "g1"]
    assert [(c.field, c.old, c.new, c.reembeds) for c in diff.config] == [("chunk_size", 512, 256, True)]
    assert diff.to_dict()["documents"]["modified"][0]["key"] == "edit.md"
    assert not diff_manifests(a, a)
