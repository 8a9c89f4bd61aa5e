"""Webhook subscriptions and the delivery queue (tables of migration 0023), as SQL text.

The queue is durable and shared by every server process of one database:

1. **Fan-out** (:meth:`HookStore.fan_out`): the outbox rows not yet dispatched
   (``events.dispatched = 0``, written by :func:`keel.meta.events.record_event`) are claimed,
   matched against the active subscriptions, and become ``hook_deliveries`` rows; the events
   are marked dispatched in the same transaction. On PostgreSQL the rows are claimed with
   ``FOR UPDATE SKIP LOCKED`` (two servers take disjoint events); on SQLite the write
   transaction begins ``IMMEDIATE`` (one writer at a time). The unique key
   ``(subscription_id, event_id)`` makes a second fan-out of one event a no-op.
2. **Claim** (:meth:`HookStore.claim`): due deliveries (``pending``, ``next_at <= now``, no
   live lease) get a lease (``lease_until``, ``leased_by``) in one transaction, claimed the
   same way. A worker that dies holding a lease only delays its deliveries until the lease
   ends; another worker then takes them.
3. **Finish** (:meth:`HookStore.finish`): each attempt is appended to ``hook_attempts`` and
   the delivery becomes ``delivered``, ``pending`` again (due after a backoff) or ``failed``
   (attempts exhausted), only if the worker still holds its lease.

Subscriptions have a *scope*, stored in ``hook_subscriptions.project``: a project name (its
events), ``@registries`` (events of the workspace-wide registries: prompts, models, KBs,
datasets, flags, which carry no project) or ``*`` (every event).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from keel.core.entities import now_ms
from keel.meta.events import Event, event_from_row

__all__ = [
    "ALL_SCOPES",
    "REGISTRY_SCOPE",
    "AttemptRow",
    "Claimed",
    "DeliveryRow",
    "HookStore",
    "Outcome",
    "SubscriptionRow",
    "subscription_matches",
]

ALL_SCOPES = "*"
REGISTRY_SCOPE = "@registries"
TEST_KIND = "hook.test"


@dataclass(frozen=True)
class SubscriptionRow:
    """One stored subscription (its secret included: only keel.services.hooks sees it)."""

    id: int
    scope: str
    events: tuple[str, ...]
    subject_kind: str | None
    subject_name: str | None
    url: str
    secret: str
    description: str
    active: bool
    created_at: int
    created_by: str


@dataclass(frozen=True)
class DeliveryRow:
    """One event for one subscription, and where it stands."""

    id: int
    subscription_id: int
    event_id: int
    event_kind: str
    status: str
    attempts: int
    next_at: int
    status_code: int | None
    error: str | None
    duration_ms: float | None
    created_at: int
    finished_at: int | None


@dataclass(frozen=True)
class AttemptRow:
    """One attempt to send a delivery."""

    delivery_id: int
    attempt: int
    at: int
    status_code: int | None
    error: str | None
    duration_ms: float
    response: str | None
    worker: str


@dataclass(frozen=True)
class Claimed:
    """A delivery a worker holds the lease of, with what it needs to send it."""

    id: int
    attempt: int  # the number this attempt gets (1 for the first)
    subscription_id: int
    url: str
    secret: str
    event: Event


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to (see :meth:`HookStore.finish`)."""

    delivery_id: int
    attempt: int
    status: str  # delivered, pending (retry at next_at) or failed
    next_at: int
    status_code: int | None
    error: str | None
    duration_ms: float
    response: str | None


