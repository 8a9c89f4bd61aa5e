"""Knowledge bases: documents, deterministic chunks, stored embeddings, immutable versions.

- A *knowledge base* has a name and a configuration: embedding model,
  chunker (splitter, ``chunk_size``, ``chunk_overlap``), metadata fields, and
  a document size limit. Changing the configuration applies to the next commit.
- Documents are added to and removed from a persistent *staging area*
  (table ``kb_staged``), so ``keel kb add`` and ``keel kb commit`` may run in
  different processes. Each document is stored once, by content hash.
- :meth:`KBService.commit` builds the next *version* (``v1``, ``v2``, ...):
  it chunks new or changed documents, embeds only the chunks whose
  ``(embedder id, chunk id)`` embedding is not stored yet, writes the
  manifest, chunk table and index objects, then in ONE transaction inserts
  the version, records the new embeddings and clears exactly the staged rows
  it used. A failure at any step leaves the versions and the staging area as
  they were (at most some unreferenced objects remain).
- A change of embedding model or chunker gives every chunk a new embedding
  key, so a commit after one says how many chunks it would embed and raises
  :class:`~keel.errors.Conflict` unless called with ``reembed=True``.

See ``docs/kb.md`` for the storage layout.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence, Sized
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from keel.core.auth import Principal
from keel.core.data_pointer import POINTER_SUFFIX, parse_pointer
from keel.core.embedders import Embedder, check_vectors
from keel.core.entities import now_ms
from keel.core.hashing import hash_bytes
from keel.core.kb_chunking import ChunkConfig, chunk_id, chunk_text
from keel.core.kb_manifest import (
    ConfigChange,
    DocumentEntry,
    KBManifest,
    diff_manifests,
    document_bytes,
    parse_document,
)
from keel.core.names import check_name
from keel.core.progress import Progress, meter, step
from keel.core.progress import current as current_progress
from keel.core.times import format_at, parse_at
from keel.errors import AlreadyExists, Conflict, InvalidInput, NotFound, StoreError
from keel.fileio import atomic_write
from keel.meta.kb import KBRow, KBVersionRow, RawKB, StagedRow
from keel.services.audit import who as audit_who
from keel.services.contract import (
    operation,
    service,
)
from keel.services.embedders import EndpointPolicy
from keel.services.kb_index import (
    ChunkTable,
    SearchHit,
    check_top_k,
    load_chunks,
    load_index,
    load_matrix,
    matrix_bytes,
    write_jsonl,
    write_parquet,
)
from keel.services.kb_results import (
    KIND,
    AddReport,
    KBDiff,
    KBInfo,
    KBStatus,
    KBVersion,
    SkippedDocument,
    parse_version,
)
from keel.services.workspace import Store

__all__ = [
    "DEFAULT_MAX_DOCUMENT_BYTES",
    "KIND",
    "AddReport",
    "KBDiff",
    "KBInfo",
    "KBService",
    "KBStatus",
    "KBVersion",
    "SearchHit",
    "SkippedDocument",
    "parse_version",
]

log = logging.getLogger("keel")

DEFAULT_MAX_DOCUMENT_BYTES = 10 << 20
_DATA_KEY = ":data:"  # staged-row key prefix of a tracked-data source (never a document key)
_EMBED_BATCH = 1024
_IO_THREADS = 8


# -- helpers --------------------------------------------------------------------------------
def _config_of(kb: KBRow) -> dict[str, Any]:
    """The configuration a commit records in the manifest (``dimension`` may still be None)."""
    return {
        "embedding_model": kb.embedding_model,
        "dimension": kb.dimension,
        "splitter": kb.splitter,
        "chunk_size": kb.chunk_size,
        "chunk_overlap": kb.chunk_overlap,
        "metadata_fields": list(kb.metadata_fields),
    }


def _config_changes(head: KBManifest | None, kb: KBRow) -> list[ConfigChange]:
    """How the current configuration differs from the newest version's."""
    if head is None:
        return []
    new = _config_of(kb)
    changes = []
    for key, value in new.items():
        if key == "dimension" and value is None:
            continue  # not known until the next commit embeds something
        if head.config.get(key) != value:
            changes.append(ConfigChange(key, head.config.get(key), value))
    return changes


def _version(row: KBVersionRow, created: bool = True) -> KBVersion:
    return KBVersion(
        row.name, row.version, row.parent, row.message, row.author, row.created_at, row.document_count,
        row.chunk_count, row.embedding_model, row.dimension, row.splitter, row.chunk_size, row.chunk_overlap,
        row.manifest_oid, row.data_sources, row.embedded_chunks, row.reused_chunks, row.chunks_oid, row.index_oid,
        created,
    )  # fmt: skip


