"""Sending webhooks: target checks, signatures, the HTTP request, retries, the queue worker.

Where a delivery may go (:func:`check_url`, :func:`resolve_target`): ``http`` or ``https``
only, no credentials in the URL; the host is resolved and every address it has must be
public: loopback, link-local, private, shared (CGNAT), multicast, unspecified and reserved
addresses are refused unless the operator allows them (``KEEL_HOOKS_ALLOW_PRIVATE=1`` on the
server). The check runs when a subscription is added *and* at every attempt, and the request
connects to the very address that was checked (a DNS answer that changes between the check
and the connection cannot point it elsewhere). Connect and read timeouts are bounded;
redirects are not followed (a 3xx is a failed attempt).

A delivery's request (docs/hooks.md shows how a receiver verifies it)::

    POST <url>
    Content-Type: application/json
    User-Agent: keel-hooks/<version>
    X-Keel-Event: alias.moved
    X-Keel-Delivery: 42                    (the same id on every retry: deduplicate on it)
    X-Keel-Timestamp: 1796667546           (Unix seconds when this attempt was signed)
    X-Keel-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>

A 2xx answer delivers it; anything else (or no answer) is retried with exponential backoff
(``backoff * 2**(attempt-1)``, at most an hour, a little jitter) up to ``max_attempts``,
then the delivery is ``failed``. Every attempt is recorded with its status code or error
and how long it took.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import http.client
import ipaddress
import json
import os
import random
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from keel._version import __version__
from keel.core.entities import now_ms
from keel.errors import InvalidInput
from keel.meta.engine import Database
from keel.meta.hooks import Claimed, HookStore, Outcome

__all__ = [
    "ENV_ALLOW_PRIVATE",
    "HEADER_DELIVERY",
    "HEADER_EVENT",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "Dispatcher",
    "HookSettings",
    "QueueRun",
    "check_url",
    "resolve_target",
    "sign",
]

ENV_ALLOW_PRIVATE = "KEEL_HOOKS_ALLOW_PRIVATE"
HEADER_EVENT = "X-Keel-Event"
HEADER_DELIVERY = "X-Keel-Delivery"
HEADER_TIMESTAMP = "X-Keel-Timestamp"
HEADER_SIGNATURE = "X-Keel-Signature"
# a kept connection the receiver closed meanwhile: try once more on a new one
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
_RESPONSE_KEPT = 1000  # characters of a receiver's answer kept with the attempt
_RESPONSE_READ = 64 << 10  # bytes read of an answer at most (more: the connection is dropped)


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"{name}={raw!r} is not a number", f"set {name} to a number, e.g. {default:g}") from None
    if value < 0:
        raise InvalidInput(f"{name}={raw!r} is negative", f"set {name} to a number >= 0")
    return value


@dataclass(frozen=True)
class HookSettings:
    """How deliveries are made (the server's environment sets them: :meth:`from_env`).

    Attributes:
        allow_private: let targets resolve to loopback/private/link-local addresses
            (``KEEL_HOOKS_ALLOW_PRIVATE=1``): for a receiver inside the operator's network.
        connect_timeout: seconds to connect (``KEEL_HOOKS_CONNECT_TIMEOUT``, 5).
        read_timeout: seconds any read of the answer may wait (``KEEL_HOOKS_READ_TIMEOUT``, 10).
        max_attempts: attempts before a delivery is ``failed`` (``KEEL_HOOKS_MAX_ATTEMPTS``, 8).
        backoff: seconds before the second attempt, doubling after each
            (``KEEL_HOOKS_BACKOFF``, 10; at most an hour).
        poll: seconds the server's worker sleeps when there is nothing to do (``KEEL_HOOKS_POLL``, 1).
        concurrency: requests in flight at once per worker (``KEEL_HOOKS_CONCURRENCY``, 16).
        batch: deliveries claimed per round (64).
        lease: seconds a worker holds the deliveries it claimed before others may take them
            (``KEEL_HOOKS_LEASE``; at least what one round can take with the timeouts).
    """

    allow_private: bool = False
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    max_attempts: int = 8
    backoff: float = 10.0
    poll: float = 1.0
    concurrency: int = 16
    batch: int = 64
    lease: float = 0.0

    @classmethod
    def from_env(cls) -> HookSettings:
        """The settings from ``KEEL_HOOKS_*`` environment variables (defaults otherwise)."""
        allow = os.environ.get(ENV_ALLOW_PRIVATE, "").strip().lower() in ("1", "true", "yes", "on")
        return cls(
            allow_private=allow,
            connect_timeout=_env_float("KEEL_HOOKS_CONNECT_TIMEOUT", 5.0) or 5.0,
            read_timeout=_env_float("KEEL_HOOKS_READ_TIMEOUT", 10.0) or 10.0,
            max_attempts=max(1, int(_env_float("KEEL_HOOKS_MAX_ATTEMPTS", 8))),
            backoff=_env_float("KEEL_HOOKS_BACKOFF", 10.0),
            poll=_env_float("KEEL_HOOKS_POLL", 1.0) or 1.0,
            concurrency=max(1, int(_env_float("KEEL_HOOKS_CONCURRENCY", 16))),
            lease=_env_float("KEEL_HOOKS_LEASE", 0.0),
        )

    @property
    def attempt_s(self) -> float:
        """The longest one attempt may take, all told (connect, send, answer): a watchdog
        closes the connection then, however slowly the receiver drips its answer."""
        return self.connect_timeout + self.read_timeout

    @property
    def lease_ms(self) -> int:
        """How long a worker holds what it claimed: by default, long enough for one round in
        which every request times out; ``KEEL_HOOKS_LEASE`` sets it (at least one attempt's
        bound plus a second). A worker starts an attempt only while at least one attempt's
        bound of its lease is left, so a live worker's delivery is never taken over mid-send."""
        rounds = -(-self.batch // self.concurrency)
        needed = rounds * self.attempt_s + 5.0
        return int(max(self.lease or needed, self.attempt_s + 1.0) * 1000)

    def retry_at(self, attempt: int, now: int) -> int:
        """When attempt ``attempt + 1`` is due, after attempt ``attempt`` failed at ``now`` (ms)."""
        delay = min(3600.0, self.backoff * (2 ** (attempt - 1)))
        return now + int(delay * (1.0 + random.random() * 0.2) * 1000)  # noqa: S311 - jitter, not a secret


# -- where a delivery may go ----------------------------------------------------------------
def check_url(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of a webhook target URL, or InvalidInput saying what is wrong."""
    hint = "give an http:// or https:// URL, e.g. --url https://hooks.example.com/keel"
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput("a webhook needs a target URL", hint)
    if len(url) > 2000 or any(c in url for c in "\r\n\t "):
        raise InvalidInput("the webhook URL is too long or has spaces or line breaks", hint)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"{url!r} is not a valid URL: {exc}", hint) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidInput(f"webhook URLs must be http or https, not {scheme or 'none'!r}", hint)
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(
            "the webhook URL carries a user or password",
            "leave credentials out of the URL: deliveries are signed with the subscription's secret",
        )
    host = parts.hostname or ""
    if not host:
        raise InvalidInput(f"{url!r} names no host", hint)
    return scheme, host, port or (443 if scheme == "https" else 80)


def _refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``address`` may not be a webhook target (None: it may)."""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    for why, test in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    ):
        if test:
            return why
    if not address.is_global:
        return "non-public"
    return None


def resolve_target(host: str, port: int, allow_private: bool) -> str:
    """The address to connect to for ``host`` (resolved now); InvalidInput if it cannot be
    resolved or any of its addresses is refused (see the module doc)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInput(
            f"webhook host {host!r} does not resolve: {exc}", "check the host name in the subscription's URL"
        ) from None
    addresses = []
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]
        address = ipaddress.ip_address(text)
        why = _refused(address)
        if why is not None and not allow_private:
            raise InvalidInput(
                f"webhook target {host!r} resolves to {text}, a {why} address: refused",
                f"use a public address, or let this server reach its own network with {ENV_ALLOW_PRIVATE}=1",
            )
        addresses.append(text)
    if not addresses:
        raise InvalidInput(f"webhook host {host!r} has no address", "check the host name in the subscription's URL")
    return addresses[0]


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Keel-Signature`` value: ``v1=`` + hex HMAC-SHA256 of ``"<timestamp>.<body>"``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def body_of(claimed: Claimed) -> bytes:
    """The JSON body of a delivery: its id, the subscription and the event."""
    doc = {"delivery": claimed.id, "subscription": claimed.subscription_id, "event": claimed.event.to_dict()}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


# -- the HTTP request ---------------------------------------------------------------------------
class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to an address checked beforehand (the Host header names the host)."""

    def __init__(self, host: str, port: int, address: str, connect: float, read: float) -> None:
        super().__init__(host, port, timeout=connect)
        self.address = address
        self.read_timeout = read

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(self.read_timeout)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The TLS settings of https deliveries (the system's CAs; loaded on first use)."""
    return ssl.create_default_context()


class _PinnedHTTPS(_PinnedHTTP):
    """:class:`_PinnedHTTP` over TLS, the certificate checked against the host name."""

    def connect(self) -> None:
        super().connect()
        self.sock = _tls_context().wrap_socket(self.sock, server_hostname=self.host)


class _Watchdog:
    """Closes connections whose attempt ran past its deadline (one thread for all senders)."""

    def __init__(self) -> None:
        self._watched: dict[int, tuple[float, http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def watch(self, conn: http.client.HTTPConnection, seconds: float) -> None:
        with self._lock:
            self._watched[id(conn)] = (time.monotonic() + seconds, conn)
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="keel-hooks-watchdog", daemon=True)
                self._thread.start()

    def done(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._watched.pop(id(conn), None)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            now = time.monotonic()
            with self._lock:
                late = [c for deadline, c in self._watched.values() if deadline <= now]
                for conn in late:
                    self._watched.pop(id(conn), None)
            for conn in late:
                sock = conn.sock
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(1)


class _Sender:
    """Sends one delivery at a time per thread, keeping a connection per target and address."""

    def __init__(self, settings: HookSettings) -> None:
        self.settings = settings
        self._local = threading.local()
        self._every: list[dict[tuple[str, str, int, str], _PinnedHTTP]] = []  # each thread's kept connections
        self._lock = threading.Lock()
        self.watchdog = _Watchdog()

    def _connections(self) -> dict[tuple[str, str, int, str], _PinnedHTTP]:
        found: dict[tuple[str, str, int, str], _PinnedHTTP] | None = getattr(self._local, "connections", None)
        if found is None:
            found = self._local.connections = {}
            with self._lock:
                self._every.append(found)
        return found

    def send(self, claimed: Claimed) -> tuple[int | None, str | None, str | None, float]:
        """``(status code, error, answer text, milliseconds)`` of one attempt."""
        started = time.perf_counter()
        try:
            scheme, host, port = check_url(claimed.url)
            address = resolve_target(host, port, self.settings.allow_private)
        except InvalidInput as exc:
            return None, f"refused: {exc.message}", None, (time.perf_counter() - started) * 1000
        parts = urlsplit(claimed.url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        body = body_of(claimed)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"keel-hooks/{__version__}",
            HEADER_EVENT: claimed.event.kind,
            HEADER_DELIVERY: str(claimed.id),
            HEADER_TIMESTAMP: str(timestamp),
            HEADER_SIGNATURE: sign(claimed.secret, timestamp, body),
        }
        key = (scheme, host, port, address)
        connections = self._connections()
        for fresh in (False, True):  # a kept connection the receiver closed meanwhile: once more, anew
            conn = None if fresh else connections.pop(key, None)
            reused = conn is not None
            if conn is None:
                kind = _PinnedHTTPS if scheme == "https" else _PinnedHTTP
                conn = kind(host, port, address, self.settings.connect_timeout, self.settings.read_timeout)
            left = self.settings.attempt_s - (time.perf_counter() - started)
            self.watchdog.watch(conn, max(left, 0.1))
            try:
                conn.request("POST", target, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read(_RESPONSE_READ + 1)
            except (OSError, http.client.HTTPException) as exc:
                self.watchdog.done(conn)
                conn.close()
                failure: BaseException = exc
                if time.perf_counter() - started >= self.settings.attempt_s:
                    failure = TimeoutError()  # the watchdog ended it
                elif reused and isinstance(exc, _STALE):
                    continue
                return None, _describe(failure, self.settings), None, (time.perf_counter() - started) * 1000
            self.watchdog.done(conn)
            if len(data) > _RESPONSE_READ or response.will_close:
                conn.close()
            else:
                connections[key] = conn
            text = data[:_RESPONSE_KEPT].decode("utf-8", "replace")
            error = None if 200 <= response.status < 300 else f"HTTP {response.status} {response.reason}".strip()
            return response.status, error, text, (time.perf_counter() - started) * 1000
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close every thread's kept connections (call once the sending threads are done)."""
        self.watchdog.close()
        with self._lock:
            every, self._every = self._every, []
        for connections in every:
            for conn in list(connections.values()):
                conn.close()
            connections.clear()


def _describe(exc: BaseException, settings: HookSettings) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"timed out (connect {settings.connect_timeout:g} s, answer {settings.read_timeout:g} s)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return f"{type(exc).__name__}: {exc}"[:500]


# -- the queue ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueRun:
    """What one round of :meth:`Dispatcher.work` did."""

    events: int = 0  # events fanned out
    queued: int = 0  # deliveries they made
    delivered: int = 0
    retrying: int = 0
    failed: int = 0

    def __add__(self, other: QueueRun) -> QueueRun:
        return QueueRun(
            self.events + other.events,
            self.queued + other.queued,
            self.delivered + other.delivered,
            self.retrying + other.retrying,
            self.failed + other.failed,
        )

    @property
    def attempts(self) -> int:
        """Attempts made."""
        return self.delivered + self.retrying + self.failed


class Dispatcher:
    """Works a database's delivery queue: fan-out, claim with a lease, send, record.

    Any number of dispatchers (threads, processes, servers) may work one database at once;
    each delivery is sent by one of them at a time (see :mod:`keel.meta.hooks`).
    """

    def __init__(self, db: Database, settings: HookSettings | None = None, worker: str | None = None) -> None:
        self.db = db
        self.settings = settings or HookSettings.from_env()
        self.worker = worker or f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._sender = _Sender(self.settings)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="keel-hooks")
            return self._pool

    def has_work(self) -> bool:
        """Whether an event waits for fan-out or a delivery is due (one cheap read)."""
        if self.db.pending:  # a workspace whose database is not created yet holds no event
            return False
        with self.db.read() as conn:
            return HookStore.has_work(conn, now_ms())

    def fan_out(self) -> tuple[int, int]:
        """Fan every waiting event out to deliveries; ``(events, deliveries)``."""
        events = deliveries = 0
        while True:
            with self.db.write() as conn:
                found = HookStore.fan_out(conn)
            events, deliveries = events + found[0], deliveries + found[1]
            if found[0] == 0:
                return events, deliveries

    def work(self, *, only: Sequence[int] | None = None) -> QueueRun:
        """One round: fan out waiting events, claim a batch of due deliveries, send them
        (concurrently), record every attempt. ``only``: just these delivery ids."""
        if self.db.pending:  # not created yet (a fresh workspace): nothing was ever queued
            return QueueRun()
        events, queued = self.fan_out() if only is None else (0, 0)
        settings = self.settings
        with self.db.write() as conn:
            claimed = HookStore.claim(conn, self.worker, settings.batch, settings.lease_ms, now_ms(), only)
        if not claimed:
            return QueueRun(events, queued)
        lease_end = time.monotonic() + settings.lease_ms / 1000
        skipped: list[int] = []
        pending: list[Outcome] = []  # outcomes not yet recorded
        counts = {"delivered": 0, "pending": 0, "failed": 0}
        lock = threading.Lock()

        def record(force: bool) -> None:
            # Outcomes are written every `concurrency` attempts, not once per round: a worker
            # killed mid-round re-sends (after its lease) only what it had not recorded yet.
            with lock:
                if not pending or (not force and len(pending) < settings.concurrency):
                    return
                batch = pending[:]
                pending.clear()
            with self.db.write() as conn:
                HookStore.finish(conn, self.worker, batch)

        def attempt(c: Claimed) -> None:
            # Start only while a whole attempt fits in the lease: past it, another worker may
            # take the delivery, and it must not be sent twice.
            if time.monotonic() + settings.attempt_s > lease_end:
                with lock:
                    skipped.append(c.id)
                return
            code, error, text, ms = self._sender.send(c)
            now = now_ms()
            if error is None:
                status, next_at = "delivered", now
            elif c.attempt >= settings.max_attempts:
                status, next_at = "failed", now
            else:
                status, next_at = "pending", settings.retry_at(c.attempt, now)
            with lock:
                counts[status] += 1
                pending.append(Outcome(c.id, c.attempt, status, next_at, code, error, round(ms, 3), text))
            record(force=False)

        if len(claimed) == 1 or settings.concurrency == 1:
            for c in claimed:
                attempt(c)
        else:
            list(self._executor().map(attempt, claimed))
        record(force=True)
        if skipped:
            with self.db.write() as conn:
                HookStore.release(conn, self.worker, skipped)
        return QueueRun(events, queued, counts["delivered"], counts["pending"], counts["failed"])

    def drain(self, *, stop: Callable[[], bool] | None = None) -> QueueRun:
        """Work rounds until nothing is due now (or ``stop()``); retries due later stay queued."""
        total = QueueRun()
        while stop is None or not stop():
            done = self.work()
            total = total + done
            if done.attempts == 0 and done.events == 0:
                return total
        return total

    def close(self) -> None:
        """Stop the sending threads and close kept connections."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._sender.close()


def wait_seconds(db: Database, settings: HookSettings) -> float:
    """How long an idle worker may sleep: until the next retry is due, at most ``poll``."""
    if db.pending:
        return settings.poll
    with db.read() as conn:
        due = HookStore.next_due(conn)
    if due is None:
        return settings.poll
    return max(0.0, min(settings.poll, (due - now_ms()) / 1000))


def describe_settings(settings: HookSettings) -> dict[str, Any]:
    """The settings as a dict (for the UI and ``keel hooks list --json``)."""
    return {
        "allow_private": settings.allow_private,
        "connect_timeout": settings.connect_timeout,
        "read_timeout": settings.read_timeout,
        "max_attempts": settings.max_attempts,
        "backoff": settings.backoff,
    }
