"""The filter language: parsing to an AST, errors that point at the problem, evaluation,
and the bounds every hostile filter meets (each refused quickly, as a KeelError)."""

import math
import sqlite3
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite
from sqlalchemy.schema import CreateTable

from keel.core.filters import (
    And,
    Comparison,
    Field,
    Not,
    Or,
    OrderBy,
    check_query,
    evaluate,
    parse_filter,
    parse_order_by,
)
from keel.core.limits import (
    INT64_MAX,
    INT64_MIN,
    MAX_FILTER_DEPTH,
    MAX_FILTER_LENGTH,
    MAX_FILTER_TERMS,
    MAX_FILTER_VALUES,
    MAX_QUERY_KEYS,
    MAX_SORT_KEYS,
)
from keel.errors import FilterSyntaxError, InvalidInput, KeelError
from keel.integrations.mlflow_rest.filters import order_rows, row_filter, run_filter, run_order_by
from keel.meta.schema import metadata
from keel.meta.search import compile_search


def test_the_issue_example_parses_to_three_comparisons():
    node = parse_filter("metrics.accuracy > 0.8 and params.model = 'gpt-4' and tags.team = 'search'")
    assert node == And(
        (
            Comparison(Field("metrics", "accuracy"), ">", 0.8),
            Comparison(Field("params", "model"), "=", "gpt-4"),
            Comparison(Field("tags", "team"), "=", "search"),
        )
    )


def test_precedence_and_parentheses():
    node = parse_filter("m.a > 1 or m.b < 2 and not (p.x = 'y')")
    assert isinstance(node, Or)
    assert isinstance(node.items[1], And)
    assert isinstance(node.items[1].items[1], Not)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("params.rag.top_k = 5", Comparison(Field("params", "rag.top_k"), "=", 5)),
        ("metrics.`f1 score` >= 1e-3", Comparison(Field("metrics", "f1 score"), ">=", 0.001)),
        ('tags."my tag" != "x"', Comparison(Field("tags", "my tag"), "!=", "x")),
        ("status in ('finished', 'failed')", Comparison(Field("attributes", "status"), "in", ("finished", "failed"))),
        ("name not like 'prompt%'", Comparison(Field("attributes", "name"), "not like", "prompt%")),
        ("metrics.loss is not null", Comparison(Field("metrics", "loss"), "is not null", None)),
        ("params.flag = true", Comparison(Field("params", "flag"), "=", True)),
        ("params.note = 'it''s'", Comparison(Field("params", "note"), "=", "it's")),
        ("metrics.x == -2", Comparison(Field("metrics", "x"), "=", -2)),
        (
            "METRICS.x <> 1 AND status = 'finished'",
            And(
                (
                    Comparison(Field("metrics", "x"), "!=", 1),
                    Comparison(Field("attributes", "status"), "=", "finished"),
                )
            ),
        ),
    ],
)
def test_forms(text, expected):
    assert parse_filter(text) == expected


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("metrics.accuracy >", 18),
        ("metrics.accuracy > 0.8 and", 26),
        ("metrics.accuracy ~ 1", 17),
        ("(metrics.a > 1", 14),
        ("metrics.a > 1 params.b = 2", 14),
        ("metrics.a = null", 10),
        ("metrics.a in (1, ", 17),
    ],
)
def test_syntax_errors_point_at_the_problem(text, position):
    with pytest.raises(FilterSyntaxError) as info:
        parse_filter(text)
    assert info.value.position == position
    assert f"position {position}" in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, InvalidInput)


def test_empty_filter_is_an_error():
    with pytest.raises(FilterSyntaxError, match="empty"):
        parse_filter("   ")


def test_injection_attempts_are_just_strings():
    node = parse_filter("params.model = 'x''; DROP TABLE runs; --'")
    assert node == Comparison(Field("params", "model"), "=", "x'; DROP TABLE runs; --")


