"""Idempotent batch writes: a batch id is stored in the transaction of the batch's rows.

The SDK gives every batch it delivers a client-made id (see
:mod:`keel.sdk.writer`) and retries a batch until it is acknowledged: after a
lost connection, a restarted server or database, or from the spool of a
process that died mid-delivery. A batch whose earlier attempt committed must
not be stored twice, so each write path that takes a ``batch_id`` first runs
:func:`claim_batch` inside its own transaction: it inserts the id into
``delivered_batches`` (primary key) and tells whether it was new. When it was
not, the write path returns without writing anything (the rows are there).

Two deliveries of one batch at the same moment (a retry that overtakes the
first attempt, still running on the server) meet on the primary key: on
PostgreSQL the second ``INSERT`` waits for the first transaction and then
inserts nothing; SQLite runs one write transaction at a time anyway.

The SDK's ids start with the batch's creation time, 12 hex digits of
milliseconds (:func:`batch_id_prefix`), so ids sort by age and pruning is a
range of the primary key (no second index to write per batch). Ids are kept
:data:`RETENTION_MS` (7 days) from their batch's creation, then pruned (at
most every :data:`PRUNE_EVERY_S` per process, inside a write that claims an
id); ids of another shape are never pruned. A batch re-sent more than a week
after it was made, when an earlier attempt had committed, would be stored
again (see ``docs/delivery.md``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from keel.core.entities import now_ms
from keel.meta.engine import Database

__all__ = ["PRUNE_EVERY_S", "RETENTION_MS", "batch_id_prefix", "claim_batch"]

RETENTION_MS = 7 * 24 * 3600 * 1000
PRUNE_EVERY_S = 600.0

_CLAIM = "INSERT INTO delivered_batches (batch_id, created_at) VALUES (?, ?) ON CONFLICT (batch_id) DO NOTHING"
_PRUNE = "DELETE FROM delivered_batches WHERE batch_id < ?"
_pruned: dict[int, float] = {}  # id(Database) -> when this process last pruned it
_lock = threading.Lock()


def batch_id_prefix(created_ms: int) -> str:
    """The start of a batch id made at ``created_ms``: 12 hex digits, so ids sort by age."""
    return f"{max(0, created_ms):012x}"


def claim_batch(db: Database, cur: Any, batch_id: str | None) -> bool:
    """Record ``batch_id`` as delivered inside ``cur``'s write transaction: True when it is new
    (write the rows), False when an earlier attempt committed it (write nothing). ``None``
    (a write that is not a delivered batch) is always new and records nothing."""
    if batch_id is None:
        return True
    now = now_ms()
    cur.execute(db.sql(_CLAIM), (batch_id, now))
    fresh = cur.rowcount != 0
    if fresh:
        _maybe_prune(db, cur, now)
    return fresh


def _maybe_prune(db: Database, cur: Any, now: int) -> None:
    key = id(db)
    clock = time.monotonic()
    last = _pruned.get(key)
    if last is not None and clock - last < PRUNE_EVERY_S:
        return
    with _lock:
        _pruned[key] = clock
    cur.execute(db.sql(_PRUNE), (batch_id_prefix(now - RETENTION_MS),))
