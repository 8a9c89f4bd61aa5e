"""MLflow's trace shapes <-> keel's span record (keel.server.mlflow.trace_format), without a server:
ids, the ``traces.json`` spans and the trace info on their root, keel traces served back in
MLflow's shape, and MLflow's search grammar in keel's filter language."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from keel.core.filters import parse_filter
from keel.core.traces import Score, Span, Trace, TraceDetail, normalize_span
from keel.errors import InvalidInput
from keel.meta.traces import FILTER_PREFIXES
from keel.server.mlflow.trace_format import (
    TraceInfo,
    check_trace_info,
    keel_trace_id,
    raw_spans,
    search_filter,
    search_order,
    sort_traces,
    trace_info_json,
    trace_json,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
ROOT, CHILD = "00f067aa0ba902b7", "1111222233334444"


def b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


def mlflow_span(span_id: str, name: str, parent: str | None = None, **attributes: Any) -> dict[str, Any]:
    """A span as MLflow's ``Span.to_dict()`` writes it into ``traces.json``."""
    return {
        "trace_id": b64(TRACE),
        "span_id": b64(span_id),
        "parent_span_id": b64(parent) if parent else None,
        "name": name,
        "start_time_unix_nano": 1_796_000_000_000_000_000,
        "end_time_unix_nano": 1_796_000_000_250_000_000,
        "events": [],
        "status": {"code": "STATUS_CODE_OK", "message": ""},
        "attributes": {"mlflow.traceRequestId": json.dumps(f"tr-{TRACE}"), **attributes},
        "links": [],
    }


INFO = TraceInfo(
    TRACE,
    "0",
    {"env": "dev", "mlflow.traceName": "answer", "mlflow.artifactLocation": "x", "a.b": "c"},
    {"mlflow.trace.session": "s1", "mlflow.trace.user": "u1", "mlflow.sourceRun": "r" * 32, "app": "1.4"},
    "req-1",
    '{"q": 1}',
    None,
)


def test_trace_ids_map_both_ways() -> None:
    assert keel_trace_id(f"tr-{TRACE.upper()}") == TRACE
    assert keel_trace_id(TRACE) == TRACE  # MLflow 2's request ids have no prefix
    for bad in ("tr-" + "0" * 32, "tr-xyz", "tr-" + TRACE + "0", 42, None, f"trace:/loc/{TRACE}"):
        with pytest.raises(InvalidInput, match="invalid trace id"):
            keel_trace_id(bad)


def test_the_trace_info_is_checked() -> None:
    body = {
        "trace_info": {
            "trace_id": f"tr-{TRACE}",
            "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": "7"}},
            "trace_metadata": {"mlflow.trace.session": "s1", "n": 3},
            "tags": {"env": "dev"},
            "client_request_id": "req-1",
            "request_preview": "hi",
        }
    }
    info = check_trace_info(body)
    assert (info.trace_id, info.experiment_id, info.tags, info.client_request_id) == (
        TRACE,
        "7",
        {"env": "dev"},
        "req-1",
    )
    assert info.metadata == {"mlflow.trace.session": "s1", "n": "3"} and info.request_preview == "hi"
    assert TraceInfo.from_bytes(info.to_bytes()) == info
    for broken, problem in (
        ({}, "trace.trace_info"),
        ({"trace_info": {"trace_id": f"tr-{TRACE}"}}, "experiment_id"),
        ({"trace_info": {**body["trace_info"], "tags": ["x"]}}, "tags"),
        ({"trace_info": {**body["trace_info"], "trace_metadata": {"": "x"}}}, "key"),
        ({"trace_info": {**body["trace_info"], "client_request_id": 5}}, "client_request_id"),
    ):
        with pytest.raises(InvalidInput, match=problem):
            check_trace_info(broken)


