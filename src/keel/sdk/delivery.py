"""``keel.delivery``: where what this process logged is, and delivering what earlier ones left.

Everything the SDK writes (run params, metrics, tags, artifacts and ends;
conversations and feedback; recorded LLM calls; A/B exposures and outcomes)
goes one way: the logging call queues it in memory and returns, background
threads deliver it to the store or server, and what cannot be delivered now
waits on disk in the spool until it can (see ``docs/delivery.md``)::

    for stream, s in keel.delivery.status().items():
        print(stream, s.queued, s.spooled, s.delivered, s.rejected, s.last_error)

- ``queued``: rows waiting in memory
- ``spooled``: rows waiting on disk (this process's, and those it took over from
  processes that ended before delivering them)
- ``delivered``: rows written to the store by this process
- ``rejected``: rows the store refused for good (an invalid row, no permission) or
  that had room neither in memory nor on disk; each is reported (``WriteFailed``
  for a run's rows, a warning for the others, and one line at exit)
- ``last_error``: the last error met (transient ones included), or None
- ``oldest_undelivered_age_s``: seconds the oldest undelivered row has waited, or None

:func:`sync` delivers the spool that ended processes left for the current store
(the next keel process does it by itself, in the background); ``keel sync`` runs it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from keel.sdk.spool import STREAMS, SpoolStatus, scan, spool_root

__all__ = ["StreamStatus", "SyncReport", "pending_spools", "status", "sync"]


@dataclass(frozen=True)
class StreamStatus:
    """Delivery of one stream in this process (see the module doc)."""

    queued: int = 0
    spooled: int = 0
    delivered: int = 0
    rejected: int = 0
    last_error: str | None = None
    oldest_undelivered_age_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def status() -> dict[str, StreamStatus]:
    """This process's delivery per stream: ``runs``, ``conversations``, ``llm``, ``exposures``."""
    from keel.sdk.session import _LOCK, _SESSIONS

    with _LOCK:
        sessions = list(_SESSIONS.values())
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in STREAMS}
    for session in sessions:
        for writer in session.writers():
            found.setdefault(writer.stream, []).append(writer.status())
    out: dict[str, StreamStatus] = {}
    for name, parts in found.items():
        if not parts:
            out[name] = StreamStatus()
            continue
        ages = [p["oldest_undelivered_age_s"] for p in parts if p["oldest_undelivered_age_s"] is not None]
        errors = [p["last_error"] for p in parts if p["last_error"]]
        out[name] = StreamStatus(
            queued=sum(p["queued"] for p in parts),
            spooled=sum(p["spooled"] for p in parts),
            delivered=sum(p["delivered"] for p in parts),
            rejected=sum(p["rejected"] for p in parts),
            last_error=errors[-1] if errors else None,
            oldest_undelivered_age_s=max(ages) if ages else None,
        )
    return out


@dataclass
class SyncReport:
    """What :func:`sync` did: rows delivered and rows still waiting, per stream (``delivered``:
    rows this process delivered from spools earlier processes left)."""

    store: str
    folder: Path
    delivered: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)  # rows sync could not deliver (store away)
    held: dict[str, int] = field(default_factory=dict)  # rows live processes hold (they deliver them)
    last_error: str | None = None

    @property
    def complete(self) -> bool:
        """Whether nothing sync could take is left."""
        return not any(self.waiting.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["folder"] = str(self.folder)
        data["complete"] = self.complete
        return data


def pending_spools() -> list[SpoolStatus]:
    """Every spooled stream under the spool folder of the current workspace (or
    ``KEEL_SPOOL_DIR``, or the per-user cache): what waits, for which store."""
    from keel.services.workspace import find_workspace

    return scan(spool_root(find_workspace()))


def sync(timeout: float = 120.0, progress: Callable[[str, int, int], None] | None = None) -> SyncReport:
    """Deliver what ended processes left in the spool of the current store, for at most
    ``timeout`` seconds; ``progress(stream, delivered, waiting)`` is called about twice a second.

    Segments a live process holds are left to it (counted as ``held``). With the store away
    the rows stay spooled (``waiting``, with ``last_error``); run it again later.
    """
    from keel.sdk.session import get_session

    session = get_session(create=False)
    report = SyncReport(session.destination, session.spool_dir)
    writers = {}
    started = {writer.stream for writer in session.writers()}
    for name in STREAMS:
        if name not in started and not any((session.spool_dir / name).glob("*.seg")):
            continue
        writer = session.writer_for(name)
        writer.claim_orphans()  # the session may have started on them already (see Session._recover)
        writers[name] = (writer, writer.failed)
    deadline = time.monotonic() + timeout
    last = 0.0
    while writers:
        busy = [w for w, _ in writers.values() if w._claimed]
        now = time.monotonic()
        if progress is not None and now - last >= 0.5:
            last = now
            for name, (writer, _) in writers.items():
                progress(name, writer.recovered, writer._claimed_rows)
        if not busy or now >= deadline:
            break
        time.sleep(0.05)
    for name, (writer, failed) in writers.items():
        report.delivered[name] = writer.recovered
        report.rejected[name] = writer.failed - failed
        report.waiting[name] = writer._claimed_rows
        if writer.last_error is not None and writer._claimed:
            report.last_error = f"{type(writer.last_error).__name__}: {writer.last_error}"
    mine = frozenset(str(segment.path) for writer, _ in writers.values() for segment in writer._claimed)
    for entry in scan(session.spool_dir.parent, skip=mine):
        if entry.destination == session.spool_dir.name and entry.held:
            report.held[entry.stream] = report.held.get(entry.stream, 0) + entry.held_rows
    return report
