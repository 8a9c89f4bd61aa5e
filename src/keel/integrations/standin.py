"""A stand-in, OpenAI-compatible model server for demos and tests. Not a real LLM.

Start it in-process (``with StandInServer() as server: OpenAI(base_url=server.base_url,
api_key="none")``) or from the shell (``keel llm standin --port 8765``). It
listens on 127.0.0.1 only and serves what the ``openai`` client calls:

- ``POST /v1/chat/completions`` (``stream: true`` as server-sent events ending
  with ``data: [DONE]``; ``stream_options.include_usage`` adds a usage chunk;
  ``n`` choices; ``response_format`` JSON modes; a forced tool call when
  ``tool_choice`` is ``required`` or names a function),
- ``POST /v1/responses`` (also streamed: created, text deltas, completed),
- ``POST /v1/embeddings`` (hashed bag-of-words vectors: texts sharing words are
  similar; ``dimensions`` and ``encoding_format: base64`` honoured),
- ``GET /v1/models``,

and what the ``anthropic`` client calls (``Anthropic(base_url=server.anthropic_base_url)``):

- ``POST /v1/messages`` (Anthropic's Messages API: ``system``, ``messages`` with text
  or content blocks, ``max_tokens`` cutting the answer with ``stop_reason:
  max_tokens``, a forced ``tool_use`` block when ``tool_choice`` is ``any`` or names a
  tool; ``stream: true`` as Anthropic's server-sent events ``message_start``,
  ``content_block_start``, ``ping``, ``content_block_delta``, ``content_block_stop``,
  ``message_delta``, ``message_stop``; errors in Anthropic's ``{"type": "error"}`` shape).

**Deterministic**: the same request gets the same response, ``id`` and
``created`` included (both derived from a hash of the model, messages,
temperature, seed and the other sampling arguments). Usage counts words.
Every response carries the header ``x-keel-standin: 1``; OpenAI-shaped ones also
the field ``"keel_standin": true`` and the ``system_fingerprint`` ``fp_keel_standin``.

**Useful answers** for demos:

- simple arithmetic in the last user message ("What is 17 + 25?") is answered
  with just the number, correctly with probability ``p``: 0.92 for ``gpt-4*``,
  0.90 ``gpt-4o*``, 0.85 ``gpt-4o-mini*``, 0.78 ``gpt-3.5-turbo*``, 0.70
  otherwise; +0.04 if a system prompt says "step by step"; minus
  0.04 x temperature (default 1). The draw is a hash of the question (mostly,
  so a stronger configuration is right where a weaker one is) and of the
  request and choice index (sometimes). A wrong answer is off by a little.
- a judging request (it mentions rate/score/grade and a range like
  "1 to 5" or "0-1") gets a deterministic score in the upper part of the range;
- anything else gets a deterministic echo saying it is a stand-in.

**Latency** (default none): ``StandInServer(latency=0.2)`` or
``latency={"gpt-4": 0.8, "gpt-3.5-turbo": 0.3}`` (seconds, by model-name
prefix), or the environment variable ``KEEL_STANDIN_LATENCY`` (``0.2`` or
``gpt-4=0.8,gpt-3.5-turbo=0.3``); each request waits 75-125% of it.

**Samples** for tests of repeated calls: a chat (or messages) request to a model named
``counter`` (or ``counter-*``) is answered ``sample-1`` the first time this
server gets it, ``sample-2`` the second time, and so on (counted per request:
model, messages, sampling arguments), as a sampling model answers the same
question differently; its ``id`` differs each time too.

**Faults** for tests: the model name ``error-500`` (any status code) answers
with that HTTP error, ``slow-2.5`` waits 2.5 s first; the request header
``x-keel-standin-fault: 500`` or ``slow:2.5`` does the same for any model.
"""

from __future__ import annotations

import base64
import json
import os
import re
import struct
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from keel.core.hashing import canonical_json, hash_bytes

__all__ = ["FINGERPRINT", "StandInServer", "chat_answers", "embed_text", "model_accuracy"]

FINGERPRINT = "fp_keel_standin"
DEFAULT_DIMENSIONS = 256
_EPOCH = 1_750_000_000  # "created" = this plus a hash-derived offset: deterministic

