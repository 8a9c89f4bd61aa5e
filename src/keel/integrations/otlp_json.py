"""OTLP JSON (``application/json``) to keel's raw spans: ids as hex (base64 read too), enums as
numbers or names, 64-bit integers as strings or numbers, camelCase or snake_case field names,
unknown fields ignored. Anything of the wrong type is :class:`~keel.errors.InvalidInput` naming
where (``resourceSpans[0].scopeSpans[0].spans[3].attributes[1].value.intValue``). Pure."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from typing import Any

from keel.core.checks import INT64_MAX, INT64_MIN
from keel.errors import InvalidInput
from keel.integrations.otlp_spans import (
    DEEP,
    DROPPED,
    HINT,
    MAX_EVENTS_READ,
    MAX_LINKS,
    MAX_REQUEST_SPANS,
    MAX_SPAN_VALUES,
    MAX_TEXT,
    MAX_VALUE_DEPTH,
    OTEL_SPAN_KINDS,
    RESOURCE_VALUES,
    Budget,
    DecodedSpans,
    build_span,
    clip,
    count_values,
    malformed,
    too_many,
)

__all__ = ["decode_json"]

_SPAN_KIND_NAMES = {f"SPAN_KIND_{v.upper()}": k for k, v in OTEL_SPAN_KINDS.items()} | {"SPAN_KIND_UNSPECIFIED": 0}
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_UINT64_MAX = (1 << 64) - 1


def decode_json(data: bytes) -> DecodedSpans:
    """An ``ExportTraceServiceRequest`` in OTLP JSON as raw spans (InvalidInput if malformed)."""
    try:
        request = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"malformed OTLP request: the body is not JSON ({str(exc)[:200]})", HINT) from None
    if not isinstance(request, dict):
        raise malformed("the body", "must be a JSON object")
    out = DecodedSpans()
    entries = 0
    for r, resource_spans in enumerate(_j_list(request, "resourceSpans", "resource_spans", "")):
        where = f"resourceSpans[{r}]"
        entries += 1
        if entries > MAX_REQUEST_SPANS:
            raise too_many()
        resource_spans = _j_object(resource_spans, where)
        resource_budget = Budget(RESOURCE_VALUES)
        resource: dict[str, Any] = {}
        resource_object = _j_object(resource_spans.get("resource"), f"{where}.resource")
        _j_attributes(resource_object, resource_budget, resource, f"{where}.resource", "resource.")
        for s, scope_spans in enumerate(_j_list(resource_spans, "scopeSpans", "scope_spans", where)):
            at = f"{where}.scopeSpans[{s}]"
            entries += 1
            spans = _j_list(_j_object(scope_spans, at), "spans", "spans", at)
            if max(entries, len(out) + len(spans)) > MAX_REQUEST_SPANS:
                raise too_many()
            scope_spans = _j_object(scope_spans, at)
            scope_budget = Budget(RESOURCE_VALUES)
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
                shared = clip(shared, scope_budget)
                cut = True
            context = (shared, count_values(shared), cut)
            for n, span in enumerate(spans):
                raw, weight = _j_span(_j_object(span, f"{at}.spans[{n}]"), f"{at}.spans[{n}]", context)
                out.spans.append(raw)
                out.weights.append(weight)
    return out


def _j_span(span: dict[str, Any], where: str, scope: tuple[dict[str, Any], int, bool]) -> tuple[dict[str, Any], int]:
    budget = Budget(MAX_SPAN_VALUES)
    attributes: dict[str, Any] = {}
    _j_attributes(span, budget, attributes, where)
    events: list[dict[str, Any]] = []
    for index, event in enumerate(_j_list(span, "events", "events", where)):
        if index >= MAX_EVENTS_READ or budget.left <= 0:
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
        if index >= MAX_LINKS or budget.left <= 0:
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
    return build_span(
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
        raise malformed(where, f"must be an object, not {type(value).__name__}")
    return value


def _j_list(obj: dict[str, Any], camel: str, snake: str, where: str) -> list[Any]:
    value = _j_get(obj, camel, snake)
    if value is None:
        return []
    if not isinstance(value, list):
        raise malformed(f"{where}.{camel}".lstrip("."), f"must be a list, not {type(value).__name__}")
    return value


def _j_text(value: Any, where: str, budget: Budget) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise malformed(where, f"must be text, not {type(value).__name__}")
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
        raise malformed(where, "must be an integer, not a boolean")
    number: Any = value
    if isinstance(value, str):
        try:
            number = int(value.strip()) if len(value) <= 40 else None
        except ValueError:
            number = None
    elif isinstance(value, float):
        number = int(value) if math.isfinite(value) and value.is_integer() else None
    if not isinstance(number, int) or not low <= number <= high:
        raise malformed(where, f"must be an integer in {low}..{high}, not {str(value)[:40]!r}")
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
        raise malformed(where, f"must be hex text, not {type(value).__name__}")
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


def _j_attributes(obj: dict[str, Any], budget: Budget, out: dict[str, Any], where: str, prefix: str = "") -> None:
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


def _j_value(value: Any, budget: Budget, depth: int, where: str) -> Any:  # noqa: PLR0911 - one answer per kind
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
                raise malformed(at, "must be true or false")
            return item
        if which == "int":
            return _j_int(item, at, INT64_MIN, INT64_MAX)
        if which == "double":
            return _j_double(item, at)
        if which == "bytes":
            if not isinstance(item, str):
                raise malformed(at, "must be base64 text")
            try:
                decoded = base64.b64decode(item.replace("-", "+").replace("_", "/"), validate=True)
            except (binascii.Error, ValueError):
                raise malformed(at, "must be base64 text") from None
            encoded = base64.b64encode(decoded).decode("ascii")
            if len(encoded) > MAX_TEXT:
                budget.long = True
            return encoded
        if depth >= MAX_VALUE_DEPTH:
            budget.cut = True
            return DEEP
        values = _j_list(_j_object(item, at), "values", "values", at)
        if which == "array":
            items: list[Any] = []
            for index, element in enumerate(values):
                if budget.left <= 0:
                    budget.cut = True
                    items.append(DROPPED)
                    break
                items.append(_j_value(element, budget, depth + 1, f"{at}.values[{index}]"))
            return items
        mapping: dict[str, Any] = {}
        for index, pair in enumerate(values):
            if budget.left <= 0:
                budget.cut = True
                mapping["keel.dropped"] = DROPPED
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
        raise malformed(where, "must be a number")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        if value in _SPECIAL_DOUBLES:
            return _SPECIAL_DOUBLES[value]
        try:
            return float(value) if len(value) <= 40 else math.nan
        except ValueError:
            pass
    raise malformed(where, f"must be a number, not {str(value)[:40]!r}")
