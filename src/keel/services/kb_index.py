"""A KB version's chunk table and search index: storing, loading (memory-mapped), searching, exporting.

Each version stores two derived objects beside its manifest:

- the *chunk table* (canonical JSON): the documents (key, id, source,
  metadata) and one row per chunk, ``[document index, position, chunk id,
  text]``, sorted by document key then position;
- the *index*: a float32 ``.npy`` matrix whose row ``i`` is the L2-normalised
  embedding of chunk row ``i``.

Searching loads the index memory-mapped (``np.load(mmap_mode="r")``) from a
local cache file (``.keel/cache/kb/<oid>.npy`` in a workspace, else a temp
folder) and keeps it per process. The cache cannot change an answer: it is a
*copy* of the stored object, never a hard link (editing a link would edit the
object), written to a temporary file, checked against the object's hash while
written, made read-only (``0o444``) and renamed into place. Each process hashes
a cache file once before it first maps it, and every search compares the
file's identity (inode, size, mtime, ctime) with the one it hashed: a file that
changed is hashed again, and one that no longer matches its name (zeroed,
edited, or a link left by an older keel) is rebuilt from the object. A query is one
matrix-vector product, :func:`numpy.argpartition` for the top ``k``, and a
sort of the candidates by ``(-score, chunk id, row)``: every candidate that
ties with the ``k``-th score is considered, so the same query against the
same version returns exactly the same hits every time.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np

from keel.core.hashing import new_hasher
from keel.errors import IntegrityError, InvalidInput, StoreError
from keel.fileio import atomic_write
from keel.objects.base import ObjectStore

__all__ = [
    "CHUNKS_FORMAT",
    "ChunkTable",
    "LoadedIndex",
    "SearchHit",
    "cache_dir",
    "load_chunks",
    "load_index",
    "load_matrix",
    "matrix_bytes",
    "write_jsonl",
    "write_parquet",
]

CHUNKS_FORMAT = "keel-kb-chunks 1"
_KEEP = 8  # loaded versions kept per process


@dataclass(frozen=True)
class SearchHit:
    """One search result: the chunk, its document, and the cosine similarity to the query."""

    rank: int
    score: float
    chunk_id: str
    document_id: str
    source: str
    position: int
    text: str
    metadata: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "rank": self.rank,
            "score": self.score,
            "chunk_id": self.chunk_id,
            "document_id": self.document_id,
            "source": self.source,
            "position": self.position,
            "text": self.text,
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class ChunkTable:
    """The documents and chunk rows of a version (row ``i`` is index row ``i``)."""

    documents: list[list[Any]]  # [key, id, source, metadata]
    rows: list[list[Any]]  # [document index, position, chunk id, text]
    metadata_fields: tuple[str, ...] = ()  # the metadata hits and exports carry (empty: all of it)

    def encode(self) -> bytes:
        """Canonical JSON bytes (sorted keys, no spaces: :func:`~keel.core.hashing.canonical_json`'s
        form; the values are strings, ints and stored document metadata, so no float needs fixing)."""
        value = {
            "format": CHUNKS_FORMAT,
            "metadata_fields": list(self.metadata_fields),
            "documents": self.documents,
            "chunks": self.rows,
        }
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def parse(cls, data: bytes, where: str) -> ChunkTable:
        """Read :meth:`encode`'s bytes."""
        try:
            raw = json.loads(data)
            if raw.get("format") != CHUNKS_FORMAT:
                raise ValueError
            return cls(raw["documents"], raw["chunks"], tuple(raw.get("metadata_fields", ())))
        except (ValueError, KeyError, AttributeError):
            raise IntegrityError(f"{where} is not a keel chunk table", "run 'keel verify'") from None

    def texts_by_id(self) -> dict[str, str]:
        """``{chunk id: text}``."""
        return {row[2]: row[3] for row in self.rows}

    def document_metadata(self, index: int) -> dict[str, Any]:
        """A document's metadata, restricted to the version's ``metadata_fields`` when it has some."""
        metadata: dict[str, Any] = self.documents[index][3]
        if not self.metadata_fields:
            return dict(metadata)
        return {k: metadata[k] for k in self.metadata_fields if k in metadata}