_ACCURACY = {"gpt-4o-mini": 0.85, "gpt-4o": 0.90, "gpt-4": 0.92, "gpt-3.5-turbo": 0.78}
_MODELS = ("gpt-4", "gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo", "text-embedding-3-small", "standin")
_ARITHMETIC = re.compile(r"(-?\d+(?:\.\d+)?)\s*([-+*/x×÷])\s*(-?\d+(?:\.\d+)?)")
_JUDGE = re.compile(r"\b(rate|rating|score|grade)\b", re.IGNORECASE)
_RANGE = re.compile(r"\b(\d+(?:\.\d+)?)\s*(?:-|to|–)\s*(\d+(?:\.\d+)?)\b")
_WORD = re.compile(r"\w+", re.UNICODE)
_OFFSETS = (-10, -2, -1, 1, 2, 10)
# Arguments that change what is asked (and so the hash behind the answer and id).
_SAMPLING = ("model", "messages", "input", "instructions", "temperature", "top_p", "seed", "n", "tools", "tool_choice")


def _unit(*parts: Any) -> float:
    """A deterministic draw in [0, 1) from ``parts``."""
    digest = hash_bytes(canonical_json(list(parts)))
    return int(digest[:13], 16) / float(1 << 52)


def _prefixed(model: str, table: Mapping[str, float], default: float) -> float:
    best = ""
    for name in table:
        if model.startswith(name) and len(name) > len(best):
            best = name
    return table[best] if best else default


def model_accuracy(model: str, system: str = "", temperature: float | None = None) -> float:
    """The probability that the stand-in answers an arithmetic question right."""
    p = _prefixed(model, _ACCURACY, 0.70)
    if "step by step" in system.lower():
        p += 0.04
    p -= 0.04 * (1.0 if temperature is None else float(temperature))
    return max(0.0, min(1.0, p))


def _text(content: Any) -> str:
    """The text of a message content: a string or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def _format_number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _arithmetic(text: str) -> float | None:
    match = _ARITHMETIC.search(text)
    if match is None:
        return None
    a, op, b = float(match.group(1)), match.group(2), float(match.group(3))
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op in ("*", "x", "×"):
        return a * b
    return a / b if b else None


def chat_answers(request: Mapping[str, Any]) -> list[str]:
    """The assistant text of each of the ``n`` choices for a chat request (messages already read)."""
    messages = [m for m in request.get("messages") or [] if isinstance(m, Mapping)]
    model = str(request.get("model", ""))
    system = " ".join(_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
    users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
    last = users[-1] if users else ""
    temperature = request.get("temperature")
    key = {k: request.get(k) for k in _SAMPLING}
    answers = []
    for choice in range(int(request.get("n") or 1)):
        everything = f"{system} {last}"
        judged = _JUDGE.search(everything)
        span = _RANGE.search(everything) if judged else None
        result = _arithmetic(last) if span is None else None
        if span is not None:
            lo, hi = float(span.group(1)), float(span.group(2))
            score = lo + (hi - lo) * (0.6 + 0.4 * _unit("judge", key, choice))
            answer = f"{score:.2f}" if hi - lo <= 1 else str(round(score))
        elif result is not None:
            u = _unit("q", last, request.get("seed")) if _unit("m", key, choice) < 0.85 else _unit("r", key, choice)
            if u >= model_accuracy(model, system, temperature):
                result += _OFFSETS[int(_unit("wrong", key, choice) * len(_OFFSETS))]
            answer = _format_number(result)
        else:
            answer = f"(stand-in model {model}, not a real LLM) You said: {last[:400]}"
        answers.append(answer)
    fmt = request.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema"):
        answers = [json.dumps({"answer": a}) for a in answers]
    return answers


def embed_text(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """A unit vector: hashed bag of words (shared words -> similar vectors)."""
    vector = [0.0] * dimensions
    words = _WORD.findall(text.lower()) or [text]
    for word in words:
        digest = int(hash_bytes(word.encode("utf-8"))[:16], 16)
        vector[digest % dimensions] += 1.0 if (digest >> 64) & 1 else -1.0
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in vector]


def _count(text: str) -> int:
    return len(text.split())


def _words(text: str) -> list[str]:
    """Stream pieces: words with their following space (joined they give ``text`` back)."""
    pieces = re.findall(r"\S+\s*", text)
    return pieces or [text]


class _Reply:
    """What to send: a JSON body, or server-sent events (``data`` text, or ``(event, data)``)."""

    def __init__(
        self, status: int = 200, body: Any = None, events: Iterator[str | tuple[str, str]] | None = None
    ) -> None:
        self.status = status
        self.body = body
        self.events = events


def _error(status: int, message: str, code: str) -> _Reply:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return _Reply(status, {"error": {"message": message, "type": kind, "code": code, "param": None}})


# -- chat completions ---------------------------------------------------------------
def _chat(request: dict[str, Any], repeat: int = 0) -> _Reply:
    """A chat completion; ``repeat`` (a ``counter`` model's) is how many times this request came."""
    if not request.get("messages"):
        return _error(400, "messages is required (stand-in server)", "missing_messages")
    model = str(request.get("model", ""))
    key = {k: request.get(k) for k in _SAMPLING}
    digest = hash_bytes(canonical_json({**key, "repeat": repeat} if repeat else key))
    answers = chat_answers(request)
    if repeat:
        answers = [f"sample-{repeat}" + (f".{i}" if i else "") for i in range(len(answers))]
    prompt_tokens = sum(_count(_text(m.get("content"))) for m in request["messages"] if isinstance(m, Mapping))
    completion_tokens = sum(_count(a) for a in answers)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}  # fmt: skip
    tool = _forced_tool(request)
    head = {
        "id": f"chatcmpl-standin-{digest[:24]}",
        "created": _EPOCH + int(digest[24:31], 16) % 10_000_000,
        "model": model,
        "system_fingerprint": FINGERPRINT,
    }
    if request.get("stream"):
        options = request.get("stream_options") or {}
        return _Reply(events=_chat_events(head, answers, tool, usage if options.get("include_usage") else None))
    choices = []
    for index, answer in enumerate(answers):
        message: dict[str, Any] = {"role": "assistant", "content": answer, "refusal": None}
        finish = "stop"
        if tool is not None:
            message["content"] = None
            message["tool_calls"] = [_tool_call(tool, answer, digest, index)]
            finish = "tool_calls"
        choices.append({"index": index, "message": message, "logprobs": None, "finish_reason": finish})
    body = {**head, "object": "chat.completion", "choices": choices, "usage": usage, "keel_standin": True}
    return _Reply(body=body)