_SUB_COLUMNS = (
    "id, project, events, subject_kind, subject_name, url, secret, description, active, created_at, created_by"
)
_SQL_SUB_INSERT = (
    "INSERT INTO hook_subscriptions (project, events, subject_kind, subject_name, url, secret, description, "
    "active, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?)"
)
_SQL_SUB_LAST = "SELECT MAX(id) FROM hook_subscriptions WHERE created_at = ? AND secret = ?"
_SQL_SUB_GET = f"SELECT {_SUB_COLUMNS} FROM hook_subscriptions WHERE id = ?"
_SQL_SUB_ALL = f"SELECT {_SUB_COLUMNS} FROM hook_subscriptions ORDER BY id"
_SQL_SUB_ACTIVE = f"SELECT {_SUB_COLUMNS} FROM hook_subscriptions WHERE active = 1 ORDER BY id"
_SQL_SUB_DELETE = "DELETE FROM hook_subscriptions WHERE id = ?"
_SQL_SUB_ACTIVATE = "UPDATE hook_subscriptions SET active = ? WHERE id = ?"

_EVENT_COLUMNS = "id, kind, project, subject, data, created_at"
_SQL_EVENTS_PENDING = f"SELECT {_EVENT_COLUMNS} FROM events WHERE dispatched = 0 ORDER BY id LIMIT ?"
_SQL_EVENT_DISPATCHED = "UPDATE events SET dispatched = 1 WHERE id = ?"
_SQL_EVENT_INSERT_TEST = (
    "INSERT INTO events (kind, project, subject, data, created_at, dispatched) VALUES (?, NULL, ?, NULL, ?, 1)"
)
_SQL_EVENT_LAST_TEST = "SELECT MAX(id) FROM events WHERE kind = ? AND subject = ? AND created_at = ?"
_SQL_ANY_EVENT = "SELECT 1 FROM events WHERE dispatched = 0 LIMIT 1"
_SQL_EVENTS_RECENT = f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY id DESC LIMIT ?"

_SQL_DELIVERY_INSERT = (
    "INSERT INTO hook_deliveries (subscription_id, event_id, status, attempts, next_at, lease_until, created_at) "
    "VALUES (?, ?, 'pending', 0, ?, 0, ?) ON CONFLICT (subscription_id, event_id) DO NOTHING"
)
_SQL_DELIVERY_ID = "SELECT id FROM hook_deliveries WHERE subscription_id = ? AND event_id = ?"
_SQL_DELIVERY_EXISTS = "SELECT 1 FROM hook_deliveries WHERE id = ?"
_SQL_NEXT_DUE = "SELECT MIN(next_at) FROM hook_deliveries WHERE status = 'pending'"
_SQL_DUE = (
    "SELECT id FROM hook_deliveries WHERE status = 'pending' AND next_at <= ? AND lease_until <= ? "
    "ORDER BY next_at, id LIMIT ?"
)
_SQL_LEASE = "UPDATE hook_deliveries SET lease_until = ?, leased_by = ? WHERE id = ?"
_SQL_CLAIMED = (
    "SELECT d.id AS id, d.attempts AS attempts, d.subscription_id AS subscription_id, s.url AS url, "
    "s.secret AS secret, e.id AS event_id, e.kind AS kind, e.project AS project, e.subject AS subject, "
    "e.data AS data, e.created_at AS created_at FROM hook_deliveries d "
    "JOIN hook_subscriptions s ON s.id = d.subscription_id JOIN events e ON e.id = d.event_id WHERE d.id = ?"
)
_SQL_FINISH = (
    "UPDATE hook_deliveries SET status = ?, attempts = ?, next_at = ?, lease_until = 0, leased_by = NULL, "
    "status_code = ?, error = ?, duration_ms = ?, finished_at = ? WHERE id = ? AND leased_by = ? AND attempts = ?"
)
_SQL_RELEASE = "UPDATE hook_deliveries SET lease_until = 0, leased_by = NULL WHERE id = ? AND leased_by = ?"
_SQL_ATTEMPT = (
    "INSERT INTO hook_attempts (delivery_id, attempt, at, status_code, error, duration_ms, response, worker) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_DELIVERY_SELECT = (
    "SELECT d.id, d.subscription_id, d.event_id, e.kind, d.status, d.attempts, d.next_at, d.status_code, "
    "d.error, d.duration_ms, d.created_at, d.finished_at FROM hook_deliveries d JOIN events e ON e.id = d.event_id"
)
_SQL_ATTEMPTS = (
    "SELECT delivery_id, attempt, at, status_code, error, duration_ms, response, worker FROM hook_attempts "
    "WHERE delivery_id = ? ORDER BY attempt, id"
)
_SQL_COUNTS = "SELECT status, COUNT(*) FROM hook_deliveries GROUP BY status"


