"""Purging soft-deleted runs (TrackingService.purge_runs) on SQLite and PostgreSQL.

What goes: the runs' params, metrics, tags, artifact rows, lineage, their recorded LLM calls
and the artifacts' objects nothing else references; an audit row stays. What stays: live
runs, objects another record references, model versions (a run a version was registered from
is refused). Refusals remove nothing. A second process writing runs with the same artifact
contents and recordings while purges run loses nothing.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from keel.core.batch import WriteBatch
from keel.core.entities import now_ms
from keel.core.hashing import hash_bytes
from keel.errors import Conflict, Forbidden, NotFound
from keel.services.contract import find, invoke
from keel.services.llm import LlmService, PendingCall
from keel.services.models import ModelService
from keel.services.tracking import TrackingService
from keel.services.verify import verify_store
from keel.services.workspace import Store, open_store

DAY_MS = 86_400_000
_RUN_TABLES = ("params", "tags", "metric_chunks", "latest_metrics", "artifacts", "lineage")


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Iterator[Store]:
    opened = open_store(database_url, str(tmp_path / "objects"), cached=False)
    yield opened
    opened.close()


@pytest.fixture
def tracking(store: Store) -> TrackingService:
    return TrackingService(store)


def make_run(
    tracking: TrackingService,
    contents: list[bytes],
    *,
    project: str = "p",
    calls: int = 0,
    deleted: bool = True,
) -> str:
    """A finished run with a param, a metric, a tag, a lineage edge, an artifact per content
    and ``calls`` recorded LLM calls; soft-deleted unless told otherwise."""
    run = tracking.start_run(project=project)
    run_id = run.run_id
    artifacts = []
    for i, data in enumerate(contents):
        oid = tracking.store_bytes(data)
        artifacts.append((run_id, f"out/{i}.txt", oid, len(data), "file", now_ms()))
    tracking.write_batch(
        WriteBatch(
            params=[(run_id, "lr", "float", "0.1", False)],
            metrics=[(run_id, "loss", 0.5, 0, now_ms()), (run_id, "loss", 0.25, 1, now_ms())],
            tags=[(run_id, "team", "a")],
            artifacts=artifacts,
            lineage=[(run_id, "input", "dataset", "d.csv", "v1", "", now_ms())],
            run_ends=[(run_id, "finished", now_ms(), None)],
        )
    )
    if calls:
        LlmService(tracking.store, tracking).write([_call(run_id, i) for i in range(calls)])
    if deleted:
        tracking.delete_run(run_id)
    return run_id


def _call(run_id: str | None, i: int) -> PendingCall:
    request = {"model": "m", "messages": [{"role": "user", "content": f"secret question {run_id} {i}"}]}
    response = {"model": "m", "choices": [{"message": {"role": "assistant", "content": f"answer {i}"}}]}
    return PendingCall("chat.completions", request, response, 1.0, now_ms(), run_id=run_id)


def rows_of(store: Store, run_id: str) -> dict[str, int]:
    """Rows a run has in every table that holds them, and its recorded calls."""
    with store.db.read() as conn:
        pk = conn.execute("SELECT id FROM runs WHERE run_id = ?", (run_id,)).scalar()
        counts = {"runs": int(pk is not None)}
        for table in _RUN_TABLES:
            counts[table] = int(conn.execute(f"SELECT COUNT(*) FROM {table} WHERE run_pk = ?", (pk or -1,)).scalar())  # noqa: S608
        counts["llm_calls"] = int(conn.execute("SELECT COUNT(*) FROM llm_calls WHERE run_id = ?", (run_id,)).scalar())
    return counts


def audit_rows(store: Store, reason: str) -> list[Any]:
    with store.db.read() as conn:
        return conn.execute(
            "SELECT kind, actor, matched, deleted, objects_removed, bytes_freed FROM erasures WHERE reason = ?"
            " ORDER BY id",
            (reason,),
        ).all()


def test_a_purge_removes_every_row_of_the_run_and_the_objects_only_it_referenced(
    store: Store, tracking: TrackingService
) -> None:
    shared = b"shared weights"
    purged = make_run(tracking, [b"only the purged run has this", shared], calls=3)
    kept = make_run(tracking, [shared], deleted=False, calls=1)
    only_oid = hash_bytes(b"only the purged run has this")
    before = rows_of(store, purged)
    assert all(before[t] for t in ("runs", *_RUN_TABLES)) and before["llm_calls"] == 3

    report = tracking.purge_runs(run_ids=[purged[:8]], who="ops")

    assert (report.kind, report.matched, report.deleted, report.dry_run) == ("runs", 1, 1, False)
    assert report.objects_removed == 1 and report.bytes_freed == len(b"only the purged run has this")
    assert set(rows_of(store, purged).values()) == {0}
    assert not store.objects.exists(only_oid)
    assert store.objects.get_bytes(store.objects.put_bytes(shared)) == shared  # the live run's stays
    assert rows_of(store, kept) == {**dict.fromkeys(("runs", *_RUN_TABLES), 1), "llm_calls": 1, "metric_chunks": 1}
    assert tracking.list_artifacts(kept)[0].path == "out/0.txt"
    with pytest.raises(NotFound):
        tracking.restore_run(purged)
    purge_audit = audit_rows(store, "purge")
    assert [(r.kind, r.actor, r.matched, r.deleted) for r in purge_audit] == [
        ("llm_calls", "ops", 3, 3),
        ("runs", "ops", 1, 1),
    ]
    assert purge_audit[1].objects_removed == 1


def test_a_purge_by_project_and_age_counts_from_the_deletion(store: Store, tracking: TrackingService) -> None:
    old = make_run(tracking, [b"old"], project="p")
    recent = make_run(tracking, [b"recent"], project="p")
    elsewhere = make_run(tracking, [b"elsewhere"], project="q")
    live = make_run(tracking, [b"live"], project="p", deleted=False)
    with store.db.write() as conn:  # deleted 40 days ago (it ran just now)
        conn.execute("UPDATE runs SET deleted_at = ? WHERE run_id = ?", (now_ms() - 40 * DAY_MS, old))

    plan = tracking.purge_runs(project="p", older_than="30d", dry_run=True)
    assert (plan.matched, plan.deleted, plan.dry_run) == (1, 0, True)
    assert rows_of(store, old)["runs"] == 1  # a dry run removes nothing

    report = tracking.purge_runs(project="p", older_than="30d")

    assert (report.matched, report.deleted) == (1, 1)
    assert rows_of(store, old)["runs"] == 0
    assert all(rows_of(store, r)["runs"] == 1 for r in (recent, elsewhere, live))
    everything = tracking.purge_runs()  # every deleted run of every project: not the live one
    assert (everything.matched, everything.deleted) == (2, 2)
    assert rows_of(store, live)["runs"] == 1 and rows_of(store, recent)["runs"] == 0


def test_refused_purges_remove_nothing(store: Store, tracking: TrackingService) -> None:
    deleted = make_run(tracking, [b"a"], calls=1)
    live = make_run(tracking, [b"b"], deleted=False)
    registered = make_run(tracking, [b"model bytes"], deleted=False)
    ModelService(store, tracking).register("chat-model", f"runs:/{registered}/out/0.txt")
    tracking.delete_run(registered)
    before = {r: rows_of(store, r) for r in (deleted, live, registered)}
    objects = set(store.objects.iter_oids())

    with pytest.raises(Conflict) as not_deleted:
        tracking.purge_runs(run_ids=[deleted, live])
    assert live in not_deleted.value.message and "keel runs delete" in (not_deleted.value.hint or "")
    with pytest.raises(NotFound):
        tracking.purge_runs(run_ids=[deleted, "f" * 32])
    with pytest.raises(Conflict) as versioned:
        tracking.purge_runs(run_ids=[deleted, registered])
    assert "chat-model v1" in versioned.value.message
    with pytest.raises(Conflict):  # a purge of every deleted run includes it too
        tracking.purge_runs()

    assert {r: rows_of(store, r) for r in before} == before
    assert set(store.objects.iter_oids()) == objects
    assert audit_rows(store, "purge") == []


def test_a_reader_may_not_purge(store: Store, tracking: TrackingService) -> None:
    from keel.meta.auth import AuthStore

    deleted = make_run(tracking, [b"a"], project="alpha")
    auth = AuthStore(store.db)
    callers = {}
    for name, role in (("reader", "reader"), ("writer", "writer")):
        auth.create_user(name)
        auth.grant(name, "alpha", role, "test")
        callers[name] = auth.authenticate(auth.create_token(name, "t")[0])
    services = SimpleNamespace(tracking=tracking)
    op = find("tracking", "purge_runs")

    for kwargs in ({"run_ids": [deleted]}, {"project": "alpha"}, {}):
        with pytest.raises((Forbidden, NotFound)):
            invoke(op, services, callers["reader"], [], kwargs)
    with pytest.raises(Forbidden):  # every project needs the writer role on every project
        invoke(op, services, callers["writer"], [], {})
    assert rows_of(store, deleted)["runs"] == 1

    report = invoke(op, services, callers["writer"], [], {"project": "alpha"})
    assert report.deleted == 1 and rows_of(store, deleted)["runs"] == 0


_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from keel.core.batch import WriteBatch
    from keel.core.entities import now_ms
    from keel.services.llm import LlmService, PendingCall
    from keel.services.tracking import TrackingService
    from keel.services.workspace import open_store

    store = open_store(sys.argv[1], sys.argv[2], cached=False)
    tracking = TrackingService(store)
    llm = LlmService(store, tracking)
    contents = [f"shared content {i}".encode() for i in range(int(sys.argv[3]))]
    with open(sys.argv[4], "w") as out:
        n = 0
        while not os.path.exists(sys.argv[5]) and n < 2000:
            run_id = tracking.start_run(project="p").run_id
            data = contents[n % len(contents)]
            oid = tracking.store_bytes(data)  # found stored (a deleted run's): freshened
            time.sleep(0.01)  # as the sdk's writer does, the row comes a moment after the object
            tracking.write_batch(WriteBatch(artifacts=[(run_id, "a.txt", oid, len(data), "file", now_ms())],
                                            run_ends=[(run_id, "finished", now_ms(), None)]))
            request = {"model": "m", "messages": [{"role": "user", "content": f"q {n}"}]}
            response = {"model": "m", "choices": [{"message": {"role": "assistant", "content": "a"}}]}
            llm.write([PendingCall("chat.completions", request, response, 1.0, now_ms(), run_id=run_id)])
            out.write(run_id + "\\n")
            out.flush()
            n += 1
    store.close()
    """
)


