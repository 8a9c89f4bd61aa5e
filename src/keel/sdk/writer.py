"""Background batching: logging costs an append; one thread writes batches.

User code appends tuples to lock-free deques (``collections.deque.append``
is atomic). One daemon thread per store wakes every ``interval`` seconds, or
as soon as ``wake_at`` metrics are pending, drains everything into one
:class:`WriteBatch` and writes it in one transaction. If the thread falls behind (``max_pending`` metrics
queued), the logging thread writes the queue itself, so memory stays bounded.

Durability: :meth:`BatchWriter.flush` returns once everything appended before
it is committed (it writes on the calling thread). ``Run.finish()``, leaving a ``with`` block, interpreter exit
(``atexit``) and SIGTERM all flush. A hard kill (SIGKILL, power loss of the
process) loses at most what was appended since the last commit, i.e. the
last ``interval`` seconds of logging; earlier commits and the database file
are never damaged (SQLite WAL, one transaction per batch).

The same thread runs the store's upkeep (``idle``, e.g. a SQLite WAL
checkpoint) about once a second, off the logging path.

The same class writes other kinds of batches (conversations): ``new_batch``
makes an empty batch, and ``kinds`` maps the one-letter kind given to
:meth:`BatchWriter.add` to the batch's list attribute.

Failures never reach the logging call: a transient database error (locked,
connection lost) is retried with back-off; a batch that still fails after
``max_attempts`` is logged with ``logging`` and counted in ``errors``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from keel.core.batch import WriteBatch
from keel.errors import KeelError, StoreError

__all__ = ["BatchWriter"]

log = logging.getLogger("keel")

_KINDS = {"r": "new_runs", "p": "params", "t": "tags", "a": "artifacts", "l": "lineage", "e": "run_ends"}


class BatchWriter:
    """Buffers rows and writes them in the background through ``write``."""

    def __init__(
        self,
        write: Callable[[Any], None],
        interval: float = 0.2,
        wake_at: int = 20_000,
        max_pending: int = 60_000,
        max_attempts: int = 5,
        idle: Callable[[], None] | None = None,
        idle_every: float = 1.0,
        new_batch: Callable[[], Any] = WriteBatch,
        kinds: Mapping[str, str] = _KINDS,
    ) -> None:
        self._write = write
        self._new_batch = new_batch
        self._kinds = kinds
        self._idle = idle
        self.idle_every = idle_every
        self._last_idle = time.monotonic()
        self.interval = interval
        self.wake_at = wake_at
        self.max_pending = max_pending
        self.max_attempts = max_attempts
        self.metrics: deque[tuple[str, str, float, int, int]] = deque()
        self._ops: deque[tuple[str, Any]] = deque()
        self._wake = threading.Event()
        self._write_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._interrupted: Any = None  # a batch (``new_batch()``) a signal interrupted
        self.errors = 0
        self.failed = 0  # rows given up on after max_attempts
        self.last_error: BaseException | None = None
        self.written = 0

    # -- producer side (user threads) ----------------------------------------
    def add_metric(self, row: tuple[str, str, float, int, int]) -> None:
        """Queue one metric row ``(run_id, key, value, step, timestamp)``."""
        self.metrics.append(row)
        pending = len(self.metrics)
        if pending >= self.wake_at:
            if pending >= self.max_pending:
                self._drain_and_write()  # back-pressure: the writer is behind, so help it
            else:
                self._wake.set()
        if self._thread is None:
            self._start()

    def add(self, kind: str, row: tuple[Any, ...]) -> None:
        """Queue a new run (``r``), param (``p``), tag (``t``), artifact (``a``), edge (``l``)
        or run end (``e``)."""
        self._ops.append((kind, row))
        pending = len(self._ops)
        if pending >= self.wake_at:
            if pending >= self.max_pending:
                self._drain_and_write()
            else:
                self._wake.set()
        if self._thread is None:
            self._start()

    def flush(self) -> None:
        """Write everything queued so far, on the calling thread, before returning.

        Writing here rather than handing off to the writer thread saves two
        thread switches per ``finish()``; the write lock keeps batches in order.
        """
        self._drain_and_write()

    def close(self) -> None:
        """Flush and stop the thread."""
        self._closed = True
        self.flush()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def pending(self) -> int:
        """Rows queued but not yet handed to the store."""
        return len(self.metrics) + len(self._ops) + (len(self._interrupted) if self._interrupted else 0)

    # -- consumer side (the writer thread) -------------------------------------
    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="keel-writer", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self._drain_and_write()
                if self._idle is not None and time.monotonic() - self._last_idle >= self.idle_every:
                    self._last_idle = time.monotonic()
                    self._idle()
            except Exception:  # pragma: no cover - _drain_and_write handles its own errors
                log.exception("keel: the background writer failed")

    def _drain_and_write(self) -> None:
        with self._write_lock:
            ops = [self._ops.popleft() for _ in range(len(self._ops))]
            metrics = self.metrics
            drained = [metrics.popleft() for _ in range(len(metrics))]
            batch, self._interrupted = self._interrupted, None
            if batch is None:
                batch = self._new_batch()
            if drained:
                batch.metrics.extend(drained)
            kinds = self._kinds
            for kind, row in ops:
                getattr(batch, kinds[kind]).append(row)
            if len(batch):
                try:
                    self._write_with_retries(batch)
                except BaseException:
                    # Ctrl-C or SIGTERM's SystemExit arrived mid-write (the transaction
                    # rolled back): keep the rows for the flush at exit.
                    self._interrupted = batch
                    raise

    def _write_with_retries(self, batch: WriteBatch) -> None:
        delay = 0.05
        for attempt in range(1, self.max_attempts + 1):
            try:
                self._write(batch)
                self.written += len(batch)
                return
            except KeelError as exc:
                transient = isinstance(exc, StoreError)
                error: BaseException = exc
            except Exception as exc:  # a driver error: a locked or lost database
                transient = True
                error = exc
            if not transient or attempt == self.max_attempts:
                self.errors += 1
                self.failed += len(batch)
                self.last_error = error
                log.error("keel: could not write %d logged rows: %s", len(batch), error)
                return
            time.sleep(delay)
            delay = min(delay * 4, 2.0)
