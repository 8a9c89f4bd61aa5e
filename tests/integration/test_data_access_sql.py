"""The SQL the services used to hold, now SQL text in keel.meta (issue 20 part 1), on SQLite and
PostgreSQL: the import ledger, dataset versions and what data gc keeps, logged-model metrics
written once, and the data state's own SQLite file (remade when corrupt)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.core.batch import WriteBatch
from keel.core.entities import new_run_id, now_ms
from keel.meta.data_state import StateRows
from keel.meta.datasets import register_in_sqlite_file
from keel.meta.logged_models import LoggedModelRows
from keel.services.data_versions import all_version_oids, protected_oids, register_with, versions_of
from keel.services.importers.ledger import Ledger
from keel.services.workspace import Store, open_store


@pytest.fixture
def store(migrated_database_url: str, tmp_path: Path) -> Iterator[Store]:
    opened = open_store(migrated_database_url, str(tmp_path / "objects"), cached=False)
    yield opened
    opened.close()


def _run_using(store: Store, path: str, oid: str, at: int) -> str:
    """A run of project ``p`` that used dataset ``path@oid`` (lineage input, recorded at ``at``)."""
    if not any(project.name == "p" for project, _n in store.tracking.list_projects()):
        store.tracking.create_project("p")
    run_id = new_run_id()
    store.tracking.write_batch(
        WriteBatch(
            new_runs=[(run_id, "p", f"r-{run_id[:6]}", at, None, "{}")],
            lineage=[(run_id, "input", "dataset", path, oid, "", at)],
        )
    )
    return run_id


def test_the_import_ledger_lists_each_item_once(store: Store) -> None:
    ledger, other = Ledger(store, "mlflow"), Ledger(store, "wandb")
    ids = [f"run-{i}" for i in range(1_203)]  # more than one IN list of 500
    ledger.record_many("run", [(i, f"keel-{i}", {"n": n}) for n, i in enumerate(ids)], "sqlite:///m.db")
    ledger.record_many("run", [("run-0", "changed", {}), ("run-new", "keel-new", {})])  # a listed one is kept
    other.record("run", "run-0", "wandb-0")

    known = ledger.known("run", [*ids, "run-new", "absent", "run-0"])
    assert len(known) == 1_204
    assert known["run-0"] == "keel-run-0" and known["run-new"] == "keel-new" and "absent" not in known
    assert other.known("run", ids) == {"run-0": "wandb-0"}
    assert ledger.known("model", ids) == {}
    details = ledger.details("run", ["run-1202", "run-5", "absent"])
    assert details == {"run-1202": ("keel-run-1202", {"n": 1202}), "run-5": ("keel-run-5", {"n": 5})}
    assert len(ledger.details("run")) == 1_204

    # Another import got there first: its rows stay, the rest of the batch is written.
    ledger.rows.add("run", [("run-7", "again", "{}"), ("late", "keel-late", "{}")], "", now_ms())
    assert ledger.known("run", ["run-7", "late"]) == {"run-7": "keel-run-7", "late": "keel-late"}


def test_dataset_versions_register_once_and_list_newest_first(store: Store) -> None:
    old, new, other = "a" * 64, "b" * 64, "c" * 64
    register_with(store, [("data/x", old, "dir", 10, 2, "c1")])
    register_with(store, [("data/x", new, "dir", 12, 3, "c2"), ("data/y", other, "file", 1, 1, "")])
    register_with(store, [("data/x", old, "dir", 99, 9, "changed"), ("data/x", old, "dir", 99, 9, "twice")])
    first = _run_using(store, "data/x", old, 1_000)
    second = _run_using(store, "data/x", old, 2_000)
    _run_using(store, "data/y", other, 3_000)

    found = versions_of(store, "data/x")
    assert [(v.oid, v.size, v.git_commit) for v in found] == [(new, 12, "c2"), (old, 10, "c1")]
    assert found[1].runs == [first, second] and found[0].runs == []
    assert {v.path for v in versions_of(store, None)} == {"data/x", "data/y"}
    assert versions_of(store, "data/none") == []
    assert all_version_oids(store) == {old, new, other}
    _objects, used = protected_oids(store)
    assert used == {old, other}


def test_sqlite_file_registration_needs_a_current_schema(tmp_path: Path, workspace_template: Path) -> None:
    current = tmp_path / "current.db"
    current.write_bytes((workspace_template / "keel.db").read_bytes())
    assert register_in_sqlite_file(str(current), [("d", "e" * 64, "file", 1, 1, "")], 5)
    assert register_in_sqlite_file(str(current), [("d", "e" * 64, "file", 2, 2, "")], 6)  # kept as it was
    with sqlite3.connect(current) as conn:
        assert conn.execute("SELECT path, size, created_at FROM dataset_versions").fetchall() == [("d", 1, 5)]
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert not register_in_sqlite_file(str(empty), [("d", "e" * 64, "file", 1, 1, "")], 5)  # needs migrating


def test_logged_model_metrics_are_kept_once(store: Store) -> None:
    store.tracking.create_project("p")
    project_id = store.tracking.project_ids(["p"])[0]
    rows = LoggedModelRows(store.db)
    now = now_ms()
    rows.create(
        {
            "model_id": "m-" + "1" * 32,
            "project_id": project_id,
            "name": "model",
            "model_type": "",
            "source_run_id": None,
            "status": 1,
            "lifecycle_stage": "active",
            "params": "{}",
            "tags": "{}",
            "created_at": now,
            "updated_at": now,
        }
    )
    pk = int(rows.model("m-" + "1" * 32).id)

    def point(value: float, step: int, model_pk: int = pk) -> dict[str, object]:
        return {
            "model_pk": model_pk,
            "key": "acc",
            "timestamp": 5,
            "step": step,
            "run_id": "r" * 32,
            "value": value,
            "dataset_name": None,
            "dataset_digest": None,
        }

    rows.add_metrics([point(0.5, 0), point(0.6, 1)])
    rows.add_metrics([point(0.9, 0), point(0.7, 2), point(0.1, 0, model_pk=pk + 1000)])  # a model that is not there
    assert [(r.step, r.value, r.model_id) for r in rows.metrics([pk])] == [
        (0, 0.5, "m-" + "1" * 32),
        (1, 0.6, "m-" + "1" * 32),
        (2, 0.7, "m-" + "1" * 32),
    ]
    rows.merge(pk, "tags", {"a": "1", "b": "2"}, now + 1)
    rows.merge(pk, "tags", {"a": None}, now + 2)
    found = rows.model("m-" + "1" * 32)
    assert (found.tags, int(found.updated_at), found.project) == ('{"b": "2"}', now + 2, "p")
    with pytest.raises(ValueError, match="not a JSON column"):
        rows.merge(pk, "name", {"a": "1"}, now)


def test_the_data_state_file_round_trips_and_is_remade_when_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    state = StateRows(path)
    state.save_stats([("d/a", 1, 10, 100, "o1"), ("d/b/c", 2, 20, 200, "o2"), ("e", 3, 30, 300, "o3")], 7)
    state.add_locations([("o1", "p1", 0, 10), ("o2", "p2", 10, 20)])
    state.add_objects([("p1", "pack"), ("p2", "pack"), ("o3", "loose")])
    state.set_checked([("p1", 4, 5, 6)])
    assert state.stats_under("d") == {"d/a": (1, 10, 100, "o1", 7), "d/b/c": (2, 20, 200, "o2", 7)}
    assert state.locations(["o1", "o2", "o9"]) == {"o1": ("p1", 0), "o2": ("p2", 10)}
    state.forget_objects(["p1"])
    assert state.locations(["o1", "o2"]) == {"o2": ("p2", 10)}
    assert state.owned_objects() == {"p2": "pack", "o3": "loose"}
    assert state.checked("p1") is None
    state.forget_stats(["d/a"])
    assert set(state.stats_under("d")) == {"d/b/c"}
    state.close()

    reopened = StateRows(path)  # what was recorded is still there
    assert set(reopened.stats_under("e")) == {"e"}
    reopened.close()

    path.write_bytes(b"this is not a SQLite database, it is a damaged cache" * 100)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    remade = StateRows(path)
    assert remade.stats_under("e") == {} and remade.owned_objects() == {}
    remade.save_stats([("e", 3, 30, 300, "o3")], 8)
    assert remade.stats_under("e") == {"e": (3, 30, 300, "o3", 8)}
    remade.close()
