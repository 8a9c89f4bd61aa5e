"""Bad rows never reach the shared transaction (issues 15 and 16), on a real store (fixture ``ws``:
a SQLite workspace, then PostgreSQL + S3): every attack through ``TrackingService.write_batch`` is
refused with InvalidInput naming its row and field and writes nothing; what validation passes
writes and reads back; downloads stay inside their destination."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keel
from keel.core.batch import ARTIFACT_KINDS, WriteBatch
from keel.core.entities import RUN_STATUSES, new_run_id, now_ms
from keel.core.values import encode_param
from keel.errors import InvalidInput
from keel.sdk import session as sessions
from keel.services.tracking import TrackingService

TABLES = ("projects", "runs", "params", "tags", "metric_chunks", "latest_metrics", "artifacts", "lineage")
T = 1_700_000_000_000


def tracking() -> TrackingService:
    return TrackingService(sessions.get_session().service.store)


def counts(service: TrackingService) -> dict[str, int]:
    with service.store.db.read() as conn:
        return {name: conn.execute(f"SELECT COUNT(*) FROM {name}").scalar() for name in TABLES}  # noqa: S608


def valid_run(run_id: str, project: str = "victims") -> WriteBatch:
    """A whole valid run: what another part of the same process logged."""
    return WriteBatch(
        new_runs=[(run_id, project, "valid", T, None, '{"python": "3.11"}')],
        metrics=[(run_id, "loss", 1 / (i + 1), i, T + i) for i in range(1100)],
        params=[(run_id, "model", "str", "gpt-4", False)],
        tags=[(run_id, "team", "search")],
        run_ends=[(run_id, "finished", T + 2000, None)],
    )


def attack_rows(bad: str, oid: str) -> dict[str, list[tuple]]:
    """The rows of issues 15 and 16 for run ``bad`` (an existing run, or one the batch creates)."""
    return {
        "artifact ../../x": {"artifacts": [(bad, "../../x", oid, 4, "file", T)]},
        "artifact /abs/x": {"artifacts": [(bad, "/abs/x", oid, 4, "file", T)]},
        "context {not json": {"new_runs": [(new_run_id(), "victims", "r", T, None, "{not json")]},
        "run id ../../x": {"new_runs": [("../../x", "victims", "r", T, None, "{}")]},
        "10 MB tag": {"tags": [(bad, "big", "x" * 10_000_000)]},
        "<script> param key": {"params": [(bad, "<script>", "str", "v", False)]},
        "bad vtype": {"params": [(bad, "k", "pickle", "v", False)]},
        "string metric value": {"metrics": [(bad, "m", "0.5", 0, T)]},
        "step 2**63": {"metrics": [(bad, "m", 0.5, 2**63, T)]},
        "lone surrogate param": {"params": [(bad, "k", "str", "\ud800", False)]},
        "10**400 metric": {"metrics": [(bad, "m", 10**400, 0, T)]},
        "5,000-deep dict param": {"params": [(bad, "k", "json", '{"a":' * 5000 + "1" + "}" * 5000, False)]},
        "bad run status": {"run_ends": [(bad, "exploded", T, None)]},
    }


ATTACKS = list(attack_rows("x", "y"))
WHERE = {
    "artifact ../../x": ("artifacts[0]", "path"),
    "artifact /abs/x": ("artifacts[0]", "path"),
    "context {not json": ("new_runs[1]", "context"),
    "run id ../../x": ("new_runs[1]", "run_id"),
    "10 MB tag": ("tags[1]", "value"),
    "<script> param key": ("params[1]", "key"),
    "bad vtype": ("params[1]", "vtype"),
    "string metric value": ("metrics[1100]", "value"),
    "step 2**63": ("metrics[1100]", "step"),
    "lone surrogate param": ("params[1]", "text"),
    "10**400 metric": ("metrics[1100]", "value"),
    "5,000-deep dict param": ("params[1]", "text"),
    "bad run status": ("run_ends[1]", "status"),
}


@pytest.mark.parametrize("attack", ATTACKS)
def test_an_attack_row_refuses_its_batch_and_writes_nothing(ws: Path, attack: str) -> None:
    service = tracking()
    victim = service.start_run("victims", "existing").run_id  # the bad rows touch a stored run
    oid = service.store_bytes(b"evil")
    fresh = new_run_id()
    batch = valid_run(fresh)  # a valid run sharing the batch, as the sdk's writer would send it
    for field, rows in attack_rows(victim, oid)[attack].items():
        getattr(batch, field).extend(rows)
    before = counts(service)
    with pytest.raises(InvalidInput) as info:
        service.write_batch(batch)
    where, field = WHERE[attack]
    assert where in info.value.message and f" {field} " in info.value.message, info.value.message
    assert info.value.http_status == 400 and len(str(info.value)) < 500
    assert counts(service) == before  # nothing written, not even the valid run
    record = service.get_run(victim)
    assert (record.status, record.params, record.tags, record.metrics) == ("running", {}, {}, {})
    assert service.list_artifacts(victim) == []
    # The project's runs list keeps answering; the valid run alone writes in full.
    service.write_batch(valid_run(fresh))
    assert len(service.metric_history(fresh, "loss")) == 1100
    runs, _ = service.search_runs("victims")
    assert {r.run_id for r in runs} == {victim, fresh}


def test_start_run_validates_too(ws: Path) -> None:
    service = tracking()
    before = counts(service)
    with pytest.raises(InvalidInput, match="run_id"):
        service.start_run("p", "r", run_id="../../x")
    with pytest.raises(InvalidInput, match="tags.*value"):
        service.start_run("p", "r", tags={"big": "x" * 100_000})
    assert counts(service) == before


def test_bad_values_raise_at_the_call_and_another_run_keeps_every_point(ws: Path) -> None:
    """Issue 16: a step >= 2**63 or a lone surrogate used to fail the writer's shared transaction
    and lose another run's points; now each raises at its call and nothing else is touched."""
    with keel.start_run(project="p", name="good") as good:
        other = keel.Client().start_run(project="p", name="bad")
        for step in range(1100):
            good.log_metric("loss", 1 / (step + 1), step=step)
            if step == 500:
                with pytest.raises(InvalidInput, match="step"):
                    other.log_metric("m", 1.0, step=2**63)
                with pytest.raises(InvalidInput, match="lone surrogate"):
                    other.log_param("k", "\ud800")
                with pytest.raises(InvalidInput, match="64-bit float"):
                    other.log_metric("m", 10**400)
                with pytest.raises(InvalidInput, match="timestamp"):
                    other.log_metric("m", 1.0, timestamp=2**64)
                with pytest.raises(InvalidInput, match="timestamp"):
                    other.log_metric("m", 1.0, timestamp=1.5)
                deep: dict = {}
                for _ in range(5000):
                    deep = {"a": deep or {"b": 1}}
                with pytest.raises(InvalidInput, match="deeper"):
                    other.log_params(deep)
                with pytest.raises(InvalidInput, match="value"):
                    other.set_tag("big", "x" * 100_000)
                with pytest.raises(InvalidInput, match="role"):
                    other.log_input("prompt:qa@1", role="r" * 200)
        other.log_metric("m", 2.0, step=3, timestamp=float(T))  # an integral float is converted
        other.finish()
    client = keel.Client()
    assert len(client.metric_history(good.id, "loss")) == 1100
    assert [(m.step, m.value) for m in client.metric_history(other.id, "m")] == [(3, 2.0)]


