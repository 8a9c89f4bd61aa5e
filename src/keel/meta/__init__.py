"""The metadata store: ONE SQLAlchemy implementation for SQLite and PostgreSQL.

Modules:

- ``schema``   the tables (SQLAlchemy Core), the single source of truth that
  the Alembic migrations in ``migrations/`` must reproduce (a test checks);
- ``engine``   URL -> engine with the pragmas/transaction mode each backend needs;
- ``migrate``  apply migrations on open, refuse a schema newer than this keel;
- ``tracking`` projects, runs, params, metrics, tags, artifacts, lineage;
- ``search``   compile a parsed filter (``keel.core.filters``) to SQL.
"""

from keel.meta.engine import Database, open_database

__all__ = ["Database", "open_database"]
