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
  is stopped as it inflates) is :class:`~keel.errors.TooLarge`; anything malformed is
  :class:`~keel.errors.InvalidInput` naming where. What is merely large is cut and marked
  (``keel.truncated``): text past :data:`MAX_TEXT`, values nested deeper than
  :data:`MAX_VALUE_DEPTH`, more than :data:`MAX_SPAN_VALUES` values in one span. A span with a
  bad id or time is not refused here: the store refuses that span alone and the reply counts it.

The replies (:func:`export_response`, :func:`status_body`) follow OTLP/HTTP: an
``ExportTraceServiceResponse`` (with ``partial_success`` when spans were refused) and, for a
failure, a ``google.rpc.Status``, each in the request's encoding. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from keel.core.checks import INT64_MAX, INT64_MIN
from keel.core.trace_payloads import payloads_of
from keel.core.traces import infer_kind
from keel.errors import InvalidInput, TooLarge

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
#: The most spans (and, apart, resource and scope entries) one request may hold (413 past it):
#: counted on the wire before protobuf allocates them (an empty span is 2 bytes, its message ~180).
MAX_REQUEST_SPANS = 100_000
#: Text longer than this (characters) is cut and the span marked.
MAX_TEXT = 1 << 19
#: Attribute values nested deeper than this (arrays, key-value lists) are cut and the span marked.
MAX_VALUE_DEPTH = 12
#: Values one span may hold (attributes, event and link attributes); past it they are dropped, marked.
MAX_SPAN_VALUES = 50_000
_RESOURCE_VALUES = 10_000  # the resource's and the scope's attributes, shared by their spans
_MAX_EVENTS = 1_000  # read per span (the store keeps 128 and marks the rest)
_MAX_LINKS = 128
#: One call of the store takes at most this many spans / values (the service contract's bounds).
BATCH_SPANS = 10_000
BATCH_VALUES = 1_000_000

_MEDIA = {
    "application/x-protobuf": PROTOBUF,
    "application/protobuf": PROTOBUF,
    "application/vnd.google.protobuf": PROTOBUF,
    "application/json": JSON,
}
_SPAN_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_SPAN_KIND_NAMES = {f"SPAN_KIND_{v.upper()}": k for k, v in _SPAN_KINDS.items()} | {"SPAN_KIND_UNSPECIFIED": 0}
_STATUSES = {1: "ok", 2: "error"}
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_UINT64_MAX = (1 << 64) - 1
_DROPPED = "[dropped: too many values]"
_DEEP = "[dropped: nested too deeply]"
_HINT = "send an OTLP ExportTraceServiceRequest (see docs/traces.md, 'OpenTelemetry')"


@dataclass
class DecodedSpans:
    """The raw spans of one request, with the number of values each holds (for :meth:`batches`)."""

    spans: list[dict[str, Any]] = field(default_factory=list)
    weights: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.spans)

    def batches(self, max_values: int = BATCH_VALUES, max_spans: int = BATCH_SPANS) -> Iterator[list[dict[str, Any]]]:
        """The spans in runs of at most ``max_spans`` spans and (but for a single span) ``max_values`` values."""
        batch: list[dict[str, Any]] = []
        values = 0
        for span, weight in zip(self.spans, self.weights, strict=True):
            if batch and (len(batch) >= max_spans or values + weight > max_values):
                yield batch
                batch, values = [], 0
            batch.append(span)
            values += weight
        if batch:
            yield batch


