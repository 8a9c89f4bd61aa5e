"""Spans: the record every trace source is turned into, its limits and its attribute conventions.

Three sources send spans (keel's SDK, OpenTelemetry over OTLP, MLflow's tracing
client); each turns what it has into a *raw span* dict and
:func:`normalize_span` turns that into a :class:`SpanRow`, the tuple the store
inserts. The raw span::

    {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",  # 32 hex digits (any case)
        "span_id": "00f067aa0ba902b7",                   # 16 hex digits
        "parent_id": None,                               # or 16 hex digits
        "name": "answer",
        "kind": "llm",               # optional: inferred from the attributes, else "other"
        "start_ns": 1765100000000000000, "end_ns": 1765100000250000000,
        "status": "ok",              # ok | error | unset (default: unset)
        "status_message": None,
        "attributes": {"gen_ai.request.model": "gpt-4o", ...},   # JSON scalars and lists
        "inputs": {...}, "outputs": {...},                        # any JSON value, optional
        "events": [{"name": "exception", "time_ns": ..., "attributes": {...}}],
    }

The named fields keel filters and aggregates on (model, tokens, cost, prompt
version, run, conversation, user) are read from the attributes by
:func:`span_fields`, which knows keel's own ``keel.*`` attributes, the
OpenTelemetry GenAI semantic conventions, OpenInference's and MLflow's. Every
attribute is kept as given.

Limits: a bad identifier, name or time is refused (:class:`~keel.errors.InvalidInput`
naming the field); what is merely large is kept, truncated and marked (the
``flags`` bits :data:`TRUNCATED`, :data:`CLOCK_SKEW`), so a valid span is never
lost because one of its attributes is big. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from keel.core.checks import INT64_MAX, is_unicode, short
from keel.core.trace_payloads import Payloads, payloads_of
from keel.errors import InvalidInput

__all__ = [
    "CLOCK_SKEW",
    "LINK_ATTRIBUTES",
    "LINK_PREFIXES",
    "MAX_ATTRIBUTES_BYTES",
    "MAX_EVENTS",
    "MAX_NAME_LENGTH",
    "MAX_PAYLOAD_BYTES",
    "MAX_STATUS_MESSAGE",
    "SPAN_KINDS",
    "SPAN_STATUSES",
    "TRUNCATED",
    "IngestResult",
    "MAX_BATCH_SPANS",
    "RawSpans",
    "Payloads",
    "SCORE_SOURCES",
    "Score",
    "ScoreRow",
    "Span",
    "SpanBatch",
    "SpanRow",
    "Trace",
    "TraceDetail",
    "TraceStats",
    "dumps",
    "infer_kind",
    "is_span_id",
    "is_trace_id",
    "links_of",
    "normalize_score",
    "normalize_span",
    "payload_from_attributes",
    "payloads_of",
    "span_fields",
]

SPAN_KINDS = (
    "llm",
    "chain",
    "retrieval",
    "rerank",
    "embedding",
    "tool",
    "agent",
    "prompt",
    "flag",
    "ab",
    "guardrail",
    "evaluator",
    "other",
)
SPAN_STATUSES = ("ok", "error", "unset")
_KINDS = frozenset(SPAN_KINDS)

MAX_NAME_LENGTH = 250
MAX_STATUS_MESSAGE = 4_000
MAX_TEXT_FIELD = 200  # model, prompt, run, conversation and user ids
#: Every attribute of a span, as compact JSON; past it the largest values are cut.
MAX_ATTRIBUTES_BYTES = 64 * 1024
#: One payload (inputs or outputs) as JSON; past it the payload is stored truncated and marked.
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
MAX_EVENTS = 128
MAX_ATTRIBUTE_VALUE = 8 * 1024  # characters of one attribute value kept when the whole is too big

#: ``flags`` bits of a stored span.
TRUNCATED = 1
CLOCK_SKEW = 2

_TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")
_SPAN_ID = re.compile(r"[0-9a-fA-F]{16}")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16

#: Attributes that name a version keel manages -> the lineage kind they link to.
LINK_ATTRIBUTES = {
    "keel.prompt": "prompt",
    "keel.model_version": "model",
    "keel.kb": "kb",
    "keel.config": "config",
}
#: Attribute prefixes that name a version keel manages: ``keel.flag.<key>``, ``keel.ab.<experiment>``.
LINK_PREFIXES = {"keel.flag.": "flag", "keel.ab.": "experiment"}

_MODEL_KEYS = ("keel.model", "gen_ai.response.model", "gen_ai.request.model", "llm.model_name", "mlflow.llm.model")
_INPUT_TOKEN_KEYS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
    "keel.input_tokens",
)
_OUTPUT_TOKEN_KEYS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
    "keel.output_tokens",
)
_COST_KEYS = ("keel.cost", "gen_ai.usage.cost", "llm.cost.total", "mlflow.llm.cost")
_RUN_KEYS = ("keel.run_id", "mlflow.sourceRun")
_CONVERSATION_KEYS = ("keel.conversation_id", "gen_ai.conversation.id", "session.id", "mlflow.trace.session")
_USER_KEYS = ("keel.user_id", "user.id", "enduser.id", "mlflow.trace.user")

_OPENINFERENCE_KINDS = {
    "LLM": "llm",
    "CHAIN": "chain",
    "RETRIEVER": "retrieval",
    "RERANKER": "rerank",
    "EMBEDDING": "embedding",
    "TOOL": "tool",
    "AGENT": "agent",
    "GUARDRAIL": "guardrail",
    "EVALUATOR": "evaluator",
    "PROMPT": "prompt",
}
_MLFLOW_KINDS = {
    "LLM": "llm",
    "CHAT_MODEL": "llm",
    "CHAIN": "chain",
    "AGENT": "agent",
    "TOOL": "tool",
    "RETRIEVER": "retrieval",
    "RERANKER": "rerank",
    "EMBEDDING": "embedding",
    "PARSER": "chain",
    "MEMORY": "retrieval",
    "GUARDRAIL": "guardrail",
    "EVALUATOR": "evaluator",
}
_GENAI_OPERATIONS = {
    "chat": "llm",
    "text_completion": "llm",
    "generate_content": "llm",
    "embeddings": "embedding",
    "execute_tool": "tool",
    "invoke_agent": "agent",
    "create_agent": "agent",
}

_HINT = "fix the span in the application (see docs/traces.md, 'The span record')"
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=repr)
# The C encoder _ENCODER.encode builds on each call, called directly: the same text, without the
# Python layers around it (a span encodes its attributes and payloads: this is on the write path).
_C_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)
_ENCODE_TEXT: Any = json.encoder.encode_basestring  # ensure_ascii=False's string encoder


def _encode(value: Any) -> str:
    """``_ENCODER.encode(value)``."""
    if _C_ENCODER is None or type(value) is str:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODER({}, repr, _ENCODE_TEXT, None, ":", ",", False, False, False)(value, 0))


class SpanRow(NamedTuple):
    """A span as the store inserts it (JSON fields as compact text)."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    status: str
    status_message: str | None
    start_ns: int
    end_ns: int
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost: float | None
    prompt: str | None
    run_id: str | None
    conversation_id: str | None
    user_id: str | None
    attributes: str
    inputs: str | None
    outputs: str | None
    events: str | None
    flags: int


