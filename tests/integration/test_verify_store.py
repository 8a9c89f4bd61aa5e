"""``keel verify`` checks the metadata database: digests of finished runs, prompt and model
versions and reflog entries, recomputed and compared; SQLite's own integrity check.

Changes are made behind keel's back (SQL through another connection, or bytes of the
SQLite file), as a disk fault or a stray tool would make them; on both databases.
"""

from __future__ import annotations

import math
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keel.core.batch import WriteBatch
from keel.core.entities import new_run_id, now_ms
from keel.core.values import encode_param
from keel.services.models import ModelService
from keel.services.prompts import PromptService
from keel.services.tracking import TrackingService
from keel.services.verify import VerifyReport, verify_store
from keel.services.workspace import Store, open_store

MARK = 1234.5678125  # a metric value whose packed bytes are easy to find in the file
SHORT = "(SELECT id FROM runs WHERE name = 'short')"


@pytest.fixture
def store(migrated_database_url: str, tmp_path: Path) -> Iterator[Store]:
    opened = open_store(migrated_database_url, str(tmp_path / "objects"), cached=False)
    yield opened
    opened.close()


def _sql(store: Store, statement: str, *params: Any) -> list[Any]:
    """Run SQL behind keel's back (its own transaction, none of keel's checks); the rows it returns."""
    with store.db.write() as conn:
        return conn.execute(statement, params).all()


def _params(run_id: str, values: dict[str, Any], overwrite: bool = False) -> list[tuple[str, str, str, str, bool]]:
    return [(run_id, key, *encode_param(key, value), overwrite) for key, value in values.items()]


def _populate(store: Store) -> dict[str, str]:
    """Runs finished every way keel finishes them, a running one, prompts, models, aliases."""
    tracking = TrackingService(store)
    ts = now_ms()
    ids: dict[str, str] = {}

    # Created and finished by one batch (the write path's shortcut), with everything a run holds.
    short = ids["short"] = new_run_id()
    batch = WriteBatch(new_runs=[(short, "p", "short", ts, None, '{"git": "abc"}')])
    batch.params = _params(short, {"lr": 0.1, "model": "gpt", "n": 3, "none": None, "cfg": {"a": [1, 2]}})
    batch.params += _params(short, {"lr": 0.2}) + _params(short, {"model": "llama"}, overwrite=True)
    batch.tags = [(short, "team", "a"), (short, "team", "b"), (short, "empty", "")]
    values = [MARK, -0.0, math.nan, math.inf, -math.inf, 3, 1e-300]
    batch.metrics = [(short, f"m{i}", v, 0, ts) for i, v in enumerate(values)]
    batch.metrics += [(short, "loss", 1 / (s + 1), s, ts + s) for s in range(50)]
    batch.metrics += [(short, "tie", 1.0, 5, ts), (short, "tie", 2.0, 5, ts)]  # same step and time
    batch.artifacts = [(short, "a.txt", "a" * 64, 3, "file", ts), (short, "a.txt", "b" * 64, 4, "file", ts + 1)]
    batch.lineage = [(short, "input", "dataset", "d", "v1", "", ts), (short, "input", "dataset", "d", "v1", "", ts + 5)]
    batch.run_ends = [(short, "finished", ts + 100, None)]
    tracking.write_batch(batch)

    # Started, logged over several batches, then finished by a batch of its own.
    long = ids["long"] = tracking.start_run("p", "long", tags={"kind": "long"}).run_id
    for part in range(3):
        tracking.write_batch(
            WriteBatch(
                metrics=[(long, "loss", float(s), s, ts + s) for s in range(part * 100, part * 100 + 100)],
                params=_params(long, {f"p{part}": part}),
            )
        )
    tracking.write_batch(WriteBatch(run_ends=[(long, "failed", ts + 500, "boom")]))

    # Finished, then changed by keel (a tag and an artifact): re-sealed.
    later = ids["later"] = tracking.start_run("q", "later").run_id
    tracking.write_batch(WriteBatch(metrics=[(later, "acc", 0.5, 0, ts)], run_ends=[(later, "finished", ts, None)]))
    tracking.write_batch(WriteBatch(tags=[(later, "reviewed", "yes")]))
    tracking.write_batch(WriteBatch(artifacts=[(later, "late.bin", "c" * 64, 1, "file", ts)]))

    # Resumed and finished again; and one still running.
    again = ids["again"] = tracking.start_run("p", "again").run_id
    tracking.write_batch(WriteBatch(run_ends=[(again, "finished", ts, None)]))
    tracking.resume_run(again)
    tracking.write_batch(WriteBatch(metrics=[(again, "x", 1.0, 1, ts)]))
    tracking.write_batch(WriteBatch(run_ends=[(again, "killed", ts + 9, None)]))
    ids["running"] = tracking.start_run("p", "running").run_id
    tracking.write_batch(WriteBatch(metrics=[(ids["running"], "x", 1.0, 0, ts)]))

    prompts = PromptService(store)
    for i in range(3):
        prompts.register("chat", f"Answer {i}: {{{{ question }}}}", changelog=f"v{i}", version=f"1.{i}.0")
    prompts.set_alias("chat", "production", "1.0.0", reason="first")
    prompts.set_alias("chat", "production", "1.1.0", reason="better")
    prompts.set_alias("chat", "production", "1.2.0", reason="best")
    prompts.set_alias("chat", "staging", "1.2.0")

    models = ModelService(store, tracking)
    models.register("clf", "s3://bucket/clf/1", run_id=long, card={"license": "mit"})  # a finished run's lineage
    models.register("clf", "s3://bucket/clf/2", description="second")
    models.transition_stage("clf", 1, "Production")
    models.transition_stage("clf", 2, "Production", archive_existing=True)
    models.set_alias("clf", "champion", 2)
    models.update_version("clf", 2, description="now the champion")  # mutable: not covered
    return ids