class _Budget:
    """The values one span (or one resource) may still hold, and whether something was cut."""

    __slots__ = ("cut", "left", "long", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.left = size
        self.cut = False  # something was dropped: the span is marked
        self.long = False  # some text is over MAX_TEXT: cut it once the payloads are read

    @property
    def used(self) -> int:
        return self.size - max(self.left, 0)


def _malformed(where: str, problem: str) -> InvalidInput:
    return InvalidInput(f"malformed OTLP request: {where} {problem}", _HINT)


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
            raise InvalidInput(f"the {encoding} body cannot be decompressed: {exc}", _HINT) from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise _too_large(limit)
        if not inflater.eof:
            raise InvalidInput(f"the {encoding} body is cut short", _HINT)
        data = inflater.unused_data  # gzip: the next member of a multi-member body
        if encoding == "deflate" and data:
            raise InvalidInput("the deflate body has bytes after its end", _HINT)
    return bytes(out)


def _too_large(limit: int) -> TooLarge:
    return TooLarge(
        f"the OTLP request body is over {limit:,} bytes (decompressed)",
        "export smaller batches: OTEL_BSP_MAX_EXPORT_BATCH_SIZE of the BatchSpanProcessor",
    )


def _too_many() -> TooLarge:
    return TooLarge(
        f"the OTLP request holds more than {MAX_REQUEST_SPANS:,} spans (or resource/scope entries)",
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


# -- shared -----------------------------------------------------------------------------------------
def _time(value: int) -> int | str:
    # Beyond int64 the store refuses the span (by name), not the whole request.
    return value if value <= INT64_MAX else str(value)


def _clip(value: Any, budget: _Budget, depth: int = 0) -> Any:
    """``value`` with text over :data:`MAX_TEXT` cut (marking the budget)."""
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            budget.cut = True
            return value[:MAX_TEXT]
        return value
    if depth > 64:  # payloads are bounded well below this; keep the walk bounded all the same
        return value
    if isinstance(value, dict):
        return {_clip(k, budget, depth + 1): _clip(v, budget, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_clip(v, budget, depth + 1) for v in value]
    return value


def _weight(value: Any) -> int:
    """How many values ``value`` holds (what the service contract counts)."""
    count = 0
    stack = [value]
    while stack:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            count += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _span(
    ids: tuple[str, str, str | None],
    name: str,
    kind: int,
    times: tuple[int, int],
    status: tuple[int, str],
    attributes: dict[str, Any],
    events: list[dict[str, Any]],
    links: list[dict[str, Any]],
    dropped: tuple[int, int, int],
    scope: tuple[dict[str, Any], int, bool],
    budget: _Budget,
) -> tuple[dict[str, Any], int]:
    """The raw span and its weight, from what either decoder read."""
    shared, shared_weight, shared_cut = scope
    for key, value in shared.items():
        attributes.setdefault(key, value)
    if kind in _SPAN_KINDS:
        attributes.setdefault("otel.span_kind", _SPAN_KINDS[kind])
    if links:
        attributes.setdefault("otel.links", links)
    for key, count in zip(("attributes", "events", "links"), dropped, strict=True):
        if count:
            attributes.setdefault(f"otel.dropped_{key}_count", count)
    payloads = payloads_of(attributes, events)
    for key in payloads.attributes:
        attributes.pop(key, None)
    if payloads.events:
        events = [e for i, e in enumerate(events) if i not in payloads.events]
    code, message = status
    raw: dict[str, Any] = {
        "trace_id": ids[0],
        "span_id": ids[1],
        "parent_id": ids[2],
        "name": name,
        "kind": infer_kind(attributes),
        "start_ns": _time(times[0]),
        "end_ns": _time(times[1]),
        "status": _STATUSES.get(code, "unset"),
        "status_message": message or None,
        "attributes": attributes,
        "events": events,
    }
    weight = 40 + budget.used + shared_weight
    for side, value in (("inputs", payloads.inputs), ("outputs", payloads.outputs)):
        if value is not None:
            raw[side] = value
            weight += _weight(value)
    if budget.long:
        for key in ("name", "status_message", "attributes", "events", "inputs", "outputs"):
            if raw.get(key) is not None:
                raw[key] = _clip(raw[key], budget)
    if budget.cut or shared_cut:
        raw["attributes"]["keel.truncated"] = True
    return raw, weight


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
        raise InvalidInput(message, _HINT) from None
    out = DecodedSpans()
    for resource_spans in request.resource_spans:
        resource_budget = _Budget(_RESOURCE_VALUES)
        resource: dict[str, Any] = {}
        _pb_attributes(resource_spans.resource.attributes, resource_budget, resource, "resource.")
        for scope_spans in resource_spans.scope_spans:
            scope_budget = _Budget(_RESOURCE_VALUES)
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
                shared = _clip(shared, scope_budget)
                cut = True
            context = (shared, _weight(shared), cut)
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
                    raise _too_many()
                position = stop
            else:
                break
        if position != end:
            raise InvalidInput("malformed OTLP request: not an ExportTraceServiceRequest in protobuf", _HINT)

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
    budget = _Budget(MAX_SPAN_VALUES)
    attributes: dict[str, Any] = {}
    _pb_attributes(span.attributes, budget, attributes)
    events: list[dict[str, Any]] = []
    for index, event in enumerate(span.events):
        if index >= _MAX_EVENTS or budget.left <= 0:
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
        if index >= _MAX_LINKS or budget.left <= 0:
            budget.cut = True
            break
        budget.left -= 6
        link_attributes: dict[str, Any] = {}
        _pb_attributes(link.attributes, budget, link_attributes)
        links.append({"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex(), "attributes": link_attributes})
    if len(span.name) > MAX_TEXT or len(span.status.message) > MAX_TEXT:
        budget.long = True
    return _span(
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


def _pb_attributes(pairs: Iterable[Any], budget: _Budget, out: dict[str, Any], prefix: str = "") -> None:
    for pair in pairs:
        if budget.left <= 0:
            budget.cut = True
            return
        budget.left -= 1
        key = pair.key
        if len(key) > MAX_TEXT:
            budget.long = True
        out[prefix + key] = _pb_value(pair.value, budget, 0)


def _pb_value(value: Any, budget: _Budget, depth: int) -> Any:
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
            return _DEEP
        if which == "array_value":
            items: list[Any] = []
            for item in value.array_value.values:
                if budget.left <= 0:
                    budget.cut = True
                    items.append(_DROPPED)
                    break
                items.append(_pb_value(item, budget, depth + 1))
            return items
        mapping: dict[str, Any] = {}
        for pair in value.kvlist_value.values:
            if budget.left <= 0:
                budget.cut = True
                mapping["keel.dropped"] = _DROPPED
                break
            budget.left -= 1
            if len(pair.key) > MAX_TEXT:
                budget.long = True
            mapping[pair.key] = _pb_value(pair.value, budget, depth + 1)
        return mapping
    return None  # unset (or a dictionary index, which traces do not use)


# -- OTLP JSON ------------------------------------------------------------------------------------
def decode_json(data: bytes) -> DecodedSpans:
    """An ``ExportTraceServiceRequest`` in OTLP JSON as raw spans (InvalidInput if malformed)."""
    try:
        request = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"malformed OTLP request: the body is not JSON ({str(exc)[:200]})", _HINT) from None
    if not isinstance(request, dict):
        raise _malformed("the body", "must be a JSON object")
    out = DecodedSpans()
    entries = 0
    for r, resource_spans in enumerate(_j_list(request, "resourceSpans", "resource_spans", "")):
        where = f"resourceSpans[{r}]"
        entries += 1
        if entries > MAX_REQUEST_SPANS:
            raise _too_many()
        resource_spans = _j_object(resource_spans, where)
        resource_budget = _Budget(_RESOURCE_VALUES)
        resource: dict[str, Any] = {}
        resource_object = _j_object(resource_spans.get("resource"), f"{where}.resource")
        _j_attributes(resource_object, resource_budget, resource, f"{where}.resource", "resource.")
        for s, scope_spans in enumerate(_j_list(resource_spans, "scopeSpans", "scope_spans", where)):
            at = f"{where}.scopeSpans[{s}]"
            entries += 1
            spans = _j_list(_j_object(scope_spans, at), "spans", "spans", at)
            if max(entries, len(out) + len(spans)) > MAX_REQUEST_SPANS:
                raise _too_many()
            scope_spans = _j_object(scope_spans, at)
            scope_budget = _Budget(_RESOURCE_VALUES)
            shared = dict(resource)
            scope = _j_object(scope_spans.get("scope"), f"{at}.scope")
            for key in ("name", "version"):
                text = _j_text(scope.get(key), f"{at}.scope.{key}", scope_budget)
                if text:
                    shared[f"otel.scope.{key}"] = text
            attributes: dict[str, Any] = {}
            _j_attributes(scope, scope_budget, attributes, f"{at}.scope")
            if attributes:
                shared["otel.scope.attributes"] = attributes
            cut = resource_budget.cut or scope_budget.cut
            if resource_budget.long or scope_budget.long:
                shared = _clip(shared, scope_budget)
                cut = True
            context = (shared, _weight(shared), cut)
            for n, span in enumerate(spans):
                raw, weight = _j_span(_j_object(span, f"{at}.spans[{n}]"), f"{at}.spans[{n}]", context)
                out.spans.append(raw)
                out.weights.append(weight)
    return out


def _j_span(span: dict[str, Any], where: str, scope: tuple[dict[str, Any], int, bool]) -> tuple[dict[str, Any], int]:
    budget = _Budget(MAX_SPAN_VALUES)
    attributes: dict[str, Any] = {}
    _j_attributes(span, budget, attributes, where)
    events: list[dict[str, Any]] = []
    for index, event in enumerate(_j_list(span, "events", "events", where)):
        if index >= _MAX_EVENTS or budget.left <= 0:
            budget.cut = True
            break
        at = f"{where}.events[{index}]"
        event = _j_object(event, at)
        budget.left -= 6
        event_attributes: dict[str, Any] = {}
        _j_attributes(event, budget, event_attributes, at)
        time_ns = _j_uint64(_j_get(event, "timeUnixNano", "time_unix_nano"), f"{at}.timeUnixNano")
        events.append(
            {
                "name": _j_text(event.get("name"), f"{at}.name", budget),
                "time_ns": time_ns if time_ns <= INT64_MAX else None,
                "attributes": event_attributes,
            }
        )
    links: list[dict[str, Any]] = []
    for index, link in enumerate(_j_list(span, "links", "links", where)):
        if index >= _MAX_LINKS or budget.left <= 0:
            budget.cut = True
            break
        at = f"{where}.links[{index}]"
        link = _j_object(link, at)
        budget.left -= 6
        link_attributes: dict[str, Any] = {}
        _j_attributes(link, budget, link_attributes, at)
        links.append(
            {
                "trace_id": _j_id(_j_get(link, "traceId", "trace_id"), 16, f"{at}.traceId"),
                "span_id": _j_id(_j_get(link, "spanId", "span_id"), 8, f"{at}.spanId"),
                "attributes": link_attributes,
            }
        )
    status = _j_object(span.get("status"), f"{where}.status")
    dropped = tuple(
        _j_uint64(_j_get(span, f"dropped{k.title()}Count", f"dropped_{k}_count"), f"{where}.dropped{k.title()}Count")
        for k in ("attributes", "events", "links")
    )
    return _span(
        (
            _j_id(_j_get(span, "traceId", "trace_id"), 16, f"{where}.traceId"),
            _j_id(_j_get(span, "spanId", "span_id"), 8, f"{where}.spanId"),
            _j_id(_j_get(span, "parentSpanId", "parent_span_id"), 8, f"{where}.parentSpanId") or None,
        ),
        _j_text(span.get("name"), f"{where}.name", budget),
        _j_enum(span.get("kind"), _SPAN_KIND_NAMES, f"{where}.kind"),
        (
            _j_uint64(_j_get(span, "startTimeUnixNano", "start_time_unix_nano"), f"{where}.startTimeUnixNano"),
            _j_uint64(_j_get(span, "endTimeUnixNano", "end_time_unix_nano"), f"{where}.endTimeUnixNano"),
        ),
        (
            _j_enum(status.get("code"), _STATUS_NAMES, f"{where}.status.code"),
            _j_text(status.get("message"), f"{where}.status.message", budget),
        ),
        attributes,
        events,
        links,
        (dropped[0], dropped[1], dropped[2]),
        scope,
        budget,
    )


def _j_get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _j_object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _malformed(where, f"must be an object, not {type(value).__name__}")
    return value


def _j_list(obj: dict[str, Any], camel: str, snake: str, where: str) -> list[Any]:
    value = _j_get(obj, camel, snake)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _malformed(f"{where}.{camel}".lstrip("."), f"must be a list, not {type(value).__name__}")
    return value


def _j_text(value: Any, where: str, budget: _Budget) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _malformed(where, f"must be text, not {type(value).__name__}")
    if len(value) > MAX_TEXT:
        budget.long = True
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, from a \ud800 escape
            value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _j_int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise _malformed(where, "must be an integer, not a boolean")
    number: Any = value
    if isinstance(value, str):
        try:
            number = int(value.strip()) if len(value) <= 40 else None
        except ValueError:
            number = None
    elif isinstance(value, float):
        number = int(value) if math.isfinite(value) and value.is_integer() else None
    if not isinstance(number, int) or not low <= number <= high:
        raise _malformed(where, f"must be an integer in {low}..{high}, not {str(value)[:40]!r}")
    return number


def _j_uint64(value: Any, where: str) -> int:
    return 0 if value is None else _j_int(value, where, 0, _UINT64_MAX)


def _j_enum(value: Any, names: Mapping[str, int], where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, str) and value in names:
        return names[value]
    return _j_int(value, where, INT64_MIN, INT64_MAX)


def _j_id(value: Any, size: int, where: str) -> str:
    """An id as lowercase hex: OTLP JSON sends hex; base64 (protobuf's own JSON) is read too.
    Text that is neither is passed on, for the store to refuse that span by name."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise _malformed(where, f"must be hex text, not {type(value).__name__}")
    if len(value) == 2 * size:
        try:
            bytes.fromhex(value)
            return value.lower()
        except ValueError:
            pass
    if len(value) <= 4 * size:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == size:
            return raw.hex()
    return value[:80]


def _j_attributes(obj: dict[str, Any], budget: _Budget, out: dict[str, Any], where: str, prefix: str = "") -> None:
    for index, pair in enumerate(_j_list(obj, "attributes", "attributes", where)):
        if budget.left <= 0:
            budget.cut = True
            return
        at = f"{where}.attributes[{index}]"
        pair = _j_object(pair, at)
        budget.left -= 1
        key = _j_text(pair.get("key"), f"{at}.key", budget)
        out[prefix + key] = _j_value(pair.get("value"), budget, 0, f"{at}.value")


_ANY_FIELDS = {
    "stringValue": "string",
    "string_value": "string",
    "boolValue": "bool",
    "bool_value": "bool",
    "intValue": "int",
    "int_value": "int",
    "doubleValue": "double",
    "double_value": "double",
    "arrayValue": "array",
    "array_value": "array",
    "kvlistValue": "kvlist",
    "kvlist_value": "kvlist",
    "bytesValue": "bytes",
    "bytes_value": "bytes",
}
_SPECIAL_DOUBLES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _j_value(value: Any, budget: _Budget, depth: int, where: str) -> Any:  # noqa: PLR0911 - one answer per kind
    if value is None:
        return None
    value = _j_object(value, where)
    budget.left -= 1
    for key, item in value.items():
        which = _ANY_FIELDS.get(key)
        if which is None or item is None:
            continue
        at = f"{where}.{key}"
        if which == "string":
            return _j_text(item, at, budget)
        if which == "bool":
            if not isinstance(item, bool):
                raise _malformed(at, "must be true or false")
            return item
        if which == "int":
            return _j_int(item, at, INT64_MIN, INT64_MAX)
        if which == "double":
            return _j_double(item, at)
        if which == "bytes":
            if not isinstance(item, str):
                raise _malformed(at, "must be base64 text")
            try:
                decoded = base64.b64decode(item.replace("-", "+").replace("_", "/"), validate=True)
            except (binascii.Error, ValueError):
                raise _malformed(at, "must be base64 text") from None
            encoded = base64.b64encode(decoded).decode("ascii")
            if len(encoded) > MAX_TEXT:
                budget.long = True
            return encoded
        if depth >= MAX_VALUE_DEPTH:
            budget.cut = True
            return _DEEP
        values = _j_list(_j_object(item, at), "values", "values", at)
        if which == "array":
            items: list[Any] = []
            for index, element in enumerate(values):
                if budget.left <= 0:
                    budget.cut = True
                    items.append(_DROPPED)
                    break
                items.append(_j_value(element, budget, depth + 1, f"{at}.values[{index}]"))
            return items
        mapping: dict[str, Any] = {}
        for index, pair in enumerate(values):
            if budget.left <= 0:
                budget.cut = True
                mapping["keel.dropped"] = _DROPPED
                break
            pair_at = f"{at}.values[{index}]"
            pair = _j_object(pair, pair_at)
            budget.left -= 1
            mapping[_j_text(pair.get("key"), f"{pair_at}.key", budget)] = _j_value(
                pair.get("value"), budget, depth + 1, f"{pair_at}.value"
            )
        return mapping
    return None


def _j_double(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise _malformed(where, "must be a number")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        if value in _SPECIAL_DOUBLES:
            return _SPECIAL_DOUBLES[value]
        try:
            return float(value) if len(value) <= 40 else math.nan
        except ValueError:
            pass
    raise _malformed(where, f"must be a number, not {str(value)[:40]!r}")


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
