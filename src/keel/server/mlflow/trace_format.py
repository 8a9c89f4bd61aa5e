"""MLflow's trace shapes and keel's span record, both ways (pure: no I/O).

**In.** The MLflow client logs a finished trace in two requests: its ``TraceInfoV3``
(``POST /api/3.0/mlflow/traces``), then its spans as the ``traces.json`` artifact
(``{"spans": [span.to_dict(), ...]}``). :func:`check_trace_info` checks the first,
:func:`raw_spans` turns the second, with the first, into keel raw spans
(:func:`keel.core.traces.normalize_span` checks those):

- ids: ``tr-<32 hex>`` is keel's trace id ``<32 hex>``; span ids are base64 of 8 bytes
  (or 16 hex digits);
- attribute values, which MLflow stores JSON-encoded (``'"CHAIN"'``), are decoded;
  ``mlflow.spanInputs`` / ``mlflow.spanOutputs`` become the span's inputs and outputs
  (stored whole, not as attributes that would be cut at 64 KiB);
- what keel's fields cannot read from MLflow's own attributes is added as keel's:
  ``mlflow.llm.model`` (or a chat span's ``inputs.model``) -> ``keel.model``, the
  ``mlflow.chat.tokenUsage`` object -> ``keel.input_tokens`` / ``keel.output_tokens``,
  ``mlflow.llm.cost.total_cost`` -> ``keel.cost``;
- the trace info goes onto the root span: tags as ``mlflow.trace.tag.<key>`` (keel's
  trace tags), the metadata ``mlflow.trace.session``, ``mlflow.trace.user`` and
  ``mlflow.sourceRun`` under their own names (keel's conversation, user and run), the
  rest as ``mlflow.trace.metadata.<key>``, the client request id and the previews as
  ``mlflow.trace.clientRequestId``, ``mlflow.trace.requestPreview`` and
  ``mlflow.trace.responsePreview``.

**Out.** :func:`trace_info_json` and :func:`trace_json` serve any keel trace (from
keel's SDK, OpenTelemetry or MLflow) in MLflow's shape: the reverse of the above, and
for spans that did not come from MLflow, ``mlflow.spanType`` from keel's kind and
``mlflow.llm.model`` / ``mlflow.chat.tokenUsage`` from keel's fields. Every trace
says ``mlflow.trace.spansLocation = TRACKING_STORE``, so the client reads spans from
the server (``/traces/get``, ``/traces/batchGet``), never from artifacts.

**Search.** :func:`search_filter` and :func:`search_order` translate MLflow's trace
search grammar into keel's filter language (see ``docs/mlflow.md``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from keel.core.filters import And, Field, Node, Not, Or, parse_filter, parse_order_by
from keel.core.traces import Score, Span, Trace, TraceDetail, is_span_id, is_trace_id
from keel.errors import InvalidInput

__all__ = [
    "ARTIFACT_TAG",
    "SPANS_LOCATION_TAG",
    "TraceInfo",
    "check_trace_info",
    "detail_info_json",
    "keel_trace_id",
    "mlflow_trace_id",
    "raw_spans",
    "search_filter",
    "search_order",
    "sort_traces",
    "trace_info_json",
    "trace_json",
]

ARTIFACT_TAG = "mlflow.artifactLocation"
SPANS_LOCATION_TAG = "mlflow.trace.spansLocation"
_SERVER_TAGS = (ARTIFACT_TAG, SPANS_LOCATION_TAG)
_TAG_PREFIX = "mlflow.trace.tag."
_METADATA_PREFIX = "mlflow.trace.metadata."
_CLIENT_REQUEST_ID = "mlflow.trace.clientRequestId"
#: Trace info fields kept on the root span: (field of TraceInfoV3, attribute).
_INFO_TEXTS = (
    ("client_request_id", _CLIENT_REQUEST_ID),
    ("request_preview", "mlflow.trace.requestPreview"),
    ("response_preview", "mlflow.trace.responsePreview"),
)
_SESSION, _USER, _RUN = "mlflow.trace.session", "mlflow.trace.user", "mlflow.sourceRun"
#: Trace metadata keel reads as its own fields (conversation, user, run): kept under their own names.
_OWN_METADATA = (_SESSION, _USER, _RUN)
#: Attributes of a root span that are its trace's info, not the span's.
_ROOT_ONLY = frozenset([*(key for _, key in _INFO_TEXTS), *_OWN_METADATA])
_INPUTS, _OUTPUTS = "mlflow.spanInputs", "mlflow.spanOutputs"
_SPAN_TYPE, _MODEL, _USAGE, _COST = "mlflow.spanType", "mlflow.llm.model", "mlflow.chat.tokenUsage", "mlflow.llm.cost"
_REQUEST_ID = "mlflow.traceRequestId"
_TRACE_NAME = "mlflow.traceName"
_PREVIEW = 1000  # characters of a request / response preview, as MLflow's own server keeps
_HINT = "send what the MLflow client sends (see docs/mlflow.md, 'Tracing')"
_HEX_TRACE = re.compile(r"(?:tr-)?([0-9a-fA-F]{32})")
_OTHER_MODEL_KEYS = ("keel.model", "gen_ai.response.model", "gen_ai.request.model", "llm.model_name")

#: keel span kind -> MLflow span type (for spans that did not come from MLflow).
_SPAN_TYPES = {
    "llm": "LLM",
    "chain": "CHAIN",
    "retrieval": "RETRIEVER",
    "rerank": "RERANKER",
    "embedding": "EMBEDDING",
    "tool": "TOOL",
    "agent": "AGENT",
    "guardrail": "GUARDRAIL",
    "evaluator": "EVALUATOR",
}
#: MLflow span type -> keel span kind (for ``span.type = 'LLM'`` in a search).
_KINDS = {
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
    "UNKNOWN": "other",
}
_STATES = {"ok": "OK", "error": "ERROR", "unset": "OK"}
_STATUS_CODES = {"ok": "STATUS_CODE_OK", "error": "STATUS_CODE_ERROR", "unset": "STATUS_CODE_UNSET"}
_STATUSES = {"STATUS_CODE_OK": "ok", "OK": "ok", "STATUS_CODE_ERROR": "error", "ERROR": "error"}
_SCORE_SOURCES = {"user": "HUMAN", "conversation": "HUMAN", "evaluator": "LLM_JUDGE", "api": "CODE"}


# -- ids ------------------------------------------------------------------------------------------------
def mlflow_trace_id(trace_id: str) -> str:
    """keel's 32-hex trace id as MLflow's ``tr-<32 hex>``."""
    return f"tr-{trace_id}"


def keel_trace_id(value: Any) -> str:
    """MLflow's ``tr-<32 hex>`` (or a bare 32-hex request id) as keel's trace id; InvalidInput otherwise."""
    match = _HEX_TRACE.fullmatch(value) if isinstance(value, str) else None
    if match is None or not is_trace_id(match.group(1).lower()):
        shown = repr(value)[:80]
        raise InvalidInput(f"invalid trace id {shown}", "MLflow trace ids are tr- and 32 hex digits")
    return match.group(1).lower()


def _span_id(value: Any, what: str) -> str:
    if isinstance(value, str) and len(value) == 16 and is_span_id(value.lower()):
        return value.lower()
    raw = _b64(value, 8, what)
    return raw.hex()


def _otel_trace_id(value: Any) -> str:
    if isinstance(value, str):
        match = _HEX_TRACE.fullmatch(value)
        if match is not None:
            return match.group(1).lower()
    return _b64(value, 16, "trace_id").hex()


def _b64(value: Any, size: int, what: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size:
        raise InvalidInput(f"span {what} {str(value)[:60]!r} is not {size} bytes in base64", _HINT)
    return raw


# -- in: the trace info, then traces.json ------------------------------------------------------------
@dataclass(frozen=True)
class TraceInfo:
    """What keel keeps of a trace info the client sent (``trace_id`` is keel's 32-hex id)."""

    trace_id: str
    experiment_id: str
    tags: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    client_request_id: str | None = None
    request_preview: str | None = None
    response_preview: str | None = None

    def to_bytes(self) -> bytes:
        """Canonical JSON (kept in the object store between the two requests of a trace)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> TraceInfo:
        """The inverse of :meth:`to_bytes`; InvalidInput for anything else."""
        try:
            found = json.loads(data)
            return cls(**found)
        except (ValueError, TypeError) as exc:
            raise InvalidInput("the stored trace info is not one", "start the trace again") from exc


def _strings(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, list):  # [{"key": ..., "value": ...}], as MLflow's v2 API sends tags
        if not all(isinstance(item, Mapping) for item in value):
            raise InvalidInput(f"trace {what} must be an object of text or a list of {{key, value}}", _HINT)
        value = {item.get("key"): item.get("value") for item in value}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"trace {what} must be an object of text, not {type(value).__name__}", _HINT)
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key or len(key) > 250:
            raise InvalidInput(f"invalid trace {what} key {str(key)[:60]!r}", "keys are 1-250 characters")
        out[key] = item if isinstance(item, str) else json.dumps(item)
    return out


def check_trace_info(trace: Any) -> TraceInfo:
    """The ``trace`` of a ``StartTraceV3`` request, checked (InvalidInput names what is wrong)."""
    info = trace.get("trace_info") if isinstance(trace, Mapping) else None
    if not isinstance(info, Mapping):
        raise InvalidInput("the request needs trace.trace_info", _HINT)
    trace_id = keel_trace_id(info.get("trace_id"))
    location = info.get("trace_location")
    experiment = location.get("mlflow_experiment") if isinstance(location, Mapping) else None
    experiment_id = experiment.get("experiment_id") if isinstance(experiment, Mapping) else None
    if not isinstance(experiment_id, str | int) or isinstance(experiment_id, bool) or str(experiment_id) == "":
        raise InvalidInput("the trace needs trace_location.mlflow_experiment.experiment_id", "set an experiment")
    texts = {}
    for key in ("client_request_id", "request_preview", "response_preview"):
        value = info.get(key)
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"{key} must be text", _HINT)
        texts[key] = value or None
    return TraceInfo(
        trace_id,
        str(experiment_id),
        _strings(info.get("tags"), "tags"),
        _strings(info.get("trace_metadata") or info.get("request_metadata"), "metadata"),
        **texts,
    )


def _decode(value: Any) -> Any:
    """An attribute value as MLflow stores it (JSON text) decoded; text that is not JSON as it is."""
    if isinstance(value, str) and value:
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _keel_fields(attributes: dict[str, Any], inputs: Any) -> None:
    """Add keel's attributes for what keel's fields cannot read in MLflow's form."""
    model = attributes.get(_MODEL)
    kind = attributes.get(_SPAN_TYPE)
    if not model and kind in ("LLM", "CHAT_MODEL") and isinstance(inputs, Mapping):
        model = inputs.get("model")
    if isinstance(model, str) and model and not any(attributes.get(k) for k in _OTHER_MODEL_KEYS):
        attributes["keel.model"] = model
    usage = attributes.get(_USAGE)
    if isinstance(usage, Mapping):
        for theirs, ours in (("input_tokens", "keel.input_tokens"), ("output_tokens", "keel.output_tokens")):
            if isinstance(usage.get(theirs), int) and ours not in attributes:
                attributes[ours] = usage[theirs]
    cost = attributes.get(_COST)
    if isinstance(cost, Mapping) and isinstance(cost.get("total_cost"), int | float) and "keel.cost" not in attributes:
        attributes["keel.cost"] = cost["total_cost"]


def _raw_span(data: Any, trace_id: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidInput(f"a span must be an object, not {type(data).__name__}", _HINT)
    if "context" in data:
        raise InvalidInput("spans in MLflow's 2.x format are not supported by keel", "use the mlflow 3 client")
    span_trace = _otel_trace_id(data.get("trace_id"))
    if span_trace != trace_id:
        raise InvalidInput(
            f"span of trace {span_trace} in the data of trace {mlflow_trace_id(trace_id)}", "send one trace's spans"
        )
    attributes = data.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise InvalidInput("span attributes must be an object", _HINT)
    decoded = {str(k): _decode(v) for k, v in attributes.items() if k != _REQUEST_ID}
    inputs, outputs = decoded.pop(_INPUTS, None), decoded.pop(_OUTPUTS, None)
    _keel_fields(decoded, inputs)
    found = data.get("status")
    status: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    events: list[dict[str, Any]] = []
    for event in data.get("events") or []:
        if isinstance(event, Mapping):
            events.append(
                {
                    "name": event.get("name"),
                    "time_ns": event.get("time_unix_nano"),
                    "attributes": event.get("attributes") if isinstance(event.get("attributes"), Mapping) else {},
                }
            )
    parent = data.get("parent_span_id")
    raw: dict[str, Any] = {
        "trace_id": trace_id,
        "span_id": _span_id(data.get("span_id"), "span_id"),
        "parent_id": _span_id(parent, "parent_span_id") if parent else None,
        "name": data.get("name"),
        "start_ns": data.get("start_time_unix_nano"),
        "end_ns": data.get("end_time_unix_nano"),
        "status": _STATUSES.get(str(status.get("code", "")).upper(), "unset"),
        "status_message": status.get("message") or None,
        "attributes": decoded,
        "events": events,
    }
    if inputs is not None:
        raw["inputs"] = inputs
    if outputs is not None:
        raw["outputs"] = outputs
    return raw


def raw_spans(data: Any, info: TraceInfo) -> list[dict[str, Any]]:
    """The spans of a ``traces.json`` upload as keel raw spans, the trace info on the root.

    The root is the span without a parent (else the earliest); InvalidInput when the
    data is not MLflow's trace data or holds another trace's spans.
    """
    spans = data.get("spans") if isinstance(data, Mapping) else None
    if not isinstance(spans, list) or not spans:
        raise InvalidInput('the trace data must be {"spans": [...]} with at least one span', _HINT)
    out = [_raw_span(span, info.trace_id) for span in spans]
    roots = [s for s in out if s["parent_id"] is None]
    root = roots[0] if roots else min(out, key=lambda s: s["start_ns"] if isinstance(s["start_ns"], int) else 0)
    attributes = root["attributes"]
    for key, value in info.tags.items():
        if key not in _SERVER_TAGS and not (key == _TRACE_NAME and value == root["name"]):  # the trace's name
            attributes[_TAG_PREFIX + key] = value
    for key, value in info.metadata.items():
        attributes[key if key in _OWN_METADATA else _METADATA_PREFIX + key] = value
    for field_name, key in _INFO_TEXTS:
        value = getattr(info, field_name)
        if value is not None:
            attributes[key] = value
    return out


# -- out: any keel trace in MLflow's shape ------------------------------------------------------------
def _timestamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _preview(value: Any) -> str | None:
    """A payload's preview as MLflow's client writes one (its JSON, cut to 1,000 characters)."""
    if value is None:
        return None
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 3] + "..."


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _assessment(score: Score, trace_id: str, index: int) -> dict[str, Any]:
    when = _timestamp(score.created_at)
    out: dict[str, Any] = {
        "assessment_id": f"keel-{trace_id[:8]}-{index}",
        "assessment_name": score.key,
        "trace_id": mlflow_trace_id(trace_id),
        "source": {"source_type": _SCORE_SOURCES.get(score.source, "CODE"), "source_id": score.source},
        "create_time": when,
        "last_update_time": when,
        "feedback": {"value": score.value if score.value is not None else score.label},
    }
    if score.span_id:
        out["span_id"] = score.span_id
    if score.comment:
        out["rationale"] = score.comment
    return out


def trace_info_json(
    trace: Trace, experiment_id: str, root: Span | None = None, scores: Sequence[Score] = ()
) -> dict[str, Any]:
    """A keel trace's ``TraceInfoV3`` (with its root span: previews and all metadata)."""
    tags = {k: _text(v) for k, v in trace.tags.items()}
    tags.setdefault(_TRACE_NAME, trace.name)
    tags[SPANS_LOCATION_TAG] = "TRACKING_STORE"
    metadata: dict[str, str] = {}
    info: dict[str, Any] = {}
    if root is not None:
        for key, value in root.attributes.items():
            if key.startswith(_METADATA_PREFIX):
                metadata[key[len(_METADATA_PREFIX) :]] = _text(value)
        for key, value in (("request_preview", root.inputs), ("response_preview", root.outputs)):
            preview = _preview(value)
            if preview is not None:
                info[key] = preview
        for field_name, key in _INFO_TEXTS:  # what the client sent wins (its own previews included)
            if root.attributes.get(key) is not None:
                info[field_name] = _text(root.attributes[key])
    for key, value in ((_SESSION, trace.conversation_id), (_USER, trace.user_id), (_RUN, trace.run_id)):
        if value:
            metadata[key] = value
    if (trace.input_tokens or trace.output_tokens) and "mlflow.trace.tokenUsage" not in metadata:
        tokens_in, tokens_out = trace.input_tokens or 0, trace.output_tokens or 0
        usage = {"input_tokens": tokens_in, "output_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}
        metadata["mlflow.trace.tokenUsage"] = json.dumps(usage)
    info.update(
        {
            "trace_id": mlflow_trace_id(trace.trace_id),
            "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}},
            "request_time": _timestamp(trace.start_ns // 1_000_000),
            "execution_duration": f"{int(trace.duration_ms) / 1000:.3f}s",
            "state": "ERROR" if trace.status == "error" else "OK",
            "trace_metadata": metadata,
            "tags": tags,
        }
    )
    if scores:
        info["assessments"] = [_assessment(s, trace.trace_id, i) for i, s in enumerate(scores)]
    return info


def _any_value(value: Any, depth: int = 0) -> dict[str, Any]:
    """A JSON value as OpenTelemetry's ``AnyValue`` (proto JSON)."""
    if value is None or depth > 30:
        return {} if value is None else {"string_value": json.dumps(value, default=str)}
    if isinstance(value, bool):
        return {"bool_value": value}
    if isinstance(value, int):
        return {"int_value": value} if -(2**63) <= value < 2**63 else {"double_value": float(value)}
    if isinstance(value, float):
        return {"double_value": value}
    if isinstance(value, str):
        return {"string_value": value}
    if isinstance(value, list | tuple):
        return {"array_value": {"values": [_any_value(v, depth + 1) for v in value]}}
    if isinstance(value, Mapping):
        items = [{"key": str(k), "value": _any_value(v, depth + 1)} for k, v in value.items()]
        return {"kvlist_value": {"values": items}}
    return {"string_value": str(value)}


def _key_values(attributes: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _any_value(v)} for k, v in attributes.items()]


def _span_attributes(span: Span, root: bool, load: Callable[[Span, str], Any]) -> dict[str, Any]:
    attributes = dict(span.attributes)
    if root:  # the trace info, stored on the root, is not a span attribute to MLflow
        for key in list(attributes):
            if key.startswith((_TAG_PREFIX, _METADATA_PREFIX)) or key in _ROOT_ONLY:
                del attributes[key]
    attributes.setdefault(_SPAN_TYPE, _SPAN_TYPES.get(span.kind, "UNKNOWN"))
    if span.model:
        attributes.setdefault(_MODEL, span.model)
        attributes.pop("keel.model", None)
    if span.input_tokens is not None or span.output_tokens is not None:
        if _USAGE not in attributes:
            tokens_in, tokens_out = span.input_tokens or 0, span.output_tokens or 0
            attributes[_USAGE] = {
                "input_tokens": tokens_in,
                "output_tokens": tokens_out,
                "total_tokens": tokens_in + tokens_out,
            }
        attributes.pop("keel.input_tokens", None)
        attributes.pop("keel.output_tokens", None)
    if _COST in attributes:
        attributes.pop("keel.cost", None)
    for key, which in ((_INPUTS, "inputs"), (_OUTPUTS, "outputs")):
        value = load(span, which)
        if value is not None:
            attributes[key] = value
    return attributes


def _span_json(span: Span, root: bool, load: Callable[[Span, str], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "trace_id": base64.b64encode(bytes.fromhex(span.trace_id)).decode(),
        "span_id": base64.b64encode(bytes.fromhex(span.span_id)).decode(),
        "name": span.name,
        "start_time_unix_nano": span.start_ns,
        "end_time_unix_nano": span.end_ns,
        "attributes": _key_values(_span_attributes(span, root, load)),
        "status": {"code": _STATUS_CODES.get(span.status, "STATUS_CODE_UNSET")},
    }
    if span.parent_id:
        out["parent_span_id"] = base64.b64encode(bytes.fromhex(span.parent_id)).decode()
    if span.status_message:
        out["status"]["message"] = span.status_message
    events = []
    for event in span.events:
        item: dict[str, Any] = {"name": event.get("name") or "event"}
        if isinstance(event.get("time_ns"), int):
            item["time_unix_nano"] = event["time_ns"]
        if isinstance(event.get("attributes"), Mapping):
            item["attributes"] = _key_values(event["attributes"])
        events.append(item)
    if events:
        out["events"] = events
    return out


def _root(detail: TraceDetail, load: Callable[[Span, str], Any]) -> Span | None:
    root = next((s for s in detail.spans if s.span_id == detail.trace.root_span_id), None)
    return None if root is None else replace(root, inputs=load(root, "inputs"), outputs=load(root, "outputs"))


def detail_info_json(detail: TraceDetail, experiment_id: str, load: Callable[[Span, str], Any]) -> dict[str, Any]:
    """A stored trace's ``TraceInfoV3``, previews, metadata and assessments included."""
    return trace_info_json(detail.trace, experiment_id, _root(detail, load), detail.scores)


def trace_json(detail: TraceDetail, experiment_id: str, load: Callable[[Span, str], Any]) -> dict[str, Any]:
    """A keel trace as MLflow's ``Trace`` (proto JSON): its info and its spans as OpenTelemetry spans.

    ``load(span, "inputs" | "outputs")`` gives a span's payload (read from the object
    store when it is stored there); each is loaded once."""
    loaded: dict[tuple[str, str], Any] = {}

    def once(span: Span, which: str) -> Any:
        key = (span.span_id, which)
        if key not in loaded:
            loaded[key] = load(span, which)
        return loaded[key]

    root_id = detail.trace.root_span_id
    return {
        "trace_info": detail_info_json(detail, experiment_id, once),
        "spans": [_span_json(s, s.span_id == root_id, once) for s in detail.spans],
    }


# -- search ------------------------------------------------------------------------------------------
_PREFIXES = {
    "attributes": "attributes",
    "attribute": "attributes",
    "attr": "attributes",
    "trace": "attributes",
    "tags": "tags",
    "tag": "tags",
    "metadata": "metadata",
    "request_metadata": "metadata",
    "span": "span",
    "feedback": "feedback",
}
#: MLflow trace attribute -> keel trace field.
_ATTRIBUTES = {
    "status": "status",
    "state": "status",
    "timestamp_ms": "time",
    "timestamp": "time",
    "request_time": "time",
    "start_time": "time",
    "execution_time_ms": "latency",
    "execution_time": "latency",
    "execution_duration": "latency",
    "latency": "latency",
    "name": "name",
    "run_id": "run_id",
    "trace_id": "trace_id",
    "request_id": "trace_id",
}
_METADATA = {_SESSION: "session", _USER: "user", _RUN: "run_id"}
_SPAN = {"name": "span.name", "type": "span.kind", "span_type": "span.kind", "status": "span.status", "model": "model"}
_ORDER = {
    "timestamp_ms": "time",
    "timestamp": "time",
    "request_time": "time",
    "start_time": "time",
    "execution_time_ms": "latency",
    "execution_time": "latency",
    "latency": "latency",
    "status": "status",
    "state": "status",
    "name": "name",
}
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _unsupported(what: str) -> InvalidInput:
    return InvalidInput(
        f"{what} is not searchable in keel",
        "search traces by status, timestamp_ms, execution_time_ms, name, run_id, trace_id, tags.<key>, "
        "metadata.`mlflow.trace.session`, metadata.`mlflow.trace.user`, span.name, span.type, span.status, "
        "span.model or feedback.<name> (see docs/mlflow.md, 'Tracing')",
    )


def _key(key: str) -> str:
    if _PLAIN.fullmatch(key):
        return key
    if "`" in key:
        raise InvalidInput(f"the key {key[:60]!r} cannot be searched (it holds a backtick)", "rename it")
    return f"`{key}`"


def _field(field: Field) -> str:
    kind, key = field.kind, field.key
    if kind in (None, "attributes"):
        found = _ATTRIBUTES.get(key)
        if found is None:
            raise _unsupported(f"the trace attribute {key!r}")
        return found
    if kind == "tags":
        if key == _TRACE_NAME:
            return "name"
        if "." in key:  # keel reads a dotted tag key as a path into nested tags
            raise _unsupported(f"the tag {key!r} (a key with '.')")
        return f"tags.{_key(key)}"
    if kind == "metadata":
        found = _METADATA.get(key)
        if found is None:
            raise _unsupported(f"the metadata key {key!r}")
        return found
    if kind == "span":
        found = _SPAN.get(key)
        if found is None:
            raise _unsupported(f"the span field {key!r}")
        return found
    return f"feedback.{_key(key)}"


def _value(target: str, value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_value(target, v) for v in value)
    if target in ("status", "span.status") and isinstance(value, str):
        return _STATUSES.get(value.upper(), value.lower())
    if target == "span.kind" and isinstance(value, str):
        return _KINDS.get(value.upper(), value.lower())
    if target == "trace_id" and isinstance(value, str) and value.startswith("tr-"):
        return value[3:].lower()
    return value


def _literal(value: Any) -> str:
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace("'", "''")
    return f"'{text}'"


def _render(node: Node) -> str:
    if isinstance(node, And | Or):
        word = " and " if isinstance(node, And) else " or "
        return "(" + word.join(_render(item) for item in node.items) + ")"
    if isinstance(node, Not):
        return f"not ({_render(node.item)})"
    target = _field(node.field)
    value = _value(target, node.value)
    if node.op in ("is null", "is not null"):
        return f"{target} {node.op}"
    if node.op in ("in", "not in"):
        return f"{target} {node.op} (" + ", ".join(_literal(v) for v in value) + ")"
    return f"{target} {node.op} {_literal(value)}"


def search_filter(text: Any) -> str | None:
    """MLflow's ``search_traces`` filter as keel's (None when empty); InvalidInput names what keel
    cannot search."""
    if text is None or isinstance(text, str) and not text.strip():
        return None
    node = parse_filter(text, _PREFIXES, "attributes")
    return _render(node)


def search_order(clauses: Any) -> list[str]:
    """MLflow's ``order_by`` (``["timestamp_ms DESC"]``) as keel's trace order."""
    if not clauses:
        return []
    out = []
    for clause in parse_order_by(clauses, _PREFIXES, "attributes"):
        found = _ORDER.get(clause.field.key) if clause.field.kind in (None, "attributes") else None
        if found is None:
            raise InvalidInput(
                f"cannot order traces by {clause.field.key!r}",
                "order by timestamp_ms, execution_time_ms, status or name",
            )
        out.append(f"{found} {'asc' if clause.ascending else 'desc'}")
    return out


def sort_traces(traces: Sequence[Trace], clauses: Sequence[str]) -> list[Trace]:
    """Trace summaries in keel's order (``["latency desc"]``; newest first by default), to merge
    the pages of several projects as one search would have ordered them."""
    attrs = {"time": "start_ns", "latency": "duration_ms", "status": "status", "name": "name"}
    out = sorted(traces, key=lambda t: t.trace_id)
    for clause in reversed(clauses or ["time desc"]):
        name, direction = clause.split()
        out.sort(key=lambda t, a=attrs[name]: getattr(t, a), reverse=direction == "desc")  # type: ignore[misc]
    return out