@dataclass
class SpanBatch:
    """What one delivery writes: raw spans and scores, each with its project's name.

    - ``spans``: ``(project, raw span dict)``, normalised by the store
      (:func:`normalize_span`), so a server checks what every client sends;
    - ``scores``: ``(project, raw score dict)`` (see :func:`normalize_score`).
    """

    spans: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    scores: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.spans) + len(self.scores)

    def validate(self) -> None:
        """The batch's shape (the service contract trusts this instead of walking every value):
        at most :data:`MAX_BATCH_SPANS` items, each a ``(project name, dict)`` pair. What is in
        each dict is checked span by span when it is stored (:func:`normalize_span`), so one bad
        span is refused alone."""
        _check_pairs(self.spans, "spans")
        _check_pairs(self.scores, "scores")


#: Spans (or scores) one write takes at most.
MAX_BATCH_SPANS = 100_000


def _check_pairs(items: Any, what: str) -> None:
    if not isinstance(items, list):
        raise InvalidInput(f"a span batch's {what} must be a list, not {short(items)}", "send the batch the SDK builds")
    if len(items) > MAX_BATCH_SPANS:
        raise InvalidInput(f"{len(items):,} {what} in one batch (at most {MAX_BATCH_SPANS:,})", "send smaller batches")
    for i, item in enumerate(items):
        if (
            not isinstance(item, tuple | list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not 0 < len(item[0]) <= 200
            or not isinstance(item[1], Mapping)
        ):
            raise InvalidInput(f"{what}[{i}] must be a (project name, object) pair", "send the batch the SDK builds")


@dataclass
class RawSpans:
    """Raw spans of one project, as the OTLP and MLflow endpoints hand them to the store;
    checked like :class:`SpanBatch` (shape here, content span by span when stored)."""

    spans: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.spans)

    def validate(self) -> None:
        """At most :data:`MAX_BATCH_SPANS` objects."""
        if not isinstance(self.spans, list) or len(self.spans) > MAX_BATCH_SPANS:
            raise InvalidInput(f"at most {MAX_BATCH_SPANS:,} spans in a list per call", "send smaller batches")
        for i, raw in enumerate(self.spans):
            if not isinstance(raw, Mapping):
                raise InvalidInput(f"spans[{i}] must be an object, not {short(raw)}", "see docs/traces.md")


