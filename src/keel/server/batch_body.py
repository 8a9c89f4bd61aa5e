"""The body of ``POST /runs/{id}/batch``, parsed and checked in one pass.

A batch may carry 100,000 metrics. Building one pydantic object per metric and
then walking them again cost more than the database write, so the raw body is
parsed once (``pydantic_core.from_json``: NaN and Infinity allowed) and checked
column by column with keel's own rules (:func:`keel.core.names.check_key`,
:func:`keel.core.values.metric_value`). Two forms of ``metrics`` are accepted:

- rows: ``[{"key": "loss", "value": 0.5, "step": 3, "timestamp": 1700000000000}, ...]``
  (``step`` defaults to 0, ``timestamp`` to the server's clock)
- columns: ``{"keys": [...], "values": [...], "steps": [...], "timestamps": [...]}``
  (equal lengths; ``steps`` and ``timestamps`` optional), about half the bytes
  and a third of the parsing

A body that does not match the schema raises :class:`RequestValidationError`
(422, the one error shape, like every other endpoint); an invalid key or a
negative step raises :class:`~keel.errors.InvalidInput` (400). The pydantic
models below document the body in the OpenAPI document; they are not used to
parse it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, NoReturn

import pydantic_core
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from keel.core.names import check_key
from keel.errors import InvalidInput

__all__ = ["BATCH_OPENAPI", "BatchBody", "BatchRequest", "MetricColumns", "MetricIn", "parse_batch"]

_BODY_FIELDS = frozenset({"params", "metrics", "tags", "overwrite_params"})
_ROW_FIELDS = frozenset({"key", "value", "step", "timestamp"})
_COLUMN_FIELDS = ("keys", "values", "steps", "timestamps")


class MetricIn(BaseModel):
    """One metric value."""

    model_config = ConfigDict(extra="forbid")
    key: str
    value: float
    step: int = Field(default=0, ge=0)
    timestamp: int | None = Field(default=None, description="milliseconds since the epoch; default: now")


class MetricColumns(BaseModel):
    """Many metric values as parallel arrays (the compact form)."""

    model_config = ConfigDict(extra="forbid")
    keys: list[str]
    values: list[float]
    steps: list[int] | None = Field(default=None, description="default: 0 for every value")
    timestamps: list[int | None] | None = Field(default=None, description="default: now")


class BatchRequest(BaseModel):
    """Params, metrics and tags of one run, written in one transaction."""

    model_config = ConfigDict(extra="forbid")
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: list[MetricIn] | MetricColumns = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    overwrite_params: bool = False


def _inline_refs(schema: Any, defs: dict[str, Any]) -> Any:
    """``schema`` with every ``#/$defs/X`` reference replaced by its definition."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(defs[ref.rsplit("/", 1)[1]], defs)
        return {k: _inline_refs(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline_refs(v, defs) for v in schema]
    return schema


def _openapi() -> dict[str, Any]:
    schema = BatchRequest.model_json_schema()
    body = _inline_refs(schema, schema.get("$defs", {}))
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}


BATCH_OPENAPI = _openapi()  # the route's ``openapi_extra``: the body it reads by hand


@dataclass
class BatchBody:
    """A checked batch body: metric columns of equal length (timestamps: None is "now")."""

    params: dict[str, Any] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    timestamps: list[int | None] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    overwrite_params: bool = False

    def metric_rows(self, run_id: str, now: int) -> list[tuple[str, str, float, int, int]]:
        """The metrics as :class:`~keel.core.batch.WriteBatch` rows of ``run_id``."""
        stamps = self.timestamps
        if None in stamps:
            stamps = [now if t is None else t for t in stamps]
        return list(zip(repeat(run_id), self.keys, self.values, self.steps, stamps, strict=False))  # type: ignore[arg-type]


def _invalid(loc: Sequence[str | int], msg: str, kind: str, value: Any = None) -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": ("body", *loc), "msg": msg, "input": value}])


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def parse_batch(raw: bytes, content_type: str | None) -> BatchBody:
    """Parse and check a batch body (see the module doc); raise 422 or 400 on a bad one."""
    if not _is_json(content_type):
        raise _invalid((), "expected a JSON body (Content-Type: application/json)", "model_attributes_type")
    try:
        data = pydantic_core.from_json(raw, allow_inf_nan=True)
    except ValueError as exc:
        raise _invalid((), f"JSON decode error: {exc}", "json_invalid") from None
    if not isinstance(data, dict):
        raise _invalid((), "Input should be a valid dictionary or object", "model_attributes_type", data)
    for name in data:
        if name not in _BODY_FIELDS:
            raise _invalid((name,), "Extra inputs are not permitted", "extra_forbidden", data[name])
    body = BatchBody(
        params=_dict_of(data, "params", None),
        tags=_dict_of(data, "tags", str),
        overwrite_params=_overwrite(data.get("overwrite_params", False)),
    )
    metrics = data.get("metrics", [])
    if isinstance(metrics, list):
        _rows(metrics, body)
    elif isinstance(metrics, dict):
        _columns(metrics, body)
    else:
        raise _invalid(("metrics",), "Input should be a list of metrics or an object of columns", "list_type")
    _check_columns(body)
    return body