def test_traces_json_becomes_keel_spans_with_the_trace_info_on_the_root() -> None:
    data = {
        "spans": [
            mlflow_span(
                CHILD,
                "chat",
                ROOT,
                **{
                    "mlflow.spanType": '"CHAT_MODEL"',
                    "mlflow.spanInputs": json.dumps({"model": "gpt-4o", "messages": []}),
                    "mlflow.spanOutputs": '"hi"',
                    "mlflow.chat.tokenUsage": json.dumps({"input_tokens": 9, "output_tokens": 2, "total_tokens": 11}),
                    "mlflow.llm.cost": json.dumps({"total_cost": 0.5}),
                    "temperature": "0.2",
                    "plain": "not json",
                },
            ),
            mlflow_span(ROOT, "answer", **{"mlflow.spanType": '"CHAIN"', "mlflow.spanInputs": '{"q": 1}'}),
        ]
    }
    data["spans"][0]["status"] = {"code": "STATUS_CODE_ERROR", "message": "ValueError: no"}
    data["spans"][0]["events"] = [{"name": "exception", "time_unix_nano": 5, "attributes": {"exception.type": "E"}}]
    child, root = raw_spans(data, INFO)
    assert (root["span_id"], root["parent_id"], child["parent_id"]) == (ROOT, None, ROOT)
    assert child["inputs"] == {"model": "gpt-4o", "messages": []} and child["outputs"] == "hi"
    assert child["attributes"]["temperature"] == 0.2 and child["attributes"]["plain"] == "not json"
    assert "mlflow.spanInputs" not in child["attributes"] and "mlflow.traceRequestId" not in child["attributes"]
    assert (child["status"], child["status_message"]) == ("error", "ValueError: no")
    assert child["events"] == [{"name": "exception", "time_ns": 5, "attributes": {"exception.type": "E"}}]
    stored = normalize_span(child)  # keel's fields read what was added for them
    assert (stored.kind, stored.model, stored.input_tokens, stored.output_tokens, stored.cost) == (
        "llm",
        "gpt-4o",
        9,
        2,
        0.5,
    )
    on_root = root["attributes"]
    assert on_root["mlflow.trace.tag.env"] == "dev" and on_root["mlflow.trace.tag.a.b"] == "c"
    assert "mlflow.trace.tag.mlflow.traceName" not in on_root  # the root's own name
    assert "mlflow.trace.tag.mlflow.artifactLocation" not in on_root  # keel's, not the trace's
    assert on_root["mlflow.trace.metadata.app"] == "1.4" and on_root["mlflow.trace.clientRequestId"] == "req-1"
    top = normalize_span(root)
    assert (top.conversation_id, top.user_id, top.run_id) == ("s1", "u1", "r" * 32)
    assert "mlflow.trace.tag.env" not in child["attributes"]


def test_malformed_trace_data_is_refused() -> None:
    other = {**mlflow_span(ROOT, "x"), "trace_id": b64("ab" * 16)}
    for data, problem in (
        ([], "spans"),
        ({"spans": []}, "spans"),
        ({"spans": ["x"]}, "object"),
        ({"spans": [other]}, "span of trace"),
        ({"spans": [{**mlflow_span(ROOT, "x"), "span_id": "@@"}]}, "span_id"),
        ({"spans": [{**mlflow_span(ROOT, "x"), "parent_span_id": b64("ab" * 4)}]}, "parent_span_id"),
        ({"spans": [{**mlflow_span(ROOT, "x"), "attributes": ["x"]}]}, "attributes"),
        ({"spans": [{"context": {}, "name": "x"}]}, "2.x"),
    ):
        with pytest.raises(InvalidInput, match=problem):
            raw_spans(data, INFO)
    hexed = {**mlflow_span(ROOT, "x"), "trace_id": f"tr-{TRACE}", "span_id": ROOT}  # MLflow 3.5's to_dict
    assert raw_spans({"spans": [hexed]}, INFO)[0]["span_id"] == ROOT


def _span(span_id: str, parent: str | None, kind: str, **fields: Any) -> Span:
    values: dict[str, Any] = {
        "trace_id": TRACE,
        "span_id": span_id,
        "parent_id": parent,
        "name": fields.pop("name", kind),
        "kind": kind,
        "status": "ok",
        "status_message": None,
        "start_ns": 1_796_000_000_000_000_000,
        "end_ns": 1_796_000_001_500_000_000,
        "model": None,
        "input_tokens": None,
        "output_tokens": None,
        "cost": None,
        "prompt": None,
        "run_id": None,
        "conversation_id": None,
        "user_id": None,
        "attributes": {},
        "inputs": None,
        "outputs": None,
        "events": [],
        "flags": 0,
    }
    values.update(fields)
    return Span(**values)


