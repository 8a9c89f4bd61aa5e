"""The JSON wire codec of the service API: values to plain JSON and back.

The remote sdk sends service-method arguments to the server and reads back
results in this form. Plain JSON values travel as themselves; everything else
is a one-key object whose key starts with ``$``::

    (1, 2)                 {"$tuple": [1, 2]}
    b"..."                 {"$bytes": "<base64>"}
    float("nan")           {"$float": "nan"}          (also "inf", "-inf")
    {1, 2}                 {"$set": [1, 2]}
    datetime(...)          {"$datetime": "2026-01-01T00:00:00+00:00"}
    {"$x": 1} / {1: 2}     {"$map": [["$x", 1]]}      (dicts whose keys JSON cannot carry)
    Table(...)             {"$type": "Table", "fields": {...}}
    any registered dataclass likewise, by its registered name

``Path`` values are sent as strings. A dataclass is decoded only when its type
name is in the :class:`Codec`'s registry, which the code builds from an
explicit list of classes: a name in a request never selects what gets
imported or constructed. Unknown tags and unknown names raise InvalidInput.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import importlib
import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import PurePath
from typing import Any

from keel.errors import InvalidInput

__all__ = ["Codec", "core_types", "type_list"]

_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_MAX_DEPTH = 64


_CORE_TYPES = """
keel.core.ab_design: Design
keel.core.abtests: Analysis Comparison Experiment Guardrail GuardrailCheck Variant VariantStats
keel.core.batch: WriteBatch
keel.core.comparison: Arm MetricResult Comparison
keel.core.config: Layer Origin Resolved
keel.core.conversation_stats: GroupStats
keel.core.conversations: Conversation ConversationBatch FeedbackEvent
keel.core.directions: Direction
keel.core.entities: Artifact EntityRef LineageEdge Metric MetricSummary Project RunRecord
keel.core.erasure: ErasureEntry ErasureReport
keel.core.flags: Condition Flag Rule
keel.core.kb_chunking: ChunkConfig
keel.core.kb_manifest: ConfigChange DocumentEntry KBManifest ManifestDiff
keel.core.model_card: CardChange
keel.core.prompt_content: PromptContent PromptDiff
keel.core.scorers: ScorerErrors
keel.core.stats: TestResult
keel.core.table: Table
keel.core.traces: IngestResult RawSpans Score Span SpanBatch Trace TraceDetail TraceStats
"""


def type_list(text: str) -> list[str]:
    """``module: Name Name`` lines as ``["module:Name", ...]`` (the form :class:`Codec` takes)."""
    out = []
    for line in text.strip().splitlines():
        module, _, names = line.partition(":")
        out += [f"{module.strip()}:{name}" for name in names.split()]
    return out


def core_types() -> list[str]:
    """keel.core's dataclasses that service methods take or return, as ``module:Name``."""
    return type_list(_CORE_TYPES)


