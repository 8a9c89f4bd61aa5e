"""Delivery through faults, with real processes (issue 25): what was logged is what is stored.

- another process holds the SQLite write lock (``BEGIN EXCLUSIVE``) while a thread logs:
  every call returns at once, everything is stored once the lock is released;
- SIGTERM while the store is locked: the process exits within the flush deadline, says
  on one line what waits in the spool, and ``keel sync`` delivers all of it;
- SIGKILL while rows wait in the spool: the next keel process delivers them;
- a full disk (``RLIMIT_FSIZE`` in the logging process: neither the database nor the
  spool can grow): rows wait in memory or the spool, what has no room anywhere is counted
  and reported at exit; nothing disappears unreported;
- a dedicated PostgreSQL stopped and started mid-logging (never the session's server);
- a batch retried after its first attempt committed is stored once, on every stream;
- an A/B exposure the store refuses is recorded again at the next ``assign``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import keel
from keel.core.batch import WriteBatch
from keel.core.conversations import ConversationBatch
from keel.errors import InvalidInput
from keel.sdk import session as sessions
from keel.sdk.workspace import init_workspace
from keel.services.abtests import ABBatch
from keel.services.llm import CallBatch, PendingCall
from servers import PostgresServer

KEEL = Path(sys.executable).with_name("keel")
LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


@pytest.fixture
def local_ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.delenv("KEEL_SPOOL_DIR", raising=False)
    monkeypatch.delenv("KEEL_FLUSH_TIMEOUT", raising=False)
    init_workspace(tmp_path)
    yield tmp_path
    sessions.reset()


@contextlib.contextmanager
def store_locked(ws: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the workspace database's write lock for ``seconds``."""
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(ws / ".keel" / "keel.db"), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def _script(ws: Path, code: str, **env: str) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    environ.update(env)
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ws,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _keel(ws: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    return subprocess.run([str(KEEL), *args], cwd=ws, env=environ, capture_output=True, text=True, timeout=timeout)


def _points(run_id: str, key: str = "m") -> list[int]:
    return [m.step for m in keel.Client().metric_history(run_id, key)]


# -- a locked store ------------------------------------------------------------------------------------
def test_a_locked_store_never_blocks_the_caller_and_everything_arrives(local_ws: Path) -> None:
    run = keel.start_run(project="lock", name="locked")
    run.log_metric("m", 0.0, step=0)
    assert run.flush()
    latencies: list[float] = []
    logged = [1]

    def app() -> None:
        started = time.monotonic()
        step = 1
        while time.monotonic() - started < 5.0:
            for _ in range(50):
                begin = time.perf_counter()
                run.log_metric("m", float(step), step=step)
                keel.conversations.log(conversation_id=f"c{step}", messages=[{"role": "user", "content": "hi"}])
                latencies.append(time.perf_counter() - begin)
                step += 1
            time.sleep(0.002)
        logged[0] = step

    with store_locked(local_ws, 3.5):
        thread = threading.Thread(target=app)
        thread.start()
        time.sleep(2.5)
        during = keel.delivery.status()
        thread.join()
    assert max(latencies) < 0.2, f"slowest call {max(latencies) * 1000:.0f} ms"
    assert during["conversations"].queued + during["conversations"].spooled > 0  # waiting, not lost
    run.finish()
    assert keel.conversations.flush() is None
    assert _points(run.id) == list(range(logged[0]))
    assert keel.conversations.count() == logged[0] - 1
    status = keel.delivery.status()
    assert status["runs"].rejected == 0 and status["conversations"].rejected == 0
    assert status["conversations"].spooled == 0 and status["conversations"].queued == 0
    assert keel.Client().get_run(run.id).status == "finished"


TERM = """
import time, keel
run = keel.start_run(project="term", name="t")
for step in range(20_000):
    run.log_metric("m", float(step), step=step)
    keel.conversations.log(conversation_id=f"c{step}", messages=[{"role": "user", "content": "hi"}])
print(run.id, flush=True)
time.sleep(60)
"""


def test_sigterm_with_the_store_locked_exits_within_the_deadline_and_keel_sync_delivers(local_ws: Path) -> None:
    with store_locked(local_ws, 40):
        app = _script(local_ws, TERM, KEEL_FLUSH_TIMEOUT="2")
        assert app.stdout is not None
        run_id = app.stdout.readline().strip()
        time.sleep(0.5)
        started = time.monotonic()
        app.send_signal(signal.SIGTERM)
        _, err = app.communicate(timeout=30)
        took = time.monotonic() - started
    assert took < 2 + 1.5, f"exit took {took:.1f} s"
    assert app.returncode == 128 + signal.SIGTERM
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.fullmatch(
        r"keel: 40,002 logged records are spooled in \.keel/spool; "
        r"they will be sent by the next keel process here or by `keel sync`",
        lines[0],
    ), lines[0]
    status = _keel(local_ws, "sync", "--status")
    assert status.returncode == 0 and "conversations" in status.stdout and "20,000" in status.stdout
    synced = _keel(local_ws, "sync")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "delivered 40,002 records" in synced.stdout
    assert _points(run_id) == list(range(20_000))
    assert keel.conversations.count() == 20_000
    assert keel.Client().get_run(run_id).status == "killed"
    assert "nothing waits" in _keel(local_ws, "sync", "--status").stdout


KILLED = """
import time, keel
run = keel.start_run(project="kill", name="victim")
for step in range(5_000):
    run.log_metric("m", float(step), step=step)
    keel.conversations.log(conversation_id=f"c{step}", messages=[{"role": "user", "content": "hi"}])
delivered = run.flush()  # the store is locked: not delivered, so on disk (fsynced)
keel.conversations.flush()
print(run.id, delivered, keel.delivery.status()["runs"].spooled, flush=True)
step = 5_000
while True:  # logging on when the kill comes
    run.log_metric("m", float(step), step=step)
    step += 1
    if step % 500 == 0:
        time.sleep(0.001)
"""


def test_sigkill_mid_logging_the_next_process_delivers_the_spool(local_ws: Path) -> None:
    with store_locked(local_ws, 40):
        app = _script(local_ws, KILLED, KEEL_FLUSH_TIMEOUT="1")
        assert app.stdout is not None
        run_id, delivered, spooled = app.stdout.readline().split()
        assert delivered == "False" and int(spooled) >= 5_001
        time.sleep(0.5)
        app.kill()
        app.communicate(timeout=10)
    nxt = _script(
        local_ws,
        """
        import time, keel
        with keel.start_run(project="kill", name="next") as run:  # any keel process on this workspace
            run.log_metric("x", 1.0)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            s = keel.delivery.status()
            if s["runs"].spooled == 0 and s["conversations"].spooled == 0 and s["runs"].delivered > 5_000:
                break
            time.sleep(0.1)
        print(keel.delivery.status()["runs"].delivered)
        """,
    )
    out, err = nxt.communicate(timeout=60)
    assert nxt.returncode == 0, err
    steps = _points(run_id)
    assert steps[:5_000] == list(range(5_000)) and steps == list(range(len(steps)))
    assert keel.conversations.count() == 5_000
    assert keel.Client().get_run(run_id).status == "running"  # it never finished: nothing pretends otherwise
    assert keel.Client().verify().ok


# -- a full disk ---------------------------------------------------------------------------------------
DISK_FULL = """
import resource, signal, sys, time
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
import keel
keel.conversations.log(conversation_id="warm", messages=[{"role": "user", "content": "warm"}])
keel.conversations.flush()
limit = 3_000_000
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # no file of this process grows past 3 MB
for n in range(20_000):
    keel.conversations.log(conversation_id=f"c{n}", messages=[{"role": "user", "content": "x" * 300}])
    if n % 1000 == 0:
        time.sleep(0.02)
time.sleep(1)
status = keel.delivery.status()["conversations"]
print(status.delivered, status.queued, status.spooled, status.rejected, status.last_error, flush=True)
"""


def test_a_full_disk_keeps_rows_waiting_and_reports_what_had_no_room(local_ws: Path) -> None:
    app = _script(local_ws, DISK_FULL, KEEL_QUEUE_MEMORY_MB="4", KEEL_FLUSH_TIMEOUT="2")
    out, err = app.communicate(timeout=60)
    delivered, queued, spooled, rejected, *error = out.split()
    assert "File too large" in " ".join(error) or "full" in " ".join(error), out
    assert int(queued) + int(spooled) + int(rejected) > 0  # the disk refused something: it waits or is counted
    lines = err.strip().splitlines()
    lost = [line for line in lines if "could not be written" in line]
    spool = [line for line in lines if "are spooled in" in line]
    assert app.returncode == 1 and len(lost) == 1, err
    lost_rows = int(re.match(r"keel: ([\d,]+) logged rows", lost[0]).group(1).replace(",", ""))  # type: ignore[union-attr]
    spooled_rows = int(re.match(r"keel: ([\d,]+) logged record", spool[0]).group(1).replace(",", "")) if spool else 0  # type: ignore[union-attr]
    assert lost_rows > 0
    synced = _keel(local_ws, "sync")  # no limit now: the spool is delivered
    assert synced.returncode == 0, synced.stdout + synced.stderr
    stored = keel.conversations.count() - 1  # the warm-up record
    assert stored + lost_rows == 20_000, (stored, lost_rows, spooled_rows, out, err, synced.stdout)


# -- PostgreSQL restarted ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.stop()


def _pg_restart(pg: PostgresServer, down: float) -> None:
    assert pg.dir is not None
    pg._run("pg_ctl", "-D", str(pg.dir / "data"), "-m", "fast", "-w", "stop")
    time.sleep(down)
    options = (
        f"-c listen_addresses=127.0.0.1 -p {pg.port} -k {pg.dir} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    data, log = str(pg.dir / "data"), str(pg.dir / "log")
    pg._run("pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "-t", "30", "start")


@pytest.mark.postgres
def test_postgresql_restarted_mid_logging_loses_nothing(
    own_postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = own_postgres.create_database()
    monkeypatch.setenv("KEEL_URI", url)
    monkeypatch.setenv("KEEL_OBJECTS", str(tmp_path / "objects"))
    monkeypatch.setenv("KEEL_SPOOL_DIR", str(tmp_path / "spool"))
    try:
        run = keel.start_run(project="pg", name="restart")
        run.log_metric("m", 0.0, step=0)
        assert run.flush()
        latencies: list[float] = []
        restarter = threading.Thread(target=_pg_restart, args=(own_postgres, 1.5))
        step = 1
        started = time.monotonic()
        while time.monotonic() - started < 6.0:
            if step >= 2_000 and not restarter.is_alive() and restarter.ident is None:
                restarter.start()
            for _ in range(100):
                begin = time.perf_counter()
                run.log_metric("m", float(step), step=step)
                keel.conversations.log(conversation_id=f"c{step}", messages=[{"role": "user", "content": "hi"}])
                latencies.append(time.perf_counter() - begin)
                step += 1
            time.sleep(0.005)
        restarter.join()
        run.finish()
        keel.conversations.flush()
        assert max(latencies) < 0.2
        assert _points(run.id) == list(range(step))
        assert keel.conversations.count() == step - 1
        assert keel.Client().get_run(run.id).status == "finished"
        status = keel.delivery.status()
        assert status["runs"].rejected == 0 and "unavailable" in (status["runs"].last_error or "")
    finally:
        sessions.reset()


# -- idempotent batches --------------------------------------------------------------------------------
def test_a_batch_retried_after_its_first_attempt_committed_is_stored_once(ws: Path) -> None:
    session = sessions.get_session()
    run_id = "a" * 32
    batch = WriteBatch(
        new_runs=[(run_id, "p", "r", 1, None, "{}")],
        metrics=[(run_id, "m", float(i), i, 1) for i in range(10)],
        run_ends=[(run_id, "finished", 2, None)],
    )
    for _ in range(2):
        session.service.write_batch(batch, batch_id="test-tracking-1")
    assert _points(run_id) == list(range(10))
    conversations = session.conversations
    row = conversations.prepare({"conversation_id": "c1", "messages": [{"role": "user", "content": "hi"}]}, None, None)
    for _ in range(2):
        conversations.write_batch(ConversationBatch(conversations=[row]), batch_id="test-conv-1")
    assert conversations.count() == 1
    call = PendingCall("chat.completions", {"model": "m", "messages": []}, {"id": "x", "choices": []}, 1.0, 1)
    for _ in range(2):
        session.llm.write_batch(CallBatch([call]), batch_id="test-llm-1")
    assert len(session.llm.calls()) == 1
    ab = session.abtests
    outcome = ABBatch(outcomes=[("exp", "u1", "thumbs_up", 1.0, 1)], exposures=[("exp", "u1", "a", "{}", None, 1)])
    for _ in range(2):
        ab.write_batch(outcome, batch_id="test-ab-1")

    with session.service.store.db.read() as conn:
        rows = [conn.execute(f"SELECT count(*) FROM {t}").scalar() for t in ("ab_outcomes", "ab_exposures")]
    assert rows == [1, 1]  # outcomes have no natural key: the batch id alone keeps the retry out
    with pytest.raises(InvalidInput, match="batch id"):
        session.service.write_batch(batch, batch_id="bad id with spaces")


def test_an_exposure_the_store_refuses_is_recorded_again_at_the_next_assign(local_ws: Path) -> None:
    keel.ab.create("exp", variants=[{"name": "a"}, {"name": "b"}], weights={"a": 0.5, "b": 0.5})
    keel.ab.start("exp")
    writer = sessions.get_session().exposure_writer
    real = writer._write
    refusals: list[str] = []

    def refuse_once(batch: ABBatch, batch_id: str | None = None) -> None:
        if not refusals:
            refusals.append(batch_id or "")
            raise InvalidInput("refused for the test")
        real(batch, batch_id=batch_id)

    writer._write = refuse_once  # type: ignore[method-assign]
    assert keel.ab.assign("exp", "u1") is not None
    keel.ab.flush()
    assert refusals and writer.failed == 1 and keel.delivery.status()["exposures"].rejected == 1
    assert keel.ab.assign("exp", "u1") is not None  # not cached as exposed: queued again
    keel.ab.flush()
    assert sum(keel.ab.status("exp")["exposures"].values()) == 1


def test_llm_calls_and_exposures_logged_while_the_store_is_locked_are_spooled_then_replayable(
    local_ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openai

    from keel.integrations.standin import StandInServer
    from keel.sdk import llm

    monkeypatch.setenv("KEEL_FLUSH_TIMEOUT", "0.5")
    keel.ab.create("exp", variants=[{"name": "a"}, {"name": "b"}], weights={"a": 0.5, "b": 0.5})
    keel.ab.start("exp")
    question = [{"role": "user", "content": "What is 17 + 25?"}]
    with StandInServer() as server:
        raw = openai.OpenAI(base_url=server.base_url, api_key="standin", max_retries=0)
        try:
            client = llm.wrap(raw)
            with store_locked(local_ws, 30) as holder:
                chat = client.chat.completions.create(model="gpt-4", messages=question, temperature=0)
                chunks = list(
                    client.chat.completions.create(
                        model="gpt-4o-mini", messages=question, stream=True, stream_options={"include_usage": True}
                    )
                )
                for unit in range(50):
                    assert keel.ab.assign("exp", f"u{unit}") is not None
                llm.flush()  # past its deadline: spooled
                keel.ab.flush()
                status = keel.delivery.status()
                assert status["llm"].spooled == 2 and status["exposures"].spooled == 50, status
                assert llm.stats().pending == 2
                holder.kill()  # the lock is released
            llm.flush()
            keel.ab.flush()
        finally:
            raw.close()
        server.stop()
        offline = openai.OpenAI(base_url=server.base_url, api_key="standin", max_retries=0)
        try:
            replay = llm.wrap(offline, mode="replay")
            assert replay.chat.completions.create(model="gpt-4", messages=question, temperature=0) == chat
            again = replay.chat.completions.create(
                model="gpt-4o-mini", messages=question, stream=True, stream_options={"include_usage": True}
            )
            assert list(again) == chunks
        finally:
            offline.close()
    assert sum(keel.ab.status("exp")["exposures"].values()) == 50
    status = keel.delivery.status()
    assert status["llm"].spooled == 0 and status["exposures"].spooled == 0 and status["llm"].rejected == 0