def _trace(**fields: Any) -> Trace:
    values: dict[str, Any] = {
        "trace_id": TRACE,
        "project": "default",
        "name": "ask",
        "root_span_id": ROOT,
        "start_ns": 1_796_000_000_000_000_000,
        "end_ns": 1_796_000_001_500_000_000,
        "duration_ms": 1500.0,
        "status": "ok",
        "span_count": 2,
        "error_count": 0,
        "input_tokens": 30,
        "output_tokens": 5,
        "cost": None,
        "model": "gpt-4o",
        "prompt": None,
        "run_id": None,
        "conversation_id": "c-9",
        "user_id": None,
        "tags": {"source": "sdk", "n": 3},
    }
    values.update(fields)
    return Trace(**values)


def test_a_keel_trace_is_served_in_mlflows_shape() -> None:
    root = _span(ROOT, None, "chain", name="ask", inputs={"$object": "ab" * 32, "size": 20_000}, outputs="x" * 2000)
    llm = _span(CHILD, ROOT, "llm", model="gpt-4o", input_tokens=30, output_tokens=5, attributes={"keel.model": "m"})
    score = Score("helpful", 1.0, None, "good", "user", None, 1_796_000_000_000)
    detail = TraceDetail(_trace(), [root, llm], [score], [])
    loads: list[tuple[str, str]] = []

    def load(span: Span, which: str) -> Any:
        loads.append((span.span_id, which))
        value = getattr(span, which)
        return {"question": "why?"} if isinstance(value, dict) and "$object" in value else value

    out = trace_json(detail, "0", load)
    assert sorted(loads) == sorted({(s, w) for s in (ROOT, CHILD) for w in ("inputs", "outputs")})  # once each
    info = out["trace_info"]
    assert info["trace_id"] == f"tr-{TRACE}" and info["state"] == "OK" and info["execution_duration"] == "1.500s"
    assert info["request_time"].endswith("Z") and info["request_preview"] == '{"question": "why?"}'
    assert len(info["response_preview"]) == 1000 and info["response_preview"].endswith("...")
    assert info["tags"] == {
        "source": "sdk",
        "n": "3",
        "mlflow.traceName": "ask",
        "mlflow.trace.spansLocation": "TRACKING_STORE",
    }
    assert info["trace_metadata"]["mlflow.trace.session"] == "c-9"
    assert json.loads(info["trace_metadata"]["mlflow.trace.tokenUsage"])["total_tokens"] == 35
    [assessment] = info["assessments"]
    assert assessment["feedback"] == {"value": 1.0} and assessment["source"]["source_type"] == "HUMAN"
    spans = {s["name"]: s for s in out["spans"]}
    assert spans["llm"]["parent_span_id"] == b64(ROOT) and "parent_span_id" not in spans["ask"]
    attributes = {a["key"]: a["value"] for a in spans["llm"]["attributes"]}
    assert attributes["mlflow.spanType"] == {"string_value": "LLM"}
    assert attributes["mlflow.llm.model"] == {"string_value": "gpt-4o"} and "keel.model" not in attributes
    usage = {kv["key"]: kv["value"] for kv in attributes["mlflow.chat.tokenUsage"]["kvlist_value"]["values"]}
    assert usage == {
        "input_tokens": {"int_value": 30},
        "output_tokens": {"int_value": 5},
        "total_tokens": {"int_value": 35},
    }
    root_attributes = {a["key"]: a["value"] for a in spans["ask"]["attributes"]}
    assert root_attributes["mlflow.spanInputs"] == {
        "kvlist_value": {"values": [{"key": "question", "value": {"string_value": "why?"}}]}
    }


def test_an_mlflow_trace_round_trips_through_keels_record() -> None:
    data = {
        "spans": [
            mlflow_span(ROOT, "answer", **{"mlflow.spanType": '"CHAIN"', "k": "[1, 2]", "mlflow.spanOutputs": '"7"'}),
        ]
    }
    [raw] = raw_spans(data, INFO)
    row = normalize_span(raw)
    span = _span(
        ROOT,
        None,
        row.kind,
        name="answer",
        attributes=json.loads(row.attributes),
        outputs=json.loads(row.outputs or "null"),
    )
    trace = _trace(tags={"env": "dev", "a.b": "c"}, conversation_id="s1", user_id="u1", run_id="r" * 32)
    info = trace_info_json(trace, "0", span)
    assert info["client_request_id"] == "req-1" and info["request_preview"] == '{"q": 1}'
    assert info["response_preview"] == '"7"'
    assert info["trace_metadata"] == {
        "app": "1.4",
        "mlflow.trace.session": "s1",
        "mlflow.trace.user": "u1",
        "mlflow.sourceRun": "r" * 32,
        "mlflow.trace.tokenUsage": json.dumps({"input_tokens": 30, "output_tokens": 5, "total_tokens": 35}),
    }
    [out] = trace_json(TraceDetail(trace, [span], [], []), "0", lambda s, w: getattr(s, w))["spans"]
    keys = {a["key"] for a in out["attributes"]}
    assert keys == {"mlflow.spanType", "k", "mlflow.spanOutputs"}  # the trace info is not the span's


