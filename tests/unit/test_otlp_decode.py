"""OTLP traces in (keel.integrations.otlp): protobuf and OTLP JSON to raw spans, bounds, replies."""

from __future__ import annotations

import base64
import gzip
import json
import math
import zlib
from typing import Any

import pytest
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from keel.core.arguments import check_value
from keel.core.traces import CLOCK_SKEW, TRUNCATED, normalize_span
from keel.errors import InvalidInput, KeelError, TooLarge
from keel.integrations.otlp import (
    JSON,
    MAX_REQUEST_SPANS,
    MAX_SPAN_VALUES,
    MAX_TEXT,
    MAX_VALUE_DEPTH,
    PROTOBUF,
    DecodedSpans,
    decode,
    decode_json,
    decode_protobuf,
    decompress,
    export_response,
    media_of,
    status_body,
)
from keel.services.contract import DEFAULT_LIMITS

TRACE = "5b8efff798038103d269b633813fc60c"
ROOT = "eee19b7ec3c1b174"
CHILD = "eee19b7ec3c1b173"

# The OTLP JSON of the specification's example, with a GenAI child span (written by hand, not by keel).
OTLP_JSON: dict[str, Any] = {
    "resourceSpans": [
        {
            "resource": {
                "attributes": [
                    {"key": "service.name", "value": {"stringValue": "chat-api"}},
                    {"key": "host.cores", "value": {"intValue": "8"}},
                ]
            },
            "scopeSpans": [
                {
                    "scope": {"name": "my.library", "version": "1.0.0", "attributes": []},
                    "spans": [
                        {
                            "traceId": TRACE.upper(),
                            "spanId": ROOT,
                            "parentSpanId": "",
                            "name": "answer",
                            "kind": 2,
                            "startTimeUnixNano": "1544712660000000000",
                            "endTimeUnixNano": "1544712661000000000",
                            "attributes": [
                                {"key": "my.string", "value": {"stringValue": "some string"}},
                                {"key": "my.bool", "value": {"boolValue": True}},
                                {"key": "my.int", "value": {"intValue": "9007199254740993"}},
                                {"key": "my.double", "value": {"doubleValue": 1.5}},
                                {"key": "my.nan", "value": {"doubleValue": "NaN"}},
                                {"key": "my.bytes", "value": {"bytesValue": base64.b64encode(b"\x00\xff").decode()}},
                                {
                                    "key": "my.array",
                                    "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": 3}]}},
                                },
                                {
                                    "key": "my.map",
                                    "value": {"kvlistValue": {"values": [{"key": "k", "value": {"boolValue": False}}]}},
                                },
                                {"key": "my.empty", "value": {}},
                            ],
                            "events": [
                                {
                                    "timeUnixNano": "1544712660500000000",
                                    "name": "cache miss",
                                    "attributes": [{"key": "key", "value": {"stringValue": "q1"}}],
                                }
                            ],
                            "links": [{"traceId": TRACE, "spanId": CHILD, "attributes": []}],
                            "status": {"code": 2, "message": "upstream failed"},
                            "someFutureField": {"ignored": True},
                        },
                        {
                            "trace_id": TRACE,  # snake_case names are read as well
                            "span_id": CHILD,
                            "parent_span_id": ROOT,
                            "name": "chat gpt-4o",
                            "kind": "SPAN_KIND_CLIENT",
                            "start_time_unix_nano": 1544712660100000000,
                            "end_time_unix_nano": 1544712660900000000,
                            "attributes": [
                                {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                                {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                                {"key": "gen_ai.usage.input_tokens", "value": {"intValue": 12}},
                                {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "3"}},
                                {
                                    "key": "gen_ai.input.messages",
                                    "value": {
                                        "stringValue": '[{"role":"user","parts":[{"type":"text","content":"hi"}]}]'
                                    },
                                },
                            ],
                            "events": [
                                {
                                    "name": "gen_ai.choice",
                                    "timeUnixNano": "1544712660900000000",
                                    "attributes": [
                                        {"key": "index", "value": {"intValue": "0"}},
                                        {"key": "finish_reason", "value": {"stringValue": "stop"}},
                                        {"key": "message", "value": {"stringValue": '{"content":"hello"}'}},
                                    ],
                                }
                            ],
                            "status": {"code": "STATUS_CODE_OK"},
                        },
                    ],
                }
            ],
        }
    ]
}


