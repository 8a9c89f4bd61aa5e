"""Retention applied by the team server itself: two ``python -m keel.server`` processes on one
PostgreSQL database, each with a retention pass every 0.2 s. Expired conversations, recorded
LLM calls and traces go (also those written while the servers run), each exactly once: the
``retention`` audit rows add up to the expired count. Newer records, a project without a
policy, runs (a deleted one too) and a model version are not touched. When the process that holds
the retention lease is killed, the other takes over once the lease has run out."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_server_api import start_server

from keel.services.retention import RetentionService
from keel.services.workspace import Store, open_store
from retention_seed import APP, OTHER, Counts, counts, keepers, retention_audit, seed


@pytest.fixture(autouse=True)
def _fast_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_RETENTION_INTERVAL", "0.2")
    monkeypatch.setenv("KEEL_RETENTION_LEASE", "1")  # a killed holder's lease runs out after 1 s
    monkeypatch.setenv("KEEL_HOOKS_WORKER", "0")  # nothing to deliver here


def _wait(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("not within the timeout")


def _lease_holder(store: Store) -> int:
    """The pid of the process holding the retention lease (holders are ``host:pid:random``)."""
    with store.db.read() as conn:
        holder = conn.execute("SELECT holder FROM maintenance_leases WHERE name = 'retention'").scalar()
    return int(str(holder).split(":")[1])


@pytest.mark.postgres
def test_two_servers_on_one_postgresql_expire_each_record_once(pg_url: str, tmp_path: Path) -> None:
    objects = str(tmp_path / "objects")
    store: Store = open_store(pg_url, objects, cached=False)
    servers = []
    try:
        kept = keepers(store)
        policies = RetentionService(store)
        policies.set(None, "conversations", "1d")
        policies.set(None, "llm_calls", "1d")
        policies.set(APP, "traces", "1d")
        waves = [seed(store, "before", old=20, new=5)]
        baseline = counts(store)
        with ThreadPoolExecutor(2) as pool:  # both start at once
            servers = list(pool.map(lambda _: start_server(pg_url, tmp_path, objects), range(2)))
        for n in range(3):  # more expired records arrive while both servers apply retention
            waves.append(seed(store, f"during-{n}", old=10, new=5))
            time.sleep(0.3)
        expired = Counts(*(sum(getattr(w, k) for w in waves) for k in ("conversations", "llm_calls", "traces")))
        fresh = 5 * len(waves)

        _wait(lambda: retention_audit(store) == vars(expired))
        time.sleep(1.0)  # several more passes of both processes: nothing more may be counted

        assert retention_audit(store) == vars(expired) == {"conversations": 50, "llm_calls": 50, "traces": 50}
        after = counts(store)
        assert after["conversations"] == after["llm_calls"] == after[f"traces:{APP}"] == fresh
        assert after[f"traces:{OTHER}"] == baseline[f"traces:{OTHER}"] + 3 * 15  # no policy: every one stays
        for table in ("runs", "model_versions", "artifacts", "latest_metrics"):
            assert after[table] == baseline[table]
        assert all(server.process.poll() is None for server in servers)
        with store.db.read() as conn:
            assert conn.execute("SELECT COUNT(*) FROM maintenance_leases").scalar() == 1
        assert store.tracking.get_run(kept["runs"][1]).deleted  # deleted runs are purged only on request

        # kill -9 the process holding the lease: the other takes over once it has run out
        holder = _lease_holder(store)
        (victim,) = [s for s in servers if s.process.pid == holder]
        victim.stop(kill=True)
        later = seed(store, "after-kill", old=10, new=0)
        _wait(lambda: retention_audit(store)["conversations"] == expired.conversations + later.conversations)
        time.sleep(1.0)
        assert retention_audit(store) == {k: v + 10 for k, v in vars(expired).items()}
        assert _lease_holder(store) != holder
    finally:
        for server in servers:
            server.stop()
        store.close()
