"""Param encoding, flattening and metric coercion."""

import math

import pytest

from keel.core.values import decode_param, encode_param, flatten, metric_value
from keel.errors import InvalidInput


def test_flatten_nested_dicts_with_dots():
    assert dict(flatten({"rag": {"top_k": 5, "reranker": {"name": "bge"}}, "model": "gpt-4"})) == {
        "rag.top_k": 5,
        "rag.reranker.name": "bge",
        "model": "gpt-4",
    }


@pytest.mark.parametrize("value", ["gpt-4", "", 3, -1, 0.7, float("inf"), True, False, None, [1, "a"], {"a": [1]}])
def test_params_round_trip(value):
    vtype, text = encode_param("k", value)
    back = decode_param(vtype, text)
    assert back == value and type(back) is type(value)


def test_nan_param_round_trips():
    assert math.isnan(decode_param(*encode_param("k", float("nan"))))


def test_non_json_param_is_a_clear_error():
    with pytest.raises(InvalidInput, match="not JSON"):
        encode_param("k", object())
    with pytest.raises(InvalidInput, match="not JSON"):
        encode_param("k", {"a": {1, 2}})


def test_bad_param_key():
    with pytest.raises(InvalidInput, match="invalid param key"):
        encode_param("bad\nkey", 1)


def test_metric_values():
    assert metric_value("m", 1) == 1.0
    assert math.isnan(metric_value("m", float("nan")))
    assert metric_value("m", float("-inf")) == float("-inf")
    for bad in ("0.5", None, True, [1]):
        with pytest.raises(InvalidInput, match="non-numeric"):
            metric_value("m", bad)
