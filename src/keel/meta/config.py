"""Configuration snapshot rows, and the runs that used each snapshot.

A snapshot is one row per (hash, env); recording the same one again is a
no-op. The runs come from the lineage table: a run that used a snapshot has
the input ``config:<env>@<hash[:12]>``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from keel.core.entities import now_ms
from keel.meta.engine import Database

__all__ = ["RawConfig", "SnapshotRow"]


@dataclass(frozen=True)
class SnapshotRow:
    """A stored snapshot."""

    hash: str
    env: str
    sources: list[str]
    created_at: int


_SQL = {
    "find": "SELECT hash, env, sources, created_at FROM config_snapshots WHERE hash = ? AND env = ?",
    # Two processes recording one snapshot at once: the second insert does nothing.
    "insert": (
        "INSERT INTO config_snapshots (hash, env, sources, created_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (hash, env) DO NOTHING"
    ),
    "all": "SELECT hash, env, sources, created_at FROM config_snapshots ORDER BY created_at DESC, id DESC",
    "env": (
        "SELECT hash, env, sources, created_at FROM config_snapshots WHERE env = ? ORDER BY created_at DESC, id DESC"
    ),
    # the newest snapshot of an env recorded by a time: one probe of ix_config_snapshots_env
    "as_of": (
        "SELECT hash, env, sources, created_at FROM config_snapshots WHERE env = ? AND created_at <= ? "
        "ORDER BY created_at DESC, id DESC LIMIT 1"
    ),
    "first": (
        "SELECT hash, env, sources, created_at FROM config_snapshots WHERE env = ? ORDER BY created_at, id LIMIT 1"
    ),
    # the newest use of an env's snapshot by a run by a time (ix_lineage_entity narrows to the env)
    "used_as_of": (
        "SELECT entity_version, created_at FROM lineage WHERE entity_kind = 'config' AND direction = 'input' "
        "AND entity_id = ? AND created_at <= ? ORDER BY created_at DESC, id DESC LIMIT 1"
    ),
    "by_env_prefix": (
        "SELECT hash, env, sources, created_at FROM config_snapshots WHERE env = ? AND hash LIKE ? "
        "ORDER BY created_at DESC"
    ),
    "by_prefix": (
        "SELECT hash, env, sources, created_at FROM config_snapshots WHERE hash LIKE ? ORDER BY created_at DESC"
    ),
    "uses": (
        "SELECT l.entity_id, l.entity_version, r.run_id FROM lineage l JOIN runs r ON r.id = l.run_pk "
        "WHERE l.entity_kind = 'config' AND l.direction = 'input' ORDER BY l.created_at, l.id"
    ),
}


def _row(row: Any) -> SnapshotRow:
    return SnapshotRow(row[0], row[1], json.loads(row[2]), int(row[3]))


class RawConfig:
    """The snapshot statements, prepared once per database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.sql = {key: db.sql(text) for key, text in _SQL.items()}

    def record(self, hash_: str, env: str, sources: list[str]) -> tuple[SnapshotRow, bool]:
        """Insert the snapshot unless it exists; returns ``(row, created)``."""
        with self.db.raw_write() as cur:
            cur.execute(self.sql["find"], (hash_, env))
            row = cur.fetchone()
            if row is not None:
                return _row(row), False
            at = now_ms()
            cur.execute(self.sql["insert"], (hash_, env, json.dumps(sources), at))
            if cur.rowcount == 0:  # recorded by another process since the lookup
                cur.execute(self.sql["find"], (hash_, env))
                return _row(cur.fetchone()), False
        return SnapshotRow(hash_, env, list(sources), at), True

    def snapshots(self, env: str | None = None) -> list[SnapshotRow]:
        """Every snapshot (of one environment), newest first."""
        with self.db.raw_read() as cur:
            if env is None:
                cur.execute(self.sql["all"], ())
            else:
                cur.execute(self.sql["env"], (env,))
            return [_row(r) for r in cur.fetchall()]

    def as_of(self, env: str, at: int) -> SnapshotRow | None:
        """The snapshot of ``env`` in use at ``at`` (epoch ms): of the snapshots recorded by then and
        the ones runs used by then, the one recorded or used last (a snapshot is recorded once,
        so a config changed and changed back is known to be back only from the runs that used it)."""
        with self.db.raw_read() as cur:
            cur.execute(self.sql["as_of"], (env, at))
            found = cur.fetchone()
            recorded = None if found is None else _row(found)
            cur.execute(self.sql["used_as_of"], (env, at))
            use = cur.fetchone()
            if use is not None and (recorded is None or int(use[1]) > recorded.created_at):
                if recorded is None or not recorded.hash.startswith(use[0]):
                    prefix = str(use[0]).replace("%", "").replace("_", "")
                    cur.execute(self.sql["by_env_prefix"], (env, prefix + "%"))
                    rows = cur.fetchall()
                    if len(rows) == 1:  # a hash12 naming two snapshots cannot be told apart: keep the recorded
                        recorded = _row(rows[0])
            return recorded

    def first(self, env: str) -> SnapshotRow | None:
        """The oldest snapshot of ``env``, or None."""
        with self.db.raw_read() as cur:
            cur.execute(self.sql["first"], (env,))
            found = cur.fetchone()
            return None if found is None else _row(found)

    def find(self, prefix: str) -> list[SnapshotRow]:
        """Snapshots whose hash starts with ``prefix``."""
        with self.db.raw_read() as cur:
            cur.execute(self.sql["by_prefix"], (prefix.replace("%", "").replace("_", "") + "%",))
            return [_row(r) for r in cur.fetchall()]

    def uses(self) -> dict[tuple[str, str], list[str]]:
        """``(env, hash12) -> run ids`` (in the order they used it) for every config lineage input."""
        out: dict[tuple[str, str], list[str]] = {}
        with self.db.raw_read() as cur:
            cur.execute(self.sql["uses"], ())
            for env, version, run_id in cur.fetchall():
                runs = out.setdefault((env, version), [])
                if run_id not in runs:
                    runs.append(run_id)
        return out