def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[_any(v) for v in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=_kvs(value)))
    if value is None:
        return AnyValue()
    return AnyValue(string_value=value)


def _kvs(mapping: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_any(v)) for k, v in mapping.items()]


def protobuf_twin() -> bytes:
    """OTLP_JSON's request built with the generated protobuf classes."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(_kvs({"service.name": "chat-api", "host.cores": 8}))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name, scope_spans.scope.version = "my.library", "1.0.0"
    root = Span(
        trace_id=bytes.fromhex(TRACE),
        span_id=bytes.fromhex(ROOT),
        name="answer",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=1544712660000000000,
        end_time_unix_nano=1544712661000000000,
        attributes=_kvs(
            {
                "my.string": "some string",
                "my.bool": True,
                "my.int": 9007199254740993,
                "my.double": 1.5,
                "my.nan": math.nan,
                "my.bytes": b"\x00\xff",
                "my.array": ["a", 3],
                "my.map": {"k": False},
                "my.empty": None,
            }
        ),
        events=[Span.Event(time_unix_nano=1544712660500000000, name="cache miss", attributes=_kvs({"key": "q1"}))],
        links=[Span.Link(trace_id=bytes.fromhex(TRACE), span_id=bytes.fromhex(CHILD))],
        status=Status(code=Status.STATUS_CODE_ERROR, message="upstream failed"),
    )
    child = Span(
        trace_id=bytes.fromhex(TRACE),
        span_id=bytes.fromhex(CHILD),
        parent_span_id=bytes.fromhex(ROOT),
        name="chat gpt-4o",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=1544712660100000000,
        end_time_unix_nano=1544712660900000000,
        attributes=_kvs(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 12,
                "gen_ai.usage.output_tokens": 3,
                "gen_ai.input.messages": '[{"role":"user","parts":[{"type":"text","content":"hi"}]}]',
            }
        ),
        events=[
            Span.Event(
                name="gen_ai.choice",
                time_unix_nano=1544712660900000000,
                attributes=_kvs({"index": 0, "finish_reason": "stop", "message": '{"content":"hello"}'}),
            )
        ],
        status=Status(code=Status.STATUS_CODE_OK),
    )
    scope_spans.spans.extend([root, child])
    return request.SerializeToString()


def _same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_otlp_json_maps_onto_raw_spans():
    root, child = decode_json(json.dumps(OTLP_JSON).encode()).spans
    assert (root["trace_id"], root["span_id"], root["parent_id"]) == (TRACE, ROOT, None)
    assert (root["start_ns"], root["end_ns"]) == (1544712660000000000, 1544712661000000000)
    assert (root["status"], root["status_message"], root["kind"]) == ("error", "upstream failed", "other")
    attributes = root["attributes"]
    assert attributes["my.string"] == "some string" and attributes["my.bool"] is True
    assert attributes["my.int"] == 9007199254740993 and attributes["my.double"] == 1.5
    assert math.isnan(attributes["my.nan"]) and attributes["my.bytes"] == "AP8="
    assert attributes["my.array"] == ["a", 3] and attributes["my.map"] == {"k": False}
    assert attributes["my.empty"] is None
    assert attributes["resource.service.name"] == "chat-api" and attributes["resource.host.cores"] == 8
    assert attributes["otel.scope.name"] == "my.library" and attributes["otel.scope.version"] == "1.0.0"
    assert attributes["otel.span_kind"] == "server"
    assert attributes["otel.links"] == [{"trace_id": TRACE, "span_id": CHILD, "attributes": {}}]
    assert root["events"] == [{"name": "cache miss", "time_ns": 1544712660500000000, "attributes": {"key": "q1"}}]
    assert "inputs" not in root and "outputs" not in root

    assert child["parent_id"] == ROOT and child["status"] == "ok" and child["kind"] == "llm"
    assert child["attributes"]["otel.span_kind"] == "client"
    assert child["inputs"] == [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
    assert child["outputs"] == [{"role": "assistant", "content": "hello", "index": 0, "finish_reason": "stop"}]
    assert "gen_ai.input.messages" not in child["attributes"] and child["events"] == []  # stored once, as payloads
    row = normalize_span(child)
    assert (row.model, row.input_tokens, row.output_tokens, row.kind) == ("gpt-4o", 12, 3, "llm")


def test_protobuf_and_json_decode_to_the_same_spans():
    assert _same(decode_protobuf(protobuf_twin()).spans, decode_json(json.dumps(OTLP_JSON).encode()).spans)


def test_ids_in_base64_as_protobuf_json_writes_them_are_read_too():
    body = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": base64.b64encode(bytes.fromhex(TRACE)).decode(),
                                "spanId": base64.b64encode(bytes.fromhex(ROOT)).decode(),
                                "name": "s",
                                "startTimeUnixNano": "1",
                            }
                        ]
                    }
                ]
            }
        ]
    }
    (span,) = decode_json(json.dumps(body).encode()).spans
    assert (span["trace_id"], span["span_id"]) == (TRACE, ROOT)


def _one_span(**span: Any) -> bytes:
    base = {"traceId": TRACE, "spanId": ROOT, "name": "s", "startTimeUnixNano": "1", "endTimeUnixNano": "2"}
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{**base, **span}]}]}]}).encode()


def test_bad_ids_and_times_are_left_for_the_store_to_refuse_that_span_alone():
    (span,) = decode_json(_one_span(traceId="not hex", spanId="", endTimeUnixNano=str(1 << 63))).spans
    with pytest.raises(InvalidInput, match="trace_id"):
        normalize_span(span)
    assert span["end_ns"] == str(1 << 63)  # beyond int64: refused by name, never an overflow
    (skewed,) = decode_json(_one_span(startTimeUnixNano="20", endTimeUnixNano="10")).spans
    assert normalize_span(skewed).flags & CLOCK_SKEW


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"\xff\xfe not json", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"resourceSpans": {}}', "resourceSpans must be a list"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [7]}]}]}', "spans[0] must be an object"),
        (_one_span(attributes=[{"key": "k", "value": {"intValue": "12x"}}]), "attributes[0].value.intValue"),
        (_one_span(attributes=[{"key": "k", "value": {"intValue": str(1 << 63)}}]), "intValue"),
        (_one_span(attributes=[{"key": "k", "value": {"boolValue": "yes"}}]), "boolValue"),
        (_one_span(attributes=[{"key": "k", "value": {"bytesValue": "@@"}}]), "bytesValue"),
        (_one_span(attributes=[{"key": 5, "value": {}}]), "key must be text"),
        (_one_span(startTimeUnixNano=-1), "startTimeUnixNano"),
        (_one_span(startTimeUnixNano=1.5), "startTimeUnixNano"),
        (_one_span(kind="SPAN_KIND_WHATEVER"), "kind"),
        (_one_span(traceId=123), "traceId must be hex text"),
        (_one_span(status=[]), "status must be an object"),
        (_one_span(events=[{"timeUnixNano": "soon"}]), "events[0].timeUnixNano"),
        (b"[" * 100_000, "not JSON"),
    ],
)
def test_malformed_json_is_refused_naming_where(body, words):
    with pytest.raises(InvalidInput) as caught:
        decode_json(body)
    assert words in caught.value.message and caught.value.hint


def test_malformed_protobuf_is_refused():
    for body in (b"\xff\xff\xff", b"\x0a\x05\x0a", protobuf_twin()[:-3]):
        with pytest.raises(InvalidInput, match="protobuf"):
            decode_protobuf(body)
    assert decode_protobuf(b"").spans == []  # an empty request is a valid one


def _framed(tag: int, payload: bytes) -> bytes:
    length, out = len(payload), bytearray([tag])
    while length > 0x7F:
        out.append(length & 0x7F | 0x80)
        length >>= 7
    return bytes(out) + bytes([length]) + payload


def test_more_spans_than_a_request_may_hold_are_refused_before_parsing():
    # An empty span is 2 bytes on the wire and ~180 once parsed: counted on the wire first.
    flood = _framed(0x0A, _framed(0x12, b"\x12\x00" * (MAX_REQUEST_SPANS + 1)))  # resource_spans.scope_spans.spans
    with pytest.raises(TooLarge, match="spans"):
        decode_protobuf(flood)
    empty_resources = b"\x0a\x00" * (MAX_REQUEST_SPANS + 1)
    with pytest.raises(TooLarge):
        decode_protobuf(empty_resources)
    at_the_limit = _framed(0x0A, _framed(0x12, b"\x12\x00" * 10))
    assert len(decode_protobuf(at_the_limit)) == 10  # (empty spans: each refused by the store, by name)
    spans = ",".join(["{}"] * (MAX_REQUEST_SPANS + 1))
    with pytest.raises(TooLarge):
        decode_json(f'{{"resourceSpans": [{{"scopeSpans": [{{"spans": [{spans}]}}]}}]}}'.encode())
    with pytest.raises(TooLarge):
        decode_json(json.dumps({"resourceSpans": [{}] * (MAX_REQUEST_SPANS + 1)}).encode())


def test_large_values_are_cut_and_marked():
    long = "x" * (MAX_TEXT + 10)
    deep: Any = "bottom"
    for _ in range(MAX_VALUE_DEPTH + 3):
        deep = [deep]
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    spans.add(
        trace_id=bytes.fromhex(TRACE),
        span_id=bytes.fromhex(ROOT),
        name=long,
        start_time_unix_nano=1,
        attributes=_kvs({"long": long, "deep": deep, "input.value": long}),
    )
    spans.add(
        trace_id=bytes.fromhex(TRACE),
        span_id=bytes.fromhex(CHILD),
        name="many",
        start_time_unix_nano=1,
        attributes=_kvs({f"k{i}": i for i in range(MAX_SPAN_VALUES)}),
    )
    spans.add(trace_id=bytes.fromhex(TRACE), span_id=b"\x01" * 8, name="small", start_time_unix_nano=1)
    decoded = decode_protobuf(request.SerializeToString())
    cut, many, small = decoded.spans
    assert len(cut["name"]) == MAX_TEXT and len(cut["attributes"]["long"]) == MAX_TEXT
    assert len(cut["inputs"]) == MAX_TEXT  # read as the payload first, then cut
    assert "[dropped: nested too deeply]" in json.dumps(cut["attributes"]["deep"])
    assert cut["attributes"]["keel.truncated"] is True and normalize_span(cut).flags & TRUNCATED
    assert many["attributes"]["keel.truncated"] is True and len(many["attributes"]) < MAX_SPAN_VALUES
    assert "keel.truncated" not in small["attributes"] and not normalize_span(small).flags & TRUNCATED


def test_decoded_batches_fit_the_service_contract():
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for i in range(10):
        spans.add(
            trace_id=bytes.fromhex(TRACE),
            span_id=(i + 1).to_bytes(8, "big"),
            name="s",
            start_time_unix_nano=1,
            attributes=_kvs({f"k{j}": [j] * 10 for j in range(200)}),
        )
    decoded = decode_protobuf(request.SerializeToString())
    batches = list(decoded.batches(max_values=6_000))
    assert sum(len(b) for b in batches) == 10 and len(batches) == 5  # ~2,600 values a span
    for batch in batches:  # what traces.ingest's declaration checks, before anything runs
        check_value(
            batch, list[dict[str, Any]], "ingest", text=DEFAULT_LIMITS.text, items=DEFAULT_LIMITS.items,
            depth=DEFAULT_LIMITS.depth, budget=[6_000],
        )  # fmt: skip
    small = DecodedSpans([{"n": i} for i in range(5)], [1] * 5)
    assert [len(b) for b in small.batches(max_spans=2)] == [2, 2, 1]


def test_decompress_gzip_deflate_and_bombs():
    data = b"spans" * 1000
    assert decompress(gzip.compress(data), "gzip") == data
    assert decompress(gzip.compress(data[:10]) + gzip.compress(data[10:]), "gzip") == data  # two members
    assert decompress(zlib.compress(data), "deflate") == data
    assert decompress(data, None) == data and decompress(data, "identity") == data
    bomb = gzip.compress(b"\0" * (8 << 20))
    with pytest.raises(TooLarge):
        decompress(bomb, "gzip", limit=1 << 20)
    with pytest.raises(TooLarge):
        decompress(data, None, limit=100)
    with pytest.raises(InvalidInput, match="cannot be decompressed"):
        decompress(b"not gzip", "gzip")
    with pytest.raises(InvalidInput, match="cut short"):
        decompress(gzip.compress(data)[:20], "gzip")
    with pytest.raises(InvalidInput, match="Content-Encoding"):
        decompress(data, "br")


def test_decode_picks_the_encoding_from_the_content_type():
    assert media_of("application/x-protobuf") == PROTOBUF and media_of("Application/JSON; charset=utf-8") == JSON
    assert media_of("text/plain") is None and media_of(None) is None
    assert len(decode(gzip.compress(protobuf_twin()), "application/x-protobuf", "gzip")) == 2
    assert len(decode(json.dumps(OTLP_JSON).encode(), "application/json")) == 2
    with pytest.raises(InvalidInput, match="Content-Type"):
        decode(b"{}", "text/plain")


def test_replies_in_both_encodings():
    assert export_response(0, None, PROTOBUF) == b"" and export_response(0, None, JSON) == b"{}"
    reply = ExportTraceServiceResponse.FromString(export_response(2, "2 spans refused", PROTOBUF))
    assert (reply.partial_success.rejected_spans, reply.partial_success.error_message) == (2, "2 spans refused")
    assert json.loads(export_response(2, "why", JSON)) == {
        "partialSuccess": {"rejectedSpans": "2", "errorMessage": "why"}
    }
    assert json.loads(export_response(0, "1 duplicate", JSON)) == {"partialSuccess": {"errorMessage": "1 duplicate"}}
    status = status_pb2.Status.FromString(status_body(400, "bad span ü" * 30, PROTOBUF))
    assert (status.code, status.message) == (3, "bad span ü" * 30)
    assert status_pb2.Status.FromString(status_body(401, "who?", PROTOBUF)).code == 16
    assert json.loads(status_body(413, "too big", JSON)) == {"code": 8, "message": "too big"}
    assert json.loads(status_body(503, "away", None))["code"] == 14


# -- arbitrary input: only KeelError -----------------------------------------------------------------
_KEYS = st.sampled_from(
    [
        "resourceSpans", "scopeSpans", "spans", "resource", "scope", "attributes", "events", "links", "status",
        "traceId", "spanId", "parentSpanId", "name", "kind", "code", "message", "startTimeUnixNano",
        "endTimeUnixNano", "timeUnixNano", "key", "value", "values", "stringValue", "intValue", "doubleValue",
        "boolValue", "bytesValue", "arrayValue", "kvlistValue", "input.value", "gen_ai.input.messages",
    ]
)  # fmt: skip
_SCALARS = st.none() | st.booleans() | st.integers(min_value=-(1 << 70), max_value=1 << 70) | st.floats() | st.text()
_JSON = st.recursive(
    _SCALARS | st.sampled_from([TRACE, ROOT, "NaN", "-Infinity", "AP8=", "12", '[{"role":"user"}]']),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS | st.text(max_size=5), inner, max_size=5),
    max_leaves=40,
)


def _decoded_or_keel_error(decoder: Any, body: bytes) -> None:
    try:
        decoded = decoder(body)
    except KeelError:
        return
    for span in decoded.spans:
        try:
            normalize_span(span)
        except KeelError:
            pass
    for batch in decoded.batches():
        check_value(batch, Any, "ingest", text=DEFAULT_LIMITS.text, items=DEFAULT_LIMITS.items,
                    depth=DEFAULT_LIMITS.depth, budget=[DEFAULT_LIMITS.total])  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_JSON)
def test_the_json_decoder_raises_only_keel_errors(document):
    _decoded_or_keel_error(decode_json, json.dumps(document).encode())


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=300)
    | st.builds(lambda b, i: protobuf_twin()[:i] + b, st.binary(max_size=20), st.integers(0, 900))
)
def test_the_protobuf_decoder_raises_only_keel_errors(body):
    _decoded_or_keel_error(decode_protobuf, body)
