"""A span's inputs and outputs, read from its attributes and events by convention.

OpenTelemetry instrumentations do not send a span's inputs and outputs as fields: they put
them in attributes or events, each convention its own way (OpenInference's ``input.value``,
MLflow's ``mlflow.spanInputs``, the OpenTelemetry GenAI semantic conventions' messages in
their successive shapes). :func:`payloads_of` reads them all into keel's ``inputs`` /
``outputs`` and says which attributes and events it read, so a source (the OTLP decoder,
:mod:`keel.integrations.otlp`) stores them once. Bounded: JSON text is parsed only up to
:data:`MAX_PAYLOAD_TEXT` characters, :data:`MAX_PAYLOAD_DEPTH` levels and
:data:`MAX_PAYLOAD_NODES` values (past them it stays text). Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

__all__ = ["MAX_PAYLOAD_DEPTH", "MAX_PAYLOAD_NODES", "MAX_PAYLOAD_TEXT", "Payloads", "payloads_of"]

#: The longest JSON text parsed into a payload (as keel.core.traces.MAX_PAYLOAD_BYTES).
MAX_PAYLOAD_TEXT = 8 * 1024 * 1024
#: A payload read from JSON text is kept parsed only within these bounds (else kept as the text).
MAX_PAYLOAD_DEPTH = 20
MAX_PAYLOAD_NODES = 50_000
_MAX_INDEX_DIGITS = 5  # gen_ai.prompt.N.*: N below 100,000
_MAX_PATH_PARTS = 16

#: Events whose attributes are one message of the request (GenAI semantic conventions 1.28-1.36).
_MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
_CHOICE_EVENT = "gen_ai.choice"
_DETAILS_EVENT = "gen_ai.client.inference.operation.details"  # GenAI conventions 1.37+, event mode
_PROMPT_EVENT = "gen_ai.content.prompt"  # GenAI conventions 1.26-1.27
_COMPLETION_EVENT = "gen_ai.content.completion"
_EVENT_BODY = "gen_ai.event.content"  # the whole event body as JSON text, as some instrumentations send it
_NOT_MESSAGE_FIELDS = frozenset({"gen_ai.system", "gen_ai.provider.name", "event.name", _EVENT_BODY})
_FLAT_PREFIXES = ("gen_ai.prompt.", "gen_ai.completion.", "llm.input_messages.", "llm.output_messages.")


class Payloads(NamedTuple):
    """A span's inputs and outputs read from its attributes and events by convention, with the
    attribute keys and event positions they were read from (a source stores them once, as the
    payloads, not a second time as attributes)."""

    inputs: Any
    outputs: Any
    attributes: frozenset[str]
    events: frozenset[int]


def payloads_of(attributes: Mapping[str, Any], events: Sequence[Any] = ()) -> Payloads:
    """The inputs and outputs a span carries by convention; None where it carries none.

    In order of preference, for inputs (outputs alike, with ``output``/``completion``/``choice``):

    1. OpenInference's ``input.value`` (JSON text parsed unless ``input.mime_type`` is
       ``text/plain``), then MLflow's ``mlflow.spanInputs``;
    2. OpenTelemetry GenAI (1.37+): ``gen_ai.input.messages``, with ``gen_ai.system_instructions``
       as a leading ``system`` message;
    3. GenAI before 1.37: ``gen_ai.prompt`` (JSON text), the flattened ``gen_ai.prompt.N.role`` /
       ``.content`` / ``.tool_calls.M.*`` attributes, OpenInference's ``llm.input_messages.N.message.*``;
    4. events: ``gen_ai.{system,user,assistant,tool}.message`` (one message each, in order),
       ``gen_ai.choice`` (outputs, by ``index``), ``gen_ai.content.prompt`` / ``.completion``, and
       ``gen_ai.client.inference.operation.details`` (the attributes of 2. on an event).

    GenAI messages are lists of message objects as the convention shapes them. JSON text is parsed
    only within :data:`MAX_PAYLOAD_DEPTH` / :data:`MAX_PAYLOAD_NODES` (else kept as text). Pure.
    """
    flat = any(isinstance(k, str) and k.startswith(_FLAT_PREFIXES) for k in attributes)
    inputs, input_keys = _attribute_payload(attributes, "input", flat)
    outputs, output_keys = _attribute_payload(attributes, "output", flat)
    used_events: set[int] = set()
    if events and (inputs is None or outputs is None):
        from_events, to_events, used_events = _event_payloads(events, inputs is None, outputs is None)
        inputs = from_events if inputs is None else inputs
        outputs = to_events if outputs is None else outputs
    return Payloads(inputs, outputs, frozenset(input_keys + output_keys), frozenset(used_events))


def _bounded(value: Any) -> bool:
    """True when a parsed JSON value is within the payload depth and size bounds, and its text is
    valid Unicode (JSON's ``\\ud800`` escapes can spell a lone surrogate, which no store takes)."""
    stack = [(value, 0)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_PAYLOAD_NODES or depth > MAX_PAYLOAD_DEPTH:
            return False
        if isinstance(item, str):
            if not _unicode(item):
                return False
        elif isinstance(item, dict):
            nodes += len(item)  # the keys
            if not all(_unicode(k) for k in item):
                return False
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def _unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_value(value: Any) -> Any:
    """``value`` parsed when it is JSON text (an object, an array or a string) within bounds, else as given."""
    if not isinstance(value, str) or len(value) > MAX_PAYLOAD_TEXT:
        return value
    head = value[:1]
    if head.isspace():
        head = value.lstrip()[:1]
    if head not in ("[", "{", '"'):
        return value
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        return value
    if (
        len(value) <= MAX_PAYLOAD_NODES  # a value or a key takes at least a character of the text
        and value.count("[") + value.count("{") <= MAX_PAYLOAD_DEPTH  # no deeper than its brackets
        and "\\u" not in value  # no escape that could spell a lone surrogate
        and _unicode(value)
    ):
        return parsed  # within the bounds by its text alone (the usual message list): no walk
    return parsed if _bounded(parsed) else value


def _present(value: Any) -> bool:
    return value is not None and value != ""


def _attribute_payload(attributes: Mapping[str, Any], side: str, flat: bool) -> tuple[Any, list[str]]:
    """One side (``input``/``output``) of a span's payload from its attributes, and the keys used
    (``flat``: some attributes are flattened messages, ``gen_ai.prompt.N.*`` and the like)."""
    key = f"{side}.value"
    value = attributes.get(key)
    if _present(value):
        plain = attributes.get(f"{side}.mime_type") == "text/plain"
        return (value if plain else _json_value(value)), [key]
    key = "mlflow.spanInputs" if side == "input" else "mlflow.spanOutputs"
    value = attributes.get(key)
    if _present(value):
        return _json_value(value), [key]
    messages, keys = _genai_messages(attributes, side)
    if keys:
        return messages, keys
    key = "gen_ai.prompt" if side == "input" else "gen_ai.completion"
    value = attributes.get(key)
    if _present(value):
        return _json_value(value), [key]
    if not flat:
        return None, []
    for prefix, unwrap in ((f"{key}.", False), (f"llm.{side}_messages.", True)):
        found = _indexed(attributes, prefix)
        if found is not None:
            items, keys = found
            if unwrap:  # OpenInference: llm.input_messages.N.message.{role,content,...}
                items = [
                    i["message"] if isinstance(i, dict) and isinstance(i.get("message"), dict) else i for i in items
                ]
            return items, keys
    return None, []


def _genai_messages(attributes: Mapping[str, Any], side: str) -> tuple[Any, list[str]]:
    """``gen_ai.{input,output}.messages`` (and ``gen_ai.system_instructions`` before the inputs)."""
    key = f"gen_ai.{side}.messages"
    value = attributes.get(key)
    keys = [key] if _present(value) else []
    messages = _json_value(value) if keys else None
    if side == "input":
        system = attributes.get("gen_ai.system_instructions")
        if _present(system):
            keys.append("gen_ai.system_instructions")
            parsed = _json_value(system)
            first = (
                {"role": "system", "parts": parsed}
                if isinstance(parsed, list)
                else {"role": "system", "content": parsed}
            )
            if messages is None:
                messages = [first]
            elif isinstance(messages, list):
                messages = [first, *messages]
            else:
                messages = [first, messages]
    return messages, keys


def _index(part: str) -> int | str:
    return int(part) if part.isascii() and part.isdigit() and len(part) <= _MAX_INDEX_DIGITS else part


def _indexed(attributes: Mapping[str, Any], prefix: str) -> tuple[list[Any], list[str]] | None:
    """Attributes flattened as ``PREFIX.N.path.to.field`` back as a list of objects (N in order)."""
    items: dict[int | str, Any] = {}
    used: list[str] = []
    for key, value in attributes.items():
        if not isinstance(key, str) or not key.startswith(prefix):
            continue
        path = key[len(prefix) :].split(".", _MAX_PATH_PARTS)
        if len(path) < 2 or len(path) > _MAX_PATH_PARTS or not isinstance(_index(path[0]), int):
            continue
        if _put(items, path, value):
            used.append(key)
    if not items:
        return None
    return [_listed(items[i]) for i in sorted(items, key=int)], used


def _put(node: dict[int | str, Any], path: list[str], value: Any) -> bool:
    for part in path[:-1]:
        key = _index(part)
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            return False
        node = child
    key = _index(path[-1])
    if key in node:
        return False
    node[key] = value
    return True


def _listed(node: Any) -> Any:
    """Objects whose keys are all indexes as lists (by index); other keys as text."""
    if not isinstance(node, dict):
        return node
    if node and all(isinstance(k, int) for k in node):
        return [_listed(node[k]) for k in sorted(node)]
    return {str(k): _listed(v) for k, v in node.items()}


def _event_payloads(events: Sequence[Any], want_inputs: bool, want_outputs: bool) -> tuple[Any, Any, set[int]]:
    """Inputs and outputs from GenAI events, and the positions of the events they came from."""
    messages: list[tuple[int, Any]] = []  # (position, message)
    choices: list[tuple[int, int, Any]] = []  # (index, position, message)
    whole_in: tuple[int, Any] | None = None  # (position, payload) of a prompt / details event
    whole_out: tuple[int, Any] | None = None
    for position, event in enumerate(events):
        if not isinstance(event, Mapping):
            continue
        name = event.get("name")
        attributes = event.get("attributes")
        if not isinstance(name, str) or not isinstance(attributes, Mapping):
            continue
        if name in _MESSAGE_EVENTS:
            messages.append((position, _event_message(_MESSAGE_EVENTS[name], attributes)))
        elif name == _CHOICE_EVENT:
            index = attributes.get("index")
            order = index if isinstance(index, int) and not isinstance(index, bool) else len(choices)
            choices.append((order, position, _choice(attributes)))
        elif name == _PROMPT_EVENT and whole_in is None and _present(attributes.get("gen_ai.prompt")):
            whole_in = (position, _json_value(attributes["gen_ai.prompt"]))
        elif name == _COMPLETION_EVENT and whole_out is None and _present(attributes.get("gen_ai.completion")):
            whole_out = (position, _json_value(attributes["gen_ai.completion"]))
        elif name == _DETAILS_EVENT:
            found_in, keys_in = _genai_messages(attributes, "input")
            found_out, keys_out = _genai_messages(attributes, "output")
            if keys_in and whole_in is None:
                whole_in = (position, found_in)
            if keys_out and whole_out is None:
                whole_out = (position, found_out)
    used: set[int] = set()
    inputs: Any = None
    outputs: Any = None
    if want_inputs:
        if whole_in is not None:
            used.add(whole_in[0])
            inputs = whole_in[1]
        elif messages:
            used.update(p for p, _ in messages)
            inputs = [m for _, m in messages]
    if want_outputs:
        if whole_out is not None:
            used.add(whole_out[0])
            outputs = whole_out[1]
        elif choices:
            choices.sort(key=lambda c: (c[0], c[1]))
            used.update(p for _, p, _ in choices)
            outputs = [c for _, _, c in choices]
    return inputs, outputs, used


def _event_message(role: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": role}
    body = _json_value(attributes.get(_EVENT_BODY))
    if isinstance(body, dict):
        message.update(body)
    for key, value in attributes.items():
        if key not in _NOT_MESSAGE_FIELDS:
            message[key] = _json_value(value) if key == "tool_calls" else value
    return message


def _choice(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """A ``gen_ai.choice`` event as an output message: its ``message`` with ``finish_reason`` and ``index``."""
    body = _json_value(attributes.get(_EVENT_BODY))
    fields = dict(body) if isinstance(body, dict) else {}
    fields.update((k, v) for k, v in attributes.items() if k not in _NOT_MESSAGE_FIELDS)
    message = _json_value(fields.pop("message", None))
    out: dict[str, Any] = {"role": "assistant"}
    if isinstance(message, dict):
        out.update(message)
    elif message is not None:
        out["content"] = message
    for key, value in fields.items():
        out[key] = _json_value(value) if key == "tool_calls" else value
    return out
