"""Change counters: how a running process learns, with one tiny query, that a registry changed.

``change_counters`` holds one row per kind of registry state a process caches:
``prompt``, ``model``, ``flag`` and ``experiment`` (the kinds of refs). Database
triggers (:func:`create_triggers`, installed by migration 0016) add 1 to the kind's
counter in the transaction of every change of that kind:

==================  ==========================================================
``refs``            a ref created, moved or deleted (its ``kind``)
``reflog``          every move appended (its ``kind``): alias and stage moves,
                    flag changes, experiment status moves, model deletions
``prompt_versions`` a version registered or deleted (``latest`` moves)
``model_versions``  a version registered or deleted
``flag_sets``       a flag-set version written or deleted
``ab_experiments``  an experiment created, deleted, or its definition, status
                    or resolved versions changed
==================  ==========================================================

Being triggers, no write path can forget them: the services, the MLflow API, the
importers, the web UI and a hand edit with ``sqlite3`` all count. A counter only
ever grows; a process compares what it read last with what it reads now
(:func:`read_counters`: one ``SELECT`` of a table of a few rows) and refreshes the
caches of the kinds that differ.

On PostgreSQL the triggers are *deferred constraint triggers*: the counter row is
updated at commit, after every other lock the transaction takes (the entities'
advisory locks of :mod:`keel.meta.refs`), so two registry changes cannot deadlock
on it, and a reader sees the new count only once the change it stands for is
visible. Same-kind commits queue on the row for the moment of their commit (a
registry change is rare; ~1 ms). On SQLite, one writer at a time, they run in the
statement.

A migration that rebuilds one of these tables on SQLite (Alembic's batch mode
copies a table and drops the old one, and its triggers with it) must call
:func:`create_triggers` again; ``tests/integration/test_live_changes.py`` checks
that every trigger exists at the head revision.
"""

from __future__ import annotations

from typing import Any

__all__ = ["KINDS", "TABLE", "create_triggers", "drop_triggers", "read_counters", "trigger_names"]

TABLE = "change_counters"
KINDS = ("prompt", "model", "flag", "experiment")

# (table, events, the kind counted: a column of the row, or a constant)
_SOURCES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("refs", ("INSERT", "UPDATE", "DELETE"), "kind"),
    ("reflog", ("INSERT",), "kind"),
    ("prompt_versions", ("INSERT", "DELETE"), "'prompt'"),
    ("model_versions", ("INSERT", "DELETE"), "'model'"),
    ("flag_sets", ("INSERT", "DELETE"), "'flag'"),
    ("ab_experiments", ("INSERT", "UPDATE OF definition, status, resolved", "DELETE"), "'experiment'"),
)
_SELECT = f"SELECT kind, counter FROM {TABLE}"  # noqa: S608 - a constant


def _name(table: str, event: str) -> str:
    return f"keel_count_{table}_{event.split()[0].lower()}"


def trigger_names() -> list[str]:
    """The name of every counting trigger (for checks)."""
    return [_name(table, event) for table, events, _kind in _SOURCES for event in events]


def read_counters(cursor: Any) -> dict[str, int]:
    """``{kind: counter}`` through a DBAPI cursor (``Database.raw_read``): one small ``SELECT``."""
    cursor.execute(_SELECT)
    return {str(kind): int(counter) for kind, counter in cursor.fetchall()}


def _sqlite_statements() -> list[str]:
    out = []
    for table, events, kind in _SOURCES:
        for event in events:
            row = "OLD" if event == "DELETE" else "NEW"
            value = f"{row}.{kind}" if not kind.startswith("'") else kind
            out.append(
                f"CREATE TRIGGER IF NOT EXISTS {_name(table, event)} AFTER {event} ON {table} BEGIN "
                f"INSERT OR IGNORE INTO {TABLE} (kind, counter) VALUES ({value}, 0); "
                f"UPDATE {TABLE} SET counter = counter + 1 WHERE kind = {value}; END"
            )
    return out


_PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION keel_count_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    counted text := TG_ARGV[0];
BEGIN
    IF counted IS NULL THEN
        IF TG_OP = 'DELETE' THEN counted := OLD.kind; ELSE counted := NEW.kind; END IF;
    END IF;
    INSERT INTO {TABLE} (kind, counter) VALUES (counted, 1)
        ON CONFLICT (kind) DO UPDATE SET counter = {TABLE}.counter + 1;
    RETURN NULL;
END $$
"""


def _postgres_statements() -> list[str]:
    out = [_PG_FUNCTION]
    for table, events, kind in _SOURCES:
        argument = kind if kind.startswith("'") else ""
        for event in events:
            name = _name(table, event)
            out.append(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            out.append(
                f"CREATE CONSTRAINT TRIGGER {name} AFTER {event} ON {table} "
                f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION keel_count_change({argument})"
            )
    return out


def create_triggers(conn: Any) -> None:
    """Install (or re-install) every counting trigger through a connection with
    ``exec_driver_sql`` (a migration's SQLAlchemy connection, or a
    :class:`keel.meta.dbapi.Connection`); seeds a row per known kind. Idempotent."""
    sqlite = conn.dialect.name == "sqlite"
    rows = ", ".join(f"('{kind}', 0)" for kind in KINDS)
    if sqlite:
        conn.exec_driver_sql(f"INSERT OR IGNORE INTO {TABLE} (kind, counter) VALUES {rows}")
    else:
        conn.exec_driver_sql(f"INSERT INTO {TABLE} (kind, counter) VALUES {rows} ON CONFLICT (kind) DO NOTHING")
    for statement in _sqlite_statements() if sqlite else _postgres_statements():
        conn.exec_driver_sql(statement)


def drop_triggers(conn: Any) -> None:
    """Remove every counting trigger (a downgrade)."""
    sqlite = conn.dialect.name == "sqlite"
    for table, events, _kind in _SOURCES:
        for event in events:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {_name(table, event)}" + ("" if sqlite else f" ON {table}"))
    if not sqlite:
        conn.exec_driver_sql("DROP FUNCTION IF EXISTS keel_count_change()")
