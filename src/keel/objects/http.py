"""The HTTP transport to a keel server, its credentials file, and objects over HTTP.

:class:`HttpTransport` speaks keep-alive HTTP/1.1 to one server with the
standard library's :mod:`http.client` (remote use needs no extra dependency):
one connection per thread, a bearer token, streamed request bodies (a file or
an iterable of chunks is sent as it is read, never buffered whole), and every
failure as a :class:`~keel.errors.KeelError`: the server's one error shape
``{"error": {"code", "message", "hint", "details"}}`` becomes the same exception
it was on the server, with its fields (:func:`keel.errors.error_from_dict`).

:class:`HttpObjectStore` is an :class:`~keel.objects.base.ObjectStore` over the
server's ``/api/v1/objects`` endpoints, so a keel server is a data remote like a
folder or a bucket (``keel remote add origin http://host:port``). When the
server's store is S3, downloads follow a short-lived presigned URL straight to
the bucket.

Tokens live in ``credentials.toml`` under ``$KEEL_CONFIG_DIR`` (default
``$XDG_CONFIG_HOME/keel``, else ``~/.config/keel``), one table per server::

    ["http://keel.example.com:8000"]
    token = "keel_..."

``KEEL_TOKEN`` wins over the file. Tokens are never logged, and neither the
transport's nor the store's ``repr`` shows them.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import threading
import tomllib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode, urlsplit

from keel._version import __version__
from keel.core.hashing import hash_bytes, is_oid, new_hasher
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
from keel.objects.base import CHUNK, ObjectStore, check_oid

__all__ = [
    "ENV_CONFIG_DIR",
    "ENV_TOKEN",
    "HttpObjectStore",
    "HttpResponse",
    "HttpTransport",
    "credentials_path",
    "forget_token",
    "normalize_base_url",
    "open_url",
    "save_token",
    "token_for",
]

ENV_TOKEN = "KEEL_TOKEN"
ENV_CONFIG_DIR = "KEEL_CONFIG_DIR"
API = "/api/v1"
_ERROR_BODY_LIMIT = 1 << 16  # bytes of an error reply read to find the message
_BLOCK = 1 << 16  # bytes per send when streaming a file body
_STATUS_ERRORS: dict[int, type[KeelError]] = {
    400: InvalidInput,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    413: TooLarge,
}
_UNREACHABLE_HINT = "check KEEL_URI (or the remote's URL) and that the server is running"


# -- URLs and credentials --------------------------------------------------------------------
def normalize_base_url(base_url: str) -> str:
    """``scheme://host[:port][/path]`` with a lowercase scheme and host and no trailing slash.

    Raises InvalidInput unless it is an ``http://`` or ``https://`` URL with a host.
    """
    parts = urlsplit((base_url or "").strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(
            f"invalid keel server URL {base_url!r}", "write http://host:port or https://host (no credentials in it)"
        )
    if parts.username or parts.password:
        raise InvalidInput(
            "a keel server URL must not hold credentials", "pass the token with KEEL_TOKEN or 'keel login'"
        )
    host = parts.hostname.lower()
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        raise InvalidInput(f"invalid port in {base_url!r}", "write http://host:port") from None
    netloc = f"{host}:{port}" if port is not None else host
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def credentials_path() -> Path:
    """``credentials.toml`` in ``$KEEL_CONFIG_DIR``, ``$XDG_CONFIG_HOME/keel`` or ``~/.config/keel``."""
    folder = os.environ.get(ENV_CONFIG_DIR)
    if folder:
        return Path(folder).expanduser() / "credentials.toml"
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return base / "keel" / "credentials.toml"


def _read_credentials(path: Path) -> dict[str, str]:
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise StoreError(f"cannot read {path}: {exc}", "fix the file, or delete it and run 'keel login' again") from exc
    return {
        url: str(entry["token"])
        for url, entry in doc.items()
        if isinstance(entry, dict) and isinstance(entry.get("token"), str)
    }


def _write_credentials(path: Path, entries: dict[str, str]) -> None:
    """Rewrite the file atomically; it is created readable by its owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = ["# keel API tokens, one table per server (written by 'keel login'; keep private)"]
    for url, token in sorted(entries.items()):
        # A JSON string (ASCII, escaped) is a valid TOML basic string.
        lines += ["", f"[{json.dumps(url)}]", f"token = {json.dumps(token)}"]
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write("\n".join(lines) + "\n")
        os.chmod(tmp, 0o600)  # the umask cannot widen it, but an old tmp file could exist
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def token_for(base_url: str) -> str | None:
    """The token to use with the server at ``base_url``: ``KEEL_TOKEN``, else its
    entry in the credentials file, else None."""
    env = os.environ.get(ENV_TOKEN)
    if env:
        return env.strip()
    return _read_credentials(credentials_path()).get(normalize_base_url(base_url))


