"""MLflow's search grammar translated to keel's filter AST, and the registry filters."""

from __future__ import annotations

import pytest

from keel.core.filters import And, Comparison, Field, OrderBy
from keel.errors import FilterSyntaxError, InvalidInput
from keel.integrations.mlflow_rest.entities import parse_artifact_path
from keel.integrations.mlflow_rest.filters import order_rows, registry_filter, row_filter, run_filter, run_order_by
from keel.integrations.mlflow_rest.paging import page_of


def test_metrics_params_and_tags_keep_their_meaning() -> None:
    node = run_filter("metrics.acc > 0.8 and params.model = 'gpt-4o' and tags.`team name` != \"search\"")
    assert node == And((
        Comparison(Field("metrics", "acc"), ">", 0.8),
        Comparison(Field("params", "model"), "=", "gpt-4o"),
        Comparison(Field("tags", "team name"), "!=", "search"),
    ))  # fmt: skip


@pytest.mark.parametrize(
    ("mlflow", "keel"),
    [
        ("attributes.run_name = 'x'", Comparison(Field("attributes", "name"), "=", "x")),
        ("run_name LIKE 'r-%'", Comparison(Field("attributes", "name"), "like", "r-%")),
        ("tags.mlflow.runName = 'x'", Comparison(Field("attributes", "name"), "=", "x")),
        ("tags.`mlflow.parentRunId` = 'abc'", Comparison(Field("attributes", "parent_id"), "=", "abc")),
        ("attribute.created >= 5", Comparison(Field("attributes", "start_time"), ">=", 5)),
        ("attributes.user_id = 'ann'", Comparison(Field("tags", "mlflow.user"), "=", "ann")),
        ("run.run_id IN ('a', 'b')", Comparison(Field("attributes", "run_id"), "in", ("a", "b"))),
    ],
)
def test_mlflow_attributes_and_system_tags_map_to_keel_fields(mlflow: str, keel: Comparison) -> None:
    assert run_filter(mlflow) == keel


def test_statuses_translate_and_unknown_ones_are_refused() -> None:
    assert run_filter("attributes.status = 'FINISHED'") == Comparison(Field("attributes", "status"), "=", "finished")
    assert run_filter("status IN ('SCHEDULED', 'KILLED')") == Comparison(
        Field("attributes", "status"), "in", ("running", "killed")
    )
    with pytest.raises(InvalidInput, match="unknown run status"):
        run_filter("status = 'PAUSED'")


def test_unsearchable_attributes_and_bad_syntax_are_invalid_input() -> None:
    assert run_filter("") is None and run_filter(None) is None
    with pytest.raises(InvalidInput, match="artifact_uri"):
        run_filter("attributes.artifact_uri = 'x'")
    with pytest.raises(FilterSyntaxError):
        run_filter("metrics.acc >>> 1")
    assert isinstance(FilterSyntaxError("x"), InvalidInput)


def test_order_by_clauses() -> None:
    assert run_order_by(["metrics.acc DESC", "attributes.start_time", "tags.mlflow.runName asc"]) == [
        OrderBy(Field("metrics", "acc"), False),
        OrderBy(Field("attributes", "start_time"), True),
        OrderBy(Field("attributes", "name"), True),
    ]
    assert run_order_by(None) == []


ROWS = [
    {"name": "ranker", "created": 3, "tags": {"team": "search"}},
    {"name": "greet", "created": 1, "tags": {"mlflow.prompt.is_prompt": "true"}},
    {"name": "chat", "created": 2, "tags": {}},
]


def test_registry_filters_leave_prompts_out_unless_asked_for_as_mlflow_does() -> None:
    keep = registry_filter("name LIKE '%r%' AND tag.`mlflow.prompt.is_prompt` != 'true'", ["name"])
    assert [r["name"] for r in ROWS if keep(r)] == ["ranker"]
    prompts = registry_filter("tags.`mlflow.prompt.is_prompt` = 'true'", ["name"])
    assert [r["name"] for r in ROWS if prompts(r)] == ["greet"]
    not_false = registry_filter("tags.`mlflow.prompt.is_prompt` != 'false'", ["name"])
    assert [r["name"] for r in ROWS if not_false(r)] == ["greet"]
    assert [r["name"] for r in ROWS if registry_filter(None, ["name"])(r)] == ["ranker", "chat"]
    with pytest.raises(InvalidInput, match="invalid attribute 'owner'"):
        registry_filter("owner = 'me'", ["name"])


def test_a_tag_comparison_holds_only_where_the_tag_exists() -> None:
    """MLflow joins on the tag: ``tags.k != 'v'`` leaves out rows without ``k`` (issue 19 item 8)."""
    differ = row_filter("tags.team != 'ml'", ["name"])
    assert [r["name"] for r in ROWS if differ(r)] == ["ranker"]
    assert [r["name"] for r in ROWS if registry_filter("tags.team != 'ml'", ["name"])(r)] == ["ranker"]
    assert all(row_filter(None, ["name"])(r) for r in ROWS)
    with pytest.raises(InvalidInput, match="invalid attribute 'owner'"):
        row_filter("owner = 'me'", ["name"])
    either = row_filter("name = 'chat' or tags.team = 'search'", ["name"])
    assert [r["name"] for r in ROWS if either(r)] == ["ranker", "chat"]
    assert row_filter("not tags.team = 'search'", ["name"])(ROWS[2])


def test_rows_order_by_clauses_then_default_and_page() -> None:
    assert [r["name"] for r in order_rows(ROWS, ["created DESC"], ["name", "created"], ["name"])] == [
        "ranker", "chat", "greet",
    ]  # fmt: skip
    assert [r["name"] for r in order_rows(ROWS, None, ["name"], ["name"])] == ["chat", "greet", "ranker"]
    with pytest.raises(InvalidInput, match="cannot order by"):
        order_rows(ROWS, ["owner"], ["name"], ["name"])
    first, token = page_of(list(range(5)), 2, None)
    second, token2 = page_of(list(range(5)), 2, token)
    assert (first, second) == ([0, 1], [2, 3]) and page_of(list(range(5)), 2, token2) == ([4], "")
    with pytest.raises(InvalidInput, match="page_token"):
        page_of([1], 1, "not-a-token")
    with pytest.raises(InvalidInput, match="max_results"):
        page_of([1], 0, None)


def test_artifact_paths() -> None:
    run = "0123456789abcdef0123456789abcdef"
    assert parse_artifact_path(f"3/{run}/artifacts/model/MLmodel") == ("3", run, "model/MLmodel")
    assert parse_artifact_path(f"0/{run}/artifacts") == ("0", run, "")
    with pytest.raises(ValueError):
        parse_artifact_path("0/short/artifacts/x")
