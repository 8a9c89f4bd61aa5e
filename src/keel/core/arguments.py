"""Checking an operation's arguments against its type hints and size limits.

Values that arrive over the wire (already decoded into the closed set of types
the codec knows) are checked here before any operation runs: each against the
parameter's annotation (``str``, ``int | None``, ``list[str]``,
``dict[str, Any]``, ``Literal[...]``, a dataclass, ...), and all of them
against size bounds: the longest string, the most items in one container, the
deepest nesting and the number of values in all. Strings must be valid UTF-8
(no lone surrogates). Integers anywhere in the arguments must fit the database's 64
bits. Every failure is an :class:`~keel.errors.InvalidInput` naming the
argument.

A dataclass that knows how to check itself (a ``validate()`` method, as the
tracking :class:`~keel.core.batch.WriteBatch` has) is trusted to do so, so a
hot path is checked once, by the code that knows its rows.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from keel.core.checks import INT64_MAX, INT64_MIN
from keel.errors import InvalidInput

__all__ = ["check_value"]

_SEQUENCES = (list, tuple, Sequence, Iterable, typing.Sequence, typing.Iterable)
_MAPPINGS = (dict, Mapping, typing.Mapping)


def check_value(
    value: Any,
    hint: Any,
    where: str,
    *,
    text: int,
    items: int,
    depth: int,
    budget: list[int],
) -> None:
    """Raise InvalidInput unless ``value`` fits ``hint`` and the size bounds.

    Args:
        value: the decoded argument.
        hint: its resolved annotation (``Any`` to check sizes only).
        where: names the argument in the message (``tracking.get_run(run_id=...)``).
        text: longest string allowed.
        items: most items in one container.
        depth: deepest nesting allowed.
        budget: a one-item list: values still allowed in all arguments (decremented).
    """
    _check(value, hint, where, text, items, depth, budget)


def _fail(where: str, problem: str, hint: str = "check the argument's type and size") -> InvalidInput:
    return InvalidInput(f"{where}: {problem}", hint)


def _check(value: Any, hint: Any, where: str, text: int, items: int, depth: int, budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise _fail(where, "too many values in the arguments", "send less per call (split the request)")
    if depth < 0:
        raise _fail(where, "nested too deeply", "flatten the value")
    _check_type(value, hint, where)
    if value is None or isinstance(value, bool | int | float):
        if isinstance(value, int) and not isinstance(value, bool):
            if not INT64_MIN <= value <= INT64_MAX:
                raise _fail(where, f"integer {value} is outside the 64-bit range", "use a smaller number")
        return
    if isinstance(value, str):
        if len(value) > text:
            raise _fail(where, f"text of {len(value):,} characters (at most {text:,})", "send less text")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise _fail(where, "text is not valid Unicode (a lone surrogate)", "send valid UTF-8 text") from None
        return
    if isinstance(value, bytes | bytearray):
        if len(value) > text:
            raise _fail(where, f"{len(value):,} bytes (at most {text:,})", "send less data")
        return
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        validate = getattr(value, "validate", None)
        if callable(validate):
            validate()
            return
        field_hints = _field_hints(type(value))
        for f in dataclasses.fields(value):
            _check(getattr(value, f.name), field_hints.get(f.name, Any), where, text, items, depth - 1, budget)
        return
    if isinstance(value, Mapping):
        if len(value) > items:
            raise _fail(where, f"{len(value):,} entries (at most {items:,})", "send fewer per call")
        key_hint, value_hint = _mapping_args(hint)
        for key, item in value.items():
            _check(key, key_hint, where, text, items, depth - 1, budget)
            _check(item, value_hint, where, text, items, depth - 1, budget)
        return
    if isinstance(value, list | tuple | set | frozenset):
        if len(value) > items:
            raise _fail(where, f"{len(value):,} items (at most {items:,})", "send fewer per call")
        item_hints = _item_hints(hint, len(value))
        for item, item_hint in zip(value, item_hints, strict=False):
            _check(item, item_hint, where, text, items, depth - 1, budget)
        return


@typing.no_type_check
def _field_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable hints: sizes are still checked
        return {}


def _options(hint: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(hint)
    return (hint,)


def _check_type(value: Any, hint: Any, where: str) -> None:
    if not any(_matches(value, option) for option in _options(hint)):
        shown = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
        raise _fail(where, f"expected {shown}, got {type(value).__name__}", "pass a value of the documented type")


def _matches(value: Any, hint: Any) -> bool:  # noqa: PLR0911 - one answer per kind of hint
    if hint is Any or isinstance(hint, typing.TypeVar) or hint is object:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return any(value == option and type(value) is type(option) for option in typing.get_args(hint))
    if origin is typing.Annotated:
        return _matches(value, typing.get_args(hint)[0])
    target = origin or hint
    if target is float:
        return isinstance(value, int | float)
    if target is int:
        return isinstance(value, int)
    if target in _SEQUENCES:
        return isinstance(value, list | tuple) or (target in (Iterable, typing.Iterable) and isinstance(value, set))
    if target in _MAPPINGS:
        return isinstance(value, Mapping)
    if isinstance(target, type):
        if issubclass(target, str) and not isinstance(value, str):
            return False
        try:
            return isinstance(value, target) or _path_like(target, value)
        except TypeError:
            return True
    return True  # Callable, protocols and other hints the wire cannot carry: sizes still apply


def _path_like(target: type, value: Any) -> bool:
    import os

    return issubclass(target, os.PathLike) and isinstance(value, str)


def _mapping_args(hint: Any) -> tuple[Any, Any]:
    for option in _options(hint):
        args = typing.get_args(option)
        if typing.get_origin(option) in _MAPPINGS and len(args) == 2:
            return args[0], args[1]
    return Any, Any


def _item_hints(hint: Any, count: int) -> list[Any]:
    for option in _options(hint):
        origin = typing.get_origin(option)
        args = typing.get_args(option)
        if origin is tuple and args:
            if len(args) == 2 and args[1] is Ellipsis:
                return [args[0]] * count
            return list(args) + [Any] * max(0, count - len(args))
        if origin in _SEQUENCES and args:
            return [args[0]] * count
    return [Any] * count
