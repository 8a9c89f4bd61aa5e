"""OpenTelemetry in: an OTLP/HTTP ``ExportTraceServiceRequest`` as keel's raw spans, and OTLP's replies.

``POST /v1/traces`` (:mod:`keel.server.routers.otlp`) reads the body, and this module turns
it into the raw span dicts :func:`keel.core.traces.normalize_span` checks:

- **Encodings.** Protobuf (``application/x-protobuf``, parsed with the ``opentelemetry-proto``
  package's generated classes) and OTLP JSON (``application/json``: ids as hex strings, enums
  as numbers or names, 64-bit integers as strings or numbers, camelCase or snake_case field
  names, unknown fields ignored), optionally ``Content-Encoding: gzip`` (or ``deflate``).
- **Mapping.** Ids become lowercase hex, times nanoseconds, the status ``ok``/``error``/``unset``;
  attribute values are flattened from ``AnyValue`` (arrays as lists, key-value lists as objects,
  bytes as base64 text); the resource's attributes are kept as ``resource.<key>`` (so
  ``resource.service.name``), the instrumentation scope as ``otel.scope.name`` /
  ``otel.scope.version``, OpenTelemetry's span kind as ``otel.span_kind`` and links as
  ``otel.links``; events are kept. keel's span kind is inferred from the attributes
  (:func:`keel.core.traces.infer_kind`) and the inputs/outputs are read from the GenAI and
  OpenInference conventions (:func:`keel.core.trace_payloads.payloads_of`): the attributes and
  events they came from are stored once, as the payloads.
- **Bounds.** A body over :data:`MAX_BODY_BYTES` (compressed, or once decompressed: a gzip bomb
  is stopped as it inflates) or of more than :data:`MAX_REQUEST_SPANS` spans (counted on the wire,
  before the parser allocates them) is :class:`~keel.errors.TooLarge`; anything malformed is
  :class:`~keel.errors.InvalidInput` naming where. What is merely large is cut and marked
  (``keel.truncated``): text past :data:`MAX_TEXT`, values nested deeper than
  :data:`MAX_VALUE_DEPTH`, more than :data:`MAX_SPAN_VALUES` values in one span. A span with a
  bad id or time is not refused here: the store refuses that span alone and the reply counts it.

Protobuf is decoded here, OTLP JSON in :mod:`keel.integrations.otlp_json`; both hand what they
read to :func:`keel.integrations.otlp_spans.build_span`, so the mapping is written once.
The replies (:func:`export_response`, :func:`status_body`) follow OTLP/HTTP: an
``ExportTraceServiceResponse`` (with ``partial_success`` when spans were refused) and, for a
failure, a ``google.rpc.Status``, each in the request's encoding. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterable
from typing import Any

from keel.core.checks import INT64_MAX
from keel.errors import InvalidInput, TooLarge
from keel.integrations.otlp_json import decode_json
from keel.integrations.otlp_spans import (
    BATCH_SPANS,
    BATCH_VALUES,
    DEEP,
    DROPPED,
    HINT,
    MAX_EVENTS_READ,
    MAX_LINKS,
    MAX_REQUEST_SPANS,
    MAX_SPAN_VALUES,
    MAX_TEXT,
    MAX_VALUE_DEPTH,
    RESOURCE_VALUES,
    Budget,
    DecodedSpans,
    build_span,
    clip,
    count_values,
    too_many,
)

__all__ = [
    "BATCH_SPANS",
    "BATCH_VALUES",
    "JSON",
    "MAX_BODY_BYTES",
    "MAX_REQUEST_SPANS",
    "MAX_SPAN_VALUES",
    "MAX_TEXT",
    "MAX_VALUE_DEPTH",
    "PROTOBUF",
    "DecodedSpans",
    "decode",
    "decode_json",
    "decode_protobuf",
    "decompress",
    "export_response",
    "media_of",
    "rpc_code",
    "status_body",
]

PROTOBUF = "protobuf"
JSON = "json"
#: The largest request body, compressed and once decompressed (413 past it).
MAX_BODY_BYTES = 16 << 20

_MEDIA = {
    "application/x-protobuf": PROTOBUF,
    "application/protobuf": PROTOBUF,
    "application/vnd.google.protobuf": PROTOBUF,
    "application/json": JSON,
}


# -- the body -------------------------------------------------------------------------------------
def media_of(content_type: str | None) -> str | None:
    """:data:`PROTOBUF`, :data:`JSON` or None (not an OTLP encoding) for a ``Content-Type``."""
    if not content_type:
        return None
    return _MEDIA.get(content_type.split(";", 1)[0].strip().lower())


def decompress(body: bytes, content_encoding: str | None, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body under its ``Content-Encoding`` (none, ``identity``, ``gzip`` or ``deflate``).

    Inflating stops past ``limit`` bytes (:class:`~keel.errors.TooLarge`), so a small body
    that inflates to gigabytes costs no more than ``limit``. A broken stream or an unknown
    encoding is :class:`~keel.errors.InvalidInput`.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if len(body) > limit:
        raise _too_large(limit)
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise InvalidInput(
            f"unsupported Content-Encoding {content_encoding!r}"[:200], "send the body as is, or gzip it"
        )
    wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
    out = bytearray()
    data = body
    while data:
        inflater = zlib.decompressobj(wbits)
        try:
            out += inflater.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise InvalidInput(f"the {encoding} body cannot be decompressed: {exc}", HINT) from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise _too_large(limit)
        if not inflater.eof:
            raise InvalidInput(f"the {encoding} body is cut short", HINT)
        data = inflater.unused_data  # gzip: the next member of a multi-member body
        if encoding == "deflate" and data:
            raise InvalidInput("the deflate body has bytes after its end", HINT)
    return bytes(out)


def _too_large(limit: int) -> TooLarge:
    return TooLarge(
        f"the OTLP request body is over {limit:,} bytes (decompressed)",
        "export smaller batches: OTEL_BSP_MAX_EXPORT_BATCH_SIZE of the BatchSpanProcessor",
    )


def decode(body: bytes, content_type: str | None, content_encoding: str | None = None) -> DecodedSpans:
    """Decompress and decode a request body by its ``Content-Type`` and ``Content-Encoding``."""
    media = media_of(content_type)
    if media is None:
        raise InvalidInput(
            f"unsupported Content-Type {content_type!r}"[:200], "send application/x-protobuf or application/json"
        )
    data = decompress(body, content_encoding)
    return decode_protobuf(data) if media == PROTOBUF else decode_json(data)


# -- protobuf -------------------------------------------------------------------------------------
def decode_protobuf(data: bytes) -> DecodedSpans:
    """An ``ExportTraceServiceRequest`` in protobuf as raw spans (InvalidInput if malformed)."""
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    _count_on_the_wire(data)
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError) as exc:
        message = f"malformed OTLP request: not an ExportTraceServiceRequest in protobuf ({str(exc)[:200]})"
        raise InvalidInput(message, HINT) from None
    out = DecodedSpans()
    for resource_spans in request.resource_spans:
        resource_budget = Budget(RESOURCE_VALUES)
        resource: dict[str, Any] = {}
        _pb_attributes(resource_spans.resource.attributes, resource_budget, resource, "resource.")
        for scope_spans in resource_spans.scope_spans:
            scope_budget = Budget(RESOURCE_VALUES)
            shared = dict(resource)
            scope = scope_spans.scope
            if scope.name:
                shared["otel.scope.name"] = scope.name
            if scope.version:
                shared["otel.scope.version"] = scope.version
            if len(scope.attributes):
                attributes: dict[str, Any] = {}
                _pb_attributes(scope.attributes, scope_budget, attributes)
                shared["otel.scope.attributes"] = attributes
            cut = resource_budget.cut or scope_budget.cut
            if resource_budget.long or scope_budget.long:
                shared = clip(shared, scope_budget)
                cut = True
            context = (shared, count_values(shared), cut)
            for span in scope_spans.spans:
                raw, weight = _pb_span(span, context)
                out.spans.append(raw)
                out.weights.append(weight)
    return out


def _count_on_the_wire(data: bytes) -> None:
    """Refuse (TooLarge) a request of more than :data:`MAX_REQUEST_SPANS` spans, or resource and
    scope entries, reading only the wire format's framing of those three levels (a few varints
    per span), before the parser allocates a message for each; broken framing is InvalidInput."""
    counts = [0, 0]  # resource and scope entries, spans

    def walk(start: int, end: int, depth: int) -> None:
        position = start
        while position < end:
            key, position = _read_varint(data, position, end)
            wire, number = key & 7, key >> 3
            if wire == 0:
                _, position = _read_varint(data, position, end)
            elif wire == 1 or wire == 5:
                position += 8 if wire == 1 else 4
            elif wire == 2:
                length, position = _read_varint(data, position, end)
                stop = position + length
                if stop > end:
                    break
                if number == (1 if depth == 0 else 2) and depth < 2:  # resource_spans, scope_spans
                    counts[0] += 1
                    walk(position, stop, depth + 1)
                elif depth == 2 and number == 2:  # spans
                    counts[1] += 1
                if max(counts) > MAX_REQUEST_SPANS:
                    raise too_many()
                position = stop
            else:
                break
        if position != end:
            raise InvalidInput("malformed OTLP request: not an ExportTraceServiceRequest in protobuf", HINT)

    walk(0, len(data), 0)


def _read_varint(data: bytes, position: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while position < end and shift < 64:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
    return -1, end + 1  # cut short: the caller sees the position past the end


def _pb_span(span: Any, scope: tuple[dict[str, Any], int, bool]) -> tuple[dict[str, Any], int]:
    budget = Budget(MAX_SPAN_VALUES)
    attributes: dict[str, Any] = {}
    _pb_attributes(span.attributes, budget, attributes)
    events: list[dict[str, Any]] = []
    for index, event in enumerate(span.events):
        if index >= MAX_EVENTS_READ or budget.left <= 0:
            budget.cut = True
            break
        budget.left -= 6
        event_attributes: dict[str, Any] = {}
        _pb_attributes(event.attributes, budget, event_attributes)
        if len(event.name) > MAX_TEXT:
            budget.long = True
        time_ns = event.time_unix_nano
        events.append(
            {"name": event.name, "time_ns": time_ns if time_ns <= INT64_MAX else None, "attributes": event_attributes}
        )
    links: list[dict[str, Any]] = []
    for index, link in enumerate(span.links):
        if index >= MAX_LINKS or budget.left <= 0:
            budget.cut = True
            break
        budget.left -= 6
        link_attributes: dict[str, Any] = {}
        _pb_attributes(link.attributes, budget, link_attributes)
        links.append({"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex(), "attributes": link_attributes})
    if len(span.name) > MAX_TEXT or len(span.status.message) > MAX_TEXT:
        budget.long = True
    return build_span(
        (span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex() or None),
        span.name,
        span.kind,
        (span.start_time_unix_nano, span.end_time_unix_nano),
        (span.status.code, span.status.message),
        attributes,
        events,
        links,
        (span.dropped_attributes_count, span.dropped_events_count, span.dropped_links_count),
        scope,
        budget,
    )


def _pb_attributes(pairs: Iterable[Any], budget: Budget, out: dict[str, Any], prefix: str = "") -> None:
    for pair in pairs:
        if budget.left <= 0:
            budget.cut = True
            return
        budget.left -= 1
        key = pair.key
        if len(key) > MAX_TEXT:
            budget.long = True
        out[prefix + key] = _pb_value(pair.value, budget, 0)


def _pb_value(value: Any, budget: Budget, depth: int) -> Any:
    budget.left -= 1
    which = value.WhichOneof("value")
    if which == "string_value":
        text: str = value.string_value
        if len(text) > MAX_TEXT:
            budget.long = True
        return text
    if which == "int_value" or which == "bool_value":
        return getattr(value, which)
    if which == "double_value":
        return value.double_value
    if which == "bytes_value":
        encoded = base64.b64encode(value.bytes_value).decode("ascii")
        if len(encoded) > MAX_TEXT:
            budget.long = True
        return encoded
    if which in ("array_value", "kvlist_value"):
        if depth >= MAX_VALUE_DEPTH:
            budget.cut = True
            return DEEP
        if which == "array_value":
            items: list[Any] = []
            for item in value.array_value.values:
                if budget.left <= 0:
                    budget.cut = True
                    items.append(DROPPED)
                    break
                items.append(_pb_value(item, budget, depth + 1))
            return items
        mapping: dict[str, Any] = {}
        for pair in value.kvlist_value.values:
            if budget.left <= 0:
                budget.cut = True
                mapping["keel.dropped"] = DROPPED
                break
            budget.left -= 1
            if len(pair.key) > MAX_TEXT:
                budget.long = True
            mapping[pair.key] = _pb_value(pair.value, budget, depth + 1)
        return mapping
    return None  # unset (or a dictionary index, which traces do not use)


# -- replies --------------------------------------------------------------------------------------
def export_response(rejected: int, message: str | None, media: str) -> bytes:
    """An ``ExportTraceServiceResponse``: empty when everything was taken, else ``partial_success``
    with ``rejected_spans`` and ``error_message`` (rejected 0 with a message is a warning)."""
    if not rejected and not message:
        return b"{}" if media == JSON else b""
    if media == JSON:
        partial: dict[str, Any] = {}
        if rejected:
            partial["rejectedSpans"] = str(rejected)
        if message:
            partial["errorMessage"] = message
        return json.dumps({"partialSuccess": partial}, ensure_ascii=False).encode()
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTracePartialSuccess,
        ExportTraceServiceResponse,
    )

    partial_success = ExportTracePartialSuccess(rejected_spans=rejected, error_message=message or "")
    return bytes(ExportTraceServiceResponse(partial_success=partial_success).SerializeToString())


#: HTTP status -> ``google.rpc.Code``.
_RPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 409: 10, 413: 8, 415: 3, 429: 8, 501: 12, 503: 14, 504: 4}


def rpc_code(http_status: int) -> int:
    """The ``google.rpc.Code`` of an HTTP status (INTERNAL for any other 5xx, UNKNOWN otherwise)."""
    return _RPC_CODES.get(http_status, 13 if http_status >= 500 else 2)


def status_body(http_status: int, message: str, media: str | None) -> bytes:
    """A ``google.rpc.Status`` (``code``, ``message``) for a failed request: protobuf for a
    protobuf request, JSON otherwise (as OTLP/HTTP asks)."""
    code = rpc_code(http_status)
    if media != PROTOBUF:
        return json.dumps({"code": code, "message": message}, ensure_ascii=False).encode()
    text = message.encode("utf-8", "replace")
    # google.rpc.Status: 1: int32 code (varint), 2: string message. Encoded by hand, so the
    # server needs no googleapis-common-protos for two fields.
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
