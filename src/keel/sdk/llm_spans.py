"""The span each call of a wrapped LLM client adds to the current trace (see :mod:`keel.sdk.llm`).

A call inside a span (``@keel.trace``, ``keel.span``) is its child; a live or recorded
call outside any trace is a trace of its own, one span long, as LangSmith's ``wrap_openai``
and Langfuse's OpenAI integration do. A *replayed* call outside any trace adds no trace
(replayed tests and evaluations would otherwise copy their recordings into the trace store);
inside a trace it is a span like any other, marked ``replay``. The span is named
``"{operation} {model}"`` (``chat gpt-4o``), kind ``llm`` (``embedding`` for embeddings), and carries:

- the OpenTelemetry GenAI attributes: ``gen_ai.operation.name``, ``gen_ai.provider.name``
  (and the older ``gen_ai.system``), ``gen_ai.request.model``, the request parameters
  (``gen_ai.request.temperature``, ``top_p``, ``top_k``, ``max_tokens``, ``seed``,
  ``frequency_penalty``, ``presence_penalty``, ``stop_sequences``, ``choice.count``),
  ``gen_ai.response.model``, ``gen_ai.response.id``, ``gen_ai.response.finish_reasons``,
  ``gen_ai.usage.input_tokens`` / ``output_tokens``, ``server.address`` / ``server.port``;
- keel's: ``keel.cost`` (the price table, as recordings compute it), ``keel.prompt`` (the
  served prompt version: ``keel_prompt=``, ``wrap(prompt=)``, the one prompt the run loaded,
  else the one noted on the enclosing span), ``keel.llm.endpoint``, ``keel.llm.mode``
  (``record``: called and recorded, ``replay``: answered from a recording, ``live``:
  called, not recorded), ``keel.llm.request_hash`` and ``keel.llm.occurrence`` (what
  ``keel reproduce --trace`` replays), ``keel.llm.sequence``, ``keel.run_id`` or, outside
  a run, ``keel.llm.recording`` (the wrapped client's recording session), and on replay
  ``keel.llm.source`` (the run or cassette replayed from);
- inputs: the request messages (Anthropic's ``system`` and the Responses API's
  ``instructions`` as a first ``system`` message; embeddings: the input texts);
  outputs: the response message (a list when there are several choices; embeddings:
  their count and dimensions, never the vectors).

A stream's span ends when the stream has been read to the end (or closed, or failed);
an error (the client's, or a :class:`~keel.errors.ReplayMiss`) marks it failed.

Cost on the calling thread: a few dictionary reads at the start, and when the span
ends the work :meth:`keel.sdk.traces.ActiveSpan` does for any span (its inputs and
outputs as JSON); the request messages are not copied beyond the list that holds them,
and a stream's chunks are read as objects, not dumped. Nothing here ever raises into
the call: a failure is logged and counted in :func:`keel.sdk.traces.counters`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from keel.core.llm import assemble_chat_stream, assemble_messages_stream, call_cost, normalize, usage_tokens
from keel.sdk import traces
from keel.sdk.traces import ActiveSpan

__all__ = [
    "end",
    "fail",
    "finish",
    "finish_replay",
    "finish_stream",
    "prepared",
    "server_of",
    "start",
    "stream_summary",
]

log = logging.getLogger("keel")

_OPERATIONS = {"chat.completions": "chat", "responses": "chat", "messages": "chat", "embeddings": "embeddings"}
_PROVIDERS = {"messages": "anthropic"}
#: request argument -> GenAI attribute (scalars only)
_PARAMETERS = (
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("top_k", "gen_ai.request.top_k"),
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("max_completion_tokens", "gen_ai.request.max_tokens"),
    ("max_output_tokens", "gen_ai.request.max_tokens"),
    ("seed", "gen_ai.request.seed"),
    ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
    ("n", "gen_ai.request.choice.count"),
    ("dimensions", "gen_ai.embeddings.dimension.count"),
)


def _get(item: Any, key: str, default: Any = None) -> Any:
    if type(item) is dict or isinstance(item, Mapping):  # recorded data (dicts: the fast check)
        return item.get(key, default)
    return getattr(item, key, default)


def _failed(what: str, exc: BaseException) -> None:
    traces._count("errors")
    log.warning("keel: could not %s (the call itself is unaffected): %s: %s", what, type(exc).__name__, exc)


def server_of(base_url: str | None) -> tuple[str, int | None] | None:
    """``(host, port)`` of a client's base URL, for ``server.address`` / ``server.port``."""
    if not base_url:
        return None
    try:
        parts = urlsplit(base_url)
        return (parts.hostname, parts.port) if parts.hostname else None
    except ValueError:
        return None


