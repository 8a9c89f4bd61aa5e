"""Webhooks: the subscriptions the viewer may read and their recent deliveries (status code,
error, attempts, duration), and one delivery's attempts."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse

from keel.errors import NotFound
from keel.server.auth import Context
from keel.server.ui.render import add_nav, render
from keel.server.ui.routing import UIRouter
from keel.server.ui.sessions import Viewer

__all__ = ["router"]

router = UIRouter()
add_nav("Webhooks", "/hooks", order=70)


@router.get("/hooks")
def hooks_page(request: Request, viewer: Viewer, context: Context, status: str = "") -> HTMLResponse:
    """Every readable subscription, and the newest deliveries of them."""
    principal = viewer.principal
    subs = [s for s in context.hooks.subscriptions() if principal.rank(s.scope) > 0]
    wanted = status if status in ("pending", "delivered", "failed") else None
    deliveries = [d for d in context.hooks.deliveries(None, wanted, 200) if principal.rank(d.scope) > 0][:100]
    return render(
        request,
        "hooks.html",
        title="Webhooks",
        subscriptions=subs,
        deliveries=deliveries,
        status=wanted or "",
    )


@router.get("/hooks/deliveries/{delivery_id}")
def delivery_page(request: Request, delivery_id: int, viewer: Viewer, context: Context) -> HTMLResponse:
    """One delivery: every attempt with its status code, error, answer and duration."""
    scope = context.hooks.delivery_scope(delivery_id)
    if scope is None or viewer.principal.rank(scope) == 0:
        raise NotFound(f"no webhook delivery {delivery_id}", "pick one from the webhooks page")
    found = context.hooks.delivery(delivery_id)
    attempts = context.hooks.attempts(delivery_id)
    return render(
        request,
        "hook_delivery.html",
        title=f"Delivery {delivery_id}",
        delivery=found,
        delivery_id=delivery_id,
        attempts=attempts,
    )
