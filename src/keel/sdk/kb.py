"""``keel.kb``: versioned knowledge bases for RAG.

::

    kb = keel.kb.create("support-docs", embedding_model="hashing-384", chunk_size=512, chunk_overlap=100)
    kb.add_documents(["docs/refunds.md", {"text": "Shipping takes 3 days.", "source": "shipping"}])
    v1 = kb.commit("first import")
    kb.add_documents(["docs/refunds-2026.md"]); kb.remove_documents(["shipping"])
    v2 = kb.commit("add refund policy")          # v2.embedded_chunks: only new chunks were embedded
    kb.diff("v1", "v2")                           # documents added/removed/modified, chunks, config
    hits = kb.version("v2").search("how do refunds work?", top_k=5)   # exact, deterministic
    kb.version(at="2026-12-07T10:00:00Z")         # the version that was newest then
    keel.kb.search("support-docs", "refunds?", at=datetime(2026, 12, 7, tzinfo=UTC))

Inside an active run, searching a version records ``kb:NAME@vN`` as the run's
input (so the run can replay its retrieval) and committing records the new
version as the run's output.

Embedding models: ``hashing-384`` (built in, no download), ``all-MiniLM-L6-v2``
or any sentence-transformers model (``keel[embeddings]``), ``openai:MODEL`` for
any OpenAI-compatible server (``base_url``/``api_key`` arguments, else
``OPENAI_BASE_URL``/``OPENAI_API_KEY``), or pass ``embedder=`` any object with
``id``, ``dimension`` and ``embed(texts)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keel.core.embedders import Embedder, HashingEmbedder
from keel.core.progress import Progress, reporting
from keel.core.times import AtLike, parse_at
from keel.errors import InvalidInput
from keel.sdk.fluent import active_run
from keel.sdk.session import get_session
from keel.sdk.traces import note
from keel.services.embedders import register_embedder
from keel.services.kb import (
    DEFAULT_MAX_DOCUMENT_BYTES,
    AddReport,
    KBDiff,
    KBInfo,
    KBService,
    KBStatus,
    KBVersion,
    SearchHit,
    SkippedDocument,
)

__all__ = [
    "AddReport",
    "Embedder",
    "HashingEmbedder",
    "KBDiff",
    "KBInfo",
    "KBStatus",
    "KBVersion",
    "KnowledgeBase",
    "KnowledgeBaseVersion",
    "SearchHit",
    "SkippedDocument",
    "create",
    "get",
    "list_kbs",
    "parse_ref",
    "register_embedder",
    "search",
]


def _service() -> KBService:
    return get_session().kb


def _base() -> Path:
    """Where file sources are relative to: the workspace folder, else the current one."""
    root = get_session().root
    cwd = Path(os.getcwd())
    if root is not None:
        try:
            cwd.resolve().relative_to(Path(root).resolve())
            return Path(root)
        except ValueError:
            pass
    return cwd


def _run() -> Any:
    return active_run()


def _ms(at: AtLike | None) -> int | None:
    """``at`` as epoch ms, read here: a naive datetime means this machine's local time, even
    when the store is a keel server in another zone."""
    return None if at is None else parse_at(at)


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``"support-docs@v2"`` -> ``("support-docs", "v2")``; ``"support-docs"`` -> ``("support-docs", None)``."""
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidInput(f"invalid knowledge-base reference {ref!r}", "write NAME or NAME@VERSION, e.g. docs@v2")
    name, sep, version = ref.partition("@")
    if sep and not version:
        raise InvalidInput(f"invalid knowledge-base reference {ref!r}", "write NAME@VERSION, e.g. docs@v2")
    return name, (version or None)