# -- the request side ---------------------------------------------------------------------
_SCALARS = (bool, int, float, str)


def _scalar(value: Any) -> bool:
    return type(value) in _SCALARS or isinstance(value, _SCALARS)


def _inputs(endpoint: str, kwargs: Mapping[str, Any]) -> Any:
    """The request messages: a new list holding the caller's items (they are converted to
    JSON when the span ends; a caller appending to its own list does not change it)."""
    if endpoint in ("chat.completions", "messages"):
        messages = kwargs.get("messages")
        found = list(messages) if isinstance(messages, list | tuple) else []
        system = kwargs.get("system") if endpoint == "messages" else None
        if system is not None and not _sentinel(system):
            found.insert(0, {"role": "system", "content": system})
        return found
    if endpoint == "responses":
        raw = kwargs.get("input")
        found = (
            list(raw) if isinstance(raw, list | tuple) else ([] if raw is None else [{"role": "user", "content": raw}])
        )
        instructions = kwargs.get("instructions")
        if isinstance(instructions, str):
            found.insert(0, {"role": "system", "content": instructions})
        return found
    if endpoint == "embeddings":
        raw = kwargs.get("input")
        return list(raw) if isinstance(raw, list | tuple) else raw
    return dict(kwargs)  # @keel.llm.record: the function's arguments


def _sentinel(value: Any) -> bool:
    return type(value).__name__ in ("NotGiven", "Omit")


def start(
    endpoint: str,
    kwargs: Mapping[str, Any],
    server: tuple[str, int | None] | None,
    prompt: str | None,
) -> ActiveSpan | None:
    """The span of a call about to be made (a child of the current span, or a new trace)."""
    try:
        parent = traces.current_span()
        model = kwargs.get("model")
        model = model if isinstance(model, str) else None
        operation = _OPERATIONS.get(endpoint)
        if operation is not None:
            name = f"{operation} {model}" if model else operation
            kind = "embedding" if operation == "embeddings" else "llm"
        else:
            name, kind = (endpoint[3:] if endpoint.startswith("fn:") else endpoint) or "llm", "llm"
        span = traces._new_span(name[:250], kind, None, None)
        attributes = span.attributes
        if operation is not None:
            provider = _PROVIDERS.get(endpoint, "openai")
            attributes["gen_ai.operation.name"] = operation
            attributes["gen_ai.provider.name"] = provider
            attributes["gen_ai.system"] = provider
        if model:
            attributes["gen_ai.request.model"] = model
        for argument, attribute in _PARAMETERS:
            value = kwargs.get(argument)
            if value is not None and _scalar(value):
                attributes[attribute] = value
        stop = kwargs.get("stop", kwargs.get("stop_sequences"))
        if isinstance(stop, str):
            attributes["gen_ai.request.stop_sequences"] = [stop]
        elif isinstance(stop, list | tuple) and all(isinstance(s, str) for s in stop):
            attributes["gen_ai.request.stop_sequences"] = list(stop)
        if server is not None:
            attributes["server.address"] = server[0]
            if server[1] is not None:
                attributes["server.port"] = server[1]
        attributes["keel.llm.endpoint"] = endpoint
        if kwargs.get("stream") is True:
            attributes["keel.llm.stream"] = True
        if prompt is None and parent is not None:
            noted = parent.attributes.get("keel.prompt")  # a prompt loaded in the enclosing span
            prompt = noted if isinstance(noted, str) else None
        if prompt:
            attributes["keel.prompt"] = prompt
        span.inputs = _inputs(endpoint, kwargs)
        return span
    except Exception as exc:  # noqa: BLE001 - tracing never breaks the call
        _failed("start an LLM span", exc)
        return None


