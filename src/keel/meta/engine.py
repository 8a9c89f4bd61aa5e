"""Database URL -> a :class:`Database` on the DBAPI driver, and transaction helpers.

SQLite (the embedded default) runs in WAL mode with ``synchronous=NORMAL``
and checkpoints in the background (:meth:`Database.checkpoint`):
a committed transaction survives a crash of the process (SIGKILL included);
only an operating-system crash or power loss can lose the last commits, and
never corrupts the file. Foreign keys are on, a busy timeout lets several
processes share one file, and write transactions start with
``BEGIN IMMEDIATE`` so two writers queue on the lock instead of failing with
"database is locked" when a read transaction tries to upgrade.

PostgreSQL uses psycopg 3 with a small pool (:class:`keel.meta.dbapi.Pool`) that checks
connections which sat idle before handing them out. SQLAlchemy is not used here at run time
(see :mod:`keel.meta.dbapi` for the data-access design); :attr:`Database.engine` makes one
for Alembic's migrations only.

**Driver errors become keel's errors here** (:func:`database_error`), and no
message carries the URL's password (:func:`keel.core.urls.mask_url`):

- the database is unreachable, restarting, shutting down or out of connections
  (connection refused/reset/closed, SQLSTATE class 08, 57P01-57P03, 53300, a pool
  timeout; SQLite still locked after its busy timeout) -> :class:`~keel.errors.Unavailable`
  (``dependency="database"``: the server answers 503 with ``Retry-After``);
- a serialization failure or deadlock (40001, 40P01) is *transient*: retried where
  that is safe, then :class:`~keel.errors.Unavailable` too;
- a constraint violation (class 23) -> :class:`~keel.errors.Conflict` ("a concurrent
  write conflicted"), never with the URL;
- anything else -> :class:`~keel.errors.StoreError` naming the masked URL.

Retries (bounded, :data:`RETRY_ATTEMPTS` tries with small jittered back-off): opening
a connection and beginning a transaction are retried by :meth:`Database.read` and
:meth:`Database.write` (nothing has run yet); a whole transaction is retried by
:meth:`Database.transaction`, which re-runs its function: on a serialization
failure or deadlock (the database rolled everything back), and for read-only
transactions on a lost connection too. A write whose connection broke is never
retried (its commit may have happened).

:meth:`Database.read` and :meth:`Database.write` raise ``Unavailable`` for the first
two kinds, constraint violations as :class:`~keel.meta.dbapi.ConstraintViolation` (callers
catch it to handle a race themselves), and let other errors through as the driver's; the
server renders what escapes with :func:`database_error`.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from keel.core.urls import mask_url, mask_urls_in
from keel.errors import Conflict, InvalidInput, KeelError, StoreError, Unavailable
from keel.meta.dbapi import (
    Connection,
    ConstraintViolation,
    Dialect,
    Pool,
    PoolTimeout,
    parse_url,
    placeholders_for,
)

__all__ = [
    "CONFLICT",
    "ConstraintViolation",
    "OTHER",
    "RETRY_ATTEMPTS",
    "TRANSIENT",
    "UNAVAILABLE",
    "Database",
    "classify_error",
    "database_error",
    "driver_errors",
    "open_database",
    "open_empty_database",
]

T = TypeVar("T")

# What a driver error means (classify_error).
UNAVAILABLE = "unavailable"  # the database cannot be reached or is not serving: retry later
TRANSIENT = "transient"  # the transaction lost a race (serialization failure, deadlock): run it again
CONFLICT = "conflict"  # a constraint refused the write (usually a concurrent write of the same row)
OTHER = "other"

RETRY_ATTEMPTS = 3  # tries of a connection, or of a whole transaction, before giving up
RETRY_BACKOFF_S = 0.05  # the first retry's delay; doubled each time, with jitter
UNAVAILABLE_RETRY_AFTER_S = 2  # Retry-After of a database outage
TRANSIENT_RETRY_AFTER_S = 1  # Retry-After of contention that outlived the retries
PG_CONNECT_TIMEOUT_S = 10  # seconds to open a PostgreSQL connection (a host that drops packets)
WRITER_PING_IDLE_S = 5.0  # the long-lived writer connection is pinged before use after this long idle

_NOT_BEGUN = "_keel_not_begun"  # marks an error raised before a transaction began
_PG_UNAVAILABLE = frozenset({"57P01", "57P02", "57P03", "57014", "53000", "53300", "53400"})
_PG_TRANSIENT = frozenset({"40001", "40P01"})
# A connection refused by a server that is up: a wrong database, user, password or TLS setting.
_MISCONFIGURED = (
    "does not exist",
    "authentication failed",
    "no pg_hba.conf entry",
    "password",
    "permission denied",
    "sslmode",
    "server does not support ssl",
    "certificate",
    "invalid connection option",
    "invalid dsn",
)
_SQLITE_BUSY = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_BUSY_SNAPSHOT", "SQLITE_BUSY_RECOVERY"})

SQLITE_BUSY_TIMEOUT_MS = 60_000
SQLITE_PAGE_SIZE = 1024
WAL_AUTOCHECKPOINT_PAGES = 100_000  # ~100 MB of WAL: the safety net, normally never reached
WAL_CHECKPOINT_BYTES = 32 << 20  # the background checkpoint runs once the WAL is this large
SCRUB_ATTEMPTS = 6  # tries of the truncating checkpoint after an erasure (Database.scrub)
SCRUB_BUSY_TIMEOUT_MS = 500  # how long each try waits for readers and writers to let go


class Database:
    """A database (SQLite file, in-memory SQLite or PostgreSQL) plus keel's conventions for
    reading and writing it, on the DBAPI drivers themselves (:mod:`keel.meta.dbapi`).

    Use ``with db.write() as conn:`` for a write transaction (committed on exit, rolled back
    on error) and ``with db.read() as conn:`` for reads; ``conn.execute(sql, params)`` runs
    SQL text with ``?`` placeholders. ``db.sql(text)`` converts ``?`` placeholders to the
    driver's paramstyle for the hot paths that use a DBAPI cursor directly.

    A database may be *created on first write* (:meth:`create_on_first_write`): until
    then an empty database answers the reads, and nothing exists on disk.
    """

    def __init__(self, url: str, dialect: str, connect: Callable[[], Any], anchor: Any = None) -> None:
        self.url = url
        self.dialect: str = dialect
        self.is_sqlite = dialect == "sqlite"
        self._dialect = Dialect(dialect, "qmark" if self.is_sqlite else "format")
        self._paramstyle = self._dialect.paramstyle
        self._connect = connect
        self._pool = self._new_pool(connect)
        self._engine: Any = None  # SQLAlchemy's, made only for migrations (see :attr:`engine`)
        if self.is_sqlite:
            import sqlite3

            self._dbapi_error: type[BaseException] = sqlite3.Error
            self._integrity: type[BaseException] = sqlite3.IntegrityError
        else:
            import psycopg

            self._dbapi_error = psycopg.Error
            self._integrity = psycopg.IntegrityError
        self._writer_conn: Any = None
        self._writer_used = 0.0
        self._writer_lock = threading.Lock()
        self._anchor = anchor  # keeps an in-memory database alive (open_empty_database)
        self._create: Callable[[], None] | None = None  # see create_on_first_write
        self._create_lock = threading.Lock()

    def _new_pool(self, connect: Callable[[], Any]) -> Pool:
        if self.is_sqlite:
            return Pool(connect, size=5, overflow=10)
        return Pool(connect, size=5, overflow=10, alive=_pg_alive)

    @property
    def database(self) -> str | None:
        """The SQLite database's file (None in memory or on PostgreSQL)."""
        if not self.is_sqlite or self._anchor is not None:
            return None
        path = _sqlite_path(self.url)
        return None if path in ("", ":memory:") else path

    @property
    def name(self) -> str:
        """The database in words: the SQLite file's name, or the PostgreSQL server's host and database."""
        if self.is_sqlite:
            return (self.database or ":memory:").rsplit("/", 1)[-1]
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        return f"{parts.hostname or ''}/{parts.path.lstrip('/')}"

    @property
    def pool(self) -> Pool:
        """The connection pool (its ``size``, ``overflow`` and ``checked_out`` feed the server's gauges)."""
        return self._pool

    @property
    def engine(self) -> Any:
        """A SQLAlchemy engine on this database, for schema migrations (Alembic) and tests only;
        made (and SQLAlchemy imported) on first use."""
        if self._engine is None:
            self._engine = _sqlalchemy_engine(self)
        return self._engine

    def create_on_first_write(self, url: str, create: Callable[[], None]) -> None:
        """Make this (empty, in-memory) database stand for the SQLite database ``url`` that
        does not exist yet: reads keep seeing the empty one, and the first write (or
        :meth:`create_now`) calls ``create()``, which must make ``url`` (with its schema),
        then everything goes to ``url``. Messages name ``url`` from now on.

        A ``create()`` that raises leaves the database pending (the next write tries again).
        Until then a write costs one attribute test more, afterwards nothing.
        """
        self.url = url
        self._create = create

    @property
    def pending(self) -> bool:
        """True while the database waits for its first write to be created (see :meth:`create_on_first_write`)."""
        return self._create is not None

    def create_now(self) -> None:
        """Create a pending database now (e.g. before a write that goes elsewhere, like the
        object store of the same workspace); a no-op once it exists."""
        if self._create is None:
            return
        with self._create_lock:
            create = self._create
            if create is None:  # another thread created it meanwhile
                return
            create()
            previous, anchor, engine = self._pool, self._anchor, self._engine
            self._connect = _sqlite_connector(_sqlite_path(self.url))
            self._pool = self._new_pool(self._connect)
            self._engine = None
            with self._writer_lock:
                self._writer_conn = None  # never opened on the empty database (it takes no writes)
            self._anchor = None
            self._create = None
        previous.dispose()  # reads still running there finish on their own connections
        if engine is not None:
            engine.dispose()
        if anchor is not None:
            with contextlib.suppress(Exception):
                anchor.close()

    def sql(self, text: str) -> str:
        """Rewrite ``?`` placeholders for this driver (psycopg uses ``%s``)."""
        return placeholders_for(self._paramstyle, text)

    @property
    def display_url(self) -> str:
        """The URL for messages and logs: its password and secret parameters masked."""
        return mask_url(self.url)

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection inside a write transaction.

        An unreachable database (after :data:`RETRY_ATTEMPTS` tries to connect) or a
        serialization failure or deadlock raises :class:`~keel.errors.Unavailable`;
        a constraint violation raises :class:`~keel.meta.dbapi.ConstraintViolation`; other
        driver errors pass as the driver raised them (see the module doc).
        """
        if self._create is not None:
            self.create_now()
        with self._translated(), self._transaction(write=True) as conn:
            yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection inside a read transaction (a consistent snapshot); errors as :meth:`write`."""
        with self._translated(), self._transaction(write=False) as conn:
            yield conn

    def transaction(self, fn: Callable[[Any], T], *, write: bool = True, attempts: int = RETRY_ATTEMPTS) -> T:
        """``fn(conn)`` inside one transaction, the whole transaction retried when that is safe.

        A serialization failure or deadlock (everything was rolled back) runs ``fn``
        again on a fresh transaction, up to ``attempts`` times in all; so does a lost
        connection when ``write`` is False. ``fn`` must have no effects outside the
        transaction that a second run would repeat. What is left raises as :meth:`write` does.
        """
        if write and self._create is not None:
            self.create_now()
        attempt = 1
        while True:
            try:
                with self._translated(), self._transaction(write=write) as conn:
                    return fn(conn)
            except Unavailable as exc:
                cause = exc.__cause__
                kind = classify_error(cause)
                # A connection that could not be opened was retried already by _transaction.
                retryable = kind == TRANSIENT or (kind == UNAVAILABLE and not write)
                if not retryable or attempt >= attempts or getattr(cause, _NOT_BEGUN, False):
                    raise
            _backoff(attempt)
            attempt += 1

    def _checkout(self) -> tuple[Any, int, Pool]:
        """A pooled connection (its generation and pool); connecting is retried (nothing ran yet)."""
        attempts = 1 if self.is_sqlite else RETRY_ATTEMPTS  # SQLite's busy timeout has waited already
        attempt = 1
        while True:
            pool = self._pool
            try:
                conn, generation = pool.get()
                return conn, generation, pool
            except Exception as exc:
                if attempt >= attempts or classify_error(exc) not in (UNAVAILABLE, TRANSIENT):
                    with contextlib.suppress(Exception):
                        setattr(exc, _NOT_BEGUN, True)
                    raise
            _backoff(attempt)
            attempt += 1

    @contextlib.contextmanager
    def _transaction(self, write: bool) -> Iterator[Connection]:
        """A connection in a transaction, given back to the pool at the end."""
        raw, generation, pool = self._checkout()
        broken = False
        try:
            if self.is_sqlite:
                try:
                    raw.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        setattr(exc, _NOT_BEGUN, True)
                    raise
            yield Connection(raw, self._dialect, self._integrity)
            raw.commit()
        except BaseException as exc:
            try:
                raw.rollback()
            except Exception:  # noqa: BLE001 - the connection is gone: do not reuse it
                broken = True
            cause = exc.orig if isinstance(exc, ConstraintViolation) else exc
            if classify_error(cause) == UNAVAILABLE:
                broken = True
            raise
        finally:
            pool.put(raw, generation, broken=broken)

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """Raise Unavailable for an outage or a lost race, and a KeelError for any failure to
        connect (a wrong database, user or password); let the body's other errors pass."""
        try:
            yield
        except KeelError:
            raise
        except Exception as exc:
            if getattr(exc, _NOT_BEGUN, False) or classify_error(exc) in (UNAVAILABLE, TRANSIENT):
                raise _keel_error(exc, self.url) from exc
            raise

    @contextlib.contextmanager
    def raw_write(self) -> Iterator[Any]:
        """A DBAPI cursor inside a write transaction, for the hot write paths.

        Uses one long-lived connection per process (no pool checkout, no wrapping per
        call), serialised by a lock; the SQL must use :meth:`sql` placeholders. Driver
        errors become keel's (:func:`database_error`: ``Unavailable``, ``Conflict`` or a
        ``StoreError`` naming the masked URL).
        """
        if self._create is not None:
            self.create_now()
        with self._writer_lock:
            conn = self._writer_connection()
            try:
                cur = conn.cursor()
                if self.is_sqlite:
                    cur.execute("BEGIN IMMEDIATE")
                yield cur
                cur.close()
                conn.commit()
                self._writer_used = time.monotonic()
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
                        conn.close()
                if isinstance(exc, self._dbapi_error):
                    raise _keel_error(exc, self.url) from exc
                raise

    def _writer_connection(self) -> Any:
        """The long-lived writer connection (under the lock), opened afresh when it is gone.

        On PostgreSQL it is pinged first when it sat idle a while, or when the server sent
        something while it was idle (a restart's "terminating connection" notice, or the
        end of the stream)."""
        conn = self._writer_conn
        if (
            conn is not None
            and not self.is_sqlite
            and not _pg_alive(conn, time.monotonic() - self._writer_used, WRITER_PING_IDLE_S)
        ):
            with contextlib.suppress(Exception):
                conn.close()
            self._writer_conn = conn = None
        if conn is None:
            conn = self._raw_connection()
            self._writer_conn = conn
            self._writer_used = time.monotonic()
        return conn

    def _raw_connection(self) -> Any:
        """A new DBAPI connection, retried like :meth:`_checkout`; errors translated."""
        attempts = 1 if self.is_sqlite else RETRY_ATTEMPTS
        attempt = 1
        while True:
            try:
                return self._connect()
            except Exception as exc:
                if attempt >= attempts or classify_error(exc) not in (UNAVAILABLE, TRANSIENT):
                    raise _keel_error(exc, self.url) from exc
            _backoff(attempt)
            attempt += 1

    @contextlib.contextmanager
    def raw_read(self) -> Iterator[Any]:
        """A DBAPI cursor inside a read transaction, for bulk reads."""
        try:
            conn, generation, pool = self._checkout()
        except Exception as exc:
            raise _keel_error(exc, self.url) from exc
        broken = False
        try:
            cur = conn.cursor()
            if self.is_sqlite:
                cur.execute("BEGIN")
            yield cur
            cur.close()
        except self._dbapi_error as exc:
            broken = classify_error(exc) == UNAVAILABLE
            raise _keel_error(exc, self.url) from exc
        finally:
            try:
                conn.rollback()
            except Exception:  # noqa: BLE001 - gone: do not reuse it
                broken = True
            pool.put(conn, generation, broken=broken)

    def ping(self, timeout: float = 2.0) -> None:
        """Raise :class:`~keel.errors.Unavailable` unless the database answers a trivial
        query now: one try, no retries (the server's health check). On PostgreSQL the
        query may take at most ``timeout`` seconds (opening a connection is bounded by
        :data:`PG_CONNECT_TIMEOUT_S`; callers bound the whole call)."""
        pool = self._pool
        try:
            conn, generation = pool.get()
        except Exception as exc:
            raise self._unavailable(exc) from exc
        broken = True
        try:
            cur = conn.cursor()
            if not self.is_sqlite:
                cur.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout * 1000))}")
            cur.execute("SELECT 1")
            cur.fetchall()
            conn.rollback()
            broken = False
        except Exception as exc:
            raise self._unavailable(exc) from exc
        finally:
            pool.put(conn, generation, broken=broken)

    def _unavailable(self, exc: BaseException) -> Unavailable:
        found = database_error(exc, self.url)
        if isinstance(found, Unavailable):
            return found
        return Unavailable(
            f"the database does not answer: {_first_line(_driver_error(exc))}",
            "check the database server",
            dependency="database",
            retry_after=UNAVAILABLE_RETRY_AFTER_S,
        )

    def checkpoint(self, min_bytes: int = WAL_CHECKPOINT_BYTES) -> None:
        """Copy the SQLite write-ahead log into the database file once it holds
        ``min_bytes`` (PASSIVE: never blocks writers). Called from a background
        thread, rarely: a checkpoint fsyncs, and the first commit after the log
        restarts fsyncs its header, so each one costs a commit ~50 ms. A no-op
        on PostgreSQL."""
        database = self.database
        try:
            if not database or os.path.getsize(f"{database}-wal") < min_bytes:
                return
        except OSError:
            return
        try:
            conn = self._connect()
        except Exception:  # noqa: BLE001 - cannot open now: the next one will do it
            return
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except self._dbapi_error:
            pass  # busy: the next one will do it
        finally:
            conn.close()

    def scrub(self, attempts: int = SCRUB_ATTEMPTS) -> None:
        """Make deleted content unreadable from the files, after an erasure committed.

        SQLite: every connection runs with ``secure_delete`` (freed pages and cells are
        zeroed, see :func:`_prepare_sqlite`), but the write-ahead log still holds the pages as
        they were before the erasure, until a checkpoint copies the log into the database and
        it is truncated. ``wal_checkpoint(TRUNCATE)`` does both; it cannot finish while another
        connection reads an older snapshot (or writes), so it is retried ``attempts`` times with
        a short busy timeout each, then :class:`~keel.errors.Unavailable` says so (the erasure
        itself is committed: running it again matches nothing and scrubs again).

        PostgreSQL: a no-op. Deleted tuples stay in the table's pages until VACUUM reclaims
        them and new rows overwrite them, and in the WAL segments until they are recycled:
        docs/erasure.md says what that does and does not guarantee. In memory: nothing on disk.
        """
        if not self.is_sqlite or not self.database:
            return
        import sqlite3

        conn = self._raw_connection()
        try:
            conn.execute(f"PRAGMA busy_timeout={SCRUB_BUSY_TIMEOUT_MS}")
            for attempt in range(1, attempts + 1):
                try:
                    busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                except sqlite3.OperationalError as exc:  # locked past the busy timeout
                    if classify_error(exc) != UNAVAILABLE:
                        raise _keel_error(exc, self.url) from exc
                    busy = 1
                if not busy:
                    return
                if attempt < attempts:
                    _backoff(attempt)
        finally:
            conn.close()
        raise Unavailable(
            "the erased records are deleted, but the database's write-ahead log could not be emptied: "
            "another process kept reading or writing the database",
            "run the same erasure again in a moment (it matches nothing now and empties the log), "
            "or stop the processes that hold the database open",
            dependency="database",
            retry_after=UNAVAILABLE_RETRY_AFTER_S,
        )

    def dispose(self, *, close: bool = True) -> None:
        """Drop the pooled connections (closed, or with ``close=False`` just forgotten: what a
        child process does after ``fork``, since connections are never shared across processes);
        those in use are closed when given back."""
        self._pool.dispose(close=close)
        with self._writer_lock:
            self._writer_conn = None

    def close(self) -> None:
        """Close every pooled connection."""
        with self._writer_lock:
            if self._writer_conn is not None:
                with contextlib.suppress(Exception):
                    self._writer_conn.close()
                self._writer_conn = None
        self._pool.dispose()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self._anchor is not None:
            with contextlib.suppress(Exception):
                self._anchor.close()
            self._anchor = None


