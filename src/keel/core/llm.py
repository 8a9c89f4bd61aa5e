"""Recorded LLM calls, the pure parts: request hashing, prices, stream assembly, diffs.

**The request hash** names a call in a cassette::

    request_hash(endpoint, request) = blake3(canonical_json({"endpoint": endpoint, "request": R}))

where ``endpoint`` is ``chat.completions``, ``responses``, ``embeddings`` (OpenAI),
``messages`` (Anthropic's ``messages.create`` / ``messages.stream``) or
``fn:<name>`` for ``@keel.llm.record``, and ``R`` is the request's keyword
arguments as JSON (pydantic objects dumped, tuples as lists, keys sorted) with

- top-level arguments whose value is ``None`` or the openai "not given"
  sentinel dropped (``temperature=None`` and no ``temperature`` are the same
  request), and
- the :data:`VOLATILE_FIELDS` dropped: they change how a call is transported
  or attributed, not what the model is asked::

      stream, stream_options, user, timeout, extra_headers, extra_query,
      metadata, store, service_tier, safety_identifier, prompt_cache_key,
      user_profile_id, workspace_id        (Anthropic: sent as headers)

Everything else counts (``model``, ``messages``, ``input``, ``instructions``,
``temperature``, ``top_p``, ``seed``, ``max_tokens``, ``tools``,
``tool_choice``, ``response_format``, ``n``, ``extra_body``; Anthropic's
``system``, ``stop_sequences``, ``top_k``, ``thinking``, ...). A
streamed and a non-streamed call with the same arguments therefore share a
hash: either recording replays both ways.

**Prices** are US dollars per million tokens, ``(input, output)``, looked up
by the longest model-name prefix (``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``).
**Tokens** are read from the response's ``usage``: OpenAI's ``prompt_tokens`` /
``completion_tokens`` or ``input_tokens`` / ``output_tokens``; for Anthropic the
input also counts the prompt-cache tokens (``cache_creation_input_tokens``,
``cache_read_input_tokens``, which its ``input_tokens`` leaves out), priced as input.

**Streams** are stored as their chunks plus the response they add up to
(:func:`assemble_chat_stream`, :func:`assemble_messages_stream`); a recording
that was not streamed replays as a stream of synthesized events
(:func:`messages_stream_events` for Anthropic). The assemblers read plain data
and the clients' response objects alike.
"""

from __future__ import annotations

import difflib
import enum
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from keel.core.hashing import canonical_json, hash_bytes

__all__ = [
    "DEFAULT_PRICES",
    "ENDPOINTS",
    "VOLATILE_FIELDS",
    "assemble_chat_stream",
    "assemble_messages_stream",
    "call_cost",
    "encode_normalized",
    "find_price",
    "hash_request",
    "messages_stream_events",
    "normalize",
    "request_diff",
    "request_hash",
    "request_similarity",
    "usage_tokens",
]

ENDPOINTS = ("chat.completions", "responses", "embeddings", "messages")

#: Request arguments left out of the request hash (see the module docstring).
VOLATILE_FIELDS = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "timeout",
        "extra_headers",
        "extra_query",
        "metadata",
        "store",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "user_profile_id",
        "workspace_id",
    }
)

