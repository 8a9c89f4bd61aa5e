"""The thin layer between keel's SQL and the database drivers (stdlib ``sqlite3``, psycopg 3).

keel's data-access design, in one place (docs/data-access.md tells the story):

- **SQL lives in** :mod:`keel.meta`, as SQL text with ``?`` placeholders. Services never
  hold SQL; they call meta methods.
- **It runs through this module**: a :class:`Connection` wraps a DBAPI connection inside a
  transaction that :class:`keel.meta.engine.Database` opened; ``conn.execute(sql, params)``
  returns a :class:`Result` with the few accessors keel uses (``all``, ``first``, ``one``,
  ``scalar``, ``scalars``, ``mappings``, ``rowcount``); rows are tuples that also answer
  attribute access by column name. For PostgreSQL the placeholders become ``%s`` once per
  distinct statement (cached). Hot paths may take the DBAPI cursor itself (``conn.cursor()``).
- **SQLAlchemy is for the schema and its migrations only** (:mod:`keel.meta.schema`, Alembic in
  :mod:`keel.meta.migrate`), imported only when a database must be created or migrated.
  Importing it costs ~250 ms, more than a whole ``keel runs list`` may take.
- :class:`Pool` keeps idle connections for reuse (bounded, with a checkout timeout and a
  liveness check of connections that sat idle), in place of SQLAlchemy's pool.

There is no second path: :meth:`Connection.execute` takes SQL text only.
"""

from __future__ import annotations

import collections
import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = [
    "ConstraintViolation",
    "Connection",
    "NoResult",
    "Pool",
    "PoolTimeout",
    "Result",
    "parse_url",
    "like_prefix",
    "placeholders_for",
]


class ConstraintViolation(Exception):  # noqa: N818 - named for what happened
    """A constraint refused a write (unique key, foreign key, not null): the driver's
    IntegrityError, raised by :meth:`Connection.execute` so callers can handle a race
    without knowing the driver. The driver's exception is ``orig`` (and the cause)."""

    def __init__(self, orig: BaseException) -> None:
        super().__init__(str(orig))
        self.orig = orig


class PoolTimeout(Exception):  # noqa: N818 - what SQLAlchemy calls it too
    """No pooled connection became free in time: the process is overloaded."""


class NoResult(LookupError):
    """``one()``/``scalar_one()`` found no row, or more than one."""


# -- rows and results ------------------------------------------------------------------

_ROW_CLASSES: dict[tuple[str, ...], type] = {}
_ROW_LOCK = threading.Lock()


def _mapping(self: Any) -> dict[str, Any]:
    return dict(zip(self._keys, self, strict=True))


def row_class(names: tuple[str, ...]) -> type:
    """A tuple type whose items are also attributes named after the columns (cached per
    column list). Names that are not identifiers (``count(*)``) are reachable by index and
    through ``_mapping``."""
    found = _ROW_CLASSES.get(names)
    if found is None:
        base = collections.namedtuple("Row", names, rename=True)  # type: ignore[misc]
        found = type("Row", (base,), {"__slots__": (), "_keys": names, "_mapping": property(_mapping)})
        with _ROW_LOCK:
            if len(_ROW_CLASSES) > 4096:  # dynamic SQL could make many shapes: stay bounded
                _ROW_CLASSES.clear()
            _ROW_CLASSES[names] = found
    return found