def _verify(store: Store, **options: Any) -> VerifyReport:
    """The database part of ``keel verify`` (the artifacts above name no stored object)."""
    return verify_store(store, objects=False, **options)


def _problems(report: VerifyReport) -> list[str]:
    return [f"{d.what}: {d.problem}" for d in report.damaged]


def test_an_untouched_store_verifies(store: Store) -> None:
    _populate(store)

    report = _verify(store)

    assert report.ok, _problems(report)
    runs = report.records["runs"]
    assert (runs.checked, runs.running, runs.not_covered) == (4, 1, 0)
    assert report.records["prompt_versions"].checked == 3
    assert report.records["model_versions"].checked == 2
    assert report.records["reflog"].checked == 4 + 3 + 1  # aliases; stages and archive; champion
    assert report.not_covered == 0
    if store.db.is_sqlite:
        assert report.integrity_check == "integrity_check" and report.integrity == []
    else:
        assert report.integrity_check == "" and report.backend == "postgresql"


def test_the_digest_written_with_a_batch_is_the_one_its_rows_give(store: Store) -> None:
    """The shortcut (a run created and finished by one batch is digested from the batch)
    and the read-back path agree, value by value (NaN, -0.0, inf, ints, overwrites)."""
    ids = _populate(store)
    stored = dict(_sql(store, "SELECT run_id, digest FROM runs WHERE digest IS NOT NULL"))
    tracking = store.tracking
    with store.db.write() as conn:
        for run_id in stored:
            tracking.reseal(conn, tracking._pk_map(conn, [run_id])[run_id])
    resealed = dict(_sql(store, "SELECT run_id, digest FROM runs WHERE digest IS NOT NULL"))

    assert resealed == stored
    assert ids["short"] in stored and ids["running"] not in stored


