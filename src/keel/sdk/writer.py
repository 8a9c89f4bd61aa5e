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

Failures never reach the logging call, and are never silent:

- a transient error (the store is locked, the connection or server is away, a
  driver error) is retried with back-off, up to ``max_attempts`` tries;
- a permanent one (a :class:`~keel.errors.KeelError` other than ``StoreError``:
  the server refused the rows, a row is invalid) of a batch that holds several
  runs' rows (``split``) retries each run's part alone, so only the failing
  run's rows are lost, never another run's;
- rows given up on are counted per run (``split``'s key; None for a writer
  without one) with the first error: :meth:`take_loss` hands them to whoever
  reports them (``Run.finish()``/``flush()`` raise
  :class:`~keel.errors.WriteFailed`; at interpreter exit the session prints
  one line and exits non-zero for what nobody reported).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from keel.core.batch import WriteBatch
from keel.errors import KeelError, StoreError, WriteFailed

__all__ = ["BatchWriter", "Loss", "split_by_run"]

log = logging.getLogger("keel")

_KINDS = {"r": "new_runs", "p": "params", "t": "tags", "a": "artifacts", "l": "lineage", "e": "run_ends"}
_MAX_CAUSE = 500  # characters of the refusing error kept in a WriteFailed


@dataclasses.dataclass
class Loss:
    """Rows a writer gave up on, for one run (or one writer): how many, and the first error."""

    rows: int
    error: BaseException

    def failure(self, run_id: str, name: str = "") -> WriteFailed:
        """The :class:`WriteFailed` that reports this loss for run ``run_id`` (its cause chained)."""
        error = self.error
        if isinstance(error, KeelError):
            cause_code, cause, hint = error.code, error.message, error.hint
        else:
            cause_code, cause, hint = type(error).__name__, str(error) or type(error).__name__, None
        cause = " ".join(cause.split())[:_MAX_CAUSE]
        what = f"run {run_id[:8]}" + (f" ({name})" if name else "")
        failed = WriteFailed(
            f"{self.rows} logged row{'s' if self.rows != 1 else ''} of {what} could not be written: {cause}",
            hint or "those rows are lost; fix the cause and log them again",
            run_id=run_id,
            rows=self.rows,
            cause_code=cause_code,
            cause=cause,
        )
        failed.__cause__ = error
        return failed


def split_by_run(batch: Any) -> list[tuple[str | None, Any]]:
    """A batch's rows grouped by run (each row's first item), one batch per run, in the order
    the runs first appear (``new_runs`` first, so a parent comes before its children)."""
    parts: dict[str | None, Any] = {}
    for spec in dataclasses.fields(batch):
        for row in getattr(batch, spec.name):
            key = row[0] if isinstance(row, tuple) and row and isinstance(row[0], str) else None
            part = parts.get(key)
            if part is None:
                part = parts[key] = type(batch)()
            getattr(part, spec.name).append(row)
    return list(parts.items())


def _merge(parts: list[Any]) -> Any:
    """One batch holding every row of ``parts`` (batches of one dataclass type)."""
    merged = type(parts[0])()
    for part in parts:
        for spec in dataclasses.fields(part):
            getattr(merged, spec.name).extend(getattr(part, spec.name))
    return merged


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
        split: Callable[[Any], list[tuple[str | None, Any]]] | None = None,
    ) -> None:
        self._write = write
        self._split = split
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
        self._unwritten: list[Any] = []  # the batches left of the one being written (for an interruption)
        self._lost: dict[str | None, Loss] = {}  # rows given up on, by run, until someone reports them
        self._lost_lock = threading.Lock()
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

    def take_loss(self, key: str | None) -> Loss | None:
        """The rows of run ``key`` given up on since the last call (and forget them), or None."""
        if not self._lost:  # the common case: one dict check
            return None
        with self._lost_lock:
            return self._lost.pop(key, None)

    def take_losses(self) -> dict[str | None, Loss]:
        """Every loss not reported yet, by run (and forget them)."""
        with self._lost_lock:
            lost, self._lost = self._lost, {}
        return lost

    @property
    def lost(self) -> int:
        """Rows given up on and not reported yet."""
        with self._lost_lock:
            return sum(loss.rows for loss in self._lost.values())

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
                self._unwritten = [batch]
                try:
                    self._write_with_retries(batch)
                except BaseException:
                    # Ctrl-C or SIGTERM's SystemExit arrived mid-write (the transaction
                    # rolled back): keep the rows not written yet for the flush at exit.
                    left = self._unwritten
                    self._interrupted = left[0] if len(left) == 1 else _merge(left) if left else None
                    raise
                finally:
                    self._unwritten = []

    def _write_with_retries(self, batch: Any) -> None:
        error = self._attempt(batch)
        if error is None:
            return
        parts = self._split(batch) if self._split is not None else [(None, batch)]
        if len(parts) > 1 and _permanent(error):
            # One run's rows refused the batch: write each run's rows alone, so only its own are lost.
            for index, (key, part) in enumerate(parts):
                part_error = self._attempt(part)
                self._unwritten = [p for _, p in parts[index + 1 :]]
                if part_error is not None:
                    self._lose(key, len(part), part_error)
        else:
            for key, part in parts:
                self._lose(key, len(part), error)

    def _attempt(self, batch: Any) -> BaseException | None:
        """Write ``batch``, retrying transient errors with back-off; the error given up on, or None."""
        delay = 0.05
        for attempt in range(1, self.max_attempts + 1):
            try:
                self._write(batch)
                self.written += len(batch)
                return None
            except KeelError as exc:
                if _permanent(exc):
                    return exc
                error: BaseException = exc
            except Exception as exc:  # a driver error: a locked or lost database
                error = exc
            if attempt == self.max_attempts:
                return error
            time.sleep(delay)
            delay = min(delay * 4, 2.0)
        return None  # pragma: no cover - max_attempts < 1

    def _lose(self, key: str | None, rows: int, error: BaseException) -> None:
        """Give up on ``rows`` rows of run ``key``: count them until someone reports them."""
        with self._lost_lock:
            loss = self._lost.get(key)
            if loss is None:
                self._lost[key] = Loss(rows, error)
            else:
                loss.rows += rows
        self.errors += 1
        self.failed += rows
        self.last_error = error
        # A run's loss is raised by its finish()/flush() (or reported at exit); rows of no run
        # (conversations, recorded calls) have nobody to raise them until then: say so now.
        log.log(
            logging.INFO if key is not None else logging.WARNING,
            "keel: could not write %d logged rows%s: %s",
            rows,
            f" of run {key[:8]}" if key is not None else "",
            error,
        )


def _permanent(error: BaseException) -> bool:
    """Whether retrying cannot help: a KeelError other than a StoreError (refused, invalid...)."""
    return isinstance(error, KeelError) and not isinstance(error, StoreError)
