"""Live caches: reads on the request path never wait on storage, and changes arrive within 2 s.

``keel.prompts.load`` / ``get``, a flag client's ``is_enabled`` / ``variant`` and
``keel.ab.assign`` answer from in-process caches (a dict lookup). This module keeps
those caches current without the request path ever touching the store:

- **The change signal.** Every registry change adds 1 to its kind's counter
  (``prompt``, ``model``, ``flag``, ``experiment``) in the same transaction
  (database triggers, :mod:`keel.meta.changes`). One daemon thread per session, the
  *refresher*, reads the counters every :data:`POLL` seconds (0.5, ``KEEL_CHANGE_POLL``;
  one ``SELECT`` of a few rows). Against a keel server a second daemon thread
  long-polls ``GET /api/v1/changes`` (:data:`REMOTE_WAIT` seconds a request, so an idle
  client sends one request every few seconds and a change is seen within ~0.3 s).
- **Refreshing.** Each cache registers a :class:`Listener` with the kinds it depends
  on. When one of them moves, the refresher calls ``listener.refresh(changed=True)``
  in its own thread and the cache swaps the new values in (the request path sees the
  old or the new value, never a partial one). A listener can also ask for a refresh
  without a change (:meth:`Listener.due`: a TTL backstop, ``flags.yaml`` edited). A
  new listener is refreshed once after the first counter read that follows it, so a
  change made between its first load and that read is not missed.
- **Failures.** A store that is locked, slow or down holds up only the refresher:
  the caches keep serving what they hold. The refresher retries (backing off from
  0.5 s to :data:`MAX_BACKOFF`), logs one warning per outage on the ``keel`` logger and
  one line when the store answers again, then refreshes everything that changed.
- **First loads.** The very first load of a name in a process has nothing to serve.
  :func:`first_load` runs it in a helper thread and waits at most
  :data:`FIRST_LOAD_TIMEOUT` seconds (2, ``KEEL_FIRST_LOAD_TIMEOUT``); past that the
  caller gets :class:`~keel.errors.Unavailable` (the prompt API then serves its
  ``fallback``, a flag client its defaults, ``keel.ab.assign`` None), and the load
  goes on in the background and fills the cache when the store answers.
- **Fork.** After ``os.fork`` (``gunicorn --preload``, Celery's prefork pool,
  multiprocessing's ``fork``) the child starts its own threads for the refreshers it
  inherited, on a connection pool of its own.

Changes made by this process (``keel.prompts.set_alias``, ``keel.flags.kill``,
``keel.ab.stop``) are visible to it at once: those calls update the caches
themselves, then wake the refresher.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from keel.errors import NotFound, Unavailable

__all__ = [
    "FIRST_LOAD_TIMEOUT",
    "MAX_BACKOFF",
    "POLL",
    "REMOTE_WAIT",
    "Listener",
    "Watcher",
    "first_load",
    "first_load_timeout",
    "stop_all",
    "watcher",
]

log = logging.getLogger("keel")

T = TypeVar("T")


def _seconds(name: str, default: float, low: float = 0.0) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value == value and value >= low else default  # NaN or too small: the default


POLL = _seconds("KEEL_CHANGE_POLL", 0.5, 0.01)  # seconds between two reads of the change counters
FIRST_LOAD_TIMEOUT = _seconds("KEEL_FIRST_LOAD_TIMEOUT", 2.0)  # seconds a first load may make its caller wait
MAX_BACKOFF = 2.0  # seconds between two tries while the store does not answer
REMOTE_WAIT = 5.0  # seconds one long poll of a keel server's change feed waits
_IDLE_EXIT = 30.0  # seconds without listeners after which a refresher thread ends


def first_load_timeout() -> float:
    """Seconds a first load may make its caller wait (``KEEL_FIRST_LOAD_TIMEOUT``, default 2)."""
    return _seconds("KEEL_FIRST_LOAD_TIMEOUT", FIRST_LOAD_TIMEOUT)


class Listener:
    """A cache the refresher keeps current. Subclasses set :attr:`kinds` and implement
    :meth:`refresh`; the refresher calls them in its thread, never concurrently."""

    kinds: frozenset[str] = frozenset()

    def refresh(self, changed: bool) -> None:
        """Re-read what the cache holds. ``changed``: one of its kinds changed since the last
        successful refresh (re-read everything); False: :meth:`due` asked. Raise to be
        retried (the cache keeps serving what it holds)."""

    def due(self) -> bool:
        """True to be refreshed now although no counter moved (a TTL, a file changed)."""
        return False

    def alive(self) -> bool:
        """False once the cache is gone (the refresher then forgets it)."""
        return True


# -- first loads ------------------------------------------------------------------------------
class _Call:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


_calls: dict[Any, _Call] = {}
_calls_lock = threading.Lock()


def first_load(key: Any, load: Callable[[], T], what: str, timeout: float | None = None) -> T:
    """``load()`` run in a helper thread (one at a time per ``key``; concurrent callers share
    it), waiting at most ``timeout`` seconds (default :func:`first_load_timeout`).

    ``load`` should fill its cache itself: past the timeout the caller gets
    :class:`~keel.errors.Unavailable` naming ``what``, and ``load`` goes on. Its own
    errors are raised to the callers that still wait.
    """
    wait = first_load_timeout() if timeout is None else timeout
    with _calls_lock:
        call = _calls.get(key)
        start = call is None
        if call is None:
            call = _calls[key] = _Call()
    if start:
        context = contextvars.copy_context()  # the caller's run and user, in the helper thread
        threading.Thread(target=_run_call, args=(key, call, context, load), name="keel-first-load", daemon=True).start()
    if not call.done.wait(wait):
        raise Unavailable(
            f"{what}: the store did not answer within {wait:g} s (the load goes on in the background)",
            "the store may be locked or slow: pass fallback= to serve meanwhile, or raise KEEL_FIRST_LOAD_TIMEOUT",
            dependency="store",
            retry_after=1,
        )
    if call.error is not None:
        raise call.error
    result: T = call.result
    return result


def _run_call(key: Any, call: _Call, context: contextvars.Context, load: Callable[[], Any]) -> None:
    try:
        call.result = context.run(load)
    except BaseException as exc:  # handed to the waiting callers
        call.error = exc
    finally:
        with _calls_lock:
            if _calls.get(key) is call:
                del _calls[key]
        call.done.set()


# -- where the counters come from ---------------------------------------------------------------
class _NotYet(Exception):
    """The remote feed has not answered yet."""


class _LocalSource:
    """Counters read straight from the store's database (one small ``SELECT``)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def read(self) -> dict[str, int]:
        from keel.services.changes import counters

        return counters(self.store)

    def start(self, alive: Callable[[], bool]) -> None:
        """Nothing to start: reads happen in the refresher."""

    def after_fork(self) -> None:
        """In a forked child: a new connection pool (the parent's connections stay the parent's)."""
        self.store.db.dispose(close=False)


