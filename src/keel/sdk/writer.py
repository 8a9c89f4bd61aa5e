"""One delivery path for what the SDK writes: a bounded queue, a spool, idempotent retries.

A logging call validates on its own thread, appends a tuple to a deque and
returns (``collections.deque.append`` is atomic): it never waits on storage
and never writes to the store itself. Behind each :class:`BatchWriter` (one per
stream: runs, conversations, LLM calls, A/B exposures) two daemon threads work:

- the **collector** wakes every ``interval`` seconds (or once ``wake_at`` rows
  wait), drains the deques into one batch with a client-made id, and queues it
  in memory; while the store or server is away, or while memory is above its
  share of the cap, or while older batches already wait on disk, it appends
  the batches to the **spool** instead (:mod:`keel.sdk.spool`: checksummed
  records in append-only segment files, fsynced in batches), so the order of
  batches is kept: the spool holds the older ones, memory the newer;
- the **deliverer** writes the oldest batch (spool first, then memory, then
  the spools left by processes that died: see below) through ``write`` and
  retries a *transient* failure (a ``StoreError``, e.g. the database is locked,
  restarting or unreachable, the server answers 502/503/504 or not at all; an
  ``OSError``) with exponential back-off and jitter, for as long as it takes.
  Every batch carries its id, and the store writes a batch id once
  (:mod:`keel.meta.delivered`), so a batch whose first attempt committed
  without an answer is not stored twice.

A *permanent* failure (a :class:`~keel.errors.KeelError` other than
``StoreError``: the server refused the rows, a row is invalid; an unknown
error that persists ``max_attempts`` tries) is not retried: a batch of several
runs' rows (``split``) is written run by run, so only the refused run's rows
are lost; they are counted per run with the first error (:meth:`take_loss`:
``Run.finish()``/``flush()`` raise :class:`~keel.errors.WriteFailed`; at exit the
session prints one line and exits non-zero for what nobody reported).

**Memory** is bounded: every writer of the process shares one cap
(``KEEL_QUEUE_MEMORY_MB``, default 64 MB; rows are counted approximately, by a
per-stream size estimate). Past half of it batches go to the spool; rows that
would take memory past the cap while the spool cannot be written either (a full
disk) are refused at the call and counted as lost, never dropped silently.

**Flushing** (:meth:`flush`) waits for everything logged before it to be
delivered, at most ``KEEL_FLUSH_TIMEOUT`` seconds (default 5); then what is
left goes to the spool (fsynced) and it returns False: after ``flush()`` the
rows are in the store or on disk. At exit the session flushes every writer
under one deadline (see :mod:`keel.sdk.session`).

**Orphans.** A spool segment no live process holds (its process exited with
rows left, or was killed) is claimed by the deliverer of the same stream and
destination in the next keel process (at start, then every few seconds when
idle) or by ``keel sync``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from keel.core.batch import WriteBatch
from keel.errors import KeelError, RateLimited, StoreError, WriteFailed

__all__ = [
    "DEFAULT_FLUSH_TIMEOUT",
    "DEFAULT_MEMORY_MB",
    "BatchWriter",
    "Loss",
    "flush_timeout",
    "split_by_run",
]

log = logging.getLogger("keel")

_KINDS = {"r": "new_runs", "p": "params", "t": "tags", "a": "artifacts", "l": "lineage", "e": "run_ends"}
_MAX_CAUSE = 500  # characters of the refusing error kept in a WriteFailed
DEFAULT_FLUSH_TIMEOUT = 5.0
DEFAULT_MEMORY_MB = 64
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 2.0
_RESCAN_S = 10.0  # how often an idle deliverer looks for orphan segments
_SYNC_EVERY_S = 0.25  # the collector fsyncs the spool at most this often
_RECENT = 256  # ids of batches delivered from memory, remembered to skip their spilled copies
_STALLED_S = 1.0  # an attempt waiting this long on the store sends new batches to the spool


def flush_timeout() -> float:
    """Seconds a flush (``finish()``, exit, SIGTERM) waits for delivery: ``KEEL_FLUSH_TIMEOUT``, default 5."""
    text = os.environ.get("KEEL_FLUSH_TIMEOUT", "")
    try:
        value = float(text) if text else DEFAULT_FLUSH_TIMEOUT
    except ValueError:
        return DEFAULT_FLUSH_TIMEOUT
    return value if value >= 0 else DEFAULT_FLUSH_TIMEOUT


class MemoryBudget:
    """The memory cap every writer of the process shares (bytes, counted approximately).

    ``KEEL_QUEUE_MEMORY_MB`` is read when a writer is created."""

    def __init__(self) -> None:
        self.writers: list[BatchWriter] = []
        self.cap = DEFAULT_MEMORY_MB << 20

    def add(self, writer: BatchWriter) -> None:
        text = os.environ.get("KEEL_QUEUE_MEMORY_MB", "")
        try:
            megabytes = float(text) if text else DEFAULT_MEMORY_MB
        except ValueError:
            megabytes = DEFAULT_MEMORY_MB
        self.cap = max(1, int(megabytes * (1 << 20)))
        self.writers.append(writer)

    def queued(self) -> int:
        """Bytes of batches waiting in memory, all writers."""
        return sum(w._mem_bytes for w in list(self.writers))

    def rows_bytes(self) -> int:
        """Bytes of rows not collected yet, all writers."""
        return sum(w._row_count() * w.row_bytes for w in list(self.writers))


BUDGET = MemoryBudget()


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


def _permanent(error: BaseException) -> bool:
    """Whether retrying cannot help: a KeelError other than a StoreError (refused, invalid...)."""
    return isinstance(error, KeelError) and not isinstance(error, StoreError) and not isinstance(error, RateLimited)


def _kind(error: BaseException) -> str:
    """``transient`` (retry until delivered), ``permanent`` (never retry) or ``unknown``
    (retry ``max_attempts`` times: a server's internal error, a bug)."""
    if isinstance(error, StoreError | RateLimited | OSError | TimeoutError):
        return "transient"
    if isinstance(error, KeelError):
        if error.code in ("internal", "error") and error.http_status >= 500:
            return "unknown"
        return "permanent"
    if isinstance(error, Exception):
        return "unknown"
    return "transient"  # an interruption (KeyboardInterrupt in a sink): nothing was written


class _Entry:
    """A batch waiting in memory."""

    __slots__ = ("batch", "batch_id", "created", "nbytes", "rows", "seq")

    def __init__(self, seq: int, batch_id: str, batch: Any, rows: int, nbytes: int, created: int) -> None:
        self.seq = seq
        self.batch_id = batch_id
        self.batch = batch
        self.rows = rows
        self.nbytes = nbytes
        self.created = created


class _Stopped(Exception):
    """The writer was closed while a batch waited for a retry (it stays queued)."""


class BatchWriter:
    """Queues rows and delivers them in the background through ``write`` (see the module doc).

    Args:
        write: ``write(batch)`` or ``write(batch, batch_id)`` (a service's ``write_batch``).
        interval: seconds between two collections of the queued rows.
        wake_at: queued rows that wake the collector early.
        max_attempts: tries of a batch whose error is neither transient nor permanent.
        idle: store upkeep run by the deliverer about every ``idle_every`` seconds.
        new_batch: makes an empty batch; ``kinds`` maps :meth:`add`'s kind to its list.
        split: cuts a refused batch into per-run parts (see :func:`split_by_run`).
        stream: the stream's name (``runs``, ``conversations``, ``llm``, ``exposures``).
        spool: the stream's :class:`~keel.sdk.spool.StreamSpool`, or None (memory only).
        row_bytes: the estimated memory of one queued row.
        prepare: turns a batch into one the spool can encode (e.g. SDK response objects
            into JSON data), called by the collector before spooling.
        on_reject: called with each batch part given up on (e.g. to forget cached state).
        chunk_rows: rows per batch at most (a larger collection is cut, in order).
    """

    def __init__(
        self,
        write: Callable[..., Any],
        interval: float = 0.2,
        wake_at: int = 20_000,
        max_pending: int | None = None,
        max_attempts: int = 5,
        idle: Callable[[], None] | None = None,
        idle_every: float = 1.0,
        new_batch: Callable[[], Any] = WriteBatch,
        kinds: Mapping[str, str] = _KINDS,
        split: Callable[[Any], list[tuple[str | None, Any]]] | None = None,
        *,
        stream: str = "runs",
        spool: Any = None,
        row_bytes: int = 160,
        prepare: Callable[[Any], Any] | None = None,
        on_reject: Callable[[Any], None] | None = None,
        chunk_rows: int = 50_000,
    ) -> None:
        self._write = write
        self._with_id = _takes_batch_id(write)
        self._split = split
        self._new_batch = new_batch
        self._kinds = kinds
        self._idle = idle
        self._prepare = prepare
        self.on_reject = on_reject
        self.idle_every = idle_every
        self.interval = interval
        self.wake_at = wake_at
        self.max_pending = max_pending  # kept for callers of the old signature: memory is capped in bytes
        self.max_attempts = max_attempts
        self.stream = stream
        self.spool = spool
        self.row_bytes = row_bytes
        self.chunk_rows = max(1, chunk_rows)
        self._attempt_since = 0.0
        self._prefix = f"{stream[:1] or 'x'}{os.urandom(8).hex()}"
        # the queue: rows appended by callers, then batches (entries) in memory
        self.metrics: deque[tuple[str, str, float, int, int]] = deque()
        self._ops: deque[tuple[str, Any]] = deque()
        self._row_cap = max(wake_at * 4, 100_000)
        self._mem: deque[_Entry] = deque()
        self._mem_bytes = 0
        self._seq = 0
        self._done_seq = 0
        self._recent: deque[str] = deque(maxlen=_RECENT)
        self._claimed: list[Any] = []  # orphan segments this writer delivers
        self._claimed_rows = 0
        self.recovered = 0  # rows delivered from segments earlier processes left
        # threads and locks
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._collect_lock = threading.Lock()
        self._wake = threading.Event()
        self._start_lock = threading.Lock()
        self._scan_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._deliverer: threading.Thread | None = None
        self._closed = False
        self._stop = False
        self._last_idle = time.monotonic()
        self._last_scan = 0.0
        self._last_sync = 0.0
        self._unsynced = False
        # health and counters
        self._failing = False  # the last attempt failed transiently: new batches go to the spool
        self._failures = 0
        self._lost: dict[str | None, Loss] = {}  # rows given up on, by run, until someone reports them
        self._lost_lock = threading.Lock()
        self.errors = 0  # permanent failures
        self.failed = 0  # rows given up on (refused, or no room anywhere)
        self.written = 0  # rows delivered
        self.last_error: BaseException | None = None
        self.last_error_at = 0.0
        self._full_warned = False
        self._spool_warned = False
        self._kick = False  # a flush waits: retry now rather than after the back-off
        self._delivered_news = False  # batches done since waiting flushes were last woken
        BUDGET.add(self)

    # -- producer side (user threads) ------------------------------------------------------------
    def add_metric(self, row: tuple[str, str, float, int, int]) -> None:
        """Queue one metric row ``(run_id, key, value, step, timestamp)``."""
        metrics = self.metrics
        metrics.append(row)
        if len(metrics) >= self.wake_at:
            self._pressure(metrics, False)
        if self._thread is None:
            self._start()

    def add(self, kind: str, row: tuple[Any, ...]) -> None:
        """Queue a new run (``r``), param (``p``), tag (``t``), artifact (``a``), edge (``l``)
        or run end (``e``) (or the kinds given as ``kinds``)."""
        ops = self._ops
        ops.append((kind, row))
        if len(ops) >= self.wake_at:
            self._pressure(ops, True)
        if self._thread is None:
            self._start()

    def _pressure(self, queue: deque[Any], ops: bool) -> None:
        """Many rows wait: wake the collector; past the memory cap, refuse the row (counted)."""
        if len(queue) >= self._row_cap and not self._closed:
            try:
                row = queue.pop()  # the newest: this call's, or a concurrent one's (same count)
            except IndexError:
                return
            if ops:
                row = row[1]
            key = row[0] if self._split is not None and row and isinstance(row[0], str) else None
            self._lose(key, 1, self._full_error(), quiet=True)
        self._wake.set()

    def _full_error(self) -> StoreError:
        spool = self.spool
        why = (
            f"the spool cannot be written ({spool.error})"
            if spool is not None and spool.error
            else ("there is no spool" if spool is None else "the spool cannot keep up")
        )
        return StoreError(
            f"the delivery queue is full ({BUDGET.cap >> 20} MB of logged rows wait) and {why}",
            "free disk space for the spool (KEEL_SPOOL_DIR), or raise KEEL_QUEUE_MEMORY_MB",
        )

    # -- flushing and closing ---------------------------------------------------------------------
    def collect(self) -> int:
        """Move the queued rows into a batch now; the sequence number everything up to now has."""
        return self._collect(update=True)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued before the call is delivered, at most ``timeout`` seconds
        (default :func:`flush_timeout`); True when it is. Otherwise what is left goes to the
        spool (fsynced) and it returns False: the rows are in the store or on disk."""
        target = self._collect()
        deadline = time.monotonic() + (flush_timeout() if timeout is None else timeout)
        if self.wait(target, deadline):
            return True
        self.spill()
        return False

    def wait(self, target: int, deadline: float) -> bool:
        """Wait until batches up to sequence ``target`` are delivered (or given up on), until
        ``deadline`` (``time.monotonic()``); True when they are."""
        if target <= self._done_seq:
            return True
        if self._deliverer is None:
            self._start()
        with self._cond:
            self._kick = True
            self._cond.notify_all()
            while self._done_seq < target:
                left = deadline - time.monotonic()
                if left <= 0 or self._deliverer is None or not self._deliverer.is_alive():
                    return self._done_seq >= target
                self._cond.wait(min(left, 0.5))
        return True

    def spill(self) -> int:
        """Move every batch waiting in memory (and the rows not collected yet) to the spool and
        fsync it; the rows that could be neither delivered nor spooled are counted as lost.
        Returns the rows now waiting in the spool (this process's)."""
        self._collect(spill=True)
        if self.spool is not None:
            self.spool.sync()
        return self.spool.rows if self.spool is not None else 0

    def close(self, timeout: float | None = None) -> bool:
        """Flush (bounded), then stop the threads; rows left stay in the spool for the next
        process. True when everything was delivered."""
        delivered = self.flush(timeout) if not self._closed else True
        self.stop()
        return delivered

    def stop(self) -> int:
        """Stop the threads; rows still in memory go to the spool first (see :meth:`spill`).
        Returns the rows this process leaves in the spool (for the next process)."""
        if self._stop:
            return 0
        self._closed = True
        if self._mem or self._row_count():
            self.spill()
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._wake.set()
        with contextlib.suppress(ValueError):
            BUDGET.writers.remove(self)
        for thread in (self._thread, self._deliverer):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=0.2)
        if self._mem or self._row_count():  # neither delivered nor spooled (no spool, or the disk refused it)
            self._lose_entries(list(self._mem), self._full_error() if self.spool is not None else self._nowhere())
            self._mem.clear()
            self._mem_bytes = 0
        for segment in self._claimed:
            segment.release(delete=False)
        self._claimed = []
        left = 0
        if self.spool is not None:
            left = self.spool.rows
            self.spool.close()
        return left

    def _nowhere(self) -> StoreError:
        error = self.last_error
        cause = f": {error}" if error is not None else ""
        return StoreError(
            f"the store could not be reached before the exit deadline and there is no spool{cause}",
            "set KEEL_SPOOL_DIR to a writable folder so that undelivered rows wait on disk",
        )

    # -- losses -----------------------------------------------------------------------------------
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

    # -- state ------------------------------------------------------------------------------------
    def _row_count(self) -> int:
        return len(self.metrics) + len(self._ops)

    @property
    def queued(self) -> int:
        """Rows waiting in memory (not collected yet, or in batches)."""
        return self._row_count() + sum(e.rows for e in list(self._mem))

    @property
    def spooled(self) -> int:
        """Rows waiting in the spool: this process's, and the orphans it took over."""
        return (self.spool.rows if self.spool is not None else 0) + self._claimed_rows

    @property
    def pending(self) -> int:
        """Rows logged and not delivered yet (in memory or in the spool)."""
        return self.queued + self.spooled

    def status(self) -> dict[str, Any]:
        """This stream's delivery, for :func:`keel.delivery.status`."""
        now = time.time() * 1000
        oldest: list[float] = []
        mem = list(self._mem)
        if mem:
            oldest.append(mem[0].created)
        if self.spool is not None:
            first = self.spool.oldest()
            if first is not None:
                oldest.append(first)
        if self._row_count():
            oldest.append(now - self.interval * 1000)
        error = self.last_error
        return {
            "queued": self.queued,
            "spooled": self.spooled,
            "delivered": self.written,
            "rejected": self.failed,
            "last_error": None if error is None else f"{type(error).__name__}: {error}"[:_MAX_CAUSE],
            "oldest_undelivered_age_s": round(max(0.0, (now - min(oldest)) / 1000), 3) if oldest else None,
        }

    # -- threads ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the threads now (they start with the first row otherwise): e.g. to deliver orphans."""
        self._start()

    def _start(self) -> None:
        if self._stop:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._collect_loop, name=f"keel-{self.stream}-queue", daemon=True
                )
                self._thread.start()
            if self._deliverer is None:
                self._deliverer = threading.Thread(
                    target=self._deliver_loop, name=f"keel-{self.stream}-delivery", daemon=True
                )
                self._deliverer.start()

    # -- the collector ------------------------------------------------------------------------------
    def _collect_loop(self) -> None:
        while not self._stop:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop:
                return
            try:
                self._collect(update=True)
                if self._unsynced and time.monotonic() - self._last_sync >= _SYNC_EVERY_S and self.spool is not None:
                    self._unsynced = False
                    self._last_sync = time.monotonic()
                    self.spool.sync()
                self._upkeep()
            except Exception:  # pragma: no cover - _collect handles its own errors
                log.exception("keel: the %s queue failed", self.stream)

    def _drain(self) -> Any:
        ops = self._ops
        metrics = self.metrics
        taken_ops = [ops.popleft() for _ in range(len(ops))]
        taken = [metrics.popleft() for _ in range(len(metrics))]
        if not taken_ops and not taken:
            return None
        batch = self._new_batch()
        if taken:
            batch.metrics.extend(taken)
        kinds = self._kinds
        for kind, row in taken_ops:
            getattr(batch, kinds[kind]).append(row)
        return batch

    def _collect(self, spill: bool = False, update: bool = False) -> int:
        """Drain the rows into a batch; queue it in memory, or (with older batches on disk, a
        failing store, memory above its share, or ``spill``) move memory and it to the spool."""
        with self._collect_lock:
            batch = self._drain()
            entries = []
            if batch is not None:
                now = _now_ms()
                stamp = f"{now:012x}"  # ids sort by age: the store prunes them by key range
                for part in self._chunks(batch):
                    rows = len(part)
                    self._seq += 1
                    batch_id = f"{stamp}-{self._prefix}-{self._seq}"
                    entries.append(_Entry(self._seq, batch_id, part, rows, rows * self.row_bytes, now))
            spool = self.spool
            to_disk = spill or (
                spool is not None and (self._failing or self._stalled() or spool.records > 0 or self._memory_high())
            )
            with self._cond:
                for entry in entries:
                    self._mem.append(entry)
                    self._mem_bytes += entry.nbytes
                if not to_disk:
                    self._cond.notify_all()
            if to_disk and spool is not None and self._mem:
                self._spill_memory(spool)
            if update:
                self._update_row_cap()
            with self._cond:
                self._cond.notify_all()
            return self._seq

    def _memory_high(self) -> bool:
        """Whether batches in memory (all writers) take over half the cap (summed only once
        this writer's own take an eighth of it: the common case costs one comparison)."""
        cap = BUDGET.cap
        return self._mem_bytes > cap // 8 and BUDGET.queued() > cap // 2

    def _chunks(self, batch: Any) -> list[Any]:
        """``batch`` as batches of at most ``chunk_rows`` rows (each is encoded, spooled and
        written on its own: no single encode holds the interpreter long)."""
        if len(batch) <= self.chunk_rows:
            return [batch]
        from keel.sdk.remote import split_batch

        return split_batch(batch, self.chunk_rows)

    def _stalled(self) -> bool:
        """Whether the attempt in progress has been waiting on the store for over a second
        (a locked database waits in its busy timeout rather than failing)."""
        since = self._attempt_since
        return since > 0 and time.monotonic() - since > _STALLED_S

    def _spill_memory(self, spool: Any) -> None:
        """Append every batch waiting in memory to the spool (in order); on a disk error they stay
        in memory (and the error is kept for status and for the rows refused past the cap)."""
        with self._lock:
            entries = list(self._mem)
        if not entries:
            return
        from keel.sdk.spool import encode_batch

        spilled: set[int] = set()
        try:
            for entry in entries:
                batch = self._prepare(entry.batch) if self._prepare is not None else entry.batch
                payload = encode_batch(entry.batch_id, batch, entry.created)
                spool.append([(entry.seq, entry.batch_id, entry.rows, entry.created, payload)])
                spilled.add(id(entry))
                if self.stream != "runs" and entry.rows:  # learn what a row of this stream weighs
                    weight = int(2.5 * len(payload) / entry.rows) + 64
                    self.row_bytes = max(64, (self.row_bytes * 4 + weight) // 5)
        except OSError as exc:
            self._note_error(exc)
            if not self._spool_warned:
                self._spool_warned = True
                log.warning("keel: cannot write the %s spool (%s): logged rows wait in memory", self.stream, exc)
        except Exception as exc:  # a batch the spool cannot encode: a bug; it stays in memory
            log.warning("keel: cannot spool a %s batch: %s: %s", self.stream, type(exc).__name__, exc)
        if not spilled:
            return
        if spool.error is None:
            self._spool_warned = False
        self._unsynced = True
        with self._cond:
            self._mem = deque(e for e in self._mem if id(e) not in spilled)
            self._mem_bytes = sum(e.nbytes for e in self._mem)
            self._cond.notify_all()

    def _update_row_cap(self) -> None:
        room = BUDGET.cap - BUDGET.queued()
        others = BUDGET.rows_bytes() - self._row_count() * self.row_bytes
        self._row_cap = max(self.wake_at, int(max(0, room - others) // max(1, self.row_bytes)))

    # -- the deliverer ------------------------------------------------------------------------------
    def _deliver_loop(self) -> None:
        self._scan_orphans()
        while not self._stop:
            try:
                if not self._deliver_next():
                    self._idle_work()
                with self._cond:
                    # Wake a flush waiting for what was just delivered as this thread goes to
                    # sleep (one lock hold): the flush then runs without waiting on this thread.
                    if self._delivered_news:
                        self._delivered_news = False
                        self._cond.notify_all()
                    if not self._stop and self._nothing_to_do():
                        self._cond.wait(min(1.0, max(self.interval, 0.05) * 5))
            except _Stopped:
                return
            except Exception:  # pragma: no cover - a bug: keep delivering
                log.exception("keel: the %s delivery failed", self.stream)
                time.sleep(0.5)

    def _nothing_to_do(self) -> bool:
        spool = self.spool
        return not self._mem and not self._claimed and (spool is None or spool.records == 0)

    def _idle_work(self) -> None:
        if time.monotonic() - self._last_scan >= _RESCAN_S:
            self._scan_orphans()

    def _upkeep(self) -> None:
        """The store's upkeep (a WAL checkpoint: up to ~100 ms), on the collector's thread, so a
        flush never waits behind it."""
        now = time.monotonic()
        if self._idle is not None and not self._failing and now - self._last_idle >= self.idle_every:
            self._last_idle = now
            try:
                self._idle()
            except Exception as exc:  # upkeep is best effort
                log.debug("keel: %s upkeep failed: %s", self.stream, exc)

    def _scan_orphans(self) -> None:
        with self._scan_lock:  # claimed and listed at once: claim_orphans() sees what a scan took
            self._scan_orphans_locked()

    def _scan_orphans_locked(self) -> None:
        self._last_scan = time.monotonic()
        spool = self.spool
        if spool is None or self._claimed:
            return
        try:
            if not spool.orphans_present():
                return
            claimed = spool.claim_orphans()
        except OSError as exc:
            log.debug("keel: cannot look for orphan %s spool segments: %s", self.stream, exc)
            return
        if claimed:
            rows = sum(segment.rows_left()[1] for segment in claimed)
            with self._cond:
                self._claimed.extend(claimed)
                self._claimed_rows += rows
                self._cond.notify_all()
            log.info("keel: delivering %d %s rows spooled by an earlier process", rows, self.stream)

    def claim_orphans(self) -> int:
        """Take over the orphan segments of this stream now; the rows they hold (``keel sync``)."""
        self._last_scan = 0.0
        with self._scan_lock:
            self._scan_orphans_locked()
            rows = self._claimed_rows
        self._start()
        return rows

    def _deliver_next(self) -> bool:
        """Deliver the oldest batch; False when there is none."""
        spool = self.spool
        with self._lock:
            entry = self._mem[0] if self._mem else None
        record = spool.head() if spool is not None else None
        if record is not None:
            self._deliver_record(spool, record)
            return True
        if entry is not None:
            self._deliver_entry(entry)
            return True
        if self._claimed:
            self._deliver_orphan(self._claimed[0])
            return True
        return False

    def _deliver_entry(self, entry: _Entry) -> None:
        outcome = self._attempt(entry.batch, entry.batch_id, entry.rows)
        with self._cond:
            if outcome is not None and self._mem and self._mem[0] is entry:
                self._mem.popleft()
                self._mem_bytes -= entry.nbytes
            if outcome is not None:
                self._recent.append(entry.batch_id)
                self._done_seq = max(self._done_seq, entry.seq)
                self._delivered_news = True  # the loop wakes the waiting flushes

    def _deliver_record(self, spool: Any, record: Any) -> None:
        if record.batch_id in self._recent:  # delivered from memory while it was being spooled
            spool.done(record)
            self._advance(record.seq)
            return
        from keel.sdk.spool import decode_batch

        try:
            batch_id, batch = decode_batch(spool.read(record))
        except OSError as exc:
            self._transient(exc)
            return
        except KeelError as exc:  # a damaged record: its rows cannot be known, only counted
            self._lose(None, record.rows, exc)
            spool.done(record)
            self._advance(record.seq)
            return
        if self._attempt(batch, batch_id, record.rows) is not None:
            spool.done(record)
            self._advance(record.seq)

    def _advance(self, seq: int) -> None:
        with self._cond:
            self._done_seq = max(self._done_seq, seq)
            self._delivered_news = True  # the loop wakes the waiting flushes

    def _deliver_orphan(self, segment: Any) -> None:
        from keel.sdk.spool import decode_batch

        found = segment.next()
        if found is None:
            if segment.damaged:
                log.warning(
                    "keel: %d damaged bytes at the end of spool segment %s were skipped", segment.damaged, segment.path
                )
                self._lose(None, 0, StoreError(f"damaged spool segment {segment.path}"), quiet=True)
                with contextlib.suppress(OSError):
                    os.rename(segment.path, segment.path.with_name(segment.path.name + ".damaged"))
            segment.release(delete=not segment.damaged)
            with self._cond:
                self._claimed.remove(segment)
            return
        record, payload = found
        try:
            batch_id, batch = decode_batch(payload)
        except KeelError as exc:
            self._lose(None, record.rows, exc)
            segment.ack(record)
            with self._cond:
                self._claimed_rows -= record.rows
            return
        outcome = self._attempt(batch, batch_id, record.rows)
        if outcome is not None:
            segment.ack(record)
            with self._cond:
                self._claimed_rows -= record.rows
                if outcome == "delivered":
                    self.recovered += record.rows
                self._cond.notify_all()

    def _attempt(self, batch: Any, batch_id: str, rows: int) -> str | None:
        """Deliver one batch: ``"delivered"`` or ``"refused"`` (done with it either way), or None
        after a transient failure (it stays the head; the caller tries again after back-off)."""
        error = self._try(batch, batch_id)
        if error is None:
            self.written += rows
            self._healthy()
            return "delivered"
        kind = _kind(error)
        if kind == "transient" or (kind == "unknown" and self._failures + 1 < self.max_attempts):
            self._transient(error)
            return None
        self._healthy()
        self._refused(batch, batch_id, error)
        return "refused"

    def _try(self, batch: Any, batch_id: str) -> BaseException | None:
        self._attempt_since = time.monotonic()
        try:
            if self._with_id:
                self._write(batch, batch_id=batch_id)
            else:
                self._write(batch)
        except BaseException as exc:  # noqa: BLE001 - every failure is classified by _kind
            self._attempt_since = 0.0
            if (
                isinstance(exc, SystemExit | KeyboardInterrupt)
                and threading.current_thread() is threading.main_thread()
            ):
                raise
            return exc
        self._attempt_since = 0.0
        return None

    def _healthy(self) -> None:
        self._failures = 0
        if self._failing:
            self._failing = False
            log.info("keel: the %s store answers again; delivering", self.stream)

    def _transient(self, error: BaseException) -> None:
        """A failed attempt that may succeed later: note it, then back off (interruptibly)."""
        self._failures += 1
        self._note_error(error)
        if not self._failing:
            self._failing = True
            log.info("keel: %s delivery is waiting for the store (%s); rows go to the spool", self.stream, error)
            self._wake.set()  # the collector moves what waits in memory to the spool
        ceiling = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** min(self._failures - 1, 10))
        until = time.monotonic() + ceiling / 2 + random.uniform(0, ceiling / 2)
        with self._cond:
            self._kick = False
            while not self._stop and not self._kick:
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            self._kick = False
            if self._stop:
                raise _Stopped

    def _note_error(self, error: BaseException) -> None:
        self.last_error = error
        self.last_error_at = time.time()

    def _refused(self, batch: Any, batch_id: str, error: BaseException) -> None:
        """A permanent refusal: write each run's rows alone (when there are several runs), so
        only the refused run's rows are lost."""
        parts = self._split(batch) if self._split is not None else [(None, batch)]
        if len(parts) <= 1:
            key = parts[0][0] if parts else None
            self._lose(key, len(batch), error)
            self._rejected(batch)
            return
        for index, (key, part) in enumerate(parts):
            part_error = self._until_decided(part, f"{batch_id}.r{index}")
            if part_error is None:
                self.written += len(part)
            else:
                self._lose(key, len(part), part_error)
                self._rejected(part)

    def _until_decided(self, part: Any, part_id: str) -> BaseException | None:
        """Write one part, retrying transient failures (raises _Stopped when closed meanwhile)."""
        while True:
            error = self._try(part, part_id)
            if error is None:
                self._healthy()
                return None
            kind = _kind(error)
            if kind == "permanent" or (kind == "unknown" and self._failures + 1 >= self.max_attempts):
                self._healthy()
                return error
            self._transient(error)

    def _rejected(self, batch: Any) -> None:
        if self.on_reject is not None:
            try:
                self.on_reject(batch)
            except Exception as exc:  # noqa: BLE001 - a callback never stops delivery
                log.debug("keel: the %s reject callback failed: %s", self.stream, exc)

    def _lose(self, key: str | None, rows: int, error: BaseException, quiet: bool = False) -> None:
        """Give up on ``rows`` rows of run ``key``: count them until someone reports them
        (``quiet``: say so once per writer, not per row)."""
        with self._lost_lock:
            loss = self._lost.get(key)
            if loss is None:
                self._lost[key] = Loss(rows, error)
            else:
                loss.rows += rows
            self.errors += 1
            self.failed += rows
        self._note_error(error)
        if quiet:
            if self._full_warned:
                return
            self._full_warned = True
        # A run's loss is raised by its finish()/flush() (or reported at exit); rows of no run
        # (conversations, recorded calls) have nobody to raise them until then: say so now.
        log.log(
            logging.INFO if key is not None else logging.WARNING,
            "keel: could not write %d logged rows%s: %s",
            rows,
            f" of run {key[:8]}" if key is not None else "",
            error,
        )

    def _lose_entries(self, entries: list[_Entry], error: BaseException) -> None:
        """Count as lost what is left in memory when the writer stops (quietly: the exit line
        of the session reports it, with the first error)."""
        batches = [entry.batch for entry in entries]
        rest = self._drain()
        if rest is not None:
            batches.append(rest)
        for batch in batches:
            parts = self._split(batch) if self._split is not None else [(None, batch)]
            for key, part in parts:
                self._lose(key, len(part), error, quiet=True)
                self._rejected(part)


def _takes_batch_id(write: Callable[..., Any]) -> bool:
    """Whether ``write`` accepts a ``batch_id`` (a service's ``write_batch``) or only the batch."""
    try:
        parameters = inspect.signature(write).parameters
    except (TypeError, ValueError):
        return False
    return "batch_id" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
