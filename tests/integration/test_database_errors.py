"""Driver errors become keel's errors (meta/engine.py), on a real PostgreSQL and SQLite file.

- an outage or a lost race is Unavailable (503), a constraint violation Conflict (409),
  anything else a StoreError naming the URL with its password masked;
- Database.transaction re-runs a whole transaction after a serialization failure or a
  deadlock (bounded), a read-only one after a lost connection too, a write never after
  a lost connection (its commit may have happened).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc

from keel.errors import Conflict, StoreError, Unavailable
from keel.meta.dbapi import ConstraintViolation
from keel.meta.engine import (
    CONFLICT,
    OTHER,
    RETRY_ATTEMPTS,
    TRANSIENT,
    UNAVAILABLE,
    Database,
    classify_error,
    database_error,
    open_database,
)
from keel.meta.migrate import ensure_schema

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(pg_url: str) -> Iterator[Database]:
    db = open_database(pg_url)
    ensure_schema(db)
    yield db
    db.close()


def _raise_sqlstate(conn: Any, state: str) -> None:
    conn.exec_driver_sql(f"DO $$ BEGIN RAISE EXCEPTION 'simulated' USING ERRCODE = '{state}'; END $$")


@pytest.mark.parametrize(
    ("state", "kind"),
    [
        ("40001", TRANSIENT),
        ("40P01", TRANSIENT),
        ("57P01", UNAVAILABLE),
        ("57P03", UNAVAILABLE),
        ("53300", UNAVAILABLE),
        ("08006", UNAVAILABLE),
        ("23505", CONFLICT),
        ("23503", CONFLICT),
        ("42P01", OTHER),
    ],
)
def test_sqlstates_are_classified(pg: Database, state: str, kind: str) -> None:
    with pytest.raises(Exception) as raised, pg.engine.connect() as conn:  # noqa: PT011 - any wrapper
        _raise_sqlstate(conn, state)
    assert isinstance(raised.value, sa_exc.DBAPIError)  # as raised through Alembic (migrations)
    assert classify_error(raised.value) == kind
    assert classify_error(raised.value.orig) == kind  # the raw driver error, as keel's own layer raises it


def test_a_serialization_failure_or_deadlock_reruns_the_whole_transaction(pg: Database) -> None:
    tries: list[int] = []

    def work(conn: Any) -> str:
        tries.append(1)
        conn.exec_driver_sql(
            "INSERT INTO projects (name, description, created_at) VALUES (%s, '', 0)", (f"p{len(tries)}",)
        )
        if len(tries) < RETRY_ATTEMPTS:
            _raise_sqlstate(conn, "40001" if len(tries) == 1 else "40P01")
        return "done"

    assert pg.transaction(work) == "done"
    assert len(tries) == RETRY_ATTEMPTS
    with pg.read() as conn:  # the failed attempts were rolled back: one row, from the last try
        names = [row[0] for row in conn.exec_driver_sql("SELECT name FROM projects")]
    assert names == [f"p{RETRY_ATTEMPTS}"]


def test_contention_that_outlives_the_retries_is_unavailable(pg: Database) -> None:
    tries: list[int] = []

    def always(conn: Any) -> None:
        tries.append(1)
        _raise_sqlstate(conn, "40P01")

    with pytest.raises(Unavailable) as raised:
        pg.transaction(always)
    assert len(tries) == RETRY_ATTEMPTS
    assert raised.value.dependency == "database" and raised.value.retry_after >= 1
    assert "deadlock" in raised.value.message


def _kill_own_backend(conn: Any) -> None:
    conn.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")


def test_a_lost_connection_reruns_a_read_but_never_a_write(pg: Database) -> None:
    reads: list[int] = []

    def read(conn: Any) -> int:
        reads.append(1)
        if len(reads) == 1:
            _kill_own_backend(conn)
        return int(conn.exec_driver_sql("SELECT 1").scalar())

    assert pg.transaction(read, write=False) == 1 and len(reads) == 2

    writes: list[int] = []

    def write(conn: Any) -> None:
        writes.append(1)
        _kill_own_backend(conn)

    with pytest.raises(Unavailable) as raised:
        pg.transaction(write)
    assert len(writes) == 1 and raised.value.dependency == "database"
    with pg.read() as conn:  # the pool recovered: the next transaction works
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1


def test_constraint_violations_pass_write_as_constraint_violations_and_read_as_conflicts(pg: Database) -> None:
    insert = "INSERT INTO projects (name, description, created_at) VALUES ('same', '', 0)"
    with pg.write() as conn:
        conn.exec_driver_sql(insert)
    with pytest.raises(ConstraintViolation) as raised, pg.write() as conn:  # callers catch it to handle races
        conn.exec_driver_sql(insert)
    conflict = database_error(raised.value, pg.url)
    assert isinstance(conflict, Conflict) and conflict.http_status == 409
    assert "concurrent write" in conflict.message and "postgresql" not in conflict.message
    with pytest.raises(Conflict), pg.raw_write() as cur:
        cur.execute(pg.sql(insert))
    with pg.raw_write() as cur:  # the writer connection was replaced and works
        cur.execute(pg.sql("INSERT INTO projects (name, description, created_at) VALUES ('other', '', 0)"))


def test_the_writer_connection_survives_its_backend_being_killed(pg: Database, pg_url: str) -> None:
    import psycopg

    with pg.raw_write() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for _ in range(100):  # the signal is asynchronous: wait until the backend is gone
            if not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
                break
            time.sleep(0.02)
    with pg.raw_write() as cur:  # the server's notice made the socket readable: pinged, reopened
        cur.execute("SELECT pg_backend_pid()")
        assert cur.fetchone()[0] != pid


def test_an_unreachable_database_is_unavailable_and_names_no_password(postgres_server: Any) -> None:
    url = f"postgresql+psycopg://keel:hunter2-pw@127.0.0.1:{_closed_port()}/nothing"
    db = open_database(url)
    try:
        with pytest.raises(Unavailable) as raised, db.read():
            pass
        assert raised.value.dependency == "database" and "connection refused" in raised.value.message
        with pytest.raises(Unavailable), db.raw_write():
            pass
        with pytest.raises(Unavailable):
            db.ping()
        with pytest.raises(StoreError) as opening:
            ensure_schema(db)
        assert "hunter2" not in str(opening.value)
    finally:
        db.close()
    assert db.display_url == f"postgresql+psycopg://keel:***@127.0.0.1:{url.split(':')[3].split('/')[0]}/nothing"


def _closed_port() -> int:
    from servers import free_port

    return free_port()


def test_sqlite_errors_are_classified_too(tmp_path: Any) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'k.db'}")
    ensure_schema(db)
    try:
        insert = "INSERT INTO projects (name, description, created_at) VALUES ('x', '', 0)"
        with db.write() as conn:
            conn.exec_driver_sql(insert)
        with pytest.raises(Conflict), db.raw_write() as cur:
            cur.execute(insert)
        with pytest.raises(StoreError) as other, db.raw_read() as cur:
            cur.execute("SELECT * FROM no_such_table")
        assert not isinstance(other.value, Unavailable | Conflict) and "no_such_table" in other.value.message
        db.ping()
    finally:
        db.close()


def test_a_server_that_refuses_the_connection_is_misconfiguration_not_an_outage(pg_url: str) -> None:
    base, _, _name = pg_url.rpartition("/")
    url = base.replace("://keel@", "://keel:hunter2-pw@") + "/no_such_database"
    db = open_database(url)
    try:
        with pytest.raises(StoreError) as raised, db.read():
            pass
        assert not isinstance(raised.value, Unavailable)  # waiting will not make the database exist
        with pytest.raises(StoreError) as raw, db.raw_read():
            pass
        assert not isinstance(raw.value, Unavailable)
        assert "no_such_database" in raw.value.message and "keel:***@" in raw.value.message
        assert "hunter2" not in raw.value.message
    finally:
        db.close()
