"""Renaming a project on every backend (keel.meta.projects, TrackingService.rename_project).

Runs, traces and the MLflow experiment refer to a project by id and follow it; the roles
granted on the old name move; the audit log keeps the old name; and another process (a
second store on the same database, as another server worker) never finds the old name
still pointing at the renamed project.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.core.traces import SpanBatch
from keel.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from keel.services.auth import AuthStore
from keel.services.traces import TraceService
from keel.services.tracking import TrackingService
from keel.services.workspace import Store, open_store

TRACE = "5" * 32


@pytest.fixture
def stores(database_url: str, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    """Two stores on one database: this process and another worker."""
    first = open_store(database_url, str(tmp_path / "objects"), cached=False)
    second = open_store(database_url, str(tmp_path / "objects"), cached=False)
    yield first, second
    second.close()
    first.close()


def _span(trace_id: str) -> dict[str, object]:
    return {"trace_id": trace_id, "span_id": "a" * 16, "name": "answer", "start_ns": 1, "end_ns": 2, "status": "ok"}


def test_a_renamed_project_keeps_its_runs_traces_and_roles(stores: tuple[Store, Store]) -> None:
    store, other_store = stores
    tracking, other = TrackingService(store), TrackingService(other_store)
    traces, other_traces = TraceService(store), TraceService(other_store)
    auth = AuthStore(store.db)
    auth.create_user("ann")
    auth.grant("ann", "old", "writer", "test")
    auth.grant("ann", "elsewhere", "reader", "test")
    run_id = tracking.start_run("old", "kept").run_id
    traces.write_batch(SpanBatch(spans=[("old", _span(TRACE))]))
    (project_id,) = other.repo.project_ids(["old"])  # the other worker has looked the name up
    assert other_traces.raw.project_id("old") == project_id

    renamed = tracking.rename_project("old", "new", who="root")
    assert (renamed.name, renamed.id) == ("new", project_id)
    assert tracking.get_run(run_id).project == "new"
    assert traces.get(TRACE, "new").trace.span_count == 1
    grants = {(g["project"], g["role"]) for g in auth.grants(user="ann")}
    assert grants == {("new", "writer"), ("elsewhere", "reader")}
    (entry,) = [e for e in auth.audit_log() if e["action"] == "project.rename"]
    assert (entry["actor"], entry["target"]) == ("root", "new")
    assert entry["detail"] == {"old": "old", "new": "new", "project_id": project_id, "grants_moved": 1}

    # the other worker: the old name is unknown there too, and a new run under it starts a new project
    with pytest.raises(NotFound):
        other.repo.project_ids(["old"])
    assert other_traces.raw.project_id("old") is None
    assert other.repo.project_name(project_id) == "new"
    fresh = other.start_run("old", "after the rename")
    assert other.repo.project_ids(["old"]) != [project_id]
    assert [r.run_id for r in other.search_runs(["new"])[0]] == [run_id]
    assert [r.run_id for r in other.search_runs(["old"])[0]] == [fresh.run_id]


def test_renames_that_cannot_be_made_change_nothing(stores: tuple[Store, Store]) -> None:
    store, _ = stores
    tracking = TrackingService(store)
    auth = AuthStore(store.db)
    auth.create_user("bob")
    for project in ("a", "b", "default"):
        tracking.create_project(project)
    auth.grant("bob", "planned", "admin", "test")  # a role granted ahead of a project of that name
    refusals = {
        AlreadyExists: ("a", "b"),
        NotFound: ("nope", "c"),
        Conflict: ("a", "planned"),  # bob would get project a
        InvalidInput: ("default", "d"),  # MLflow's experiment 0
    }
    for error, (name, new_name) in refusals.items():
        with pytest.raises(error):
            tracking.rename_project(name, new_name)
    with pytest.raises(InvalidInput):
        tracking.rename_project("a", "default")
    with pytest.raises(InvalidInput):
        tracking.rename_project("a", " spaced ")
    assert tracking.rename_project("a", "a").name == "a"  # a no-op, not recorded
    assert sorted(p.name for p, _ in tracking.list_projects()) == ["a", "b", "default"]
    assert not [e for e in auth.audit_log() if e["action"] == "project.rename"]
    assert {g["project"] for g in auth.grants(user="bob")} == {"planned"}