class KnowledgeBaseVersion:
    """One immutable version: its facts (``version``, ``document_count``, ``embedded_chunks``...)
    plus :meth:`search` and :meth:`export`."""

    def __init__(self, kb: KnowledgeBase, info: KBVersion) -> None:
        self._kb = kb
        self.info = info

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "info":
            raise AttributeError(name)
        return getattr(self.info, name)

    def __repr__(self) -> str:
        i = self.info
        return f"<KnowledgeBaseVersion {i.ref} documents={i.document_count} chunks={i.chunk_count}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KnowledgeBaseVersion) and other.info == self.info

    def __hash__(self) -> int:
        return hash(self.info)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return self.info.to_dict()

    def search(self, query: str, top_k: int = 5) -> list[SearchHit]:
        """Exact cosine top-k over this version's chunks; the same query returns the same hits every time.

        Inside an active run, records ``kb:NAME@vN`` as the run's input.
        """
        return self._kb.search(query, top_k, version=self.info.number)

    def export(self, path: str | os.PathLike[str], format: str = "jsonl") -> Path:
        """Write every chunk (id, document, source, position, text, metadata, embedding) to
        ``path`` as ``jsonl`` or ``parquet``: how a version goes into a production vector database."""
        return self._kb.export(path, version=self.info.number, format=format)


class KnowledgeBase:
    """A knowledge base by name: stage documents, commit versions, diff and search them."""

    def __init__(self, name: str, embedder: Embedder | None = None, **embedder_options: Any) -> None:
        self.name = name
        self._embedder = embedder
        self._options = {k: v for k, v in embedder_options.items() if v is not None}

    def __repr__(self) -> str:
        return f"<KnowledgeBase {self.name!r}>"

    @property
    def info(self) -> KBInfo:
        """The current configuration, newest version and number of staged changes."""
        return _service().get(self.name)

    def _wrap(self, info: KBVersion) -> KnowledgeBaseVersion:
        return KnowledgeBaseVersion(self, info)

    # -- staging ------------------------------------------------------------------------
    def add_documents(
        self, documents: Any, max_document_bytes: int | None = None, progress: Progress | None = None
    ) -> AddReport:
        """Stage documents: text-file paths, or ``{"text", "metadata", "source"}`` dicts.

        Empty and non-UTF-8 documents are skipped, logged and listed in the report
        (``report.skipped``); one over the size limit raises InvalidInput and stages nothing.
        ``progress(done, total)``: documents read, then stored (a local workspace only).
        """
        with reporting(progress):
            return _service().add_documents(self.name, documents, _base(), max_document_bytes)

    def add_directory(
        self,
        path: str | os.PathLike[str],
        pattern: str = "**/*",
        max_document_bytes: int | None = None,
        progress: Progress | None = None,
    ) -> AddReport:
        """Stage every file under ``path``; if ``keel data`` tracks it, the next version records
        the data version (``data_sources``: path and hash). ``progress``: as :meth:`add_documents`."""
        with reporting(progress):
            return _service().add_directory(self.name, path, _base(), pattern, max_document_bytes)

    def remove_documents(self, ids: Sequence[str] | str) -> list[str]:
        """Stage removals, by source or document id (or an id prefix of 8+ digits)."""
        return _service().remove_documents(self.name, ids)

    def status(self) -> KBStatus:
        """Staged documents and configuration changes the next commit would apply."""
        return _service().status(self.name)

    def configure(self, **changes: Any) -> KnowledgeBase:
        """Change ``embedding_model``, ``chunk_size``, ``chunk_overlap``, ``splitter``,
        ``metadata_fields``, ``description`` or ``max_document_bytes`` for the next commit.
        An embedder or chunker change re-embeds everything: commit then needs ``reembed=True``."""
        _service().configure(self.name, **changes, **self._options)
        return self

    # -- versions -------------------------------------------------------------------------
    def commit(
        self,
        message: str = "",
        reembed: bool = False,
        author: str | None = None,
        progress: Progress | None = None,
    ) -> KnowledgeBaseVersion:
        """Make the next version (``v1``, ``v2``...) from the newest one plus the staged changes.

        Only chunks without a stored embedding are embedded (``.embedded_chunks``;
        ``.reused_chunks`` were found). After an embedder or chunker change this raises
        Conflict saying how many chunks would be re-embedded, unless ``reembed=True``.
        ``progress(done, total)`` is told of the documents chunked, then of the chunks
        embedded (:mod:`keel.core.progress`; a local workspace only: a server says nothing).
        """
        with reporting(progress):
            found: KBVersion = _service().commit(self.name, message, reembed, author, self._embedder, **self._options)
        run = _run()
        if run is not None and found.created:
            run.log_output(found.entity)
        return self._wrap(found)

    def version(self, version: str | int | None = None, at: AtLike | None = None) -> KnowledgeBaseVersion:
        """A version: ``"v2"``, ``2``, or the newest (``None``/``"latest"``); with ``at``, the
        newest version committed at or before that time (a datetime, ``"2026-12-07T10:00:00Z"``,
        ``"1733500000s"``: :func:`keel.core.times.parse_at`). NotFound names the time when
        no version existed yet."""
        return self._wrap(_service().version(self.name, version, _ms(at)))

    def log(self) -> list[KnowledgeBaseVersion]:
        """Every version, newest first."""
        return [self._wrap(v) for v in _service().log(self.name)]

    def diff(self, a: str | int, b: str | int) -> KBDiff:
        """Documents added/removed/modified, chunks added/removed and config changes from ``a`` to ``b``."""
        return _service().diff(self.name, a, b)

    def search(
        self, query: str, top_k: int = 5, version: str | int | None = None, at: AtLike | None = None
    ) -> list[SearchHit]:
        """Search a version (default: the newest; with ``at``, the newest at that time, as
        :meth:`version`); see :meth:`KnowledgeBaseVersion.search`."""
        found, hits = _service().search(self.name, query, top_k, version, self._embedder, _ms(at), **self._options)
        note("kb", found.entity.id, found.entity.version)  # inside a trace: the current span searched it
        run = _run()
        if run is not None:
            run.use(found.entity)
        return hits

    def export(self, path: str | os.PathLike[str], version: str | int | None = None, format: str = "jsonl") -> Path:
        """Export a version's chunks and embeddings (``jsonl`` or ``parquet``); returns the path."""
        _service().export(self.name, version, path, format)
        return Path(path)


