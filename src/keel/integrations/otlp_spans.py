"""What the OTLP decoders (:mod:`keel.integrations.otlp`, :mod:`keel.integrations.otlp_json`) share:
the limits, the span a decoder hands on (:func:`build_span`) and its value budget. Pure."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from keel.core.checks import INT64_MAX
from keel.core.trace_payloads import payloads_of
from keel.core.traces import infer_kind
from keel.errors import InvalidInput, TooLarge

__all__ = [
    "BATCH_SPANS",
    "BATCH_VALUES",
    "DEEP",
    "DROPPED",
    "HINT",
    "MAX_EVENTS_READ",
    "MAX_LINKS",
    "MAX_REQUEST_SPANS",
    "MAX_SPAN_VALUES",
    "MAX_TEXT",
    "MAX_VALUE_DEPTH",
    "OTEL_SPAN_KINDS",
    "OTEL_STATUSES",
    "RESOURCE_VALUES",
    "Budget",
    "DecodedSpans",
    "build_span",
    "clip",
    "count_values",
    "malformed",
    "too_many",
    "wire_time",
]

#: The most spans (and, apart, resource and scope entries) one request may hold (413 past it):
#: counted on the wire before protobuf allocates them (an empty span is 2 bytes, its message ~180).
MAX_REQUEST_SPANS = 100_000
#: Text longer than this (characters) is cut and the span marked.
MAX_TEXT = 1 << 19
#: Attribute values nested deeper than this (arrays, key-value lists) are cut and the span marked.
MAX_VALUE_DEPTH = 12
#: Values one span may hold (attributes, event and link attributes); past it they are dropped, marked.
MAX_SPAN_VALUES = 50_000
RESOURCE_VALUES = 10_000  # the resource's and the scope's attributes, shared by their spans
MAX_EVENTS_READ = 1_000  # read per span (the store keeps 128 and marks the rest)
MAX_LINKS = 128
#: One call of the store takes at most this many spans / values (the service contract's bounds).
BATCH_SPANS = 10_000
BATCH_VALUES = 1_000_000

OTEL_SPAN_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
OTEL_STATUSES = {1: "ok", 2: "error"}
DROPPED = "[dropped: too many values]"
DEEP = "[dropped: nested too deeply]"
HINT = "send an OTLP ExportTraceServiceRequest (see docs/traces.md, 'OpenTelemetry')"


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


class Budget:
    """The values one span (or one resource) may still hold, and whether something was cut."""

    __slots__ = ("cut", "left", "long", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.left = size
        self.cut = False  # something was dropped: the span is marked
        self.long = False  # some text is over MAX_TEXT: cut it once the payloads are read

    @property
    def used(self) -> int:
        """Values taken so far."""
        return self.size - max(self.left, 0)


def malformed(where: str, problem: str) -> InvalidInput:
    """The 400 of a request that is not OTLP, naming where (``resourceSpans[0]...``)."""
    return InvalidInput(f"malformed OTLP request: {where} {problem}", HINT)


def too_many() -> TooLarge:
    """The 413 of a request of more than :data:`MAX_REQUEST_SPANS` spans."""
    return TooLarge(
        f"the OTLP request holds more than {MAX_REQUEST_SPANS:,} spans (or resource/scope entries)",
        "export smaller batches: OTEL_BSP_MAX_EXPORT_BATCH_SIZE of the BatchSpanProcessor",
    )


def wire_time(value: int) -> int | str:
    """A time in nanoseconds as the raw span takes it: beyond int64 as text, so the store refuses
    that span by name instead of the argument check refusing the whole request."""
    return value if value <= INT64_MAX else str(value)


def clip(value: Any, budget: Budget, depth: int = 0) -> Any:
    """``value`` with text over :data:`MAX_TEXT` cut (marking the budget)."""
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            budget.cut = True
            return value[:MAX_TEXT]
        return value
    if depth > 64:  # payloads are bounded well below this; keep the walk bounded all the same
        return value
    if isinstance(value, dict):
        return {clip(k, budget, depth + 1): clip(v, budget, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [clip(v, budget, depth + 1) for v in value]
    return value


def count_values(value: Any) -> int:
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


def build_span(
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
    budget: Budget,
) -> tuple[dict[str, Any], int]:
    """The raw span and its weight (values it holds), from what either decoder read: the scope's
    shared attributes merged, OpenTelemetry's kind, links and dropped counts as ``otel.*``
    attributes, the inputs/outputs read by convention (and their attributes and events taken
    out), text over :data:`MAX_TEXT` cut, and ``keel.truncated`` set when anything was cut."""
    shared, shared_weight, shared_cut = scope
    for key, value in shared.items():
        attributes.setdefault(key, value)
    if kind in OTEL_SPAN_KINDS:
        attributes.setdefault("otel.span_kind", OTEL_SPAN_KINDS[kind])
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
        "start_ns": wire_time(times[0]),
        "end_ns": wire_time(times[1]),
        "status": OTEL_STATUSES.get(code, "unset"),
        "status_message": message or None,
        "attributes": attributes,
        "events": events,
    }
    weight = 40 + budget.used + shared_weight
    for side, value in (("inputs", payloads.inputs), ("outputs", payloads.outputs)):
        if value is not None:
            raw[side] = value
            weight += count_values(value)
    if budget.long:
        for key in ("name", "status_message", "attributes", "events", "inputs", "outputs"):
            if raw.get(key) is not None:
                raw[key] = clip(raw[key], budget)
    if budget.cut or shared_cut:
        raw["attributes"]["keel.truncated"] = True
    return raw, weight
