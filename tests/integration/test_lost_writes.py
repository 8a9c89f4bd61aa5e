"""A write that fails in the background fails only its own run's rows, and is never silent
(issue 16): ``finish()``, ``flush()`` and the ``with`` block raise ``WriteFailed``; a script
that lost rows nobody was told about prints one line on stderr and exits non-zero.

The failing rows are put on the session's writer directly (as an older client could send
them: the call-site checks would refuse them), so the store refuses them for real. The
refusal by a real server (a project the user has no role on) is in
``tests/e2e/test_remote_write_refusals.py``.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import keel
from keel.errors import InvalidInput, WriteFailed
from keel.sdk import session as sessions

T = 1_700_000_000_000


def _refused_row(run_id: str, step: int = 0) -> None:
    """Queue a metric the store refuses (a step past int64) for ``run_id``."""
    sessions.get_session().writer.add_metric((run_id, "bad", 1.0, 2**63 + step, T))


def _points(run_id: str, key: str = "loss") -> int:
    return len(keel.Client().metric_history(run_id, key))


def test_finish_raises_for_the_runs_own_lost_rows_and_the_other_run_keeps_every_point(ws: Path) -> None:
    with keel.start_run(project="p", name="good") as good:
        other = keel.Client().start_run(project="p", name="other")
        for step in range(1_100):
            good.log_metric("loss", 1 / (step + 1), step=step)
            other.log_metric("loss", 1.0, step=step)
            if step == 500:
                _refused_row(other.id)
        with pytest.raises(WriteFailed) as info:
            other.finish()
    failed = info.value
    assert failed.run_id == other.id and failed.cause_code == "invalid_input" and "64-bit" in failed.cause
    # The rows of its batch with the refused one (the background writer may have written earlier ones).
    assert 2 <= failed.rows <= 1_100 + 3  # at most: its points, the refused one, its new-run row and end
    assert failed.message.startswith(f"{failed.rows} logged rows of run {other.id[:8]} (other) could not be written")
    assert isinstance(failed.__cause__, InvalidInput)
    other.finish()  # reported once: finishing again is quiet
    assert _points(good.id) == 1_100
    assert keel.Client().get_run(good.id).status == "finished"


def test_the_with_block_flush_and_keel_flush_raise_once_each(ws: Path) -> None:
    with pytest.raises(WriteFailed, match="2 logged rows of run") as info, keel.start_run(project="p") as run:
        keel.log_metric("loss", 0.5)
        run.flush()  # written: only what follows is lost
        _refused_row(run.id)
    assert info.value.run_id == run.id and info.value.rows == 2  # the refused row and the run's end
    assert _points(run.id) == 1
    assert keel.Client().get_run(run.id).status == "running"  # its end was one of the lost rows

    with keel.start_run(project="p") as run:
        keel.log_metric("loss", 0.5)
        run.flush()
        _refused_row(run.id)
        with pytest.raises(WriteFailed) as info:
            keel.flush()
        assert (info.value.run_id, info.value.rows) == (run.id, 1)
        keel.log_metric("loss", 0.25, step=1)
        run.flush()  # nothing lost since the last report: quiet
    assert _points(run.id) == 2 and keel.Client().get_run(run.id).status == "finished"

    with keel.start_run(project="p") as run:  # the run's own row refused with the bad one:
        _refused_row(run.id)
        keel.log_metric("loss", 0.5)
        with pytest.raises(WriteFailed) as info:
            run.flush()
        assert info.value.rows == 3  # its new-run row, the refused row, the point
        with pytest.raises(WriteFailed, match="does not exist"):  # so what follows cannot be written either
            run.finish()


def test_an_exception_leaving_the_block_is_not_replaced_and_the_loss_waits_for_the_exit(ws: Path) -> None:
    with pytest.raises(ValueError, match="boom"), keel.start_run(project="p") as run:
        keel.log_metric("loss", 0.5)
        run.flush()
        _refused_row(run.id)
        raise ValueError("boom")
    loss = sessions.get_session().writer.take_loss(run.id)
    assert loss is not None and loss.rows == 2
    assert sessions.get_session().take_losses() == {}


# -- at exit: one line on stderr, a non-zero status -------------------------------------------------
def _script(folder: Path, code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # The environment as is: the ``ws`` store (KEEL_URI and KEEL_OBJECTS for PostgreSQL + S3).
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=folder, capture_output=True, text=True, timeout=timeout
    )


LOSE = """
import atexit, sys
atexit.register(lambda: open("registered-before-keel.txt", "w").write("ran"))
import keel
from keel.sdk import session as sessions
left_open = open("left-open.txt", "w")
left_open.write("buffered, never closed")
good = keel.start_run(project="p", name="good")
lost = keel.start_run(project="p", name="lost")  # left open: the exit finishes it
for step in range(1000):
    good.log_metric("loss", 0.5, step=step)
