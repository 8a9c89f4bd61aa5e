"""Live caches (issue 25): reads on the request path never wait on storage, and changes reach
running processes within 2 s. On a SQLite workspace and on PostgreSQL + S3.

- every registry change counts, in its transaction (database triggers);
- two processes on one store: one serves ``prompts.load``, ``is_enabled`` and
  ``ab.assign`` in a loop, the other moves the alias, kills the flag and stops the
  experiment: the first sees each within 2 s;
- another process holds the store's lock (SQLite: ``BEGIN EXCLUSIVE``; PostgreSQL:
  ``LOCK TABLE ... ACCESS EXCLUSIVE``, which blocks readers too) for 10 s: every
  request-path call answers from the cache in well under 50 ms;
- a store that hangs or fails: stale values are served, first loads wait at most
  ``KEEL_FIRST_LOAD_TIMEOUT``, one warning per outage, and changes arrive once it is back;
- ``ttl=0`` reads the store; a deleted alias is NotFound; the A/B seen-unit cache is bounded.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.errors import NotFound, StoreError, Unavailable
from keel.meta.changes import KINDS, trigger_names
from keel.sdk import ab, flags, live
from keel.sdk.session import get_session
from keel.services.abtests import ABService
from keel.services.changes import counters
from keel.services.flags import FlagService
from keel.services.models import ModelService
from keel.services.prompts import PromptService
from keel.services.workspace import open_store

DEADLINE = 2.0  # seconds a change may take to reach a running process


def _until(check: Callable[[], bool], seconds: float = DEADLINE + 1) -> float:
    """Seconds until ``check()`` held (fails after ``seconds``)."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > seconds:
            raise AssertionError(f"not within {seconds} s")
        time.sleep(0.01)
    return time.monotonic() - start


def _setup() -> None:
    keel.prompts.register("chat", "v1 {{q}}", changelog="v1")
    keel.prompts.register("chat", "v2 {{q}}", changelog="v2")
    keel.prompts.set_alias("chat", "production", "1.0.0")
    flags.set("kill_me", rollout=100)
    ab.create("exp", [{"name": "a"}, {"name": "b"}], weights={"a": 0.5, "b": 0.5})
    ab.start("exp")


# -- the signal ------------------------------------------------------------------------------
def test_every_registry_change_counts_in_its_transaction(database_url: str, tmp_path: Path) -> None:
    store = open_store(database_url, str(tmp_path / "objects"), cached=False)
    try:
        with store.db.engine.connect() as conn:
            if store.db.is_sqlite:
                found = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
            else:
                found = {r[0] for r in conn.exec_driver_sql("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")}
        assert set(trigger_names()) <= found  # a later migration that rebuilds a table must re-create them
        start = counters(store)
        assert set(KINDS) <= set(start)

        def moved() -> set[str]:
            now = counters(store)
            return {k for k in now if now[k] != start.get(k)}

        prompts = PromptService(store)
        prompts.register("chat", "v1 {{q}}", changelog="v1")
        assert moved() == {"prompt"}  # "latest" moved
        start = counters(store)
        prompts.register("chat", "v1 {{q}}", changelog="same content")  # nothing new
        assert moved() == set()
        prompts.set_alias("chat", "production", "1.0.0")
        assert moved() == {"prompt"}
        start = counters(store)
        FlagService(store).set("f", rollout=10)
        assert moved() == {"flag"}
        start = counters(store)
        service = ABService(store, prompts)
        service.create({"name": "e", "variants": [{"name": "a"}, {"name": "b"}]})
        service.start("e")
        assert moved() == {"experiment"}
        start = counters(store)
        service.stop("e")
        assert moved() == {"experiment"}
        start = counters(store)
        models = ModelService(store)
        version = models.register("clf", str(tmp_path))
        models.set_alias("clf", "champion", version.version)
        assert moved() == {"model"}
        start = counters(store)
        with pytest.raises(NotFound):  # a refused change counts nothing
            prompts.set_alias("chat", "production", "9.9.9")
        assert moved() == set()
    finally:
        store.close()


