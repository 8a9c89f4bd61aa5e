"""The UI's router: HTML error pages instead of the API's JSON, and sign-in redirects.

A page module creates ``router = UIRouter()`` and decorates its handlers; every
:class:`~keel.errors.KeelError` a handler raises becomes an HTML page with the error's
status (404 for a project the user has no role in, 403 for a role too low, 400 for a bad
filter...), and :class:`~keel.errors.Unauthenticated` becomes a redirect to the sign-in page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlencode

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute, APIRouter

from keel.errors import KeelError, Unauthenticated
from keel.server.request_context import current_request_id, report_failure
from keel.server.ui.render import UI_PREFIX, render
from keel.server.ui.sessions import SESSION_COOKIE, RateLimited

__all__ = ["UIRoute", "UIRouter", "error_page", "login_redirect"]

log = logging.getLogger("keel.server.ui")


def error_page(request: Request, status: int, message: str, hint: str | None = None) -> HTMLResponse:
    """The HTML page for a failure (status, message, what to do next)."""
    headers = {"Retry-After": str(getattr(request.state, "retry_after", 60))} if status == 429 else None
    request_id = current_request_id()
    if status >= 500 and request_id:
        message = f"{message} (request id {request_id})"
    return render(request, "error.html", status_code=status, headers=headers, title=f"{status}", status=status,
                  message=message, hint=hint)  # fmt: skip


def login_redirect(request: Request) -> RedirectResponse:
    """303 to the sign-in page, coming back to this page (GET) afterwards."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        target = UI_PREFIX + "/"
    response = RedirectResponse(f"{UI_PREFIX}/login?{urlencode({'next': target})}", status_code=303)
    if SESSION_COOKIE in request.cookies:
        response.delete_cookie(SESSION_COOKIE, path="/")
    return response


class UIRoute(APIRoute):
    """A route whose failures are HTML pages (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Unauthenticated:
                return login_redirect(request)
            except RateLimited as exc:
                request.state.retry_after = exc.retry_after
                return error_page(request, exc.http_status, exc.message, exc.hint)
            except KeelError as exc:
                if exc.http_status >= 500:
                    report_failure(exc, exc.http_status)
                return error_page(request, exc.http_status, exc.message, exc.hint)
            except RequestValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}"
                    for err in exc.errors()[:3]
                )
                return error_page(request, 400, f"invalid request: {problems}", "check the address or the form")

        return route


class UIRouter(APIRouter):
    """The router of a UI page module: HTML responses, kept out of the API's OpenAPI document."""

    def __init__(self) -> None:
        super().__init__(route_class=UIRoute, include_in_schema=False, default_response_class=HTMLResponse)
