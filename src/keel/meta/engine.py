"""Database URL -> a configured SQLAlchemy engine, and transaction helpers.

SQLite (the embedded default) runs in WAL mode with ``synchronous=NORMAL``
and checkpoints in the background (:meth:`Database.checkpoint`):
a committed transaction survives a crash of the process (SIGKILL included);
only an operating-system crash or power loss can lose the last commits, and
never corrupts the file. Foreign keys are on, a busy timeout lets several
processes share one file, and write transactions start with
``BEGIN IMMEDIATE`` so two writers queue on the lock instead of failing with
"database is locked" when a read transaction tries to upgrade.

PostgreSQL uses psycopg 3 with a pre-ping pool.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from keel.errors import InvalidInput, StoreError

__all__ = ["Database", "open_database"]

SQLITE_BUSY_TIMEOUT_MS = 60_000
SQLITE_PAGE_SIZE = 1024
WAL_AUTOCHECKPOINT_PAGES = 100_000  # ~100 MB of WAL: the safety net, normally never reached
WAL_CHECKPOINT_BYTES = 32 << 20  # the background checkpoint runs once the WAL is this large


class Database:
    """An engine plus keel's conventions for reading and writing.

    Use ``with db.write() as conn:`` for a write transaction (committed on
    exit, rolled back on error) and ``with db.read() as conn:`` for reads.
    ``db.sql(text)`` converts ``?`` placeholders to the driver's paramstyle for
    the few hot paths that go straight to the driver's ``executemany``.
    """

    def __init__(self, engine: Any, url: str) -> None:
        self.engine = engine
        self.url = url
        self.dialect: str = engine.dialect.name
        self.is_sqlite = self.dialect == "sqlite"
        self._paramstyle = engine.dialect.paramstyle
        self._dbapi_error: type[BaseException] = engine.dialect.loaded_dbapi.Error
        self._writer_conn: Any = None
        self._writer_lock = threading.Lock()

    def sql(self, text: str) -> str:
        """Rewrite ``?`` placeholders for this driver (psycopg uses ``%s``)."""
        if self._paramstyle in ("format", "pyformat"):
            return text.replace("%", "%%").replace("?", "%s")
        return text

    @contextlib.contextmanager
    def write(self) -> Iterator[Any]:
        """A connection inside a write transaction."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(keel_write=True)
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Any]:
        """A connection inside a read transaction (a consistent snapshot)."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def raw_write(self) -> Iterator[Any]:
        """A DBAPI cursor inside a write transaction, for the hot write paths.

        Uses one long-lived connection per process (no pool checkout, no ORM
        or Core overhead per call), serialised by a lock; the SQL must use
        :meth:`sql` placeholders. Driver errors become :class:`StoreError`.
        """
        with self._writer_lock:
            if self._writer_conn is None:
                self._writer_conn = self.engine.raw_connection()
            conn = self._writer_conn
            try:
                cur = conn.cursor()
                if self.is_sqlite:
                    cur.execute("BEGIN IMMEDIATE")
                yield cur
                cur.close()
                conn.commit()
            except BaseException as exc:
                try:
                    conn.rollback()
                except Exception:
                    exc_during_rollback = True
                else:
                    exc_during_rollback = False
                if exc_during_rollback or isinstance(exc, self._dbapi_error):
                    # The connection may be broken (server gone): start afresh next time.
                    self._writer_conn = None
                    with contextlib.suppress(Exception):
                        conn.invalidate()
                if isinstance(exc, self._dbapi_error):
                    raise _store_error(self.url, exc) from exc
                raise

    @contextlib.contextmanager
    def raw_read(self) -> Iterator[Any]:
        """A DBAPI cursor inside a read transaction, for bulk reads."""
        conn = self.engine.raw_connection()
        try:
            cur = conn.cursor()
            if self.is_sqlite:
                cur.execute("BEGIN")
            yield cur
            cur.close()
        except self._dbapi_error as exc:
            raise _store_error(self.url, exc) from exc
        finally:
            with contextlib.suppress(Exception):
                conn.rollback()
            conn.close()

    def checkpoint(self, min_bytes: int = WAL_CHECKPOINT_BYTES) -> None:
        """Copy the SQLite write-ahead log into the database file once it holds
        ``min_bytes`` (PASSIVE: never blocks writers). Called from a background
        thread, rarely: a checkpoint fsyncs, and the first commit after the log
        restarts fsyncs its header, so each one costs a commit ~50 ms. A no-op
        on PostgreSQL."""
        if not self.is_sqlite:
            return
        database = self.engine.url.database
        try:
            if not database or os.path.getsize(f"{database}-wal") < min_bytes:
                return
        except OSError:
            return
        conn = self.engine.raw_connection()
        try:
            conn.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)")
        except self._dbapi_error:
            pass  # busy: the next one will do it
        finally:
            conn.close()

    def close(self) -> None:
        """Close every pooled connection."""
        with self._writer_lock:
            if self._writer_conn is not None:
                with contextlib.suppress(Exception):
                    self._writer_conn.close()
                self._writer_conn = None
        self.engine.dispose()


def _store_error(url: str, exc: BaseException) -> StoreError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StoreError(f"database error on {url}: {first}", "retry; if it persists, check the database server and disk")


def _sqlite_engine(url: Any) -> Any:
    from sqlalchemy import create_engine, event

    database = url.database
    if database and database != ":memory:":
        parent = Path(database).expanduser().resolve().parent
        if not parent.is_dir():
            raise StoreError(
                f"cannot open the SQLite database {database}: folder {parent} does not exist",
                "create the folder or run 'keel init'",
            )
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event (below) control transactions, not pysqlite.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # New databases only (a no-op once the file has tables). Small pages: a
        # commit writes every page it touched to the WAL, and a run's commit
        # touches ~25 index pages; at 1 KiB instead of 4 KiB runs log ~30% faster,
        # with no loss for bulk metrics or search (measured with bench/tracking.py).
        cur.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA case_sensitive_like=ON")
        # Checkpoints (which fsync) run in the background via Database.checkpoint();
        # this bound only matters for a process that never gets to run one.
        cur.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get("keel_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def open_database(url: str) -> Database:
    """Open (but do not migrate) the database at ``url``.

    Accepts SQLAlchemy URLs (``sqlite:///path``, ``postgresql+psycopg://...``,
    ``postgresql://`` is taken as psycopg 3) or a bare file path for SQLite.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    if "://" not in url:
        url = "sqlite:///" + os.path.abspath(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InvalidInput(f"invalid database URL {url!r}", "use sqlite:///path or postgresql+psycopg://...") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return Database(_sqlite_engine(parsed), url)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        try:
            engine = create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=10)
        except (NoSuchModuleError, ImportError) as exc:
            raise StoreError("PostgreSQL support needs psycopg 3", "install it: pip install 'keel[postgres]'") from exc
        return Database(engine, url)
    raise InvalidInput(
        f"unsupported database {backend!r} in {url!r}",
        "keel stores metadata in SQLite (sqlite:///path) or PostgreSQL (postgresql+psycopg://...)",
    )