class _RemoteSource:
    """Counters from a keel server's change feed, long-polled by a daemon thread; the
    refresher takes the latest reply without waiting."""

    def __init__(self, transport: Any, wake: threading.Event) -> None:
        self.transport = transport
        self.wake = wake
        self.value: dict[str, int] | None = None
        self.tag: str | None = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def read(self) -> dict[str, int]:
        if self.error is not None:
            raise self.error
        if self.value is None:
            raise _NotYet
        return self.value

    def start(self, alive: Callable[[], bool]) -> None:
        if self.thread is not None and self.thread.is_alive():
            return
        self.thread = threading.Thread(target=self._run, args=(alive,), name="keel-change-feed", daemon=True)
        self.thread.start()

    def _run(self, alive: Callable[[], bool]) -> None:
        backoff = POLL
        while alive():
            try:
                self._poll()
                backoff = POLL
            except Exception as exc:  # the refresher reports it (once per outage)
                self.error = exc
                self.wake.set()
                # A server without a change feed (older keel) is asked again rarely.
                time.sleep(30.0 if isinstance(exc, NotFound) else backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _poll(self) -> None:
        headers = {"If-None-Match": f'"{self.tag}"'} if self.tag else {}
        params = {"wait": REMOTE_WAIT} if self.tag else None
        response = self.transport.request("GET", "/api/v1/changes", headers=headers, params=params)
        if response.status == 304:
            response.close()
        else:
            body = response.json()
            counters = body.get("counters") if isinstance(body, dict) else None
            if not isinstance(counters, dict):
                raise Unavailable(f"{self.transport.base_url} sent an invalid change feed", "is this a keel server?")
            self.value = {str(k): int(v) for k, v in counters.items()}
            self.tag = str(body.get("token") or "") or None
            self.wake.set()
        if self.error is not None:
            self.error = None
            self.wake.set()


# -- the refresher ---------------------------------------------------------------------------------
_WATCHERS: weakref.WeakSet[Watcher] = weakref.WeakSet()


class Watcher:
    """One session's refresher: follows the store's change counters and refreshes the
    listeners of the kinds that moved (see the module doc)."""

    def __init__(self, session: Any) -> None:
        from keel.sdk.session import _SESSIONS

        self._session = weakref.ref(session)
        self._key = next((k for k, s in _SESSIONS.items() if s is session), None)
        self._lock = threading.Lock()
        self._round_lock = threading.Lock()  # one round at a time (the thread, or check())
        self._wake = threading.Event()
        self._listeners: dict[int, Listener] = {}
        self._dirty: set[int] = set()
        self._thread: threading.Thread | None = None
        self._idle_since: float | None = None
        self._stopped = False
        self.counters: dict[str, int] | None = None
        self.failing: str | None = None  # what fails, while the store does not answer
        if session.remote is not None:
            self._source: Any = _RemoteSource(session.remote.transport, self._wake)
        else:
            self._source = _LocalSource(session.service.store)
        _WATCHERS.add(self)

    def __repr__(self) -> str:
        return f"<keel refresher: {len(self._listeners)} caches, counters {self.counters}>"

    # -- listeners ---------------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> None:
        """Keep ``listener`` current from now on (it is refreshed once after the next counter read)."""
        with self._lock:
            self._listeners[id(listener)] = listener
            self._dirty.add(id(listener))
            self._start()

    def unsubscribe(self, listener: Listener) -> None:
        """Stop refreshing ``listener``."""
        with self._lock:
            self._listeners.pop(id(listener), None)
            self._dirty.discard(id(listener))

    def poke(self) -> None:
        """Look at the counters now (after a change made by this process)."""
        self._wake.set()

    def check(self) -> bool:
        """One round now, in the caller's thread: read the counters, refresh what changed or is
        due. True if everything answered. (The refresher does this every :data:`POLL` s.)"""
        return self._round()

    # -- the thread --------------------------------------------------------------------------------
    def _alive(self) -> bool:
        from keel.sdk.session import _SESSIONS

        if self._stopped:
            return False
        session = self._session()
        if session is None:
            return False
        return self._key is None or _SESSIONS.get(self._key) is session

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread (waiting for a round in progress at most ``timeout`` s); for good."""
        self._stopped = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _start(self) -> None:
        """Start the thread if it is not running (call with the lock held)."""
        if self._stopped or (self._thread is not None and self._thread.is_alive()):
            return
        self._idle_since = None
        self._thread = threading.Thread(target=self._run, name="keel-refresher", daemon=True)
        self._thread.start()
        self._source.start(lambda: self._alive() and self._thread is not None)

    def _run(self) -> None:
        failures = 0
        while self._alive():
            with self._lock:
                if not self._listeners:
                    now = time.monotonic()
                    self._idle_since = self._idle_since or now
                    if now - self._idle_since > _IDLE_EXIT:
                        self._thread = None
                        return
                else:
                    self._idle_since = None
            if self._listeners:
                try:
                    ok = self._round()
                except Exception as exc:  # a bug must not end the thread: the caches would go stale
                    self._failed("the cache refresher failed", exc)
                    ok = False
                failures = 0 if ok else failures + 1
            pause = POLL if failures == 0 else min(POLL * 2**failures, MAX_BACKOFF)
            self._wake.wait(pause)
            self._wake.clear()

    def _round(self) -> bool:
        with self._round_lock:
            return self._round_locked()

    def _round_locked(self) -> bool:
        if not self._alive():
            return True
        try:
            now: dict[str, int] | None = self._source.read()
        except _NotYet:
            now = None
        except Exception as exc:
            self._failed("cannot read the store's change counters", exc)
            return False
        with self._lock:
            if now is not None:
                before = self.counters
                if before is not None and now != before:
                    changed = {k for k in set(before) | set(now) if before.get(k) != now.get(k)}
                    self._dirty.update(key for key, lst in self._listeners.items() if lst.kinds & changed)
                self.counters = now
            listeners = list(self._listeners.items())
        ok = True
        for key, listener in listeners:
            if not self._alive():
                return ok
            if not listener.alive():
                self.unsubscribe(listener)
                continue
            with self._lock:
                changed_now = now is not None and key in self._dirty
                if changed_now:
                    self._dirty.discard(key)
            try:
                if changed_now or listener.due():
                    listener.refresh(changed_now)
            except Exception as exc:
                if changed_now:
                    with self._lock:
                        if key in self._listeners:
                            self._dirty.add(key)
                self._failed(f"cannot refresh {listener}", exc)
                ok = False
        if ok and now is not None and self.failing is not None:
            log.info("keel: the store answers again; cached prompts, flags and experiments are current")
            self.failing = None
        return ok

    def _failed(self, what: str, exc: BaseException) -> None:
        if self.failing is None:
            log.warning(
                "keel: %s (%s: %s); serving cached prompts, flags and experiments, retrying in the background",
                what,
                type(exc).__name__,
                exc,
            )
        self.failing = what

    def _after_fork(self) -> None:
        """In a forked child: new locks, no threads yet; start them again if anything listens."""
        self._lock = threading.Lock()
        self._round_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        if isinstance(self._source, _RemoteSource):
            self._source.thread = None
            self._source.wake = self._wake
        else:
            self._source.after_fork()
        if self._listeners:
            with self._lock:
                self._start()


def watcher(session: Any = None) -> Watcher:
    """The refresher of ``session`` (default: the current one), created on first use."""
    if session is None:
        from keel.sdk.session import get_session

        session = get_session()
    found: Watcher | None = session.__dict__.get("_keel_watcher")
    if found is None:
        with _calls_lock:
            found = session.__dict__.get("_keel_watcher")
            if found is None:
                found = session.__dict__["_keel_watcher"] = Watcher(session)
    return found


def stop_all(timeout: float = 5.0) -> None:
    """Stop every refresher, waiting at most ``timeout`` seconds in all for rounds in progress
    (``keel.sdk.session.reset`` calls it before it closes the stores)."""
    watchers = list(_WATCHERS)
    for found in watchers:
        found._stopped = True
        found._wake.set()
    deadline = time.monotonic() + timeout
    for found in watchers:
        found.stop(max(0.0, deadline - time.monotonic()))


def _after_fork_in_child() -> None:
    global _calls_lock
    _calls_lock = threading.Lock()
    _calls.clear()  # their threads stayed in the parent
    for found in list(_WATCHERS):
        try:
            found._after_fork()
        except Exception:  # pragma: no cover - a child must start even so
            log.exception("keel: could not restart a cache refresher after fork")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