def matrix_bytes(matrix: Any) -> bytes:
    """A float32 matrix as ``.npy`` bytes (deterministic for equal matrices)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(matrix, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def load_matrix(data: bytes, where: str) -> Any:
    """The matrix of :func:`matrix_bytes`."""
    try:
        matrix = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError:
        raise IntegrityError(f"{where} is not a float32 matrix", "run 'keel verify'") from None
    if matrix.dtype != np.float32 or matrix.ndim != 2:
        raise IntegrityError(f"{where} is not a float32 matrix", "run 'keel verify'")
    return matrix


def cache_dir(root: Path | None) -> Path:
    """Where memory-mapped index files live: the workspace's ``.keel/cache/kb`` or a temp folder."""
    if root is not None:
        folder = root / ".keel" / "cache" / "kb"
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            ignore = folder.parent / ".gitignore"
            if not ignore.exists():
                ignore.write_text("# keel's local caches: derived from the store, never committed.\n*\n")
    else:
        # A shared temp folder: anyone may create a name there first. Use the folder only if
        # it is a real folder of this user that nobody else can write (a planted folder or
        # symlink would hand this process index files it never checked).
        folder = Path(tempfile.gettempdir()) / f"keel-kb-cache-{os.getuid()}"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(folder)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise StoreError(
                f"{folder} is not a private folder of this user (a symlink, someone else's, or writable by others)",
                "remove it, or use a workspace ('keel init'), whose cache is .keel/cache/kb",
            )
    return folder


class LoadedIndex:
    """A version's index matrix (memory-mapped) with its chunk ids, ready to search."""

    def __init__(self, matrix: Any, table: ChunkTable, path: Path | None = None) -> None:
        if matrix.shape[0] != len(table.rows):
            raise IntegrityError(
                f"the index has {matrix.shape[0]} rows but the chunk table {len(table.rows)}", "run 'keel verify'"
            )
        self.matrix = matrix
        self.table = table
        self.path = path  # the cache file mapped (None: a matrix in memory)
        # rank[i]: where row i comes in (chunk id, row) order, the tie-break between equal scores
        ids = np.array([row[2] for row in table.rows], dtype="S64")
        self.rank = np.empty(len(ids), dtype=np.int64)
        self.rank[np.argsort(ids, kind="stable")] = np.arange(len(ids))

    @property
    def dimension(self) -> int:
        """Vector length."""
        return int(self.matrix.shape[1])

    def top(self, query: Any, k: int) -> list[tuple[int, float]]:
        """``(row, score)`` of the ``k`` best rows: highest cosine first, ties by chunk id then row.

        Exact and deterministic: rows tying with the ``k``-th score are all considered
        and the ones with the smallest chunk ids win, whatever order argpartition saw them in.
        """
        n = self.matrix.shape[0]
        if n == 0 or k <= 0:
            return []
        scores = self.matrix @ np.asarray(query, dtype=np.float32)
        k = min(k, n)
        if k < n:
            threshold = scores[np.argpartition(scores, n - k)[n - k :]].min()
            above = np.flatnonzero(scores > threshold)
            tied = np.flatnonzero(scores == threshold)
            need = k - len(above)
            if need < len(tied):
                ranks = self.rank[tied]
                tied = tied[np.argpartition(ranks, need - 1)[:need]] if need > 0 else tied[:0]
            selected = np.concatenate([above, tied])
        else:
            selected = np.arange(n)
        order = np.lexsort((self.rank[selected], -scores[selected]))
        return [(int(i), float(scores[i])) for i in selected[order][:k]]


_LOADED: OrderedDict[str, LoadedIndex] = OrderedDict()
_TABLES: OrderedDict[str, ChunkTable] = OrderedDict()
_LOCK = threading.Lock()


def _remember(cache: OrderedDict[str, Any], key: str, value: Any) -> Any:
    with _LOCK:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > _KEEP:
            cache.popitem(last=False)
    return value


def load_chunks(objects: ObjectStore, oid: str) -> ChunkTable:
    """A chunk table (cached per process)."""
    with _LOCK:
        found = _TABLES.get(oid)
    if found is not None:
        return found
    return _remember(_TABLES, oid, ChunkTable.parse(objects.get_bytes(oid), f"chunk table {oid}"))  # type: ignore[no-any-return]


#: cache file -> the identity (device, inode, size, mtime, ctime) it had when this process
#: last found its content hashing to its name. ctime cannot be set back by a user, so an
#: edit in place (even one that restores the mtime) changes the identity.
_CHECKED: dict[str, tuple[int, int, int, int, int]] = {}


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _hash_file(path: Path) -> str:
    hasher = new_hasher()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            hasher.update(block)
    return str(hasher.hexdigest())