def _pg_alive(conn: Any, idle_s: float, ping_after_s: float = 1.0) -> bool:
    """Whether a PostgreSQL connection that sat idle ``idle_s`` is still usable: pinged when it
    idled long, or when its socket has something to read (the server spoke or hung up)."""
    if getattr(conn, "closed", False):
        return False
    if idle_s < ping_after_s and not _readable(conn):
        return True
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1")
        cur.close()
        conn.rollback()
    except Exception:  # noqa: BLE001 - gone
        return False
    return True


def _readable(conn: Any) -> bool:
    """Whether an idle connection's socket has something to read: the server spoke (or hung up)
    although no query is in flight."""
    try:
        fileno = conn.fileno()
        readable, _, _ = select.select([fileno], [], [], 0)
    except Exception:  # noqa: BLE001 - closed, or no socket to look at: ping to be sure
        return True
    return bool(readable)


def _backoff(attempt: int) -> None:
    """Sleep before retry number ``attempt`` (1, 2, ...): doubling, with jitter so retries spread."""
    ceiling = RETRY_BACKOFF_S * 2 ** (attempt - 1)
    time.sleep(ceiling / 2 + random.uniform(0, ceiling / 2))


def _driver_error(exc: BaseException) -> BaseException:
    """The DBAPI exception under SQLAlchemy's wrapper (or ``exc`` itself)."""
    orig = getattr(exc, "orig", None)
    return orig if isinstance(orig, BaseException) else exc