def test_a_failed_run_with_a_huge_or_undecodable_error_still_ends(ws: Path) -> None:
    with pytest.raises(ValueError), keel.start_run(project="p", name="boom") as run:
        raise ValueError("bad file \udcff " + "x" * 100_000)
    record = keel.Client().get_run(run.id)
    assert record.status == "failed" and record.error.startswith("ValueError: bad file \\udcff")
    assert len(record.error) <= 64_000


def test_long_artifact_paths_keep_their_lineage(ws: Path) -> None:
    deep = Path("a" * 60) / ("b" * 60)
    (ws / "tree" / deep).mkdir(parents=True)
    (ws / "tree" / deep / "f.txt").write_text("x")
    with keel.start_run(project="p") as run:
        run.log_artifacts(ws / "tree", artifact_path="out")
    client = keel.Client()
    assert [a.path for a in client.list_artifacts(run.id)] == [f"out/{deep.as_posix()}/f.txt"]
    edges = [e for e in client.lineage(run.id) if e.entity.kind == "artifact"]
    assert len(edges) == 1 and len(edges[0].role) == 100


def test_a_bad_row_in_the_writer_does_not_lose_another_runs_rows(ws: Path) -> None:
    """The writer drains every run's rows into one batch; a refused batch is split by run, so
    the bad row (bypassing the call-site checks) loses only itself, and is counted."""
    session = sessions.get_session()
    with keel.start_run(project="p", name="good") as good:  # its own rows are fine: no WriteFailed
        for step in range(100):
            good.log_metric("loss", 0.5, step=step)
        session.writer.add_metric(("f" * 32, "m", 1.0, 2**63, T))  # as an older client might send it
    assert len(keel.Client().metric_history(good.id, "loss")) == 100
    loss = session.writer.take_loss("f" * 32)
    assert loss is not None and loss.rows == 1 and isinstance(loss.error, InvalidInput)
    assert session.writer.take_losses() == {}