def _subscription(row: Any) -> SubscriptionRow:
    return SubscriptionRow(
        int(row[0]),
        row[1] if row[1] is not None else ALL_SCOPES,
        tuple(json.loads(row[2])),
        row[3],
        row[4],
        row[5],
        row[6],
        row[7] or "",
        bool(row[8]),
        int(row[9]),
        row[10] or "",
    )


def _delivery(row: Any) -> DeliveryRow:
    return DeliveryRow(
        int(row[0]),
        int(row[1]),
        int(row[2]),
        row[3],
        row[4],
        int(row[5]),
        int(row[6]),
        None if row[7] is None else int(row[7]),
        row[8],
        None if row[9] is None else float(row[9]),
        int(row[10]),
        None if row[11] is None else int(row[11]),
    )


def _pattern_matches(pattern: str, kind: str) -> bool:
    return pattern == kind or pattern == "*" or fnmatch.fnmatchcase(kind, pattern)


def subscription_matches(sub: SubscriptionRow, event: Event) -> bool:
    """Whether ``sub`` wants ``event``: its scope covers the event's project (registry
    events have none), one of its patterns matches the kind, and its registry kind and name
    (when set) are the subject's."""
    if sub.scope == REGISTRY_SCOPE:
        if event.project is not None:
            return False
    elif sub.scope != ALL_SCOPES and event.project != sub.scope:
        return False
    if not any(_pattern_matches(p, event.kind) for p in sub.events):
        return False
    if sub.subject_kind is not None and event.subject.get("kind") != sub.subject_kind:
        return False
    return sub.subject_name is None or event.subject.get("name") == sub.subject_name


