"""Write-batch validation (keel.core.batch) and the shared checks (keel.core.checks): every row kind,
every field, the attacks of issues 15 and 16, and properties over arbitrary input."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.batch import WriteBatch, check_row, is_run_id
from keel.core.checks import (
    INT64_MAX,
    INT64_MIN,
    check_int64,
    check_json_text,
    check_relative_path,
    clip_text,
    int64_problem,
    is_unicode,
    nesting_problem,
    relative_path_problem,
    short,
    text_problem,
)
from keel.core.values import encode_param, flatten, metric_value
from keel.errors import InvalidInput

RUN = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"
OID = "ab" * 32
T = 1_700_000_000_000


def good_batch() -> WriteBatch:
    """One row of every kind, all valid (special floats and an int metric value included)."""
    return WriteBatch(
        new_runs=[
            (RUN, "proj", "run one", T, None, '{"git": {"commit": "abc"}}'),
            (OTHER, "proj", "two", T, RUN, "{}"),
        ],
        metrics=[
            (RUN, "loss", 0.5, 0, T),
            (RUN, "loss", math.nan, 1, T),
            (RUN, "odd", -math.inf, INT64_MAX, INT64_MIN),
            (OTHER, "eval/acc", 3, 0, T),
        ],
        params=[
            (RUN, "model", "str", "gpt-4 ✓", False),
            (RUN, "lr", "float", "1e-05", False),
            (RUN, "nan", "float", "NaN", True),
            (RUN, "seed", "int", "-42", False),
            (RUN, "flag", "bool", "true", False),
            (RUN, "none", "null", "null", False),
            (RUN, "rag.layers", "json", '[1, [2, {"a": "\\ud83d\\ude00"}]]', False),
        ],
        tags=[(RUN, "team", "search"), (OTHER, "note", "")],
        artifacts=[(RUN, "eval/results.json", OID, 12, "file", T), (RUN, "tables/t.json", OID, 0, "table", T)],
        lineage=[
            (RUN, "input", "prompt", "qa", "1.2.0", "prompt", T),
            (OTHER, "input", "run", RUN, "", "parent", T),
        ],
        run_ends=[(RUN, "finished", T + 5, None), (OTHER, "failed", T + 6, "ValueError: bad")],
    )


def refused(batch: WriteBatch) -> str:
    with pytest.raises(InvalidInput) as info:
        batch.validate()
    return info.value.message


def test_a_good_batch_passes_and_lists_may_stand_for_tuples():
    good_batch().validate()
    WriteBatch(metrics=[[RUN, "loss", 1.0, 0, T]], tags=[[RUN, "k", "v"]]).validate()
    WriteBatch().validate()


# -- the attacks of issues 15 and 16, each naming its row and field ----------------------------------
ATTACKS = [
    ("artifacts", (RUN, "../../x", OID, 1, "file", T), "artifacts[0]", "path", "'..'"),
    ("artifacts", (RUN, "/abs/x", OID, 1, "file", T), "artifacts[0]", "path", "absolute"),
    ("artifacts", (RUN, "a/../../x", OID, 1, "file", T), "artifacts[0]", "path", "'..'"),
    ("artifacts", (RUN, "..\\..\\x", OID, 1, "file", T), "artifacts[0]", "path", "backslash"),
    ("artifacts", (RUN, "C:/x", OID, 1, "file", T), "artifacts[0]", "path", "drive"),
    ("artifacts", (RUN, "a/\x00b", OID, 1, "file", T), "artifacts[0]", "path", "control"),
    ("artifacts", (RUN, "a//b", OID, 1, "file", T), "artifacts[0]", "path", "empty"),
    ("artifacts", (RUN, "a/" + "x" * 300, OID, 1, "file", T), "artifacts[0]", "path", "255 bytes"),
    ("artifacts", (RUN, "a.txt", "../" * 21 + "x", 1, "file", T), "artifacts[0]", "oid", "object id"),
    ("artifacts", (RUN, "a.txt", OID, -1, "file", T), "artifacts[0]", "size", "negative"),
    ("artifacts", (RUN, "a.txt", OID, 1, "exe", T), "artifacts[0]", "kind", "one of"),
    ("new_runs", (RUN, "p", "n", T, None, "{not json"), "new_runs[0]", "context", "not valid JSON"),
    ("new_runs", (RUN, "p", "n", T, None, "[1, 2]"), "new_runs[0]", "context", "JSON object"),
    ("new_runs", (RUN, "p", "n", T, None, '{"a": ' * 5000 + "1" + "}" * 5000), "new_runs[0]", "context", "deeper"),
    ("new_runs", ("../../x", "p", "n", T, None, "{}"), "new_runs[0]", "run_id", "not a run id"),
    ("new_runs", (RUN.upper(), "p", "n", T, None, "{}"), "new_runs[0]", "run_id", "not a run id"),
    ("new_runs", (RUN, "../p", "n", T, None, "{}"), "new_runs[0]", "project", "project name"),
    ("new_runs", (RUN, "p", "a\nb", T, None, "{}"), "new_runs[0]", "name", "control"),
    ("new_runs", (RUN, "p", "", T, None, "{}"), "new_runs[0]", "name", "empty"),
    ("new_runs", (RUN, "p", "n" * 251, T, None, "{}"), "new_runs[0]", "name", "at most 250"),
    ("new_runs", (RUN, "p", "n", 2**63, None, "{}"), "new_runs[0]", "start_time", "64-bit"),
    ("new_runs", (RUN, "p", "n", T, "abc", "{}"), "new_runs[0]", "parent_id", "not a run id"),
    ("new_runs", (RUN, "p", "n", T, RUN, "{}"), "new_runs[0]", "parent_id", "itself"),
    ("tags", (RUN, "big", "x" * 10_000_000), "tags[0]", "value", "10,000,000 characters"),
    ("tags", (RUN, "k", "a\x00b"), "tags[0]", "value", "NUL"),
    ("tags", (RUN, "k", 5), "tags[0]", "value", "text"),
    ("params", (RUN, "<script>", "str", "v", False), "params[0]", "key", "key rules"),
    ("params", (RUN, "k", "pickle", "v", False), "params[0]", "vtype", "one of"),
    ("params", (RUN, "k", "str", "\ud800", False), "params[0]", "text", "lone surrogate"),
    ("params", (RUN, "k", "json", "[" * 5000 + "]" * 5000, False), "params[0]", "text", "deeper"),
    ("params", (RUN, "k", "json", '["\\ud800"]', False), "params[0]", "text", "lone surrogate"),
    ("params", (RUN, "k", "json", "{oops", False), "params[0]", "text", "not valid JSON"),
    ("params", (RUN, "k", "int", "1" * 4001, False), "params[0]", "text", "4,000 digits"),
    ("params", (RUN, "k", "int", "1_000", False), "params[0]", "text", "not an int"),
    ("params", (RUN, "k", "float", "nan", False), "params[0]", "text", "not a float"),
    ("params", (RUN, "k", "bool", "yes", False), "params[0]", "text", "'true' or 'false'"),
    ("params", (RUN, "k", "str", "x" * 64_001, False), "params[0]", "text", "at most 64,000"),
    ("params", (RUN, "k", "str", "v", "yes"), "params[0]", "overwrite", "bool"),
    ("metrics", (RUN, "loss", "0.5", 0, T), "metrics[1]", "value", "number"),
    ("metrics", (RUN, "loss", True, 0, T), "metrics[1]", "value", "number"),
    ("metrics", (RUN, "loss", 10**400, 0, T), "metrics[1]", "value", "64-bit float"),
    ("metrics", (RUN, "loss", 0.5, 2**63, T), "metrics[1]", "step", "64-bit"),
    ("metrics", (RUN, "loss", 0.5, INT64_MIN - 1, T), "metrics[1]", "step", "64-bit"),
    ("metrics", (RUN, "loss", 0.5, 1.5, T), "metrics[1]", "step", "integer"),
    ("metrics", (RUN, "loss", 0.5, 0, 2**64), "metrics[1]", "timestamp", "64-bit"),
    ("metrics", (RUN, "<b>", 0.5, 0, T), "metrics[1]", "key", "key rules"),
    ("metrics", ("r" * 32, "loss", 0.5, 0, T), "metrics[1]", "run_id", "not a run id"),
    ("metrics", (RUN, "loss", 0.5, 0), "metrics[1]", "row", "5 fields"),
    ("metrics", "abcde", "metrics[1]", "row", "5 fields"),
    ("lineage", (RUN, "sideways", "run", RUN, "", "", T), "lineage[0]", "direction", "one of"),
    ("lineage", (RUN, "input", "run", "zz", "", "parent", T), "lineage[0]", "id", "not a run id"),
    ("lineage", (RUN, "input", "dataset", "d" * 251, "", "", T), "lineage[0]", "id", "at most 250"),
    ("lineage", (RUN, "input", "prompt", "qa", "1", "r" * 101, T), "lineage[0]", "role", "at most 100"),
    ("lineage", (RUN, "input", "k" * 33, "qa", "1", "", T), "lineage[0]", "kind", "at most 32"),
    ("run_ends", (RUN, "exploded", T, None), "run_ends[0]", "status", "one of"),
    ("run_ends", (RUN, "failed", None, None), "run_ends[0]", "end_time", "integer"),
    ("run_ends", (RUN, "failed", T, "e" * 64_001), "run_ends[0]", "error", "at most 64,000"),
]


@pytest.mark.parametrize(("kind", "row", "where", "field", "words"), ATTACKS, ids=[f"{a[0]}-{a[3]}" for a in ATTACKS])
def test_each_bad_row_is_refused_naming_its_row_and_field(kind, row, where, field, words):
    batch = WriteBatch()
    if kind == "metrics":  # a good row first: the fast path must hand over to the row-by-row check
        batch.metrics.append((RUN, "loss", 0.1, 0, T))
    getattr(batch, kind).append(row)
    message = refused(batch)
    assert f"{where}" in message and f" {field} " in message and words in message, message
    assert len(message) < 400  # never echoes a 10 MB value
    with pytest.raises(InvalidInput, match=field):
        check_row(kind, row)


def test_one_bad_row_refuses_a_batch_otherwise_good():
    batch = good_batch()
    batch.params.append((OTHER, "k", "str", "\ud800", False))
    assert "params[7] (run fedcba98) text" in refused(batch)


def test_the_fields_must_be_lists_and_a_run_is_created_once():
    assert "metrics must be a list" in refused(WriteBatch(metrics="rows"))  # type: ignore[arg-type]
    twice = (RUN, "p", "n", T, None, "{}")
    assert "new_runs[1]" in refused(WriteBatch(new_runs=[twice, twice]))


def test_metric_values_ints_and_special_floats_pass():
    rows = [(RUN, "m", v, 0, T) for v in (math.nan, math.inf, -math.inf, 0, -(2**1000), 1e308, -0.0)]
    WriteBatch(metrics=rows).validate()


def test_an_unhashable_field_is_refused_not_crashing():
    assert "run_id" in refused(WriteBatch(metrics=[([RUN], "m", 1.0, 0, T)]))
    assert "key" in refused(WriteBatch(metrics=[(RUN, ["m"], 1.0, 0, T)]))


def test_is_run_id():
    assert is_run_id(RUN) and not is_run_id(RUN[:-1]) and not is_run_id(RUN.upper()) and not is_run_id(None)
    assert not is_run_id("g" * 32)


# -- the shared checks ------------------------------------------------------------------------
def test_int64():
    assert int64_problem(INT64_MAX) is None and int64_problem(INT64_MIN) is None
    assert "64-bit" in int64_problem(INT64_MAX + 1) and "integer" in int64_problem(True)
    assert "integer" in int64_problem(1.0)
    assert check_int64(5, "step") == 5
    with pytest.raises(InvalidInput, match="step .* outside the 64-bit"):
        check_int64(2**63, "step")
    assert "bits" in int64_problem(10**5000)  # never formats a huge integer


def test_text():
    assert text_problem("héllo ✓ 😀", 10) is None
    assert "lone surrogate" in text_problem("a\ud800", 10)
    assert "NUL" in text_problem("a\x00", 10)
    assert text_problem("a\tb", 10) is None and "control" in text_problem("a\tb", 10, control=False)
    assert "empty" in text_problem("", 10, empty=False)
    assert "at most 3" in text_problem("abcd", 3)
    assert "text" in text_problem(b"abc", 10)
    assert is_unicode("😀") and not is_unicode("\udfff")


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("[" * 64 + "]" * 64, True),
        ("[" * 65 + "]" * 65, False),
        ('"' + "[" * 100 + '"', True),  # brackets inside a string do not count
        ('["\\"' + "[" * 100 + '"]', True),  # nor after an escaped quote
        ('["\\\\"' + ", [" * 70 + "]" * 70 + "]", False),  # an escaped backslash ends nothing
        ('{"a": ' * 70 + "1" + "}" * 70, False),
    ],
)
def test_nesting(text, ok):
    assert (nesting_problem(text) is None) is ok


@given(st.recursive(st.none() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)))
def test_nesting_agrees_with_the_parser(value):
    text = json.dumps(value)

    def depth(v):
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        return 0

    real = depth(json.loads(text))
    assert (nesting_problem(text, 3) is None) is (real <= 3)


def test_json_text():
    assert check_json_text('{"a": [1, NaN]}', "context", 100, want=dict)["a"][0] == 1
    for bad, words in [
        ("[1]", "JSON object"),
        ("{", "not valid JSON"),
        ('{"a": "\\udc00"}', "lone surrogate"),
        ('{"a": ' + "9" * 5000 + "}", "not valid JSON"),  # past Python's integer digit limit
        ("{}" + " " * 20_000, "at most 10,000"),
    ]:
        with pytest.raises(InvalidInput, match=words):
            check_json_text(bad, "context", 10_000, want=dict)


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("a/b.txt", None),
        ("é/😀 name.txt", None),
        ("..x/y..", None),
        ("../x", "'..'"),
        ("a/./b", "'.'"),
        ("/etc/passwd", "absolute"),
        ("a/", "empty"),
        ("a\\b", "backslash"),
        ("c:x", "drive"),
        ("a\nb", "control"),
        ("", "empty"),
        ("x" * 2000, "at most"),
        ("é" * 200, "255 bytes"),
        ("a\udc80", "lone surrogate"),
        (None, "text"),
    ],
)
def test_relative_paths(path, words):
    problem = relative_path_problem(path, 1000)
    if words is None:
        assert problem is None and check_relative_path(path, "path") == path
    else:
        assert words in problem
        with pytest.raises(InvalidInput):
            check_relative_path(path, "path")


def test_clip_and_short():
    assert clip_text("x" * 100, 10) == "x" * 10
    assert is_unicode(clip_text("a\x00\ud800b", 100)) and "\x00" not in clip_text("a\x00b", 10)
    assert len(short("x" * 10_000)) < 100 and "10,000 characters" in short("x" * 10_000)
    assert short([[1]] * 5) == "a list of 5 items"


# -- the sdk's encoders refuse at the call what the batch would refuse later ---------------------------
def test_encode_param_refuses_what_no_store_can_hold():
    for value, words in [
        ("\ud800", "lone surrogate"),
        ("a\x00b", "NUL"),
        (["\udfff"], "lone surrogate"),
        (10**5000, "digits"),
        (10**4000, "digits"),
    ]:
        with pytest.raises(InvalidInput, match=words):
            encode_param("k", value)
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(InvalidInput, match="deeper"):
        encode_param("k", deep)
    vtype, text = encode_param("k", 10**3999)
    check_row("params", (RUN, "k", vtype, text, False))


def test_flatten_and_metric_value_are_bounded():
    deep: dict = {}
    for _ in range(5000):
        deep = {"a": deep or {"b": 1}}
    with pytest.raises(InvalidInput, match="deeper"):
        list(flatten(deep))
    with pytest.raises(InvalidInput, match="64-bit float"):
        metric_value("m", 10**400)


# -- properties ----------------------------------------------------------------------------------
ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63, -(2**63) - 1, 10**400, INT64_MAX]),
    st.floats(),
    st.text(max_size=40),
    st.sampled_from(["\ud800", "a\x00", RUN, OID, "../x", "/x", "{}", "[[[[", "true", "NaN", "file", "finished"]),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=3),
)
ROW = st.lists(ANY, min_size=0, max_size=8).map(tuple) | ANY


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(["new_runs", "metrics", "params", "tags", "artifacts", "lineage", "run_ends"]),
    st.lists(ROW, max_size=5),
)
def test_arbitrary_rows_only_ever_raise_invalid_input(kind, rows):
    batch = WriteBatch()
    setattr(batch, kind, rows)
    try:
        batch.validate()
    except InvalidInput as exc:
        assert len(exc.message) < 600