#: USD per 1M tokens, (input, output). Override with ``keel.llm.set_prices``.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4": (30.0, 60.0),
    "gpt-4-32k": (60.0, 120.0),
    "gpt-4-turbo": (10.0, 30.0),
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4.1-nano": (0.1, 0.4),
    "gpt-3.5-turbo": (0.5, 1.5),
    "o1": (15.0, 60.0),
    "o1-mini": (1.1, 4.4),
    "o3": (2.0, 8.0),
    "o3-mini": (1.1, 4.4),
    "o4-mini": (1.1, 4.4),
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
    "text-embedding-ada-002": (0.1, 0.0),
    "claude-3-opus": (15.0, 75.0),
    "claude-3-sonnet": (3.0, 15.0),
    "claude-3-5-sonnet": (3.0, 15.0),
    "claude-3-7-sonnet": (3.0, 15.0),
    "claude-3-haiku": (0.25, 1.25),
    "claude-3-5-haiku": (0.8, 4.0),
    "claude-opus-4": (15.0, 75.0),
    "claude-opus-4-1": (15.0, 75.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-6": (5.0, 25.0),
    "claude-opus-4-7": (5.0, 25.0),
    "claude-opus-4-8": (5.0, 25.0),
    "claude-opus-5": (5.0, 25.0),
    "claude-opus-5-5": (4.0, 20.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-sonnet-5": (2.0, 10.0),
    "claude-sonnet-5-5": (2.0, 10.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-fable-5-1": (10.0, 50.0),
}

_SENTINELS = ("NotGiven", "Omit")
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _is_sentinel(value: Any) -> bool:
    # openai.NOT_GIVEN / openai.omit: "argument not passed" (no import of openai here).
    return type(value).__name__ in _SENTINELS


def _key(key: Any) -> str:
    """A mapping key as JSON writes it (so both hashing paths agree)."""
    if key is True or key is False or key is None:
        return json.dumps(key)
    if isinstance(key, int | float) and not isinstance(key, enum.Enum):
        return json.dumps(key)
    return str(key)


def normalize(value: Any) -> Any:
    """``value`` as plain JSON data (a deep copy): mappings, lists, scalars.

    Objects with ``model_dump`` (pydantic, the openai types) are dumped; the
    openai "not given" sentinels are dropped from mappings; non-finite floats
    become strings as in :func:`keel.core.hashing.canonical_json`; anything
    else becomes its ``str``. The copy is a snapshot: later changes to the
    caller's lists (a chat history appended to) do not change it.
    """
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if kind is dict or isinstance(value, Mapping):
        return {
            (k if type(k) is str else _key(k)): normalize(v)
            for k, v in value.items()
            if type(v).__name__ not in _SENTINELS
        }
    if kind is list or kind is tuple:
        return [normalize(v) for v in value]
    if isinstance(value, enum.Enum):
        return normalize(value.value)
    if isinstance(value, str):  # subclasses
        return str.__str__(value)
    if isinstance(value, bool | int):
        return int(value) if not isinstance(value, bool) else bool(value)
    if isinstance(value, float):
        return normalize(float(value))
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return normalize(dump(mode="json", exclude_unset=True, warnings=False))
    if isinstance(value, list | tuple):
        return [normalize(v) for v in value]
    if _is_sentinel(value):
        return None
    return str(value)


def encode_normalized(value: Any) -> bytes:
    """``canonical_json(value)`` for data that is already :func:`normalize`-d (no fixing pass: faster)."""
    return _ENCODER.encode(value).encode("utf-8")


def hash_request(endpoint: str, request: Mapping[str, Any]) -> str:
    """The request hash of an already :func:`normalize`-d request.

    Equal to hashing ``canonical_json`` of the same data (normalized data needs
    no fixing, so it is encoded directly: this is on every call's path).
    """
    kept = {k: v for k, v in request.items() if v is not None and k not in VOLATILE_FIELDS}
    return hash_bytes(encode_normalized({"endpoint": endpoint, "request": kept}))


_STRICT = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def request_hash(endpoint: str, request: Mapping[str, Any]) -> str:
    """The cassette key of a call to ``endpoint`` with keyword arguments ``request``.

    The same as ``hash_request(endpoint, normalize(request))``; plain JSON
    arguments (the usual case) are encoded directly, without the copy.
    """
    kept = {
        k: v
        for k, v in request.items()
        if v is not None and k not in VOLATILE_FIELDS and type(v).__name__ not in _SENTINELS
    }
    try:
        return hash_bytes(_STRICT.encode({"endpoint": endpoint, "request": kept}).encode("utf-8"))
    except (TypeError, ValueError):  # objects, NaN: take the normalizing path
        return hash_request(endpoint, normalize(request))


# -- prices ---------------------------------------------------------------------
def find_price(model: str | None, prices: Mapping[str, tuple[float, float]]) -> tuple[float, float] | None:
    """``(input, output)`` USD per 1M tokens for ``model``: the exact name, else the longest
    listed prefix ending at ``-``, ``:`` or ``@``; a provider path (``openai/gpt-4o``) is
    also tried without its provider."""
    if not model:
        return None
    for name in (model, model.rsplit("/", 1)[-1]):
        found = prices.get(name)
        if found is not None:
            return found
        best = ""
        for listed in prices:
            if (
                len(listed) > len(best)
                and name.startswith(listed)
                and name[len(listed) : len(listed) + 1] in ("-", ":", "@")
            ):
                best = listed
        if best:
            return prices[best]
    return None


def call_cost(
    model: str, input_tokens: int | None, output_tokens: int | None, prices: Mapping[str, tuple[float, float]]
) -> float | None:
    """Dollars for one call, or None when the model has no price or usage is unknown."""
    price = find_price(model, prices)
    if price is None or (input_tokens is None and output_tokens is None):
        return None
    return ((input_tokens or 0) * price[0] + (output_tokens or 0) * price[1]) / 1_000_000


def usage_tokens(response: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """``(input_tokens, output_tokens)`` of a dumped response (chat, responses, embeddings or
    Anthropic messages: its prompt-cache reads and writes count as input)."""
    usage = response.get("usage") if isinstance(response, Mapping) else None
    if not isinstance(usage, Mapping):
        return None, None
    inp = usage.get("prompt_tokens", usage.get("input_tokens"))
    out = usage.get("completion_tokens", usage.get("output_tokens"))
    if out is None and inp is not None and "total_tokens" in usage:
        out = max(0, int(usage["total_tokens"]) - int(inp))  # embeddings: no output tokens
    for cached in ("cache_creation_input_tokens", "cache_read_input_tokens"):  # Anthropic
        if usage.get(cached):
            inp = int(inp or 0) + int(usage[cached])
    return (int(inp) if inp is not None else None, int(out) if out is not None else None)


# -- streams --------------------------------------------------------------------
def _get(item: Any, key: str, default: Any = None) -> Any:
    """A field of dumped data (a mapping) or of a client's response object (an attribute)."""
    if isinstance(item, Mapping):
        return item.get(key, default)
    return getattr(item, key, default)


def assemble_chat_stream(chunks: Iterable[Any]) -> dict[str, Any]:
    """The ``ChatCompletion`` (as data) that a list of ``ChatCompletionChunk`` (dumped, or the
    client's objects) adds up to."""
    out: dict[str, Any] = {"object": "chat.completion", "choices": []}
    choices: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for key in ("id", "created", "model", "system_fingerprint", "service_tier"):
            value = _get(chunk, key)
            if value is not None and key not in out:
                out[key] = value
        usage = _get(chunk, "usage")
        if usage:
            out["usage"] = usage if isinstance(usage, Mapping) else normalize(usage)
        for delta_choice in _get(chunk, "choices") or ():
            index = int(_get(delta_choice, "index", 0) or 0)
            choice = choices.setdefault(
                index, {"index": index, "message": {"role": "assistant", "content": None}, "finish_reason": None}
            )
            delta = _get(delta_choice, "delta") or {}
            message = choice["message"]
            if _get(delta, "role"):
                message["role"] = _get(delta, "role")
            for field in ("content", "refusal"):
                piece = _get(delta, field)
                if piece is not None:
                    message[field] = (message.get(field) or "") + piece
            for call in _get(delta, "tool_calls") or ():
                calls = message.setdefault("tool_calls", [])
                position = _get(call, "index")
                position = len(calls) if position is None else int(position)
                while len(calls) <= position:
                    calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                target = calls[position]
                if _get(call, "id"):
                    target["id"] = _get(call, "id")
                if _get(call, "type"):
                    target["type"] = _get(call, "type")
                function = _get(call, "function") or {}
                target["function"]["name"] += _get(function, "name") or ""
                target["function"]["arguments"] += _get(function, "arguments") or ""
            finish = _get(delta_choice, "finish_reason")
            if finish is not None:
                choice["finish_reason"] = finish
            logprobs = _get(delta_choice, "logprobs")
            content = _get(logprobs, "content") if logprobs else None
            if content:
                choice.setdefault("logprobs", {"content": []})["content"].extend(normalize(list(content)))
    out["choices"] = [choices[i] for i in sorted(choices)]
    return out


def assemble_messages_stream(events: Iterable[Any]) -> dict[str, Any]:
    """The Anthropic ``Message`` (as data) that its stream events add up to (dumped, or the
    client's objects): ``message_start``, ``content_block_start`` / ``_delta`` / ``_stop``,
    ``message_delta`` (stop reason, usage), ``message_stop``."""
    out: dict[str, Any] = {"type": "message", "role": "assistant", "content": []}
    blocks: dict[int, dict[str, Any]] = {}
    partial_json: dict[int, str] = {}
    for event in events:
        kind = _get(event, "type")
        if kind == "message_start":
            message = normalize(_get(event, "message") or {})
            if isinstance(message, dict):
                out.update({k: v for k, v in message.items() if k != "content"})
        elif kind == "content_block_start":
            block = normalize(_get(event, "content_block") or {})
            blocks[int(_get(event, "index", 0) or 0)] = dict(block) if isinstance(block, Mapping) else {}
        elif kind == "content_block_delta":
            index = int(_get(event, "index", 0) or 0)
            block = blocks.setdefault(index, {"type": "text", "text": ""})
            delta = _get(event, "delta") or {}
            dtype = _get(delta, "type")
            if dtype == "text_delta":
                block["text"] = (block.get("text") or "") + (_get(delta, "text") or "")
            elif dtype == "input_json_delta":
                partial_json[index] = partial_json.get(index, "") + (_get(delta, "partial_json") or "")
            elif dtype == "thinking_delta":
                block["thinking"] = (block.get("thinking") or "") + (_get(delta, "thinking") or "")
            elif dtype == "signature_delta":
                block["signature"] = _get(delta, "signature")
            elif dtype == "citations_delta":
                block.setdefault("citations", []).append(normalize(_get(delta, "citation")))
        elif kind == "content_block_stop":
            index = int(_get(event, "index", 0) or 0)
            if index in partial_json and index in blocks:
                text = partial_json.pop(index)
                try:
                    blocks[index]["input"] = json.loads(text) if text else {}
                except ValueError:
                    blocks[index]["input"] = text
        elif kind == "message_delta":
            delta = _get(event, "delta") or {}
            for key in ("stop_reason", "stop_sequence"):
                value = _get(delta, key)
                if value is not None or key not in out:
                    out[key] = value
            usage = normalize(_get(event, "usage") or {})
            if isinstance(usage, Mapping):
                merged = dict(out.get("usage") or {})
                merged.update({k: v for k, v in usage.items() if v is not None})
                out["usage"] = merged
    out["content"] = [blocks[i] for i in sorted(blocks)]
    return out


def messages_stream_events(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The stream events (as data) of an Anthropic ``Message``: how a recording that was not
    streamed replays as a stream (the client's stream helpers accumulate them back into it)."""
    usage = dict(response.get("usage") or {})
    head = {k: response.get(k) for k in ("id", "type", "role", "model")}
    head.update(content=[], stop_reason=None, stop_sequence=None, usage={**usage, "output_tokens": 0})
    events: list[dict[str, Any]] = [{"type": "message_start", "message": head}]
    for index, block in enumerate(response.get("content") or ()):
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        deltas: list[dict[str, Any]] = []
        start = dict(block)
        if kind == "text":
            start["text"] = ""
            start.pop("citations", None)
            deltas.append({"type": "text_delta", "text": block.get("text") or ""})
        elif kind in ("tool_use", "server_tool_use"):
            start["input"] = {}
            deltas.append({"type": "input_json_delta", "partial_json": json.dumps(block.get("input") or {})})
        elif kind == "thinking":
            start.update(thinking="", signature="")
            deltas.append({"type": "thinking_delta", "thinking": block.get("thinking") or ""})
            deltas.append({"type": "signature_delta", "signature": block.get("signature") or ""})
        events.append({"type": "content_block_start", "index": index, "content_block": start})
        events.extend({"type": "content_block_delta", "index": index, "delta": d} for d in deltas)
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": response.get("stop_reason"), "stop_sequence": response.get("stop_sequence")},
            "usage": {"output_tokens": usage.get("output_tokens") or 0},
        }
    )
    events.append({"type": "message_stop"})
    return events


# -- finding the closest recorded request -------------------------------------------
def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            out.update(_flat(item, f"{prefix}[{i}]"))
        return out or {prefix: []}
    return {prefix: value}


def _hashed(request: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in request.items() if v is not None and k not in VOLATILE_FIELDS}


def request_similarity(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """How alike two normalized requests are, 0..1 (a cheap text ratio of their hashed parts)."""
    ta = canonical_json(_hashed(a)).decode()
    tb = canonical_json(_hashed(b)).decode()
    matcher = difflib.SequenceMatcher(None, ta, tb, autojunk=False)
    return matcher.quick_ratio() if max(len(ta), len(tb)) > 20_000 else matcher.ratio()


def _short(value: Any, limit: int = 60) -> str:
    """A value for a one-line message: strings quoted, anything else as JSON; long ones cut."""
    text = value if isinstance(value, str) else canonical_json(value).decode()
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return repr(text) if isinstance(value, str) else text


def request_diff(wanted: Mapping[str, Any], recorded: Mapping[str, Any], limit: int = 5) -> list[str]:
    """What differs between two normalized requests (hashed fields only), as short lines."""
    fa, fb = _flat(_hashed(wanted)), _flat(_hashed(recorded))
    lines = []
    for key in sorted(set(fa) | set(fb)):
        if key not in fb:
            lines.append(f"{key}: {_short(fa[key])} (not in the recording)")
        elif key not in fa:
            lines.append(f"{key}: missing (recorded {_short(fb[key])})")
        elif fa[key] != fb[key]:
            lines.append(f"{key}: {_short(fa[key])} (recorded {_short(fb[key])})")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
    return lines
