"""Spans by time: monthly partitions on PostgreSQL, and retention on every backend.

On PostgreSQL ``spans`` is partitioned by ``start_ns`` (revision 0018): one
partition per calendar month (UTC), named ``spans_pYYYYMM``, created just before
the first span of that month is written (:meth:`TracePartitions.ensure`, in its own
short transaction, never inside a batch's), plus ``spans_default`` for times outside
the window keel makes partitions for (five years back, one month ahead: clock-skewed
or replayed spans). Retention then drops whole months at once instead of deleting
millions of rows.

:meth:`TracePartitions.prune` applies a retention cutoff: months entirely before it
are dropped (PostgreSQL), spans older than it are deleted in bounded batches (the
rest: the default partition, a partial month, every span on SQLite), and a trace's
summary, links and scores go once its last span is past the cutoff.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from keel.errors import KeelError
from keel.meta.engine import Database

__all__ = ["PruneReport", "TracePartitions", "month_range"]

log = logging.getLogger("keel")

_NS = 1_000_000_000
_WINDOW_BACK_DAYS = 5 * 366
_WINDOW_AHEAD_DAYS = 31
_DELETE_BATCH = 5_000
_PARTITION = re.compile(r"spans_p(\d{4})(\d{2})")


def month_range(start_ns: int) -> tuple[str, int, int]:
    """``(partition name, first ns, end ns exclusive)`` of the UTC month holding ``start_ns``."""
    day = _dt.datetime.fromtimestamp(start_ns // _NS, tz=_dt.UTC)
    first = _dt.datetime(day.year, day.month, 1, tzinfo=_dt.UTC)
    following = _dt.datetime(day.year + (day.month == 12), day.month % 12 + 1, 1, tzinfo=_dt.UTC)
    return f"spans_p{day.year:04d}{day.month:02d}", int(first.timestamp()) * _NS, int(following.timestamp()) * _NS


@dataclass(frozen=True)
class PruneReport:
    """What a retention pass removed."""

    partitions: int = 0
    spans: int = 0
    traces: int = 0

    def to_dict(self) -> dict[str, int]:
        """A JSON-ready dict."""
        return {"partitions": self.partitions, "spans": self.spans, "traces": self.traces}


class TracePartitions:
    """Partition upkeep and retention of one database's spans."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def ensure(self, starts: Iterable[int]) -> None:
        """Create the monthly partitions spans starting at ``starts`` need (PostgreSQL; a no-op
        on SQLite). A month that cannot get its partition (e.g. rows of it already sit in the
        default partition) is logged once and its spans go to the default partition."""
        if self.db.is_sqlite:
            return
        now = time.time_ns()
        low, high = now - _WINDOW_BACK_DAYS * 86_400 * _NS, now + _WINDOW_AHEAD_DAYS * 86_400 * _NS
        wanted: dict[str, tuple[int, int]] = {}
        for start in starts:
            if low <= start <= high:
                name, first, end = month_range(start)
                if name not in self._known:
                    wanted[name] = (first, end)
        for name, (first, end) in sorted(wanted.items()):
            with self._lock:
                if name in self._known:
                    continue
                try:
                    with self.db.raw_write() as cur:
                        cur.execute(
                            f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF spans FOR VALUES FROM ({first}) TO ({end})"
                        )
                except KeelError as exc:
                    log.warning("keel: spans of %s stay in the default partition: %s", name[7:], exc.message)
                self._known.add(name)

    def partitions(self) -> list[tuple[str, int]]:
        """``(name, end ns exclusive)`` of the monthly partitions (PostgreSQL), oldest first."""
        if self.db.is_sqlite:
            return []
        with self.db.raw_read() as cur:
            cur.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = CAST('spans' AS regclass)"
            )
            names = [r[0] for r in cur.fetchall()]
        out = []
        for name in names:
            match = _PARTITION.fullmatch(name)
            if match:
                year, month = int(match.group(1)), int(match.group(2))
                first = int(_dt.datetime(year, month, 1, tzinfo=_dt.UTC).timestamp()) * _NS
                out.append((name, month_range(first)[2]))
        return sorted(out, key=lambda item: item[1])

    def prune(self, cutoff_ns: int) -> PruneReport:
        """Remove spans that started before ``cutoff_ns`` and traces that ended before it."""
        dropped = 0
        for name, end in self.partitions():
            if end <= cutoff_ns:
                with self._lock, self.db.raw_write() as cur:
                    cur.execute(f"DROP TABLE IF EXISTS {name}")
                self._known.discard(name)
                dropped += 1
        spans = self._delete_in_batches(
            "SELECT project_id, trace_id, span_id, start_ns FROM spans WHERE start_ns < ? LIMIT ?",
            "DELETE FROM spans WHERE project_id = ? AND trace_id = ? AND span_id = ? AND start_ns = ?",
            cutoff_ns,
        )
        traces = 0
        while True:
            with self.db.raw_write() as cur:
                cur.execute(
                    self.db.sql("SELECT project_id, trace_id FROM traces WHERE end_ns < ? LIMIT ?"),
                    (cutoff_ns, _DELETE_BATCH),
                )
                keys = [(int(r[0]), r[1]) for r in cur.fetchall()]
                for table in ("trace_links", "trace_scores", "spans", "traces"):
                    cur.executemany(self.db.sql(f"DELETE FROM {table} WHERE project_id = ? AND trace_id = ?"), keys)
            traces += len(keys)
            if len(keys) < _DELETE_BATCH:
                break
        return PruneReport(dropped, spans, traces)

    def _delete_in_batches(self, select: str, delete: str, cutoff_ns: int) -> int:
        removed = 0
        while True:
            with self.db.raw_write() as cur:
                cur.execute(self.db.sql(select), (cutoff_ns, _DELETE_BATCH))
                keys: list[Any] = [tuple(r) for r in cur.fetchall()]
                if keys:
                    cur.executemany(self.db.sql(delete), keys)
            removed += len(keys)
            if len(keys) < _DELETE_BATCH:
                return removed