#: ``(trace_id, span_id | None, key, value | None, label | None, comment | None, source, at_ms)``
ScoreRow = tuple[str, "str | None", str, "float | None", "str | None", "str | None", str, int]
SCORE_SOURCES = ("user", "conversation", "evaluator", "api")
MAX_COMMENT = 4_000


def normalize_score(raw: Mapping[str, Any]) -> ScoreRow:
    """Check a score (feedback or evaluation) on a trace or one of its spans.

    ``{"trace_id", "span_id"?, "key", "value"? (number or bool), "label"? (text),
    "comment"?, "source"? (user|conversation|evaluator|api), "at"? (epoch ms)}``; a value,
    label or comment is required.
    """
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"a score must be an object, not {short(raw)}", "see keel.traces.feedback")
    trace_id = raw.get("trace_id")
    if not is_trace_id(trace_id):
        raise InvalidInput(f"score trace_id must be 32 hex digits: {short(trace_id)}", "pass the trace's id")
    span_id = raw.get("span_id") or None
    if span_id is not None and not is_span_id(span_id):
        raise InvalidInput(f"score span_id must be 16 hex digits: {short(span_id)}", "pass a span id or nothing")
    key = raw.get("key") or "feedback"
    if not isinstance(key, str) or len(key) > MAX_NAME_LENGTH or not key.strip():
        raise InvalidInput(f"score key must be 1-{MAX_NAME_LENGTH} characters: {short(key)}", "e.g. key='helpful'")
    value = raw.get("value")
    if isinstance(value, bool):
        value = 1.0 if value else 0.0
    elif value is not None:
        if not isinstance(value, int | float) or not math.isfinite(float(value)):
            raise InvalidInput(f"score value must be a finite number or a bool: {short(value)}", "e.g. value=1")
        value = float(value)
    label = _text(raw.get("label"), "label", MAX_TEXT_FIELD)
    comment = _text(raw.get("comment"), "comment", MAX_COMMENT)
    if value is None and label is None and comment is None:
        raise InvalidInput("the score is empty", "pass a value, a label or a comment")
    source = raw.get("source") or "api"
    if source not in SCORE_SOURCES:
        raise InvalidInput(f"score source must be one of {', '.join(SCORE_SOURCES)}: {short(source)}", "")
    at = raw.get("at")
    if not isinstance(at, int) or isinstance(at, bool) or not 0 <= at <= INT64_MAX:
        at = int(time.time() * 1000)
    return (str(trace_id).lower(), span_id.lower() if span_id else None, key, value, label, comment, source, at)


