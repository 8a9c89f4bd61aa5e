"""Webhooks: subscriptions to keel's events, and their deliveries (docs/hooks.md).

A subscription names a *scope* (a project, ``@registries`` for the prompt, model, dataset,
KB and flag registries, or ``*`` for everything), the event kinds it wants (patterns:
``version.created``, ``review.*``, ``*``), optionally a registry kind and entity name, and a
target URL. Adding one checks the URL (see :mod:`keel.services.hooks_delivery`) and returns
its secret once; deliveries are signed with it.

Events are recorded by the requests that cause them (:func:`keel.meta.events.record_event`,
one row in their own transaction); the keel server's worker thread
(:mod:`keel.server.hooks_worker`) fans them out and delivers them. Without a server,
``keel hooks deliver`` (:meth:`HookService.deliver`) works the queue, and ``keel ui`` runs
the same worker while it is open.

Who may do what: adding, removing, pausing and testing a subscription takes the writer role
on its scope (``*``: on every project); listing and reading deliveries the reader role.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keel.core.auth import Principal
from keel.core.names import check_name
from keel.errors import InvalidInput, NotFound
from keel.meta.events import KINDS, record_event
from keel.meta.hooks import ALL_SCOPES, REGISTRY_SCOPE, DeliveryRow, HookStore, SubscriptionRow
from keel.services.audit import who as audit_who
from keel.services.contract import READABLE, operation, project_scope, service
from keel.services.hooks_delivery import Dispatcher, HookSettings, QueueRun, check_url, resolve_target
from keel.services.workspace import Store

__all__ = ["EVENT_PATTERNS", "Delivery", "DeliveryAttempt", "HookService", "QueueRun", "Subscription"]

REGISTRY_KINDS = ("prompt", "model", "dataset", "kb", "flag", "abtest")
STATUSES = ("pending", "delivered", "failed")
#: What ``events=`` may name: an event kind, a family (``review.*``) or ``*``.
EVENT_PATTERNS: tuple[str, ...] = (*KINDS, *sorted({k.split(".")[0] + ".*" for k in KINDS}), "*")


@dataclass(frozen=True)
class Subscription:
    """A webhook subscription. ``secret`` is set only in what :meth:`HookService.add` returns."""

    id: int
    scope: str
    events: tuple[str, ...]
    kind: str | None
    name: str | None
    url: str
    description: str
    active: bool
    created_at: int
    created_by: str
    secret: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the secret only when set)."""
        doc = {
            "id": self.id,
            "scope": self.scope,
            "events": list(self.events),
            "kind": self.kind,
            "name": self.name,
            "url": self.url,
            "description": self.description,
            "active": self.active,
            "created_at": self.created_at,
            "created_by": self.created_by,
        }
        if self.secret is not None:
            doc["secret"] = self.secret
        return doc


@dataclass(frozen=True)
class Delivery:
    """One event for one subscription: pending (due at ``next_at``), delivered or failed."""

    id: int
    subscription_id: int
    scope: str
    event_id: int
    event: str
    status: str
    attempts: int
    next_at: int
    status_code: int | None
    error: str | None
    duration_ms: float | None
    created_at: int
    finished_at: int | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "subscription": self.subscription_id,
            "scope": self.scope,
            "event_id": self.event_id,
            "event": self.event,
            "status": self.status,
            "attempts": self.attempts,
            "next_at": self.next_at,
            "status_code": self.status_code,
            "error": self.error,
            "duration_ms": self.duration_ms,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        }


@dataclass(frozen=True)
class DeliveryAttempt:
    """One attempt of a delivery: its answer's status code, or the error, and how long it took."""

    delivery_id: int
    attempt: int
    at: int
    status_code: int | None
    error: str | None
    duration_ms: float
    response: str | None
    worker: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "delivery": self.delivery_id,
            "attempt": self.attempt,
            "at": self.at,
            "status_code": self.status_code,
            "error": self.error,
            "duration_ms": self.duration_ms,
            "response": self.response,
            "worker": self.worker,
        }


