"""Every KeelError survives the wire: to_dict -> JSON -> error_from_dict gives the same class,
message, hint and fields; nothing a server (or anyone) sends makes error_from_dict raise."""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keel
import keel.errors
from keel.core.filters import parse_filter
from keel.errors import (
    FilterSyntaxError,
    KeelError,
    PromptFilesRejected,
    RateLimited,
    ReplayMiss,
    error_for_code,
    error_from_dict,
)
from keel.services.llm import Closest
from keel.services.prompt_files import Problem


def _tree(cls: type[KeelError] = KeelError) -> list[type[KeelError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_tree(sub))
    return found


def _import_all_of_keel() -> None:
    """Import every keel module, so a KeelError subclass defined anywhere is in the tree."""
    for module in pkgutil.walk_packages(keel.__path__, "keel."):
        if module.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(module.name)
        except ImportError:  # an optional dependency that is not installed
            continue


_import_all_of_keel()
CLASSES = _tree()

# Classes whose constructor is not (message, hint): built as their raisers build them.
SAMPLES: dict[type[KeelError], Any] = {
    FilterSyntaxError: lambda: FilterSyntaxError("expected a value after '>'", "metrics.acc > and x", 14),
    ReplayMiss: lambda: ReplayMiss(
        "no recording of this chat.completions request (hash abc) in the store",
        "record it first",
        "ab" * 32,
        Closest("cd" * 32, "gpt-4", "ef" * 16, 0.75, ["messages[0].content", "temperature"]),
    ),
    PromptFilesRejected: lambda: PromptFilesRejected(
        [
            Problem("chat", Path("prompts/prompt_config.yaml"), 3, "changed without a version bump", "bump it"),
            Problem("summary", Path("prompts/summary/system_prompt.txt"), None, "not UTF-8", "save as UTF-8"),
        ]
    ),
    RateLimited: lambda: RateLimited("too many failed sign-in attempts", "wait 42 s", retry_after=42),
}


def _other_than(default: object) -> object:
    """A JSON value of the default's type that is not the default."""
    if default is None:
        return {"nested": [1, 2.5, "x", None, True]}
    if isinstance(default, bool):
        return not default
    if isinstance(default, int | float):
        return default + 7
    if isinstance(default, str):
        return default + "non-default"
    if isinstance(default, tuple | list):
        return [*default, "one more"]
    raise AssertionError(f"no sample for a field defaulting to {default!r}: add one to SAMPLES")


def sample(cls: type[KeelError]) -> KeelError:
    """An instance of ``cls`` whose every field differs from its default."""
    if cls in SAMPLES:
        return SAMPLES[cls]()  # type: ignore[no-any-return]
    error = cls(f"{cls.__name__} went wrong", f"do something about {cls.__name__}")
    for name, default in keel.errors._fields_of(cls).items():
        setattr(error, name, _other_than(default))
    return error


def _as_json(value: object) -> Any:
    return json.loads(json.dumps(keel.errors._to_json(value)))


def _over_the_wire(error: KeelError) -> KeelError:
    return error_from_dict(json.loads(json.dumps(error.to_dict())))


# -- the tree ---------------------------------------------------------------------------------------
def test_every_keel_error_is_defined_in_keel_errors_and_exported() -> None:
    exported = {name for name in keel.errors.__all__ if isinstance(getattr(keel.errors, name), type)}
    assert {cls.__name__ for cls in CLASSES} == exported
    for cls in CLASSES:
        assert cls.__module__ == "keel.errors", f"{cls.__qualname__} is defined in {cls.__module__}"
        assert cls.__name__ in keel.errors.__all__
        assert getattr(keel, cls.__name__) is cls, f"keel.{cls.__name__}"
        assert cls.__name__ in (keel.errors.__doc__ or ""), f"{cls.__name__} is missing from the tree docstring"


def test_every_keel_error_has_a_code_of_its_own() -> None:
    codes = [cls.code for cls in CLASSES]
    assert len(codes) == len(set(codes)), codes
    for cls in CLASSES:
        assert "code" in cls.__dict__, f"{cls.__name__} inherits its code, so it cannot be told apart on the wire"


def test_the_moved_errors_keep_their_codes_statuses_and_old_import_paths() -> None:
    from keel.sdk.prompts import PromptFilesRejected as from_sdk
    from keel.server.ui.sessions import RateLimited as from_sessions
    from keel.services.prompt_files import PromptFilesRejected as from_service

    assert from_sessions is RateLimited and from_service is from_sdk is PromptFilesRejected
    assert (RateLimited.code, RateLimited.http_status, RateLimited.exit_code) == ("rate_limited", 429, 7)
    assert issubclass(PromptFilesRejected, keel.Conflict)
    assert (PromptFilesRejected.http_status, PromptFilesRejected.exit_code) == (409, 4)


# -- the round trip ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_keel_error_round_trips_with_its_fields(cls: type[KeelError]) -> None:
    original = sample(cls)
    assert type(original) is cls
    fields = keel.errors._fields_of(cls)
    for name, default in fields.items():
        assert _as_json(getattr(original, name)) != _as_json(default), f"the sample of {cls.__name__}.{name}"

    wire = original.to_dict()
    assert set(wire) == {"code", "message", "hint", "details"}
    assert set(wire["details"]) == set(fields)
    rebuilt = _over_the_wire(original)

    assert type(rebuilt) is cls
    assert rebuilt.code == original.code
    assert rebuilt.message == original.message
    assert rebuilt.hint == original.hint
    assert str(rebuilt) == str(original)
    assert rebuilt.args == original.args
    assert rebuilt.http_status == original.http_status
    assert rebuilt.exit_code == original.exit_code
    for name in fields:
        value = getattr(original, name)
        if isinstance(value, str | int | float | type(None)):
            assert getattr(rebuilt, name) == value, name
        else:  # objects arrive as their JSON form (a Closest as a dict, a Problem as its to_dict())
            assert getattr(rebuilt, name) == _as_json(value), name
    assert rebuilt.to_dict() == wire


def test_a_filter_error_from_the_parser_keeps_its_text_position_and_words() -> None:
    with pytest.raises(FilterSyntaxError) as info:
        parse_filter("metrics.acc >>> 1")
    original = info.value
    rebuilt = _over_the_wire(original)
    assert isinstance(rebuilt, FilterSyntaxError)
    assert (rebuilt.text, rebuilt.position) == ("metrics.acc >>> 1", original.position) != ("", 0)
    assert rebuilt.message == original.message and str(rebuilt) == str(original)
    assert "filters look like" not in rebuilt.message  # the old garbling: the hint formatted into the message


def test_a_replay_miss_keeps_the_hash_and_the_closest_request() -> None:
    rebuilt = _over_the_wire(SAMPLES[ReplayMiss]())
    assert isinstance(rebuilt, ReplayMiss)
    assert rebuilt.request_hash == "ab" * 32
    assert rebuilt.closest == {
        "request_hash": "cd" * 32,
        "model": "gpt-4",
        "source": "ef" * 16,
        "similarity": 0.75,
        "differences": ["messages[0].content", "temperature"],
    }


def test_error_for_code_still_works_and_no_longer_garbles_the_message() -> None:
    error = error_for_code("invalid_filter", "unexpected character '>' at position 13 of 'x'", "filters look like...")
    assert type(error) is FilterSyntaxError
    assert error.message == "unexpected character '>' at position 13 of 'x'"
    assert (error.text, error.position) == ("", 0)
    assert type(error_for_code("not_found", "no run 'x'")) is keel.NotFound
    unknown = error_for_code("brand_new", "from a newer server", "upgrade")
    assert (
        type(unknown) is KeelError and unknown.code == "brand_new" and str(unknown) == "from a newer server (upgrade)"
    )
    assert KeelError.code == "error"  # the instance keeps the code, the class is untouched


# -- what comes off the wire is not trusted ---------------------------------------------------------
@pytest.mark.parametrize(
    "details",
    [
        None,
        "text",
        ["metrics.x", 3],
        12,
        {"text": 5, "position": "three"},
        {"text": "x", "position": True},
        {"text": "x" * (1 << 20), "position": 2},
        {"unknown": 1, "position": 1.5},
    ],
)
def test_malformed_details_are_ignored(details: object) -> None:
    error = error_from_dict({"code": "invalid_filter", "message": "bad filter", "hint": None, "details": details})
    assert type(error) is FilterSyntaxError and error.message == "bad filter" and error.hint is None
    assert isinstance(error.text, str) and len(error.text) <= 1 and isinstance(error.position, int)
    if isinstance(details, dict) and details.get("position") == 2:
        assert error.position == 2  # a good field is kept when its neighbour is refused


def test_absurdly_nested_or_large_details_are_ignored() -> None:
    nested: Any = "deep"
    for _ in range(5000):
        nested = [nested]
    wide = {str(i): i for i in range(200_000)}
    for closest in (nested, wide):
        error = error_from_dict(
            {"code": "replay_miss", "message": "m", "details": {"closest": closest, "request_hash": "h"}}
        )
        assert type(error) is ReplayMiss and error.closest is None and error.request_hash == "h"
    error = error_from_dict({"code": "prompt_files_rejected", "message": "m", "details": {"problems": ["a"] * 100_000}})
    assert type(error) is PromptFilesRejected and error.problems == []


@pytest.mark.parametrize(
    "data",
    [{}, {"code": 5}, {"code": None, "message": None}, {"code": "", "message": ["x"], "hint": 3}, [], "text", None],
)
def test_a_body_without_a_usable_code_or_message_is_a_plain_keel_error(data: Any) -> None:
    error = error_from_dict(data)
    assert type(error) is KeelError and error.code == "error" and error.message and error.hint is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
CODES = st.sampled_from([cls.code for cls in CLASSES]) | st.text(max_size=12)
FIELD_NAMES = st.sampled_from(sorted({name for cls in CLASSES for name in keel.errors._fields_of(cls)}))
DETAILS = st.dictionaries(FIELD_NAMES | st.text(max_size=8), JSON, max_size=4) | JSON
WIRE = st.fixed_dictionaries(
    {},
    optional={"code": CODES | JSON, "message": st.text() | JSON, "hint": st.text() | JSON, "details": DETAILS},
) | st.dictionaries(st.text(max_size=8), JSON, max_size=5)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(WIRE)
def test_error_from_dict_never_raises_on_any_json(data: dict[str, Any]) -> None:
    error = error_from_dict(data)
    assert isinstance(error, KeelError)
    assert isinstance(error.message, str) and error.message
    assert error.hint is None or isinstance(error.hint, str)
    assert isinstance(str(error), str)
    again = json.loads(json.dumps(error.to_dict()))
    assert type(error_from_dict(again)) is type(error)
    for name, default in keel.errors._fields_of(type(error)).items():
        value = getattr(error, name)
        assert default is None or isinstance(value, list if isinstance(default, tuple) else type(default))


# -- the CLI ---------------------------------------------------------------------------------------
def test_the_cli_prints_a_filter_error_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from keel.cli.main import main

    assert main(["init"]) == 0
    capsys.readouterr()
    code = main(["runs", "list", "--filter", "metrics.acc >>> 1"])
    err = capsys.readouterr().err
    assert code == FilterSyntaxError.exit_code
    assert err.count("\n") == 1 and err.startswith("error: ") and "position" in err, err
