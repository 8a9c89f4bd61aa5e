"""Model cards: the structured description a model version carries.

A card is a YAML (or JSON) mapping. The sections users already write are
known and type-checked; every other key, at any level, is kept as written::

    model:      {name: chat-assistant, version: 3, base_model: ..., quantization: AWQ-4bit}
    training:   {dataset: custom_instructions_v2, epochs: 3, learning_rate: 2e-5}
    evaluation: {accuracy: 0.85, latency_p95_ms: 150, hallucination_rate: 0.03}
    deployment: {stage: production, serving_framework: vllm, gpu: A100-40GB, replicas: 2}

Lossless round trip: a card imported from text keeps that text, and exporting
returns it byte for byte; a card given as a dict exports as YAML that loads
back to an equal dict. Numbers follow YAML 1.2, so ``2e-5`` is the float it
looks like (PyYAML's YAML 1.1 rules would read it as a string). Dates and
times become ISO-8601 strings, so a card is always JSON.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from keel.core.yaml_safe import Yaml12Loader, compose_yaml, construct_yaml
from keel.errors import InvalidInput

__all__ = ["CardChange", "KNOWN_FIELDS", "card_changes", "check_card", "dump_card", "parse_card"]

_NUMBER = "number"
_INTEGER = "integer"
_TEXT = "text"
_VERSION = "integer or text"

#: The typed fields of the sections users already write; other keys are free.
KNOWN_FIELDS: dict[str, dict[str, str]] = {
    "model": {"name": _TEXT, "version": _VERSION, "base_model": _TEXT, "quantization": _TEXT},
    "training": {"dataset": _TEXT, "epochs": _INTEGER, "learning_rate": _NUMBER, "batch_size": _INTEGER},
    "evaluation": {"accuracy": _NUMBER, "latency_p95_ms": _NUMBER, "hallucination_rate": _NUMBER},
    "deployment": {"stage": _TEXT, "serving_framework": _TEXT, "gpu": _TEXT, "replicas": _INTEGER},
}

# Cards are read by keel's bounded safe YAML loader with YAML 1.2 floats ("2e-5", "1E3", ".5"):
# no alias bomb, unknown tag or 100,000-digit number gets past it (see keel.core.yaml_safe).
_CardLoader = Yaml12Loader


@dataclass(frozen=True)
class CardChange:
    """One difference between two cards: a dotted path, its old and new values
    (``None`` with ``present=False`` on a side means the key is absent there)."""

    path: str
    old: Any
    new: Any
    in_old: bool = True
    in_new: bool = True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"path": self.path, "old": self.old, "new": self.new, "in_old": self.in_old, "in_new": self.in_new}


def parse_card(text: str, source: str = "model card") -> dict[str, Any]:
    """Parse and check a card written as YAML or JSON; errors name the key and line.

    Raises:
        InvalidInput: malformed YAML, an unknown tag (``!!python/...``), an alias bomb or any
            other bound of :mod:`keel.core.yaml_safe` passed (``<source>:<line>: ...``), or a
            card of the wrong shape.
    """
    node = compose_yaml(text, source, _CardLoader)
    if node is None:
        raise InvalidInput(f"{source} is empty", "a card is a mapping: model:, training:, evaluation:, deployment:")
    lines = dict(_node_lines(node, ""))
    data = construct_yaml(node, source, _CardLoader)
    return check_card(data, source, lines)


def _node_lines(node: yaml.Node, prefix: str) -> Iterator[tuple[str, int]]:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # a list or mapping as a key: refused when the card is built
            path = f"{prefix}{key_node.value}"
            yield path, key_node.start_mark.line + 1
            yield from _node_lines(value_node, path + ".")


def check_card(data: Any, source: str = "model card", lines: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Check a card's shape and the types of its known fields; return it as plain JSON data.

    Raises :class:`InvalidInput` naming the key path (and the line, when known).
    """
    if not isinstance(data, Mapping):
        raise InvalidInput(
            f"{source} must be a mapping, not {_kind(data)}",
            "write sections such as model:, training:, evaluation:, deployment:",
        )
    card = _plain(data, "", source, lines or {})
    for section, fields in KNOWN_FIELDS.items():
        if section not in card or card[section] is None:
            continue
        body = card[section]
        if not isinstance(body, dict):
            raise _bad(source, lines, section, f"must be a mapping, not {_kind(body)}", f"write {section}: {{...}}")
        for key, kind in fields.items():
            if key in body and body[key] is not None and not _is(kind, body[key]):
                raise _bad(
                    source, lines, f"{section}.{key}", f"must be {_article(kind)}, not {body[key]!r}", "fix its value"
                )
    return card


def _plain(value: Any, path: str, source: str, lines: Mapping[str, int]) -> Any:
    """Plain JSON data: string keys, dates as ISO strings, finite-or-not floats kept."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, str | int | float):
                raise _bad(source, lines, path.rstrip(".") or "(top)", f"has a key {key!r} that is not text", "")
            out[str(key)] = _plain(item, f"{path}{key}.", source, lines)
        return out
    if isinstance(value, list | tuple):
        return [_plain(item, path, source, lines) for item in value]
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise _bad(source, lines, path.rstrip("."), f"holds a {type(value).__name__}", "use text, numbers, lists, mappings")


def _is(kind: str, value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if kind == _TEXT:
        return isinstance(value, str)
    if kind == _INTEGER:
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == _NUMBER:
        return isinstance(value, int | float)
    return isinstance(value, int | str)  # _VERSION


def _article(kind: str) -> str:
    return {"integer": "an integer", "number": "a number", "text": "text"}.get(kind, "an integer or text")


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "text"
    if value is None:
        return "empty"
    return f"a {type(value).__name__}"


def _bad(source: str, lines: Mapping[str, int] | None, path: str, problem: str, hint: str) -> InvalidInput:
    line = (lines or {}).get(path)
    where = f" (line {line})" if line else ""
    return InvalidInput(f"{source}: {path} {problem}{where}", hint or "fix the card")


class _CardDumper(yaml.SafeDumper):
    """Block-style YAML; floats written so YAML 1.1 and 1.2 readers both see floats."""


def _represent_float(dumper: yaml.SafeDumper, value: float) -> yaml.Node:
    if math.isnan(value) or math.isinf(value):
        return dumper.represent_float(value)
    text = repr(value)
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return dumper.represent_scalar("tag:yaml.org,2002:float", text)


_CardDumper.add_representer(float, _represent_float)


def dump_card(card: Mapping[str, Any]) -> str:
    """A card as YAML, keys in their stored order."""
    return yaml.dump(dict(card), Dumper=_CardDumper, sort_keys=False, allow_unicode=True, default_flow_style=False)


def card_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[CardChange]:
    """Every leaf that differs between two cards, by dotted path (old's key order, then new keys)."""
    a, b = dict(_leaves(old, "")), dict(_leaves(new, ""))
    out = []
    for path in list(a) + [p for p in b if p not in a]:
        if path in a and path in b:
            if not _same(a[path], b[path]):
                out.append(CardChange(path, a[path], b[path]))
        elif path in a:
            out.append(CardChange(path, a[path], None, in_new=False))
        else:
            out.append(CardChange(path, None, b[path], in_old=False))
    return out


def _leaves(value: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            yield from _leaves(item, path + ".")
        else:
            yield path, item


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(type(a) is type(b) and a == b) or (
        isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool) and a == b
    )