def _info(row: KBRow, latest: int | None = None, staged: int = 0) -> KBInfo:
    return KBInfo(
        row.name, row.description, row.embedding_model, row.dimension, row.splitter, row.chunk_size,
        row.chunk_overlap, row.metadata_fields, row.max_document_bytes, row.created_at, row.updated_at, latest, staged,
    )  # fmt: skip


def _embedder_for(
    model: str, given: Embedder | None, options: Mapping[str, Any], endpoints: EndpointPolicy
) -> Embedder:
    """The embedder for ``model``: the one given (its id must be ``model``), else resolved by name
    with the options ``endpoints`` allows (checked before any request is made)."""
    if given is None:
        return endpoints.resolve(model, options)
    if not endpoints.trusted:
        raise InvalidInput(
            "a keel server embeds only with the embedders configured on it, not one its caller passes",
            "name the embedding model instead, or use a local workspace to embed with your own embedder",
        )
    if given.id != model:
        raise InvalidInput(
            f"embedder {given.id!r} is not this knowledge base's embedding model {model!r}",
            "pass the embedder the knowledge base uses, or configure embedding_model (a full re-embed)",
        )
    return given


def _check_fields(fields: Any) -> tuple[str, ...]:
    if fields is None:
        return ()
    if isinstance(fields, str) or not all(isinstance(f, str) and f for f in fields):
        raise InvalidInput(f"metadata_fields must be a list of names, not {fields!r}", "e.g. ['title', 'url']")
    return tuple(dict.fromkeys(fields))


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInput(f"max_document_bytes must be a positive whole number, not {limit!r}", "e.g. 10485760")
    return limit


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MB" if n >= 1 << 20 else f"{n} bytes"


