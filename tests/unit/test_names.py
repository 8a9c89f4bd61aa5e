"""Validation of names, keys and artifact paths."""

import pytest

from keel.core.names import check_artifact_path, check_key, check_name
from keel.errors import InvalidInput


@pytest.mark.parametrize("name", ["chat", "llm-prompt-optimization", "team/search v2", "a.b_c"])
def test_valid_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", " lead", "trail ", "-x", "a\nb", "x" * 201, None, 5, "semi;colon"])
def test_invalid_names(name):
    with pytest.raises(InvalidInput, match="invalid name"):
        check_name(name)


@pytest.mark.parametrize("key", ["accuracy", "rag.top_k", "eval/f1", "loss:train", "p 95"])
def test_valid_keys(key):
    assert check_key(key) == key


@pytest.mark.parametrize("key", ["", ".x", "a..b", "x.", "-x", "a'b", "x" * 251])
def test_invalid_keys(key):
    with pytest.raises(InvalidInput):
        check_key(key)


def test_artifact_paths_are_normalised_and_cannot_escape():
    assert check_artifact_path("./eval//results.json") == "eval/results.json"
    for bad in ("../x", "/etc/passwd", "a/../../b", "", "  "):
        with pytest.raises(InvalidInput):
            check_artifact_path(bad)


def test_unhashable_keys_are_invalid_not_a_crash():
    with pytest.raises(InvalidInput):
        check_key(["a"])
    with pytest.raises(InvalidInput):
        check_key({"a": 1})