def driver_errors() -> tuple[type[Exception], ...]:
    """The exception types the database layer lets escape: the drivers' own (psycopg's when it
    is installed), :class:`~keel.meta.dbapi.ConstraintViolation` and :class:`~keel.meta.dbapi.PoolTimeout`."""
    import sqlite3

    found: list[type[Exception]] = [sqlite3.Error, ConstraintViolation, PoolTimeout]
    try:
        import psycopg
    except ImportError:
        pass
    else:
        found.append(psycopg.Error)
    return tuple(found)


def classify_error(exc: BaseException | None) -> str:
    """What a database error means: :data:`UNAVAILABLE`, :data:`TRANSIENT`, :data:`CONFLICT` or :data:`OTHER`.

    Works on SQLAlchemy's wrapped errors and on raw DBAPI (psycopg, sqlite3) errors alike.
    """
    if exc is None:
        return OTHER
    if isinstance(exc, Unavailable):
        return UNAVAILABLE
    if isinstance(exc, PoolTimeout):  # no pooled connection free in time: overloaded
        return UNAVAILABLE
    if type(exc).__module__.startswith("sqlalchemy"):  # raised through Alembic (migrations)
        from sqlalchemy import exc as sa_exc

        if isinstance(exc, sa_exc.TimeoutError):
            return UNAVAILABLE
        if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
            return UNAVAILABLE
    orig = _driver_error(exc)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(sqlstate, str) and sqlstate:
        if sqlstate in _PG_TRANSIENT:
            return TRANSIENT
        if sqlstate.startswith("08") or sqlstate in _PG_UNAVAILABLE:
            return UNAVAILABLE
        if sqlstate.startswith("23"):
            return CONFLICT
        return OTHER
    kinds = {klass.__name__ for klass in type(orig).__mro__}
    module = type(orig).__module__
    if "IntegrityError" in kinds:
        return CONFLICT
    if module.startswith("sqlite3"):
        name = getattr(orig, "sqlite_errorname", "")
        if name in _SQLITE_BUSY or "database is locked" in str(orig):
            return UNAVAILABLE
        return OTHER
    if kinds & {"OperationalError", "InterfaceError"}:  # psycopg: connection refused, lost or closed
        text = str(orig).lower()
        if any(words in text for words in _MISCONFIGURED):
            return OTHER  # the server answered, and refused: waiting will not help
        return UNAVAILABLE
    return OTHER


