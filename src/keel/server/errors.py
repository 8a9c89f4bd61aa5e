"""One JSON error shape for every failure: ``{"error": {"code", "message", "hint", "details"}}``.

A :class:`~keel.errors.KeelError` keeps its ``code`` and ``http_status``, and
``details`` carries its fields (:meth:`~keel.errors.KeelError.to_dict`), so the
client rebuilds the same error (:func:`~keel.errors.error_from_dict`); unknown
routes (404), wrong methods (405), request validation (422) and unexpected
failures (500) are rendered in the same shape, so a client needs one parser.

A 503 (:class:`~keel.errors.Unavailable`: the database or the object store is away)
and a 429 carry ``Retry-After`` (the error's ``retry_after`` seconds). A database
driver error that no service caught is answered by what it stands for
(:func:`keel.services.health.known_error`: 503 for an outage, 409 for a constraint
race), never 500 with its text: driver messages can name the database.

Inside a request, ``details.request_id`` holds the request's id (the ``X-Request-Id``
the response carries), and a 5xx names it in its message too, so what a client shows
leads to the server's log lines of that request (:mod:`keel.server.observability`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from keel.errors import KeelError
from keel.server.request_context import current_request_id, report_failure
from keel.services.health import DRIVER_ERRORS, known_error

__all__ = ["KeelJSONResponse", "error_response", "install_error_handlers", "internal_error_response"]

log = logging.getLogger("keel.server")

_HTTP_CODES = {
    400: ("bad_request", "check the request body and parameters"),
    401: ("unauthenticated", "pass a valid token: Authorization: Bearer keel_..."),
    403: ("forbidden", "ask a project admin for a role"),
    404: ("not_found", "see the API reference at /api/v1/docs"),
    405: ("method_not_allowed", "see the API reference at /api/v1/docs"),
    413: ("too_large", "send less data per request (split a batch), or raise the server's --max-json"),
}


class KeelJSONResponse(JSONResponse):
    """JSON that keeps NaN and +/-Infinity (metrics may hold them; Python's json reads them)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=True, separators=(",", ":")).encode()


def error_response(
    status: int, code: str, message: str, hint: str | None = None, details: dict[str, Any] | None = None
) -> JSONResponse:
    """The error body every failure uses (``details``: the error's fields, and the
    ``request_id`` inside a request; a 5xx's message names the request id)."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    details = dict(details or {})
    request_id = current_request_id()
    if request_id is not None:
        details.setdefault("request_id", request_id)
        if status >= 500:
            message = f"{message} (request id {request_id})"
    body = {"error": {"code": code, "message": message, "hint": hint, "details": details}}
    return KeelJSONResponse(body, status_code=status, headers=headers)


def _keel_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KeelError)
    error = exc.to_dict()
    response = error_response(exc.http_status, exc.code, exc.message, exc.hint, error["details"])
    retry_after = getattr(exc, "retry_after", None)
    if exc.http_status in (429, 503) and isinstance(retry_after, int) and not isinstance(retry_after, bool):
        response.headers["Retry-After"] = str(max(1, retry_after))  # an outage's 503, a rate limit's 429
    return response


def _database_error(request: Request, exc: Exception) -> JSONResponse:
    # A driver error no service turned into a KeelError: an outage is 503 (Retry-After), a
    # constraint race 409; anything else is a bug, answered 500 with no detail.
    found = known_error(exc)
    if found is None:
        return internal_error_response()
    return _keel_error(request, found)


def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code, hint = _HTTP_CODES.get(exc.status_code, ("http_error", None))
    message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    response = error_response(exc.status_code, code, message, hint)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors()[:5]:
        where = ".".join(str(part) for part in err.get("loc", ()))
        problems.append(f"{where}: {err.get('msg', 'invalid')}")
    message = "invalid request: " + "; ".join(problems)
    return error_response(422, "invalid_request", message, "see the request schema at /api/v1/openapi.json")


def internal_error_response() -> JSONResponse:
    """The 500 of an unexpected failure: no details of the failure, only where to look."""
    return error_response(500, "internal", "internal server error", "the server log has the details")


def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    # The last resort: RequestObserver answers (and logs) every exception raised inside it.
    report_failure(exc, 500)
    return internal_error_response()


def install_error_handlers(app: FastAPI) -> None:
    """Render every error of ``app`` in the one shape."""
    app.add_exception_handler(KeelError, _keel_error)
    for driver_error in DRIVER_ERRORS:
        app.add_exception_handler(driver_error, _database_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