def create(
    name: str,
    embedding_model: str = "hashing-384",
    chunk_size: int = 512,
    chunk_overlap: int = 100,
    splitter: str = "characters",
    metadata_fields: Sequence[str] = (),
    description: str = "",
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
    dimension: int | None = None,
    embedder: Embedder | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
) -> KnowledgeBase:
    """Create a knowledge base (AlreadyExists if the name is taken).

    Args:
        embedding_model: ``hashing-384``, ``all-MiniLM-L6-v2`` (sentence-transformers),
            ``openai:text-embedding-3-small``...; with ``embedder=`` it is that embedder's id.
        splitter: ``characters``, ``tokens``, ``sentences`` or ``markdown``.
        metadata_fields: the document metadata search hits and exports carry (default: all).
        max_document_bytes: larger documents are refused (default 10 MB).
        base_url, api_key: for ``openai:`` models (default: ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``).
    """
    if embedder is not None:
        _own(embedder)
        embedding_model = embedder.id
        dimension = dimension if dimension is not None else embedder.dimension
    options = {k: v for k, v in {"base_url": base_url, "api_key": api_key}.items() if v is not None}
    _service().create(
        name, embedding_model, chunk_size, chunk_overlap, splitter, metadata_fields, description,
        max_document_bytes, dimension, **options,
    )  # fmt: skip
    return KnowledgeBase(name, embedder, **options)


def _own(embedder: Embedder) -> None:
    """Register a caller's embedder under its id's prefix, so the KB's model name resolves to it."""
    prefix, sep, rest = embedder.id.partition(":")
    if not sep or prefix in ("openai", "sentence-transformers", "st") or prefix.startswith("hashing-"):
        raise InvalidInput(
            f"a custom embedder's id must look like PREFIX:NAME (not {embedder.id!r})",
            "e.g. id = 'mycompany:encoder-v3'",
        )
    register_embedder(prefix, lambda _name, **_opts: embedder)


def get(
    name: str, embedder: Embedder | None = None, base_url: str | None = None, api_key: str | None = None
) -> KnowledgeBase:
    """An existing knowledge base (NotFound if there is none)."""
    _service().get(name)
    if embedder is not None:
        _own(embedder)
    return KnowledgeBase(name, embedder, base_url=base_url, api_key=api_key)


def list_kbs() -> list[KBInfo]:
    """Every knowledge base with its configuration and newest version."""
    return _service().list_kbs()


def search(ref: str, query: str, top_k: int = 5, at: AtLike | None = None) -> list[SearchHit]:
    """Search ``NAME@VERSION`` (or ``NAME``: the newest version; with ``at``, the version that
    was newest at that time)."""
    name, version = parse_ref(ref)
    return get(name).search(query, top_k, version, at)