def _sqlstate(orig: BaseException) -> str:
    found = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return found if isinstance(found, str) else ""


_OUTAGE_REASONS = {
    "57P01": "the database server is shutting down",
    "57P02": "the database server crashed",
    "57P03": "the database server is starting up or shutting down",
    "57014": "a statement took too long",
    "53300": "too many connections",
    "53000": "the database server is out of resources",
    "53400": "the database server is out of resources",
}


def _outage_reason(exc: BaseException) -> str:
    """Why the database is away, in words that name no host, port or user (clients see them;
    the driver's own message stays in the server log, on the exception's cause)."""
    if isinstance(exc, PoolTimeout) or type(exc).__name__ == "TimeoutError" and "sqlalchemy" in type(exc).__module__:
        return "no free connection in time: the server is overloaded"
    orig = _driver_error(exc)
    state = _sqlstate(orig)
    if state in _OUTAGE_REASONS:
        return _OUTAGE_REASONS[state]
    text = str(orig).lower()
    if getattr(orig, "sqlite_errorname", "") or "database is locked" in text:
        return "the database file is locked by another writer"
    for needle, reason in (
        ("refused", "connection refused"),
        ("timeout", "no connection in time"),
        ("timed out", "no connection in time"),
        ("shutting down", "the database server is shutting down"),
        ("starting up", "the database server is starting up"),
        ("terminating connection", "the connection was closed by the database server"),
        ("closed", "the connection was closed"),
        ("lost", "the connection was lost"),
        ("reset", "the connection was reset"),
        ("could not translate host name", "the database host name does not resolve"),
        ("no route to host", "the database host cannot be reached"),
    ):
        if needle in text:
            return reason
    return "the connection failed"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return mask_urls_in(line[:300])