def _source_of(path: Path, base: Path) -> str:
    """A file's source: its path relative to ``base`` (posix), else absolute."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(base.resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


@dataclass
class _Prepared:
    """Documents read and checked, not yet stored: ``(key, stored bytes)`` in input order."""

    docs: list[tuple[str, bytes]] = field(default_factory=list)
    skipped: list[SkippedDocument] = field(default_factory=list)


# -- the service ------------------------------------------------------------------------------
def documents_not_files(_services: Any, _caller: Principal, arguments: dict[str, Any]) -> None:
    """On a server, documents travel as ``{'text', 'metadata', 'source'}`` dicts, never file paths."""
    items = arguments.get("items")
    documents = items if isinstance(items, list | tuple) else [items]
    if not all(isinstance(item, dict) for item in documents):
        raise InvalidInput(
            "kb.add_documents on a keel server takes {'text', 'metadata', 'source'} dicts, not file paths",
            "the keel sdk reads files on your machine and sends their text",
        )


@service("kb")
class KBService:
    """Knowledge-base use cases over one store.

    ``endpoints`` says which embedder endpoints and options callers may choose: the
    user's own (:meth:`EndpointPolicy.local`, the default), or on a keel server only
    those configured on the server (:meth:`EndpointPolicy.server`).
    """

    def __init__(self, store: Store, endpoints: EndpointPolicy | None = None) -> None:
        self.store = store
        self.endpoints = endpoints if endpoints is not None else EndpointPolicy.local()
        self.db = store.db
        self.objects = store.objects
        self.raw = RawKB(store.db)
        # Object round trips to a remote store (S3) are worth a thread pool; local files are not.
        self._remote = not store.objects.capabilities.local_path

    # -- knowledge bases --------------------------------------------------------------------
    def _kb_or_raise(self, cur: Any, name: str) -> KBRow:
        kb = self.raw.kb(cur, name)
        if kb is None:
            raise NotFound(
                f"no knowledge base named {name!r}", "list them with 'keel kb list', create one with 'keel kb create'"
            )
        return kb

    @operation("writer")
    def create(
        self,
        name: str,
        embedding_model: str = "hashing-384",
        chunk_size: int = 512,
        chunk_overlap: int = 100,
        splitter: str = "characters",
        metadata_fields: Sequence[str] = (),
        description: str = "",
        max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
        dimension: int | None = None,
        **embedder_options: Any,
    ) -> KBInfo:
        """Create a knowledge base (AlreadyExists if the name is taken)."""
        check_name(name, "knowledge base name")
        if "@" in name:
            raise InvalidInput(f"invalid knowledge base name {name!r}: it contains '@'", "NAME@VERSION must parse")
        ChunkConfig(splitter, chunk_size, chunk_overlap)
        embedder = self.endpoints.resolve(embedding_model, embedder_options)
        dim = dimension if dimension is not None else embedder.dimension
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise InvalidInput(f"invalid dimension {dim!r}", "a positive whole number, e.g. 384")
        row = KBRow(
            0, name, str(description or ""), embedding_model, dim, splitter, chunk_size, chunk_overlap,
            _check_fields(metadata_fields), _check_limit(max_document_bytes), 0, 0,
        )  # fmt: skip
        with self.db.raw_write() as cur:
            self.raw.lock(cur, name)  # two creations of one name: the second sees the first
            if self.raw.kb(cur, name) is not None:
                raise AlreadyExists(f"a knowledge base named {name!r} already exists", f"use it: keel.kb.get({name!r})")
            return _info(self.raw.create(cur, row))

    @operation("reader")
    def get(self, name: str) -> KBInfo:
        """A knowledge base with its newest version and number of staged changes."""
        with self.db.raw_read() as cur:
            kb = self._kb_or_raise(cur, name)
            latest = self.raw.latest(cur, name)
            staged = len(self.raw.staged(cur, kb.id))
        return _info(kb, None if latest is None else latest.version, staged)

    @operation("reader")
    def list_kbs(self) -> list[KBInfo]:
        """Every knowledge base, by name."""
        with self.db.raw_read() as cur:
            out = []
            for kb in self.raw.kbs(cur):
                latest = self.raw.latest(cur, kb.name)
                out.append(_info(kb, None if latest is None else latest.version, len(self.raw.staged(cur, kb.id))))
            return out

    @operation("writer")
    def configure(
        self,
        name: str,
        embedding_model: str | None = None,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        splitter: str | None = None,
        metadata_fields: Sequence[str] | None = None,
        description: str | None = None,
        max_document_bytes: int | None = None,
        **embedder_options: Any,
    ) -> KBInfo:
        """Change the configuration the next commit uses.

        A new embedding model or chunker means the next commit re-embeds every
        chunk: :meth:`commit` then asks for ``reembed=True`` (:meth:`status` shows it).
        """
        with self.db.raw_read() as cur:
            kb = self._kb_or_raise(cur, name)
        self.endpoints.options(embedding_model or kb.embedding_model, embedder_options)  # refused before any change
        changes: dict[str, Any] = {}
        if embedding_model is not None and embedding_model != kb.embedding_model:
            embedder = self.endpoints.resolve(embedding_model, embedder_options)
            changes["embedding_model"] = embedding_model
            changes["dimension"] = embedder.dimension  # None: learned at the next commit
        for key, value in (("chunk_size", chunk_size), ("chunk_overlap", chunk_overlap), ("splitter", splitter)):
            if value is not None:
                changes[key] = value
        if metadata_fields is not None:
            changes["metadata_fields"] = _check_fields(metadata_fields)
        if description is not None:
            changes["description"] = str(description)
        if max_document_bytes is not None:
            changes["max_document_bytes"] = _check_limit(max_document_bytes)
        new = replace(kb, **changes)
        ChunkConfig(new.splitter, new.chunk_size, new.chunk_overlap)
        with self.db.raw_write() as cur:
            current = self._kb_or_raise(cur, name)
            self.raw.update(cur, replace(new, id=current.id))
        return self.get(name)

    # -- versions -----------------------------------------------------------------------------
    def _version_row(self, cur: Any, name: str, version: Any, at: Any = None) -> KBVersionRow:
        number = parse_version(version)
        if at is not None:
            if number is not None:
                raise InvalidInput(
                    f"give a version of {name!r} or a time, not both",
                    f"ask for v{number}, or for the version that was newest at a time (at=, --at)",
                )
            return self._as_of_row(cur, name, parse_at(at))
        row = self.raw.latest(cur, name) if number is None else self.raw.version(cur, name, number)
        if row is None:
            self._kb_or_raise(cur, name)
            if number is None:
                raise NotFound(
                    f"knowledge base {name!r} has no versions yet", f"add documents and commit: keel kb commit {name}"
                )
            raise NotFound(f"knowledge base {name!r} has no version v{number}", f"list them with 'keel kb log {name}'")
        return row

    def _as_of_row(self, cur: Any, name: str, at: int) -> KBVersionRow:
        row = self.raw.as_of(cur, name, at)
        if row is None:
            self._kb_or_raise(cur, name)
            first = self.raw.first(cur, name)
            hint = (
                f"its first version v{first.version} was committed at {format_at(first.created_at)}: "
                f"see 'keel kb log {name}'"
                if first is not None
                else f"it has no versions yet: add documents and commit (keel kb commit {name})"
            )
            raise NotFound(f"no version of knowledge base {name!r} existed at {format_at(at)}", hint)
        return row

    @operation("reader")
    def version(self, name: str, version: Any = None, at: int | float | str | datetime | None = None) -> KBVersion:
        """One version (``"v2"``, ``2``) or the newest (``None``/``"latest"``); with ``at`` (any
        time :func:`keel.core.times.parse_at` reads), the newest version committed at or before it."""
        with self.db.raw_read() as cur:
            return _version(self._version_row(cur, name, version, at))

    @operation("reader")
    def log(self, name: str) -> list[KBVersion]:
        """Every version, newest first."""
        with self.db.raw_read() as cur:
            self._kb_or_raise(cur, name)
            return [_version(row) for row in self.raw.versions(cur, name)]

    @operation("reader")
    def manifest(self, name: str, version: Any = None) -> KBManifest:
        """A version's manifest (config, documents with their chunk ids, data sources)."""
        return self._manifest(self.version(name, version).manifest_hash)

    def _manifest(self, oid: str) -> KBManifest:
        return KBManifest.parse(self.objects.get_bytes(oid), f"manifest {oid}")

    @operation("reader")
    def diff(self, name: str, a: Any, b: Any) -> KBDiff:
        """Documents added/removed/modified, chunks added/removed and config changes from ``a`` to ``b``."""
        va, vb = self.version(name, a), self.version(name, b)
        return KBDiff(name, va, vb, diff_manifests(self._manifest(va.manifest_hash), self._manifest(vb.manifest_hash)))

    # -- adding and removing documents ------------------------------------------------------
    def _prepare_text(self, prepared: _Prepared, text: Any, metadata: Any, source: str, limit: int, kb: str) -> None:
        if not isinstance(text, str):
            raise InvalidInput(
                f"document {source or '(no source)'}: text must be a string, not {type(text).__name__}",
                "give {'text': '...', 'metadata': {...}, 'source': '...'}",
            )
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > limit:
            raise InvalidInput(
                f"document {source or '(no source)'} is {_size(size)}, over the {_size(limit)} limit of "
                f"knowledge base {kb!r}",
                f"split it, or raise the limit: keel kb configure {kb} --max-document-bytes N",
            )
        if not text.strip():
            prepared.skipped.append(SkippedDocument(source or "(no source)", "empty"))
            return
        if source.startswith(_DATA_KEY):
            raise InvalidInput(f"invalid document source {source!r}", f"sources may not start with {_DATA_KEY!r}")
        try:
            data = document_bytes(text, metadata, source)
        except UnicodeEncodeError:
            prepared.skipped.append(SkippedDocument(source or "(no source)", "not valid Unicode text"))
            return
        prepared.docs.append((source or hash_bytes(data), data))

    def _prepare_file(self, prepared: _Prepared, path: Path, base: Path, limit: int, kb: str) -> None:
        source = _source_of(path, base)
        try:
            size = path.stat().st_size
            if size > limit:
                raise InvalidInput(
                    f"document {source} is {_size(size)}, over the {_size(limit)} limit of knowledge base {kb!r}",
                    f"split it, or raise the limit: keel kb configure {kb} --max-document-bytes N",
                )
            raw = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no file {str(path)!r}", "check the path (pass text as {'text': ...})") from None
        except IsADirectoryError:
            raise InvalidInput(f"{path} is a directory", "use add_directory (CLI: keel kb add NAME DIR)") from None
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror}", "check the file's permissions") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            prepared.skipped.append(SkippedDocument(source, f"not UTF-8: byte 0x{raw[exc.start]:02x} at {exc.start}"))
            return
        self._prepare_text(prepared, text, {}, source, limit, kb)

    def _prepare(self, items: Any, base: Path, limit: int, kb: str, progress: Progress | None = None) -> _Prepared:
        if isinstance(items, str | os.PathLike | Mapping):
            items = [items]
        prepared = _Prepared()
        counter = meter(progress, len(items) if isinstance(items, Sized) else 0)
        for item in items:
            counter.add(1)
            if isinstance(item, Mapping):
                unknown = set(item) - {"text", "metadata", "source"}
                if unknown or "text" not in item:
                    raise InvalidInput(
                        f"a document dict has the keys text, metadata, source; got {sorted(item)}",
                        "e.g. {'text': 'Refunds take 5 days.', 'metadata': {'lang': 'en'}, 'source': 'refunds.md'}",
                    )
                self._prepare_text(
                    prepared, item["text"], item.get("metadata"), str(item.get("source") or ""), limit, kb
                )
            elif isinstance(item, str | os.PathLike):
                self._prepare_file(prepared, Path(item), base, limit, kb)
            else:
                raise InvalidInput(
                    f"cannot add a {type(item).__name__} as a document", "give file paths or {'text': ...} dicts"
                )
        counter.close()
        keys = [key for key, _ in prepared.docs]
        if len(set(keys)) != len(keys):
            dupes = sorted({k for k in keys if keys.count(k) > 1})
            raise InvalidInput(f"two documents share the source {dupes[0]!r}", "give each document its own source")
        return prepared

    def _put_all(self, blobs: Sequence[bytes], progress: Progress | None = None) -> list[str]:
        """Store blobs (in parallel: S3 round trips dominate otherwise); return their oids.
        ``progress`` counts the blobs stored (those already there are not)."""
        oids = [hash_bytes(b) for b in blobs]
        have = self.objects.freshen_many(set(oids))  # found stored: made young, so a running gc keeps them
        missing = {oid: blob for oid, blob in zip(oids, blobs, strict=True) if oid not in have}
        counter = meter(progress, len(missing))
        if len(missing) > 1 and self._remote:
            with ThreadPoolExecutor(_IO_THREADS) as pool:
                for _ in pool.map(self.objects.put_bytes, missing.values()):
                    counter.add(1)
        else:
            for blob in missing.values():
                self.objects.put_bytes(blob)
                counter.add(1)
        counter.close()
        return oids

    def _working(
        self, cur: Any, kb: KBRow
    ) -> tuple[KBVersionRow | None, KBManifest | None, dict[str, str], list[StagedRow]]:
        """The newest version, its manifest and ``{key: document id}``, and the staged rows."""
        head = self.raw.latest(cur, kb.name)
        staged = self.raw.staged(cur, kb.id)
        manifest = None if head is None else self._manifest(head.manifest_oid)
        docs = {} if manifest is None else {d.key: d.id for d in manifest.documents}
        return head, manifest, docs, staged

    @operation("writer", local_only=("base",), check=documents_not_files)
    def add_documents(
        self,
        name: str,
        items: Any,
        base: str | os.PathLike[str] | None = None,
        max_document_bytes: int | None = None,
        data_source: Mapping[str, str] | None = None,
    ) -> AddReport:
        """Stage documents (file paths, or ``{"text", "metadata", "source"}`` dicts).

        A file's source is its path relative to ``base`` (default: the current
        folder). Empty and non-UTF-8 documents are skipped and listed in the
        report; one over the size limit raises InvalidInput and stages nothing.
        Progress (:func:`keel.core.progress.reporting`, in-process only): documents
        read, then documents stored.
        """
        progress = current_progress()
        with self.db.raw_read() as cur:
            kb = self._kb_or_raise(cur, name)
        limit = _check_limit(max_document_bytes) if max_document_bytes is not None else kb.max_document_bytes
        prepared = self._prepare(items, Path(base or os.getcwd()), limit, name, step(progress, "reading", "documents"))
        oids = self._put_all([data for _, data in prepared.docs], step(progress, "storing", "documents"))
        report = AddReport(skipped=prepared.skipped, data_source=dict(data_source) if data_source else None)
        for skipped in prepared.skipped:
            log.warning("keel: knowledge base %s: skipped %s (%s)", name, skipped.source, skipped.reason)
        with self.db.raw_write() as cur:
            kb = self._kb_or_raise(cur, name)
            _head, _manifest, head_docs, staged = self._working(cur, kb)
            staged_by_key = {s.key: s for s in staged}
            stage, revert = [], []
            for (key, _), oid in zip(prepared.docs, oids, strict=True):
                current = staged_by_key.get(key)
                in_work = (current.oid if current.action == "add" else None) if current else head_docs.get(key)
                if in_work == oid:
                    report.unchanged.append(key)
                    continue
                if head_docs.get(key) == oid:  # back to what the newest version has
                    revert.append(key)
                else:
                    stage.append((key, "add", oid))
                (report.modified if in_work is not None else report.added).append(key)
            if data_source:
                stage.append((_DATA_KEY + data_source["path"], "data", data_source["oid"]))
            self.raw.unstage_keys(cur, kb.id, revert)
            self.raw.stage(cur, kb.id, stage)
        return report

    def add_directory(
        self,
        name: str,
        path: str | os.PathLike[str],
        base: str | os.PathLike[str] | None = None,
        pattern: str = "**/*",
        max_document_bytes: int | None = None,
    ) -> AddReport:
        """Stage every file under ``path`` (hidden files and ``*.keel`` pointers excluded).

        If the folder (or one above it) is tracked by ``keel data`` (a
        ``FOLDER.keel`` pointer beside it), the pointer's path and hash are
        recorded on the next version: ``data_sources``.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise NotFound(f"no directory {str(folder)!r}", "check the path")
        base_path = Path(base or os.getcwd())
        files = []
        for file in sorted(folder.glob(pattern)):
            rel = file.relative_to(folder).parts
            if any(p.startswith(".") for p in rel) or file.name.endswith(POINTER_SUFFIX) or not file.is_file():
                continue
            files.append(file)
        return self.add_documents(name, files, base_path, max_document_bytes, _tracked_data(folder, base_path))

    @operation("writer")
    def remove_documents(self, name: str, ids: Sequence[str] | str) -> list[str]:
        """Stage the removal of documents, given by source, key, document id or id prefix (8+ digits).

        Returns the removed keys. NotFound (nothing staged) if any id matches no document.
        """
        if isinstance(ids, str):
            ids = [ids]
        with self.db.raw_write() as cur:
            kb = self._kb_or_raise(cur, name)
            _head, _manifest, head_docs, staged = self._working(cur, kb)
            working = dict(head_docs)
            for s in staged:
                if s.action == "add":
                    working[s.key] = s.oid
                elif s.action == "remove":
                    working.pop(s.key, None)
            keys: list[str] = []
            for given in ids:
                key = self._match(working, str(given), name)
                if key not in keys:
                    keys.append(key)
            revert = [k for k in keys if k not in head_docs]  # staged adds never committed: just unstage
            self.raw.unstage_keys(cur, kb.id, revert)
            self.raw.stage(cur, kb.id, [(k, "remove", head_docs[k]) for k in keys if k in head_docs])
        return keys

    @staticmethod
    def _match(working: Mapping[str, str], given: str, name: str) -> str:
        if given in working:
            return given
        found = [k for k, oid in working.items() if oid == given or (len(given) >= 8 and oid.startswith(given))]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise InvalidInput(f"{given!r} matches {len(found)} documents", "give the full source or document id")
        raise NotFound(
            f"knowledge base {name!r} has no document {given!r}", f"see its documents: keel kb status {name}"
        )

    @operation("reader")
    def status(self, name: str) -> KBStatus:
        """What the next commit would change: staged documents and configuration changes."""
        with self.db.raw_read() as cur:
            kb = self._kb_or_raise(cur, name)
            head, head_manifest, head_docs, staged = self._working(cur, kb)
        added = [s.key for s in staged if s.action == "add" and s.key not in head_docs]
        modified = [s.key for s in staged if s.action == "add" and s.key in head_docs]
        removed = [s.key for s in staged if s.action == "remove"]
        data = [{"path": s.key[len(_DATA_KEY) :], "oid": s.oid} for s in staged if s.action == "data"]
        config = _config_changes(head_manifest, kb)
        return KBStatus(name, None if head is None else head.version, added, modified, removed, config, data)

    # -- committing -----------------------------------------------------------------------------
    @operation("writer")
    def commit(
        self,
        name: str,
        message: str = "",
        reembed: bool = False,
        author: str | None = None,
        embedder: Embedder | None = None,
        **embedder_options: Any,
    ) -> KBVersion:
        """Build the next version from the newest one plus the staged changes and the current config.

        Embeds only chunks whose ``(embedder id, chunk id)`` embedding is not stored.
        With nothing staged and the same config, returns the newest version
        (``created=False``). Raises Conflict if an embedder or chunker change means
        re-embedding, unless ``reembed=True``; nothing is written then.

        Progress (:func:`keel.core.progress.reporting`, in-process only): documents
        chunked, then chunks embedded, then the writing of the version.
        """
        actor = audit_who(author)
        progress = current_progress()
        with self.db.raw_read() as cur:
            kb = self._kb_or_raise(cur, name)
            head, head_manifest, head_docs, staged = self._working(cur, kb)
        chunking = ChunkConfig(kb.splitter, kb.chunk_size, kb.chunk_overlap)
        model = _embedder_for(kb.embedding_model, embedder, embedder_options, self.endpoints)
        changes = _config_changes(head_manifest, kb)
        if head is not None and not staged and not changes:
            return _version(head, created=False)

        # The new document set: the newest version's, with the staged changes applied.
        docs = dict(head_docs)
        data_sources = {d["path"]: d["oid"] for d in (head.data_sources if head else ())}
        for s in staged:
            if s.action == "add":
                docs[s.key] = s.oid
            elif s.action == "remove":
                docs.pop(s.key, None)
            else:
                data_sources[s.key[len(_DATA_KEY) :]] = s.oid
        if not docs:
            raise InvalidInput(
                f"knowledge base {name!r} would have no documents", f"add some first: keel kb add {name} PATH"
            )

        table, entries = self._chunk_all(
            head, chunking, docs, kb.metadata_fields, step(progress, "chunking", "documents")
        )

        # Embeddings: look up the stored ones, embed the rest.
        unique = list(dict.fromkeys(row[2] for row in table.rows))
        with self.db.raw_read() as cur:
            stored = self.raw.embeddings(cur, model.id, unique)
        missing = [c for c in unique if c not in stored]
        if missing and not reembed and any(c.reembeds for c in changes):
            what = "; ".join(f"{c.field} {c.old} -> {c.new}" for c in changes if c.reembeds)
            raise Conflict(
                f"the configuration of knowledge base {name!r} changed ({what}): this commit would re-embed "
                f"{len(missing)} of {len(unique)} chunks",
                "commit with reembed=True (CLI: keel kb commit --reembed) to do it",
            )
        texts = {row[2]: row[3] for row in table.rows}
        new_vectors = self._embed(
            model, [texts[c] for c in missing], kb.dimension, step(progress, "embedding", "chunks")
        )
        step(progress, "writing")
        new_rows = {c: i for i, c in enumerate(missing)}
        vectors = self._gather(stored, [row[2] for row in table.rows], new_rows, new_vectors, kb.dimension)
        dimension = int(vectors.shape[1])
        pack_oid = self.objects.put_bytes(matrix_bytes(new_vectors)) if missing else ""

        manifest = KBManifest.build(
            {**_config_of(kb), "dimension": dimension},
            entries,
            [{"path": p, "oid": o} for p, o in data_sources.items()],
        )
        manifest_oid, chunks_oid, index_oid = self._put_all([manifest.encode(), table.encode(), matrix_bytes(vectors)])
        if head is not None and manifest_oid == head.manifest_oid:
            with self.db.raw_write() as cur:
                self.raw.unstage(cur, kb.id, staged)
            return _version(head, created=False)

        with self.db.raw_write() as cur:
            self.raw.lock(cur, name)  # the configuration and newest version read below are current
            current = self._kb_or_raise(cur, name)
            if replace(current, updated_at=0) != replace(kb, updated_at=0):
                raise Conflict(
                    f"the configuration of knowledge base {name!r} changed during the commit", "commit again"
                )
            number = self.raw.next_version(cur, kb.id)
            if number != (1 if head is None else head.version + 1):
                raise Conflict(
                    f"someone committed {name!r} v{number - 1} meanwhile", "check 'keel kb log', then commit again"
                )
            row = KBVersionRow(
                name, number, None if head is None else head.version, str(message or ""), actor, now_ms(),
                len(entries), len(table.rows), kb.embedding_model, dimension, kb.splitter, kb.chunk_size,
                kb.chunk_overlap, manifest_oid, chunks_oid, index_oid, manifest.data, len(missing),
                len(unique) - len(missing),
            )  # fmt: skip
            self.raw.insert_version(cur, kb.id, row)
            self.raw.add_embeddings(cur, model.id, pack_oid, missing)
            self.raw.unstage(cur, kb.id, staged)
            self.raw.set_dimension(cur, kb.id, dimension)
        return _version(row)

    def _chunk_all(
        self,
        head: KBVersionRow | None,
        chunking: ChunkConfig,
        docs: Mapping[str, str],
        fields: tuple[str, ...],
        progress: Progress | None = None,
    ) -> tuple[ChunkTable, list[DocumentEntry]]:
        """The chunk table and manifest entries of ``{key: document id}``, sorted by key.

        Documents the newest version has, chunked the same way, keep its chunks
        (no document is read); the others are read and chunked.
        """
        same = head is not None and (head.splitter, head.chunk_size, head.chunk_overlap) == (
            chunking.splitter, chunking.chunk_size, chunking.chunk_overlap,
        )  # fmt: skip
        head_table = load_chunks(self.objects, head.chunks_oid) if (head is not None and same) else None
        head_chunks: dict[str, tuple[int, list[list[Any]]]] = {}  # document id -> (its index, its rows)
        if head_table is not None:
            for row in head_table.rows:
                head_chunks.setdefault(head_table.documents[row[0]][1], (row[0], []))[1].append(row)
        keys = sorted(docs)
        counter = meter(progress, len(keys))
        fresh = list(dict.fromkeys(docs[k] for k in keys if docs[k] not in head_chunks))
        loaded = dict(zip(fresh, self._get_all(fresh), strict=True))
        table = ChunkTable([], [], fields)
        entries: list[DocumentEntry] = []
        for key in keys:
            oid = docs[key]
            index = len(table.documents)
            if oid in head_chunks:
                assert head_table is not None
                head_index, rows = head_chunks[oid]
                source, metadata = head_table.documents[head_index][2], head_table.documents[head_index][3]
                pieces = [(r[2], r[3]) for r in rows]
            else:
                doc = parse_document(loaded[oid], oid)
                source, metadata = doc.get("source", ""), doc.get("metadata", {})
                pieces = [(chunk_id(t, chunking), t) for t in chunk_text(doc["text"], chunking)]
            table.documents.append([key, oid, source, metadata])
            table.rows.extend([index, pos, cid, text] for pos, (cid, text) in enumerate(pieces))
            entries.append(DocumentEntry(key, oid, source, tuple(cid for cid, _ in pieces)))
            counter.add(1)
        counter.close()
        return table, entries

    def _get_all(self, oids: Sequence[str]) -> list[bytes]:
        if len(oids) > 16 and self._remote:
            with ThreadPoolExecutor(_IO_THREADS) as pool:
                return list(pool.map(self.objects.get_bytes, oids))
        return [self.objects.get_bytes(oid) for oid in oids]

    def _embed(
        self, model: Embedder, texts: Sequence[str], dimension: int | None, progress: Progress | None = None
    ) -> Any:
        parts = []
        counter = meter(progress, len(texts))
        for start in range(0, len(texts), _EMBED_BATCH):
            batch = texts[start : start + _EMBED_BATCH]
            vectors = check_vectors(model.embed(batch), len(batch), dimension, model.id)
            dimension = int(vectors.shape[1])
            parts.append(vectors)
            counter.add(len(batch))
        counter.close()
        if not parts:
            return np.zeros((0, dimension or 0), dtype=np.float32)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _gather(
        self,
        stored: Mapping[str, tuple[str, int]],
        chunk_ids: Sequence[str],
        new_rows: Mapping[str, int],
        new_vectors: Any,
        dimension: int | None,
    ) -> Any:
        """One row per chunk id: from this commit's vectors or from the stored packs."""
        packs: dict[str, Any] = {}
        for pack in sorted({stored[c][0] for c in chunk_ids if c not in new_rows}):
            packs[pack] = load_matrix(self.objects.get_bytes(pack), f"embedding pack {pack}")
        if dimension is None:
            dimension = int(new_vectors.shape[1]) if len(new_rows) else int(next(iter(packs.values())).shape[1])
        for pack, matrix in packs.items():
            if matrix.shape[1] != dimension:
                raise InvalidInput(
                    f"stored embeddings (pack {pack[:12]}) have {matrix.shape[1]} dimensions; this knowledge base "
                    f"has {dimension}",
                    "use the embedder the knowledge base was built with",
                )
        out = np.empty((len(chunk_ids), dimension), dtype=np.float32)
        for i, c in enumerate(chunk_ids):
            if c in new_rows:
                out[i] = new_vectors[new_rows[c]]
            else:
                pack, row = stored[c]
                out[i] = packs[pack][row]
        return out

    # -- searching and exporting ---------------------------------------------------------------
    @operation("reader")
    def search(
        self,
        name: str,
        query: str,
        top_k: int = 5,
        version: Any = None,
        embedder: Embedder | None = None,
        at: int | float | str | datetime | None = None,
        **embedder_options: Any,
    ) -> tuple[KBVersion, list[SearchHit]]:
        """Exact cosine top-k over a version's chunks (deterministic); returns the version searched and hits.

        ``at``: search the version that was newest at that time (see :meth:`version`)."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("the search query is empty", "search for some text, e.g. 'how do refunds work?'")
        k = check_top_k(top_k)
        with self.db.raw_read() as cur:
            row = self._version_row(cur, name, version, at)
        found = _version(row)
        model = _embedder_for(row.embedding_model, embedder, embedder_options, self.endpoints)
        index = load_index(self.objects, row.index_oid, row.chunks_oid, self.store.root)
        query_vector = check_vectors(model.embed([query]), 1, row.dimension, model.id)[0]
        hits = []
        for rank, (i, score) in enumerate(index.top(query_vector, k), 1):
            doc_index, position, cid, text = index.table.rows[i]
            _key, doc_id, source, _meta = index.table.documents[doc_index]
            metadata = index.table.document_metadata(doc_index)
            hits.append(SearchHit(rank, score, cid, doc_id, source, position, text, metadata))
        return found, hits

    def export(self, name: str, version: Any, path: str | os.PathLike[str], format: str = "jsonl") -> KBVersion:
        """Write every chunk of a version with its embedding to ``path`` (``jsonl`` or ``parquet``)."""
        if format not in ("jsonl", "parquet"):
            raise InvalidInput(f"unknown export format {format!r}", "use jsonl or parquet")
        with self.db.raw_read() as cur:
            row = self._version_row(cur, name, version)
        found = _version(row)
        table = load_chunks(self.objects, row.chunks_oid)
        matrix = load_matrix(self.objects.get_bytes(row.index_oid), f"index {row.index_oid}")
        out = Path(path)
        meta = {
            "keel.kb": found.name,
            "keel.version": found.version,
            "keel.embedding_model": found.embedding_model,
            "keel.manifest_hash": found.manifest_hash,
        }
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            if format == "jsonl":
                atomic_write(out, lambda fh: write_jsonl(fh, table, matrix), text=True)
            else:
                atomic_write(out, lambda fh: write_parquet(fh, table, matrix, meta))
        except OSError as exc:
            raise StoreError(
                f"cannot write {out}: {exc.strerror or exc}", "check the path and its permissions"
            ) from exc
        return found


def _tracked_data(folder: Path, base: Path) -> dict[str, str] | None:
    """``{"path", "oid"}`` of the ``keel data`` pointer tracking ``folder`` or a folder above it."""
    resolved = folder.resolve()
    for candidate in (resolved, *resolved.parents):
        if candidate.parent == candidate:
            break
        pointer = candidate.parent / (candidate.name + POINTER_SUFFIX)
        if pointer.is_file():
            parsed = parse_pointer(pointer.read_text(encoding="utf-8"), str(pointer))
            return {"path": _source_of(candidate, base), "oid": parsed.oid}
        if (candidate / ".keel").is_dir() or (candidate / ".git").exists():
            break  # the workspace or repository root: nothing above it is ours
    return None
