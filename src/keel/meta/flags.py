"""Flag-set rows: one immutable version of an environment's whole flag set per change.

The flag set's JSON is stored whole per version (flag sets are small: a few
KB), so "the flags as of version N" is one row. Each change of a flag is also
appended to the shared reflog (kind ``flag``, name = flag key, ref = env,
old/new = flag-set versions) by the service, in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select

from keel.core.entities import now_ms
from keel.meta.schema import flag_sets

__all__ = ["FlagSetRow", "FlagStore"]


@dataclass(frozen=True)
class FlagSetRow:
    """One stored flag-set version (``flags`` still as JSON text)."""

    env: str
    version: int
    flags: str
    author: str
    reason: str
    created_at: int


def _row(row: Any) -> FlagSetRow:
    return FlagSetRow(row.env, int(row.version), row.flags, row.author, row.reason, int(row.created_at))


class FlagStore:
    """Statements over ``flag_sets`` (take the caller's connection)."""

    @staticmethod
    def latest_version(conn: Any, env: str) -> int:
        """The newest version of an environment's flag set (0: none yet)."""
        found = conn.execute(select(func.max(flag_sets.c.version)).where(flag_sets.c.env == env)).scalar()
        return 0 if found is None else int(found)

    @staticmethod
    def get(conn: Any, env: str, version: int | None = None) -> FlagSetRow | None:
        """One version (default: the newest), or None."""
        query = select(flag_sets).where(flag_sets.c.env == env)
        if version is None:
            query = query.order_by(flag_sets.c.version.desc()).limit(1)
        else:
            query = query.where(flag_sets.c.version == version)
        row = conn.execute(query).first()
        return None if row is None else _row(row)

    @staticmethod
    def insert(conn: Any, env: str, version: int, flags: str, author: str, reason: str) -> FlagSetRow:
        """Store a new version (the unique (env, version) key rejects a concurrent duplicate)."""
        at = now_ms()
        conn.execute(
            insert(flag_sets).values(env=env, version=version, flags=flags, author=author, reason=reason, created_at=at)
        )
        return FlagSetRow(env, version, flags, author, reason, at)

    @staticmethod
    def versions(conn: Any, env: str) -> list[FlagSetRow]:
        """Every version of an environment's flag set, oldest first."""
        rows = conn.execute(select(flag_sets).where(flag_sets.c.env == env).order_by(flag_sets.c.version))
        return [_row(r) for r in rows]

    @staticmethod
    def envs(conn: Any) -> list[str]:
        """Environments with a stored flag set."""
        return [r[0] for r in conn.execute(select(flag_sets.c.env).distinct().order_by(flag_sets.c.env))]
