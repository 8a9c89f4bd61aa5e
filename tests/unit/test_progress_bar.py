"""The progress protocol (keel.core.progress) and the CLI's bar (keel.cli.progress)."""

from __future__ import annotations

import io
import time

import pytest

from keel.cli import progress as cli_progress
from keel.cli.progress import Bar, progress_bar
from keel.core import progress as core_progress
from keel.core.progress import NO_METER, Meter, current, meter, reporting, step


class FakeTerminal(io.StringIO):
    """What a terminal looks like to the bar: a stream that says it is a TTY."""

    def isatty(self) -> bool:
        return True


class Calls:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))


# -- the protocol ---------------------------------------------------------------------------
def test_a_meter_reports_at_once_then_at_most_once_an_interval_and_always_the_end() -> None:
    calls = Calls()
    m = Meter(calls, total=1000, interval=60.0)
    for _ in range(999):
        m.add(1)
    assert calls.calls == [(1, 1000)]  # the first count, then nothing within the interval
    m.add(1)
    assert calls.calls[-1] == (1000, 1000)  # reaching the total is always reported
    m.close()
    assert calls.calls[-1] == (1000, 1000)


def test_a_meter_whose_total_grows_reports_the_new_total_and_close_never_reports_less_than_done() -> None:
    calls = Calls()
    m = Meter(calls, interval=0.0)
    m.grow(10)
    m.add(4)
    m.grow(10)
    m.add(6)
    assert calls.calls == [(4, 10), (10, 20)]
    m.add(15)  # more than the total announced (a file grew): the end still says done == total
    m.close()
    assert calls.calls[-1] == (25, 25)


def test_no_progress_means_no_meter_and_no_call() -> None:
    assert meter(None, 10) is NO_METER
    NO_METER.add(5)
    NO_METER.grow(5)
    NO_METER.close()
    assert NO_METER.done == 0
    calls = Calls()
    meter(calls, 7)
    assert calls.calls == [(0, 7)]  # a real meter announces the total before any work


def test_step_asks_a_progress_that_labels_steps_and_passes_a_plain_callable_through() -> None:
    plain = Calls()
    assert step(plain, "embedding", "chunks") is plain
    assert step(None, "embedding") is None

    class Labelled(Calls):
        def __init__(self) -> None:
            super().__init__()
            self.steps: list[tuple[str, str]] = []

        def step(self, what: str, unit: str = "") -> Labelled:
            self.steps.append((what, unit))
            return self

    labelled = Labelled()
    assert step(labelled, "embedding", "chunks") is labelled
    assert labelled.steps == [("embedding", "chunks")]


def test_reporting_hands_a_progress_to_the_calls_inside_the_block_only() -> None:
    calls = Calls()
    assert current() is None
    with reporting(calls):
        assert current() is calls
        with reporting(None):
            assert current() is None
        assert current() is calls
    assert current() is None


# -- the CLI's bar ----------------------------------------------------------------------------
def test_the_bar_appears_on_a_terminal_once_the_work_lasts_longer_than_the_delay() -> None:
    terminal = FakeTerminal()
    with progress_bar("data add", "bytes", stream=terminal, delay=0.05) as bar:
        assert isinstance(bar, Bar)
        bar(0, 4 << 20)
        deadline = time.monotonic() + 5
        while not bar.shown and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.15)
        bar(2 << 20, 4 << 20)
        time.sleep(0.25)  # rich redraws ten times a second
    shown = terminal.getvalue()
    assert bar.shown
    assert "data add" in shown and "━" in shown
    assert "2.0 MiB/4.0 MiB" in shown and "50%" in shown


def test_steps_relabel_the_bar_and_count_their_own_unit() -> None:
    terminal = FakeTerminal()
    with progress_bar("kb commit", stream=terminal, delay=0.0) as bar:
        assert bar is not None
        chunking = step(bar, "chunking", "documents")
        assert chunking is not None
        chunking(5, 5)
        time.sleep(0.25)
        embedding = step(bar, "embedding", "chunks")
        assert embedding is not None
        embedding(0, 40)
        time.sleep(0.15)
        embedding(40, 40)
        time.sleep(0.25)
    shown = terminal.getvalue()
    assert "chunking" in shown and "5/5 documents" in shown
    assert "embedding" in shown and "40/40 chunks" in shown


def test_quick_work_shows_nothing_even_on_a_terminal() -> None:
    terminal = FakeTerminal()
    with progress_bar("data add", "bytes", stream=terminal, delay=30.0) as bar:
        assert bar is not None
        for done in range(0, 101):
            bar(done, 100)
    assert not bar.shown
    assert terminal.getvalue() == ""
    time.sleep(0.05)
    assert terminal.getvalue() == ""  # closed: the timer cannot show it later


def test_no_bar_when_the_stream_is_not_a_terminal_or_the_command_prints_json() -> None:
    piped = io.StringIO()
    with progress_bar("data add", "bytes", stream=piped, delay=0.0) as bar:
        assert bar is None
    assert piped.getvalue() == ""
    terminal = FakeTerminal()
    with progress_bar("data add", "bytes", stream=terminal, delay=0.0, enabled=False) as bar:
        assert bar is None
    assert terminal.getvalue() == ""


def test_the_default_stream_is_stderr_looked_up_when_used(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr(cli_progress, "_terminal", lambda: terminal)
    with progress_bar("x", delay=30.0) as bar:
        assert bar is not None  # stderr here is the fake terminal
    monkeypatch.setattr(cli_progress, "_terminal", lambda: io.StringIO())
    with progress_bar("x", delay=0.0) as bar:
        assert bar is None


def test_amounts_read_as_people_count() -> None:
    amount = cli_progress._amount
    assert amount(3 << 20, 12 << 20, "bytes") == " 25% 3.0 MiB/12.0 MiB"
    assert amount(1536, 0, "bytes") == "1.5 KiB"
    assert amount(3000, 5000, "documents") == " 60% 3,000/5,000 documents"
    assert amount(7, 0, "files") == "7 files"
    assert amount(7, 0, "") == "7"
    assert amount(12, 10, "") == "100% 12/10"


def test_the_meter_interval_is_read_when_a_meter_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core_progress, "INTERVAL", 0.0)
    calls = Calls()
    m = Meter(calls, total=3)
    m.add(1)
    m.add(1)
    assert calls.calls == [(1, 3), (2, 3)]