# -- the property: what validation passes, the store writes and reads back ----------------------------
def _junk_texts() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=30),
        st.sampled_from(["\ud800", "a\x00b", "x" * 70_000, "", " ", "<script>", "a/../b", "../x", "/x", "é😀"]),
    )


JUNK = st.one_of(
    _junk_texts(),
    st.sampled_from([2**63, -(2**63) - 1, 10**400, None, True, 1.5, "{not json", "0.5"]),
    st.integers(),
)
INT64 = st.integers(-(2**63), 2**63 - 1)
KEY = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_\-: ]{0,20}", fullmatch=True)
TEXT = st.text(st.characters(exclude_characters="\x00"), max_size=20)
JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers(-(2**80), 2**80) | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=10,
)


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy = JUNK) -> st.SearchStrategy:
    """``good`` about nine times in ten, else junk: batches pass often enough to test the write."""
    return st.integers(0, 9).flatmap(lambda pick: good if pick else bad)


@st.composite
def batches(draw: st.DrawFn) -> WriteBatch:
    run_id = uuid.uuid4().hex
    rid = mostly(st.just(run_id), st.sampled_from(["", run_id.upper(), "../../x", None, 5, "f" * 31]))
    contexts = st.dictionaries(st.text(max_size=5), JSON, max_size=3).map(json.dumps)
    param = JSON.flatmap(lambda v: st.just(_encoded(v)))
    row = {
        "metrics": st.tuples(
            rid, mostly(KEY), mostly(st.floats() | st.integers(-(2**70), 2**70)), mostly(INT64), INT64
        ),
        "params": st.builds(
            lambda r, k, enc, o: (r, k, *enc, o), rid, mostly(KEY), mostly(param, st.tuples(JUNK, JUNK)), st.booleans()
        ),
        "tags": st.tuples(rid, mostly(KEY), mostly(TEXT)),
        "artifacts": st.tuples(
            rid,
            mostly(st.from_regex(r"[a-z]{1,5}(/[a-z.]{1,5}){0,3}", fullmatch=True)),
            mostly(st.just("c" * 64)),
            mostly(st.integers(0, 2**63 - 1)),
            mostly(st.sampled_from(ARTIFACT_KINDS)),
            INT64,
        ),
        "lineage": st.tuples(
            rid,
            mostly(st.sampled_from(["input", "output"])),
            mostly(st.sampled_from(["prompt", "dataset", "model"])),
            mostly(st.from_regex(r"[a-z][a-z0-9/]{0,20}", fullmatch=True)),
            mostly(TEXT),
            mostly(TEXT),
            mostly(INT64),
        ),
        "run_ends": st.tuples(rid, mostly(st.sampled_from(RUN_STATUSES)), mostly(INT64), st.none() | mostly(TEXT)),
    }
    new_run = st.tuples(
        st.just(run_id),
        mostly(st.sampled_from(["prop", "prop/a b", "p.1"])),
        mostly(st.from_regex(r"[a-z][a-z ]{0,10}", fullmatch=True)),
        mostly(INT64),
        st.none(),
        mostly(contexts),
    )
    batch = WriteBatch(new_runs=[draw(new_run)])
    for field in draw(st.sets(st.sampled_from(list(row)), max_size=4)):
        setattr(batch, field, draw(st.lists(row[field], min_size=1, max_size=3)))
    return batch


def _encoded(value: object) -> tuple[str, str]:
    try:
        return encode_param("k", value)
    except InvalidInput:  # e.g. an integer too long: a row that must be refused later
        return "int", "9" * 5000


@pytest.fixture
def store_service(ws: Path) -> TrackingService:
    return tracking()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=batches())
