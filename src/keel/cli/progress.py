"""The CLI's progress bar: on a terminal's stderr, for work that lasts, and nowhere else.

Commands that can take more than a second wrap the work in :func:`progress_bar`
and hand what it yields to the sdk as ``progress`` (see :mod:`keel.core.progress`)::

    with progress_bar("data add", "bytes", enabled=not as_json) as progress:
        results = data.add(paths, progress=progress)

It yields ``None`` (the services then count nothing) when stderr is not a
terminal (piped, redirected, captured) or the command prints ``--json``. On a
terminal the bar appears only once the work has lasted :data:`DELAY` seconds,
so quick commands print exactly what they printed before; it redraws at most
ten times a second and is erased when the work ends, leaving the command's own
summary.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

__all__ = ["DELAY", "Bar", "progress_bar"]

#: Seconds of work before a bar appears (quick commands stay quiet).
DELAY = 0.7
_REDRAW = 0.1  # seconds between two updates of the bar


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _amount(done: int, total: int, unit: str) -> str:
    """`` 8% 12.0/140.5 MiB``, ``60% 3,000/5,000 documents``, ``3,000 files`` (total unknown)."""
    if unit == "bytes":
        text = f"{_size(done)}/{_size(total)}" if total else _size(done)
    else:
        text = f"{done:,}/{total:,}" if total else f"{done:,}"
        text = f"{text} {unit}" if unit else text
    return f"{min(100, done * 100 // total):3d}% {text}" if total else text


class Bar:
    """A progress bar on ``stream`` (a terminal) that shows itself after ``delay`` seconds.

    Call it as ``bar(done, total)`` from any thread; :meth:`step` starts a new labelled
    step (``keel.core.progress.Steps``). Counts arriving faster than ten a second are
    kept and drawn with the next redraw.
    """

    def __init__(self, label: str, unit: str = "", stream: IO[str] | None = None, delay: float = DELAY) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.label = label
        self.unit = unit
        self._lock = threading.Lock()
        self._shown = False
        self._closed = False
        self._last = 0.0
        self._done = 0
        self._total = 0
        out = stream if stream is not None else sys.stderr
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[amount]}"),
            TimeElapsedColumn(),
            console=Console(file=out, force_terminal=True, highlight=False),
            transient=True,  # the command's summary is what stays on the screen
            redirect_stdout=sys.stdout.isatty(),  # never pull piped stdout onto the terminal
            redirect_stderr=True,
        )
        self._task = self._progress.add_task(label, total=None, amount="")
        self._show_at = time.monotonic() + delay
        self._timer = threading.Timer(delay, self._show)  # shows it even if no count comes
        self._timer.daemon = True
        self._timer.start()

    def __call__(self, done: int, total: int) -> None:
        """``done`` of ``total`` units of the current step are finished (``total`` 0: unknown)."""
        self._done, self._total = done, total
        now = time.monotonic()
        finished = bool(total) and done >= total
        if now - self._last < _REDRAW and not finished:
            return
        self._last = now
        if self._shown:
            self._draw()
            if finished:  # a step's end is drawn even if the next one starts within the redraw interval
                self._progress.refresh()
        elif now >= self._show_at:
            self._show()

    def step(self, what: str, unit: str = "") -> Bar:
        """A new step of the work: the bar is labelled ``what`` and counts ``unit``."""
        with self._lock:
            self.label, self.unit = what, unit
            self._done = self._total = 0
            self._last = 0.0
            # (an update, not a reset: the elapsed time is the command's, not the step's)
            self._progress.update(self._task, description=what, completed=0, total=None, amount="")
        return self

    def _draw(self) -> None:
        done, total = self._done, self._total
        self._progress.update(self._task, completed=done, total=total or None, amount=_amount(done, total, self.unit))

    def _show(self) -> None:
        with self._lock:
            if self._closed or self._shown:
                return
            self._shown = True
            self._draw()
            self._progress.start()

    def close(self) -> None:
        """Stop (and erase) the bar; it never appears after this."""
        self._timer.cancel()
        with self._lock:
            self._closed = True
            if self._shown:
                self._progress.stop()

    @property
    def shown(self) -> bool:
        """Whether the bar has appeared (the work lasted longer than the delay)."""
        return self._shown


def _terminal() -> Any:
    """Where bars go: stderr (looked up when used, so a test can swap it)."""
    return sys.stderr


@contextlib.contextmanager
def progress_bar(
    label: str, unit: str = "", *, enabled: bool = True, stream: IO[str] | None = None, delay: float | None = None
) -> Iterator[Bar | None]:
    """A :class:`Bar` for the work inside the block, or None when ``stream`` (default stderr)
    is not a terminal or not ``enabled`` (e.g. ``enabled=not as_json``)."""
    out = stream if stream is not None else _terminal()
    isatty = getattr(out, "isatty", None)
    if not enabled or isatty is None or not isatty():
        yield None
        return
    bar = Bar(label, unit, out, DELAY if delay is None else delay)
    try:
        yield bar
    finally:
        bar.close()
