"""An ASGI app (a keel server) in process, as a transport for the sync :class:`~keel.transport.HttpClient`.

httpx's :class:`httpx.ASGITransport` calls an ASGI app without a socket, but only
from an async client. :class:`ASGIAppTransport` runs it on an event loop in a
helper thread (an anyio blocking portal) and hands each request of a sync client
to it, so keel's own client code meets the real server app in tests::

    from keel.server import create_app
    from keel.transport import HttpClient
    from keel.transport.asgi import ASGIAppTransport

    with ASGIAppTransport(create_app("sqlite:///keel.db")) as app:
        client = HttpClient("http://testserver", token, transport=app)
        client.call("GET", "/api/v1/auth/whoami")

Request bodies stream into the app chunk by chunk; a reply is collected whole
before it is returned (that is how :class:`httpx.ASGITransport` works), so this
is for tests, not for moving large objects. The app's lifespan events are not
sent. Thread-safe: requests from several threads run concurrently on the loop,
and several clients may share one transport (closing a client leaves it
running; leaving the ``with`` block, or :meth:`~ASGIAppTransport.shutdown`,
stops it).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx

__all__ = ["ASGIAppTransport"]


class _AsyncBody(httpx.AsyncByteStream):
    """A sync request body, read chunk by chunk on the app's loop."""

    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._stream:
            yield chunk


class ASGIAppTransport(httpx.BaseTransport):
    """A sync httpx transport that sends every request to ``app`` (an ASGI app) in process.

    Args:
        app: the ASGI application (e.g. ``keel.server.create_app(...)``).
        client: the ``(host, port)`` the app sees as the caller's address.
    """

    def __init__(self, app: Any, *, client: tuple[str, int] = ("127.0.0.1", 50000)) -> None:
        import anyio.from_thread

        self._inner = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=client)
        self._stack = contextlib.ExitStack()
        self._portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal())

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        stream: Iterable[bytes] = request.stream  # type: ignore[assignment]
        forwarded = httpx.Request(
            request.method, request.url, headers=request.headers, stream=_AsyncBody(stream), extensions={}
        )

        async def send() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
            response = await self._inner.handle_async_request(forwarded)
            try:
                body = await response.aread()
            finally:
                await response.aclose()
            return response.status_code, response.headers.raw, body

        status, headers, body = self._portal.call(send)
        return httpx.Response(status, headers=headers, content=body, request=request)

    def close(self) -> None:
        """Nothing: a client closing its transport leaves the app running for the others
        (:meth:`shutdown` stops it)."""

    def shutdown(self) -> None:
        """Stop the helper thread's event loop."""
        self._stack.close()

    def __enter__(self) -> ASGIAppTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
