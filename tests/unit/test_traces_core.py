"""The span record: normalisation, limits, attribute conventions (keel.core.traces)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.traces import (
    CLOCK_SKEW,
    MAX_ATTRIBUTES_BYTES,
    TRUNCATED,
    infer_kind,
    links_of,
    normalize_span,
    payload_from_attributes,
    span_fields,
)
from keel.errors import InvalidInput, KeelError

TRACE = "4BF92F3577B34DA6A3CE929D0E0E4736"
SPAN = "00F067AA0BA902B7"


def raw(**over):
    base = {"trace_id": TRACE, "span_id": SPAN, "name": "answer", "start_ns": 10, "end_ns": 20}
    base.update(over)
    return base


def test_ids_are_lowercased_and_defaults_filled():
    row = normalize_span(raw())
    assert row.trace_id == TRACE.lower() and row.span_id == SPAN.lower()
    assert row.parent_id is None and row.status == "unset" and row.kind == "other"
    assert row.flags == 0 and json.loads(row.attributes) == {}


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("trace_id", "0" * 32, "trace_id"),
        ("trace_id", "xyz", "trace_id"),
        ("span_id", "12", "span_id"),
        ("parent_id", "nothex!!nothex!!", "parent_id"),
        ("name", "", "name"),
        ("name", None, "name"),
        ("start_ns", -1, "start_ns"),
        ("start_ns", "soon", "start_ns"),
        ("end_ns", 1 << 70, "end_ns"),
        ("status", "fine", "status"),
        ("kind", "weird", "kind"),
        ("attributes", [1, 2], "attributes"),
        ("events", "boom", "events"),
    ],
)
def test_bad_fields_are_refused_by_name(field, value, words):
    with pytest.raises(InvalidInput) as caught:
        normalize_span(raw(**{field: value}))
    assert words in str(caught.value)


def test_clock_skew_is_kept_and_marked():
    row = normalize_span(raw(start_ns=100, end_ns=50))
    assert row.end_ns == row.start_ns == 100 and row.flags & CLOCK_SKEW


def test_self_parent_is_a_root():
    assert normalize_span(raw(parent_id=SPAN)).parent_id is None


def test_oversized_attributes_are_truncated_and_marked():
    attributes = {f"k{i}": "x" * 10_000 for i in range(20)}
    row = normalize_span(raw(attributes=attributes))
    assert row.flags & TRUNCATED
    assert len(row.attributes) <= 2 * MAX_ATTRIBUTES_BYTES
    kept = json.loads(row.attributes)
    assert kept["keel.truncated"] is True and set(attributes) <= set(kept)


def test_genai_conventions_fill_named_fields():
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 3,
        "gen_ai.conversation.id": "c-1",
        "user.id": "u-9",
    }
    row = normalize_span(raw(attributes=attributes))
    assert row.kind == "llm" and row.model == "gpt-4o-2024-08-06"
    assert (row.input_tokens, row.output_tokens) == (12, 3)
    assert row.conversation_id == "c-1" and row.user_id == "u-9"


def test_openinference_and_mlflow_kinds():
    assert infer_kind({"openinference.span.kind": "RETRIEVER"}) == "retrieval"
    assert infer_kind({"mlflow.spanType": '"CHAT_MODEL"'}) == "llm"
    assert infer_kind({"gen_ai.operation.name": "execute_tool"}) == "tool"
    assert infer_kind({}) == "other"


def test_mlflow_token_usage_and_quoted_session():
    fields = span_fields(
        {"mlflow.chat.tokenUsage": '{"input_tokens": 5, "output_tokens": 7}', "mlflow.trace.session": '"s-1"'}
    )
    assert (fields["input_tokens"], fields["output_tokens"]) == (5, 7)
    assert fields["conversation_id"] == "s-1"


def test_links_name_keel_versions():
    links = links_of(
        {
            "keel.prompt": "chat@1.3.0",
            "keel.model_version": "ranker@3",
            "keel.flag.enable_reranker": "on",
            "keel.ab.greeting": "B",
            "other": "x",
        }
    )
    assert sorted(links) == [
        ("experiment", "greeting", "B"),
        ("flag", "enable_reranker", "on"),
        ("model", "ranker", "3"),
        ("prompt", "chat", "1.3.0"),
    ]


def test_payload_from_attributes_parses_json_text():
    assert payload_from_attributes({"input.value": '{"q": "hi"}'}, "inputs") == {"q": "hi"}
    assert payload_from_attributes({"mlflow.spanOutputs": '"ok"'}, "outputs") == "ok"
    assert payload_from_attributes({}, "inputs") is None


def test_nan_payloads_are_stored():
    row = normalize_span(raw(outputs={"score": float("nan")}))
    assert json.loads(row.outputs or "null") == {"score": None}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["trace_id", "span_id", "parent_id", "name", "kind", "start_ns", "end_ns", "status", "attributes"]
        )
        | st.text(max_size=10),
        json_values,
        max_size=10,
    )
)
def test_only_keel_errors_escape(candidate):
    for value in (candidate, {**raw(), **candidate}):
        try:
            row = normalize_span(value)
        except KeelError:
            continue
        json.loads(row.attributes)  # whatever is accepted is stored as valid JSON


def test_mlflow_llm_attributes_as_autolog_sets_them():
    fields = span_fields(
        {
            "mlflow.llm.model": "gpt-4o-mini",
            "mlflow.chat.tokenUsage": {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
            "mlflow.llm.cost": '{"input_cost": 0.1, "output_cost": 0.2, "total_cost": 0.3}',
        }
    )
    assert (fields["model"], fields["input_tokens"], fields["output_tokens"], fields["cost"]) == (
        "gpt-4o-mini",
        3,
        4,
        0.3,
    )
