"""``keel.sdk.hooks``: webhooks from Python (docs/hooks.md).

::

    from keel.sdk import hooks

    sub = hooks.add("https://ci.example.com/keel", events=["alias.moved"], scope="@registries", kind="prompt")
    sub.secret                      # shown once: keep it where the receiver can verify signatures
    hooks.test(sub.id)              # a signed hook.test delivery, sent now
    hooks.deliveries(sub.id)        # newest first, with status code / error / duration
    hooks.deliver()                 # a workspace without a server: work the queue once

Against a keel server (``KEEL_URI=http(s)://...``) the same calls go through the service
API, and the server's worker delivers.
"""

from __future__ import annotations

import weakref

from keel.sdk.session import Session, get_session
from keel.services.hooks import Delivery, DeliveryAttempt, HookService, QueueRun, Subscription

__all__ = [
    "Delivery",
    "DeliveryAttempt",
    "QueueRun",
    "Subscription",
    "add",
    "attempts",
    "deliver",
    "deliveries",
    "get",
    "list_subscriptions",
    "remove",
    "set_active",
    "test",
]

_SERVICES: weakref.WeakKeyDictionary[Session, HookService] = weakref.WeakKeyDictionary()


def service() -> HookService:
    """The hooks service of the current session's store (its remote proxy against a server)."""
    session = get_session()
    found = _SERVICES.get(session)
    if found is None:
        found = session._service(HookService, lambda: HookService(session.service.store))  # noqa: SLF001
        _SERVICES[session] = found
    return found


def add(
    url: str,
    events: list[str] | None = None,
    *,
    scope: str = "*",
    kind: str | None = None,
    name: str | None = None,
    description: str = "",
) -> Subscription:
    """Subscribe ``url`` to ``events`` (default: all) in ``scope`` (a project, ``@registries``
    or ``*``), optionally only about registry ``kind`` and entity ``name``. The result's
    ``secret`` is shown this once."""
    return service().add(url, scope, events, kind, name, description)


def list_subscriptions() -> list[Subscription]:
    """Every subscription you may read."""
    return service().subscriptions()


def get(subscription_id: int) -> Subscription:
    """One subscription."""
    return service().get(subscription_id)


def remove(subscription_id: int) -> Subscription:
    """Delete a subscription with its deliveries."""
    return service().remove(subscription_id)


def set_active(subscription_id: int, active: bool) -> Subscription:
    """Pause or resume a subscription."""
    return service().set_active(subscription_id, active)


def test(subscription_id: int) -> Delivery:
    """Send a signed ``hook.test`` event now; returns its delivery."""
    return service().test(subscription_id)


def deliveries(subscription_id: int | None = None, status: str | None = None, limit: int = 50) -> list[Delivery]:
    """The newest deliveries, newest first."""
    return service().deliveries(subscription_id, status, limit)


def attempts(delivery_id: int) -> list[DeliveryAttempt]:
    """Every attempt of a delivery."""
    return service().attempts(delivery_id)


def deliver() -> QueueRun:
    """Work the queue once (fan out events, send what is due): for a workspace without a server."""
    return service().deliver()
