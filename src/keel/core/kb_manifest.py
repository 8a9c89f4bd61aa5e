"""Knowledge-base documents and version manifests, and the diff of two manifests.

A *document* is text plus metadata plus a source (the path it was read
from, or a name the caller gave); its id is the BLAKE3 hash of its canonical
JSON (:func:`document_bytes`), so identical documents are stored once.

A *version manifest* lists, in one canonical JSON object, everything a KB
version is made of: the configuration (embedding model, its dimension, the
chunk config, the metadata fields), the documents (each with its key, id
and chunk ids, sorted by key) and the tracked data it was read from. Equal
versions have equal manifests; the manifest's hash is recorded on the
version row. A document's *key* is its source, or its id when it has no
source: adding a document under a key that exists replaces it (a
modification, in a diff).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.core.hashing import canonical_json, hash_bytes
from keel.errors import IntegrityError, InvalidInput

__all__ = [
    "MANIFEST_FORMAT",
    "ConfigChange",
    "DocumentEntry",
    "KBManifest",
    "ManifestDiff",
    "diff_manifests",
    "document_bytes",
    "document_id",
    "parse_document",
]

MANIFEST_FORMAT = "keel-kb-manifest 1"
#: Config fields whose change means every chunk gets a new id (or a new embedding).
REEMBED_FIELDS = ("embedding_model", "splitter", "chunk_size", "chunk_overlap")


def _check_metadata(metadata: Any, where: str) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidInput(f"{where}: metadata must be a dict, not {type(metadata).__name__}", "e.g. {'lang': 'en'}")
    out = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise InvalidInput(f"{where}: metadata keys are non-empty text, got {key!r}", "")
        try:
            canonical_json(value)
        except (TypeError, ValueError):
            raise InvalidInput(
                f"{where}: metadata value of {key!r} is not JSON ({type(value).__name__})",
                "use text, numbers, booleans, lists or dicts",
            ) from None
        out[key] = value
    return out


def document_bytes(text: str, metadata: Mapping[str, Any] | None = None, source: str = "") -> bytes:
    """The stored form of a document (canonical JSON; its hash is the document id)."""
    if not isinstance(text, str):
        raise InvalidInput(f"a document's text must be a string, not {type(text).__name__}", "")
    if not isinstance(source, str):
        raise InvalidInput(f"a document's source must be a string, not {type(source).__name__}", "")
    meta = _check_metadata(metadata, source or "document")
    return canonical_json({"metadata": meta, "source": source, "text": text})


def document_id(text: str, metadata: Mapping[str, Any] | None = None, source: str = "") -> str:
    """The id of a document: the hash of :func:`document_bytes`."""
    return hash_bytes(document_bytes(text, metadata, source))


def parse_document(data: bytes, oid: str = "") -> dict[str, Any]:
    """``{"text", "metadata", "source"}`` of a stored document."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
            raise ValueError
    except ValueError:
        raise IntegrityError(f"object {oid} is not a keel document", "it may be corrupt: run 'keel verify'") from None
    return doc


@dataclass(frozen=True)
class DocumentEntry:
    """One document of a version: its key, id and chunk ids in order."""

    key: str
    id: str
    source: str
    chunks: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The manifest's form."""
        return {"key": self.key, "id": self.id, "source": self.source, "chunks": list(self.chunks)}