def _subscription(row: SubscriptionRow, secret: str | None = None) -> Subscription:
    return Subscription(
        row.id,
        row.scope,
        row.events,
        row.subject_kind,
        row.subject_name,
        row.url,
        row.description,
        row.active,
        row.created_at,
        row.created_by,
        secret,
    )


def _delivery(row: DeliveryRow, scope: str) -> Delivery:
    return Delivery(
        row.id,
        row.subscription_id,
        scope,
        row.event_id,
        row.event_kind,
        row.status,
        row.attempts,
        row.next_at,
        row.status_code,
        row.error,
        row.duration_ms,
        row.created_at,
        row.finished_at,
    )


def _check_scope(scope: Any) -> str:
    if not isinstance(scope, str) or not scope:
        raise InvalidInput("a webhook's scope is a project name, @registries or *", "e.g. --scope my-project")
    if scope in (ALL_SCOPES, REGISTRY_SCOPE):
        return scope
    return check_name(scope, "project name")


def _check_events(events: Sequence[str] | None) -> tuple[str, ...]:
    if not events:
        return ("*",)
    out = []
    for item in events:
        if item not in EVENT_PATTERNS:
            raise InvalidInput(
                f"unknown event {item!r}",
                f"--event takes one of: {', '.join(EVENT_PATTERNS)}",
            )
        if item not in out:
            out.append(item)
    return tuple(out)


# -- authorization on the stored subscription ------------------------------------------------
def _require_on_subscription(role: str, param: str = "subscription_id") -> Any:
    """A contract ``check``: ``role`` on the scope of the stored subscription in ``param``
    (one the caller cannot read is NotFound, as an unknown id)."""

    def check(services: Any, caller: Principal, arguments: dict[str, Any]) -> None:
        from keel.services.auth import require

        value = arguments.get(param)
        if value is None:
            return
        scope = services.hooks.scope_of(value)
        if scope is None or caller.rank(scope) == 0:
            raise _no_subscription(value)
        require(caller, scope, role)

    return check


def _require_on_delivery(services: Any, caller: Principal, arguments: dict[str, Any]) -> None:
    from keel.services.auth import require

    value = arguments.get("delivery_id")
    found = services.hooks.delivery_scope(value)
    if found is None or caller.rank(found) == 0:
        raise NotFound(f"no webhook delivery {value}", "list deliveries with 'keel hooks deliveries'")
    require(caller, found, "reader")


def _readable(_services: Any, caller: Principal, result: Any) -> Any:
    return [item for item in result if caller.rank(item.scope) > 0]


def _no_subscription(value: Any) -> NotFound:
    return NotFound(f"no webhook subscription {value}", "list them with 'keel hooks list'")