class Result:
    """The outcome of one statement: rows (read lazily from the cursor) and ``rowcount``."""

    __slots__ = ("_cursor", "_make", "lastrowid", "rowcount")

    def __init__(self, cursor: Any) -> None:
        description = cursor.description
        self.rowcount: int = cursor.rowcount
        self.lastrowid: Any = getattr(cursor, "lastrowid", None)
        self._cursor = cursor if description is not None else None
        if description is not None:
            self._make: Callable[[Any], Any] = row_class(tuple(d[0] for d in description))._make  # type: ignore[attr-defined]
        else:
            self._make = tuple

    def keys(self) -> list[str]:
        return [] if self._cursor is None else [d[0] for d in self._cursor.description]

    def _rows(self) -> list[tuple[Any, ...]]:
        if self._cursor is None:
            return []
        return self._cursor.fetchall()  # type: ignore[no-any-return]

    def _row(self) -> tuple[Any, ...] | None:
        if self._cursor is None:
            return None
        return self._cursor.fetchone()  # type: ignore[no-any-return]

    def all(self) -> list[Any]:
        make = self._make
        return [make(r) for r in self._rows()]

    fetchall = all

    def __iter__(self) -> Iterator[Any]:
        return iter(self.all())

    def first(self) -> Any:
        """The first row, or None; the rest is discarded."""
        row = self._row()
        self._close()
        return None if row is None else self._make(row)

    fetchone = first

    def one(self) -> Any:
        found = self.one_or_none()
        if found is None:
            raise NoResult("no row where exactly one was expected")
        return found

    def one_or_none(self) -> Any:
        rows = [] if self._cursor is None else self._cursor.fetchmany(2)
        self._close()
        if len(rows) > 1:
            raise NoResult("several rows where at most one was expected")
        if not rows:
            return None
        return self._make(rows[0])

    def scalar(self) -> Any:
        """The first column of the first row, or None."""
        row = self._row()
        self._close()
        return None if row is None else row[0]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalars(self) -> _Values:
        """The first column of every row."""
        return _Values([r[0] for r in self._rows()])

    def mappings(self) -> _Values:
        """Every row as a dict of column name -> value."""
        names = self.keys()
        return _Values([dict(zip(names, r, strict=True)) for r in self._rows()])

    def _close(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None


class _Values(list):  # type: ignore[type-arg]
    """A list with the accessors of a result (``all``, ``first``, ``one``)."""

    def all(self) -> list[Any]:
        return list(self)

    def first(self) -> Any:
        return self[0] if self else None

    def one(self) -> Any:
        if len(self) != 1:
            raise NoResult(f"{len(self)} rows where exactly one was expected")
        return self[0]

    def one_or_none(self) -> Any:
        if len(self) > 1:
            raise NoResult("several rows where at most one was expected")
        return self[0] if self else None


# -- statements ----------------------------------------------------------------------------

_TRANSLATED: dict[str, str] = {}


def placeholders_for(paramstyle: str, sql: str) -> str:
    """``sql`` with ``?`` placeholders rewritten for a driver whose paramstyle is ``format``
    (psycopg: ``%s``, and a literal ``%`` doubled); cached per statement."""
    if paramstyle not in ("format", "pyformat"):
        return sql
    found = _TRANSLATED.get(sql)
    if found is None:
        found = sql.replace("%", "%%").replace("?", "%s")
        if len(_TRANSLATED) > 8192:  # statements built with IN (?, ?, ...) vary: stay bounded
            _TRANSLATED.clear()
        _TRANSLATED[sql] = found
    return found


class Dialect:
    """What keel's SQL needs to know about the database it runs on."""

    __slots__ = ("name", "paramstyle")

    def __init__(self, name: str, paramstyle: str) -> None:
        self.name = name
        self.paramstyle = paramstyle


class Connection:
    """A DBAPI connection inside a transaction opened by :class:`keel.meta.engine.Database`."""

    __slots__ = ("_integrity", "connection", "dialect")

    def __init__(self, connection: Any, dialect: Dialect, integrity: type[BaseException]) -> None:
        self.connection = connection  # the DBAPI connection
        self.dialect = dialect
        self._integrity = integrity

    def cursor(self) -> Any:
        """A DBAPI cursor in this transaction (placeholders as the driver wants them: see
        :func:`placeholders_for`)."""
        return self.connection.cursor()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        """Run one statement: SQL text with ``?`` placeholders and a sequence of values."""
        if not isinstance(sql, str):
            raise TypeError(f"keel runs SQL text, not {type(sql).__name__}: write the statement as a string")
        cur = self.connection.cursor()
        try:
            cur.execute(placeholders_for(self.dialect.paramstyle, sql), params)
        except self._integrity as exc:
            cur.close()
            raise ConstraintViolation(exc) from exc
        return Result(cur)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Result:
        """Run SQL text once per parameter row."""
        return self._run_many(placeholders_for(self.dialect.paramstyle, sql), rows)

    def _run_many(self, sql: str, rows: Sequence[Any]) -> Result:
        cur = self.connection.cursor()
        try:
            cur.executemany(sql, rows)
        except self._integrity as exc:
            cur.close()
            raise ConstraintViolation(exc) from exc
        return Result(cur)

    def has_table(self, name: str) -> bool:
        """Whether table ``name`` exists (in the current schema on PostgreSQL)."""
        if self.dialect.name == "sqlite":
            sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        else:
            sql = "SELECT 1 FROM pg_catalog.pg_tables WHERE tablename = ? AND schemaname = current_schema()"
        return self.execute(sql, (name,)).scalar() is not None

    def table_names(self) -> list[str]:
        """The tables of the database (of the current schema on PostgreSQL), sorted."""
        if self.dialect.name == "sqlite":
            sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        else:
            sql = "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
        return [str(name) for name in self.execute(sql).scalars()]

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """A savepoint: an error inside undoes only what ran inside, and the transaction goes on."""
        self.connection.execute("SAVEPOINT keel_nested")
        try:
            yield
        except BaseException:
            self.connection.execute("ROLLBACK TO SAVEPOINT keel_nested")
            self.connection.execute("RELEASE SAVEPOINT keel_nested")
            raise
        self.connection.execute("RELEASE SAVEPOINT keel_nested")

    def exec_driver_sql(self, sql: str, params: Sequence[Any] | None = None) -> Result:
        """Run SQL exactly as written for the driver (its own placeholders, no rewriting)."""
        cur = self.connection.cursor()
        try:
            cur.execute(sql, params if params is not None else ())
        except self._integrity as exc:
            cur.close()
            raise ConstraintViolation(exc) from exc
        return Result(cur)


def like_prefix(text: str) -> str:
    """A LIKE pattern matching what starts with ``text`` (its ``%``, ``_`` and ``\\`` escaped:
    use it with ``LIKE ? ESCAPE '\\'``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


# -- connections -------------------------------------------------------------------------------


class Pool:
    """Idle DBAPI connections kept for reuse.

    At most ``size + overflow`` connections are out at once; a checkout waits up to
    ``timeout`` seconds for one, then raises :class:`PoolTimeout`. ``size`` idle ones are
    kept. ``alive(conn, idle_s)`` (optional) checks a connection that sat idle before it is
    handed out; one that fails is closed and replaced.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        size: int = 5,
        overflow: int = 10,
        timeout: float = 30.0,
        alive: Callable[[Any, float], bool] | None = None,
    ) -> None:
        self.connect = connect
        self.size = size
        self.overflow = overflow
        self._timeout = timeout
        self._alive = alive
        self._idle: list[tuple[Any, float]] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size + overflow)
        self.checked_out = 0
        self._generation = 0

    def get(self) -> tuple[Any, int]:
        """A connection and the pool generation it belongs to (pass both to :meth:`put`)."""
        if not self._slots.acquire(timeout=self._timeout):
            raise PoolTimeout(f"no connection free within {self._timeout:g} s")
        try:
            while True:
                with self._lock:
                    item = self._idle.pop() if self._idle else None
                    generation = self._generation
                if item is None:
                    conn = self.connect()
                    break
                conn, since = item
                if self._alive is None or self._alive(conn, time.monotonic() - since):
                    break
                _close(conn)
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            self.checked_out += 1
        return conn, generation

    def put(self, conn: Any, generation: int, *, broken: bool = False) -> None:
        """Give back a connection from :meth:`get`; a ``broken`` one is closed."""
        with self._lock:
            self.checked_out -= 1
            keep = not broken and generation == self._generation and len(self._idle) < self.size
            if keep:
                self._idle.append((conn, time.monotonic()))
        if not keep:
            _close(conn)
        self._slots.release()

    def dispose(self, *, close: bool = True) -> None:
        """Close the idle connections (or, with ``close=False``, just forget them: a child
        process after ``fork`` must not touch its parent's); those out now are closed when
        they come back."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._generation += 1
        if close:
            for conn, _ in idle:
                _close(conn)


def _close(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001, S110 - it is being thrown away: nothing to do
        pass


_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://(.*)$", re.DOTALL)


def parse_url(url: str) -> tuple[str, str, str] | None:
    """``(backend, driver, rest)`` of a database URL (``postgresql+psycopg://...`` ->
    ``("postgresql", "psycopg", "...")``), or None when it is not a URL."""
    found = _URL.match(url)
    if found is None:
        return None
    scheme, rest = found.groups()
    backend, _, driver = scheme.partition("+")
    return backend.lower(), driver.lower(), rest
