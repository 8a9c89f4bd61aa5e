"""The workspace's data state: a stat cache and an index of data objects.

``.keel/data/state.db`` is a plain SQLite file (stdlib ``sqlite3``), local to
this checkout and never shared. Everything in it can be rebuilt, so it runs
with ``synchronous=OFF`` and is deleted and recreated if it is ever found
corrupt. Tables:

- ``stat``: workspace path -> (inode, size, mtime_ns, oid, recorded_ns). A file
  whose inode, size and mtime are unchanged since it was hashed is not read
  again. Timestamps have a coarse granularity, so an entry is trusted only
  when the file's mtime is older than when the entry was recorded by more than
  :data:`RACY_NS` (git's "racily clean" rule); a racy entry is re-hashed once
  and then recorded again.
- ``loc``: file oid -> (pack oid, offset, size) for packed small files, so the
  same content added again (in any directory) reuses the pack.
- ``objects``: every object the data layer wrote or fetched into the cache,
  with its kind (``pack``, ``loose``, ``tree``): what ``keel data gc`` may
  remove. Objects of runs or other registries are never listed.
- ``checked``: cache object oid -> (inode, size, mtime_ns) when it was last
  known good, so a checkout can link a large object without re-hashing it, and
  re-hashes it if anything (say, an in-place edit through a hard link) touched it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from keel.errors import StoreError

__all__ = ["RACY_NS", "DataState", "StatRow"]

RACY_NS = 1_000_000_000  # files modified within 1 s of being recorded are re-checked once
_BATCH = 500  # parameters per IN (...) query

StatRow = tuple[int, int, int, str, int]  # (ino, size, mtime_ns, oid, recorded_ns)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stat (
    path TEXT PRIMARY KEY, ino INTEGER NOT NULL, size INTEGER NOT NULL,
    mtime INTEGER NOT NULL, oid TEXT NOT NULL, recorded INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS loc (
    oid TEXT PRIMARY KEY, pack TEXT NOT NULL, off INTEGER NOT NULL, size INTEGER NOT NULL
) WITHOUT ROWID;
DROP INDEX IF EXISTS ix_loc_pack;
CREATE TABLE IF NOT EXISTS objects (oid TEXT PRIMARY KEY, kind TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checked (
    oid TEXT PRIMARY KEY, ino INTEGER NOT NULL, size INTEGER NOT NULL, mtime INTEGER NOT NULL
) WITHOUT ROWID;
"""


def _prefix_range(prefix: str) -> tuple[str, str]:
    """Bounds of every path below folder ``prefix`` (``a/b`` -> ``a/b/`` .. ``a/b0``)."""
    return prefix + "/", prefix + "0"  # '0' sorts right after '/'


class DataState:
    """The stat cache and object index of one workspace."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # One connection serves the transfer threads too: transactions take turns.
        self._lock = threading.RLock()
        try:
            self._conn = self._open()
        except sqlite3.DatabaseError:
            # A cache: if it is damaged, start again (files are simply hashed anew).
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{path}{suffix}")
            self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("PRAGMA cache_size=-65536")  # up to 64 MiB of pages: big batches of inserts
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        """Close the file."""
        self._conn.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._begun() as conn:
            yield conn

    @contextlib.contextmanager
    def _begun(self) -> Iterator[sqlite3.Connection]:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot write {self.path}: {exc}", "check the disk (is it full?) and retry") from exc

    # -- the stat cache -------------------------------------------------------------
    def stats_under(self, rel: str) -> dict[str, StatRow]:
        """Cached rows of ``rel`` itself and every path below it."""
        low, high = _prefix_range(rel)
        rows = self._conn.execute(
            "SELECT path, ino, size, mtime, oid, recorded FROM stat WHERE path = ? OR (path >= ? AND path < ?)",
            (rel, low, high),
        ).fetchall()
        return {r[0]: (r[1], r[2], r[3], r[4], r[5]) for r in rows}

    def save_stats(self, rows: Iterable[tuple[str, int, int, int, str]], recorded: int | None = None) -> None:
        """Record ``(path, ino, size, mtime_ns, oid)`` rows, stamped now."""
        stamp = recorded if recorded is not None else time.time_ns()
        with self._tx() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO stat (path, ino, size, mtime, oid, recorded) VALUES (?, ?, ?, ?, ?, ?)",
                [(*row, stamp) for row in rows],
            )

    def forget_stats(self, paths: Sequence[str]) -> None:
        """Drop the rows of ``paths`` (files that no longer exist)."""
        with self._tx() as conn:
            conn.executemany("DELETE FROM stat WHERE path = ?", [(p,) for p in paths])

    # -- packed files ------------------------------------------------------------------
    def locations(self, oids: Iterable[str]) -> dict[str, tuple[str, int]]:
        """``{oid: (pack, offset)}`` for the given oids that sit in a known pack."""
        wanted = list(oids)
        found: dict[str, tuple[str, int]] = {}
        for i in range(0, len(wanted), _BATCH):
            chunk = wanted[i : i + _BATCH]
            marks = ",".join("?" * len(chunk))
            for oid, pack, off in self._conn.execute(f"SELECT oid, pack, off FROM loc WHERE oid IN ({marks})", chunk):
                found[oid] = (pack, off)
        return found

    def add_locations(self, rows: Iterable[tuple[str, str, int, int]]) -> None:
        """Record ``(oid, pack, offset, size)`` of packed files."""
        with self._tx() as conn:
            # In key order: B-tree inserts then touch each page once (much faster for 20,000 rows).
            conn.executemany("INSERT OR REPLACE INTO loc (oid, pack, off, size) VALUES (?, ?, ?, ?)", sorted(rows))

    # -- objects the data layer owns ---------------------------------------------------
    def add_objects(self, rows: Iterable[tuple[str, str]]) -> None:
        """Record ``(oid, kind)`` of objects written or fetched into the cache."""
        with self._tx() as conn:
            conn.executemany("INSERT OR IGNORE INTO objects (oid, kind) VALUES (?, ?)", list(rows))

    def owned_objects(self) -> dict[str, str]:
        """``{oid: kind}`` of every object the data layer wrote."""
        return dict(self._conn.execute("SELECT oid, kind FROM objects").fetchall())

    def forget_objects(self, oids: Sequence[str]) -> None:
        """Drop deleted objects from every table."""
        rows = [(o,) for o in oids]
        with self._tx() as conn:
            conn.executemany("DELETE FROM objects WHERE oid = ?", rows)
            conn.executemany("DELETE FROM checked WHERE oid = ?", rows)
            # loc has no index on pack (it would slow every add): one scan for all the packs.
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS gone (oid TEXT PRIMARY KEY)")
            conn.execute("DELETE FROM gone")
            conn.executemany("INSERT OR IGNORE INTO gone (oid) VALUES (?)", rows)
            conn.execute("DELETE FROM loc WHERE pack IN (SELECT oid FROM gone)")
            conn.execute("DELETE FROM gone")

    # -- cache objects known good --------------------------------------------------------
    def checked(self, oid: str) -> tuple[int, int, int] | None:
        """``(ino, size, mtime_ns)`` of cache object ``oid`` when last known good."""
        row = self._conn.execute("SELECT ino, size, mtime FROM checked WHERE oid = ?", (oid,)).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def set_checked(self, rows: Iterable[tuple[str, int, int, int]]) -> None:
        """Record ``(oid, ino, size, mtime_ns)`` of cache objects just verified or written."""
        with self._tx() as conn:
            conn.executemany("INSERT OR REPLACE INTO checked (oid, ino, size, mtime) VALUES (?, ?, ?, ?)", list(rows))
