"""Flag-set rows: one immutable version of an environment's whole flag set per change.

The flag set's JSON is stored whole per version (flag sets are small: a few
KB), so "the flags as of version N" is one row. Each change of a flag is also
appended to the shared reflog (kind ``flag``, name = flag key, ref = env,
old/new = flag-set versions) by the service, in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keel.core.entities import now_ms

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


_COLUMNS = "env, version, flags, author, reason, created_at"
_SQL_LATEST_VERSION = "SELECT MAX(version) AS version FROM flag_sets WHERE env = ?"
_SQL_NEWEST = f"SELECT {_COLUMNS} FROM flag_sets WHERE env = ? ORDER BY version DESC LIMIT 1"  # noqa: S608
_SQL_VERSION = f"SELECT {_COLUMNS} FROM flag_sets WHERE env = ? AND version = ?"  # noqa: S608
# versions are numbered in write order under the env's lock, so the set in force at a time is
# the highest version created by then (walked down the (env, version) key)
_SQL_AS_OF = f"SELECT {_COLUMNS} FROM flag_sets WHERE env = ? AND created_at <= ? ORDER BY version DESC LIMIT 1"  # noqa: S608
_SQL_VERSIONS = f"SELECT {_COLUMNS} FROM flag_sets WHERE env = ? ORDER BY version"  # noqa: S608
_SQL_INSERT = f"INSERT INTO flag_sets ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"  # noqa: S608
_SQL_ENVS = "SELECT DISTINCT env FROM flag_sets ORDER BY env"


class FlagStore:
    """Statements over ``flag_sets`` (take the caller's connection)."""

    @staticmethod
    def latest_version(conn: Any, env: str) -> int:
        """The newest version of an environment's flag set (0: none yet)."""
        found = conn.execute(_SQL_LATEST_VERSION, (env,)).scalar()
        return 0 if found is None else int(found)

    @staticmethod
    def get(conn: Any, env: str, version: int | None = None) -> FlagSetRow | None:
        """One version (default: the newest), or None."""
        if version is None:
            row = conn.execute(_SQL_NEWEST, (env,)).first()
        else:
            row = conn.execute(_SQL_VERSION, (env, version)).first()
        return None if row is None else _row(row)

    @staticmethod
    def as_of(conn: Any, env: str, at: int) -> FlagSetRow | None:
        """The version in force at ``at`` (epoch ms): the newest created at or before it, or None."""
        row = conn.execute(_SQL_AS_OF, (env, at)).first()
        return None if row is None else _row(row)

    @staticmethod
    def insert(
        conn: Any, env: str, version: int, flags: str, author: str, reason: str, at: int | None = None
    ) -> FlagSetRow:
        """Store a new version (the unique (env, version) key rejects a concurrent duplicate).

        ``at``: its time (default now); the service passes the time of the reflog move that
        made it, so the set "as of" a time printed by the flag's history is that move's set."""
        at = now_ms() if at is None else at
        conn.execute(_SQL_INSERT, (env, version, flags, author, reason, at))
        return FlagSetRow(env, version, flags, author, reason, at)

    @staticmethod
    def versions(conn: Any, env: str) -> list[FlagSetRow]:
        """Every version of an environment's flag set, oldest first."""
        return [_row(r) for r in conn.execute(_SQL_VERSIONS, (env,)).all()]

    @staticmethod
    def envs(conn: Any) -> list[str]:
        """Environments with a stored flag set."""
        return [str(env) for env in conn.execute(_SQL_ENVS).scalars()]