def _dict_of(data: dict[str, Any], name: str, value_type: type | None) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise _invalid((name,), "Input should be a valid dictionary", "dict_type", value)
    if value_type is not None:
        for key, item in value.items():
            if not isinstance(item, value_type):
                raise _invalid((name, key), "Input should be a valid string", "string_type", item)
    return value


def _overwrite(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _invalid(("overwrite_params",), "Input should be a valid boolean", "bool_type", value)
    return value


def _rows(metrics: list[Any], body: BatchBody) -> None:
    """Fill ``body``'s columns from the row form (a fast sweep; a precise one on failure)."""
    try:
        if not all(_ROW_FIELDS.issuperset(m) for m in metrics):
            raise TypeError
        body.keys = [m["key"] for m in metrics]
        body.values = [m["value"] for m in metrics]
        body.steps = [m.get("step", 0) for m in metrics]
        body.timestamps = [m.get("timestamp") for m in metrics]
    except (TypeError, KeyError, AttributeError):
        _explain_rows(metrics)


def _explain_rows(metrics: list[Any]) -> NoReturn:
    """Raise the 422 that names the first malformed metric row."""
    for i, m in enumerate(metrics):
        if not isinstance(m, dict):
            raise _invalid(("metrics", i), "Input should be a valid dictionary or object", "model_type", m)
        for name in m:
            if name not in _ROW_FIELDS:
                raise _invalid(("metrics", i, name), "Extra inputs are not permitted", "extra_forbidden", m[name])
        for name in ("key", "value"):
            if name not in m:
                raise _invalid(("metrics", i, name), "Field required", "missing")
    raise _invalid(("metrics",), "Input should be a list of metrics", "list_type")


def _columns(metrics: dict[str, Any], body: BatchBody) -> None:
    """Fill ``body``'s columns from the column form."""
    for name in metrics:
        if name not in _COLUMN_FIELDS:
            raise _invalid(("metrics", name), "Extra inputs are not permitted", "extra_forbidden", metrics[name])
    for name in ("keys", "values"):
        if name not in metrics:
            raise _invalid(("metrics", name), "Field required", "missing")
    n = len(metrics["keys"]) if isinstance(metrics["keys"], list) else -1
    columns: dict[str, list[Any]] = {}
    for name in _COLUMN_FIELDS:
        column = metrics.get(name)
        if column is None and name in ("steps", "timestamps"):
            column = [0 if name == "steps" else None] * max(n, 0)
        if not isinstance(column, list):
            raise _invalid(("metrics", name), "Input should be a valid list", "list_type", column)
        if len(column) != n:
            raise _invalid(("metrics", name), f"has {len(column)} items; 'keys' has {n}", "length_mismatch")
        columns[name] = column
    body.keys, body.values = columns["keys"], columns["values"]
    body.steps, body.timestamps = columns["steps"], columns["timestamps"]


def _check_columns(body: BatchBody) -> None:
    """Check each column's types in one sweep; coerce the lenient cases; keel's key rules."""
    if not all(type(k) is str for k in body.keys):
        i = next(i for i, k in enumerate(body.keys) if type(k) is not str)
        raise _invalid(("metrics", i, "key"), "Input should be a valid string", "string_type", body.keys[i])
    for key in set(body.keys):
        check_key(key, "metric key")
    if not all(type(v) is float for v in body.values):
        body.values = _coerced(body.values, "value", _to_float, "float_type", "Input should be a valid number")
    if not all(type(s) is int for s in body.steps):
        body.steps = _coerced(body.steps, "step", _to_int, "int_type", "Input should be a valid integer")
    if body.steps and min(body.steps) < 0:
        i = next(i for i, s in enumerate(body.steps) if s < 0)
        raise InvalidInput(f"invalid step {body.steps[i]} for metric {body.keys[i]!r}", "steps are integers >= 0")
    if not all(t is None or type(t) is int for t in body.timestamps):
        body.timestamps = _coerced(body.timestamps, "timestamp", _to_optional_int, "int_type",
                                   "Input should be a valid integer")  # fmt: skip


def _coerced(column: list[Any], name: str, convert: Callable[[Any], Any], kind: str, msg: str) -> list[Any]:
    """``column`` converted item by item (numbers from strings, as pydantic's lax mode does)."""
    out = []
    for i, item in enumerate(column):
        try:
            out.append(convert(item))
        except (TypeError, ValueError):
            raise _invalid(("metrics", i, name), msg, kind, item) from None
    return out


def _to_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(value)
    return float(value)


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int):
        return value
    number = float(value) if isinstance(value, float | str) else None
    if number is None or not number.is_integer():
        raise ValueError(value)
    return int(number)


def _to_optional_int(value: Any) -> int | None:
    return None if value is None else _to_int(value)