@dataclass(frozen=True)
class Trace:
    """A trace's summary: what lists, filters and stats read."""

    trace_id: str
    project: str
    name: str
    root_span_id: str | None
    start_ns: int
    end_ns: int
    duration_ms: float
    status: str
    span_count: int
    error_count: int
    input_tokens: int | None
    output_tokens: int | None
    cost: float | None
    model: str | None
    prompt: str | None
    run_id: str | None
    conversation_id: str | None
    user_id: str | None
    tags: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Span:
    """One stored span. ``inputs``/``outputs`` over the inline size are ``{"$object": oid, "size": n}``
    until loaded (:meth:`keel.services.traces.TraceService.payload`)."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    status: str
    status_message: str | None
    start_ns: int
    end_ns: int
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost: float | None
    prompt: str | None
    run_id: str | None
    conversation_id: str | None
    user_id: str | None
    attributes: dict[str, Any]
    inputs: Any
    outputs: Any
    events: list[dict[str, Any]]
    flags: int

    @property
    def duration_ms(self) -> float:
        """How long the span took, in milliseconds."""
        return (self.end_ns - self.start_ns) / 1e6

    @property
    def truncated(self) -> bool:
        """True when something of the span was cut to its limit."""
        return bool(self.flags & TRUNCATED)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (with ``duration_ms``)."""
        out = dataclasses.asdict(self)
        out["duration_ms"] = self.duration_ms
        return out


@dataclass(frozen=True)
class Score:
    """Feedback or an evaluation score on a trace (``span_id`` None) or one of its spans."""

    key: str
    value: float | None
    label: str | None
    comment: str | None
    source: str
    span_id: str | None
    created_at: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TraceDetail:
    """A trace with its spans (by start time), scores and the versions its spans used."""

    trace: Trace
    spans: list[Span]
    scores: list[Score]
    links: list[tuple[str, str, str]]

    def tree(self) -> list[tuple[int, Span]]:
        """Spans depth-first as ``(depth, span)``, children by start time; a span whose
        parent is not stored (a late or lost parent) is shown as a root."""
        ids = {s.span_id for s in self.spans}
        children: dict[str | None, list[Span]] = {}
        for span in self.spans:
            parent = span.parent_id if span.parent_id in ids else None
            children.setdefault(parent, []).append(span)
        out: list[tuple[int, Span]] = []
        stack = [(0, s) for s in reversed(children.get(None, []))]
        while stack:
            depth, span = stack.pop()
            out.append((depth, span))
            stack.extend((depth + 1, c) for c in reversed(children.get(span.span_id, [])))
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "trace": self.trace.to_dict(),
            "spans": [s.to_dict() for s in self.spans],
            "scores": [s.to_dict() for s in self.scores],
            "links": [{"kind": k, "id": i, "version": v} for k, i, v in self.links],
        }


@dataclass
class TraceStats:
    """Aggregates of one group: traces (or spans, grouped by model/prompt/kind)."""

    group: dict[str, Any]
    count: int = 0
    errors: int = 0
    latency_avg_ms: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    first_ns: int | None = None
    last_ns: int | None = None

    @property
    def error_rate(self) -> float:
        """Errors per item (0 when empty)."""
        return self.errors / self.count if self.count else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (with ``error_rate``)."""
        out = dataclasses.asdict(self)
        out["error_rate"] = self.error_rate
        return out


@dataclass(frozen=True)
class IngestResult:
    """What a write stored: spans kept, repeats ignored, spans refused (with the first reasons)."""

    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


def _bad(what: str, problem: str) -> InvalidInput:
    return InvalidInput(f"span {what} {problem}", _HINT)


def is_trace_id(value: Any) -> bool:
    """True for 32 hex digits that are not all zero (OpenTelemetry's invalid id)."""
    return isinstance(value, str) and bool(_TRACE_ID.fullmatch(value)) and value != _ZERO_TRACE


def is_span_id(value: Any) -> bool:
    """True for 16 hex digits that are not all zero."""
    return isinstance(value, str) and bool(_SPAN_ID.fullmatch(value)) and value != _ZERO_SPAN


def dumps(value: Any) -> str:
    """Compact JSON every database can store: NaN and infinities become null, unknown objects
    their ``repr``, lone surrogates ``\\u`` escapes; nesting past Python's limits its ``short``."""
    try:
        text = _encode(value)
    except ValueError:  # NaN / inf somewhere
        text = _ENCODER.encode(_finite(value))
    except RecursionError:
        text = _ENCODER.encode(short(value))
    if text.isascii():  # nearly always: nothing to check
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escape it (valid JSON, valid UTF-8)
        text = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=True)
    return text


def _finite(value: Any, depth: int = 0) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if depth > 64:
        return short(value)
    if isinstance(value, Mapping):
        return {str(k): _finite(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v, depth + 1) for v in value]
    return value


