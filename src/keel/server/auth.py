"""Request authentication (bearer API tokens), role checks, and ``keel ui``'s local mode.

Every route depends on :func:`principal`. What the caller may do is decided
in the service layer (:mod:`keel.services.auth`, :mod:`keel.services.contract`);
``require`` and ``require_site_admin`` are re-exported for the routes that are
not service operations (the object store, the UI's pages).

Local mode (``keel ui``: :func:`keel.server.create_app` with ``local=True``) serves one
person on their own machine, as ``mlflow ui`` does: the web UI needs no sign-in, and the
MLflow API and the OTLP route (``/v1/traces``) need no token; the caller is the local user
acting as a site admin, the workspace's owner (:func:`local_caller`). keel's own API
(``/api/v1``) keeps asking for tokens. Since anything that can reach the port may then
act as the owner, :class:`LocalOnly` checks every request first (403 otherwise):

- the peer is a loopback address (``keel ui`` listens on one only: :func:`check_local_bind`);
- the ``Host`` header names a loopback host (``localhost``, ``127.x.x.x``, ``[::1]``), so a web
  page whose own domain was re-pointed at 127.0.0.1 (DNS rebinding) is refused;
- a request a browser sends from a page of another origin (an ``Origin`` that is not this
  server, or ``Sec-Fetch-Site`` other than ``same-origin`` / ``none``) is refused when it may
  change something (every method but GET, HEAD and OPTIONS), and for every method outside
  the web UI's pages: a site the user visits cannot call the local API. Links from other
  sites to UI pages still open.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from keel.errors import InvalidInput, Unauthenticated
from keel.integrations.mlflow_rest.errors import error_body
from keel.server.context import ServerContext, server_context
from keel.server.errors import KeelJSONResponse, error_response
from keel.services.audit import current_user
from keel.services.auth import Principal, TokenInfo, User, require, require_site_admin

__all__ = [
    "Caller",
    "Context",
    "LocalOnly",
    "check_local_bind",
    "is_loopback",
    "local_caller",
    "local_principal",
    "loopback_host",
    "principal",
    "require",
    "require_site_admin",
]

_bearer = HTTPBearer(auto_error=False, description="An API token: Authorization: Bearer keel_...")

Context = Annotated[ServerContext, Depends(server_context)]


def principal(
    context: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """FastAPI dependency: the authenticated caller (401 without a valid token)."""
    if credentials is None or not credentials.credentials:
        raise Unauthenticated("this endpoint needs an API token", "send Authorization: Bearer keel_...")
    return context.auth.authenticate(credentials.credentials)


Caller = Annotated[Principal, Depends(principal)]


# -- local mode (keel ui) ---------------------------------------------------------------------------
def local_principal() -> Principal:
    """The caller of ``keel ui``: the operating-system user, as a site admin (the workspace's owner)."""
    name = current_user() or "local"
    return Principal(User(0, name, True, False, 0), TokenInfo("local", name, "keel ui", 0, None, None), {})


def local_caller(state: Any) -> Principal | None:
    """The local user when ``state`` (an app's ``app.state``) serves in local mode, else None:
    the MLflow API and the OTLP route then take requests without a token."""
    found: Principal | None = getattr(state, "keel_local", None)
    return found


def is_loopback(name: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``, IPv4-mapped ones)."""
    if name.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def loopback_host(host: str) -> bool:
    """True if a ``Host`` header (``name[:port]``, IPv6 in brackets) names a loopback host."""
    try:
        name = urlsplit("//" + host).hostname
    except ValueError:
        return False
    return bool(name) and is_loopback(name or "")


def check_local_bind(host: str, store: str = "sqlite:///PATH/.keel/keel.db") -> None:
    """Raise InvalidInput unless ``keel ui`` may listen on ``host``: a loopback address only,
    since it serves the workspace with no sign-in and no token (``store``: the database URL
    the hint names, for a team server with tokens instead)."""
    if not is_loopback(host.strip("[]")):
        raise InvalidInput(
            f"keel ui serves this workspace with no sign-in and no token, so it listens on a loopback address "
            f"only (127.0.0.1, ::1, localhost), not {host!r}",
            f"to share it, run a team server with tokens: keel server start --store {store} --host {host}",
        )


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SAME_SITE = frozenset({"same-origin", "none"})  # Sec-Fetch-Site of this server's pages and of typed URLs
_MLFLOW_PATHS = ("/api/2.0/", "/api/3.0/", "/ajax-api/")


def _ui_page(path: str) -> bool:
    """The web UI's pages (a link from another site may open them), not an API."""
    return path in ("/", "/ui") or path.startswith("/ui/")


class LocalOnly:
    """ASGI middleware of local mode: refuse (403) what is not the local user's own (module doc)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        problem = _refusal(scope, Headers(scope=scope))
        if problem is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        message, hint = problem
        response: JSONResponse
        if scope.get("path", "").startswith(_MLFLOW_PATHS):  # the MLflow client reads MLflow's error shape
            response = KeelJSONResponse(error_body("PERMISSION_DENIED", f"{message} ({hint})"), status_code=403)
        else:
            response = error_response(403, "forbidden", message, hint)
        await response(scope, receive, send)


def _refusal(scope: Scope, headers: Headers) -> tuple[str, str] | None:
    """Why local mode refuses a request (message, hint), or None to serve it."""
    client = scope.get("client")
    if not client or not is_loopback(str(client[0])):
        return (
            "keel ui answers only requests from this machine",
            "share a workspace with a team server: keel server start",
        )
    host = headers.get("host", "")
    if not loopback_host(host):
        return (
            f"keel ui answers only on a loopback name, not {host[:100]!r}",
            "open it as http://127.0.0.1:PORT/ or http://localhost:PORT/",
        )
    changes = scope["type"] == "websocket" or scope.get("method", "GET") not in _SAFE_METHODS
    if not changes and _ui_page(scope.get("path", "")):
        return None
    origin = headers.get("origin")
    fetch_site = headers.get("sec-fetch-site")
    foreign_origin = origin is not None and (
        origin == "null" or urlsplit(origin).netloc.lower() != host.lower() or not origin.startswith("http")
    )
    if foreign_origin or (fetch_site is not None and fetch_site.lower() not in _SAME_SITE):
        return (
            f"keel ui refuses requests sent by another site's page ({(origin or fetch_site or '')[:100]})",
            "call the API from a program (the MLflow client, curl), or use keel ui's own pages",
        )
    return None
