"""The one HTTP client keel uses to talk to a keel server, on httpx.

:class:`HttpClient` holds one :class:`httpx.Client` (a thread-safe keep-alive
connection pool) for one server, and adds what every caller needs:

- **Timeouts**: ``connect_timeout`` (10 s) to open a connection, ``timeout``
  (60 s) for each wait on the server (reading the next bytes of a reply,
  sending the next bytes of a body). A server that never answers is a
  :class:`~keel.errors.StoreError` after ``timeout`` seconds, not a hang.
- **Retries** with exponential backoff and jitter, for calls that are safe to
  repeat: GET, HEAD, PUT, DELETE and OPTIONS, and a POST or PATCH the caller
  marks ``idempotent=True``. They are retried when the connection fails or
  breaks before a reply, and on 502, 503 and 504 and on 429 (waiting what its
  ``Retry-After`` says, when that is at most :data:`MAX_RETRY_AFTER` seconds).
  Any call, whatever its method, is retried when the connection could not be
  opened at all (refused, or no connection in time): the request never left,
  so sending it again cannot do anything twice. A body that cannot be sent
  again (an iterator) is never retried.
- **Proxies and TLS as the user configured them**: ``HTTP_PROXY``,
  ``HTTPS_PROXY``, ``ALL_PROXY`` and ``NO_PROXY`` are honoured (httpx's
  ``trust_env``), and so are ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``. A private CA
  is trusted with ``KEEL_CA_BUNDLE=/path/ca.pem`` (a file or a folder of
  certificates) or ``verify=`` (a path or an :class:`ssl.SSLContext`).
  Certificates are always verified: there is no switch to turn that off.
- **Streaming bodies**: a file is sent as it is read, in chunks, with its
  ``Content-Length``; an iterable of chunks is sent chunked; replies are read
  on demand (:meth:`HttpResponse.iter_chunks`), so a large object never sits
  whole in memory.
- **One error shape**: the server's ``{"error": {"code", "message", "hint"}}``
  becomes the :class:`~keel.errors.KeelError` it names, fields and all
  (:func:`error_from_reply`);
  any other failing reply, and a server that cannot be reached, is a one-line
  error that says what to do.

The token is sent as ``Authorization: Bearer`` to the server's own URL only
(never to a URL the server redirected to, see :meth:`HttpClient.open_url`), is
never logged, and the ``repr`` hides it. Cookies are neither kept nor sent.

**The transport seam.** ``transport=`` takes any :class:`httpx.BaseTransport`
instead of the network. httpx's own ``ASGITransport`` is async-only, so
:class:`keel.transport.asgi.ASGIAppTransport` runs it on an event loop in a
helper thread, and a keel server app is then driven in process by this very
client (Starlette's ``TestClient`` transport does not fit: it is built on a
different httpx package in current Starlette)::

    from keel.server import create_app
    from keel.transport.asgi import ASGIAppTransport

    with ASGIAppTransport(create_app("sqlite:///keel.db")) as app:
        client = HttpClient("http://testserver", token, transport=app)
        client.call("GET", "/api/v1/auth/whoami")

(:class:`httpx.MockTransport` and ``httpx.WSGITransport`` work the same way.)
With a transport given, proxies from the environment do not apply.
"""

from __future__ import annotations

import email.utils
import http.cookiejar
import json
import logging
import os
import random
import re
import ssl
import time
import urllib.request
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode, urlsplit

import httpx

from keel._version import __version__
from keel.core.urls import mask_url, mask_urls_in
from keel.errors import (
    Forbidden,
    InvalidInput,
    KeelError,
    NotFound,
    StoreError,
    TooLarge,
    Unauthenticated,
    error_from_dict,
)
from keel.transport.credentials import normalize_base_url

__all__ = [
    "CHUNK",
    "ENV_CA_BUNDLE",
    "IDEMPOTENT_METHODS",
    "MAX_RETRY_AFTER",
    "RETRY_STATUSES",
    "HttpClient",
    "HttpResponse",
    "error_from_reply",
]

