"""TrackingStore.run_count (the runs table's header) and list_projects agree, on both databases."""

from __future__ import annotations

from keel.core.batch import WriteBatch
from keel.core.entities import new_run_id
from keel.meta import open_database
from keel.meta.tracking import TrackingStore


def test_run_count_counts_one_projects_live_runs(migrated_database_url: str) -> None:
    db = open_database(migrated_database_url)
    try:
        store = TrackingStore(db)
        ids = {project: [new_run_id() for _ in range(n)] for project, n in (("a", 5), ("b", 3))}
        store.write_batch(
            WriteBatch(new_runs=[(r, p, r[:6], 1_000, None, "{}") for p, runs in ids.items() for r in runs])
        )
        store.set_deleted(ids["a"][0], True)
        store.create_project("empty")
        assert (store.run_count("a"), store.run_count("b"), store.run_count("empty")) == (4, 3, 0)
        assert store.run_count("nope") is None
        assert {p.name: n for p, n in store.list_projects()} == {"a": 4, "b": 3, "empty": 0}
    finally:
        db.close()
