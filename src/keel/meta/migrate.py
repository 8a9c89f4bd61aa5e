"""Bring a database to this keel's schema, or refuse one from a newer keel.

Opening a store checks ``alembic_version`` with one query. Only when the
database is behind is Alembic imported and run (it costs ~0.4 s to import),
under a lock so that two processes opening a new store at once do not both
migrate it: a file lock beside a SQLite database, an advisory lock on
PostgreSQL.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
from collections.abc import Iterator
from pathlib import Path

from keel.core.urls import mask_urls_in
from keel.errors import KeelError, SchemaTooNew, StoreError, Unavailable
from keel.meta.engine import Database, database_error

__all__ = ["HEAD", "KNOWN_REVISIONS", "current_revision", "ensure_schema"]

_MIGRATIONS = Path(__file__).with_name("migrations")
_PG_LOCK_KEY = 0x6B65656C  # "keel"


def _revisions() -> list[str]:
    names = sorted(p.name for p in (_MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))
    return [re.match(r"(\d{4})_", n).group(1) for n in names]  # type: ignore[union-attr]


KNOWN_REVISIONS: list[str] = _revisions()
HEAD: str = KNOWN_REVISIONS[-1]


def current_revision(db: Database) -> str | None:
    """The schema revision stored in ``db`` (None for an empty database)."""
    with db.read() as conn:
        if not conn.has_table("alembic_version"):
            return None
        found = conn.execute("SELECT version_num FROM alembic_version").scalar()
        return None if found is None else str(found)


@contextlib.contextmanager
def _migration_lock(db: Database) -> Iterator[None]:
    if db.is_sqlite:
        database = db.database
        if not database:
            yield
            return
        with open(f"{database}.migrate-lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    else:
        conn = db._raw_connection()  # noqa: SLF001 - a session of its own, held for the lock
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (_PG_LOCK_KEY,))
            conn.commit()
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_PG_LOCK_KEY,))
                conn.commit()
        finally:
            conn.close()


def _check_known(revision: str | None, url: str) -> None:
    if revision is not None and revision not in KNOWN_REVISIONS:
        raise SchemaTooNew(
            f"the store at {url} has schema revision {revision}, newer than this keel "
            f"understands (latest known: {HEAD})",
            "upgrade keel (pip install -U keel) to open it",
        )


def ensure_schema(db: Database) -> None:
    """Migrate ``db`` to :data:`HEAD` if needed; raise SchemaTooNew if it is ahead."""
    try:
        revision = current_revision(db)
        _check_known(revision, db.display_url)
        if revision == HEAD:
            return
        with _migration_lock(db):
            revision = current_revision(db)  # someone may have migrated meanwhile
            _check_known(revision, db.display_url)
            if revision != HEAD:
                _upgrade(db)
    except KeelError:
        raise
    except Exception as exc:
        orig = getattr(exc, "orig", exc)
        if not type(exc).__module__.startswith(("sqlalchemy", "alembic")) and not type(orig).__module__.startswith(
            ("sqlite3", "psycopg")
        ):
            raise
        found = database_error(exc, db.url, other=False)
        if isinstance(found, Unavailable):
            raise found from exc
        raise StoreError(
            f"cannot open the metadata database {db.display_url}: {exc.__class__.__name__}: "
            f"{mask_urls_in(str(exc.orig if hasattr(exc, 'orig') else exc).splitlines()[0])}",
            "check that the database server is running and the URL is right",
        ) from exc


def _upgrade(db: Database) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(_MIGRATIONS / "versions"))
    engine = db.engine
    try:
        with engine.connect() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            conn.commit()
    finally:
        engine.dispose()