def test_what_validation_passes_writes_and_reads_back(store_service: TrackingService, batch: WriteBatch) -> None:
    try:
        batch.validate()
    except InvalidInput:
        return  # refused before any SQL: nothing more to check
    store_service.write_batch(batch)
    run_id, project = batch.new_runs[0][0], batch.new_runs[0][1]
    record = store_service.get_run(run_id)
    runs, _ = store_service.search_runs(project)
    assert run_id in {r.run_id for r in runs}
    assert set(record.params) == {row[1] for row in batch.params}
    for key in {row[1] for row in batch.metrics}:
        assert store_service.metric_history(run_id, key)
    assert len(store_service.list_artifacts(run_id)) == len({row[1] for row in batch.artifacts})
    assert isinstance(json.loads(record.context_json), dict)


# -- downloads stay inside their destination ---------------------------------------------------------
def _stored_bad_rows(service: TrackingService, paths: list[str]) -> str:
    """A run with artifact rows at ``paths``, inserted straight into the database (as rows written
    before this fix could be), each pointing at real content."""
    run_id = service.start_run("dl", "old").run_id
    oid = service.store_bytes(b"pwned")
    with service.store.db.write() as conn:
        pk = conn.execute("SELECT id FROM runs WHERE run_id = ?", (run_id,)).scalar()
        for path in paths:
            conn.execute(
                "INSERT INTO artifacts (run_pk, path, oid, size, kind, created_at) VALUES (?, ?, ?, 5, 'file', ?)",
                (pk, path, oid, T),
            )
    return run_id


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink())


@pytest.mark.parametrize(
    ("paths", "prefix"),
    [
        (["good.txt", "../../x.txt"], ""),
        (["good.txt", "/abs/x.txt"], ""),
        (["a/good.txt", "a/../../x.txt"], "a"),
        (["good.txt", "..\\..\\x.txt"], ""),
    ],
)
def test_a_stored_escaping_path_refuses_the_whole_download(ws: Path, paths: list[str], prefix: str) -> None:
    service = tracking()
    run_id = _stored_bad_rows(service, paths)
    dest = ws / "dl" / "sub"
    before = _files(ws)
    with pytest.raises(InvalidInput, match="artifact path"):
        service.download_artifacts(run_id, prefix, dest)
    assert _files(ws) == before and not dest.exists()  # nothing written, inside or out
    assert not Path("/abs/x.txt").exists()


def test_downloads_refuse_symlinks_in_the_destination(ws: Path) -> None:
    service = tracking()
    outside = ws / "outside"
    outside.mkdir()
    (outside / "f.txt").write_text("precious")
    run_id = _stored_bad_rows(service, ["link/f.txt", "f.txt"])
    dest = ws / "dl"
    dest.mkdir()
    (dest / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidInput, match="symlink"):
        service.download_artifacts(run_id, "", dest)
    assert _files(dest) == ["link"]  # refused before the first write: not even f.txt
    other = ws / "dl2"
    other.mkdir()
    (other / "f.txt").symlink_to(outside / "f.txt")  # the target file itself is a link
    with pytest.raises(InvalidInput, match="symlink"):
        service.download_artifacts(run_id, "f.txt", other)
    with pytest.raises(InvalidInput, match="symlink"):
        service.download_artifacts(run_id, "link", other)  # link/f.txt lands as other/f.txt
    assert (outside / "f.txt").read_text() == "precious" and _files(outside) == ["f.txt"]


def test_good_downloads_still_work_and_a_symlinked_dest_is_the_users_choice(ws: Path) -> None:
    service = tracking()
    run_id = service.start_run("dl", "new").run_id
    oid = service.store_bytes(b"data")
    service.write_batch(
        WriteBatch(artifacts=[(run_id, p, oid, 4, "file", now_ms()) for p in ("a/b/c.txt", "a/d.txt", "e.txt")])
    )
    real = ws / "real"
    real.mkdir()
    os.symlink(real, ws / "chosen")
    written = service.download_artifacts(run_id, "a", ws / "chosen")
    assert sorted(p.relative_to(ws / "chosen").as_posix() for p in written) == ["b/c.txt", "d.txt"]
    assert (real / "b" / "c.txt").read_bytes() == b"data"
    assert service.download_artifacts(run_id, "a/b/c.txt", ws / "one") == [ws / "one" / "c.txt"]
    (ws / "file").write_text("x")
    with pytest.raises(InvalidInput, match="not a folder"):
        service.download_artifacts(run_id, "", ws / "file")