def test_writes_through_a_connection_reseal_a_finished_run(store: Store) -> None:
    """keel writes that change a finished run inside a connection's transaction (a run set
    finished directly, a tag removed through the MLflow API) store the digest its rows give."""
    from keel.services.mlflow_tracking import MlflowTracking

    ids = _populate(store)
    tracking = TrackingService(store)
    store.tracking.set_status(ids["running"], "finished", now_ms())
    before = dict(_sql(store, "SELECT run_id, digest FROM runs"))
    MlflowTracking(tracking).delete_tag(ids["short"], "team")
    after = dict(_sql(store, "SELECT run_id, digest FROM runs"))

    assert before[ids["running"]] is not None
    assert after[ids["short"]] != before[ids["short"]]
    report = _verify(store)
    assert report.ok, _problems(report)
    assert report.records["runs"].checked == 5


def test_a_changed_metric_series_is_reported_with_its_run(store: Store) -> None:
    ids = _populate(store)
    row = _sql(store, "SELECT id, vals FROM metric_chunks WHERE key = 'loss' ORDER BY id LIMIT 1")[0]
    vals = bytearray(row.vals)
    vals[13] ^= 0x01  # one bit of one value
    _sql(store, "UPDATE metric_chunks SET vals = ? WHERE id = ?", bytes(vals), row.id)

    report = _verify(store)

    assert not report.ok
    assert _problems(report) == [f"run {ids['short'][:8]} (project p): metrics changed since it finished"]
    assert report.damaged[0].kind == "run" and report.damaged[0].key == ids["short"]


@pytest.mark.parametrize(
    ("statement", "words"),
    [
        ("UPDATE params SET value = '0.3' WHERE key = 'lr'", "params"),
        ("UPDATE tags SET value = 'c' WHERE key = 'team'", "tags"),
        ("DELETE FROM tags WHERE key = 'empty'", "tags"),
        ("UPDATE latest_metrics SET max_value = 2 WHERE key = 'loss' AND run_pk = " + SHORT, "metric summaries"),
        ("UPDATE artifacts SET size = 5 WHERE run_pk = " + SHORT, "artifacts"),
        ("DELETE FROM lineage WHERE entity_kind = 'dataset'", "lineage"),
        ("UPDATE runs SET end_time = end_time + 1 WHERE name = 'short'", "its status, times, context or error"),
        ("UPDATE runs SET summary = '{}' WHERE name = 'short'", "its summary document"),
        ("UPDATE runs SET digest = 'x' || substr(digest, 2) WHERE name = 'short'", "its stored digest is damaged"),
    ],
    ids=["param", "tag", "tag-removed", "latest", "artifact", "lineage", "run-row", "summary", "digest"],
)
def test_each_part_of_a_run_is_covered(store: Store, statement: str, words: str) -> None:
    ids = _populate(store)
    _sql(store, statement)

    report = _verify(store)

    assert [d.key for d in report.damaged] == [ids["short"]]
    assert words in report.damaged[0].problem


def test_a_changed_prompt_version_is_reported(store: Store) -> None:
    _populate(store)
    _sql(store, "UPDATE prompt_versions SET content = replace(content, 'Answer 1', 'Answer X') WHERE version = '1.1.0'")

    report = _verify(store)

    assert _problems(report) == ["prompt chat@1.1.0: content changed since it was registered"]


def test_a_changed_model_version_is_reported_but_not_its_mutable_fields(store: Store) -> None:
    _populate(store)
    _sql(store, "UPDATE model_versions SET description = 'edited', tags = '{\"a\": \"b\"}'")  # mutable
    assert _verify(store).ok
    _sql(store, "UPDATE model_versions SET source = 's3://elsewhere' WHERE version = 1")
    _sql(store, "UPDATE model_versions SET stage = 'Staging' WHERE version = 2")

    problems = _problems(_verify(store))

    assert "model clf version 1: content changed since it was registered" in problems
    assert any(p.startswith("model clf version 2: its stage is 'Staging'") for p in problems)


def test_a_removed_reflog_entry_is_reported(store: Store) -> None:
    _populate(store)
    second = _sql(store, "SELECT id FROM reflog WHERE ref = 'production' ORDER BY id")[1].id
    _sql(store, "DELETE FROM reflog WHERE id = ?", second)

    problems = _problems(_verify(store))

    assert problems == ["reflog of prompt chat alias production: entry 2 changed, or an entry before it was removed"]