def test_order_by():
    assert parse_order_by(["metrics.cost_per_query asc", "start_time DESC"]) == [
        OrderBy(Field("metrics", "cost_per_query"), True),
        OrderBy(Field("attributes", "start_time"), False),
    ]
    assert parse_order_by("metrics.a, params.b desc") == [
        OrderBy(Field("metrics", "a"), True),
        OrderBy(Field("params", "b"), False),
    ]
    with pytest.raises(FilterSyntaxError):
        parse_order_by(["metrics.a upward"])


def test_evaluate_on_rows():
    row = {"score": 0.9, "feedback": "good", "query": "refund?", "n": None}
    look = lambda f: row.get(f.key)  # noqa: E731
    parse = lambda t: parse_filter(t, prefixes={})  # noqa: E731
    assert evaluate(parse("score > 0.5 and feedback = 'good'"), look)
    assert not evaluate(parse("score > 0.95 or feedback in ('bad', 'meh')"), look)
    assert evaluate(parse("query like 'ref%'"), look)
    assert evaluate(parse("query ilike 'REF%'"), look)
    assert evaluate(parse("n is null and not score < 0.1"), look)
    assert not evaluate(parse("n > 1"), look)  # missing values match nothing


# -- bounds: every hostile filter is refused, quickly, with a KeelError ----------------------------
def _refused(call, error=FilterSyntaxError, match=None):
    """``call()`` raises ``error`` (matching ``match``) within a second; the error."""
    start = time.perf_counter()
    with pytest.raises(error, match=match) as info:
        call()
    assert time.perf_counter() - start < 1.0
    assert isinstance(info.value, KeelError)
    str(info.value).encode("utf-8")  # printable and encodable (no lone surrogate)
    return info.value


_SCHEMA: list[sqlite3.Connection] = []


def _compiles(node, order=()):
    """The run-search SQL for ``node`` and ``order``, planned by SQLite on keel's schema:
    every placeholder has its argument, and the statement is valid SQL."""
    search = compile_search([1], node, list(order))
    sql, args = search.page(10, 0)
    assert sql.count("?") == len(args)
    if not _SCHEMA:
        conn = sqlite3.connect(":memory:")
        for table in metadata.sorted_tables:
            conn.execute(str(CreateTable(table).compile(dialect=sqlite.dialect())))
        _SCHEMA.append(conn)
    _SCHEMA[0].execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()


def test_31_sort_keys_are_refused_before_any_sql():
    # SQLite 3.40 crashed the process on the query 31 param sort keys made.
    keys = [f"params.k{i}" for i in range(31)]
    error = _refused(lambda: parse_order_by(keys), InvalidInput, "31 sort keys given, at most 10")
    assert error.hint
    _refused(lambda: parse_order_by(", ".join(keys)), InvalidInput, "at most 10")
    _refused(lambda: run_order_by(keys), InvalidInput, "at most 10")
    assert len(parse_order_by(keys[:MAX_SORT_KEYS])) == MAX_SORT_KEYS


def test_329_nested_parentheses_are_refused_with_the_position():
    text = "(" * 329 + "metrics.a > 1" + ")" * 329
    error = _refused(lambda: parse_filter(text), match="more than 32 levels deep")
    assert error.position == MAX_FILTER_DEPTH  # the first parenthesis past the bound
    deepest = "(" * MAX_FILTER_DEPTH + "metrics.a > 1" + ")" * MAX_FILTER_DEPTH
    assert parse_filter(deepest) == Comparison(Field("metrics", "a"), ">", 1)


def test_900_nots_are_refused_with_the_position():
    error = _refused(lambda: parse_filter("not " * 900 + "metrics.a > 1"), match="levels deep")
    assert error.position == 4 * MAX_FILTER_DEPTH
    assert isinstance(parse_filter("not " * MAX_FILTER_DEPTH + "metrics.a > 1"), Not)


