"""Issue 28, the model registry: "as of T" across deletes, one time parser, one alias rule,
rollback like git, pinned sources. Real SQLite (and PostgreSQL + S3 where the ``ws`` fixture
runs them), real files; every table below is one row of the issue's findings."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

import keel
from keel.core.times import format_at
from keel.meta.models import RawModels, VersionRow
from keel.sdk.session import get_session
from keel.services.mlflow_registry import MlflowRegistry
from keel.services.model_sources import digest_path
from keel.services.prompts import PromptService

#: the rules below are the service's, not the database's: the PostgreSQL run of the ``ws``
#: fixture is kept for the tests whose SQL is new (tombstones, "as of T", pinned sources)
SQLITE_ONLY = pytest.mark.parametrize("ws", ["sqlite-local"], indirect=True)


def _next_ms() -> int:
    """The next millisecond (spinning, at most 1 ms: no sleep)."""
    start = time.time_ns() // 1_000_000
    while (now := time.time_ns() // 1_000_000) == start:
        pass
    return now


def _between() -> int:
    """A moment strictly after every write so far and strictly before the next one, so "at T"
    is unambiguous (reflog times are milliseconds)."""
    moment = _next_ms()
    _next_ms()
    return moment


def _moments() -> dict[str, int]:
    """champion and Production move 1 -> 2 -> 3; version 3 is deleted, then the whole model, then
    the name is registered again. Returns the moment after each step."""
    models = keel.models
    for i in range(3):
        models.register("m", f"hf://org/m-{i}")
    t: dict[str, int] = {}
    for v in (1, 2, 3):
        models.set_alias("m", "champion", v)
        models.transition_stage("m", v, "Production", archive_existing=True)
        t[f"v{v}"] = _between()
    models.delete_version("m", 3, reason="bad")
    t["v3 deleted"] = _between()
    models.delete_model("m", reason="retired")
    t["model deleted"] = _between()
    models.register("m", "hf://org/m-again")
    models.set_alias("m", "champion", 4)
    t["again"] = _between()
    return t


# (moment, selector, version, deleted, stage then, aliases then); version None: NotFound
AS_OF = [
    ("v1", {"alias": "champion"}, 1, True, "Production", ("champion",)),
    ("v2", {"alias": "CHAMPION"}, 2, True, "Production", ("champion",)),
    ("v3", {"alias": "champion"}, 3, True, "Production", ("champion",)),
    ("v3 deleted", {"alias": "champion"}, None, None, None, None),
    ("v1", {"stage": "Production"}, 1, True, "Production", ("champion",)),
    ("v2", {"stage": "production"}, 2, True, "Production", ("champion",)),
    ("v3", {"version": 2}, 2, True, "Archived", ()),
    ("v3 deleted", {"stage": "Production"}, None, None, None, None),
    ("v3 deleted", {"stage": "Archived"}, 2, True, "Archived", ()),
    ("model deleted", {"version": 1}, None, None, None, None),
    ("again", {"alias": "champion"}, 4, False, "None", ("champion",)),
]


def test_as_of_t_answers_with_deleted_versions_marked(ws):
    t = _moments()
    history = keel.models.history("m")
    deleted_at = {m.ref: m.at for m in history if m.ref.startswith("version:")}
    for moment, selector, version, deleted, stage, aliases in AS_OF:
        row = f"{moment} {selector}"
        if version is None:
            with pytest.raises(keel.NotFound):
                keel.models.get("m", at=t[moment], **selector)
            continue
        mv = keel.models.get("m", at=t[moment], **selector)
        assert (mv.version, mv.deleted, mv.stage, mv.aliases) == (version, deleted, stage, aliases), row
        assert mv.deleted_at == (deleted_at[f"version:{version}"] if deleted else None), row
        assert mv.to_dict()["deleted"] is deleted and mv.to_dict()["deleted_at"] == mv.deleted_at, row
    # the live reads of today are unchanged
    assert keel.models.get("m", alias="champion").version == 4
    assert [(v.version, v.stage, v.deleted) for v in keel.models.versions_at("m", t["v3"])] == [
        (3, "Production", True),
        (2, "Archived", True),
        (1, "Archived", True),
    ]
    assert [v.version for v in keel.models.versions_at("m", t["v3 deleted"])] == [2, 1]
    assert [(v.version, v.deleted) for v in keel.models.versions_at("m", t["again"])] == [(4, False)]
    assert keel.models.aliases_at("m", t["v2"]) == {"champion": 2}
    assert keel.models.aliases_at("m", t["v3 deleted"]) == {}
    assert keel.models.versions_in_stage("m", "Archived", at=t["v3"]) == [2, 1]


def test_the_tombstone_live_at_t_is_the_first_deleted_after_it(ws):
    """A name deleted and registered again may hold several tombstones of one number."""
    store = get_session().local_store("the test")
    raw = RawModels(store.db)

    def row(source: str) -> VersionRow:
        return VersionRow("twice", 1, source, None, "Production", "", {}, {}, None, "me", 1_000, 1_000, 0)

    with store.db.raw_write() as cur:
        raw.bury(cur, row("first"), 2_000, "me")
        raw.bury(cur, row("second"), 5_000, "me")
    with store.db.raw_read() as cur:
        for when, source in [(1_500, "first"), (1_999, "first"), (2_000, "second"), (4_999, "second")]:
            assert raw.tombstones_after(cur, "twice", when)[1].row.source == source, when
        assert raw.tombstones_after(cur, "twice", 5_000) == {}


@SQLITE_ONLY
def test_every_at_goes_through_the_one_time_parser(ws):
    keel.models.register("m", "hf://org/m-1")
    keel.models.register("m", "hf://org/m-2")
    keel.models.set_alias("m", "champion", 1)
    at = _between()
    keel.models.set_alias("m", "champion", 2)
    utc = datetime.fromtimestamp(at / 1000, tz=UTC)
    accepted = [
        at,
        f"{at}ms",
        f"{at / 1000:.3f}s",
        format_at(at),
        utc,
        utc.astimezone(timezone(timedelta(hours=9))).isoformat(),
        utc.astimezone(timezone(timedelta(hours=-5))),
    ]
    for value in accepted:
        assert keel.models.get("m", alias="champion", at=value).version == 1, value
        assert keel.models.aliases_at("m", value) == {"champion": 1}, value
    refused = [
        (at / 1000, "looks like epoch seconds"),
        (str(at), "has no unit"),
        (utc.replace(tzinfo=None).isoformat(), "has no time zone"),
        ("yesterday", "is not a time"),
    ]
    for value, message in refused:
        with pytest.raises(keel.InvalidInput, match=message):
            keel.models.get("m", alias="champion", at=value)
        with pytest.raises(keel.InvalidInput, match=message):
            keel.models.versions_at("m", value)


# (alias given, what happens): "refused: <message>" or the stored alias it moves
ALIAS_NAMES = [
    ("Production", "refused: is the name of the stage Production"),
    ("production", "refused: is the name of the stage Production"),
    ("STAGING", "refused: is the name of the stage Staging"),
    ("archived", "refused: is the name of the stage Archived"),
    ("None", "refused: is the name of the stage None"),
    ("LATEST", "refused: 'latest' is implicit"),
    ("v3", "refused: looks like a version"),
    ("Champion", "champion"),
    ("CHAMPION", "champion"),
    ("challenger", "challenger"),
]


@SQLITE_ONLY
def test_alias_names_one_rule_case_insensitive_and_case_preserving(ws):
    for i in range(2):
        keel.models.register("m", f"hf://org/m-{i}")
    keel.models.set_alias("m", "champion", 1)
    for given, outcome in ALIAS_NAMES:
        if outcome.startswith("refused: "):
            with pytest.raises(keel.InvalidInput, match=outcome.removeprefix("refused: ")):
                keel.models.set_alias("m", given, 2)
            continue
        move = keel.models.set_alias("m", given, 2)
        assert move.ref == outcome, given
        assert keel.models.get("m", alias=given.swapcase()).version == 2, given
    assert keel.models.get_model("m").aliases == {"champion": 2, "challenger": 2}
    keel.models.transition_stage("m", 1, "Production")
    assert keel.models.get("m@PRODUCTION").version == 1  # a stage in any case, never an alias
    assert keel.models.delete_alias("m", "ChAmPiOn").ref == "champion"
    assert keel.models.get_model("m").aliases == {"challenger": 2}


@SQLITE_ONLY
def test_the_mlflow_registry_follows_the_same_alias_rule(ws):
    keel.models.register("m", "hf://org/m-1")
    store = get_session().local_store("the test")
    from keel.services.models import ModelService

    registry = MlflowRegistry(ModelService(store), PromptService(store))
    for alias in ("Production", "staging", "ARCHIVED"):
        with pytest.raises(keel.InvalidInput, match="is the name of the stage"):
            registry.set_alias("m", alias, "1", who="me")
    registry.set_alias("m", "Champion", "1", who="me")
    assert registry.get_by_alias("m", "CHAMPION")["version"] == "1"
    registry.set_alias("m", "champion", "1", who="me")  # the same alias, not a second one
    assert keel.models.get_model("m").aliases == {"Champion": 1}
    registry.delete_alias("m", "champion", who="me")
    assert keel.models.get_model("m").aliases == {}


def _moves(targets: list[int], name: str = "m") -> None:
    for i in range(max(targets)):
        keel.models.register(name, f"hf://org/m-{i}")
    for target in targets:
        keel.models.set_alias(name, "champion", target)


# (alias moves, rollback steps, where it points after, or the Conflict's message)
ROLLBACKS = [
    ([1, 2, 5, 1, 6], 1, 1),  # undo the last move (git's reset @{1})
    ([1, 2, 5, 1, 6], 2, 5),
    ([1, 2, 5, 1, 6], 3, 2),
    ([1, 2, 5, 1, 6], 4, 1),
    ([1, 2, 5, 1, 6], 5, "was not set before the move 5 back"),
    ([1, 2, 5, 1, 6], 6, "has 5 move(s): cannot undo 6"),
    ([1], 1, "was not set before"),
]


@SQLITE_ONLY
def test_rollback_undoes_the_last_moves_like_git(ws):
    for i, (targets, steps, after) in enumerate(ROLLBACKS):
        name = f"m{i}"  # a model's reflog outlives it: one name per row
        _moves(targets, name)
        current = targets[-1]
        if isinstance(after, str):
            with pytest.raises(keel.Conflict, match=re.escape(after)):
                keel.models.rollback(name, "champion", steps=steps)
            assert keel.models.get(name, alias="champion").version == current
            continue
        move = keel.models.rollback(name, "Champion", steps=steps)
        assert (move.old, move.new) == (str(current), str(after)), (targets, steps)
        # a rollback is a move: rolling back one step again returns where it started
        assert keel.models.rollback(name, "champion").new == str(current)


@SQLITE_ONLY
def test_rollback_onto_a_deleted_version_is_refused(ws):
    _moves([1, 2])
    keel.models.set_alias("m", "champion", 1)
    keel.models.delete_version("m", 2)
    with pytest.raises(keel.Conflict, match="version 2, which was deleted"):
        keel.models.rollback("m", "champion")
    with pytest.raises(keel.InvalidInput, match="steps must be"):
        keel.models.rollback("m", "champion", steps=0)


@SQLITE_ONLY
def test_set_alias_at_t_points_it_where_it_was(ws):
    _moves([1, 2])
    at_two = _between()
    keel.models.register("m", "hf://org/m-3")
    keel.models.set_alias("m", "champion", 3)
    moved = keel.models.set_alias("m", "champion", at=format_at(at_two))
    assert (moved.old, moved.new) == ("3", "2") and "set to where it was at" in moved.reason
    for kwargs, message in [
        ({"version": 1, "at": at_two}, "not both"),
        ({}, "not both"),
        ({"at": "2001-01-01T00:00:00Z"}, "pointed at nothing"),
    ]:
        with pytest.raises((keel.InvalidInput, keel.NotFound), match=message):
            keel.models.set_alias("m", "champion", **kwargs)


# (what the source is, how it changes after registering, drift reported: None, "changed", "missing")
SOURCES = [
    ("file", None, None),
    ("file", "edit", "changed"),
    ("file", "remove", "missing"),
    ("folder", None, None),
    ("folder", "edit", "changed"),
    ("folder", "add", "changed"),
    ("folder", "rename", "changed"),
]


def test_local_sources_are_pinned_and_verify_reports_drift(ws):
    made = []
    for i, (kind, _change, _drift) in enumerate(SOURCES):
        path = ws / f"model-{i}"
        if kind == "file":
            path.write_bytes(b"weights")
        else:
            (path / "sub").mkdir(parents=True)
            (path / "config.json").write_text("{}")
            (path / "sub" / "weights.bin").write_bytes(b"w")
        mv = keel.models.register("pinned", str(path))
        assert mv.source_digest == digest_path(path) and mv.source_digest.startswith("sha256:")
        made.append(path)
    assert keel.models.register("pinned", "hf://org/x").source_digest is None  # URIs are not pinned
    assert keel.models.register("pinned", "models:/pinned/1").source_digest == digest_path(made[0])
    for path, (kind, change, _drift) in zip(made, SOURCES, strict=True):
        target = path if kind == "file" else path / "sub" / "weights.bin"
        if change == "edit":
            target.write_bytes(b"other")
        elif change == "remove":
            target.unlink()
        elif change == "add":
            (path / "extra.txt").write_text("x")
        elif change == "rename":
            target.rename(target.with_name("renamed.bin"))
    report = keel.Client().verify()
    found = {d.version: d for d in report.drift}
    for i, (_kind, _change, drift) in enumerate(SOURCES):
        version = i + 1
        if drift is None:
            assert version not in found, version
            continue
        assert found[version].recorded == digest_path(made[0]) or found[version].recorded.startswith("sha256:")
        assert (found[version].now is None) == (drift == "missing"), version
    assert report.ok and report.sources_checked == len(SOURCES) + 1
    assert [d["version"] for d in report.to_dict()["sources"]["drift"]] == sorted(found)


@SQLITE_ONLY
def test_a_source_digest_is_checked_at_the_boundary(ws):
    for source, digest, message in [
        ("model.bin", "md5:abc", "invalid source digest"),
        ("model.bin", "sha256:" + "A" * 64, "invalid source digest"),
        ("hf://org/x", "sha256:" + "a" * 64, "does not pin"),
        ("model.bin", "etag:" + "a" * 64, "does not pin"),
        ("s3://bucket/model.bin", "sha256:" + "a" * 64, "does not pin"),
    ]:
        with pytest.raises(keel.InvalidInput, match=message):
            get_session().models.register("m", source, source_digest=digest)
    assert keel.models.list_models() == []


@SQLITE_ONLY
@pytest.mark.s3
def test_s3_sources_are_pinned_by_their_etags_and_verify_reports_drift(ws, s3_server, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    bucket = s3_server.create_bucket()
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key="ranker/v1.bin", Body=b"weights one")
    for key in ("config.json", "sub/weights.bin", "tokenizer.json"):
        s3.put_object(Bucket=bucket, Key=f"llm/{key}", Body=key.encode())
    one = keel.models.register("s3model", f"s3://{bucket}/ranker/v1.bin")
    tree = keel.models.register("s3model", f"s3://{bucket}/llm")
    same = keel.models.register("s3model", f"s3://{bucket}/llm/")  # the same objects, the same digest
    absent = keel.models.register("s3model", f"s3://{bucket}/nothing-here")
    assert one.source_digest.startswith("etag:") and tree.source_digest.startswith("etag:")
    assert same.source_digest == tree.source_digest != one.source_digest
    assert absent.source_digest is None  # nothing there to pin

    report = keel.Client().verify()
    assert report.drift == [] and report.sources_checked == 3 and report.sources_unchecked == 0

    s3.put_object(Bucket=bucket, Key="ranker/v1.bin", Body=b"other weights, same name")
    s3.delete_object(Bucket=bucket, Key="llm/tokenizer.json")
    found = {d.version: d for d in keel.Client().verify().drift}
    assert set(found) == {one.version, tree.version, same.version}
    assert all(d.now and d.now.startswith("etag:") for d in found.values())
    for key in ("config.json", "sub/weights.bin"):
        s3.delete_object(Bucket=bucket, Key=f"llm/{key}")
    assert keel.Client().verify().to_dict()["sources"]["drift"][1]["now"] is None  # gone

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # unreachable: unchecked, not drift
    report = keel.Client().verify()
    assert report.drift == [] and report.sources_unchecked == 3 and report.ok