def save_token(base_url: str, token: str) -> Path:
    """Remember ``token`` for ``base_url`` in the credentials file (0600); returns its path."""
    if not token or not token.strip() or any(c.isspace() for c in token.strip()):
        raise InvalidInput("the token is empty or holds spaces", "paste the token 'keel server token create' printed")
    path = credentials_path()
    entries = _read_credentials(path)
    entries[normalize_base_url(base_url)] = token.strip()
    _write_credentials(path, entries)
    return path


def forget_token(base_url: str) -> bool:
    """Remove the stored token of ``base_url``; True if there was one."""
    path = credentials_path()
    entries = _read_credentials(path)
    if entries.pop(normalize_base_url(base_url), None) is None:
        return False
    _write_credentials(path, entries)
    return True


# -- responses -----------------------------------------------------------------------------------
class HttpResponse:
    """A reply whose body is read on demand (``read``, ``iter_chunks``, ``json``).

    Close it (or use it as a context manager) when done; a body not read to the
    end closes its connection instead of returning it for reuse.
    """

    def __init__(self, raw: http.client.HTTPResponse, url: str, on_abandon: Any = None, on_close: Any = None) -> None:
        self._raw = raw
        self.url = url
        self.status: int = raw.status
        self.reason: str = raw.reason
        self.headers = raw.headers  # case-insensitive: headers["content-length"]
        self._on_abandon = on_abandon  # called if the body is given up unread (the connection is spoilt)
        self._on_close = on_close  # called once when the response is closed in any way

    def read(self) -> bytes:
        """The whole remaining body (for small replies; stream big ones with :meth:`iter_chunks`)."""
        try:
            data = self._raw.read()
        except (OSError, http.client.HTTPException) as exc:
            self._abandon()
            raise StoreError(f"the reply from {self.url} broke off: {exc}", "retry; check the network") from None
        self.close()
        return data

    def iter_chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The body in pieces of at most ``size`` bytes, as they arrive."""
        try:
            while True:
                chunk = self._raw.read(size)
                if not chunk:
                    break
                yield chunk
        except (OSError, http.client.HTTPException) as exc:
            self._abandon()
            raise StoreError(f"the reply from {self.url} broke off: {exc}", "retry; check the network") from None
        finally:
            self.close()

    def json(self) -> Any:
        """The body parsed as JSON (NaN and infinities included); None for an empty body."""
        data = self.read()
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            raise StoreError(f"{self.url} answered with invalid JSON", "is this URL a keel server?") from None

    @property
    def closed(self) -> bool:
        """True once the body is read to the end or the response is closed."""
        return self._raw.isclosed()

    def _abandon(self) -> None:
        if self._on_abandon is not None:
            self._on_abandon()
            self._on_abandon = None
        self._raw.close()
        self._closed()

    def _closed(self) -> None:
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    def close(self) -> None:
        """Release the response: its connection is reused only if the body was read to the end."""
        if not self._raw.isclosed():
            if self._raw.length == 0:  # nothing left unread (HEAD, 204, an empty body)
                self._raw.close()
            else:
                self._abandon()
        self._on_abandon = None
        self._closed()

    def __enter__(self) -> HttpResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HttpResponse({self.status} {self.url})"


def _raise_for(response: HttpResponse, method: str) -> None:
    """Raise the KeelError a non-2xx/3xx reply stands for (the body is consumed)."""
    try:
        body = response._raw.read(_ERROR_BODY_LIMIT) if method != "HEAD" else b""
    except (OSError, http.client.HTTPException):
        body = b""
    response.close()  # the connection is kept when the whole (small) error body was read
    try:
        error = json.loads(body).get("error") if body else None
    except (ValueError, AttributeError, RecursionError):  # RecursionError: absurdly nested JSON
        error = None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        # The same class the server raised, with its fields (details); the reason if there is no message.
        raise error_from_dict({**error, "message": str(error.get("message") or response.reason)})
    cls = _STATUS_ERRORS.get(response.status)
    if cls is not None:
        raise cls(f"{method} {response.url}: HTTP {response.status} {response.reason}", _status_hint(response.status))
    snippet = body[:200].decode("utf-8", "replace").strip()
    raise StoreError(
        f"{method} {response.url} failed: HTTP {response.status} {response.reason}"
        + (f": {snippet}" if snippet else ""),
        "is this URL a keel server? check KEEL_URI or the remote's URL",
    )


def _status_hint(status: int) -> str:
    return {
        401: "log in ('keel login URL') or set KEEL_TOKEN",
        403: "ask an admin for a role",
        413: "send less data per request",
    }.get(status, "check the request")


# -- bodies ------------------------------------------------------------------------------------------
def _body_length(body: Any) -> int | None:
    """The byte length of a file body if it can be known without reading it."""
    try:
        return os.fstat(body.fileno()).st_size - body.tell()
    except (AttributeError, OSError, ValueError):
        pass
    try:
        here = body.tell()
        end = body.seek(0, os.SEEK_END)
        body.seek(here)
        return int(end - here)
    except (AttributeError, OSError, ValueError):
        return None


class _Rewind:
    """Whether a request body can be sent again (for the one reconnect), and how."""

    def __init__(self, body: Any) -> None:
        self.position: int | None = None
        if body is None or isinstance(body, bytes | bytearray | memoryview):
            self.replayable = True
        elif hasattr(body, "read"):
            try:
                self.position = body.tell()
                self.replayable = body.seekable()
            except (AttributeError, OSError, ValueError):
                self.replayable = False
        else:
            self.replayable = False  # an iterator is consumed by the first attempt

    def rewind(self, body: Any) -> None:
        if self.position is not None:
            body.seek(self.position)


# -- the transport ---------------------------------------------------------------------------------
class HttpTransport:
    """Keep-alive HTTP/1.1 to one keel server, thread-safe (one connection per thread), bearer token.

    Args:
        base_url: ``http://host:port`` or ``https://host`` (a path prefix is kept).
        token: the API token sent as ``Authorization: Bearer``; None sends none.
        timeout: seconds to wait for a connection or for the next bytes of a reply.

    Example::

        transport = HttpTransport("http://127.0.0.1:8000", token_for("http://127.0.0.1:8000"))
        projects = transport.call("GET", "/api/v1/projects")
    """

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 60.0) -> None:
        self.base_url = normalize_base_url(base_url)
        parts = urlsplit(self.base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._prefix = parts.path
        self._token = token
        self.timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        # Every open connection and the thread it belongs to: a finished thread's is closed
        # when the next one opens, so short-lived worker pools do not pile up sockets.
        self._connections: dict[http.client.HTTPConnection, threading.Thread] = {}

    def __repr__(self) -> str:
        return f"HttpTransport({self.base_url!r}, token={'<hidden>' if self._token else None})"

    # -- connections -------------------------------------------------------------------------
    def _new_connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.timeout, blocksize=_BLOCK)
        with self._lock:
            for old, thread in list(self._connections.items()):
                if not thread.is_alive():
                    old.close()
                    del self._connections[old]
            self._connections[conn] = threading.current_thread()
        return conn

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        with self._lock:
            self._connections.pop(conn, None)
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection and whether it was used before (so may be stale)."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        pending: HttpResponse | None = getattr(self._local, "response", None)
        if conn is not None and pending is not None and not pending.closed:
            self._drop(conn)  # the previous reply was never finished: its bytes are in the way
            conn = None
        if conn is not None and conn.sock is not None and _closed_by_peer(conn.sock):
            self._drop(conn)
            conn = None
        if conn is None:
            conn = self._new_connection()
            self._local.conn = conn
            return conn, False
        return conn, conn.sock is not None

    # -- requests -------------------------------------------------------------------------------
    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        """The absolute URL of ``path`` (with ``params`` as its query string)."""
        return self.base_url + self._target(path, params)

    def _target(self, path: str, params: dict[str, Any] | None) -> str:
        target = self._prefix + (path if path.startswith("/") else "/" + path)
        if params:
            items = [(k, _param(v)) for k, v in params.items() if v is not None]
            if items:
                target += ("&" if "?" in target else "?") + urlencode(items)
        return target

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | BinaryIO | Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """Send one request; the reply (2xx or 3xx) with its body unread.

        A file body is sent with its ``Content-Length`` as it is read; an iterable of
        chunks is sent chunked. Raises the server's error for a 4xx/5xx reply, and
        StoreError when the server cannot be reached. A kept-alive connection the
        server closed meanwhile is replaced once, when the body can be sent again.
        """
        target = self._target(path, params)
        url = self.base_url + target
        sent = {"User-Agent": f"keel/{__version__}", "Accept": "application/json"}
        if self._token:
            sent["Authorization"] = f"Bearer {self._token}"
        sent.update(headers or {})
        chunked = False
        if isinstance(body, bytes | bytearray | memoryview):
            sent["Content-Length"] = str(len(body))
        elif body is not None and hasattr(body, "read"):
            length = _body_length(body)
            if length is None:
                chunked = True
                body = _file_chunks(body)  # type: ignore[arg-type]
            else:
                sent["Content-Length"] = str(length)
        elif body is not None:
            chunked = True
        elif method in ("POST", "PUT", "PATCH"):
            sent["Content-Length"] = "0"
        if chunked:
            sent["Transfer-Encoding"] = "chunked"
        rewind = _Rewind(body)
        for attempt in (1, 2):
            conn, reused = self._connection()
            try:
                conn.request(method, target, body=body, headers=sent, encode_chunked=chunked)  # type: ignore[arg-type]
                raw = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                early = _early_reply(conn, url, method)  # e.g. 403 or 413 sent before the body was read
                self._drop(conn)
                if early is not None:
                    _raise_for(early, method)
                if reused and attempt == 1 and rewind.replayable:
                    rewind.rewind(body)
                    continue
                raise _unreachable(url, exc) from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop(conn)
                raise _unreachable(url, exc) from None
            response = HttpResponse(raw, url, on_abandon=lambda c=conn: self._drop(c))
            self._local.response = response
            if response.status >= 400:
                try:
                    _raise_for(response, method)
                except Unauthenticated as exc:
                    if self._token:
                        raise
                    hint = f"run 'keel login {self.base_url}' or set KEEL_TOKEN"
                    raise Unauthenticated(exc.message, hint) from None
            return response
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def call(self, method: str, path: str, payload: Any = None, params: dict[str, Any] | None = None) -> Any:
        """Send ``payload`` as JSON (NaN and infinities kept) and return the reply's JSON."""
        body = None
        headers = {}
        if payload is not None:
            body = json.dumps(payload, allow_nan=True, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        with self.request(method, path, body=body, headers=headers, params=params) as response:
            return response.json()

    def close(self) -> None:
        """Close every connection this transport opened (in any thread)."""
        with self._lock:
            connections, self._connections = list(self._connections), {}
        for conn in connections:
            conn.close()
        self._local = threading.local()

    def __enter__(self) -> HttpTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _file_chunks(fh: BinaryIO) -> Iterator[bytes]:
    return iter(lambda: fh.read(CHUNK), b"")


def _early_reply(conn: http.client.HTTPConnection, url: str, method: str) -> HttpResponse | None:
    """The error reply a server sent before it stopped reading a request body, if any."""
    if conn.sock is None:
        return None
    try:
        raw = conn.getresponse()
    except (OSError, http.client.HTTPException):
        return None
    return HttpResponse(raw, url) if raw.status >= 400 else None


def _closed_by_peer(sock: socket.socket) -> bool:
    """True if an idle kept-alive socket was closed by the server (readable means EOF or junk)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _unreachable(url: str, exc: BaseException) -> StoreError:
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError | socket.timeout):
        reason = f"no answer in time ({reason})"
    return StoreError(f"cannot reach the keel server at {url}: {reason}", _UNREACHABLE_HINT)


def open_url(url: str, timeout: float = 60.0) -> HttpResponse:
    """GET an absolute URL on a one-off connection with no keel token (a presigned
    S3 URL carries its own signature); raises StoreError unless it answers 2xx."""
    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname or "", parts.port, timeout=timeout)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    where = f"{parts.scheme}://{parts.netloc}{parts.path}"  # never the signature
    try:
        conn.request("GET", target, headers={"User-Agent": f"keel/{__version__}"})
        raw = conn.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        raise StoreError(f"cannot download from {where}: {exc}", "check the network; retry") from None
    response = HttpResponse(raw, where, on_close=conn.close)
    if raw.status == 404:
        response._abandon()
        raise NotFound(f"{where} not found", "check the id, or push the object")
    if not 200 <= raw.status < 300:
        response._abandon()
        raise StoreError(f"download from {where} failed: HTTP {raw.status} {raw.reason}", "retry; check the server")
    return response


# -- objects over HTTP --------------------------------------------------------------------------
_REDIRECTS = (301, 302, 303, 307, 308)


class HttpObjectStore(ObjectStore):
    """The content-addressed objects of a keel server, over ``/api/v1/objects``.

    Uploads stream from disk (the server hashes what it receives and refuses a body
    that does not match its oid); downloads stream and are verified here against the
    oid. When the server keeps its objects in S3, downloads are redirected to a
    short-lived presigned URL and read straight from the bucket
    (``presigned_downloads`` counts them); if the bucket cannot be reached from
    here, downloads go through the server instead. Existence checks go in batches.

    Args:
        base_url: ``http://host:port`` of the server.
        token: the API token; default :func:`token_for` (``KEEL_TOKEN`` or ``keel login``).
        presign: ask for presigned downloads when the server can give them.
        transport: an existing transport to share (its token wins).
    """

    BATCH = 1000  # oids per existence check

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        presign: bool = True,
        timeout: float = 300.0,
        transport: HttpTransport | None = None,
    ) -> None:
        if transport is None:
            transport = HttpTransport(base_url, token if token is not None else token_for(base_url), timeout=timeout)
        self.transport = transport
        self.url = transport.base_url
        self.presign = presign
        self.timeout = timeout
        self.presigned_downloads = 0
        self._count_lock = threading.Lock()

    def _path(self, oid: str) -> str:
        return f"{API}/objects/{check_oid(oid)}"

    def describe(self, oid: str) -> str:
        return self.transport.url(self._path(oid))

    def exists(self, oid: str) -> bool:
        if not is_oid(oid):
            return False
        try:
            self.transport.request("HEAD", self._path(oid)).close()
        except NotFound:
            return False
        return True

    def exists_many(self, oids: Iterable[str]) -> set[str]:
        wanted = sorted({oid for oid in oids if is_oid(oid)})
        present: set[str] = set()
        for start in range(0, len(wanted), self.BATCH):
            batch = wanted[start : start + self.BATCH]
            reply = self.transport.call("POST", f"{API}/objects/missing", {"oids": batch})
            missing = set(reply.get("missing", ())) if isinstance(reply, dict) else set()
            present.update(oid for oid in batch if oid not in missing)
        return present

    def put_bytes(self, data: bytes) -> str:
        oid = hash_bytes(data)
        self._write(oid, data)  # one round trip: storing what the server has is a no-op there
        return oid

    def put_file(self, path: str | os.PathLike[str]) -> tuple[str, int]:
        hasher = new_hasher()
        size = 0
        try:
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(CHUNK), b""):
                    hasher.update(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}", "check the file") from None
        oid = hasher.hexdigest()
        # A small file is cheaper to send than to ask about; a large one is asked about first.
        if size <= CHUNK or not self.exists(oid):
            self._write_file(oid, Path(path))
        return oid, size

    def _write(self, oid: str, data: bytes) -> None:
        headers = {"Content-Type": "application/octet-stream"}
        self.transport.request("PUT", self._path(oid), body=data, headers=headers).close()

    def _write_file(self, oid: str, path: Path) -> None:
        headers = {"Content-Type": "application/octet-stream"}
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}", "check the file") from None
        with fh:
            self.transport.request("PUT", self._path(oid), body=fh, headers=headers).close()

    def _open(self, oid: str) -> HttpResponse:
        """The reply carrying ``oid``'s bytes: from the server, or from S3 via a presigned URL."""
        headers = {"Prefer": "presigned"} if self.presign else None
        response = self.transport.request("GET", self._path(oid), headers=headers)
        if response.status not in _REDIRECTS:
            return response
        location = response.headers.get("Location")
        response.read()
        if not location:
            raise StoreError(f"{self.describe(oid)} redirected nowhere", "is this URL a keel server?")
        try:
            direct = open_url(location, self.timeout)
        except StoreError:
            # The bucket's endpoint may be reachable by the server only: stream through it from now on.
            self.presign = False
            return self.transport.request("GET", self._path(oid))
        with self._count_lock:
            self.presigned_downloads += 1
        return direct

    def _read(self, oid: str) -> bytes:
        with self._open(oid) as response:
            return response.read()

    def _copy_to(self, oid: str, out: BinaryIO) -> None:
        with self._open(check_oid(oid)) as response:
            self._copy_verified(oid, response.iter_chunks(CHUNK), out)

    def iter_oids(self) -> Iterator[str]:
        """Every object on the server, a page at a time (a site admin's token is needed)."""
        after: str | None = None
        while True:
            page = self.transport.call("GET", f"{API}/objects", params={"after": after, "limit": 10_000})
            oids = page.get("oids", []) if isinstance(page, dict) else []
            yield from oids
            after = page.get("next") if isinstance(page, dict) else None
            if not after or not oids:
                return

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> HttpObjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HttpObjectStore({self.url!r})"