def _lines(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0


def test_a_purge_while_another_process_writes_runs_with_the_same_contents_loses_nothing(
    store: Store, tracking: TrackingService, database_url: str, tmp_path: Path
) -> None:
    contents = [f"shared content {i}".encode() for i in range(8)]
    doomed = [make_run(tracking, [contents[i % 8]], calls=1) for i in range(24)]
    written, stop = tmp_path / "written.txt", tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, database_url, str(tmp_path / "objects"), "8", str(written), str(stop)],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while _lines(written) < 3 and writer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        started = _lines(written)
        purged = 0
        for chunk in range(0, len(doomed), 2):  # a purge at a time while the writer goes on
            purged += tracking.purge_runs(run_ids=doomed[chunk : chunk + 2]).deleted
        during = _lines(written) - started
        stop.touch()
        _out, err = writer.communicate(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.communicate()
    assert writer.returncode == 0, err.decode()[-2000:]
    assert purged == 24 and during > 0  # the purges and the writes overlapped

    new_runs = written.read_text().split()
    llm = LlmService(store, tracking)
    for run_id in new_runs:  # every artifact and recording of the writer reads back, hash-verified
        (artifact,) = tracking.list_artifacts(run_id)
        assert store.objects.get_bytes(artifact.oid) in contents
        (call,) = llm.calls(run=run_id)
        assert llm.read(call).request["messages"][0]["content"].startswith("q ")
    assert all(rows_of(store, r)["runs"] == 0 for r in doomed)
    report = verify_store(store)  # no record points at a missing object, every digest holds
    assert report.ok, report