@pytest.mark.parametrize(
    "literal",
    [str(2**63), str(-(2**63) - 1), "9" * 5000, "-" + "1" * 30],
)
def test_integers_outside_64_bits_are_refused(literal):
    text = f"params.k = {literal}"
    error = _refused(lambda: parse_filter(text), match="outside the 64-bit range")
    assert error.position == len("params.k = ")


def test_integers_at_the_64_bit_edges_parse():
    assert parse_filter(f"metrics.a < {INT64_MAX}").value == INT64_MAX
    assert parse_filter(f"metrics.a > {INT64_MIN}").value == INT64_MIN
    assert parse_filter("metrics.a > -0000000000000000000000001").value == -1


@pytest.mark.parametrize("literal", ["1e400", "-1e309", "9" * 400 + ".0"])
def test_numbers_that_overflow_to_infinity_are_refused(literal):
    _refused(lambda: parse_filter(f"metrics.a > {literal}"), match="out of range")


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("params.k1 = '\ud800'", 13),
        ("tags.`\udfff` = 'x'", 6),
        ("params.k1 = 'a\x00b'", 14),
    ],
)
def test_lone_surrogates_and_nul_are_refused_with_the_position(text, position):
    error = _refused(lambda: parse_filter(text), match="lone surrogate|NUL")
    assert error.position == position
    error.text.encode("utf-8")  # the error itself can be sent and printed


def test_lone_surrogates_in_sort_keys_are_refused():
    _refused(lambda: parse_order_by(["params.\ud800"]), match="lone surrogate")


@pytest.mark.parametrize(
    "text", ["start_time > true", "metrics.a >= false", "params.x < true", "status <= false", "name > TRUE"]
)
def test_true_and_false_only_compare_with_equality(text):
    error = _refused(lambda: parse_filter(text), match="compare only with = or !=")
    assert error.position == text.lower().index(" true" if "true" in text.lower() else " false") + 1


def test_booleans_compared_with_run_attributes_are_refused_before_sql():
    for text in ("start_time = true", "status != false", "name in (true, 'x')"):
        _refused(lambda text=text: _compiles(parse_filter(text)), InvalidInput, "not true or false")
    _compiles(parse_filter("params.flag = true and tags.t != false"))  # meaningful: stored as text


@pytest.mark.parametrize("text", ["start_time > 'yesterday'", "end_time like '17%'", "start_time in (1, 'x')"])
def test_times_compare_with_numbers_only(text):
    _refused(lambda: _compiles(parse_filter(text)), InvalidInput, "milliseconds")


def test_text_attributes_compared_with_numbers_compare_as_text():
    _compiles(parse_filter("name = 5 or status in (1, 'finished') or run_id > 3"))


def test_a_5000_term_chain_is_refused():
    for joiner in (" and ", " or "):
        chain = joiner.join(f"params.k{i % 40} = {i}" for i in range(5000))
        _refused(lambda chain=chain: parse_filter(chain), match="characters long, at most 10,000")
    short = " or ".join("m.a=1" for _ in range(MAX_FILTER_TERMS + 1))  # within the length, past the terms
    assert len(short) < MAX_FILTER_LENGTH
    error = _refused(lambda: parse_filter(short), match=f"more than {MAX_FILTER_TERMS} comparisons")
    assert error.position == short.rindex("m.a=1")
    assert isinstance(parse_filter(" or ".join("m.a=1" for _ in range(MAX_FILTER_TERMS))), Or)


def test_a_100k_character_filter_is_refused_without_reading_it():
    text = "metrics.a > 1 and " + "x" * 100_000
    error = _refused(lambda: parse_filter(text), match="100,018 characters long")
    assert error.position == MAX_FILTER_LENGTH
    assert len(str(error)) < 500  # the message does not echo 100k characters


def test_too_many_values_are_refused():
    values = ", ".join("1" for _ in range(MAX_FILTER_VALUES + 1))
    _refused(lambda: parse_filter(f"metrics.a in ({values})"), match="more than 1,000 values")


