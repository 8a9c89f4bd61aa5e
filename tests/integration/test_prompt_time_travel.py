"""Issue 28 for prompts: "as of T" (alias and latest), rollback like git, alias names, duplicate
content and reverts, through ``keel.prompts`` on SQLite and on PostgreSQL + S3."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

import keel
from keel.core.times import format_at
from keel.meta.refs import RefMove, Refs

#: Row tables run on SQLite only; the SQL each one reaches (as-of reads, the reflog) runs on
#: PostgreSQL too in the tests without it.
SQLITE_ONLY = pytest.mark.parametrize("ws", ["sqlite-local"], indirect=True)


def _register(template: str, changelog: str = "change", **kw):
    return keel.prompts.register("chat", template=template, model="gpt-4", changelog=changelog, **kw)


@SQLITE_ONLY
# -- the one time parser ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("at", "error"),
    [
        (lambda: time.time(), "looks like epoch seconds"),  # seconds, not milliseconds
        (lambda: int(time.time()), "looks like epoch seconds"),
        (lambda: "2026-12-07T10:00:00", "has no time zone"),  # zoneless ISO text
        (lambda: "1733500000", "has no unit"),
        (lambda: "yesterday", "is not a time"),
        (lambda: True, "is not a time"),
    ],
)
def test_ambiguous_times_are_refused_everywhere(ws, at, error):
    _register("Answer: {{ q }}")
    keel.prompts.set_alias("chat", "production", "1.0.0")
    calls = [
        lambda: keel.prompts.get("chat@production", at=at()),
        lambda: keel.prompts.get("chat", at=at()),
        lambda: keel.prompts.resolve("chat", "production", at=at()),
        lambda: keel.prompts.aliases_at("chat", at()),
        lambda: keel.prompts.versions("chat", at=at()),
        lambda: keel.prompts.set_alias("chat", "production", at=at()),
    ]
    for call in calls:
        with pytest.raises(keel.InvalidInput, match=error) as caught:
            call()
        assert caught.value.hint


@SQLITE_ONLY
def test_every_form_of_one_instant_gives_one_answer(ws):
    _register("Answer: {{ q }}")
    move = keel.prompts.set_alias("chat", "production", "1.0.0")
    when = move.at
    instant = datetime.fromtimestamp(when / 1000, tz=UTC)
    forms = [
        when,  # epoch milliseconds
        f"{when}ms",
        f"{when / 1000}s",
        format_at(when),  # as keel prints it
        instant,  # aware datetime
        instant.astimezone(),  # naive = local: the same instant in this process
        instant.replace(tzinfo=None) + (datetime.now().astimezone().utcoffset() or timedelta()),
        instant.astimezone().isoformat(),  # with this zone's offset
    ]
    for form in forms:
        assert keel.prompts.resolve("chat", "production", at=form) == "1.0.0", form
        assert keel.prompts.aliases_at("chat", form) == {"production": "1.0.0"}, form
    assert keel.prompts.aliases_at("chat", when - 1) == {}


# -- latest as of T ---------------------------------------------------------------------------
def test_latest_as_of_a_time(ws):
    _register("Answer: {{ q }}", changelog="v1")
    _register("Answer briefly: {{ q }}", changelog="v2")
    _register("Answer briefly: {{ q }}", changelog="v3", version="1.1.0")  # duplicate content
    versions = keel.prompts.versions("chat")
    assert [v.version for v in versions] == ["1.1.0", "1.0.1", "1.0.0"]
    first = versions[-1].created_at
    # at each registration time: the highest version registered by then (two in one millisecond: the later)
    rows = [(v.created_at, next(w.version for w in versions if w.created_at <= v.created_at)) for v in versions]
    rows += [(first, rows[-1][1]), (versions[0].created_at + 60_000, "1.1.0")]
    for when, expected in rows:
        assert keel.prompts.get("chat", at=when).version == expected, format_at(when)
        assert keel.prompts.get("chat@latest", at=format_at(when)).version == expected
        assert keel.prompts.resolve("chat", at=when) == expected
        assert keel.prompts.versions("chat", at=when)[0].version == expected
    with pytest.raises(keel.NotFound, match=rf"no version of 'chat' existed at {format_at(first - 1)}"):
        keel.prompts.get("chat", at=first - 1)
    with pytest.raises(keel.NotFound, match="no version of 'chat' existed"):
        keel.prompts.versions("chat", at=first - 1)
    with pytest.raises(keel.NotFound, match="no prompt named 'nope'"):
        keel.prompts.get("nope", at=first)


def test_as_of_shows_the_aliases_of_then(ws):
    _register("Answer: {{ q }}")
    _register("Answer briefly: {{ q }}")
    one = keel.prompts.set_alias("chat", "production", "1.0.0")
    two = keel.prompts.set_alias("chat", "staging", "1.0.1")
    three = keel.prompts.set_alias("chat", "production", "1.0.1")
    gone = keel.prompts.delete_alias("chat", "staging")
    rows = [
        (one.at - 1, {}),
        (one.at, {"production": "1.0.0"}),
        (two.at, {"production": "1.0.0", "staging": "1.0.1"}),
        (three.at, {"production": "1.0.1", "staging": "1.0.1"}),
        (gone.at, {"production": "1.0.1"}),
    ]
    if len({one.at, two.at, three.at, gone.at}) < 4:
        rows = [rows[0], rows[-1]]  # moves in one millisecond: the state at that time is after the last
    for when, expected in rows:
        assert keel.prompts.aliases_at("chat", when) == expected
        shown = {v.version: v.aliases for v in keel.prompts.versions("chat", at=when)}
        assert {alias: version for version, names in shown.items() for alias in names} == expected
    assert keel.prompts.get("chat@1.0.0", at=gone.at).aliases == ()
    assert keel.prompts.get("chat@1.0.1", at=gone.at).aliases == ("production",)


# -- rollback like git ------------------------------------------------------------------------
SEQUENCE = ["1.0.0", "1.0.1", "5.0.0", "1.0.0", "6.0.0"]


def _moves_of_the_issue():
    _register("A {{ q }}", version="1.0.0")
    _register("B {{ q }}", version="1.0.1")
    _register("C {{ q }}", version="5.0.0")
    _register("D {{ q }}", version="6.0.0")
    return [keel.prompts.set_alias("chat", "production", v) for v in SEQUENCE]


@SQLITE_ONLY
@pytest.mark.parametrize(("steps", "expected"), [(1, "1.0.0"), (2, "5.0.0"), (3, "1.0.1"), (4, "1.0.0")])
def test_rollback_steps_undo_the_last_moves(ws, steps, expected):
    _moves_of_the_issue()
    move = keel.prompts.rollback("chat", "production", steps=steps)
    assert (move.old, move.new) == ("6.0.0", expected)
    assert keel.prompts.load("chat@production").version == expected
    last = keel.prompts.history("chat", "production")[-1]
    assert last.new == expected and last.id is not None
    assert last.reason == ("rollback of production" if steps == 1 else f"rollback of production by {steps} moves")


@SQLITE_ONLY
@pytest.mark.parametrize(("steps", "message"), [(5, "was not set before its move 5 back"), (6, "moved 5 time")])
def test_rollback_past_the_history_is_a_conflict(ws, steps, message):
    _moves_of_the_issue()
    with pytest.raises(keel.Conflict, match=message) as caught:
        keel.prompts.rollback("chat", "production", steps=steps)
    assert "keel prompts alias history chat production" in caught.value.hint
    assert keel.prompts.resolve("chat", "production") == "6.0.0"  # nothing moved


@SQLITE_ONLY
@pytest.mark.parametrize("steps", [0, -1, True, "2"])
def test_rollback_steps_must_be_a_count(ws, steps):
    _moves_of_the_issue()
    with pytest.raises(keel.InvalidInput, match="steps"):
        keel.prompts.rollback("chat", "production", steps=steps)


@SQLITE_ONLY
def test_single_rollbacks_undo_the_last_move_each_time(ws):
    """Documented: a rollback is itself a move, so repeated single rollbacks flip between the
    last two targets (as ``git reset ref@{1}`` twice does); --steps and --at reach further."""
    _moves_of_the_issue()
    flips = [keel.prompts.rollback("chat", "production").new for _ in range(4)]
    assert flips == ["1.0.0", "6.0.0", "1.0.0", "6.0.0"]


def test_set_alias_at_a_time_points_where_it_was(ws):
    moves = _moves_of_the_issue()
    distinct = len({m.at for m in moves}) == len(moves)
    for move in moves if distinct else moves[-1:]:
        back = keel.prompts.set_alias("chat", "production", at=format_at(move.at))
        assert back.new == move.new and back.reason.startswith("set to where it pointed at ")
    with pytest.raises(keel.Conflict, match="pointed nowhere at"):
        keel.prompts.set_alias("chat", "production", at=moves[0].at - 1)
    with pytest.raises(keel.InvalidInput, match="not both"):
        keel.prompts.set_alias("chat", "production", "1.0.0", at=moves[0].at)


@pytest.mark.parametrize(
    ("moves", "steps", "expected"),
    [
        ([], 1, None),
        ([(None, "1")], 1, None),
        ([(None, "1"), ("1", "2")], 1, "1"),
        ([(None, "1"), ("1", "2")], 2, None),
        ([(None, "1"), ("1", None), (None, "3")], 1, None),  # deleted, then set again
        ([(None, "1"), ("1", "2"), ("2", "3")], 0, None),
    ],
)
def test_target_before_is_the_reflog_n_back(moves, steps, expected):
    log = [RefMove("prompt", "chat", "p", old, new, i, "", "") for i, (old, new) in enumerate(moves)]
    assert Refs.target_before(log, steps) == expected


# -- alias names ------------------------------------------------------------------------------
def test_aliases_are_case_insensitive_and_case_preserving(ws):
    _register("A {{ q }}")
    _register("B {{ q }}")
    keel.prompts.set_alias("chat", "production", "1.0.0")
    moved = keel.prompts.set_alias("chat", "Production", "1.0.1")  # moves 'production'
    assert (moved.ref, moved.old, moved.new) == ("production", "1.0.0", "1.0.1")
    for spelling in ("production", "PRODUCTION", "Production"):
        assert keel.prompts.load(f"chat@{spelling}").version == "1.0.1"
        assert keel.prompts.get("chat", alias=spelling, at=moved.at).version == "1.0.1"
        assert len(keel.prompts.history("chat", spelling)) == 2
    assert keel.prompts.get("chat").aliases == ("production",)
    assert keel.prompts.rollback("chat", "PRODUCTION").new == "1.0.0"
    keel.prompts.delete_alias("chat", "PRODuction")
    assert keel.prompts.aliases_at("chat", int(time.time() * 1000) + 1000) == {}


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("alias", "error"),
    [("latest", "implicit"), ("LATEST", "implicit"), ("v3", "looks like a version"), ("v1.2", "looks like a version"),
     ("1.2", "invalid alias"), ("bad alias", "invalid alias"), ("-x", "invalid alias")],
)  # fmt: skip
def test_alias_names_follow_the_one_rule(ws, alias, error):
    _register("A {{ q }}")
    with pytest.raises(keel.InvalidInput, match=error):
        keel.prompts.set_alias("chat", alias, "1.0.0")


@SQLITE_ONLY
def test_stage_names_are_ordinary_prompt_aliases(ws):
    _register("A {{ q }}")
    for alias in ("Production", "Staging", "Archived"):  # prompts have no stages
        assert keel.prompts.set_alias("chat", alias, "1.0.0").new == "1.0.0"
    assert keel.prompts.load("chat@production").version == "1.0.0"


# -- registering duplicate content ---------------------------------------------------------------
A, B, C = "A {{ q }}", "B {{ q }}", "C {{ q }}"


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("template", "kw", "expected", "created"),
    [
        (B, {}, "1.0.1", False),  # identical to the latest: idempotent
        (B, {"version": "1.0.1"}, "1.0.1", False),  # that very version again
        (A, {"version": "1.0.0"}, "1.0.0", False),  # an older version with its own content
        (A, {}, "1.0.2", True),  # identical to an older version: a revert is a new version
        (A, {"changelog": ""}, "1.0.2", True),  # ... whose changelog says so when none is given
        (A, {"version": "9.0.0"}, "9.0.0", True),  # explicit new version, duplicate content: created
        (B, {"version": "2.0.0"}, "2.0.0", True),  # even the latest's content
        (C, {}, "1.0.2", True),  # new content: as ever
    ],
)
def test_duplicate_content(ws, template, kw, expected, created):
    _register(A, changelog="first")
    _register(B, changelog="second")
    before = {v.version for v in keel.prompts.versions("chat")}
    kw = {"changelog": "again", **kw}
    registered = keel.prompts.register("chat", template=template, model="gpt-4", **kw)
    assert registered.version == expected
    assert (expected not in before) is created
    if created and template == A and not kw["changelog"]:
        assert registered.info.changelog == "Revert to 1.0.0"
    assert keel.prompts.load(f"chat@{expected}").render(q="?") == template.replace("{{ q }}", "?")
    assert keel.prompts.load("chat").version == max(before | {expected}, key=lambda v: tuple(map(int, v.split("."))))


@SQLITE_ONLY
@pytest.mark.parametrize(("template", "version"), [(A, "1.0.1"), (C, "1.0.1"), (A, "0.9.0"), (C, "1.0.0")])
def test_duplicate_content_keeps_the_ordering_rules(ws, template, version):
    _register(A, changelog="first")
    _register(B, changelog="second")
    with pytest.raises(keel.InvalidInput, match="does not increase on the latest, 1.0.1"):
        keel.prompts.register("chat", template=template, model="gpt-4", changelog="x", version=version)