def prepared(span: ActiveSpan | None, prep: Any, mode: str) -> None:
    """What the recorder knows before the call: request hash, occurrence, run, prompt, mode."""
    if span is None:
        return
    try:
        if mode == "replay" and span.parent_id is None:
            # a replay outside any trace adds no trace: replayed tests and evaluations would
            # otherwise fill the trace store with copies of the recorded calls
            traces.discard(span)
            return
        attributes = span.attributes
        attributes["keel.llm.mode"] = mode
        if prep is None:
            return
        attributes["keel.llm.request_hash"] = prep.digest
        attributes["keel.llm.occurrence"] = prep.occurrence
        if prep.sequence is not None:
            attributes["keel.llm.sequence"] = prep.sequence
        context = prep.context
        if prep.run is not None:
            attributes["keel.run_id"] = prep.run.id
        elif context.get("recording"):
            attributes["keel.llm.recording"] = context["recording"]
        prompt = context.get("prompt")
        if prompt:
            attributes["keel.prompt"] = str(prompt)
    except Exception as exc:  # noqa: BLE001
        _failed("describe an LLM span", exc)


# -- the response side ----------------------------------------------------------------------
def _chat_message(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"role": _get(message, "role") or "assistant", "content": _get(message, "content")}
    calls = _get(message, "tool_calls")
    if calls:
        out["tool_calls"] = [
            {
                "id": _get(call, "id"),
                "type": _get(call, "type") or "function",
                "function": {
                    "name": _get(_get(call, "function"), "name"),
                    "arguments": _get(_get(call, "function"), "arguments"),
                },
            }
            for call in calls
        ]
    refusal = _get(message, "refusal")
    if refusal:
        out["refusal"] = refusal
    return out


def _responses_output(items: Any) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in items or ():
        kind = _get(item, "type")
        if kind == "message":
            for part in _get(item, "content") or ():
                if _get(part, "type") == "output_text":
                    texts.append(_get(part, "text") or "")
        elif kind == "function_call":
            calls.append(
                {"id": _get(item, "call_id"), "name": _get(item, "name"), "arguments": _get(item, "arguments")}
            )
    out: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if calls:
        out["tool_calls"] = calls
    return out


def _anthropic_output(content: Any) -> dict[str, Any]:
    blocks = list(content or ())
    if all(_get(b, "type") == "text" for b in blocks):
        return {"role": "assistant", "content": "".join(_get(b, "text") or "" for b in blocks)}
    return {"role": "assistant", "content": normalize(blocks)}


def _summary(endpoint: str, response: Any) -> dict[str, Any]:
    """Response model, id, finish reasons, tokens and the output message(s) of a response
    (the client's object, or recorded data)."""
    found: dict[str, Any] = {"model": _get(response, "model"), "id": _get(response, "id")}
    usage = _get(response, "usage")
    if usage is not None:
        found["tokens"] = usage_tokens({"usage": usage if isinstance(usage, Mapping) else normalize(usage)})
    if endpoint == "chat.completions":
        choices = list(_get(response, "choices") or ())
        found["finish_reasons"] = [str(_get(c, "finish_reason")) for c in choices if _get(c, "finish_reason")]
        messages = [_chat_message(_get(c, "message")) for c in choices]
        found["outputs"] = messages[0] if len(messages) == 1 else messages
    elif endpoint == "responses":
        status = _get(response, "status")
        found["finish_reasons"] = [str(status)] if status else []
        found["outputs"] = _responses_output(_get(response, "output"))
    elif endpoint == "messages":
        reason = _get(response, "stop_reason")
        found["finish_reasons"] = [str(reason)] if reason else []
        found["outputs"] = _anthropic_output(_get(response, "content"))
    elif endpoint == "embeddings":
        data = list(_get(response, "data") or ())
        vector = _get(data[0], "embedding") if data else None
        outputs: dict[str, Any] = {"embeddings": len(data)}
        if isinstance(vector, list):
            outputs["dimensions"] = len(vector)
        found["outputs"] = outputs
    else:
        found = {"outputs": response}
        if isinstance(response, Mapping):
            found["model"] = response.get("model")
            if isinstance(response.get("usage"), Mapping):
                found["tokens"] = usage_tokens(response)
    return found