def test_too_many_distinct_keys_are_refused_in_the_filter_and_in_filter_plus_sort():
    keys = [f"params.k{i}" for i in range(MAX_QUERY_KEYS + 1)]
    _refused(lambda: parse_filter(" and ".join(f"{k} = 1" for k in keys)), match="more than 20 distinct")
    # The same key twice is one join.
    parse_filter(" or ".join(f"params.k0 = {i}" for i in range(50)))
    node = parse_filter(" and ".join(f"{k} = 1" for k in keys[:15]))
    order = parse_order_by([f"metrics.m{i}" for i in range(6)])  # 15 + 6 = 21 joins
    _refused(lambda: check_query(node, order), InvalidInput, "21 distinct metric, param or tag keys")
    _refused(lambda: _compiles(node, order), InvalidInput, "at most 20")
    _compiles(node, order[:5])


def test_keys_longer_than_keel_stores_are_refused():
    _refused(lambda: parse_filter(f"params.{'k' * 251} = 1"), match="at most 250")
    parse_filter(f"params.{'k' * 250} = 1")


def test_non_text_filters_and_sort_keys_are_refused():
    for bad in (5, b"metrics.a > 1", ["metrics.a > 1"], None):
        _refused(lambda bad=bad: parse_filter(bad), match="must be text")
    for bad in (5, {"a": 1}):
        _refused(lambda bad=bad: parse_order_by(bad), InvalidInput, "order_by must be")
    _refused(lambda: parse_order_by([5]), match="must be text")


def test_check_query_bounds_asts_built_by_code_without_recursing():
    node = Comparison(Field("metrics", "a"), ">", 1)
    for _ in range(100_000):  # far past Python's recursion limit
        node = Not(node)
    _refused(lambda: check_query(node), InvalidInput, "levels deep")
    _refused(lambda: _compiles(node), InvalidInput, "levels deep")
    wide = Or(tuple(Comparison(Field("metrics", "a"), "=", i) for i in range(MAX_FILTER_TERMS + 1)))
    _refused(lambda: check_query(wide), InvalidInput, "comparisons")
    for value, match in (
        (2**63, "64-bit"),
        (math.nan, "NaN"),
        ("\ud800", "surrogate"),
        (object(), "cannot compare"),
    ):
        bad = Comparison(Field("params", "p"), "=", value)
        _refused(lambda bad=bad: check_query(bad), InvalidInput, match)
    _refused(lambda: check_query(Comparison(Field("params", "p"), "drop", 1)), InvalidInput, "operator")
    _refused(lambda: check_query(Comparison(Field("params", "p"), ">", True)), InvalidInput, "true and false")
    _refused(lambda: check_query("metrics.a > 1"), InvalidInput, "invalid filter node")  # type: ignore[arg-type]
    too_many = [OrderBy(Field("params", f"k{i}")) for i in range(MAX_SORT_KEYS + 1)]
    _refused(lambda: check_query(None, too_many), InvalidInput, "at most 10")
    check_query(Comparison(Field("metrics", "a"), "<", math.inf))  # infinities are values metrics hold


def test_mlflow_translation_is_bounded_the_same_way():
    _refused(lambda: run_filter("(" * 100 + "metrics.a > 1" + ")" * 100), match="levels deep")
    _refused(lambda: run_filter(5), match="must be text")  # type: ignore[arg-type]
    assert run_filter("  ") is None and run_filter(None) is None
    _refused(lambda: row_filter("tags.x = 1 and " * 101 + "tags.x = 1", ["name"]), match="comparisons")
    # The defaults a registry search adds do not count against the caller's ten keys.
    rows = [{"name": "b", "tags": {}}, {"name": "a", "tags": {}}]
    ordered = order_rows(rows, ["name"] * MAX_SORT_KEYS, ["name"], ["name DESC", "name"])
    assert [r["name"] for r in ordered] == ["a", "b"]
    _refused(lambda: order_rows(rows, ["name"] * 11, ["name"], ["name"]), InvalidInput, "at most 10")


