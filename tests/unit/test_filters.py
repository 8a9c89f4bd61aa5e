"""The filter language: parsing to an AST, errors that point at the problem, evaluation."""

import pytest

from keel.core.filters import (
    And,
    Comparison,
    Field,
    Not,
    Or,
    OrderBy,
    evaluate,
    parse_filter,
    parse_order_by,
)
from keel.errors import FilterSyntaxError, InvalidInput


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
