"""Knowledge-base rows: configurations, versions, the staging area, stored embeddings.

Every statement goes straight through the driver (a DBAPI cursor from
:meth:`Database.raw_write` / :meth:`Database.raw_read`), as in
:mod:`keel.meta.models`: staging 10,000 documents is one ``executemany``,
and looking up which of 100,000 chunks are embedded already is a few
hundred indexed ``IN`` probes. The SQL is portable (``?`` is rewritten per
driver; ``ON CONFLICT`` works on SQLite >= 3.24 and PostgreSQL).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from keel.core.entities import now_ms
from keel.meta.engine import Database
from keel.meta.events import record_event
from keel.meta.refs import EntityLock

__all__ = ["KBRow", "KBVersionRow", "RawKB", "StagedRow"]

_IN_BATCH = 500  # ids per IN (...) probe: well under SQLite's and psycopg's parameter limits


@dataclass(frozen=True)
class KBRow:
    """A stored knowledge base (its current configuration)."""

    id: int
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


@dataclass(frozen=True)
class KBVersionRow:
    """A stored, immutable knowledge-base version."""

    name: str
    version: int
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
    manifest_oid: str
    chunks_oid: str
    index_oid: str
    data_sources: tuple[dict[str, str], ...]
    embedded_chunks: int
    reused_chunks: int


@dataclass(frozen=True)
class StagedRow:
    """A document added or removed since the last commit (or a tracked-data source: action ``data``)."""

    key: str
    action: str  # add | remove | data
    oid: str
    created_at: int


_KB_COLS = (
    "id, name, description, embedding_model, dimension, splitter, chunk_size, chunk_overlap, metadata_fields, "
    "max_document_bytes, created_at, updated_at"
)
_V = (
    "SELECT k.name, v.version, v.parent, v.message, v.author, v.created_at, v.document_count, v.chunk_count, "
    "v.embedding_model, v.dimension, v.splitter, v.chunk_size, v.chunk_overlap, v.manifest_oid, v.chunks_oid, "
    "v.index_oid, v.data_sources, v.embedded_chunks, v.reused_chunks "
    "FROM kb_versions v JOIN knowledge_bases k ON k.id = v.kb_id "
)
_SQL = {
    "kb": f"SELECT {_KB_COLS} FROM knowledge_bases WHERE name = ?",
    "kbs": f"SELECT {_KB_COLS} FROM knowledge_bases ORDER BY name",
    "new_kb": (
        "INSERT INTO knowledge_bases (name, description, embedding_model, dimension, splitter, chunk_size, "
        "chunk_overlap, metadata_fields, max_document_bytes, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ),
    "update_kb": (
        "UPDATE knowledge_bases SET description = ?, embedding_model = ?, dimension = ?, splitter = ?, "
        "chunk_size = ?, chunk_overlap = ?, metadata_fields = ?, max_document_bytes = ?, updated_at = ? WHERE id = ?"
    ),
    "set_dimension": "UPDATE knowledge_bases SET dimension = ? WHERE id = ? AND dimension IS NULL",
    "touch": "UPDATE knowledge_bases SET updated_at = ? WHERE id = ?",
    "max_version": "SELECT MAX(version) FROM kb_versions WHERE kb_id = ?",
    "new_version": (
        "INSERT INTO kb_versions (kb_id, version, parent, message, author, created_at, document_count, chunk_count, "
        "embedding_model, dimension, splitter, chunk_size, chunk_overlap, manifest_oid, chunks_oid, index_oid, "
        "data_sources, embedded_chunks, reused_chunks) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ),
    "version": _V + "WHERE k.name = ? AND v.version = ?",
    "latest": _V + "WHERE k.name = ? ORDER BY v.version DESC LIMIT 1",
    # versions are numbered in commit order under the KB's lock, so the newest committed by a
    # time is the highest number committed by then (walked down the (kb_id, version) key)
    "as_of": _V + "WHERE k.name = ? AND v.created_at <= ? ORDER BY v.version DESC LIMIT 1",
    "first": _V + "WHERE k.name = ? ORDER BY v.version LIMIT 1",
    "versions": _V + "WHERE k.name = ? ORDER BY v.version DESC",
    "staged": "SELECT doc_key, action, document_oid, created_at FROM kb_staged WHERE kb_id = ? ORDER BY doc_key",
    "stage": (
        "INSERT INTO kb_staged (kb_id, doc_key, action, document_oid, created_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (kb_id, doc_key) DO UPDATE SET action = excluded.action, "
        "document_oid = excluded.document_oid, created_at = excluded.created_at"
    ),
    "unstage": "DELETE FROM kb_staged WHERE kb_id = ? AND doc_key = ? AND action = ? AND document_oid = ?",
    "unstage_key": "DELETE FROM kb_staged WHERE kb_id = ? AND doc_key = ?",
    "add_embedding": (
        "INSERT INTO kb_embeddings (embedder, chunk_id, pack_oid, pack_row) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (embedder, chunk_id) DO NOTHING"
    ),
}


def _kb(row: Any) -> KBRow:
    return KBRow(
        int(row[0]), row[1], row[2], row[3], None if row[4] is None else int(row[4]), row[5], int(row[6]),
        int(row[7]), tuple(json.loads(row[8])), int(row[9]), int(row[10]), int(row[11]),
    )  # fmt: skip


def _version(row: Any) -> KBVersionRow:
    return KBVersionRow(
        row[0], int(row[1]), None if row[2] is None else int(row[2]), row[3], row[4], int(row[5]), int(row[6]),
        int(row[7]), row[8], int(row[9]), row[10], int(row[11]), int(row[12]), row[13], row[14], row[15],
        tuple(json.loads(row[16])), int(row[17]), int(row[18]),
    )  # fmt: skip


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class RawKB:
    """The knowledge-base statements, prepared once per database."""

    def __init__(self, db: Database) -> None:
        self.sql = {key: db.sql(text) for key, text in _SQL.items()}
        self._db = db
        self._lock = EntityLock(db)

    def lock(self, cur: Any, name: str) -> None:
        """Hold the knowledge base's lock until the transaction ends (see :mod:`keel.meta.refs`)."""
        self._lock(cur, "kb", name)

    # -- knowledge bases ------------------------------------------------------------
    def kb(self, cur: Any, name: str) -> KBRow | None:
        """A knowledge base, or None."""
        cur.execute(self.sql["kb"], (name,))
        row = cur.fetchone()
        return None if row is None else _kb(row)

    def kbs(self, cur: Any) -> list[KBRow]:
        """Every knowledge base, by name."""
        cur.execute(self.sql["kbs"], ())
        return [_kb(row) for row in cur.fetchall()]

    def create(self, cur: Any, row: KBRow) -> KBRow:
        """Insert a knowledge base (the caller checked the name is free); ``row.id`` is ignored."""
        at = now_ms()
        cur.execute(
            self.sql["new_kb"],
            (
                row.name, row.description, row.embedding_model, row.dimension, row.splitter, row.chunk_size,
                row.chunk_overlap, _json(list(row.metadata_fields)), row.max_document_bytes, at, at,
            ),
        )  # fmt: skip
        found = self.kb(cur, row.name)
        assert found is not None
        return found

    def update(self, cur: Any, row: KBRow) -> None:
        """Replace a knowledge base's configuration."""
        cur.execute(
            self.sql["update_kb"],
            (
                row.description, row.embedding_model, row.dimension, row.splitter, row.chunk_size, row.chunk_overlap,
                _json(list(row.metadata_fields)), row.max_document_bytes, now_ms(), row.id,
            ),
        )  # fmt: skip

    def set_dimension(self, cur: Any, kb_id: int, dimension: int) -> None:
        """Record the dimension the first commit learned (only if none is recorded)."""
        cur.execute(self.sql["set_dimension"], (dimension, kb_id))

    # -- versions ---------------------------------------------------------------------
    def version(self, cur: Any, name: str, version: int) -> KBVersionRow | None:
        """One version, or None."""
        cur.execute(self.sql["version"], (name, version))
        row = cur.fetchone()
        return None if row is None else _version(row)

    def latest(self, cur: Any, name: str) -> KBVersionRow | None:
        """The newest version, or None."""
        cur.execute(self.sql["latest"], (name,))
        row = cur.fetchone()
        return None if row is None else _version(row)

    def as_of(self, cur: Any, name: str, at: int) -> KBVersionRow | None:
        """The newest version committed at or before ``at`` (epoch ms), or None."""
        cur.execute(self.sql["as_of"], (name, at))
        row = cur.fetchone()
        return None if row is None else _version(row)

    def first(self, cur: Any, name: str) -> KBVersionRow | None:
        """The oldest version, or None."""
        cur.execute(self.sql["first"], (name,))
        row = cur.fetchone()
        return None if row is None else _version(row)

    def versions(self, cur: Any, name: str) -> list[KBVersionRow]:
        """Every version, newest first."""
        cur.execute(self.sql["versions"], (name,))
        return [_version(row) for row in cur.fetchall()]

    def next_version(self, cur: Any, kb_id: int) -> int:
        """The number the next version gets. Touching the KB row first takes its row lock on
        PostgreSQL (SQLite writers are serialised by ``BEGIN IMMEDIATE``)."""
        cur.execute(self.sql["touch"], (now_ms(), kb_id))
        cur.execute(self.sql["max_version"], (kb_id,))
        latest = cur.fetchone()[0]
        return 1 if latest is None else int(latest) + 1

    def insert_version(self, cur: Any, kb_id: int, row: KBVersionRow) -> None:
        """Insert a version (``row.name`` is ignored: ``kb_id`` says which KB)."""
        cur.execute(
            self.sql["new_version"],
            (
                kb_id, row.version, row.parent, row.message, row.author, row.created_at, row.document_count,
                row.chunk_count, row.embedding_model, row.dimension, row.splitter, row.chunk_size, row.chunk_overlap,
                row.manifest_oid, row.chunks_oid, row.index_oid, _json(list(row.data_sources)), row.embedded_chunks,
                row.reused_chunks,
            ),
        )  # fmt: skip
        record_event(
            cur, "version.created", project=None, subject={"kind": "kb", "name": row.name, "version": row.version}
        )

    # -- the staging area -------------------------------------------------------------
    def staged(self, cur: Any, kb_id: int) -> list[StagedRow]:
        """Everything staged for the next commit, by key."""
        cur.execute(self.sql["staged"], (kb_id,))
        return [StagedRow(key, action, oid, int(at)) for key, action, oid, at in cur.fetchall()]

    def stage(self, cur: Any, kb_id: int, rows: Iterable[tuple[str, str, str]]) -> None:
        """Stage ``(key, action, oid)`` rows; a key staged again is replaced."""
        at = now_ms()
        cur.executemany(self.sql["stage"], [(kb_id, key, action, oid, at) for key, action, oid in rows])

    def unstage(self, cur: Any, kb_id: int, rows: Sequence[StagedRow]) -> None:
        """Remove exactly these staged rows (a row staged again meanwhile stays)."""
        if rows:
            cur.executemany(self.sql["unstage"], [(kb_id, r.key, r.action, r.oid) for r in rows])

    def unstage_keys(self, cur: Any, kb_id: int, keys: Sequence[str]) -> None:
        """Drop staged rows by key."""
        if keys:
            cur.executemany(self.sql["unstage_key"], [(kb_id, key) for key in keys])

    # -- stored embeddings ------------------------------------------------------------
    def embeddings(self, cur: Any, embedder: str, chunk_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """``{chunk id: (pack oid, row)}`` for the chunks whose embedding is stored."""
        found: dict[str, tuple[str, int]] = {}
        for start in range(0, len(chunk_ids), _IN_BATCH):
            batch = list(chunk_ids[start : start + _IN_BATCH])
            marks = ", ".join("?" * len(batch))
            sql = f"SELECT chunk_id, pack_oid, pack_row FROM kb_embeddings WHERE embedder = ? AND chunk_id IN ({marks})"
            cur.execute(self._db.sql(sql), (embedder, *batch))
            for chunk, pack, row in cur.fetchall():
                found[chunk] = (pack, int(row))
        return found

    def add_embeddings(self, cur: Any, embedder: str, pack_oid: str, chunk_ids: Sequence[str]) -> None:
        """Record that row ``i`` of ``pack_oid`` is the embedding of ``chunk_ids[i]``."""
        if chunk_ids:
            cur.executemany(self.sql["add_embedding"], [(embedder, c, pack_oid, i) for i, c in enumerate(chunk_ids)])