def _keel_error(exc: BaseException, url: str) -> KeelError:
    """:func:`database_error`, or a StoreError naming the masked URL when it has no better word."""
    found = database_error(exc, url)
    if found is not None:
        return found
    return StoreError(
        f"database error on {mask_url(url)}: {_first_line(_driver_error(exc))}",
        "retry; if it persists, check the database server and disk",
    )


def database_error(exc: BaseException, url: str = "", *, other: bool = True) -> KeelError | None:
    """The :class:`~keel.errors.KeelError` a database driver error stands for, or None when
    ``exc`` is not one (a bug elsewhere: let it be a 500).

    ``url`` is named (masked) only in a plain :class:`~keel.errors.StoreError`; an outage
    or a lost race is :class:`~keel.errors.Unavailable`, a constraint violation a
    :class:`~keel.errors.Conflict`, neither with the URL. With ``other=False`` any other
    driver error gives None too (the server logs it and answers 500).
    """
    if isinstance(exc, KeelError):
        return exc
    kind = classify_error(exc)
    orig = _driver_error(exc)
    if kind == UNAVAILABLE:
        return Unavailable(
            f"the database is unavailable ({_outage_reason(exc)})",
            "retry in a few seconds; if it persists, check that the database server is running and reachable",
            dependency="database",
            retry_after=UNAVAILABLE_RETRY_AFTER_S,
        )
    if kind == TRANSIENT:
        return Unavailable(
            "the database could not finish the transaction: concurrent transactions conflicted "
            f"({'a deadlock' if _sqlstate(orig) == '40P01' else 'a serialization failure'}), "
            "and retrying did not help",
            "retry the request in a moment",
            dependency="database",
            retry_after=TRANSIENT_RETRY_AFTER_S,
        )
    if kind == CONFLICT:
        diag = getattr(orig, "diag", None)
        constraint = getattr(diag, "constraint_name", None) if diag is not None else None
        what = f" (constraint {constraint})" if isinstance(constraint, str) and constraint else ""
        return Conflict(
            f"a concurrent write conflicted with this one{what}; nothing was changed",
            "retry the request",
        )
    if other and type(orig).__module__.startswith(("psycopg", "sqlite3")):
        where = f" on {mask_url(url)}" if url else ""
        return StoreError(
            f"database error{where}: {_first_line(orig)}",
            "retry; if it persists, check the database server and disk",
        )
    return None


