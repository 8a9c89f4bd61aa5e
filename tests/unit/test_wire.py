"""The service API's JSON codec: every registered type round-trips; unknown tags and types are refused."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import typing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from keel.core.batch import WriteBatch
from keel.core.entities import EntityRef, RunRecord
from keel.core.table import Table
from keel.core.wire import Codec, core_types
from keel.errors import InvalidInput

CODEC = Codec(core_types())


def _sample(tp: Any) -> Any:
    """A value of the annotated type ``tp`` (enough to exercise each field)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return {"any": [1, "x"]}
    if origin in (typing.Union, type(int | None)):
        return _sample(next(a for a in args if a is not type(None)))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return (_sample(args[0]),)
        return tuple(_sample(a) for a in args)
    if origin is list:
        return [_sample(args[0])] if args else []
    if origin is dict:
        return {"k": _sample(args[1])} if args else {}
    if origin is typing.Literal:
        return args[0]
    if dataclasses.is_dataclass(tp):
        return _instance(tp)  # type: ignore[arg-type]
    if tp is float:
        return 0.5
    if tp is bool:
        return True
    if tp is int:
        return 3
    if tp is str:
        return "s"
    if tp is bytes:
        return b"\x00\xff"
    return None


def _instance(cls: type) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {f.name: _sample(hints[f.name]) for f in dataclasses.fields(cls) if f.init}
    try:
        return cls(**kwargs)
    except Exception:  # some constructors validate: fall back to their defaults
        required = {
            f.name: kwargs[f.name]
            for f in dataclasses.fields(cls)
            if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        return cls(**required)


def _class(spec: str) -> type:
    module, _, name = spec.partition(":")
    cls: type = getattr(importlib.import_module(module), name)
    return cls


@pytest.mark.parametrize("spec", core_types())
def test_every_registered_type_round_trips(spec: str) -> None:
    value = _instance(_class(spec))
    wire = json.loads(json.dumps(CODEC.encode(value), allow_nan=False))
    assert CODEC.decode(wire) == value


def test_plain_and_tagged_values_round_trip() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    value = {
        "tuple": (1, "a", None),
        "bytes": b"\x00\x01binary",
        "set": {1, 2},
        "when": when,
        "nested": [[(1.5, True)], {"deep": {"x": [1, 2]}}],
        "odd keys": {1: "one", "$tag": "dollar"},
        "table": Table.build(["a", "b"], [[1, "x"], [2, None]]),
        "batch": WriteBatch(metrics=[("r" * 32, "loss", 0.5, 1, 123)], run_ends=[("r" * 32, "finished", 5, None)]),
    }
    wire = json.loads(json.dumps(CODEC.encode(value), allow_nan=False))
    assert CODEC.decode(wire) == value


def test_nonfinite_floats_travel_as_strict_json() -> None:
    wire = json.dumps(CODEC.encode([math.nan, math.inf, -math.inf]), allow_nan=False)
    nan, inf, neg = CODEC.decode(json.loads(wire))
    assert math.isnan(nan) and inf == math.inf and neg == -math.inf


def test_paths_travel_as_strings() -> None:
    assert CODEC.decode(CODEC.encode(Path("/tmp/x.txt"))) == "/tmp/x.txt"


def test_run_record_keeps_its_fields() -> None:
    run = RunRecord("a" * 32, "p", "n", "running", 1, params={"k": 1}, metrics={"m": math.nan})
    back = CODEC.decode(json.loads(json.dumps(CODEC.encode(run))))
    assert back.run_id == run.run_id and back.params == {"k": 1} and math.isnan(back.metrics["m"])


@pytest.mark.parametrize(
    "data",
    [
        {"$type": "os.system", "fields": {}},
        {"$type": "subprocess.Popen", "fields": {"args": "ls"}},
        {"$type": ["EntityRef"], "fields": {}},
        {"$pickle": "gASV"},
        {"$tuple": "not a list"},
        {"$bytes": "***"},
        {"$float": "1e999"},
        {"$map": [[1]]},
        {"$set": [[1]]},
        {"$tuple": [], "$bytes": ""},
        {"$type": "EntityRef", "fields": {"kind": "a", "id": "b", "__class__": "x"}},
        {"$type": "EntityRef", "fields": {"kind": "a"}},
        {"$type": "EntityRef", "fields": {}, "extra": 1},
    ],
)
def test_unknown_or_malformed_tags_are_refused(data: Any) -> None:
    with pytest.raises(InvalidInput):
        CODEC.decode(data)


def test_a_codec_decodes_only_its_own_types() -> None:
    narrow = Codec([EntityRef])
    wire = CODEC.encode(Table.build(["a"], [[1]]))
    with pytest.raises(InvalidInput, match="Table"):
        narrow.decode(wire)
    assert narrow.decode(narrow.encode(EntityRef("prompt", "x", "1"))) == EntityRef("prompt", "x", "1")


def test_values_it_cannot_carry_are_refused() -> None:
    with pytest.raises(InvalidInput, match="cannot send"):
        CODEC.encode(object())
    with pytest.raises(InvalidInput, match="cannot send"):
        CODEC.encode(lambda: None)


def test_types_are_imported_only_when_a_value_travels() -> None:
    codec = Codec(["keel.core.entities:EntityRef", "no.such.module:Thing"])
    assert codec.type_names == ["EntityRef", "Thing"]
    assert codec.decode(codec.encode(EntityRef("a", "b"))) == EntityRef("a", "b")
    with pytest.raises(ModuleNotFoundError):
        codec.decode({"$type": "Thing", "fields": {}})


def test_same_named_classes_get_qualified_names() -> None:
    names = CODEC.type_names
    assert "keel.core.abtests.Comparison" in names and "keel.core.comparison.Comparison" in names
    assert "EntityRef" in names
