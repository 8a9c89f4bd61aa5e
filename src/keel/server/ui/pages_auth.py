"""Signing in and out of the web UI.

``POST /ui/login`` takes a user name and password (scrypt-checked) or an API token, and
starts a browser session (an HttpOnly cookie). Failed password attempts are counted in
the database per user name and per client address; past the limit the form answers 429
until the window passes (:class:`~keel.services.auth.LoginLimits`).
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from keel.errors import Forbidden, KeelError, Unauthenticated
from keel.server.auth import Context
from keel.server.ui.render import UI_PREFIX, render
from keel.server.ui.routing import UIRouter
from keel.server.ui.sessions import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Form,
    RateLimited,
    Viewer,
    check_origin,
    client_address,
    cookie_secure,
    ui_settings,
)

__all__ = ["router"]

router = UIRouter()

_TOKEN_USER = "@token"  # token sign-ins are counted under "@token ADDRESS" (and per address)


def _safe_next(target: str) -> str:
    """Only a path of this UI (never another site: no open redirect)."""
    if target.startswith(UI_PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return UI_PREFIX + "/"


def _login_page(request: Request, status: int = 200, error: str = "", user: str = "", next_url: str = "") -> Response:
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    headers = {"Retry-After": str(getattr(request.state, "retry_after", 60))} if status == 429 else None
    response = render(request, "login.html", status_code=status, headers=headers, title="Sign in", error=error,
                      user=user, next_url=_safe_next(next_url), login_token=token)  # fmt: skip
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, httponly=True, samesite="lax",
                        secure=cookie_secure(request), path=UI_PREFIX)  # fmt: skip
    return response


@router.get("/login")
def login_form(request: Request, next: str = "") -> Response:  # noqa: A002 - the query parameter's name
    """The sign-in form (``keel ui`` needs none: straight to the projects)."""
    if ui_settings(request).local:
        return RedirectResponse(UI_PREFIX + "/", status_code=303)
    return _login_page(request, next_url=next)


@router.post("/login")
def login(request: Request, form: Form, context: Context) -> Response:
    """Check the credentials, start a session, and go on to ``next``."""
    settings = ui_settings(request)
    if settings.local:
        return RedirectResponse(UI_PREFIX + "/", status_code=303)
    check_origin(request)
    sent, expected = form.get("login_token"), request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(sent, expected):
        raise Forbidden("the sign-in form has expired", "reload the sign-in page and try again")
    name, password, token = form.get("user").strip(), form.get("password"), form.get("token").strip()
    next_url = form.get("next")
    address = client_address(request)
    limit_key = name if not token else f"{_TOKEN_USER} {address}"
    try:
        wait = context.auth.login_retry_after(limit_key, address, settings.limits)
        if wait:
            raise RateLimited(
                "too many failed sign-in attempts", f"wait {wait} s before trying again", retry_after=wait
            )
        if token:
            user = context.auth.authenticate(token).user
        elif name and password:
            user = context.auth.check_password(name, password)
        else:
            raise Unauthenticated("give a user name and password, or an API token", "fill in the form")
    except RateLimited as exc:
        request.state.retry_after = exc.retry_after
        return _login_page(request, 429, f"{exc.message}: {exc.hint}", name, next_url)
    except KeelError as exc:
        if isinstance(exc, Unauthenticated) and (token or (name and password)):
            context.auth.record_login(limit_key, address, False)
        return _login_page(request, exc.http_status, exc.message, name, next_url)
    context.auth.record_login(user.name if not token else limit_key, address, True)
    secret = context.auth.create_session(user.name, "token" if token else "password", settings.session_ttl_s)
    response = RedirectResponse(_safe_next(next_url), status_code=303)
    response.set_cookie(SESSION_COOKIE, secret, max_age=settings.session_ttl_s, httponly=True, samesite="lax",
                        secure=cookie_secure(request), path="/")  # fmt: skip
    response.delete_cookie(LOGIN_COOKIE, path=UI_PREFIX)
    return response


@router.post("/logout")
def logout(request: Request, viewer: Viewer, context: Context) -> Response:
    """End the session (the form carries the CSRF token) and return to the sign-in page."""
    response = RedirectResponse(UI_PREFIX + "/login", status_code=303)
    secret = request.cookies.get(SESSION_COOKIE)
    if secret and not viewer.local:
        context.auth.end_session(secret)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/whoami")
def whoami(request: Request, viewer: Viewer) -> HTMLResponse:
    """The signed-in user and their roles."""
    grants = sorted(viewer.principal.grants.items())
    return render(request, "whoami.html", title="Account", grants=grants)