ENV_CA_BUNDLE = "KEEL_CA_BUNDLE"
CHUNK = 1 << 20  # bytes per piece when streaming a body
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER = 30.0  # seconds: a longer Retry-After is reported, not waited for
_ERROR_BODY_LIMIT = 1 << 16  # bytes of an error reply read to find the message
_STATUS_ERRORS: dict[int, type[KeelError]] = {
    400: InvalidInput,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    413: TooLarge,
}
_STATUS_HINTS = {
    401: "log in ('keel login URL') or set KEEL_TOKEN",
    403: "ask an admin for a role",
    413: "send less data per request",
    429: "the server is busy; retry later",
    502: "the server (or a proxy in front of it) is unavailable; retry later",
    503: "the server (or a proxy in front of it) is unavailable; retry later",
    504: "the server (or a proxy in front of it) did not answer in time; retry later",
}
_UNREACHABLE_HINT = "check KEEL_URI (or the remote's URL) and that the server is running"
_PROXY_HINT = "check HTTP_PROXY, HTTPS_PROXY and NO_PROXY (set NO_PROXY=host to reach it directly)"
_TLS_HINT = "if the server uses a private CA, set KEEL_CA_BUNDLE (or SSL_CERT_FILE) to its certificate bundle"
# Transport failures after which the server may have seen the request (retried for idempotent calls only).
_BROKEN = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
# Transport failures before the request left: safe to retry whatever the method.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


# -- errors ------------------------------------------------------------------------------------
def error_from_reply(status: int, reason: str, body: bytes, what: str) -> KeelError:
    """The error a failing reply stands for: the one place where a reply becomes an exception.

    The server's error object (``{"error": {"code", "message", "hint", "details"}}``)
    becomes the :class:`~keel.errors.KeelError` it names, with its fields
    (:func:`keel.errors.error_from_dict`); a reply without one is mapped from its
    status, as a one-line message.

    Args:
        status: the HTTP status (>= 400).
        reason: its reason phrase.
        body: the start of the reply's body.
        what: ``"METHOD url"``, for the message when the body is not keel's error shape.
    """
    try:
        error = json.loads(body).get("error") if body else None
    except (ValueError, AttributeError, UnicodeDecodeError):
        error = None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return error_from_dict(error)
    cls = _STATUS_ERRORS.get(status)
    if cls is not None:
        return cls(f"{what}: HTTP {status} {reason}".rstrip(), _STATUS_HINTS.get(status, "check the request"))
    snippet = mask_urls_in(" ".join(body[:200].decode("utf-8", "replace").split()))  # one line, whatever it was
    return StoreError(
        f"{what} failed: HTTP {status} {reason}".rstrip() + (f": {snippet}" if snippet else ""),
        _STATUS_HINTS.get(status, "is this URL a keel server? check KEEL_URI or the remote's URL"),
    )


def _where(url: str) -> str:
    """``url`` without its query string (a presigned URL's signature stays out of messages)
    and with any password masked (:func:`keel.core.urls.mask_url`)."""
    parts = urlsplit(url)
    return mask_url(f"{parts.scheme}://{parts.netloc}{parts.path}")


