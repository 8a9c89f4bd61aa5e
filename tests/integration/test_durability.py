"""Nothing is lost: concurrent writers, a SIGKILL mid-logging, corrupt objects."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import keel
from keel.sdk import session as sessions
from keel.sdk.workspace import init_workspace


@pytest.fixture
def local_ws(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KEEL_URI", raising=False)
    init_workspace(tmp_path)
    yield tmp_path
    sessions.reset()


def _python(code: str, cwd, **kwargs):
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, **kwargs)


def test_two_processes_logging_at_once_lose_nothing(ws):
    code = """
        import sys, keel
        tag = sys.argv[1]
        for r in range(20):
            with keel.start_run(project="shared", name=f"{tag}-{r}") as run:
                run.log_params({"writer": tag, "r": r})
                for step in range(500):
                    run.log_metric("loss", step / 500, step=step)
    """
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), tag], cwd=ws) for tag in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    client = keel.Client()
    runs = client.search_runs("shared", limit=100)
    assert len(runs) == 40
    assert {r.status for r in runs} == {"finished"}
    for run in runs[:5]:
        assert len(client.metric_history(run.run_id, "loss")) == 500


def test_sigkill_mid_logging_leaves_a_clean_store(local_ws):
    ws = local_ws
    code = """
        import sys, time, keel
        # Runs that finish before the kill must survive it intact.
        for r in range(5):
            with keel.start_run(project="kill", name=f"done-{r}") as run:
                run.log_params({"r": r})
                for step in range(1000):
                    run.log_metric("m", float(step), step=step)
        print("finished", flush=True)
        run = keel.start_run(project="kill", name="victim")
        step = 0
        while True:
            run.log_metric("m", float(step), step=step)
            step += 1
            if step % 1000 == 0:
                time.sleep(0.001)
    """
    proc = _python(code, ws, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "finished"
    time.sleep(1.0)  # let the victim log (and the writer commit) for a while
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()

    client = keel.Client()
    done = client.search_runs("kill", filter="name like 'done-%'")
    assert len(done) == 5
    for run in done:
        assert run.status == "finished"
        history = client.metric_history(run.run_id, "m")
        assert [m.step for m in history] == list(range(1000))
    victim = client.search_runs("kill", filter="name = 'victim'")[0]
    assert victim.status == "running"  # it never finished; nothing pretends otherwise
    steps = [m.step for m in client.metric_history(victim.run_id, "m")]
    assert steps == list(range(len(steps)))  # a prefix: at most the unflushed tail is lost
    assert client.verify().ok
    # the store is writable afterwards
    with keel.start_run(project="kill") as after:
        keel.log_metric("m", 1)
    assert client.get_run(after.id).metrics == {"m": 1.0}


def test_sigterm_finishes_the_run_as_killed(local_ws):
    ws = local_ws
    code = """
        import time, keel
        run = keel.start_run(project="term", name="t")
        for step in range(100):
            run.log_metric("m", float(step), step=step)
        print(run.id, flush=True)
        time.sleep(60)
    """
    proc = _python(code, ws, stdout=subprocess.PIPE, text=True)
    run_id = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    proc.stdout.close()
    record = keel.Client().get_run(run_id)
    assert record.status == "killed"
    assert len(keel.Client().metric_history(run_id, "m")) == 100


def test_ordinary_exit_flushes_and_finishes(local_ws):
    ws = local_ws
    code = """
        import keel
        keel.init(project="exit")
        for step in range(3000):
            keel.log({"m": step})
        # no finish(): interpreter exit must flush and finish the run
    """
    assert _python(code, ws).wait(timeout=60) == 0
    run = keel.Client().search_runs("exit")[0]
    assert run.status == "finished"
    assert len(keel.Client().metric_history(run.run_id, "m")) == 3000


def test_uncaught_exception_marks_the_run_failed(local_ws):
    ws = local_ws
    code = """
        import keel
        keel.init(project="crash")
        keel.log({"m": 1})
        raise RuntimeError("boom")
    """
    assert _python(code, ws, stderr=subprocess.DEVNULL).wait(timeout=60) == 1
    run = keel.Client().search_runs("crash")[0]
    assert run.status == "failed" and run.error == "RuntimeError: boom"


def test_corrupt_object_is_detected_on_read_and_verify(local_ws):
    ws = local_ws
    (ws / "model_config.yaml").write_text("model: llama\n")
    with keel.start_run(project="p") as run:
        oid = keel.log_artifact("model_config.yaml")
    path = ws / ".keel" / "objects" / oid[:2] / oid[2:]
    os.chmod(path, 0o644)
    path.write_text("model: tampered\n")
    client = keel.Client()
    with pytest.raises(keel.IntegrityError, match=str(path)):
        client.read_artifact(run.id, "model_config.yaml")
    report = client.verify()
    assert not report.ok and report.corrupt[0][0] == oid
    path.unlink()
    report = client.verify()
    assert report.missing == [(oid, [(run.id, "model_config.yaml")])]