# -- property: any text, and near-valid filters, parse or raise a KeelError -----------------------
_FIELDS = st.sampled_from(
    [
        "metrics.acc",
        "params.model",
        "tags.team",
        "status",
        "start_time",
        "end_time",
        "name",
        "run_id",
        "parent_id",
        "project",
        "metrics.`f1 score`",
        'tags."my tag"',
        "params.rag.top_k",
        "bogus",
        "m.x",
        "p.y",
        "t.z",
    ]
)
_LITERALS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "false", "null", "TRUE", "1e400", "-0", ".5", "1e-400", "nan", "inf"]),
    st.text(max_size=20).map(lambda s: "'" + s.replace("'", "''") + "'"),
    st.text(max_size=20).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'),
)
_OPS_TEXT = st.sampled_from(
    ["=", "==", "!=", "<>", "<", "<=", ">", ">=", "like", "not like", "ilike", "not ilike", "~", ""]
)


@st.composite
def _comparison(draw):
    field = draw(_FIELDS)
    form = draw(st.integers(0, 3))
    if form == 0:
        return f"{field} {draw(_OPS_TEXT)} {draw(_LITERALS)}"
    if form == 1:
        values = ", ".join(draw(st.lists(_LITERALS, min_size=0, max_size=4)))
        return f"{field} {draw(st.sampled_from(['in', 'not in', 'IN']))} ({values})"
    if form == 2:
        return f"{field} is {draw(st.sampled_from(['null', 'not null', 'nul', '']))}"
    return f"{field} {draw(_OPS_TEXT)}"


_FILTERS = st.recursive(
    _comparison(),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from([" and ", " or ", " AND ", " ", " and not "]), inner).map("".join),
        inner.map(lambda s: f"({s})"),
        inner.map(lambda s: f"not {s}"),
    ),
    max_leaves=30,
)


@st.composite
def _near_valid(draw):
    text = draw(_FILTERS)
    mutation = draw(st.integers(0, 6))
    if mutation == 1:  # deep nesting
        n = draw(st.integers(0, 3000))
        text = "(" * n + text + ")" * draw(st.integers(0, n))
    elif mutation == 2:
        text = "not " * draw(st.integers(0, 3000)) + text
    elif mutation == 3:  # a random character spliced in
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.characters()) + text[at:]
    elif mutation == 4:  # cut short
        text = text[: draw(st.integers(0, len(text)))]
    elif mutation == 5:  # a long chain
        text = " or ".join([text] * draw(st.integers(1, 200)))
    return text


def _only_keel_errors(text):
    """Parse, check and compile ``text`` as a run filter, a table filter and an MLflow
    filter: each succeeds or raises a KeelError (anything else fails the test)."""
    start = time.perf_counter()
    for parse in (parse_filter, lambda t: parse_filter(t, prefixes={}), run_filter):
        try:
            node = parse(text)
        except KeelError as error:
            str(error).encode("utf-8")
            continue
        if node is None:
            continue
        try:
            check_query(node)
            _compiles(node)
        except KeelError:
            pass
        evaluate(node, lambda field: None)
    assert time.perf_counter() - start < 2.0


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_any_text_parses_or_raises_a_keel_error(text):
    _only_keel_errors(text)


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(_near_valid())
def test_near_valid_filters_parse_or_raise_a_keel_error(text):
    _only_keel_errors(text)


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.lists(
            st.one_of(_FIELDS.map(lambda f: f"{f} desc"), st.text(max_size=30), st.integers(), st.none()),
            max_size=14,
        ),
        st.text(max_size=200),
    )
)
def test_sort_keys_parse_or_raise_a_keel_error(clauses):
    try:
        order = parse_order_by(clauses)
    except KeelError:
        return
    assert len(order) <= MAX_SORT_KEYS
    try:
        _compiles(None, order)
        run_order_by(clauses)
    except KeelError:
        pass
