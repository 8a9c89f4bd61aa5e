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

Ids are kept :data:`RETENTION_MS` (7 days), then pruned (at most every
:data:`PRUNE_EVERY_S` per process, inside a write that claims an id): a batch
re-sent after its first attempt committed *and* more than a week passed would
be stored again. The spool delivers long before that (see ``docs/delivery.md``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from keel.core.entities import now_ms
from keel.meta.engine import Database

__all__ = ["PRUNE_EVERY_S", "RETENTION_MS", "claim_batch"]

RETENTION_MS = 7 * 24 * 3600 * 1000
PRUNE_EVERY_S = 600.0

_CLAIM = "INSERT INTO delivered_batches (batch_id, created_at) VALUES (?, ?) ON CONFLICT (batch_id) DO NOTHING"
_PRUNE = "DELETE FROM delivered_batches WHERE created_at < ?"
_pruned: dict[int, float] = {}  # id(Database) -> when this process last pruned it
_lock = threading.Lock()


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
    cur.execute(db.sql(_PRUNE), (now - RETENTION_MS,))
