"""The erasure audit: one ``erasures`` row per erasure, never the erased content.

Every erasure (a person's request, retention, a purge of deleted runs) records who did it,
when, which kind of records, the project (``""`` for workspace-wide kinds such as
conversations), the filter text as given (``""`` when ids were given: then only how many),
the counts and why. The ids themselves are not kept: an audit row that listed erased
conversation ids would keep exactly what the erasure was asked to remove (ids can carry a
user's identity). :func:`record` runs inside the erasing transaction, so an erasure and its
audit row commit together or not at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from keel.core.entities import now_ms
from keel.core.erasure import ErasureEntry
from keel.meta.dbapi import Connection
from keel.meta.engine import Database

__all__ = [
    "ERASE_CACHE_KIB",
    "FILTER_MAX",
    "Found",
    "TempTable",
    "erasing",
    "listing",
    "record",
    "temp_table",
    "update_objects",
]

#: SQLite page cache of an erasing transaction (KiB; a bound, used only as needed). An erasure
#: deletes rows spread over every index of a table: with the connections' default 2 MB cache
#: SQLite writes half-done pages out and reads them back many times (100,000 traces: 15 s; with
#: this cache: 6 s, measured). Set back to the default before the commit, which costs nothing.
ERASE_CACHE_KIB = 256 * 1024
_DEFAULT_CACHE = -2000  # SQLite's default (2 MB), what keel's connections use

#: A filter longer than this is stored cut (with a marker): the audit row stays small.
FILTER_MAX = 2000

_INSERT = (
    "INSERT INTO erasures (at, actor, kind, scope, filter, ids, matched, deleted, objects_removed, "
    "bytes_freed, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
_COLUMNS = "id, at, actor, kind, scope, filter, ids, matched, deleted, objects_removed, bytes_freed, reason"


def record(
    conn: Connection,
    *,
    kind: str,
    actor: str = "",
    scope: str = "",
    filter: str = "",
    ids: int = 0,
    matched: int = 0,
    deleted: int = 0,
    objects_removed: int = 0,
    bytes_freed: int = 0,
    reason: str = "request",
    at: int | None = None,
) -> int:
    """Append an audit row in ``conn``'s transaction; returns its id."""
    text = filter if len(filter) <= FILTER_MAX else filter[:FILTER_MAX] + " ...(cut)"
    row = conn.execute(
        _INSERT,
        (
            now_ms() if at is None else int(at),
            actor,
            kind,
            scope,
            text,
            int(ids),
            int(matched),
            int(deleted),
            int(objects_removed),
            int(bytes_freed),
            reason,
        ),
    ).scalar_one()
    return int(row)


def update_objects(conn: Connection, audit_id: int, objects_removed: int, bytes_freed: int) -> None:
    """Add the objects an erasure removed after its rows were committed (they go once no
    committed row references them) to its audit row."""
    conn.execute(
        "UPDATE erasures SET objects_removed = objects_removed + ?, bytes_freed = bytes_freed + ? WHERE id = ?",
        (int(objects_removed), int(bytes_freed), int(audit_id)),
    )


def listing(
    conn: Connection, limit: int = 100, *, kind: str | None = None, scope: str | None = None
) -> list[ErasureEntry]:
    """The newest audit rows first (of one kind and/or project when given)."""
    where, params = [], []  # type: ignore[var-annotated]
    if kind is not None:
        where.append("kind = ?")
        params.append(kind)
    if scope is not None:
        where.append("scope = ?")
        params.append(scope)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM erasures{clause} ORDER BY id DESC LIMIT ?", (*params, int(limit))
    ).all()
    return [
        ErasureEntry(
            int(r[0]), int(r[1]), r[2], r[3], r[4], r[5], int(r[6]), int(r[7]), int(r[8]), int(r[9]), int(r[10]), r[11]
        )
        for r in rows
    ]


@dataclass(frozen=True)
class Found:
    """What an erasure's selection found, inside its transaction, before anything is deleted:
    how many records matched, how many of the kind the store (or project) holds, when the
    oldest matching one was written (None: none matched), and their ids (read on demand)."""

    matched: int
    total: int
    earliest: int | None
    ids: Callable[[], Iterator[str]]


@dataclass(frozen=True)
class TempTable:
    """A temporary table that lives for one write transaction."""

    name: str
    create: str
    drop: str  # "" when the database drops it at commit itself


def temp_table(db: Database, name: str, columns: str) -> TempTable:
    """A temporary table for one transaction: PostgreSQL drops it at commit; SQLite keeps temp
    tables for the connection's life, so it is dropped before commit (and a rollback drops it too)."""
    if db.is_sqlite:
        return TempTable(f"temp.{name}", f"CREATE TEMP TABLE {name} ({columns})", f"DROP TABLE temp.{name}")
    return TempTable(name, f"CREATE TEMP TABLE {name} ({columns}) ON COMMIT DROP", "")


@contextlib.contextmanager
def erasing(db: Database) -> Iterator[Connection]:
    """The write transaction of an erasure (:meth:`Database.write`), on SQLite with a page cache
    of :data:`ERASE_CACHE_KIB` while it runs. (Freed pages are zeroed on every connection:
    ``secure_delete``, see :mod:`keel.meta.engine`.)"""
    with db.write() as conn:
        if not db.is_sqlite:
            yield conn
            return
        conn.execute(f"PRAGMA cache_size=-{ERASE_CACHE_KIB}")
        try:
            yield conn
        finally:
            conn.execute(f"PRAGMA cache_size={_DEFAULT_CACHE}")
