"""Retention rows: the policies, the lease that lets one server process apply them, and the
pruning of delivered webhook rows.

- ``retention_policies``: ``(project, kind) -> max_age_ms``; ``project`` is a project name for
  traces and ``@registries`` for the workspace-wide conversations and recorded LLM calls.
  A project's policy follows it when it is renamed (:func:`keel.meta.projects.rename_project`
  moves it in the rename's transaction).
- ``maintenance_leases``: one row per named lease. :func:`take_lease` is a compare-and-set
  (``INSERT ... ON CONFLICT DO NOTHING``, then ``UPDATE ... WHERE until_ms < now OR holder =
  me``): on PostgreSQL the second of two concurrent updates re-reads the row after the first
  commits and finds the lease taken; on SQLite writers are serialized. Either way exactly one
  process holds it until ``until_ms``.
- The webhook outbox and its deliveries grow with every event; :func:`prune_webhooks` removes
  delivered deliveries (their attempts with them) finished before a cutoff, and dispatched
  events older than it that no delivery still needs. Pending and failed ones stay (an
  operator looks at those).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keel.meta.engine import Database

__all__ = [
    "Policy",
    "has_work",
    "policies",
    "prune_webhooks",
    "release_lease",
    "remove_policy",
    "set_policy",
    "take_lease",
]

_UPSERT = (
    "INSERT INTO retention_policies (project, kind, max_age_ms, updated_by, updated_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (project, kind) DO UPDATE SET max_age_ms = excluded.max_age_ms, "
    "updated_by = excluded.updated_by, updated_at = excluded.updated_at"
)
_DELETE = "DELETE FROM retention_policies WHERE project = ? AND kind = ?"
_SELECT = "SELECT project, kind, max_age_ms, updated_by, updated_at FROM retention_policies ORDER BY project, kind"
_ANY_POLICY = "SELECT 1 FROM retention_policies LIMIT 1"
_ANY_OLD_WEBHOOK = (
    "SELECT 1 FROM events WHERE dispatched = 1 AND created_at < ? UNION ALL "
    "SELECT 1 FROM hook_deliveries WHERE status = 'delivered' AND finished_at < ? LIMIT 1"
)
_LEASE_INSERT = "INSERT INTO maintenance_leases (name, holder, until_ms) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING"
_LEASE_TAKE = "UPDATE maintenance_leases SET holder = ?, until_ms = ? WHERE name = ? AND (until_ms < ? OR holder = ?)"
_LEASE_RELEASE = "UPDATE maintenance_leases SET until_ms = ? WHERE name = ? AND holder = ?"
_OLD_ATTEMPTS = (
    "DELETE FROM hook_attempts WHERE delivery_id IN "
    "(SELECT id FROM hook_deliveries WHERE status = 'delivered' AND finished_at < ?)"
)
_OLD_DELIVERIES = "DELETE FROM hook_deliveries WHERE status = 'delivered' AND finished_at < ?"
_OLD_EVENTS = (  # NOT IN, not NOT EXISTS: one pass over the deliveries (no index on event_id alone)
    "DELETE FROM events WHERE dispatched = 1 AND created_at < ? AND id NOT IN (SELECT event_id FROM hook_deliveries)"
)
_COUNT_ATTEMPTS = (
    "SELECT COUNT(*) FROM hook_attempts WHERE delivery_id IN "
    "(SELECT id FROM hook_deliveries WHERE status = 'delivered' AND finished_at < ?)"
)
_COUNT_DELIVERIES = "SELECT COUNT(*) FROM hook_deliveries WHERE status = 'delivered' AND finished_at < ?"
_COUNT_EVENTS = (  # the events a real run removes: none of their deliveries would be left
    "SELECT COUNT(*) FROM events WHERE dispatched = 1 AND created_at < ? AND id NOT IN (SELECT event_id "
    "FROM hook_deliveries WHERE NOT (status = 'delivered' AND finished_at IS NOT NULL AND finished_at < ?))"
)


@dataclass(frozen=True)
class Policy:
    """How long records of ``kind`` are kept in ``project`` (``@registries``: workspace-wide)."""

    project: str
    kind: str
    max_age_ms: int
    updated_by: str
    updated_at: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def set_policy(db: Database, project: str, kind: str, max_age_ms: int, who: str, at: int) -> None:
    """Create or change the policy of ``(project, kind)``."""
    with db.write() as conn:
        conn.execute(_UPSERT, (project, kind, int(max_age_ms), who, int(at)))


def remove_policy(db: Database, project: str, kind: str) -> bool:
    """Remove the policy of ``(project, kind)``; False if there was none."""
    with db.write() as conn:
        return bool(conn.execute(_DELETE, (project, kind)).rowcount)


def policies(db: Database) -> list[Policy]:
    """Every policy, by scope and kind."""
    with db.read() as conn:
        rows = conn.execute(_SELECT).all()
    return [Policy(str(r[0]), str(r[1]), int(r[2]), str(r[3]), int(r[4])) for r in rows]


def has_work(db: Database, webhook_cutoff_ms: int) -> bool:
    """Whether a retention pass has anything to look at: a policy, or a delivered webhook row or
    dispatched event older than the cutoff (reads only: a server with neither writes nothing)."""
    with db.read() as conn:
        if conn.execute(_ANY_POLICY).scalar() is not None:
            return True
        return conn.execute(_ANY_OLD_WEBHOOK, (int(webhook_cutoff_ms), int(webhook_cutoff_ms))).scalar() is not None


def take_lease(db: Database, name: str, holder: str, until_ms: int, now_ms: int) -> bool:
    """Take (or extend, when ``holder`` has it) the lease ``name`` until ``until_ms``; False
    while another holder's lease runs past ``now_ms``."""
    with db.write() as conn:
        if conn.execute(_LEASE_INSERT, (name, holder, int(until_ms))).rowcount:
            return True
        return bool(conn.execute(_LEASE_TAKE, (holder, int(until_ms), name, int(now_ms), holder)).rowcount)


def release_lease(db: Database, name: str, holder: str, until_ms: int) -> None:
    """Shorten ``holder``'s lease ``name`` to ``until_ms`` (0: free now); another's is left alone."""
    with db.write() as conn:
        conn.execute(_LEASE_RELEASE, (int(until_ms), name, holder))


def prune_webhooks(db: Database, cutoff_ms: int, dry_run: bool = False) -> dict[str, int]:
    """Remove delivered webhook rows finished before ``cutoff_ms`` and the dispatched events
    older than it that no delivery still refers to (one transaction); how many of each.
    With ``dry_run``, what would go, nothing removed."""
    cutoff = (int(cutoff_ms),)
    with db.write() as conn:
        if dry_run:
            return {
                "attempts": int(conn.execute(_COUNT_ATTEMPTS, cutoff).scalar() or 0),
                "deliveries": int(conn.execute(_COUNT_DELIVERIES, cutoff).scalar() or 0),
                "events": int(conn.execute(_COUNT_EVENTS, cutoff * 2).scalar() or 0),
            }
        return {
            "attempts": int(conn.execute(_OLD_ATTEMPTS, cutoff).rowcount or 0),
            "deliveries": int(conn.execute(_OLD_DELIVERIES, cutoff).rowcount or 0),
            "events": int(conn.execute(_OLD_EVENTS, cutoff).rowcount or 0),
        }