def _current(path: Path, oid: str) -> bool:
    """True if ``path`` is a private copy whose content hashes to ``oid`` (hashed only when its
    identity differs from the last one this process checked)."""
    key = str(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        return False  # a symlink, or a hard link (to the stored object, by an older keel): replaced
    identity = _identity(st)
    with _LOCK:
        if _CHECKED.get(key) == identity:
            return True
    try:
        good = _hash_file(path) == oid
    except OSError:
        return False
    with _LOCK:
        if good:
            _CHECKED[key] = identity
        else:
            _CHECKED.pop(key, None)
    return good


def _write_copy(objects: ObjectStore, oid: str, path: Path) -> None:
    """Copy the object to ``path``: a temporary file, hashed as written, made read-only, renamed in."""

    def copy(out: BinaryIO) -> None:
        hasher = new_hasher()
        _size, chunks = objects.open_stream(oid)
        for chunk in chunks:
            hasher.update(chunk)
            out.write(chunk)
        if hasher.hexdigest() != oid:
            raise IntegrityError(
                f"stored index {oid} is corrupt: its content no longer matches its hash",
                "restore it from a remote or a backup; 'keel verify' lists every corrupt object",
            )

    try:
        atomic_write(path, copy, mode=0o444, fsync=False)
        identity = _identity(os.lstat(path))
    except OSError as exc:
        raise StoreError(
            f"cannot write the index cache {path}: {exc.strerror or exc}", f"check the permissions of {path.parent}"
        ) from exc
    with _LOCK:
        _CHECKED[str(path)] = identity


def _cache_file(objects: ObjectStore, oid: str, root: Path | None) -> Path:
    """The checked cache copy of the index object ``oid`` (rebuilt when absent or not its content)."""
    path = cache_dir(root) / f"{oid}.npy"
    if not _current(path, oid):
        _write_copy(objects, oid, path)
    return path


def _unchanged(path: Path) -> bool:
    """True if ``path`` still has the identity this process checked (one ``lstat``)."""
    try:
        identity = _identity(os.lstat(path))
    except OSError:
        return False
    with _LOCK:
        return _CHECKED.get(str(path)) == identity


def load_index(objects: ObjectStore, index_oid: str, chunks_oid: str, root: Path | None) -> LoadedIndex:
    """A version's index, memory-mapped from the checked local cache copy (cached per process;
    a cache file that changed since it was checked is checked again, or rebuilt, and re-mapped)."""
    key = f"{index_oid}:{chunks_oid}"
    with _LOCK:
        found = _LOADED.get(key)
    if found is not None and found.path is not None and _unchanged(found.path):
        with _LOCK:
            if key in _LOADED:
                _LOADED.move_to_end(key)
        return found
    table = load_chunks(objects, chunks_oid)
    path = _cache_file(objects, index_oid, root)
    try:
        matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError:
        raise IntegrityError(f"cached index {path} is unreadable", f"delete {path} and search again") from None
    if matrix.dtype != np.float32 or matrix.ndim != 2:
        raise IntegrityError(f"cached index {path} is not a float32 matrix", f"delete {path} and search again")
    return _remember(_LOADED, key, LoadedIndex(matrix, table, path))  # type: ignore[no-any-return]


def check_top_k(top_k: Any) -> int:
    """``top_k`` as a positive int."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InvalidInput(f"top_k must be a positive whole number, not {top_k!r}", "e.g. top_k=5")
    return top_k


def _export_rows(table: ChunkTable) -> list[tuple[Any, ...]]:
    metas = [table.document_metadata(i) for i in range(len(table.documents))]
    return [
        (cid, table.documents[d][1], table.documents[d][2], pos, text, metas[d]) for d, pos, cid, text in table.rows
    ]


def write_jsonl(fh: TextIO, table: ChunkTable, matrix: Any) -> None:
    """One JSON object per chunk, with its embedding, written to the open text file ``fh``."""
    for i, (cid, doc_id, source, pos, text, meta) in enumerate(_export_rows(table)):
        record = {
            "chunk_id": cid,
            "document_id": doc_id,
            "source": source,
            "position": pos,
            "text": text,
            "metadata": meta,
            "embedding": matrix[i].tolist(),
        }
        fh.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")


def write_parquet(path: Path | BinaryIO, table: ChunkTable, matrix: Any, schema_metadata: dict[str, str]) -> None:
    """Chunks and embeddings as a parquet file (``keel[parquet]``; ``path`` or an open binary
    file); the embedding is a fixed-size list."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise InvalidInput("exporting parquet needs pyarrow", "install it: pip install 'keel[parquet]'") from exc
    rows = _export_rows(table)
    dim = matrix.shape[1]
    columns = {
        "chunk_id": pa.array([r[0] for r in rows], pa.string()),
        "document_id": pa.array([r[1] for r in rows], pa.string()),
        "source": pa.array([r[2] for r in rows], pa.string()),
        "position": pa.array([r[3] for r in rows], pa.int32()),
        "text": pa.array([r[4] for r in rows], pa.string()),
        "metadata": pa.array([json.dumps(r[5], sort_keys=True, ensure_ascii=False) for r in rows], pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(matrix).reshape(-1)), dim),
    }
    arrow = pa.table(columns).replace_schema_metadata(schema_metadata)
    pq.write_table(arrow, path)
