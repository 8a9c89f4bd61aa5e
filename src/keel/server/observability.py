"""What an operator sees of each request: its id, one access-log line, its metrics, and
the traceback of every 5xx.

:func:`install_observability` (called by :func:`keel.server.app.create_app`) adds:

- :class:`RequestObserver`, the outermost middleware: it opens the request's
  :class:`~keel.server.request_context.RequestInfo` (its id: the client's safe
  ``X-Request-Id`` or a new one, sent back in ``X-Request-Id``), writes one access
  line when the response ends (logger ``keel.access``: method, path, route template,
  status, bytes, duration, user, client), counts the request in the Prometheus
  metrics, and answers an exception no handler took with the 500 of the one error
  shape after logging it (so nothing reaches uvicorn, which would log it again).
- Every exception handler of the app is wrapped: when it answers 5xx (a
  :class:`~keel.errors.StoreError`, an outage's 503, ...), the exception is logged
  once at ERROR with its traceback under the request id
  (:func:`~keel.server.request_context.report_failure`).
- ``GET /metrics``: the metrics in Prometheus' text format, for site admins
  (``Authorization: Bearer`` a site admin's token). ``--metrics-port`` serves the
  same on 127.0.0.1 without a token (:mod:`keel.server.supervision`).
"""

from __future__ import annotations

import inspect
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.server import metrics
from keel.server.auth import Caller, require_site_admin
from keel.server.errors import internal_error_response
from keel.server.request_context import (
    REQUEST_ID_HEADER,
    RequestInfo,
    close_request,
    open_request,
    report_failure,
    request_id_from,
)

__all__ = ["CLIENT_CLOSED", "METRICS_PATH", "RequestObserver", "install_observability", "route_template"]

METRICS_PATH = "/metrics"
CLIENT_CLOSED = 499  # the status logged and counted for a request its client abandoned (nginx's)
_PATH_CHARS = 512  # of the raw path in an access line
_CONVERTER = re.compile(r"\{(\w+):[^}]*\}")  # {path:path} -> {path}

access_log = logging.getLogger("keel.access")


def route_template(scope: Scope) -> str:
    """The template of the route that served ``scope`` (``/api/v1/runs/{run_id}``), or
    ``unmatched``: a bounded label, whatever paths clients send."""
    # FastAPI (0.130+) matches routers included with a prefix as nested routers: the matched
    # route's own template lacks the prefixes, and FastAPI keeps the full one in its context.
    context = (
        scope.get("fastapi", {}).get("effective_route_context") if isinstance(scope.get("fastapi"), dict) else None
    )
    full = getattr(context, "path", None)
    if isinstance(full, str) and full.startswith("/"):
        return _CONVERTER.sub(r"{\1}", full)
    route = scope.get("route")
    if route is None:
        root, base = str(scope.get("root_path", "")), str(scope.get("app_root_path", ""))
        if root.startswith(base) and len(root) > len(base):  # served by a mounted app (static files)
            return root[len(base) :] + "/{path}"
        return metrics.UNMATCHED
    template = getattr(route, "path_format", None)
    if not isinstance(template, str) or not template:
        return metrics.UNMATCHED
    regex = getattr(route, "path_regex", None)
    path = str(scope.get("path", ""))
    if regex is not None and not regex.match(path):  # the route matched what its routers' prefixes left
        for at in range(1, len(path)):
            if path[at] == "/" and regex.match(path[at:]):
                return path[:at] + template
    return template


def _raw_path(scope: Scope) -> str:
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else str(scope.get("path", ""))
    if not path.isprintable() or " " in path:
        path = path.encode("unicode_escape").decode("ascii").replace(" ", "%20")
    return path if len(path) <= _PATH_CHARS else path[:_PATH_CHARS] + "..."


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class RequestObserver:
    """The outermost middleware: request id, access log, metrics, and the last-resort 500."""

    def __init__(self, app: ASGIApp, pool: Any = None) -> None:
        self.app = app
        self.pool = pool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        info = RequestInfo(
            request_id_from(_header(scope, REQUEST_ID_HEADER.encode())),
            str(scope.get("method", "-")),
            _raw_path(scope),
        )
        token = open_request(info)
        id_header = (REQUEST_ID_HEADER.encode(), info.request_id.encode())
        status = 0
        received = sent = 0

        async def observed_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def observed_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = {**message, "headers": [*message.get("headers", ()), id_header]}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        metrics.IN_PROGRESS.inc()
        try:
            await self.app(scope, observed_receive, observed_send)
        except ClientDisconnect:
            status = status or CLIENT_CLOSED  # the client went away mid-request: not a server error
        except Exception as exc:  # noqa: BLE001 - no handler took it: log it once and answer 500
            report_failure(exc, 500)
            if status == 0:
                await internal_error_response()(scope, observed_receive, observed_send)
            else:
                status = status if status >= 500 else 500  # the response broke off: the client sees an error
        except BaseException:
            status = status or CLIENT_CLOSED  # cancelled (the server stops): no answer was sent
            raise
        finally:
            seconds = time.perf_counter() - start
            metrics.IN_PROGRESS.dec()
            route = route_template(scope)
            try:
                self._record(scope, info, route, status or 500, seconds, received, sent)
            finally:
                close_request(token)

    def _record(
        self, scope: Scope, info: RequestInfo, route: str, status: int, seconds: float, received: int, sent: int
    ) -> None:
        metrics.observe_request(route, info.method, status, seconds, received, sent)
        if self.pool is not None:
            metrics.observe_pool(self.pool)
        if not access_log.isEnabledFor(logging.INFO):
            return
        client = scope.get("client")
        address = str(client[0]) if client else "-"
        user = info.user.replace(" ", "_") or "-"
        millis = round(seconds * 1000, 2)
        access_log.info(
            '%s %s "%s %s" %d %dB %.2fms route=%s',
            address,
            user,
            info.method,
            info.path,
            status,
            sent,
            millis,
            route,
            extra={
                "request_id": info.request_id,
                "fields": {
                    "method": info.method,
                    "path": info.path,
                    "route": route,
                    "status": status,
                    "duration_ms": millis,
                    "bytes": sent,
                    "received_bytes": received,
                    "user": info.user,
                    "client": address,
                },
            },
        )


def _reporting(handler: Callable[..., Any]) -> Callable[..., Any]:
    """``handler`` (an exception handler) that also reports the exception when it answers 5xx."""
    if getattr(handler, "_keel_reporting", False):
        return handler
    is_async = inspect.iscoroutinefunction(handler)

    async def handle(request: Request, exc: Exception) -> Any:
        response = await handler(request, exc) if is_async else await run_in_threadpool(handler, request, exc)
        if getattr(response, "status_code", 0) >= 500:
            report_failure(exc, response.status_code)
        return response

    handle._keel_reporting = True  # type: ignore[attr-defined]
    return handle


def install_observability(app: FastAPI) -> None:
    """Add the observer, the 5xx reports and ``GET /metrics`` to ``app`` (call it last, once
    every exception handler is installed)."""
    for key, handler in list(app.exception_handlers.items()):
        app.exception_handlers[key] = _reporting(handler)
    context = getattr(app.state, "keel", None)
    pool = context.store.db.pool if context is not None else None
    app.add_middleware(RequestObserver, pool=pool)

    @app.get(METRICS_PATH, include_in_schema=False)
    def prometheus_metrics(caller: Caller) -> Response:
        require_site_admin(caller)
        if pool is not None:
            metrics.observe_pool(pool)
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)