def _reason(exc: BaseException) -> str:
    return mask_urls_in(" ".join((str(exc) or type(exc).__name__).split()))


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    for _ in range(8):  # the ssl error is a few causes down
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _env_proxy(url: str) -> str | None:
    """The proxy the environment sets for ``url`` (without any credentials in it), if any."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    host = proxy_parts.hostname or ""
    return f"{proxy_parts.scheme}://{host}" + (f":{proxy_parts.port}" if proxy_parts.port else "")


# -- TLS ---------------------------------------------------------------------------------------
def _verify(verify: str | os.PathLike[str] | ssl.SSLContext | None) -> ssl.SSLContext | bool:
    """What httpx should verify certificates with: ``verify``, else ``KEEL_CA_BUNDLE``, else
    True (certifi's bundle, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``)."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    source = "verify="
    if verify is None:
        verify = os.environ.get(ENV_CA_BUNDLE) or None
        source = ENV_CA_BUNDLE
    if verify is None:
        return True
    path = Path(verify).expanduser()
    try:
        if path.is_dir():
            return ssl.create_default_context(capath=str(path))
        return ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(
            f"cannot load the CA certificates in {path} ({source}): {_reason(exc)}",
            "point it at a PEM file or a folder of certificates",
        ) from None


# -- bodies ------------------------------------------------------------------------------------
def _body_length(body: Any) -> int | None:
    """The byte length left in a file body, if it can be known without reading it."""
    try:
        return max(0, os.fstat(body.fileno()).st_size - body.tell())
    except (AttributeError, OSError, ValueError):
        pass
    try:
        here = body.tell()
        end = body.seek(0, os.SEEK_END)
        body.seek(here)
        return max(0, int(end - here))
    except (AttributeError, OSError, ValueError):
        return None


def _file_chunks(fh: BinaryIO) -> Iterator[bytes]:
    while chunk := fh.read(CHUNK):
        yield chunk


class _Body:
    """A request body as httpx takes it, and whether (and how) it can be sent again."""

    def __init__(self, body: bytes | bytearray | memoryview | BinaryIO | Iterable[bytes] | None) -> None:
        self.length: int | None = None
        self._file: BinaryIO | None = None
        self._start = 0
        self._content: bytes | Iterable[bytes] | None = None
        self.replayable = True
        if body is None:
            return
        if isinstance(body, bytes | bytearray | memoryview):
            self._content = bytes(body)
        elif hasattr(body, "read"):
            fh: Any = body
            self._file = fh
            self.length = _body_length(fh)
            try:
                self._start = fh.tell()
                self.replayable = bool(fh.seekable())
            except (AttributeError, OSError, ValueError):
                self.replayable = False
        else:
            self._content = body
            self.replayable = False  # an iterator is used up by the first attempt

    def content(self) -> bytes | Iterable[bytes] | None:
        """The body for one attempt (a file is rewound to where it started)."""
        if self._file is None:
            return self._content
        if self.replayable:
            self._file.seek(self._start)
        return _file_chunks(self._file)


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _drain(raw: httpx.Response, limit: int = _ERROR_BODY_LIMIT) -> bytes:
    """The first ``limit`` bytes of a reply's body; the reply is closed (its connection is
    reused when the whole body was read)."""
    data = bytearray()
    try:
        if raw.request.method != "HEAD":
            for chunk in raw.iter_bytes():
                data += chunk
                if len(data) >= limit:
                    break
    except (httpx.HTTPError, httpx.StreamError):
        pass
    finally:
        raw.close()
    return bytes(data[:limit])


# -- responses ---------------------------------------------------------------------------------
class HttpResponse:
    """A reply whose body is read on demand (``read``, ``iter_chunks``, ``json``).

    Close it (or use it as a context manager, or read it to the end) when done: an
    open reply holds its connection, and a body given up unread closes it instead
    of returning it to the pool.

    Attributes:
        status: the HTTP status.
        reason: its reason phrase.
        headers: the reply's headers (case-insensitive: ``headers.get("location")``).
        url: the URL that was asked (for messages).
    """

    def __init__(self, raw: httpx.Response, url: str) -> None:
        self._raw = raw
        self.url = url
        self.status: int = raw.status_code
        self.reason: str = raw.reason_phrase
        self.headers = raw.headers

    def _broke(self, exc: BaseException) -> StoreError:
        return StoreError(f"the reply from {_where(self.url)} broke off: {_reason(exc)}", "retry; check the network")

    def read(self) -> bytes:
        """The whole remaining body (for small replies; stream big ones with :meth:`iter_chunks`)."""
        try:
            return self._raw.read()
        except (httpx.HTTPError, httpx.StreamError) as exc:
            raise self._broke(exc) from None
        finally:
            self._raw.close()

    def iter_chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The body in pieces of at most ``size`` bytes, as they arrive."""
        try:
            yield from self._raw.iter_bytes(size)
        except (httpx.HTTPError, httpx.StreamError) as exc:
            raise self._broke(exc) from None
        finally:
            self._raw.close()

    def json(self) -> Any:
        """The body parsed as JSON (NaN and infinities included); None for an empty body."""
        data = self.read()
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            raise StoreError(f"{_where(self.url)} answered with invalid JSON", "is this URL a keel server?") from None

    @property
    def closed(self) -> bool:
        """True once the body is read to the end or the reply is closed."""
        return self._raw.is_closed

    def close(self) -> None:
        """Release the reply (and its connection: back to the pool if the body was read)."""
        self._raw.close()

    def __enter__(self) -> HttpResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HttpResponse({self.status} {_where(self.url)})"


# -- the client --------------------------------------------------------------------------------
class HttpClient:
    """Keep-alive HTTP to one keel server, thread-safe, with a bearer token.

    Args:
        base_url: ``http://host:port`` or ``https://host`` (a path prefix is kept).
        token: the API token sent as ``Authorization: Bearer``; None sends none.
        timeout: seconds to wait for the next bytes of a reply (or to send the next
            bytes of a body).
        connect_timeout: seconds to wait for a connection.
        retries: how many times a retryable failure is tried again (0: never).
        backoff: the first retry's delay in seconds; it doubles each time (up to
            ``max_backoff``), with random jitter so clients do not retry in step.
        max_backoff: the longest delay between two attempts.
        verify: a CA bundle (file or folder) or an :class:`ssl.SSLContext` to verify the
            server's certificate with; default ``KEEL_CA_BUNDLE``, else the system's
            (``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, else certifi's).
        transport: an :class:`httpx.BaseTransport` to use instead of the network
            (in-process tests, see the module's docs).

    Example::

        with HttpClient("http://127.0.0.1:8000", token_for("http://127.0.0.1:8000")) as client:
            projects = client.call("GET", "/api/v1/projects")
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.25,
        max_backoff: float = 8.0,
        verify: str | os.PathLike[str] | ssl.SSLContext | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self._token = token
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._direct = transport is not None  # no environment proxies with a custom transport
        self._client = httpx.Client(
            verify=True if transport is not None else _verify(verify),
            trust_env=True,
            timeout=httpx.Timeout(timeout, connect=min(connect_timeout, timeout)),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32, keepalive_expiry=4.0),
            follow_redirects=False,
            headers={"User-Agent": f"keel/{__version__}", "Accept": "application/json"},
            cookies=http.cookiejar.CookieJar(policy=_RefuseCookies()),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"HttpClient({self.base_url!r}, token={'<hidden>' if self._token else None})"

    # -- URLs ------------------------------------------------------------------------------
    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        """The absolute URL of ``path`` on the server (with ``params`` as its query string;
        None values are left out, booleans are ``true``/``false``)."""
        url = self.base_url + (path if path.startswith("/") else "/" + path)
        if params:
            items = [(k, _param(v)) for k, v in params.items() if v is not None]
            if items:
                url += ("&" if "?" in url else "?") + urlencode(items)
        return url

    # -- requests --------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | BinaryIO | Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        idempotent: bool | None = None,
    ) -> HttpResponse:
        """Send one request to the server; the reply (2xx or 3xx: redirects are not
        followed) with its body unread.

        A file body is sent with its ``Content-Length`` as it is read; an iterable of
        chunks is sent chunked. ``idempotent`` (default: by the method) allows retries.
        Raises the server's error for a 4xx/5xx reply, and StoreError when the server
        cannot be reached.
        """
        method = method.upper()
        sent = dict(headers or {})
        if self._token:
            sent["Authorization"] = f"Bearer {self._token}"
        url = self.url(path, params)
        try:
            return self._send(method, url, body, sent, idempotent)
        except Unauthenticated as exc:
            if self._token:
                raise
            raise Unauthenticated(exc.message, f"run 'keel login {self.base_url}' or set KEEL_TOKEN") from None

    def call(
        self,
        method: str,
        path: str,
        payload: Any = None,
        params: dict[str, Any] | None = None,
        *,
        idempotent: bool | None = None,
    ) -> Any:
        """Send ``payload`` as JSON (NaN and infinities kept) and return the reply's JSON."""
        body = None
        headers = {}
        if payload is not None:
            body = json.dumps(payload, allow_nan=True, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        response = self.request(method, path, body=body, headers=headers, params=params, idempotent=idempotent)
        return response.json()

    def open_url(self, url: str, *, retries: int | None = None) -> HttpResponse:
        """GET an absolute URL somewhere else (a presigned S3 URL carries its own
        signature) with no keel token; the 2xx reply with its body unread.

        Raises NotFound for a 404 and StoreError for anything else but a 2xx; the
        messages leave out the URL's query string.
        """
        where = _where(url)
        try:
            response = self._send("GET", url, None, {"Accept": "*/*"}, True, retries=retries)
        except KeelError as exc:
            if isinstance(exc, NotFound):
                raise NotFound(f"{where} not found", "check the id, or push the object") from None
            raise StoreError(f"cannot download from {where}: {exc.message}", "check the network; retry") from None
        if not 200 <= response.status < 300:
            response.close()
            raise StoreError(
                f"download from {where} failed: HTTP {response.status} {response.reason}", "retry; check the server"
            )
        return response

    def _send(
        self,
        method: str,
        url: str,
        body: bytes | BinaryIO | Iterable[bytes] | None,
        headers: dict[str, str],
        idempotent: bool | None,
        *,
        retries: int | None = None,
    ) -> HttpResponse:
        safe = idempotent if idempotent is not None else method in IDEMPOTENT_METHODS
        payload = _Body(body)
        if payload.length is not None:
            headers["Content-Length"] = str(payload.length)
        allowed = (self.retries if retries is None else retries) if payload.replayable else 0
        attempt = 0
        while True:
            request = self._client.build_request(method, url, content=payload.content(), headers=headers)
            try:
                raw = self._client.send(request, stream=True)
            except httpx.TransportError as exc:
                retryable = isinstance(exc, _NOT_SENT) or (safe and isinstance(exc, _BROKEN))
                if retryable and attempt < allowed:
                    attempt += 1
                    time.sleep(self._delay(attempt))
                    continue
                raise self._unreachable(url, exc) from None
            if raw.status_code in RETRY_STATUSES and safe and attempt < allowed:
                asked = _retry_after(raw.headers.get("Retry-After"))
                if asked is None or asked <= MAX_RETRY_AFTER:  # a longer wait is reported, not waited for
                    wait = self._delay(attempt + 1) if asked is None else asked + random.uniform(0, 0.1)
                    _drain(raw)
                    attempt += 1
                    time.sleep(wait)
                    continue
            if raw.status_code >= 400:
                what = f"{method} {_where(url)}"
                raise error_from_reply(raw.status_code, raw.reason_phrase, _drain(raw), what)
            return HttpResponse(raw, url)

    def _delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1, 2, ...)."""
        ceiling = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # "equal jitter": never 0, never in step

    def _unreachable(self, url: str, exc: httpx.TransportError) -> StoreError:
        where = _where(url)
        proxy = None if self._direct else _env_proxy(url)
        tls = _tls_failure(exc)
        if isinstance(exc, httpx.ProxyError) or (proxy and isinstance(exc, _NOT_SENT)):
            via = f" through the proxy {proxy}" if proxy else " through its proxy"
            return StoreError(f"cannot reach {where}{via}: {_reason(exc)}", _PROXY_HINT)
        if tls is not None:
            return StoreError(f"TLS with {where} failed: {_reason(tls)}", _TLS_HINT)
        if isinstance(exc, httpx.ConnectTimeout):
            return StoreError(f"cannot reach the keel server at {where}: no connection in time", _UNREACHABLE_HINT)
        if isinstance(exc, httpx.TimeoutException):
            return StoreError(
                f"the keel server at {where} sent no answer in time ({self.timeout:g} s)",
                "the server may be overloaded; retry later",
            )
        if isinstance(exc, _NOT_SENT):
            return StoreError(f"cannot reach the keel server at {where}: {_reason(exc)}", _UNREACHABLE_HINT)
        return StoreError(f"the connection to {where} broke: {_reason(exc)}", "retry; check the network")

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        """Close every pooled connection."""
        self._client.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _RefuseCookies(http.cookiejar.DefaultCookiePolicy):
    """API calls carry a token; a cookie a reply sets is never kept or sent."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


class _HideQueries(logging.Filter):
    """httpx logs each request's URL at INFO: a presigned URL's signature is a credential."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) and a.query for a in record.args):
            record.args = tuple(
                f"{a.copy_with(query=None)}?<hidden>" if isinstance(a, httpx.URL) and a.query else a
                for a in record.args
            )
        return True


if not any(isinstance(f, _HideQueries) for f in logging.getLogger("httpx").filters):
    logging.getLogger("httpx").addFilter(_HideQueries())
