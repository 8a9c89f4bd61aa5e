"""How long operations say how far they are: ``progress(done, total)``, and nothing else.

A service operation that can take more than a second (``keel data add``, a
knowledge-base commit, a push or pull, an import) takes ``progress``: any
callable ``progress(done, total)``, told that ``done`` of ``total`` units are
finished (``total`` is 0 while unknown). The default is ``None``: nothing is
counted and nothing is called. Who shows it (the CLI's progress bar,
:mod:`keel.cli.progress`) is no concern of the service::

    def progress(done: int, total: int) -> None:
        print(f"{done:,} of {total:,} bytes")

    keel.data.add(["data/big.parquet"], progress=progress)

Counts that come fast (bytes, files, documents) go through a :class:`Meter`
(:func:`meter`), which calls ``progress`` at most ten times a second and once
more at the end, so a hot loop pays an integer addition and a clock read per
item, and nothing when no one listens.

An operation of several steps (a knowledge-base commit chunks documents, then
embeds chunks, then writes) names each with :func:`step`. A ``progress`` that
has a ``step(what, unit)`` method (see :class:`Steps`) gets one ``Progress``
per step, labelled; a plain callable sees the steps' counts one after the
other (``done`` starts again at 0 when a new step begins).

A declared service operation cannot take a callable (its arguments travel
over the wire to a server), so its caller hands ``progress`` over with
:func:`reporting` and the operation finds it with :func:`current`; on a
server, nothing reports.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Protocol, runtime_checkable

__all__ = ["NO_METER", "Meter", "Progress", "Steps", "current", "meter", "reporting", "step"]

#: ``progress(done, total)``: ``done`` of ``total`` units finished (``total`` 0 while unknown).
Progress = Callable[[int, int], None]

INTERVAL = 0.1  # seconds between two reports of a Meter: at most ten a second


@runtime_checkable
class Steps(Protocol):
    """A progress that labels the steps of an operation (the CLI's bar does)."""

    def __call__(self, done: int, total: int) -> None:
        """``done`` of ``total`` units of the current step are finished."""

    def step(self, what: str, unit: str = "") -> Progress:
        """A new step begins (``what``: ``"embedding"``; ``unit``: ``"chunks"``, ``"bytes"``);
        the Progress its counts go to."""


def step(progress: Progress | None, what: str, unit: str = "") -> Progress | None:
    """The Progress of the step ``what`` of a longer operation: ``progress.step(what, unit)``
    when ``progress`` labels steps, else ``progress`` itself (``None`` stays ``None``)."""
    if progress is None:
        return None
    if isinstance(progress, Steps):
        return progress.step(what, unit)
    return progress


class Meter:
    """Counts the work of one step and reports it to a Progress, at most every ``interval``
    seconds, and always when the count reaches the total or :meth:`close` is called.

    Count from one thread (or under the caller's own lock): ``add`` takes no lock,
    so a hot loop pays an addition and a clock read. ``total`` may grow while the work
    goes on (more work found); ``done`` only grows, so the reports never go back.
    """

    __slots__ = ("_next", "_progress", "done", "interval", "total")

    def __init__(self, progress: Progress, total: int = 0, interval: float | None = None) -> None:
        self._progress = progress
        self.total = total
        self.done = 0
        self.interval = INTERVAL if interval is None else interval
        self._next = 0.0  # the first count is reported at once: the total is known from then on

    def add(self, n: int) -> None:
        """``n`` more units are finished."""
        self.done += n
        now = time.monotonic()
        if now >= self._next or (self.total and self.done >= self.total):
            self._next = now + self.interval
            self._progress(self.done, self.total)

    def grow(self, n: int) -> None:
        """``n`` more units of work were found (reported with the next count)."""
        self.total += n

    def close(self) -> None:
        """Report the final count (the work is over)."""
        self._progress(self.done, max(self.total, self.done))


class _NoMeter(Meter):
    """The Meter of no one: counts nothing, calls nothing."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(lambda done, total: None)

    def add(self, n: int) -> None:
        """Nothing to count."""

    def grow(self, n: int) -> None:
        """Nothing to count."""

    def close(self) -> None:
        """Nothing to report."""


NO_METER: Meter = _NoMeter()


def meter(progress: Progress | None, total: int = 0) -> Meter:
    """A :class:`Meter` reporting to ``progress``, or :data:`NO_METER` when there is none."""
    if progress is None:
        return NO_METER
    m = Meter(progress, total)
    progress(0, total)
    return m


_current: ContextVar[Progress | None] = ContextVar("keel_progress", default=None)


@contextlib.contextmanager
def reporting(progress: Progress | None) -> Iterator[None]:
    """Hand ``progress`` to the service operations called inside the block (:func:`current`)."""
    token = _current.set(progress)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> Progress | None:
    """The Progress :func:`reporting` handed over in this context, else None."""
    return _current.get()
