"""The request being answered: its id, its caller, and the one report of its failure.

:class:`keel.server.observability.RequestObserver` opens a :class:`RequestInfo` for
every HTTP request and keeps it in a ``ContextVar`` while the request runs. The
value is copied into the worker threads the request hops to (Starlette's thread
pool copies the context), and it is a mutable object, so what a thread learns
(the authenticated user) is seen by the middleware when it writes the access log.

- The request id is the client's ``X-Request-Id`` when that is a short safe token
  (:data:`REQUEST_ID_PATTERN`), else 16 random hex digits. It is sent back in the
  ``X-Request-Id`` header, put in every error body (``details.request_id``, and in
  the message of a 5xx), and stamped on every log line written while the request
  runs (:class:`keel.server.logs.RequestIdFilter`).
- :func:`report_failure` logs a 5xx once, at ERROR, with the exception's type,
  message and traceback, under the request id.
"""

from __future__ import annotations

import logging
import re
import secrets
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = [
    "REQUEST_ID_HEADER",
    "REQUEST_ID_PATTERN",
    "RequestInfo",
    "close_request",
    "current_request",
    "current_request_id",
    "note_user",
    "open_request",
    "report_failure",
    "request_id_from",
]

REQUEST_ID_HEADER = "x-request-id"
#: An incoming ``X-Request-Id`` is kept when it matches this (a load balancer's or a client's
#: id: UUIDs, hex, base32/64url); anything else is replaced, so a log line cannot be forged.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEADLINE = 1000  # characters of an exception's message in the ERROR line (the traceback has it all)

log = logging.getLogger("keel.server")


@dataclass
class RequestInfo:
    """What the observer knows about the request in flight."""

    request_id: str
    method: str = "-"
    path: str = "-"
    user: str = "-"
    failure_logged: bool = False


_current: ContextVar[RequestInfo | None] = ContextVar("keel_request", default=None)


def request_id_from(header: str | None) -> str:
    """The id of a request that sent ``X-Request-Id: header`` (kept if safe, else a new one)."""
    if header and REQUEST_ID_PATTERN.fullmatch(header):
        return header
    return secrets.token_hex(8)


def current_request() -> RequestInfo | None:
    """The request this code runs for (None outside a request)."""
    return _current.get()


def current_request_id() -> str | None:
    """The id of the request this code runs for (None outside a request)."""
    info = _current.get()
    return None if info is None else info.request_id


def open_request(info: RequestInfo) -> object:
    """Make ``info`` the current request; returns the token :func:`close_request` takes."""
    return _current.set(info)


def close_request(token: object) -> None:
    """End the request :func:`open_request` started."""
    _current.reset(token)  # type: ignore[arg-type]


def note_user(name: str) -> None:
    """Record the authenticated caller of the current request (for the access log)."""
    info = _current.get()
    if info is not None:
        info.user = name


def report_failure(exc: BaseException, status: int = 500) -> None:
    """Log the failure behind a 5xx answer: once per request, at ERROR with the traceback
    (a 503 for a dependency outage: at WARNING, without one).

    The line names the request id (the one the client's error message shows), the method
    and path, the status, and the exception's type and message. The message is logged as
    the exception says it: an error that names a URL (a database or object-store error)
    carries that URL into this line.
    """
    info = _current.get()
    if info is not None:
        if info.failure_logged:
            return
        info.failure_logged = True
    request_id, method, path = (info.request_id, info.method, info.path) if info else ("-", "-", "-")
    text = str(exc)
    if len(text) > _HEADLINE:
        text = text[:_HEADLINE] + "..."
    # A dependency outage (503) is expected operations, not a bug: one WARNING line per
    # request, no traceback; everything else is an ERROR with its traceback.
    outage = status == 503 and getattr(exc, "code", "") == "unavailable"
    log.log(
        logging.WARNING if outage else logging.ERROR,
        "request %s: %s %s answered %d: %s: %s",
        request_id,
        method,
        path,
        status,
        type(exc).__name__,
        text,
        exc_info=None if outage else (type(exc), exc, exc.__traceback__),
        extra={"request_id": request_id, "fields": {"status": status, "exc_type": type(exc).__name__}},
    )
