"""The change signal of a store: per-kind counters that grow with every registry change.

A process that caches alias targets, flag sets or running experiments reads
:func:`counters` every half second (one ``SELECT`` of a table of a few rows, see
:mod:`keel.meta.changes`) and refreshes the caches of the kinds whose counter moved.
Against a keel server the sdk reads the same counters from ``GET /api/v1/changes``
(:mod:`keel.server.routers.changes`), which serves them from a
:class:`SharedCounters`: one database read per ``max_age`` however many clients ask.

:func:`token` is the counters as one short string (an HTTP ``ETag``): equal tokens,
nothing changed.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import Any

from keel.meta.changes import KINDS, read_counters

__all__ = ["KINDS", "SharedCounters", "changed_kinds", "counters", "token"]


def counters(store: Any) -> dict[str, int]:
    """``{kind: counter}`` of a local store (raises the store's errors: Unavailable, StoreError)."""
    with store.db.raw_read() as cur:
        return read_counters(cur)


def token(found: dict[str, int]) -> str:
    """The counters as a short opaque string: equal tokens, equal counters."""
    text = json.dumps(found, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def changed_kinds(before: dict[str, int] | None, now: dict[str, int]) -> set[str]:
    """The kinds whose counter differs (every kind seen when ``before`` is None)."""
    if before is None:
        return set(now)
    return {kind for kind in set(before) | set(now) if before.get(kind) != now.get(kind)}


class SharedCounters:
    """A store's counters, read at most once per ``max_age`` seconds however many threads ask
    (the server's change feed: N waiting clients cost one query per interval, not N)."""

    def __init__(self, store: Any, max_age: float = 0.25) -> None:
        self.store = store
        self.max_age = max_age
        self._lock = threading.Lock()
        self._value: dict[str, int] | None = None
        self._token = ""
        self._read_at = -1e9

    def fresh(self) -> tuple[dict[str, int], str] | None:
        """The counters and their token if read within ``max_age``, else None (no I/O)."""
        if self._value is not None and time.monotonic() - self._read_at < self.max_age:
            return self._value, self._token
        return None

    def current(self) -> tuple[dict[str, int], str]:
        """The counters and their token, read now unless another thread just did."""
        with self._lock:
            found = self.fresh()
            if found is not None:
                return found
            value = counters(self.store)
            self._value, self._token, self._read_at = value, token(value), time.monotonic()
            return value, self._token
