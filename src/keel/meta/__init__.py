"""The metadata store: one implementation for SQLite and PostgreSQL, SQL text on the DBAPI drivers.

The data-access design (docs/data-access.md):

- **SQL lives here**, in the modules named for what they hold, as SQL text with ``?``
  placeholders; services call their methods and hold no SQL.
- It runs through :mod:`keel.meta.dbapi` (connections, pool, results) and
  :mod:`keel.meta.engine` (``Database``: transactions, retries, errors as keel's), on
  ``sqlite3`` and psycopg 3 directly.
- **SQLAlchemy is for the schema only**: ``schema`` declares the tables (the single source
  of truth that the Alembic migrations in ``migrations/`` must reproduce: a test checks);
  ``migrate`` imports Alembic and SQLAlchemy only when a database is behind.

Modules (a few): ``engine`` (URL -> Database), ``dbapi`` (the thin layer), ``migrate``
(migrations on open, refuse a newer schema), ``tracking`` (projects, runs, params, metrics,
tags, artifacts, lineage), ``search`` (a parsed filter -> SQL), ``refs`` (aliases and the
reflog), one module per registry and record kind.
"""

from keel.meta.engine import Database, open_database

__all__ = ["Database", "open_database"]
