"""SQLite files handled as files, not as a store: a consistent copy of one (SQLite's online
backup API), the row counts of a copy, the tables of a file another program made (an MLflow
tracking database an import reads). Each opens the file with the stdlib driver for just that
(no keel settings are applied: a copy stays in rollback-journal mode, a file read is opened
read-only); stores are opened with :func:`keel.meta.engine.open_database`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from keel.errors import StoreError

__all__ = ["NotADatabase", "copy_database", "table_names", "table_row_counts"]

_BUSY_TIMEOUT_S = 60
_SQL_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"


class NotADatabase(Exception):  # noqa: N818 - named for what the file is
    """The file cannot be read as a SQLite database (the driver's error is the message and the cause)."""


def copy_database(source: Path, target: Path) -> None:
    """Copy the SQLite database ``source`` (in use or not) to the new file ``target`` in one
    step: one read transaction of the source, so the copy is the database as of one commit
    while writers (in WAL mode) go on. The copy is one self-contained file (rollback-journal
    mode; keel sets WAL again when it opens it). Raises StoreError."""
    try:
        # Read only by what it does (a read-only open cannot open a WAL file cold).
        src = sqlite3.connect(source, timeout=_BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {source}: {exc}", "check the file and its permissions") from None
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # pages=-1: everything in one step
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise StoreError(f"the backup of {source} failed: {exc}", "check the disk space of the destination") from None
    finally:
        src.close()


def table_row_counts(database: Path) -> dict[str, int]:
    """``{table: rows}`` of every table of the SQLite file ``database`` (opened read-only)."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        names = [row[0] for row in conn.execute(_SQL_TABLES)]
        return {name: int(conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]) for name in names}  # noqa: S608 - names from sqlite_master
    finally:
        conn.close()


def table_names(database: Path) -> set[str]:
    """The tables of the SQLite file ``database``, opened read-only; :class:`NotADatabase` when
    it cannot be read as one."""
    try:
        conn = sqlite3.connect(f"file:{database.resolve()}?mode=ro", uri=True)
        try:
            return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise NotADatabase(str(exc)) from exc