class Codec:
    """Encode values to JSON-ready data and decode them back, with a fixed set of dataclasses.

    Args:
        types: the dataclasses this codec may encode and decode: classes, or
            ``"module:Name"`` strings imported when a value of that type first
            travels (so a codec costs no imports). Each travels under its class
            name, or under ``module.Name`` where two share a name.

    Example::

        codec = Codec([EntityRef])
        data = codec.encode((EntityRef("prompt", "chat", "1.0.0"), b"\\x00"))
        assert codec.decode(data) == (EntityRef("prompt", "chat", "1.0.0"), b"\\x00")
    """

    def __init__(self, types: Iterable[type | str]) -> None:
        specs: dict[str, type | str] = {}  # "module.Name" -> the class or "module:Name"
        for item in types:
            if isinstance(item, str):
                module, sep, name = item.partition(":")
                if not sep or not module or not name:
                    raise ValueError(f"invalid type {item!r}: write module:Name")
                specs[f"{module}.{name}"] = item
            else:
                if not dataclasses.is_dataclass(item):
                    raise TypeError(f"{item!r} is not a dataclass")
                specs[f"{item.__module__}.{item.__qualname__}"] = item
        counts: dict[str, int] = {}
        for path in specs:
            short = path.rpartition(".")[2]
            counts[short] = counts.get(short, 0) + 1
        self._specs: dict[str, type | str] = {}  # wire name -> class or "module:Name"
        self._wire_names: dict[str, str] = {}  # "module.Name" -> wire name
        for path, spec in specs.items():
            short = path.rpartition(".")[2]
            name = short if counts[short] == 1 else path
            self._specs[name] = spec
            self._wire_names[path] = name
        self._names: dict[type, str] = {}  # resolved classes -> wire name
        self._by_name: dict[str, type] = {}
        self._fields: dict[type, tuple[str, ...]] = {}

    @property
    def type_names(self) -> list[str]:
        """The registered type names, sorted."""
        return sorted(self._specs)

    def name_of(self, cls: type) -> str | None:
        """The wire name of ``cls``, or None when it is not registered."""
        name = self._names.get(cls)
        if name is None:
            name = self._wire_names.get(f"{cls.__module__}.{cls.__qualname__}")
            if name is not None and self._resolve(name) is not cls:
                return None
        return name

    def _resolve(self, name: str) -> type | None:
        """The class registered as ``name`` (imported on first use), or None."""
        cls = self._by_name.get(name)
        if cls is not None:
            return cls
        spec = self._specs.get(name)
        if spec is None:
            return None
        if isinstance(spec, str):
            module, _, attr = spec.partition(":")
            found = getattr(importlib.import_module(module), attr)
            if not dataclasses.is_dataclass(found) or not isinstance(found, type):
                raise TypeError(f"{spec} is not a dataclass")
            cls = found
        else:
            cls = spec
        self._fields[cls] = tuple(f.name for f in dataclasses.fields(cls) if f.init)
        self._names[cls] = name
        self._by_name[name] = cls
        return cls

    # -- encoding -------------------------------------------------------------------
    def encode(self, value: Any) -> Any:
        """``value`` as JSON-ready data (raises InvalidInput for a type the codec cannot carry)."""
        return self._encode(value, 0)

    def _encode(self, value: Any, depth: int) -> Any:
        if value is None or isinstance(value, bool | int | str):
            return value
        if depth > _MAX_DEPTH:
            raise InvalidInput("value nested too deeply to send", f"keep nesting under {_MAX_DEPTH} levels")
        kind = type(value)
        if kind is float:
            if math.isfinite(value):
                return value
            return {"$float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
        if kind is list:
            return self._encode_items(value, depth + 1)
        if kind is tuple:
            return {"$tuple": self._encode_items(value, depth + 1)}
        if kind is dict:
            if all(type(k) is str and not k.startswith("$") for k in value):
                return {k: self._encode(v, depth + 1) for k, v in value.items()}
            return {"$map": [[self._encode(k, depth + 1), self._encode(v, depth + 1)] for k, v in value.items()]}
        name = self._names.get(kind) or (self.name_of(kind) if dataclasses.is_dataclass(kind) else None)
        if name is not None:
            fields = {f: self._encode(getattr(value, f), depth + 1) for f in self._fields[kind]}
            return {"$type": name, "fields": fields}
        if isinstance(value, bytes | bytearray | memoryview):
            return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
        if isinstance(value, float):
            return self._encode(float(value), depth)
        if isinstance(value, set | frozenset):
            return {"$set": [self._encode(v, depth + 1) for v in value]}
        if isinstance(value, datetime):
            return {"$datetime": value.isoformat()}
        if isinstance(value, PurePath):
            return str(value)
        if isinstance(value, tuple):  # a NamedTuple: sent as a plain tuple
            return {"$tuple": [self._encode(v, depth + 1) for v in value]}
        if isinstance(value, list):
            return [self._encode(v, depth + 1) for v in value]
        if isinstance(value, Mapping):
            return self._encode(dict(value), depth)
        raise InvalidInput(
            f"cannot send a {kind.__module__}.{kind.__qualname__} to or from a keel server",
            "pass plain values (str, numbers, lists, dicts) or keel's own types",
        )

    def _encode_items(self, values: Any, depth: int) -> list[Any]:
        # Batches hold many rows of plain values: keep those out of the recursive call.
        out = []
        for v in values:
            t = type(v)
            if t is str or t is int or t is bool or v is None or (t is float and -math.inf < v < math.inf):
                out.append(v)
            else:
                out.append(self._encode(v, depth))
        return out

    # -- decoding -------------------------------------------------------------------
    def decode(self, data: Any) -> Any:
        """The value ``data`` (from :meth:`encode`) stands for; InvalidInput on an unknown tag or type."""
        return self._decode(data, 0)

    def _decode(self, data: Any, depth: int) -> Any:
        if data is None or isinstance(data, bool | int | float | str):
            return data
        if depth > _MAX_DEPTH:
            raise InvalidInput("value nested too deeply", f"keep nesting under {_MAX_DEPTH} levels")
        if isinstance(data, list):
            return self._decode_items(data, depth + 1)
        if not isinstance(data, dict):
            raise InvalidInput(f"cannot decode a {type(data).__name__}", "send JSON values")
        if not any(type(k) is str and k.startswith("$") for k in data):
            return {k: self._decode(v, depth + 1) for k, v in data.items()}
        if "$type" in data:
            return self._decode_dataclass(data, depth)
        if len(data) != 1:
            raise InvalidInput(f"invalid tagged value with keys {sorted(data)[:5]}", "one $tag per object")
        ((tag, inner),) = data.items()
        try:
            if tag == "$tuple":
                return tuple(self._decode_items(_list(inner, tag), depth + 1))
            if tag == "$bytes":
                return base64.b64decode(_str(inner, tag), validate=True)
            if tag == "$float":
                return _NONFINITE[_str(inner, tag)]
            if tag == "$set":
                return {self._decode(v, depth + 1) for v in _list(inner, tag)}
            if tag == "$datetime":
                return datetime.fromisoformat(_str(inner, tag))
            if tag == "$map":
                pairs = _list(inner, tag)
                return {self._decode(k, depth + 1): self._decode(v, depth + 1) for k, v in (_pair(p) for p in pairs)}
        except (KeyError, ValueError, TypeError, binascii.Error) as exc:
            raise InvalidInput(f"invalid {tag} value: {exc}", "send values encoded by keel.core.wire") from None
        raise InvalidInput(f"unknown wire tag {tag!r}", "send values encoded by keel.core.wire")

    def _decode_items(self, values: list[Any], depth: int) -> list[Any]:
        out = []
        for v in values:
            t = type(v)
            if t is dict:
                inner = v.get("$tuple") if len(v) == 1 else None
                if type(inner) is list:  # the rows of a batch: decoded here, without the general path
                    row = [x if type(x) is not dict and type(x) is not list else self._decode(x, depth) for x in inner]
                    out.append(tuple(row))
                else:
                    out.append(self._decode(v, depth))
            elif t is list:
                out.append(self._decode(v, depth))
            else:
                out.append(v)
        return out

    def _decode_dataclass(self, data: dict[str, Any], depth: int) -> Any:
        name = data["$type"]
        cls = self._resolve(name) if isinstance(name, str) else None
        if cls is None:
            raise InvalidInput(f"unknown or disallowed type {name!r}", "this service method does not take that type")
        fields = data.get("fields")
        if not isinstance(fields, dict) or set(data) != {"$type", "fields"}:
            raise InvalidInput(f"invalid {name} value", 'send {"$type": name, "fields": {...}}')
        allowed = self._fields[cls]
        unknown = set(fields) - set(allowed)
        if unknown:
            raise InvalidInput(f"unknown fields {sorted(unknown)} for {name}", f"{name} has {list(allowed)}")
        kwargs = {k: self._decode(v, depth + 1) for k, v in fields.items()}
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise InvalidInput(f"invalid {name} value: {exc}", f"{name} has {list(allowed)}") from None


def _list(value: Any, tag: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidInput(f"{tag} takes a list", "send values encoded by keel.core.wire")
    return value


def _str(value: Any, tag: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{tag} takes a string", "send values encoded by keel.core.wire")
    return value


def _pair(value: Any) -> tuple[Any, Any]:
    if not isinstance(value, list) or len(value) != 2:
        raise InvalidInput("$map takes [key, value] pairs", "send values encoded by keel.core.wire")
    return value[0], value[1]
