"""ASGI middleware of the team server: response timing and the JSON body limit.

- :class:`ServerTiming` stamps every response with ``Server-Timing: app;dur=MS``,
  the time from the request's arrival to the response's first byte, so a
  client (a benchmark, a browser's dev tools) can tell server time from
  network time.
- :class:`BodyLimit` caps the bodies a handler reads whole: 413 (the one error
  shape) past ``max_json`` bytes, by ``Content-Length`` before a byte is read,
  or while a chunked body arrives. It applies to every route whose body FastAPI
  parses (a pydantic model or a form), and to routes that read the raw request
  when the body is JSON or a form (the batch endpoint, MLflow's API). Binary
  bodies sent to raw routes (artifact and object uploads) pass: those handlers
  stream to disk and enforce ``--max-upload`` themselves. A route declared with
  FastAPI's own ``max_body_size`` is left to that limit.
"""

from __future__ import annotations

import time

from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DEFAULT_MAX_JSON", "BodyLimit", "ServerTiming"]

DEFAULT_MAX_JSON = 64 << 20  # bytes in one JSON or form body; a 100,000-metric batch is about 7 MB
_STREAMED_PREFIXES = ("/api/2.0/mlflow-artifacts/",)  # MLflow's client sends .json artifacts as application/json
_READ_WHOLE = ("application/json", "application/x-www-form-urlencoded")


class ServerTiming:
    """Add ``Server-Timing: app;dur=MS`` (milliseconds to the response's start) to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                took = (time.perf_counter() - start) * 1000
                headers = [*message.get("headers", ()), (b"server-timing", f"app;dur={took:.2f}".encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed_send)


def _read_whole(scope: Scope, headers: Headers) -> bool:
    """Whether the routed handler of ``scope`` reads its body whole (so the JSON limit applies)."""
    if scope.get("path", "").startswith(_STREAMED_PREFIXES):
        return False  # uploads streamed to a spool file, whatever their media type (their own cap applies)
    route = scope.get("route")
    if isinstance(route, APIRoute):
        if getattr(route, "max_body_size", None) is not None:  # recent FastAPI: per-route limits
            return False  # FastAPI enforces the route's own limit
        if route.body_field is not None:
            return True
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media in _READ_WHOLE or (media.startswith("application/") and media.endswith("+json"))


class BodyLimit:
    """Refuse (413) bodies over ``max_json`` bytes that a handler would read whole (see the module doc)."""

    def __init__(self, app: ASGIApp, max_json: int = DEFAULT_MAX_JSON) -> None:
        self.app = app
        self.max_json = max_json

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_json
        checked = limited = False
        size = 0

        async def limited_receive() -> Message:
            nonlocal checked, limited, size
            if not checked:  # the handler's first read: routing is done, the route is known
                checked = True
                headers = Headers(scope=scope)
                limited = _read_whole(scope, headers)
                declared = headers.get("content-length", "")
                if limited and declared.isdigit() and int(declared) > limit:
                    raise _too_large(limit)
            message = await receive()
            if limited and message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    raise _too_large(limit)
            return message

        await self.app(scope, limited_receive, send)


def _too_large(limit: int) -> HTTPException:
    # An HTTPException, not a KeelError: FastAPI turns other errors raised while it reads a body into 400.
    return HTTPException(413, f"the request body is over the server's limit of {limit:,} bytes")