def test_a_removed_last_reflog_entry_or_a_moved_ref_is_reported(store: Store) -> None:
    _populate(store)
    last = _sql(store, "SELECT max(id) AS id FROM reflog WHERE ref = 'production'")[0].id
    _sql(store, "DELETE FROM reflog WHERE id = ?", last)
    _sql(store, "UPDATE refs SET target = '1.0.0' WHERE ref = 'staging'")
    _sql(store, "INSERT INTO refs (kind, name, ref, target, updated_at) VALUES ('prompt', 'chat', 'qa', '1.0.0', 0)")

    problems = _problems(_verify(store))

    assert sorted(problems) == [
        "prompt chat alias production: points at 1.2.0, but the reflog's last entry moved it to 1.1.0: "
        "an entry was removed, or the ref changed outside keel",
        "prompt chat alias qa: has no reflog entry: its history was removed, or the ref was set outside keel",
        "prompt chat alias staging: points at 1.0.0, but the reflog's last entry moved it to 1.2.0: "
        "an entry was removed, or the ref changed outside keel",
    ]


def test_a_changed_reflog_entry_is_reported_once(store: Store) -> None:
    _populate(store)
    _sql(store, "UPDATE reflog SET who = 'mallory' WHERE reason = 'better'")

    assert _problems(_verify(store)) == [
        "reflog of prompt chat alias production: entry 2 changed, or an entry before it was removed"
    ]


def test_records_from_before_digests_are_not_covered_and_can_be_sealed(store: Store) -> None:
    ids = _populate(store)
    for table in ("runs", "prompt_versions", "model_versions"):
        _sql(store, f"UPDATE {table} SET digest = NULL")
    _sql(store, "UPDATE reflog SET digest = NULL WHERE ref = 'production'")

    report = _verify(store)

    assert report.ok  # not covered is not wrong
    counts = {kind: (c.checked, c.not_covered) for kind, c in report.records.items()}
    assert counts == {"runs": (0, 4), "prompt_versions": (0, 3), "model_versions": (0, 2), "reflog": (5, 3)}

    sealed = _verify(store, seal=True)
    assert sealed.ok and {k: c.sealed for k, c in sealed.records.items()} == {
        "runs": 4,
        "prompt_versions": 3,
        "model_versions": 2,
        "reflog": 3,
    }
    after = _verify(store)
    assert after.ok and after.not_covered == 0 and after.records["runs"].checked == 4
    _sql(store, "UPDATE params SET value = '0.9' WHERE key = 'lr'")  # sealed runs are covered now
    assert [d.key for d in _verify(store).damaged] == [ids["short"]]


def test_a_damaged_record_is_never_sealed(store: Store) -> None:
    ids = _populate(store)
    _sql(store, "UPDATE tags SET value = 'z' WHERE key = 'kind'")

    report = _verify(store, seal=True)

    assert [d.key for d in report.damaged] == [ids["long"]]
    assert [d.key for d in _verify(store).damaged] == [ids["long"]]  # still reported


# -- the SQLite file itself --------------------------------------------------------------
def _sqlite_file(store: Store) -> Path:
    path = Path(str(store.db.database))
    store.db.close()  # every connection closed; then the log is copied into the file
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


@pytest.mark.parametrize("migrated_database_url", ["sqlite"], indirect=True)
def test_a_flipped_byte_in_the_file_is_found_by_the_digests(store: Store, tmp_path: Path) -> None:
    ids = _populate(store)
    path = _sqlite_file(store)
    data = bytearray(path.read_bytes())
    where = data.find(struct.pack("<d", MARK))
    assert where > 0 and data.find(struct.pack("<d", MARK), where + 1) == -1
    data[where + 2] ^= 0x20
    path.write_bytes(bytes(data))

    reopened = open_store(f"sqlite:///{path}", str(tmp_path / "objects"), cached=False)
    try:
        report = _verify(reopened)
    finally:
        reopened.close()

    assert report.integrity == []  # the page is well formed: SQLite sees nothing wrong
    assert _problems(report) == [f"run {ids['short'][:8]} (project p): metrics changed since it finished"]