def _forced_tool(request: Mapping[str, Any]) -> str | None:
    tools = request.get("tools") or []
    choice = request.get("tool_choice")
    if not tools or choice in (None, "none", "auto"):
        return None
    if isinstance(choice, Mapping):
        return str((choice.get("function") or {}).get("name") or choice.get("name") or "")
    first = tools[0] if isinstance(tools[0], Mapping) else {}
    return str((first.get("function") or {}).get("name") or first.get("name") or "tool")


def _tool_call(name: str, answer: str, digest: str, index: int) -> dict[str, Any]:
    return {
        "id": f"call_{digest[:16]}{index}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps({"input": answer})},
    }


def _chat_events(
    head: dict[str, Any], answers: list[str], tool: str | None, usage: dict[str, int] | None
) -> Iterator[str]:
    base = {**head, "object": "chat.completion.chunk"}
    if usage is not None:
        base["usage"] = None

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return json.dumps({**base, "choices": [choice]})

    digest = head["id"].rsplit("-", 1)[-1]
    for index, answer in enumerate(answers):
        if tool is not None:
            call = _tool_call(tool, answer, digest, index)
            yield chunk(index, {"role": "assistant", "content": None, "tool_calls": [{"index": 0, **call}]})
            yield chunk(index, {}, "tool_calls")
            continue
        yield chunk(index, {"role": "assistant", "content": ""})
        for piece in _words(answer):
            yield chunk(index, {"content": piece})
        yield chunk(index, {}, "stop")
    if usage is not None:
        yield json.dumps({**base, "choices": [], "usage": usage})
    yield "[DONE]"