sessions.get_session().writer.add_metric((lost.id, "m", 1.0, 2**63, 0))
good.finish()
print(good.id, lost.id, flush=True)
print("stdout not flushed yet")
"""


def test_a_script_that_lost_rows_exits_one_with_one_line_and_loses_nothing_else(ws: Path) -> None:
    out = _script(ws, LOSE)
    assert out.returncode == 1, out.stderr
    good_id, lost_id = out.stdout.splitlines()[0].split()
    assert out.stdout.splitlines()[1] == "stdout not flushed yet"
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and re.match(rf"keel: \d+ logged rows of run {lost_id[:8]} could not be written: ", lines[0])
    assert lines[0].endswith("is outside the 64-bit integer range")  # the first error: the cause
    assert (ws / "registered-before-keel.txt").read_text() == "ran"  # the other exit handlers still ran
    assert (ws / "left-open.txt").read_text() == "buffered, never closed"  # and open files were flushed
    assert _points(good_id) == 1000 and keel.Client().get_run(good_id).status == "finished"


def test_a_script_that_was_told_exits_normally(ws: Path) -> None:
    out = _script(
        ws,
        """
        import keel
        from keel.sdk import session as sessions
        run = keel.start_run(project="p")
        sessions.get_session().writer.add_metric((run.id, "m", 1.0, 2**63, 0))
        try:
            run.finish()
        except keel.WriteFailed as exc:
            print("told:", exc.rows)
        """,
    )
    assert (out.returncode, out.stdout, out.stderr) == (0, "told: 3\n", "")


def test_a_failing_script_keeps_failing_and_still_reports_the_lost_rows(ws: Path) -> None:
    out = _script(
        ws,
        """
        import keel
        from keel.sdk import session as sessions
        with keel.start_run(project="p") as run:
            sessions.get_session().writer.add_metric((run.id, "m", 1.0, 2**63, 0))
            raise RuntimeError("the script's own error")
        """,
    )
    assert out.returncode == 1
    assert "RuntimeError: the script's own error" in out.stderr
    assert out.stderr.splitlines()[-1].startswith("keel: 3 logged rows of run ")
    assert "Traceback" not in out.stderr.split("RuntimeError")[-1]  # no second traceback from keel


def test_sigterm_keeps_its_status_and_reports_the_lost_rows(ws: Path) -> None:
    script = ws / "term.py"
    script.write_text(
        textwrap.dedent(
            """
            import time, keel
            from keel.sdk import session as sessions
            with keel.start_run(project="p") as run:
                sessions.get_session().writer.add_metric((run.id, "m", 1.0, 2**63, 0))
                print("ready", flush=True)
                time.sleep(60)
            """
        )
    )
    process = subprocess.Popen(
        [sys.executable, str(script)], cwd=ws, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    time.sleep(0.3)  # the writer's background pass may or may not have met the row: either way
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM
    assert err.splitlines()[-1].startswith("keel: ") and "could not be written" in err