@pytest.mark.parametrize("migrated_database_url", ["sqlite"], indirect=True)
def test_a_damaged_page_fails_the_integrity_check(store: Store, tmp_path: Path) -> None:
    _populate(store)
    root = _sql(store, "SELECT rootpage FROM sqlite_master WHERE name = 'ix_params_key_value'")[0].rootpage
    path = _sqlite_file(store)
    page_size = 1024
    with open(path, "r+b") as fh:
        fh.seek((root - 1) * page_size)
        fh.write(b"\xff" * 64)

    reopened = open_store(f"sqlite:///{path}", str(tmp_path / "objects"), cached=False)
    try:
        report = _verify(reopened)
        quick = _verify(reopened, quick=True)
    finally:
        reopened.close()

    assert not report.ok and report.integrity and report.integrity_check == "integrity_check"
    assert quick.integrity_check == "quick_check" and quick.integrity


@pytest.mark.parametrize("migrated_database_url", ["sqlite"], indirect=True)
def test_unreadable_rows_are_pinned_on_their_runs(store: Store, tmp_path: Path) -> None:
    """A damaged page of a table verify reads: each run whose rows are on it is reported,
    and the rest of the store is still checked."""
    ids = _populate(store)
    root = _sql(store, "SELECT rootpage FROM sqlite_master WHERE name = 'tags'")[0].rootpage
    path = _sqlite_file(store)
    with open(path, "r+b") as fh:
        fh.seek((root - 1) * 1024)
        fh.write(b"\xff" * 64)

    reopened = open_store(f"sqlite:///{path}", str(tmp_path / "objects"), cached=False)
    try:
        report = _verify(reopened)
    finally:
        reopened.close()

    assert report.integrity
    sealed = {ids["short"], ids["long"], ids["later"], ids["again"]}
    assert {d.key for d in report.damaged if d.kind == "run"} == sealed
    assert all("its rows cannot be read: database disk image is malformed" == d.problem for d in report.damaged)
    assert report.records["prompt_versions"].checked == 3 and report.records["reflog"].checked == 8


def test_progress_is_reported_per_kind(store: Store) -> None:
    _populate(store)
    seen: list[tuple[str, int, int]] = []

    _verify(store, progress=lambda stage, done, total: seen.append((stage, done, total)))

    finals = {stage: (done, total) for stage, done, total in seen}
    assert finals == {
        "runs": (5, 5),
        "prompt versions": (3, 3),
        "model versions": (2, 2),
        "reflog entries": (8, 8),
    }


# -- concurrent writers ----------------------------------------------------------------
def _tag_and_move(database: str, objects: str, run_id: str, worker: int, barrier: Any, out: Any) -> None:
    try:
        store = open_store(database, objects, cached=False)
        tracking, prompts = TrackingService(store), PromptService(store)
        barrier.wait(60)
        for i in range(15):
            tracking.write_batch(WriteBatch(tags=[(run_id, f"w{worker}", str(i))]))
            prompts.set_alias("chat", "production", f"1.{(worker + i) % 3}.0", reason=f"w{worker} #{i}")
        store.close()
        out.put((worker, "ok"))
    except BaseException as exc:  # reported to the test
        out.put((worker, f"{type(exc).__name__}: {exc}"))


def test_concurrent_writers_keep_digests_and_chains_whole(
    store: Store, migrated_database_url: str, tmp_path: Path
) -> None:
    """Processes re-sealing one finished run and extending one alias's chain at once:
    each write reads what the previous one committed, so verify finds nothing."""
    import multiprocessing

    ids = _populate(store)
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    args = (migrated_database_url, str(tmp_path / "objects"), ids["short"])
    procs = [ctx.Process(target=_tag_and_move, args=(*args, w, barrier, out)) for w in range(4)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=240) for _ in procs)
    for p in procs:
        p.join(30)

    assert results == dict.fromkeys(range(4), "ok")
    report = _verify(store)
    assert report.ok, _problems(report)
    assert report.records["reflog"].checked == 8 + 4 * 15
