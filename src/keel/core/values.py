"""Param, metric and tag values: flattening, encoding and decoding.

Params are any JSON value. Nested dicts are flattened with dots
(``{"rag": {"top_k": 5}}`` -> ``rag.top_k = 5``). A param is stored as text
plus a type tag, so that it reads back as the value that was logged and a
filter can compare it as a string or as a number:

======  ===========================  ==============
type    stored text                  read back as
======  ===========================  ==============
str     the string itself            str
int     ``json.dumps``               int
float   ``json.dumps`` (NaN allowed) float
bool    ``true`` / ``false``         bool
null    ``null``                     None
json    canonical JSON (lists)       list / dict
======  ===========================  ==============
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterator, Mapping
from typing import Any

from keel.core.checks import MAX_JSON_DEPTH, is_unicode
from keel.core.names import check_key
from keel.core.redaction import REDACTED, is_secret_key, redact_mapping, redact_value
from keel.errors import InvalidInput

__all__ = [
    "MAX_PARAM_INT_DIGITS",
    "MAX_PARAM_LENGTH",
    "decode_param",
    "encode_param",
    "flatten",
    "metric_value",
]

MAX_PARAM_LENGTH = 64_000
#: Longest ``int`` param in digits (Python reads back at most 4,300 from text or JSON).
MAX_PARAM_INT_DIGITS = 4000


def flatten(values: Mapping[str, Any], prefix: str = "", _depth: int = 0) -> Iterator[tuple[str, Any]]:
    """Yield ``(dotted_key, leaf)`` pairs; empty dicts are kept as leaves."""
    if _depth > MAX_JSON_DEPTH:
        raise InvalidInput(f"dicts nest deeper than {MAX_JSON_DEPTH} levels (at {prefix[:60]!r})", "flatten the value")
    for key, value in values.items():
        if not isinstance(key, str):
            raise InvalidInput(f"param key {key!r} is not a string", "use string keys")
        full = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flatten(value, full + ".", _depth + 1)
        else:
            yield full, value


def encode_param(key: str, value: Any) -> tuple[str, str]:
    """Return ``(vtype, text)`` for a param value; raise InvalidInput if not JSON.

    Secrets never reach the text: a value under a secret-named key (``api_key``,
    ``db_password``...) is ``***``, and secrets inside other values are masked
    (:mod:`keel.core.redaction`).
    """
    check_key(key, "param key")
    if is_secret_key(key) and value is not None and value != "" and not isinstance(value, bool):
        value = REDACTED if not isinstance(value, Mapping | list | tuple) else redact_mapping({key: value})[key]
    if isinstance(value, str):
        vtype, text = "str", value
        if "\x00" in value or not is_unicode(value):
            raise InvalidInput(
                f"param {key!r} holds a NUL character or a lone surrogate", "log valid text (decode bytes properly)"
            )
        text = redact_value(value)
    elif isinstance(value, bool):
        vtype, text = "bool", "true" if value else "false"
    elif isinstance(value, int):
        # 14,000 bits is about 4,200 digits: over the limit, and still under what str() accepts
        text = "" if value.bit_length() > 14_000 else str(value)
        if not text or len(text.lstrip("-")) > MAX_PARAM_INT_DIGITS:
            raise InvalidInput(
                f"param {key!r} is an integer of more than {MAX_PARAM_INT_DIGITS:,} digits", "log it as a string"
            )
        vtype = "int"
    elif isinstance(value, float):
        vtype, text = "float", json.dumps(value)  # NaN/Infinity spelled as in JS
    elif value is None:
        vtype, text = "null", "null"
    else:
        try:
            text = json.dumps(redact_mapping(_jsonable(value)), sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise InvalidInput(
                f"param {key!r} has a value of type {type(value).__name__} that is not JSON",
                "log strings, numbers, booleans, None, lists or dicts (or str(value))",
            ) from exc
        vtype = "json"
    if len(text) > MAX_PARAM_LENGTH:
        raise InvalidInput(
            f"param {key!r} is {len(text)} characters long (limit {MAX_PARAM_LENGTH})",
            "log long text with log_text() or as an artifact",
        )
    return vtype, text


def _jsonable(value: Any, depth: int = 0) -> Any:
    if depth > MAX_JSON_DEPTH:
        raise InvalidInput(f"a param value nests deeper than {MAX_JSON_DEPTH} levels", "flatten the value")
    if isinstance(value, tuple | list):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, Mapping):
        return {_text(str(k)): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, str):
        return _text(value)
    if value is None or isinstance(value, int | float | bool):
        return value
    raise TypeError(type(value).__name__)


def _text(value: str) -> str:
    if not is_unicode(value):
        raise InvalidInput("a param value holds a lone surrogate", "log valid text (decode bytes properly)")
    return value


def decode_param(vtype: str, text: str) -> Any:
    """Inverse of :func:`encode_param` (without a JSON parse for scalars: it is hot in search)."""
    if vtype == "str":
        return text
    if vtype == "int":
        return int(text)
    if vtype == "float":
        return float(text)  # also reads NaN, Infinity, -Infinity
    if vtype == "bool":
        return text == "true"
    if vtype == "null":
        return None
    return json.loads(text)


def metric_value(key: str, value: Any) -> float:
    """Coerce a metric value to float (NaN and +/-inf are kept), else raise."""
    if isinstance(value, float):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            return float(value)
        except (OverflowError, ValueError, TypeError):
            raise InvalidInput(
                f"metric {key!r} has a value {type(value).__name__} that no 64-bit float can hold",
                "log a number within +/-1.8e308 (or float('inf'))",
            ) from None
    raise InvalidInput(
        f"metric {key!r} has a non-numeric value {value!r}",
        "metrics are numbers; log other values as params",
    )