# -- two processes ---------------------------------------------------------------------------
SERVER = """
import json, sys, time
import keel
from keel.sdk import ab, flags

client = flags.client()
first = keel.prompts.load("chat@production").version
assert first == "1.0.0" and client.is_enabled("kill_me", user_id="u1") and ab.assign("exp", user_id="u1")
print("ready", flush=True)
seen, worst, calls = {}, 0.0, 0
deadline = time.time() + 30
while time.time() < deadline and len(seen) < 3:
    started = time.perf_counter()
    version = keel.prompts.load("chat@production").version
    enabled = client.is_enabled("kill_me", user_id="u1")
    assigned = ab.assign("exp", user_id="u1")
    worst = max(worst, time.perf_counter() - started)
    calls += 1
    now = time.time()
    if version != first:
        seen.setdefault("prompt", now)
    if not enabled:
        seen.setdefault("flag", now)
    if assigned is None:
        seen.setdefault("experiment", now)
    time.sleep(0.002)
print(json.dumps({"seen": seen, "worst": worst, "calls": calls}), flush=True)
"""


def _serving_process(folder: Path, script: str = SERVER, **env: str) -> subprocess.Popen[str]:
    path = folder / "serve_app.py"
    path.write_text(textwrap.dedent(script))
    process = subprocess.Popen(
        [sys.executable, str(path)],
        cwd=folder,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if line != "ready":
        process.kill()
        _out, err = process.communicate()
        raise AssertionError(f"the serving process did not start: {line}{err}")
    return process


def _result(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def test_changes_reach_another_process_within_2_seconds(ws: Path) -> None:
    _setup()
    process = _serving_process(ws)
    try:
        time.sleep(1.0)  # the other process serves from its cache for a while
        changed = {}
        keel.prompts.set_alias("chat", "production", "1.0.1", reason="roll forward")
        changed["prompt"] = time.time()
        flags.kill("kill_me", reason="incident")
        changed["flag"] = time.time()
        ab.stop("exp")
        changed["experiment"] = time.time()
        result = _result(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    lags = {kind: result["seen"][kind] - changed[kind] for kind in changed if kind in result["seen"]}
    assert set(lags) == set(changed), result
    assert max(lags.values()) < DEADLINE, lags
    assert result["worst"] < 0.05, result  # never a store read on the request path


# -- a locked store ----------------------------------------------------------------------------
LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


@pytest.fixture
def store_locked(ws: Path) -> Iterator[Callable[[float], Any]]:
    """Starts a lock holder for N seconds: another process's BEGIN EXCLUSIVE on SQLite; on
    PostgreSQL another connection's ACCESS EXCLUSIVE locks (which block readers too)."""
    started: list[Any] = []

    def lock(seconds: float) -> None:
        session = get_session()
        db = session.service.store.db
        if db.is_sqlite:
            script = ws / "lock_store.py"
            script.write_text(LOCKER)
            process = subprocess.Popen(
                [sys.executable, str(script), str(ws / ".keel" / "keel.db"), str(seconds)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert process.stdout is not None and process.stdout.readline().strip() == "locked"
            started.append(process)
            return
        ready = threading.Event()

        def hold() -> None:
            with db.engine.connect() as conn:
                conn.exec_driver_sql(
                    "LOCK TABLE change_counters, refs, prompt_versions, flag_sets, ab_experiments "
                    "IN ACCESS EXCLUSIVE MODE"
                )
                ready.set()
                time.sleep(seconds)
                conn.rollback()

        thread = threading.Thread(target=hold, daemon=True)
        thread.start()
        assert ready.wait(10)
        started.append(thread)

    yield lock
    for item in started:
        if isinstance(item, subprocess.Popen):
            item.communicate(timeout=30)  # closes its pipe too
        else:
            item.join(30)


def test_a_locked_store_never_slows_the_request_path(ws: Path, store_locked: Callable[[float], Any]) -> None:
    _setup()
    client = flags.client()
    assert keel.prompts.load("chat@production").version == "1.0.0"
    assert keel.prompts.get("chat@production").version == "1.0.0"
    assert client.is_enabled("kill_me", user_id="u1")
    assert ab.assign("exp", user_id="u0") is not None
    time.sleep(0.6)  # the refresher has read the counters once
    store_locked(10.0)
    worst = {"prompts.load": 0.0, "prompts.get": 0.0, "is_enabled": 0.0, "ab.assign": 0.0}
    calls = {
        "prompts.load": lambda i: keel.prompts.load("chat@production"),
        "prompts.get": lambda i: keel.prompts.get("chat@production"),
        "is_enabled": lambda i: client.is_enabled("kill_me", user_id=f"u{i}"),
        "ab.assign": lambda i: ab.assign("exp", user_id=f"u{i}"),  # new units: exposures queued
    }
    end = time.monotonic() + 9.0
    i = 0
    while time.monotonic() < end:
        for name, call in calls.items():
            started = time.perf_counter()
            call(i)
            worst[name] = max(worst[name], time.perf_counter() - started)
        i += 1
        time.sleep(0.001)
    assert max(worst.values()) < 0.05, worst


# -- a store that hangs, then fails ------------------------------------------------------------
def test_a_hung_store_serves_stale_and_first_loads_are_bounded(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_FIRST_LOAD_TIMEOUT", "0.3")
    _setup()
    keel.prompts.register("other", "other {{q}}", changelog="v1")
    keel.prompts.set_alias("other", "production", "1.0.0")
    client = flags.client()
    assert keel.prompts.load("chat@production").version == "1.0.0"
    assert ab.assign("exp", user_id="u0") is not None
    session = get_session()
    gate = threading.Event()

    def hanging(method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            gate.wait(30)
            return method(*args, **kwargs)

        return call

    import keel.services.changes as changes_module

    monkeypatch.setattr(changes_module, "counters", hanging(changes_module.counters))
    monkeypatch.setattr(session.prompts, "get", hanging(session.prompts.get))
    monkeypatch.setattr(session.flags, "stored", hanging(session.flags.stored))
    monkeypatch.setattr(session.abtests, "list_experiments", hanging(session.abtests.list_experiments))
    try:
        started = time.perf_counter()
        for i in range(2000):
            assert keel.prompts.load("chat@production").version == "1.0.0"
            assert client.is_enabled("kill_me", user_id=f"u{i}")
            assert ab.assign("exp", user_id=f"u{i}") is not None
        assert time.perf_counter() - started < 1.0
        started = time.perf_counter()
        served = keel.prompts.load("other@production", fallback="meanwhile {{q}}")
        assert served.version == "fallback" and 0.25 < time.perf_counter() - started < 1.5
        with pytest.raises(Unavailable, match="did not answer within 0.3 s"):
            keel.prompts.load("other@production")
        assert keel.prompts.load("other@production", ttl=None, fallback="x").version == "fallback"
    finally:
        gate.set()
    # the first load went on in the background and filled the cache
    _until(lambda: keel.prompts.load("other@production", fallback="x").version == "1.0.0")


def test_an_unreachable_store_is_logged_once_and_changes_arrive_when_it_is_back(
    ws: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _setup()
    assert keel.prompts.load("chat@production").version == "1.0.0"
    session = get_session()
    watcher = live.watcher(session)
    import keel.services.changes as changes_module

    real = changes_module.counters

    def down(store: Any) -> dict[str, int]:
        raise Unavailable("the database does not answer", "retry later", dependency="database")

    with caplog.at_level(logging.INFO, logger="keel"):
        monkeypatch.setattr(changes_module, "counters", down)
        _until(lambda: watcher.failing is not None)
        time.sleep(1.5)  # several more rounds fail
        session.prompts.set_alias("chat", "production", "1.0.1")  # another writer (the service: no cache upkeep)
        assert keel.prompts.load("chat@production").version == "1.0.0"  # stale, served
        monkeypatch.setattr(changes_module, "counters", real)
        lag = _until(lambda: keel.prompts.load("chat@production").version == "1.0.1", DEADLINE + live.MAX_BACKOFF)
        # the watcher refreshes the caches first, then says so: wait for its line too
        _until(lambda: any("answers again" in r.getMessage() for r in caplog.records))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "change counters" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert any("answers again" in r.getMessage() for r in caplog.records)
    assert lag < DEADLINE + live.MAX_BACKOFF


# -- one process: the signal, ttl=0, deletions, bounds ----------------------------------------
def test_changes_by_other_writers_reach_the_caches(ws: Path) -> None:
    _setup()
    client = flags.client()
    assert keel.prompts.load("chat@production").version == "1.0.0"
    assert keel.prompts.load("chat").version == "1.0.1"
    assert ab.assign("exp", user_id="u1") is not None
    session = get_session()
    # Writes through the services, as another process would make them (no cache upkeep here).
    session.prompts.set_alias("chat", "production", "1.0.1")
    assert _until(lambda: keel.prompts.load("chat@production").version == "1.0.1") < DEADLINE
    session.prompts.register("chat", "v3 {{q}}", changelog="v3")
    assert _until(lambda: keel.prompts.get("chat").version == "1.0.2") < DEADLINE
    session.flags.kill("kill_me")
    assert _until(lambda: not client.is_enabled("kill_me", user_id="u1")) < DEADLINE
    session.abtests.stop("exp")
    assert _until(lambda: ab.assign("exp", user_id="u1") is None) < DEADLINE
    session.prompts.delete_alias("chat", "production")
    _until(lambda: ("chat", "production") not in {(e.name, e.selector) for e in _entries()})
    with pytest.raises(NotFound, match="no alias 'production'"):
        keel.prompts.load("chat@production")


def _entries() -> list[Any]:
    from keel.sdk import prompts

    return list(prompts._cache.values())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_worker_follows_changes(ws: Path) -> None:
    """gunicorn --preload / Celery prefork: the child's caches keep following the store."""
    _setup()
    assert keel.prompts.load("chat@production").version == "1.0.0"
    time.sleep(0.6)  # the parent's refresher runs; the child inherits none of its threads
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether the move arrived, then leave without pytest's teardown
        seen = b"0"
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if keel.prompts.load("chat@production").version == "1.0.1":
                    seen = b"1"
                    break
                time.sleep(0.01)
        finally:
            os.write(write, seen)
            os._exit(0)
    os.close(write)
    try:
        time.sleep(0.5)
        get_session().prompts.set_alias("chat", "production", "1.0.1")
        assert os.read(read, 1) == b"1"
    finally:
        os.close(read)
        os.waitpid(pid, 0)


def test_flags_yaml_edits_reach_the_client(ws: Path) -> None:
    (ws / "flags.yaml").write_text("flags:\n  from_file:\n    rollout: 0\n")
    client = flags.client()
    assert not client.is_enabled("from_file", user_id="u1")
    (ws / "flags.yaml").write_text("flags:\n  from_file:\n    rollout: 100\n")
    assert _until(lambda: client.is_enabled("from_file", user_id="u1")) < DEADLINE
    (ws / "flags.yaml").write_text("flags:\n  from_file:\n    rollout: [\n")  # broken: the set in force stays
    time.sleep(1.2)
    assert client.is_enabled("from_file", user_id="u1")
    assert live.watcher().failing is None  # a broken file is not a store outage
    (ws / "flags.yaml").write_text("flags:\n  from_file:\n    rollout: 0\n")
    assert _until(lambda: not client.is_enabled("from_file", user_id="u1")) < DEADLINE


def test_ttl_zero_reads_the_store(ws: Path) -> None:
    _setup()
    assert keel.prompts.load("chat@production").version == "1.0.0"
    get_session().prompts.set_alias("chat", "production", "1.0.1")  # the cache does not know yet
    assert keel.prompts.load("chat@production", ttl=0).version == "1.0.1"
    assert keel.prompts.get("chat@production", ttl=0).version == "1.0.1"


def test_this_process_reads_its_own_changes_at_once(ws: Path) -> None:
    _setup()
    client = flags.client()
    assert keel.prompts.load("chat@production").version == "1.0.0"
    keel.prompts.set_alias("chat", "production", "1.0.1")
    assert keel.prompts.load("chat@production").version == "1.0.1"
    assert keel.prompts.load("chat").version == "1.0.1"
    keel.prompts.register("chat", "v3 {{q}}", changelog="v3")
    assert keel.prompts.load("chat").version == "1.0.2"
    flags.kill("kill_me")
    assert not client.is_enabled("kill_me", user_id="u1")
    ab.stop("exp")
    assert ab.assign("exp", user_id="u1") is None


def test_a_store_that_cannot_be_opened_serves_the_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.sdk import session as sessions

    monkeypatch.setenv("KEEL_URI", "postgresql+psycopg://keel@127.0.0.1:1/nowhere")
    monkeypatch.setenv("KEEL_OBJECTS", "memory://")
    keel.prompts.clear_cache()
    try:
        assert keel.prompts.load("chat@production", fallback="hi {{q}}").version == "fallback"
        with pytest.raises(StoreError):
            keel.prompts.load("chat@production", ttl=0)
    finally:
        sessions.reset()


def test_the_seen_unit_cache_is_bounded(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ab, "_SEEN_GENERATION", 50)
    ab.create("exp", [{"name": "a"}, {"name": "b"}])
    ab.start("exp")
    first = {f"u{i}": ab.assign("exp", user_id=f"u{i}").variant for i in range(1000)}  # type: ignore[union-attr]
    compiled = ab._current().running["exp"]
    assert len(compiled.seen) <= 50 and len(compiled.previous) <= 50
    again = {u: ab.assign("exp", user_id=u).variant for u in first}  # type: ignore[union-attr]
    assert again == first  # a forgotten unit gets its variant again
    assert sum(ab.status("exp")["exposures"].values()) == 1000  # and is counted once
