"""What the traces pages show, built from the service's records: the waterfall rows of a
trace (depth, bar position and width), each span's details (payloads shown inline when
small, loaded on click when large or stored in the object store), and the formatting of
latencies and costs.

Everything here is plain data for the templates: text stays text (the templates escape
it), and no function reads the store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from keel.core.traces import CLOCK_SKEW, TRUNCATED, Score, Span, TraceDetail
from keel.server.ui.render import fmt_duration

__all__ = [
    "INLINE_VIEW_CHARS",
    "LAZY_FIELDS",
    "BAR_SCALE",
    "Payload",
    "SpanView",
    "fmt_ms",
    "fmt_usd",
    "is_stored_payload",
    "payload_text",
    "payload_view",
    "waterfall",
]

#: A span field (inputs, outputs, attributes, events) longer than this, as text, is loaded on click.
INLINE_VIEW_CHARS = 4096
#: The span fields the payload endpoint serves.
LAZY_FIELDS = ("inputs", "outputs", "attributes", "events")
#: The waterfall bars' coordinate range: a bar's x and width are per mille of the trace's duration.
BAR_SCALE = 1000.0
_MIN_BAR = 2.0  # per mille: a span too short to see still gets a visible tick


def fmt_ms(ms: float | None) -> str:
    """A latency in milliseconds: ``0.42 ms``, ``850 ms``, ``1.45 s``, ``12.3 s``, ``4 min 05 s``; empty for None."""
    if ms is None:
        return ""
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 10_000:
        return f"{ms / 1000:.2f} s"
    return fmt_duration(ms / 1000)


def fmt_usd(cost: float | None) -> str:
    """A cost in US dollars, with the digits small amounts need (``$0.0042``, ``$0.000012``)."""
    if cost is None:
        return ""
    if cost == 0:
        return "$0"
    return f"${cost:.4f}" if cost >= 0.01 else f"${cost:.6f}".rstrip("0")


def is_stored_payload(value: Any) -> bool:
    """True for the marker of a payload kept in the object store: ``{"$object": oid, "size": n}``."""
    return isinstance(value, dict) and set(value) == {"$object", "size"}


# Without ``indent`` the json module encodes in C, ~10x faster than its indenting Python encoder:
# a 500-span page pretty-prints only the top level (a key or an item per line).
_encode = json.JSONEncoder(ensure_ascii=False, default=str, separators=(", ", ": ")).encode


def payload_text(value: Any) -> str:
    """A payload as the page shows it: text as it is, anything else as JSON with one top-level
    key (or list item) per line."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value:
        return "{\n" + ",\n".join(f"  {_encode(str(k))}: {_encode(v)}" for k, v in value.items()) + "\n}"
    if isinstance(value, list) and value:
        return "[\n" + ",\n".join(f"  {_encode(v)}" for v in value) + "\n]"
    return _encode(value)


@dataclass(frozen=True)
class Payload:
    """One field of a span's details: its text when shown inline, else (``lazy``) its size and
    the field name the payload endpoint loads."""

    which: str
    text: str | None
    size: int
    stored: bool = False  # kept in the object store (its size is in bytes)

    @property
    def lazy(self) -> bool:
        """True when the page loads this field on click."""
        return self.text is None


def payload_view(value: Any, which: str) -> Payload | None:
    """The view of one field (None when the span has nothing there)."""
    if value is None or value == {} or value == []:
        return None
    if is_stored_payload(value):
        size = value.get("size")
        return Payload(which, None, int(size) if isinstance(size, int) else 0, stored=True)
    text = payload_text(value)
    if len(text) > INLINE_VIEW_CHARS:
        return Payload(which, None, len(text.encode("utf-8")))
    return Payload(which, text, len(text))


@dataclass(frozen=True)
class SpanView:
    """One waterfall row and the details panel of its span."""

    depth: int
    span: Span
    offset_ms: float  # from the trace's start
    bar_x: float  # 0..BAR_SCALE
    bar_width: float
    fields: tuple[Payload, ...]  # inputs, outputs, attributes, events (those present)
    scores: tuple[Score, ...]
    # Formatted here rather than in the template: a 500-span page formats each value twice.
    offset: str = ""
    duration: str = ""
    cost: str = ""
    tokens: int | None = None  # input + output
    tokens_text: str = ""  # "812 in, 164 out"

    @property
    def error(self) -> bool:
        """True when the span failed."""
        return self.span.status == "error"

    @property
    def notes(self) -> list[str]:
        """What the store changed about the span (cut to its limits, clock skew)."""
        out = []
        if self.span.flags & TRUNCATED:
            out.append("truncated to its limits")
        if self.span.flags & CLOCK_SKEW:
            out.append("ended before it started (clock skew): shown with no duration")
        return out


def waterfall(detail: TraceDetail) -> list[SpanView]:
    """The trace's spans depth-first (:meth:`TraceDetail.tree`), each placed on the trace's timeline.

    The timeline runs from the earliest span start to the latest span end (a late or
    clock-skewed span can lie outside the trace's summary times).
    """
    tree = detail.tree()
    if not tree:
        return []
    start = min(span.start_ns for _, span in tree)
    end = max(span.end_ns for _, span in tree)
    total = max(end - start, 1)
    scores: dict[str, list[Score]] = {}
    for score in detail.scores:
        if score.span_id:
            scores.setdefault(score.span_id, []).append(score)
    rows = []
    for depth, span in tree:
        x = (span.start_ns - start) * BAR_SCALE / total
        width = max((span.end_ns - span.start_ns) * BAR_SCALE / total, _MIN_BAR)
        x = min(x, BAR_SCALE - width)
        fields = (
            payload_view(span.inputs, "inputs"),
            payload_view(span.outputs, "outputs"),
            payload_view(span.attributes, "attributes"),
            payload_view(span.events, "events"),
        )
        offset_ms = (span.start_ns - start) / 1e6
        tokens_in, tokens_out = span.input_tokens, span.output_tokens
        counted = tokens_in is not None or tokens_out is not None
        rows.append(
            SpanView(
                depth,
                span,
                offset_ms,
                round(x, 2),
                round(width, 2),
                tuple(f for f in fields if f is not None),
                tuple(scores.get(span.span_id, ())),
                fmt_ms(offset_ms),
                fmt_ms(span.duration_ms),
                fmt_usd(span.cost),
                (tokens_in or 0) + (tokens_out or 0) if counted else None,
                f"{tokens_in or 0} in, {tokens_out or 0} out" if counted else "",
            )
        )
    return rows