def _text(value: Any, what: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        if value is None:
            return None
    value = value.replace("\x00", "")[:limit]
    if value and not is_unicode(value):
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value or None


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= INT64_MAX:
        return value
    return None


def _money(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _first(attributes: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = attributes.get(key)
        if value is not None and value != "":
            return value
    return None


def infer_kind(attributes: Mapping[str, Any]) -> str:
    """The span kind its attributes say (keel, OpenInference, MLflow, GenAI conventions), else ``other``."""
    kind = attributes.get("keel.span.kind")
    if isinstance(kind, str) and kind in SPAN_KINDS:
        return kind
    for key, table in (("openinference.span.kind", _OPENINFERENCE_KINDS), ("mlflow.spanType", _MLFLOW_KINDS)):
        value = attributes.get(key)
        if isinstance(value, str):
            found = table.get(value.strip('"').upper())
            if found:
                return found
    operation = attributes.get("gen_ai.operation.name")
    if isinstance(operation, str) and operation in _GENAI_OPERATIONS:
        return _GENAI_OPERATIONS[operation]
    if _first(attributes, _MODEL_KEYS[1:]) is not None:
        return "llm"
    return "other"


_FIELDS = ("model", "input_tokens", "output_tokens", "cost", "prompt", "run_id", "conversation_id", "user_id")
#: Attribute key -> (field, rank): a field takes the value of its best-ranked key that is set.
_FIELD_KEYS: dict[str, tuple[str, int]] = {
    key: (name, rank)
    for name, keys in (
        ("model", _MODEL_KEYS),
        ("input_tokens", _INPUT_TOKEN_KEYS),
        ("output_tokens", _OUTPUT_TOKEN_KEYS),
        ("cost", _COST_KEYS),
        ("prompt", ("keel.prompt",)),
        ("run_id", _RUN_KEYS),
        ("conversation_id", _CONVERSATION_KEYS),
        ("user_id", _USER_KEYS),
        ("usage", ("mlflow.chat.tokenUsage",)),
    )
    for rank, key in enumerate(keys)
}


def span_fields(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The named fields keel reads from a span's attributes (None where absent)."""
    return dict(zip(_FIELDS, _field_values(attributes), strict=True))


_NO_FIELDS = (None,) * len(_FIELDS)


def _field_values(attributes: Mapping[str, Any]) -> tuple[Any, ...]:
    """:func:`span_fields` as a tuple in :data:`_FIELDS` order."""
    if not attributes:
        return _NO_FIELDS
    # One pass over the attributes (a span has a handful; the conventions name ~30 keys).
    found: dict[str, tuple[int, Any]] = {}
    for key, value in attributes.items():
        slot = _FIELD_KEYS.get(key)
        if slot is None or value is None or value == "":
            continue
        name, rank = slot
        have = found.get(name)
        if have is None or rank < have[0]:
            found[name] = (rank, value)
    if not found:
        return _NO_FIELDS
    first = {name: value for name, (_rank, value) in found.items()}
    tokens = first.get("usage")
    usage: Mapping[str, Any] = tokens if isinstance(tokens, Mapping) else {}
    if isinstance(tokens, str):
        try:
            parsed = json.loads(tokens) if len(tokens) < 10_000 else None
        except ValueError:
            parsed = None
        usage = parsed if isinstance(parsed, Mapping) else {}
    model = first.get("model")
    return (
        _text(model.strip('"') if isinstance(model, str) else model, "model", MAX_TEXT_FIELD),
        _count(first.get("input_tokens") or usage.get("input_tokens")),
        _count(first.get("output_tokens") or usage.get("output_tokens")),
        _money(_cost(first.get("cost"))),
        _text(first.get("prompt"), "prompt", MAX_TEXT_FIELD),
        _text(_unquote(first.get("run_id")), "run", MAX_TEXT_FIELD),
        _text(_unquote(first.get("conversation_id")), "conversation", MAX_TEXT_FIELD),
        _text(_unquote(first.get("user_id")), "user", MAX_TEXT_FIELD),
    )


def _cost(value: Any) -> Any:
    # MLflow's mlflow.llm.cost is {"input_cost", "output_cost", "total_cost"} (or its JSON text)
    if isinstance(value, str) and value[:1] == "{" and len(value) < 10_000:
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, Mapping):
        return value.get("total_cost")
    return value


def _unquote(value: Any) -> Any:
    # MLflow stores attribute values JSON-encoded ('"abc"').
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def links_of(attributes: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """The versions a span names, as ``(kind, id, version)`` lineage links.

    ``keel.prompt = "chat@1.3.0"`` -> ``("prompt", "chat", "1.3.0")``; ``keel.flag.NAME =
    VARIANT`` -> ``("flag", NAME, VARIANT)``; ``keel.ab.EXPERIMENT = ARM`` -> ``("experiment", ...)``.
    """
    out: list[tuple[str, str, str]] = []
    for key, value in attributes.items():
        kind = LINK_ATTRIBUTES.get(key)
        if kind is not None:
            text = _text(value, key, MAX_TEXT_FIELD)
            if text:
                name, _, version = text.rpartition("@") if "@" in text else (text, "", "")
                out.append((kind, name or text, version))
            continue
        for prefix, kind in LINK_PREFIXES.items():
            if key.startswith(prefix) and len(key) > len(prefix):
                text = _text(value, key, MAX_TEXT_FIELD)
                if text is not None:
                    out.append((kind, key[len(prefix) :][:MAX_TEXT_FIELD], text))
    return out


def _time(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and math.isfinite(value):
            value = int(value)
        elif isinstance(value, str) and value.isdigit() and len(value) <= 19:
            value = int(value)
        else:
            raise _bad(what, f"must be an integer of nanoseconds since the epoch, not {short(value)}")
    if not 0 <= value <= INT64_MAX:
        raise _bad(what, f"is outside 0..{INT64_MAX} nanoseconds: {value}")
    return value


def _attributes(raw: Any) -> tuple[dict[str, Any], bool]:
    if raw is None:
        return {}, False
    if not isinstance(raw, Mapping):
        raise _bad("attributes", f"must be an object, not {short(raw)}")
    if type(raw) is dict:
        for key in raw:
            if type(key) is not str or not key or len(key) > MAX_NAME_LENGTH or "\x00" in key:
                break
        else:  # the usual case: nothing to clean (the dict is only read from here on)
            return raw, False
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key:
            continue
        out[key.replace("\x00", "")[:MAX_NAME_LENGTH]] = value
    return out, False


def _clip_attributes(attributes: dict[str, Any]) -> tuple[str, bool]:
    if not attributes:
        return "{}", False
    text = dumps(attributes)
    if len(text) <= MAX_ATTRIBUTES_BYTES:
        return text, False
    clipped: dict[str, Any] = {}
    for key, value in attributes.items():
        encoded = dumps(value)
        clipped[key] = encoded[:MAX_ATTRIBUTE_VALUE] + "..." if len(encoded) > MAX_ATTRIBUTE_VALUE else value
    clipped["keel.truncated"] = True
    text = dumps(clipped)
    while len(text) > MAX_ATTRIBUTES_BYTES and len(clipped) > 1:
        # still too big: drop the largest values, keeping their keys
        largest = max((k for k in clipped if k != "keel.truncated"), key=lambda k: len(dumps(clipped[k])))
        clipped[largest] = "[dropped: too large]"
        text = dumps(clipped)
        if all(v == "[dropped: too large]" for k, v in clipped.items() if k != "keel.truncated"):
            break
    return text[: MAX_ATTRIBUTES_BYTES * 2], True


def _payload(value: Any) -> tuple[str | None, bool]:
    if value is None:
        return None, False
    text = dumps(value)
    if len(text) <= MAX_PAYLOAD_BYTES:
        return text, False
    return dumps({"keel.truncated": True, "size": len(text), "head": text[: MAX_PAYLOAD_BYTES // 2]}), True


def _events(raw: Any) -> tuple[str | None, bool]:
    if not raw:
        return None, False
    if not isinstance(raw, list | tuple):
        raise _bad("events", f"must be a list, not {short(raw)}")
    truncated = len(raw) > MAX_EVENTS
    events: list[dict[str, Any]] = []
    for event in raw[:MAX_EVENTS]:
        if isinstance(event, Mapping):
            events.append(
                {
                    "name": _text(event.get("name"), "event name", MAX_NAME_LENGTH) or "event",
                    "time_ns": event.get("time_ns") if isinstance(event.get("time_ns"), int) else None,
                    "attributes": event.get("attributes") if isinstance(event.get("attributes"), Mapping) else {},
                }
            )
    text = dumps(events)
    if len(text) > MAX_ATTRIBUTES_BYTES:
        text = dumps([{"name": e["name"], "time_ns": e["time_ns"], "attributes": {}} for e in events])
        truncated = True
    return text, truncated


def normalize_span(raw: Mapping[str, Any]) -> SpanRow:
    """Check a raw span and return its row; :class:`InvalidInput` names the bad field.

    Identifiers are lower-cased; a parent id equal to the span's own id is dropped;
    ``end_ns < start_ns`` (clock skew between hosts) is stored as ``end_ns = start_ns``
    with :data:`CLOCK_SKEW` set; oversized attributes, payloads and event lists are
    truncated with :data:`TRUNCATED` set.
    """
    if not isinstance(raw, Mapping):
        raise _bad("", f"must be an object, not {short(raw)}")
    get = raw.get
    trace_id = get("trace_id")
    if not is_trace_id(trace_id):
        raise _bad("trace_id", f"must be 32 hex digits, not all zero: {short(trace_id)}")
    span_id = get("span_id")
    if not is_span_id(span_id):
        raise _bad("span_id", f"must be 16 hex digits, not all zero: {short(span_id)}")
    parent_id = get("parent_id") or None
    if parent_id is not None and not is_span_id(parent_id):
        raise _bad("parent_id", f"must be 16 hex digits or empty: {short(parent_id)}")
    trace_id, span_id = str(trace_id).lower(), str(span_id).lower()
    parent_id = parent_id.lower() if parent_id else None
    if parent_id == span_id:
        parent_id = None
    name = get("name")
    if not isinstance(name, str) or not name.strip():
        raise _bad("name", f"must be non-empty text, not {short(name)}")
    name = _text(name, "name", MAX_NAME_LENGTH) or "span"
    start_ns = get("start_ns")
    if type(start_ns) is not int or not 0 <= start_ns <= INT64_MAX:
        start_ns = _time(start_ns, "start_ns")
    end_ns = get("end_ns")
    if end_ns is None:
        end_ns = start_ns
    elif type(end_ns) is not int or not 0 <= end_ns <= INT64_MAX:
        end_ns = _time(end_ns, "end_ns")
    flags = 0
    if end_ns < start_ns:
        end_ns, flags = start_ns, flags | CLOCK_SKEW
    status = get("status") or "unset"
    if status not in SPAN_STATUSES:
        raise _bad("status", f"must be one of {', '.join(SPAN_STATUSES)}, not {short(status)}")
    message = _text(get("status_message"), "status_message", MAX_STATUS_MESSAGE)
    attributes, _ = _attributes(get("attributes"))
    kind = get("kind") or infer_kind(attributes)
    if type(kind) is not str or kind not in _KINDS:
        raise _bad("kind", f"must be one of {', '.join(SPAN_KINDS)}, not {short(kind)}")
    model, input_tokens, output_tokens, cost, prompt, run_id, conversation_id, user_id = _field_values(attributes)
    attributes_text, cut = _clip_attributes(attributes)
    inputs, cut_in = _payload(get("inputs"))
    outputs, cut_out = _payload(get("outputs"))
    events, cut_events = _events(get("events"))
    if cut or cut_in or cut_out or cut_events or attributes.get("keel.truncated") is True:
        flags |= TRUNCATED  # keel.truncated: the source cut something before sending (see keel.integrations.otlp)
    return SpanRow(
        trace_id,
        span_id,
        parent_id,
        name,
        kind,
        status,
        message,
        start_ns,
        end_ns,
        model,
        input_tokens,
        output_tokens,
        cost,
        prompt,
        run_id,
        conversation_id,
        user_id,
        attributes_text,
        inputs,
        outputs,
        events,
        flags,
    )


def payload_from_attributes(attributes: Mapping[str, Any], which: str) -> Any:
    """Inputs (``which="inputs"``) or outputs a span's attributes carry (OpenInference, MLflow, GenAI);
    see :func:`payloads_of`, which also reads them from events."""
    found = payloads_of(attributes)
    return found.inputs if which == "inputs" else found.outputs