def _sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///path`` URL (``""`` for ``sqlite://``, in memory)."""
    rest = url.split("://", 1)[1] if "://" in url else url
    rest = rest.split("?", 1)[0]
    return rest[1:] if rest.startswith("/") else rest


def _prepare_sqlite(conn: Any) -> Any:
    """keel's settings on a new SQLite connection; returns it."""
    # Transactions are begun explicitly (BEGIN, or BEGIN IMMEDIATE for writes), not by pysqlite.
    conn.isolation_level = None
    cur = conn.cursor()
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
    # Freed space is zeroed, so deleted content (an erasure, an updated row's old copy, the
    # cells a page split moved) never lingers in free pages or in the free space of a page.
    # On every connection, not only erasing ones: a copy left behind by an earlier update or
    # page split (written without it) could not be found and zeroed by the erasure later.
    # Inserts, upserts and updates cost the same (measured: bench/erase.py's notes in
    # docs/erasure.md); only deletes write the zeroed pages (~30% slower).
    cur.execute("PRAGMA secure_delete=ON")
    # Checkpoints (which fsync) run in the background via Database.checkpoint();
    # this bound only matters for a process that never gets to run one.
    cur.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    cur.close()
    return conn


def _sqlite_connector(database: str) -> Callable[[], Any]:
    """Opens keel-configured connections to the SQLite file ``database``."""
    import sqlite3

    if database and database != ":memory:":
        parent = Path(database).expanduser().resolve().parent
        if not parent.is_dir():
            raise StoreError(
                f"cannot open the SQLite database {database}: folder {parent} does not exist",
                "create the folder or run 'keel init'",
            )

    def connect() -> Any:
        conn = sqlite3.connect(
            database or ":memory:",
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
            check_same_thread=False,
            isolation_level=None,
        )
        return _prepare_sqlite(conn)

    return connect