class HookStore:
    """The statements over subscriptions, deliveries and attempts, in the caller's transaction
    (``conn`` from ``db.read()`` / ``db.write()``)."""

    # -- subscriptions ------------------------------------------------------------------
    @staticmethod
    def add(
        conn: Any,
        scope: str,
        events: Sequence[str],
        subject_kind: str | None,
        subject_name: str | None,
        url: str,
        secret: str,
        description: str,
        who: str,
    ) -> SubscriptionRow:
        """Store a new (active) subscription and return it."""
        at = now_ms()
        params = (scope, json.dumps(list(events)), subject_kind, subject_name, url, secret, description, at, who)
        conn.execute(_SQL_SUB_INSERT, params)
        new_id = conn.execute(_SQL_SUB_LAST, (at, secret)).scalar()
        found = HookStore.get(conn, int(new_id))
        assert found is not None
        return found

    @staticmethod
    def get(conn: Any, subscription_id: int) -> SubscriptionRow | None:
        """One subscription, or None."""
        row = conn.execute(_SQL_SUB_GET, (subscription_id,)).first()
        return None if row is None else _subscription(row)

    @staticmethod
    def subscriptions(conn: Any, *, active_only: bool = False) -> list[SubscriptionRow]:
        """Every subscription (or only the active ones), oldest first."""
        rows = conn.execute(_SQL_SUB_ACTIVE if active_only else _SQL_SUB_ALL).all()
        return [_subscription(r) for r in rows]

    @staticmethod
    def remove(conn: Any, subscription_id: int) -> bool:
        """Delete a subscription (its deliveries and attempts go with it); False if unknown."""
        return int(conn.execute(_SQL_SUB_DELETE, (subscription_id,)).rowcount or 0) > 0

    @staticmethod
    def set_active(conn: Any, subscription_id: int, active: bool) -> bool:
        """Pause or resume a subscription; False if unknown."""
        return int(conn.execute(_SQL_SUB_ACTIVATE, (1 if active else 0, subscription_id)).rowcount or 0) > 0

    # -- the queue ----------------------------------------------------------------------
    @staticmethod
    def has_work(conn: Any, now: int) -> bool:
        """Whether an event waits for fan-out or a pending delivery is due (a cheap read)."""
        if conn.execute(_SQL_ANY_EVENT).first() is not None:
            return True
        due = conn.execute(_SQL_NEXT_DUE).scalar()
        return due is not None and int(due) <= now

    @staticmethod
    def next_due(conn: Any) -> int | None:
        """When the earliest pending delivery is due (ms), or None."""
        due = conn.execute(_SQL_NEXT_DUE).scalar()
        return None if due is None else int(due)

    @staticmethod
    def fan_out(conn: Any, limit: int = 500) -> tuple[int, int]:
        """Turn up to ``limit`` undispatched events into deliveries for the active subscriptions
        that want them; returns ``(events, deliveries)``. Call inside a write transaction."""
        sql = _SQL_EVENTS_PENDING
        if conn.dialect.name != "sqlite":
            sql += " FOR UPDATE SKIP LOCKED"
        rows = conn.execute(sql, (limit,)).all()
        if not rows:
            return 0, 0
        subs = HookStore.subscriptions(conn, active_only=True)
        at = now_ms()
        deliveries: list[tuple[int, int, int, int]] = []
        for row in rows:
            event = event_from_row(row)
            deliveries.extend((sub.id, event.id, at, at) for sub in subs if subscription_matches(sub, event))
        if deliveries:
            conn.executemany(_SQL_DELIVERY_INSERT, deliveries)
        conn.executemany(_SQL_EVENT_DISPATCHED, [(int(r.id),) for r in rows])
        return len(rows), len(deliveries)

    @staticmethod
    def test_delivery(conn: Any, subscription_id: int, subject: dict[str, Any]) -> int:
        """Record a ``hook.test`` event for one subscription and its delivery (due now); returns
        the delivery's id."""
        at = now_ms()
        subject_json = json.dumps(subject, sort_keys=True, separators=(",", ":"))
        conn.execute(_SQL_EVENT_INSERT_TEST, (TEST_KIND, subject_json, at))
        event_id = int(conn.execute(_SQL_EVENT_LAST_TEST, (TEST_KIND, subject_json, at)).scalar())
        conn.execute(_SQL_DELIVERY_INSERT, (subscription_id, event_id, at, at))
        return int(conn.execute(_SQL_DELIVERY_ID, (subscription_id, event_id)).scalar())

    @staticmethod
    def claim(
        conn: Any, worker: str, limit: int, lease_ms: int, now: int, only: Iterable[int] | None = None
    ) -> list[Claimed]:
        """Lease up to ``limit`` due deliveries to ``worker`` for ``lease_ms`` (or exactly the
        ids in ``only``, if they are due and free); returns them with what sending needs.
        Call inside a write transaction."""
        if only is not None:
            ids = [int(i) for i in only]
            sql = _SQL_DUE.replace("ORDER BY", "AND id = ? ORDER BY")
            picked: list[int] = []
            for one in ids:
                picked.extend(int(r[0]) for r in conn.execute(sql + _lock(conn), (now, now, one, 1)).all())
            ids = picked
        else:
            ids = [int(r[0]) for r in conn.execute(_SQL_DUE + _lock(conn), (now, now, limit)).all()]
        if not ids:
            return []
        conn.executemany(_SQL_LEASE, [(now + lease_ms, worker, i) for i in ids])
        claimed = []
        for one in ids:
            row = conn.execute(_SQL_CLAIMED, (one,)).first()
            if row is None:  # pragma: no cover - its subscription was deleted meanwhile (cascade)
                continue
            event = Event(
                int(row.event_id),
                row.kind,
                row.project,
                json.loads(row.subject),
                None if row.data is None else json.loads(row.data),
                int(row.created_at),
            )
            claimed.append(
                Claimed(int(row.id), int(row.attempts) + 1, int(row.subscription_id), row.url, row.secret, event)
            )
        return claimed

    @staticmethod
    def finish(conn: Any, worker: str, outcomes: Sequence[Outcome]) -> int:
        """Record attempts and move their deliveries on (only those ``worker`` still holds);
        returns how many deliveries it moved. Call inside a write transaction."""
        moved = 0
        at = now_ms()
        attempts = []
        for o in outcomes:
            finished = at if o.status != "pending" else None
            result = conn.execute(
                _SQL_FINISH,
                (
                    o.status, o.attempt, o.next_at, o.status_code, o.error, o.duration_ms, finished,
                    o.delivery_id, worker, o.attempt - 1,
                ),
            )  # fmt: skip
            if int(result.rowcount or 0) > 0:
                moved += 1
            elif conn.execute(_SQL_DELIVERY_EXISTS, (o.delivery_id,)).first() is None:
                continue  # its subscription was removed meanwhile: nothing left to record it on
            attempts.append((o.delivery_id, o.attempt, at, o.status_code, o.error, o.duration_ms, o.response, worker))
        if attempts:
            conn.executemany(_SQL_ATTEMPT, attempts)
        return moved

    @staticmethod
    def release(conn: Any, worker: str, ids: Sequence[int]) -> None:
        """Give back leases ``worker`` holds on ``ids`` without an attempt (due again now)."""
        conn.executemany(_SQL_RELEASE, [(int(i), worker) for i in ids])

    # -- reading ------------------------------------------------------------------------
    @staticmethod
    def deliveries(
        conn: Any, subscription_ids: Sequence[int] | None, status: str | None = None, limit: int = 50
    ) -> list[DeliveryRow]:
        """The newest deliveries (of the given subscriptions; None: all), newest first."""
        where: list[str] = []
        params: list[Any] = []
        if subscription_ids is not None:
            if not subscription_ids:
                return []
            where.append(f"d.subscription_id IN ({', '.join('?' * len(subscription_ids))})")
            params.extend(int(i) for i in subscription_ids)
        if status is not None:
            where.append("d.status = ?")
            params.append(status)
        sql = _DELIVERY_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY d.id DESC LIMIT ?"
        return [_delivery(r) for r in conn.execute(sql, (*params, int(limit))).all()]

    @staticmethod
    def delivery(conn: Any, delivery_id: int) -> DeliveryRow | None:
        """One delivery, or None."""
        row = conn.execute(_DELIVERY_SELECT + " WHERE d.id = ?", (delivery_id,)).first()
        return None if row is None else _delivery(row)

    @staticmethod
    def attempts(conn: Any, delivery_id: int) -> list[AttemptRow]:
        """Every attempt of a delivery, first first."""
        rows = conn.execute(_SQL_ATTEMPTS, (delivery_id,)).all()
        return [AttemptRow(int(r[0]), int(r[1]), int(r[2]), r[3], r[4], float(r[5]), r[6], r[7] or "") for r in rows]

    @staticmethod
    def counts(conn: Any) -> dict[str, int]:
        """Deliveries by status."""
        return {str(s): int(n) for s, n in conn.execute(_SQL_COUNTS).all()}

    @staticmethod
    def recent_events(conn: Any, limit: int = 50) -> list[Event]:
        """The newest events of the outbox, newest first."""
        return [event_from_row(r) for r in conn.execute(_SQL_EVENTS_RECENT, (limit,)).all()]


def _lock(conn: Any) -> str:
    """The row-claiming clause: PostgreSQL skips rows another worker holds; SQLite's write
    transaction (``BEGIN IMMEDIATE``) already excludes other writers."""
    return "" if conn.dialect.name == "sqlite" else " FOR UPDATE SKIP LOCKED"