@pytest.mark.parametrize(
    ("mlflow_filter", "keel_filter"),
    [
        ("status = 'OK'", "status = 'ok'"),
        ("attributes.status != 'ERROR'", "status != 'error'"),
        ("trace.status IN ('OK', 'ERROR')", "status in ('ok', 'error')"),
        ("timestamp_ms > 1700000000000", "time > 1700000000000"),
        ("attributes.execution_time_ms >= 250.5", "latency >= 250.5"),
        ("tags.env = 'it''s'", "tags.env = 'it''s'"),
        ("tags.`my tag` LIKE 'a%'", "tags.`my tag` like 'a%'"),
        ("tags.`mlflow.traceName` = 'answer'", "name = 'answer'"),
        ("metadata.`mlflow.trace.session` = 's1'", "session = 's1'"),
        ("request_metadata.mlflow.trace.user = 'ada'", "user = 'ada'"),
        ("metadata.`mlflow.sourceRun` = 'r1'", "run_id = 'r1'"),
        ("attribute.run_id = 'r1' AND name = 'x'", "(run_id = 'r1' and name = 'x')"),
        ("span.type = 'CHAT_MODEL' OR span.type = 'RETRIEVER'", "(span.kind = 'llm' or span.kind = 'retrieval')"),
        ("span.name = 'a\\\\b' AND span.status = 'ERROR'", "(span.name = 'a\\\\b' and span.status = 'error')"),
        ("span.model = 'gpt-4o'", "model = 'gpt-4o'"),
        (f"trace_id = 'tr-{TRACE}'", f"trace_id = '{TRACE}'"),
        ("feedback.helpful < 0.5", "feedback.helpful < 0.5"),
        ("NOT tags.env IS NULL", "not (tags.env is null)"),
    ],
)
def test_mlflow_search_filters_become_keels(mlflow_filter: str, keel_filter: str) -> None:
    translated = search_filter(mlflow_filter)
    assert translated == keel_filter
    assert parse_filter(translated, FILTER_PREFIXES, "attributes") == parse_filter(keel_filter, FILTER_PREFIXES)


@pytest.mark.parametrize(
    "mlflow_filter",
    [
        "client_request_id = 'x'",
        "metadata.`app.version` = '1'",
        "tags.`a.b` = 'c'",
        "span.attributes.k = 1",
        "tags.`x` = 1 AND",
    ],
)
def test_what_keel_cannot_search_is_invalid_input(mlflow_filter: str) -> None:
    with pytest.raises(InvalidInput):
        search_filter(mlflow_filter)


def test_orders_and_the_merge_of_several_projects() -> None:
    assert search_filter(None) is None and search_filter("  ") is None
    assert search_order(["timestamp_ms ASC", "attributes.execution_time_ms DESC"]) == ["time asc", "latency desc"]
    assert search_order(None) == [] and search_order("status") == ["status asc"]
    with pytest.raises(InvalidInput, match="cannot order traces by 'tags.x'|cannot order traces by 'x'"):
        search_order(["tags.x"])
    a = _trace(trace_id="a" * 32, start_ns=3, duration_ms=1.0, name="b")
    b = _trace(trace_id="b" * 32, start_ns=2, duration_ms=9.0, name="a")
    c = _trace(trace_id="c" * 32, start_ns=1, duration_ms=9.0, name="c")
    assert sort_traces([c, a, b], []) == [a, b, c]
    assert sort_traces([a, b, c], ["time asc"]) == [c, b, a]
    assert sort_traces([a, b, c], ["latency desc", "name asc"]) == [b, c, a]