def _pg_connector(conninfo: str) -> Callable[[], Any]:
    """Opens PostgreSQL connections (psycopg 3) to ``conninfo`` (a ``postgresql://`` URI)."""
    try:
        import psycopg
    except ImportError as exc:
        raise StoreError("PostgreSQL support needs psycopg 3", "install it: pip install 'keel[postgres]'") from exc

    def connect() -> Any:
        return psycopg.connect(conninfo, connect_timeout=PG_CONNECT_TIMEOUT_S)

    return connect


def _sqlalchemy_engine(db: Database) -> Any:
    """A SQLAlchemy engine on ``db``'s database (for Alembic): connections made by ``db``'s own
    connector, so they carry keel's settings; one transaction per ``begin``."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    if db.is_sqlite:
        engine = create_engine("sqlite://", creator=db._connect, poolclass=NullPool)  # noqa: SLF001

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine("postgresql+psycopg://", creator=db._connect, poolclass=NullPool)  # noqa: SLF001


def open_empty_database(copy_of: Database | None = None) -> Database:
    """A new SQLite database in memory, shared by every thread of this process until it is
    closed; nothing touches the disk. Empty (no schema yet), or a copy of ``copy_of``, another
    database made here (copying a migrated one costs a millisecond; migrating, a few hundred).
    The stand-in of a database created on first write (:meth:`Database.create_on_first_write`)."""
    import sqlite3
    import uuid

    # A named in-memory database in shared-cache mode: each pooled connection (one per
    # thread that reads at once) sees the same tables; the anchor keeps it alive.
    name = f"file:keel-empty-{uuid.uuid4().hex}?mode=memory&cache=shared"

    def connect() -> Any:
        conn = sqlite3.connect(
            name, uri=True, check_same_thread=False, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None
        )
        return _prepare_sqlite(conn)

    anchor = connect()
    if copy_of is not None:
        if copy_of._anchor is None:
            raise InvalidInput("only a database made by open_empty_database can be copied", "pass one")
        copy_of._anchor.backup(anchor)
    return Database("sqlite://", "sqlite", connect, anchor)


def open_database(url: str) -> Database:
    """Open (but do not migrate) the database at ``url``.

    Accepts ``sqlite:///path``, ``postgresql+psycopg://...`` (``postgresql://`` is taken as
    psycopg 3) or a bare file path for SQLite. Nothing connects until the first use.
    """
    if "://" not in url:
        url = "sqlite:///" + os.path.abspath(url)
    parsed = parse_url(url)
    if parsed is None:
        raise InvalidInput(
            f"invalid database URL {mask_url(url)!r}", "use sqlite:///path or postgresql+psycopg://..."
        )
    backend, driver, rest = parsed
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return Database(url, "sqlite", _sqlite_connector(_sqlite_path(url)))
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        return Database(url, "postgresql", _pg_connector("postgresql://" + rest))
    if backend in ("postgresql", "postgres"):
        raise StoreError(
            f"PostgreSQL driver {driver!r} is not supported in {mask_url(url)!r}",
            "use postgresql+psycopg://... (psycopg 3: pip install 'keel[postgres]')",
        )
    raise InvalidInput(
        f"unsupported database {backend!r} in {mask_url(url)!r}",
        "keel stores metadata in SQLite (sqlite:///path) or PostgreSQL (postgresql+psycopg://...)",
    )