@dataclass(frozen=True)
class KBManifest:
    """What a KB version consists of."""

    config: dict[str, Any]
    documents: tuple[DocumentEntry, ...]
    data: tuple[dict[str, str], ...] = ()

    @classmethod
    def build(
        cls, config: Mapping[str, Any], documents: Sequence[DocumentEntry], data: Sequence[Mapping[str, str]] = ()
    ) -> KBManifest:
        """A manifest with documents sorted by key and data sources sorted and deduplicated."""
        docs = tuple(sorted(documents, key=lambda d: d.key))
        sources = {(d["path"], d["oid"]): {"path": d["path"], "oid": d["oid"]} for d in data}
        return cls(dict(config), docs, tuple(sources[k] for k in sorted(sources)))

    @property
    def chunk_count(self) -> int:
        """Chunks over all documents (a chunk shared by two documents counts twice)."""
        return sum(len(d.chunks) for d in self.documents)

    def by_key(self) -> dict[str, DocumentEntry]:
        """Documents keyed by their key."""
        return {d.key: d for d in self.documents}

    def encode(self) -> bytes:
        """Canonical JSON bytes (their hash is the version's manifest hash)."""
        value = {
            "format": MANIFEST_FORMAT,
            "config": self.config,
            "documents": [d.to_dict() for d in self.documents],
            "data": list(self.data),
        }
        try:  # the same bytes as canonical_json when every float is finite, and much faster
            return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
                "utf-8"
            )
        except ValueError:
            return canonical_json(value)

    @classmethod
    def parse(cls, data: bytes, where: str = "manifest") -> KBManifest:
        """Read a manifest written by :meth:`encode`."""
        try:
            raw = json.loads(data)
            if raw.get("format") != MANIFEST_FORMAT:
                raise ValueError
            docs = tuple(DocumentEntry(d["key"], d["id"], d["source"], tuple(d["chunks"])) for d in raw["documents"])
            return cls(dict(raw["config"]), docs, tuple(dict(x) for x in raw.get("data", [])))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise IntegrityError(f"{where} is not a keel knowledge-base manifest", "run 'keel verify'") from None


@dataclass(frozen=True)
class ConfigChange:
    """One configuration field that differs between two versions."""

    field: str
    old: Any
    new: Any

    @property
    def reembeds(self) -> bool:
        """True if this change gives every chunk a new embedding key."""
        return self.field in REEMBED_FIELDS

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"field": self.field, "old": self.old, "new": self.new, "reembeds": self.reembeds}


@dataclass(frozen=True)
class ManifestDiff:
    """What changed from manifest ``a`` to manifest ``b``.

    Documents are matched by key: ``modified`` holds ``(key, old id, new id)``.
    Chunks are compared as sets of chunk ids over the whole version.
    """

    added: list[DocumentEntry] = field(default_factory=list)
    removed: list[DocumentEntry] = field(default_factory=list)
    modified: list[tuple[DocumentEntry, DocumentEntry]] = field(default_factory=list)
    chunks_added: list[str] = field(default_factory=list)
    chunks_removed: list[str] = field(default_factory=list)
    unchanged_documents: int = 0
    config: list[ConfigChange] = field(default_factory=list)
    data: tuple[tuple[dict[str, str], ...], tuple[dict[str, str], ...]] = ((), ())

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.modified or self.config or self.chunks_added)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "documents": {
                "added": [{"key": d.key, "id": d.id, "chunks": len(d.chunks)} for d in self.added],
                "removed": [{"key": d.key, "id": d.id, "chunks": len(d.chunks)} for d in self.removed],
                "modified": [{"key": a.key, "old_id": a.id, "new_id": b.id} for a, b in self.modified],
                "unchanged": self.unchanged_documents,
            },
            "chunks": {
                "added": len(self.chunks_added),
                "removed": len(self.chunks_removed),
                "added_ids": self.chunks_added,
                "removed_ids": self.chunks_removed,
            },
            "config": [c.to_dict() for c in self.config],
            "data": {"a": list(self.data[0]), "b": list(self.data[1])},
        }


def diff_manifests(a: KBManifest, b: KBManifest) -> ManifestDiff:
    """Documents added/removed/modified, chunks added/removed and config changes from ``a`` to ``b``."""
    old, new = a.by_key(), b.by_key()
    added = [new[k] for k in sorted(new.keys() - old.keys())]
    removed = [old[k] for k in sorted(old.keys() - new.keys())]
    modified = [(old[k], new[k]) for k in sorted(old.keys() & new.keys()) if old[k].id != new[k].id]
    unchanged = sum(1 for k in old.keys() & new.keys() if old[k].id == new[k].id)
    chunks_a = {c for d in a.documents for c in d.chunks}
    chunks_b = {c for d in b.documents for c in d.chunks}
    fields = sorted(a.config.keys() | b.config.keys())
    config = [ConfigChange(f, a.config.get(f), b.config.get(f)) for f in fields if a.config.get(f) != b.config.get(f)]
    return ManifestDiff(
        added=added,
        removed=removed,
        modified=modified,
        chunks_added=sorted(chunks_b - chunks_a),
        chunks_removed=sorted(chunks_a - chunks_b),
        unchanged_documents=unchanged,
        config=config,
        data=(a.data, b.data),
    )