# -- responses ------------------------------------------------------------------------
def _responses(request: dict[str, Any]) -> _Reply:
    raw = request.get("input")
    messages: list[dict[str, Any]] = []
    if request.get("instructions"):
        messages.append({"role": "system", "content": str(request["instructions"])})
    if isinstance(raw, str):
        messages.append({"role": "user", "content": raw})
    elif isinstance(raw, list):
        for item in raw:
            if isinstance(item, Mapping) and item.get("role"):
                messages.append({"role": item["role"], "content": _text(item.get("content"))})
    if not messages:
        return _error(400, "input is required (stand-in server)", "missing_input")
    model = str(request.get("model", ""))
    chat = {**request, "messages": messages, "n": 1, "response_format": None}
    answer = chat_answers(chat)[0]
    key = {k: chat.get(k) for k in _SAMPLING}
    digest = hash_bytes(canonical_json(["responses", key]))
    input_tokens = sum(_count(m["content"]) for m in messages)
    output_tokens = _count(answer)
    message_id = f"msg_standin_{digest[:24]}"
    response = {
        "id": f"resp_standin_{digest[:24]}",
        "object": "response",
        "created_at": _EPOCH + int(digest[24:31], 16) % 10_000_000,
        "model": model,
        "status": "completed",
        "output": [
            {
                "type": "message",
                "id": message_id,
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": answer, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": request.get("tools") or [],
        "temperature": request.get("temperature"),
        "top_p": request.get("top_p"),
        "instructions": request.get("instructions"),
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
        "keel_standin": True,
    }
    if not request.get("stream"):
        return _Reply(body=response)

    def events() -> Iterator[str]:
        started = {**response, "status": "in_progress", "output": [], "usage": None}
        yield json.dumps({"type": "response.created", "sequence_number": 0, "response": started})
        number = 1
        for piece in _words(answer):
            yield json.dumps(
                {
                    "type": "response.output_text.delta",
                    "item_id": message_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": piece,
                    "logprobs": [],
                    "sequence_number": number,
                }
            )
            number += 1
        yield json.dumps({"type": "response.completed", "sequence_number": number, "response": response})

    return _Reply(events=events())


# -- embeddings -------------------------------------------------------------------------
def _embeddings(request: dict[str, Any]) -> _Reply:
    raw = request.get("input")
    if isinstance(raw, str):
        texts = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw):
        texts = [" ".join(map(str, raw))]  # one tokenized input
    elif isinstance(raw, list) and raw:
        texts = [t if isinstance(t, str) else " ".join(map(str, t)) for t in raw]
    else:
        return _error(400, "input is required (stand-in server)", "missing_input")
    dimensions = int(request.get("dimensions") or DEFAULT_DIMENSIONS)
    as_base64 = request.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(texts):
        vector: Any = embed_text(text, dimensions)
        if as_base64:
            vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = sum(_count(t) for t in texts)
    body = {
        "object": "list",
        "data": data,
        "model": str(request.get("model", "")),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "keel_standin": True,
    }
    return _Reply(body=body)


# -- Anthropic messages -------------------------------------------------------------------
def _anthropic_error(status: int, message: str) -> _Reply:
    kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
            429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")  # fmt: skip
    return _Reply(status, {"type": "error", "error": {"type": kind, "message": message}})


def _anthropic_tool(request: Mapping[str, Any]) -> str | None:
    tools = request.get("tools") or []
    choice = request.get("tool_choice")
    if not tools or not isinstance(choice, Mapping) or choice.get("type") not in ("any", "tool"):
        return None
    if choice.get("type") == "tool":
        return str(choice.get("name") or "")
    first = tools[0] if isinstance(tools[0], Mapping) else {}
    return str(first.get("name") or "tool")


def _messages(request: dict[str, Any], repeat: int = 0) -> _Reply:
    """An Anthropic ``Message``; ``repeat`` (a ``counter`` model's) is how many times this request came."""
    raw = request.get("messages")
    if not isinstance(raw, list) or not raw:
        return _anthropic_error(400, "messages: field required (stand-in server)")
    if not isinstance(request.get("max_tokens"), int) or isinstance(request.get("max_tokens"), bool):
        return _anthropic_error(400, "max_tokens: field required (stand-in server)")
    messages: list[dict[str, Any]] = []
    if request.get("system"):
        messages.append({"role": "system", "content": _text(request["system"])})
    for item in raw:
        if isinstance(item, Mapping) and item.get("role"):
            messages.append({"role": item["role"], "content": _text(item.get("content"))})
    model = str(request.get("model", ""))
    chat = {**request, "messages": messages, "n": 1, "response_format": None}
    key = {k: chat.get(k) for k in _SAMPLING}
    digest = hash_bytes(canonical_json(["messages", {**key, "repeat": repeat} if repeat else key]))
    answer = f"sample-{repeat}" if repeat else chat_answers(chat)[0]
    stop_reason = "end_turn"
    pieces = _words(answer)
    if len(pieces) > request["max_tokens"]:
        answer, stop_reason = "".join(pieces[: request["max_tokens"]]).rstrip(), "max_tokens"
    input_tokens = sum(_count(m["content"]) for m in messages)
    tool = _anthropic_tool(request)
    block: dict[str, Any] = {"type": "text", "text": answer}
    if tool is not None:
        block = {"type": "tool_use", "id": f"toolu_standin_{digest[:20]}", "name": tool, "input": {"input": answer}}
        stop_reason = "tool_use"
    output_tokens = _count(answer)
    message = {
        "id": f"msg_standin_{digest[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [block],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }
    if not request.get("stream"):
        return _Reply(body=message)

    def events() -> Iterator[tuple[str, str]]:
        start = {**message, "content": [], "stop_reason": None,
                 "usage": {"input_tokens": input_tokens, "output_tokens": 1}}  # fmt: skip
        yield "message_start", json.dumps({"type": "message_start", "message": start})
        opened = {**block, "input": {}} if tool is not None else {"type": "text", "text": ""}
        yield "content_block_start", json.dumps({"type": "content_block_start", "index": 0, "content_block": opened})
        yield "ping", json.dumps({"type": "ping"})
        if tool is not None:
            text = json.dumps(block["input"])
            parts = [text[i : i + 8] for i in range(0, len(text), 8)]
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in parts]
        else:
            deltas = [{"type": "text_delta", "text": p} for p in _words(answer)]
        for delta in deltas:
            yield "content_block_delta", json.dumps({"type": "content_block_delta", "index": 0, "delta": delta})
        yield "content_block_stop", json.dumps({"type": "content_block_stop", "index": 0})
        yield (
            "message_delta",
            json.dumps(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": output_tokens},
                }
            ),
        )
        yield "message_stop", json.dumps({"type": "message_stop"})

    return _Reply(events=events())


