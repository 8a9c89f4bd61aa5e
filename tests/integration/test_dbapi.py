"""keel's thin layer on the database drivers (keel.meta.dbapi), on a real SQLite file and PostgreSQL.

What every meta module relies on: ?-placeholders (with a literal % left alone on psycopg),
rows with named columns, the result accessors, savepoints, constraint violations as
ConstraintViolation, and a pool that is bounded and hands out only live connections.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from keel.errors import Unavailable
from keel.meta import Database, open_database
from keel.meta.dbapi import ConstraintViolation, NoResult, Pool, PoolTimeout, like_prefix
from keel.meta.engine import UNAVAILABLE, classify_error


@pytest.fixture
def db(migrated_database_url: str) -> Iterator[Database]:
    database = open_database(migrated_database_url)
    try:
        yield database
    finally:
        database.close()


def _projects(db: Database, *names: str) -> None:
    with db.write() as conn:
        for i, name in enumerate(names):
            conn.execute("INSERT INTO projects (name, description, created_at) VALUES (?, ?, ?)", (name, "50% off", i))


def test_placeholders_rows_and_accessors(db: Database) -> None:
    _projects(db, "a", "b_c", "d%e")
    with db.read() as conn:
        rows = conn.execute(
            "SELECT name, created_at, COUNT(*) OVER () AS n FROM projects WHERE description LIKE '50%' ORDER BY name"
        ).all()
        assert [(r.name, r.created_at, r.n) for r in rows] == [("a", 0, 3), ("b_c", 1, 3), ("d%e", 2, 3)]
        assert rows[0]._mapping == {"name": "a", "created_at": 0, "n": 3}
        assert conn.execute("SELECT name FROM projects WHERE created_at > ? ORDER BY name", (0,)).scalars() == [
            "b_c",
            "d%e",
        ]
        assert conn.execute("SELECT name FROM projects WHERE name = ?", ("none",)).first() is None
        assert conn.execute("SELECT name FROM projects WHERE name = ?", ("a",)).scalar_one() == "a"
        assert conn.execute("SELECT name FROM projects WHERE name = ?", ("none",)).scalar_one_or_none() is None
        with pytest.raises(NoResult):
            conn.execute("SELECT name FROM projects").one()
        with pytest.raises(NoResult):
            conn.execute("SELECT name FROM projects WHERE name = ?", ("none",)).one()
        assert conn.execute("SELECT name, created_at FROM projects WHERE name = ?", ("a",)).mappings() == [
            {"name": "a", "created_at": 0}
        ]
        # a prefix with LIKE's own characters matches literally
        escaped = conn.execute(
            "SELECT name FROM projects WHERE name LIKE ? ESCAPE '\\' ORDER BY name", (like_prefix("b_"),)
        ).scalars()
        assert escaped == ["b_c"]
        with pytest.raises(TypeError, match="SQL text"):
            conn.execute(object())  # type: ignore[arg-type]


def test_rowcount_savepoint_and_constraint_violations(db: Database) -> None:
    _projects(db, "kept")
    with db.write() as conn:
        conn.execute("INSERT INTO projects (name, description, created_at) VALUES (?, '', 0)", ("inside",))
        with pytest.raises(ConstraintViolation) as caught, conn.savepoint():
            conn.execute("INSERT INTO projects (name, description, created_at) VALUES (?, '', 0)", ("undone",))
            conn.execute("INSERT INTO projects (name, description, created_at) VALUES (?, '', 0)", ("kept",))
        assert classify_error(caught.value) == "conflict"
        changed = conn.execute("UPDATE projects SET description = ? WHERE name IN (?, ?)", ("x", "kept", "inside"))
        assert changed.rowcount == 2
        insert = "INSERT INTO projects (name, description, created_at) VALUES (?, '', ?)"
        conn.executemany(insert, [("m1", 1), ("m2", 2)])
    with db.read() as conn:
        names = conn.execute("SELECT name FROM projects ORDER BY name").scalars()
    assert names == ["inside", "kept", "m1", "m2"]  # the savepoint undid only its own rows


def test_a_failed_transaction_changes_nothing_and_the_connection_is_reused(db: Database) -> None:
    with pytest.raises(RuntimeError), db.write() as conn:
        conn.execute("INSERT INTO projects (name, description, created_at) VALUES ('gone', '', 0)")
        raise RuntimeError("the caller failed")
    with db.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM projects").scalar() == 0
    assert db.pool.checked_out == 0


def test_the_pool_is_bounded_and_times_out_as_unavailable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    pool = Pool(lambda: sqlite3.connect(tmp_path / "x.db", check_same_thread=False), size=1, overflow=1, timeout=0.2)
    first, gen1 = pool.get()
    second, gen2 = pool.get()
    with pytest.raises(PoolTimeout) as caught:
        pool.get()
    assert classify_error(caught.value) == UNAVAILABLE
    released = threading.Timer(0.05, lambda: pool.put(second, gen2))
    released.start()
    third, gen3 = pool.get()  # waits for the one given back
    assert third is second
    pool.put(third, gen3)
    pool.put(first, gen1, broken=True)  # closed, not kept
    assert pool.checked_out == 0
    assert len(pool._idle) == 1  # noqa: SLF001


def test_a_dead_postgres_connection_is_replaced_not_handed_out(pg_url: str) -> None:
    db = open_database(pg_url)
    try:
        with db.read() as conn:
            pid = conn.execute("SELECT pg_backend_pid()").scalar()
        other = open_database(pg_url)
        try:
            with other.write() as conn:
                conn.execute("SELECT pg_terminate_backend(?)", (pid,))
            for _ in range(500):  # until the backend is gone (terminating is asynchronous)
                with other.read() as conn:
                    if conn.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE pid = ?", (pid,)).scalar() == 0:
                        break
                time.sleep(0.01)
        finally:
            other.close()
        with db.read() as conn:  # the pooled connection is dead: a new one answers
            assert conn.execute("SELECT 1").scalar() == 1
            assert conn.execute("SELECT pg_backend_pid()").scalar() != pid
    finally:
        db.close()


def test_an_unreachable_database_is_unavailable() -> None:
    db = open_database("postgresql+psycopg://nobody@127.0.0.1:1/none")
    try:
        with pytest.raises(Unavailable) as caught, db.read():
            pass
        assert "127.0.0.1" not in caught.value.message
    finally:
        db.close()