@service("hooks")
class HookService:
    """Webhook subscriptions and deliveries of one store."""

    def __init__(self, store: Store, settings: HookSettings | None = None) -> None:
        self.store = store
        self.db = store.db
        self._settings = settings

    @property
    def settings(self) -> HookSettings:
        """The delivery settings (from ``KEEL_HOOKS_*`` unless given)."""
        if self._settings is None:
            self._settings = HookSettings.from_env()
        return self._settings

    # -- subscriptions --------------------------------------------------------------------
    @operation("writer", project_scope("scope"))
    def add(
        self,
        url: str,
        scope: str,
        events: list[str] | None = None,
        kind: str | None = None,
        name: str | None = None,
        description: str = "",
        who: str | None = None,
    ) -> Subscription:
        """Subscribe ``url`` to ``events`` (default: every kind) in ``scope`` (a project,
        ``@registries`` or ``*``: named always, as the role is checked on it); optionally only
        those about registry ``kind`` (prompt, model, dataset, kb, flag) and entity ``name``.
        The URL is checked now (and at every delivery); the result carries the secret, once."""
        scope = _check_scope(scope)
        wanted = _check_events(events)
        if kind is not None and kind not in REGISTRY_KINDS:
            raise InvalidInput(f"unknown registry kind {kind!r}", f"--kind takes one of: {', '.join(REGISTRY_KINDS)}")
        if name is not None and (not isinstance(name, str) or not name or len(name) > 500):
            raise InvalidInput("--name must be an entity's name (1-500 characters)", "e.g. --name chat")
        if len(description) > 2000:
            raise InvalidInput("the description is longer than 2,000 characters", "shorten --description")
        _scheme, host, port = check_url(url)
        resolve_target(host, port, self.settings.allow_private)
        secret = "whsec_" + secrets.token_urlsafe(32)
        with self.db.write() as conn:
            row = HookStore.add(conn, scope, wanted, kind, name, url, secret, description, audit_who(who))
        return _subscription(row, secret)

    @operation("reader", READABLE, filter=_readable)
    def subscriptions(self) -> list[Subscription]:
        """Every subscription the caller may read, oldest first (secrets are never shown again)."""
        with self.db.read() as conn:
            return [_subscription(r) for r in HookStore.subscriptions(conn)]

    @operation("reader", READABLE, check=_require_on_subscription("reader"))
    def get(self, subscription_id: int) -> Subscription:
        """One subscription."""
        with self.db.read() as conn:
            row = HookStore.get(conn, subscription_id)
        if row is None:
            raise _no_subscription(subscription_id)
        return _subscription(row)

    @operation("writer", READABLE, check=_require_on_subscription("writer"))
    def remove(self, subscription_id: int) -> Subscription:
        """Delete a subscription, with its deliveries and their attempts."""
        with self.db.write() as conn:
            row = HookStore.get(conn, subscription_id)
            if row is None:
                raise _no_subscription(subscription_id)
            HookStore.remove(conn, subscription_id)
        return _subscription(row)

    @operation("writer", READABLE, check=_require_on_subscription("writer"))
    def set_active(self, subscription_id: int, active: bool) -> Subscription:
        """Pause (``active=False``: new events are not queued for it) or resume a subscription."""
        with self.db.write() as conn:
            if not HookStore.set_active(conn, subscription_id, bool(active)):
                raise _no_subscription(subscription_id)
            row = HookStore.get(conn, subscription_id)
        assert row is not None
        return _subscription(row)

    @operation("writer", READABLE, check=_require_on_subscription("writer"))
    def test(self, subscription_id: int) -> Delivery:
        """Send a ``hook.test`` event to the subscription now and return its delivery (a
        failure stays queued for retries like any other)."""
        with self.db.write() as conn:
            row = HookStore.get(conn, subscription_id)
            if row is None:
                raise _no_subscription(subscription_id)
            delivery_id = HookStore.test_delivery(conn, subscription_id, {"subscription": subscription_id})
        dispatcher = Dispatcher(self.db, self.settings, worker="test")
        try:
            dispatcher.work(only=[delivery_id])
        finally:
            dispatcher.close()
        with self.db.read() as conn:
            found = HookStore.delivery(conn, delivery_id)
        assert found is not None
        return _delivery(found, row.scope)

    # -- deliveries -----------------------------------------------------------------------
    @operation("reader", READABLE, check=_require_on_subscription("reader"), filter=_readable)
    def deliveries(
        self, subscription_id: int | None = None, status: str | None = None, limit: int = 50
    ) -> list[Delivery]:
        """The newest deliveries (of one subscription, or every one), newest first."""
        if status is not None and status not in STATUSES:
            raise InvalidInput(f"unknown delivery status {status!r}", f"--status takes one of: {', '.join(STATUSES)}")
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidInput("limit must be 1-1000", "e.g. --limit 50")
        with self.db.read() as conn:
            scopes = {s.id: s.scope for s in HookStore.subscriptions(conn)}
            ids = None if subscription_id is None else [subscription_id]
            if subscription_id is not None and subscription_id not in scopes:
                raise _no_subscription(subscription_id)
            rows = HookStore.deliveries(conn, ids, status, limit)
        return [_delivery(r, scopes.get(r.subscription_id, ALL_SCOPES)) for r in rows]

    @operation("reader", READABLE, check=_require_on_delivery)
    def delivery(self, delivery_id: int) -> Delivery:
        """One delivery."""
        with self.db.read() as conn:
            row = HookStore.delivery(conn, delivery_id)
            sub = None if row is None else HookStore.get(conn, row.subscription_id)
        if row is None or sub is None:
            raise NotFound(f"no webhook delivery {delivery_id}", "list deliveries with 'keel hooks deliveries'")
        return _delivery(row, sub.scope)

    @operation("reader", READABLE, check=_require_on_delivery)
    def attempts(self, delivery_id: int) -> list[DeliveryAttempt]:
        """Every attempt of one delivery, first first."""
        with self.db.read() as conn:
            if HookStore.delivery(conn, delivery_id) is None:
                raise NotFound(f"no webhook delivery {delivery_id}", "list deliveries with 'keel hooks deliveries'")
            rows = HookStore.attempts(conn, delivery_id)
        return [
            DeliveryAttempt(r.delivery_id, r.attempt, r.at, r.status_code, r.error, r.duration_ms, r.response, r.worker)
            for r in rows
        ]

    @operation("admin")
    def deliver(self) -> QueueRun:
        """Work the queue once, here: fan out waiting events and send every delivery due now
        (what the server's worker does continuously; for a workspace without a server)."""
        dispatcher = Dispatcher(self.db, self.settings)
        try:
            return dispatcher.drain()
        finally:
            dispatcher.close()

    # -- events recorded through the service API ------------------------------------------
    @operation("writer", project_scope("project"))
    def eval_finished(self, project: str, run_id: str, name: str, metrics: dict[str, float]) -> None:
        """Record ``eval.finished`` for an evaluation run of ``project`` (what
        :func:`keel.evaluate` calls when its run ends): subject the run, data its metrics."""
        values = {
            str(k): (float(v) if isinstance(v, int | float) and math.isfinite(v) else None) for k, v in metrics.items()
        }
        self._run_event("eval.finished", project, run_id, name, {"metrics": values})

    @operation("writer", project_scope("project"))
    def regression_detected(self, project: str, run_id: str, name: str, data: dict[str, Any]) -> None:
        """Record ``regression.detected`` for an evaluation run of ``project`` that a gate
        (``keel gate``) found to regress: subject the run, data the metric, baseline and test."""
        if not isinstance(data, dict):
            raise InvalidInput("data must be an object", "pass the gate's metric, baseline and test")
        try:
            text = json.dumps(data, allow_nan=False)
        except (TypeError, ValueError):
            raise InvalidInput("data must be plain JSON (finite numbers)", "pass the gate's summary") from None
        if len(text) > 16_384:
            raise InvalidInput(f"data is {len(text)} characters, at most 16384", "send a shorter summary")
        self._run_event("regression.detected", project, run_id, name, data)

    def _run_event(self, kind: str, project: str, run_id: str, name: str, data: dict[str, Any]) -> None:
        """Record event ``kind`` whose subject is run ``run_id`` of ``project``, in one write transaction."""
        if not isinstance(run_id, str) or not run_id or len(run_id) > 64:
            raise InvalidInput("run_id must be a run's id", "pass the evaluation run's id")
        subject = {"kind": "run", "run_id": run_id, "name": str(name)[:250]}
        with self.db.write() as conn:
            record_event(conn, kind, project=project, subject=subject, data=data)

    # -- for authorization -----------------------------------------------------------------
    def scope_of(self, subscription_id: Any) -> str | None:
        """The scope of a stored subscription, or None."""
        if not isinstance(subscription_id, int) or isinstance(subscription_id, bool):
            raise InvalidInput("a subscription id is a number", "see 'keel hooks list'")
        with self.db.read() as conn:
            row = HookStore.get(conn, subscription_id)
        return None if row is None else row.scope

    def delivery_scope(self, delivery_id: Any) -> str | None:
        """The scope of a stored delivery's subscription, or None."""
        if not isinstance(delivery_id, int) or isinstance(delivery_id, bool):
            raise InvalidInput("a delivery id is a number", "see 'keel hooks deliveries'")
        with self.db.read() as conn:
            row = HookStore.delivery(conn, delivery_id)
            sub = None if row is None else HookStore.get(conn, row.subscription_id)
        return None if sub is None else sub.scope