_ROUTES = {"chat/completions": _chat, "responses": _responses, "embeddings": _embeddings, "messages": _messages}


def _parse_latency(spec: str | None) -> float | dict[str, float]:
    if not spec:
        return 0.0
    if "=" not in spec:
        return float(spec)
    out = {}
    for part in spec.split(","):
        name, _, seconds = part.partition("=")
        if name.strip():
            out[name.strip()] = float(seconds)
    return out


def _fault(model: str, header: str | None) -> tuple[int | None, float]:
    """``(http status to fail with, seconds to wait first)`` asked for by the model name or header."""
    spec = (header or "").strip()
    if not spec:
        if model.startswith("error-"):
            spec = model[len("error-") :]
        elif model == "slow" or model.startswith("slow-"):
            spec = "slow:" + (model[len("slow-") :] or "2")
    if spec.startswith("slow"):
        _, _, seconds = spec.partition(":")
        try:
            return None, float(seconds or 2.0)
        except ValueError:
            return None, 2.0
    return (int(spec), 0.0) if spec.isdigit() else (None, 0.0)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass  # quiet: tests and demos print their own output

    def _route(self) -> str:
        path = self.path.split("?", 1)[0].strip("/")
        while path.startswith("v1/"):  # also /v1/v1/messages: an Anthropic client given base_url
            path = path[len("v1/") :]
        return path

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        route = self._route()
        if route == "models":
            data = [{"id": m, "object": "model", "created": _EPOCH, "owned_by": "keel-standin"} for m in _MODELS]
            self._send(_Reply(body={"object": "list", "data": data}))
        elif route.startswith("models/"):
            name = route[len("models/") :]
            self._send(_Reply(body={"id": name, "object": "model", "created": _EPOCH, "owned_by": "keel-standin"}))
        else:
            self._send(_error(404, f"no route GET /{route} (stand-in server)", "not_found"))

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        handler = _ROUTES.get(self._route())
        if handler is None:
            self._send(_error(404, f"no route POST /{self._route()} (stand-in server)", "not_found"))
            return
        try:
            request = json.loads(raw or b"{}")
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError:
            self._send(_error(400, "the body is not a JSON object (stand-in server)", "invalid_json"))
            return
        self.server.count()
        model = str(request.get("model", ""))
        status, wait = _fault(model, self.headers.get("x-keel-standin-fault"))
        wait += self.server.latency_for(model, request)
        if wait:
            time.sleep(wait)
        if status is not None:
            message = f"stand-in server: injected HTTP {status}"
            if handler is _messages:
                self._send(_anthropic_error(status, message))
            else:
                self._send(_error(status, message, f"standin_{status}"))
            return
        if handler in (_chat, _messages) and model.startswith("counter"):
            self._send(handler(request, self.server.repeat(request)))
            return
        self._send(handler(request))

    def _send(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        self.send_header("x-keel-standin", "1")
        if reply.events is None:
            body = json.dumps(reply.body).encode("utf-8")
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for event in reply.events:
            if isinstance(event, tuple):  # Anthropic names each event
                self._chunk(f"event: {event[0]}\ndata: {event[1]}\n\n".encode())
            else:
                self._chunk(f"data: {event}\n\n".encode())
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode("ascii") + data + b"\r\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    latency: float | dict[str, float] = 0.0
    served = 0
    _count_lock: threading.Lock
    _repeats: dict[str, int]

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client went away (a timeout, a closed stream): nothing to report
        super().handle_error(request, client_address)

    def count(self) -> None:
        with self._count_lock:
            self.served += 1

    def repeat(self, request: Mapping[str, Any]) -> int:
        """How many times this request (model, messages, sampling arguments) came, this one included."""
        key = hash_bytes(canonical_json({k: request.get(k) for k in (*_SAMPLING, "system")}))
        with self._count_lock:
            self._repeats[key] = n = self._repeats.get(key, 0) + 1
        return n

    def latency_for(self, model: str, request: Mapping[str, Any]) -> float:
        base = self.latency if isinstance(self.latency, float) else _prefixed(model, self.latency, 0.0)
        if not base:
            return 0.0
        return base * (0.75 + 0.5 * _unit("latency", {k: request.get(k) for k in _SAMPLING}))


class StandInServer:
    """The stand-in model server on 127.0.0.1 (port 0: any free port), in a background thread.

    Example::

        with StandInServer() as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="standin")
            client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "What is 2 + 2?"}])

    Args:
        port: the TCP port; 0 picks a free one.
        latency: seconds per request (a number, or per model-name prefix);
            default ``KEEL_STANDIN_LATENCY`` or none.
        host: the address to listen on (loopback by default).
    """

    def __init__(
        self, port: int = 0, latency: float | Mapping[str, float] | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.host = host
        self.port = port
        if latency is None:
            latency = _parse_latency(os.environ.get("KEEL_STANDIN_LATENCY"))
        self.latency: float | dict[str, float] = float(latency) if isinstance(latency, int | float) else dict(latency)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._served_before = 0

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: pass it as the client's ``base_url``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """``http://127.0.0.1:PORT``: the ``base_url`` of an ``anthropic.Anthropic`` client
        (it adds ``/v1/messages`` itself)."""
        return f"http://{self.host}:{self.port}"

    @property
    def requests_served(self) -> int:
        """How many model requests (chat, responses, embeddings, messages) were answered."""
        return self._served_before + (self._server.served if self._server is not None else 0)

    def start(self) -> str:
        """Listen and serve in a daemon thread; return :attr:`base_url`."""
        if self._server is not None:
            return self.base_url
        server = _Server((self.host, self.port), _Handler)
        server._count_lock = threading.Lock()
        server._repeats = {}
        server.latency = self.latency
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="keel-standin", daemon=True
        )
        self._thread.start()
        return self.base_url

    def serve_forever(self) -> None:
        """Serve on the calling thread until interrupted (the CLI's foreground mode)."""
        server = _Server((self.host, self.port), _Handler)
        server._count_lock = threading.Lock()
        server._repeats = {}
        server.latency = self.latency
        self.port = server.server_address[1]
        self._server = server
        try:
            server.serve_forever(poll_interval=0.2)
        finally:
            server.server_close()
            self._server = None

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._served_before += server.served
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> StandInServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._server is not None else "stopped"
        return f"<StandInServer {self.base_url} {state}>"
