"""The SQL of a workspace's data state (``.keel/data/state.db``): a stat cache and an index of
data objects (what they mean: :mod:`keel.services.data_state`).

The file is a SQLite database of its own, local to the checkout and never shared, opened as a
:class:`~keel.meta.engine.Database` with a connector of its own: everything in it can be
rebuilt, so it runs with ``synchronous=OFF`` (a crash of the machine may lose the last
writes, never the workspace's data) and a large page cache for batches of inserts; a file
found corrupt when opened is deleted and made anew (files are simply hashed again). Tables:

- ``stat``: path -> (inode, size, mtime_ns, oid, recorded_ns);
- ``loc``: file oid -> (pack oid, offset, size) of packed small files;
- ``objects``: oid -> kind (``pack``, ``loose``, ``tree``) of every object the data layer
  wrote or fetched into the cache;
- ``checked``: cache object oid -> (inode, size, mtime_ns) when last known good.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from keel.errors import KeelError, StoreError
from keel.meta.dbapi import Connection
from keel.meta.engine import Database

__all__ = ["StatRow", "StateRows"]

StatRow = tuple[int, int, int, str, int]  # (ino, size, mtime_ns, oid, recorded_ns)

_BATCH = 500  # parameters per IN (...) query
_BUSY_TIMEOUT_S = 60
_TABLES = {
    "stat": "CREATE TABLE IF NOT EXISTS stat ("
    "path TEXT PRIMARY KEY, ino INTEGER NOT NULL, size INTEGER NOT NULL, "
    "mtime INTEGER NOT NULL, oid TEXT NOT NULL, recorded INTEGER NOT NULL) WITHOUT ROWID",
    "loc": "CREATE TABLE IF NOT EXISTS loc ("
    "oid TEXT PRIMARY KEY, pack TEXT NOT NULL, off INTEGER NOT NULL, size INTEGER NOT NULL) WITHOUT ROWID",
    "objects": "CREATE TABLE IF NOT EXISTS objects (oid TEXT PRIMARY KEY, kind TEXT NOT NULL) WITHOUT ROWID",
    "checked": "CREATE TABLE IF NOT EXISTS checked ("
    "oid TEXT PRIMARY KEY, ino INTEGER NOT NULL, size INTEGER NOT NULL, mtime INTEGER NOT NULL) WITHOUT ROWID",
}
# loc had an index on pack once: it slowed every add (forget_objects scans instead).
_SQL_OLD_INDEX = "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'ix_loc_pack'"
_SQL_DROP_OLD_INDEX = "DROP INDEX IF EXISTS ix_loc_pack"
_SQL_STATS_UNDER = "SELECT path, ino, size, mtime, oid, recorded FROM stat WHERE path = ? OR (path >= ? AND path < ?)"
_SQL_SAVE_STAT = "INSERT OR REPLACE INTO stat (path, ino, size, mtime, oid, recorded) VALUES (?, ?, ?, ?, ?, ?)"
_SQL_FORGET_STAT = "DELETE FROM stat WHERE path = ?"
_SQL_ADD_LOC = "INSERT OR REPLACE INTO loc (oid, pack, off, size) VALUES (?, ?, ?, ?)"
_SQL_ADD_OBJECT = "INSERT OR IGNORE INTO objects (oid, kind) VALUES (?, ?)"
_SQL_OBJECTS = "SELECT oid, kind FROM objects"
_SQL_FORGET_OBJECT = "DELETE FROM objects WHERE oid = ?"
_SQL_FORGET_CHECKED = "DELETE FROM checked WHERE oid = ?"
_SQL_GONE_TABLE = "CREATE TEMP TABLE IF NOT EXISTS gone (oid TEXT PRIMARY KEY)"
_SQL_GONE_CLEAR = "DELETE FROM gone"
_SQL_GONE_ADD = "INSERT OR IGNORE INTO gone (oid) VALUES (?)"
_SQL_FORGET_PACKS = "DELETE FROM loc WHERE pack IN (SELECT oid FROM gone)"
_SQL_CHECKED = "SELECT ino, size, mtime FROM checked WHERE oid = ?"
_SQL_SET_CHECKED = "INSERT OR REPLACE INTO checked (oid, ino, size, mtime) VALUES (?, ?, ?, ?)"


def _connector(path: Path) -> Callable[[], Any]:
    """Opens connections to the state file with its settings (a cache: see the module doc)."""

    def connect() -> Any:
        conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("PRAGMA cache_size=-65536")  # up to 64 MiB of pages: big batches of inserts
        except BaseException:
            conn.close()
            raise
        return conn

    return connect


def _corrupt(exc: BaseException) -> bool:
    """Whether ``exc`` (raised opening the file) says the file is no sound SQLite database
    (not: locked, or not readable, which making it anew would not cure)."""
    found: BaseException | None = exc
    while found is not None:
        if isinstance(found, sqlite3.DatabaseError) and not isinstance(found, sqlite3.OperationalError):
            return True
        found = found.__cause__
    return False


def _prefix_range(prefix: str) -> tuple[str, str]:
    """Bounds of every path below folder ``prefix`` (``a/b`` -> ``a/b/`` .. ``a/b0``)."""
    return prefix + "/", prefix + "0"  # '0' sorts right after '/'


class StateRows:
    """The stat cache and object index of one workspace (the file ``path``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.db = self._open()
        except (sqlite3.DatabaseError, KeelError) as exc:
            if not _corrupt(exc):
                raise
            # A cache: if it is damaged, start again (files are simply hashed anew).
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{path}{suffix}")
            self.db = self._open()

    def _open(self) -> Database:
        db = Database(f"sqlite:///{self.path}", "sqlite", _connector(self.path))
        try:
            with db.read() as conn:
                present = set(conn.table_names())
                missing = [name for name in _TABLES if name not in present]
                old_index = conn.execute(_SQL_OLD_INDEX).first() is not None
            if missing or old_index:
                with db.write() as conn:
                    for name in missing:
                        conn.execute(_TABLES[name])
                    conn.execute(_SQL_DROP_OLD_INDEX)
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        """Close the file."""
        self.db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Connection]:
        """A write transaction; a failed write (a full disk) is a StoreError."""
        try:
            with self.db.write() as conn:
                yield conn
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot write {self.path}: {exc}", "check the disk (is it full?) and retry") from exc

    # -- the stat cache -------------------------------------------------------------
    def stats_under(self, rel: str) -> dict[str, StatRow]:
        """Cached rows of ``rel`` itself and every path below it."""
        low, high = _prefix_range(rel)
        with self.db.raw_read() as cur:  # (a DBAPI cursor: plain tuples, for 20,000 rows)
            cur.execute(_SQL_STATS_UNDER, (rel, low, high))
            rows = cur.fetchall()
        return {r[0]: (r[1], r[2], r[3], r[4], r[5]) for r in rows}

    def save_stats(self, rows: Iterable[tuple[str, int, int, int, str]], recorded: int | None = None) -> None:
        """Record ``(path, ino, size, mtime_ns, oid)`` rows, stamped ``recorded`` (ns; now if None)."""
        stamp = recorded if recorded is not None else time.time_ns()
        with self._tx() as conn:
            conn.executemany(_SQL_SAVE_STAT, [(*row, stamp) for row in rows])

    def forget_stats(self, paths: Sequence[str]) -> None:
        """Drop the rows of ``paths``."""
        with self._tx() as conn:
            conn.executemany(_SQL_FORGET_STAT, [(p,) for p in paths])

    # -- packed files ------------------------------------------------------------------
    def locations(self, oids: Iterable[str]) -> dict[str, tuple[str, int]]:
        """``{oid: (pack, offset)}`` for the given oids that sit in a known pack."""
        wanted = list(oids)
        found: dict[str, tuple[str, int]] = {}
        with self.db.raw_read() as cur:
            for i in range(0, len(wanted), _BATCH):
                chunk = wanted[i : i + _BATCH]
                marks = ",".join("?" * len(chunk))
                cur.execute(f"SELECT oid, pack, off FROM loc WHERE oid IN ({marks})", chunk)  # noqa: S608 - placeholders
                for oid, pack, off in cur.fetchall():
                    found[oid] = (pack, off)
        return found

    def add_locations(self, rows: Iterable[tuple[str, str, int, int]]) -> None:
        """Record ``(oid, pack, offset, size)`` of packed files."""
        with self._tx() as conn:
            # In key order: B-tree inserts then touch each page once (much faster for 20,000 rows).
            conn.executemany(_SQL_ADD_LOC, sorted(rows))

    # -- objects the data layer owns ---------------------------------------------------
    def add_objects(self, rows: Iterable[tuple[str, str]]) -> None:
        """Record ``(oid, kind)`` of objects written or fetched into the cache."""
        with self._tx() as conn:
            conn.executemany(_SQL_ADD_OBJECT, list(rows))

    def owned_objects(self) -> dict[str, str]:
        """``{oid: kind}`` of every object the data layer wrote."""
        with self.db.raw_read() as cur:
            cur.execute(_SQL_OBJECTS)
            return dict(cur.fetchall())

    def forget_objects(self, oids: Sequence[str]) -> None:
        """Drop deleted objects from every table."""
        rows = [(o,) for o in oids]
        with self._tx() as conn:
            conn.executemany(_SQL_FORGET_OBJECT, rows)
            conn.executemany(_SQL_FORGET_CHECKED, rows)
            # loc has no index on pack (it would slow every add): one scan for all the packs.
            conn.execute(_SQL_GONE_TABLE)
            conn.execute(_SQL_GONE_CLEAR)
            conn.executemany(_SQL_GONE_ADD, rows)
            conn.execute(_SQL_FORGET_PACKS)
            conn.execute(_SQL_GONE_CLEAR)

    # -- cache objects known good --------------------------------------------------------
    def checked(self, oid: str) -> tuple[int, int, int] | None:
        """``(ino, size, mtime_ns)`` of cache object ``oid`` when last known good."""
        with self.db.raw_read() as cur:
            cur.execute(_SQL_CHECKED, (oid,))
            row = cur.fetchone()
        return (row[0], row[1], row[2]) if row else None

    def set_checked(self, rows: Iterable[tuple[str, int, int, int]]) -> None:
        """Record ``(oid, ino, size, mtime_ns)`` of cache objects just verified or written."""
        with self._tx() as conn:
            conn.executemany(_SQL_SET_CHECKED, list(rows))