def stream_summary(endpoint: str, chunks: list[Any]) -> dict[str, Any]:
    """:func:`_summary` of what a stream's chunks (objects or data) add up to."""
    if endpoint == "chat.completions":
        return _summary(endpoint, assemble_chat_stream(chunks))
    if endpoint == "messages":
        return _summary(endpoint, assemble_messages_stream(chunks))
    for chunk in reversed(chunks):  # responses: the last event carrying the whole response
        response = _get(chunk, "response")
        if response is not None:
            return _summary(endpoint, response)
    return {}


def _apply(span: ActiveSpan, summary: Mapping[str, Any], request_model: Any, prices: Any) -> None:
    attributes = span.attributes
    model = summary.get("model")
    if model:
        attributes["gen_ai.response.model"] = str(model)
    if summary.get("id"):
        attributes["gen_ai.response.id"] = str(summary["id"])
    if summary.get("finish_reasons"):
        attributes["gen_ai.response.finish_reasons"] = summary["finish_reasons"]
    tokens = summary.get("tokens")
    if tokens is not None:
        tokens_in, tokens_out = tokens
        if tokens_in is not None:
            attributes["gen_ai.usage.input_tokens"] = tokens_in
        if tokens_out is not None:
            attributes["gen_ai.usage.output_tokens"] = tokens_out
        if "keel.cost" not in attributes:
            priced = str(request_model or model or "")
            cost = call_cost(priced, tokens_in, tokens_out, prices)
            if cost is not None:
                attributes["keel.cost"] = cost
    if "outputs" in summary:
        span.outputs = summary["outputs"]


def finish(span: ActiveSpan | None, endpoint: str, response: Any, request_model: Any, prices: Any) -> None:
    """End the span of a call that returned ``response``."""
    if span is None:
        return
    try:
        _apply(span, _summary(endpoint, response), request_model, prices)
    except Exception as exc:  # noqa: BLE001
        _failed("describe an LLM span's response", exc)
    _end(span)


def finish_stream(
    span: ActiveSpan | None, endpoint: str, chunks: list[Any], request_model: Any, prices: Any, complete: bool
) -> None:
    """End the span of a stream: read to the end (``complete``), or closed before it."""
    if span is None:
        return
    try:
        span.attributes["keel.llm.stream"] = True
        span.attributes["keel.llm.chunks"] = len(chunks)
        if not complete:
            span.attributes["keel.llm.stream_closed_early"] = True
        _apply(span, stream_summary(endpoint, chunks), request_model, prices)
    except Exception as exc:  # noqa: BLE001
        _failed("describe an LLM span's stream", exc)
    _end(span)


def finish_replay(span: ActiveSpan | None, endpoint: str, row: Any, response: Any, end: bool = True) -> None:
    """Describe the span of a replayed call (tokens and cost as recorded); end it unless its
    stream is still to be read."""
    if span is None:
        return
    try:
        attributes = span.attributes
        attributes["keel.llm.mode"] = "replay"
        if row.source:
            attributes["keel.llm.source"] = row.source
        if row.cost is not None:
            attributes["keel.cost"] = row.cost
        summary = _summary(endpoint, response)
        if row.input_tokens is not None or row.output_tokens is not None:
            summary["tokens"] = (row.input_tokens, row.output_tokens)
        _apply(span, summary, row.model, {})
    except Exception as exc:  # noqa: BLE001
        _failed("describe a replayed LLM span", exc)
    if end:
        _end(span)


def fail(span: ActiveSpan | None, error: BaseException) -> None:
    """End the span of a call that raised ``error`` (marked failed)."""
    if span is None:
        return
    try:
        span.record_exception(error)
    except Exception as exc:  # noqa: BLE001
        _failed("mark an LLM span failed", exc)
    _end(span)


def end(span: ActiveSpan | None, complete: bool = True) -> None:
    """End a span already described (a replayed stream, read to the end or closed early)."""
    if span is None:
        return
    if not complete:
        span.attributes["keel.llm.stream_closed_early"] = True
    _end(span)


def _end(span: ActiveSpan) -> None:
    try:
        span._finish()
    except Exception as exc:  # noqa: BLE001
        _failed("record an LLM span", exc)
