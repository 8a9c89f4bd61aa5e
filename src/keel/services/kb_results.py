"""The knowledge-base service's value objects: what :mod:`keel.services.kb` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keel.core.entities import EntityRef
from keel.core.kb_chunking import ChunkConfig
from keel.core.kb_manifest import ConfigChange, ManifestDiff
from keel.errors import InvalidInput

__all__ = [
    "KIND",
    "AddReport",
    "KBDiff",
    "KBInfo",
    "KBStatus",
    "KBVersion",
    "SkippedDocument",
    "parse_version",
]

KIND = "kb"


def parse_version(version: Any) -> int | None:
    """``"v2"``, ``"2"`` or ``2`` -> 2; ``None``, ``"latest"`` or ``"head"`` -> None (the newest)."""
    if version is None:
        return None
    text = str(version).strip()
    if text.lower() in ("latest", "head", ""):
        return None
    if text[:1] in ("v", "V"):
        text = text[1:]
    if isinstance(version, bool) or not text.isdigit() or int(text) < 1:
        raise InvalidInput(f"invalid knowledge-base version {version!r}", "versions are v1, v2, ... (or 'latest')")
    return int(text)


# -- value objects ------------------------------------------------------------------------
@dataclass(frozen=True)
class KBInfo:
    """A knowledge base: its current configuration, newest version and staged changes."""

    name: str
    description: str
    embedding_model: str
    dimension: int | None
    splitter: str
    chunk_size: int
    chunk_overlap: int
    metadata_fields: tuple[str, ...]
    max_document_bytes: int
    created_at: int
    updated_at: int
    latest_version: int | None = None
    staged: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "description": self.description,
            "embedding_model": self.embedding_model,
            "dimension": self.dimension,
            "splitter": self.splitter,
            "chunk_size": self.chunk_size,
            "chunk_overlap": self.chunk_overlap,
            "metadata_fields": list(self.metadata_fields),
            "max_document_bytes": self.max_document_bytes,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "latest_version": None if self.latest_version is None else f"v{self.latest_version}",
            "staged": self.staged,
        }


@dataclass(frozen=True)
class KBVersion:
    """An immutable knowledge-base version.

    ``embedded_chunks`` is how many chunks the commit that made it had to embed;
    ``reused_chunks`` how many embeddings it found stored already. ``created`` is
    False when a commit changed nothing and returned the existing newest version.
    """

    name: str
    number: int
    parent: int | None
    message: str
    author: str
    created_at: int
    document_count: int
    chunk_count: int
    embedding_model: str
    dimension: int
    splitter: str
    chunk_size: int
    chunk_overlap: int
    manifest_hash: str
    data_sources: tuple[dict[str, str], ...]
    embedded_chunks: int
    reused_chunks: int
    chunks_oid: str = field(repr=False, default="")
    index_oid: str = field(repr=False, default="")
    created: bool = True

    @property
    def version(self) -> str:
        """The version id: ``v1``, ``v2``, ..."""
        return f"v{self.number}"

    @property
    def ref(self) -> str:
        """``NAME@vN``."""
        return f"{self.name}@{self.version}"

    @property
    def entity(self) -> EntityRef:
        """The lineage reference ``kb:NAME@vN``."""
        return EntityRef(KIND, self.name, self.version)

    @property
    def chunk_config(self) -> ChunkConfig:
        """The chunker this version was built with."""
        return ChunkConfig(self.splitter, self.chunk_size, self.chunk_overlap)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "version": self.version,
            "parent": None if self.parent is None else f"v{self.parent}",
            "message": self.message,
            "author": self.author,
            "created_at": self.created_at,
            "document_count": self.document_count,
            "chunk_count": self.chunk_count,
            "embedding_model": self.embedding_model,
            "dimension": self.dimension,
            "splitter": self.splitter,
            "chunk_size": self.chunk_size,
            "chunk_overlap": self.chunk_overlap,
            "manifest_hash": self.manifest_hash,
            "data_sources": [dict(d) for d in self.data_sources],
            "embedded_chunks": self.embedded_chunks,
            "reused_chunks": self.reused_chunks,
            "created": self.created,
        }


@dataclass(frozen=True)
class SkippedDocument:
    """A document that was not added, and why."""

    source: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        """A JSON-ready dict."""
        return {"source": self.source, "reason": self.reason}


@dataclass(frozen=True)
class AddReport:
    """What adding documents did: staged (new or changed), unchanged, skipped (with reasons)."""

    added: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[SkippedDocument] = field(default_factory=list)
    data_source: dict[str, str] | None = None

    @property
    def staged(self) -> int:
        """Documents staged for the next commit by this call."""
        return len(self.added) + len(self.modified)

    def summary(self) -> str:
        """One line, e.g. ``staged 3 documents (2 new, 1 changed); 1 unchanged; skipped 1``."""
        text = f"staged {self.staged} documents ({len(self.added)} new, {len(self.modified)} changed)"
        if self.unchanged:
            text += f"; {len(self.unchanged)} unchanged"
        if self.skipped:
            text += f"; skipped {len(self.skipped)}: " + ", ".join(f"{s.source} ({s.reason})" for s in self.skipped)
        if self.data_source:
            text += f"; from tracked data {self.data_source['path']}@{self.data_source['oid'][:12]}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "staged": self.staged,
            "added": self.added,
            "modified": self.modified,
            "unchanged": self.unchanged,
            "skipped": [s.to_dict() for s in self.skipped],
            "data_source": self.data_source,
        }


@dataclass(frozen=True)
class KBStatus:
    """Staged changes and configuration changes since the newest version."""

    name: str
    latest_version: int | None
    added: list[str]
    modified: list[str]
    removed: list[str]
    config: list[ConfigChange]
    data_sources: list[dict[str, str]]

    @property
    def reembed_required(self) -> bool:
        """True if the next commit re-embeds every chunk (embedder or chunker changed)."""
        return any(c.reembeds for c in self.config)

    def __bool__(self) -> bool:
        return bool(self.added or self.modified or self.removed or self.config or self.data_sources)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "latest_version": None if self.latest_version is None else f"v{self.latest_version}",
            "added": self.added,
            "modified": self.modified,
            "removed": self.removed,
            "config": [c.to_dict() for c in self.config],
            "data_sources": self.data_sources,
            "reembed_required": self.reembed_required,
        }


@dataclass(frozen=True)
class KBDiff:
    """What changed between two versions of a knowledge base."""

    name: str
    a: KBVersion
    b: KBVersion
    changes: ManifestDiff

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"name": self.name, "a": self.a.version, "b": self.b.version, **self.changes.to_dict()}
