"""The rows of ``dataset_versions`` (``(path, oid)`` of every version of tracked data that was
registered), and what the data layer's garbage collection reads of other tables: the dataset
versions runs used (lineage), the objects model versions and configuration snapshots name.
The use cases are :mod:`keel.services.data_versions`.

Functions take a connection of the caller's transaction (``db.read()`` / ``db.write()``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keel.errors import KeelError
from keel.meta.dbapi import Connection
from keel.meta.engine import open_database
from keel.meta.events import record_event
from keel.meta.migrate import HEAD, current_revision

__all__ = [
    "config_snapshot_hashes",
    "model_version_sources",
    "register",
    "register_in_sqlite_file",
    "runs_of_versions",
    "used_versions",
    "version_oids",
    "versions",
]

#: A registered version: ``(path, oid, kind, size, files, git_commit)``.
Row = tuple[str, str, str, int, int, str]

_SQL_REGISTER = (
    "INSERT INTO dataset_versions (path, oid, kind, size, files, git_commit, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (path, oid) DO NOTHING"
)
_VERSIONS = "SELECT path, oid, kind, size, files, git_commit, created_at FROM dataset_versions"
_SQL_VERSIONS = _VERSIONS + " ORDER BY created_at DESC, id DESC"
_SQL_VERSIONS_OF = _VERSIONS + " WHERE path = ? ORDER BY created_at DESC, id DESC"
_RUNS = (
    "SELECT l.entity_id, l.entity_version, r.run_id FROM lineage l JOIN runs r ON r.id = l.run_pk "
    "WHERE l.entity_kind = 'dataset' AND l.direction = 'input'"
)
_SQL_RUNS = _RUNS + " ORDER BY l.created_at"
_SQL_RUNS_OF = _RUNS + " AND l.entity_id = ? ORDER BY l.created_at"
_SQL_USED = "SELECT DISTINCT entity_version FROM lineage WHERE entity_kind = 'dataset'"
_SQL_MODEL_SOURCES = "SELECT source FROM model_versions"
_SQL_CONFIG_HASHES = "SELECT hash FROM config_snapshots"
_SQL_OIDS = "SELECT DISTINCT oid FROM dataset_versions"


def register(conn: Connection, rows: Sequence[Row], now: int) -> None:
    """Record versions registered at ``now``; a ``(path, oid)`` registered already is left as it
    is. Each new one is a ``version.created`` event (webhooks)."""
    for row in rows:
        if conn.execute(_SQL_REGISTER, (*row, now)).rowcount:
            subject = {"kind": "dataset", "name": row[0], "version": row[1]}
            record_event(conn, "version.created", project=None, subject=subject)


def register_in_sqlite_file(database: str, rows: Sequence[Row], now: int) -> bool:
    """:func:`register` into the SQLite file ``database`` if its schema is current, without
    opening a store (what ``keel data add`` does in a workspace); False when it is not (the
    caller opens the store, which migrates it) or it cannot be opened."""
    import sqlite3

    db = open_database("sqlite:///" + database)
    try:
        if current_revision(db) != HEAD:
            return False
        with db.write() as conn:
            register(conn, rows, now)
        return True
    except (sqlite3.Error, KeelError):  # the ordinary path opens it again, and says what is wrong
        return False
    finally:
        db.close()


def versions(conn: Connection, path: str | None) -> list[Any]:
    """Rows ``(path, oid, kind, size, files, git_commit, created_at)`` of the versions of
    ``path`` (every path if None), newest first."""
    if path is None:
        return conn.execute(_SQL_VERSIONS).all()
    return conn.execute(_SQL_VERSIONS_OF, (path,)).all()


def runs_of_versions(conn: Connection, path: str | None) -> list[Any]:
    """Rows ``(path, oid, run_id)``: the runs that used a version of ``path`` (of any path if
    None) as an input, in the order they recorded it."""
    if path is None:
        return conn.execute(_SQL_RUNS).all()
    return conn.execute(_SQL_RUNS_OF, (path,)).all()


def used_versions(conn: Connection) -> set[str]:
    """Every dataset version (oid) some run used or produced."""
    return {str(v) for v in conn.execute(_SQL_USED).scalars() if v}


def model_version_sources(conn: Connection) -> list[str]:
    """The source of every registered model version (none when the store has no model tables)."""
    if not conn.has_table("model_versions"):
        return []
    return [source for source in conn.execute(_SQL_MODEL_SOURCES).scalars() if source]


def config_snapshot_hashes(conn: Connection) -> set[str]:
    """The object id of every recorded configuration snapshot (none without the table)."""
    if not conn.has_table("config_snapshots"):
        return set()
    return set(conn.execute(_SQL_CONFIG_HASHES).scalars())


def version_oids(conn: Connection) -> set[str]:
    """Every registered dataset version's oid."""
    return set(conn.execute(_SQL_OIDS).scalars())
