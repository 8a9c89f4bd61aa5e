"""Browser sessions for the web UI: the signed-in user, CSRF tokens, cookies, login rate limits.

- A session id is 32 random bytes in an HttpOnly, SameSite=Lax cookie (``Secure`` over
  https, or always with ``KEEL_UI_SECURE_COOKIES=1``); the database keeps only its SHA-256
  (:meth:`keel.services.auth.AuthStore.create_session`), with an expiry.
- The CSRF token of a session is an HMAC of the session id: a page can embed it, a
  cross-site page cannot compute it (it cannot read the cookie). Every request that is
  not GET/HEAD/OPTIONS must carry it (form field ``csrf`` or header ``X-CSRF-Token``),
  and its ``Origin``, when sent, must be this site; otherwise 403.
- The sign-in form, before any session exists, uses a double-submit cookie.
- ``keel ui`` (local mode) needs no sign-in: the viewer is the local user acting as a
  site admin; the app listens on 127.0.0.1 only and refuses other ``Host`` names
  (DNS rebinding), and forms still carry a per-process CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

from fastapi import Depends, Request

from keel.errors import Forbidden, InvalidInput, RateLimited, TooLarge, Unauthenticated
from keel.server.auth import Context, local_principal, loopback_host, require
from keel.server.context import ServerContext
from keel.services.auth import RANK, LoginLimits, Principal

__all__ = [
    "CSRF_FIELD",
    "ENV_SECURE_COOKIES",
    "MAX_FORM",
    "Form",
    "FormData",
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "RateLimited",
    "UISettings",
    "UIUser",
    "Viewer",
    "check_origin",
    "read_form",
    "client_address",
    "cookie_secure",
    "csrf_token_for",
    "local_principal",
    "ui_settings",
    "viewer",
]

SESSION_COOKIE = "keel_session"
LOGIN_COOKIE = "keel_login"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
ENV_SECURE_COOKIES = "KEEL_UI_SECURE_COOKIES"
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
MAX_FORM = 1 << 20  # bytes in one submitted form


@dataclass
class UISettings:
    """How one app serves its UI (``app.state.keel_ui``)."""

    local: bool = False  # keel ui: no sign-in, the local user acts as a site admin
    secure_cookies: bool = False  # mark cookies Secure even when the request is plain http
    session_ttl_s: int = 12 * 3600
    limits: LoginLimits = field(default_factory=LoginLimits)
    local_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @classmethod
    def from_env(cls) -> UISettings:
        """Settings from the environment (``KEEL_UI_SECURE_COOKIES=1``)."""
        return cls(secure_cookies=os.environ.get(ENV_SECURE_COOKIES, "") not in ("", "0", "false"))


def ui_settings(request: Request) -> UISettings:
    """The UI settings of the app serving ``request``."""
    settings: UISettings = request.app.state.keel_ui
    return settings


def csrf_token_for(secret: str | bytes) -> str:
    """The CSRF token that goes with a session id (or the local mode's process secret)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, b"keel-ui-csrf", hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class UIUser:
    """Who is looking at a page: the principal (same roles as an API token), the CSRF
    token for forms, and the server's services."""

    principal: Principal
    csrf_token: str
    context: ServerContext
    local: bool = False

    @property
    def name(self) -> str:
        """The user name (``who`` in audit trails and reflogs)."""
        return self.principal.name

    @property
    def is_admin(self) -> bool:
        """True for a site admin (and for the local user of ``keel ui``)."""
        return self.principal.user.is_admin

    def can(self, project: str, role: str) -> bool:
        """True if the user holds at least ``role`` on ``project`` (a name, ``*`` or ``@registries``)."""
        return self.principal.rank(project) >= RANK[role]

    def require(self, project: str, role: str) -> None:
        """Raise NotFound (no role: 404) or Forbidden (role too low: 403) unless :meth:`can`."""
        require(self.principal, project, role)


def client_address(request: Request) -> str:
    """The client's address (uvicorn's ``proxy_headers`` makes it the real one behind a proxy)."""
    return request.client.host if request.client else "unknown"


def cookie_secure(request: Request) -> bool:
    """Whether cookies set in answer to ``request`` get the ``Secure`` flag."""
    return ui_settings(request).secure_cookies or request.url.scheme == "https"


def check_origin(request: Request) -> None:
    """Raise Forbidden if the request's ``Origin`` (when sent) is not this site."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    host = request.headers.get("host", "")
    if origin == "null" or urlsplit(origin).netloc != host:
        raise Forbidden("this form was sent from another site", "open keel's page and submit the form there")


class FormData:
    """The fields of a submitted form (``application/x-www-form-urlencoded``)."""

    def __init__(self, fields: Mapping[str, list[str]]) -> None:
        self._fields = dict(fields)

    def get(self, name: str, default: str = "") -> str:
        """The first value of field ``name`` (``default`` when absent)."""
        values = self._fields.get(name)
        return values[0] if values else default

    def getlist(self, name: str) -> list[str]:
        """Every value of field ``name`` (checkboxes, multi-selects)."""
        return list(self._fields.get(name, ()))

    def __contains__(self, name: object) -> bool:
        return name in self._fields


async def read_form(request: Request) -> FormData:
    """FastAPI dependency: the request's form fields (read once, at most :data:`MAX_FORM` bytes).

    The UI's forms are url-encoded (no file uploads), parsed here with the standard library.
    """
    cached: FormData | None = getattr(request.state, "ui_form", None)
    if cached is not None:
        return cached
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("", "application/x-www-form-urlencoded"):
        raise InvalidInput(f"cannot read a form sent as {kind!r}", "submit the page's own form")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise TooLarge(f"a form of more than {MAX_FORM} bytes", "send less text")
    form = FormData(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))
    request.state.ui_form = form
    return form


Form = Annotated[FormData, Depends(read_form)]


async def _check_csrf(request: Request, expected: str) -> None:
    check_origin(request)
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        sent = (await read_form(request)).get(CSRF_FIELD) or None
    if not sent or not hmac.compare_digest(sent, expected):
        raise Forbidden("this form has expired or did not come from this site", "reload the page and try again")


def _check_local_host(request: Request) -> None:
    host = request.headers.get("host", "")
    if not loopback_host(host):
        raise Forbidden(f"keel ui answers only on 127.0.0.1, not {host[:100]!r}", "open http://127.0.0.1:PORT/")


async def viewer(request: Request, context: Context) -> UIUser:
    """FastAPI dependency: the signed-in user (raise Unauthenticated, which the UI turns into a
    redirect to the sign-in page). On a state-changing request it also checks the CSRF token
    and the Origin (403 otherwise). The user is kept on ``request.state.ui_user`` for the layout."""
    settings = ui_settings(request)
    if settings.local:
        _check_local_host(request)
        user = UIUser(local_principal(), csrf_token_for(settings.local_secret), context, local=True)
    else:
        secret = request.cookies.get(SESSION_COOKIE)
        if not secret:
            raise Unauthenticated("sign in to use keel's web UI", "sign in with your user name and password")
        user = UIUser(context.auth.session_principal(secret), csrf_token_for(secret), context)
    request.state.ui_user = user
    if request.method not in _SAFE_METHODS:
        await _check_csrf(request, user.csrf_token)
    return user


Viewer = Annotated[UIUser, Depends(viewer)]
