"""A span's inputs and outputs as the SDK keeps them: the one-pass path for a call's plain
arguments gives what the general conversion gives, and payloads over the limit are cut."""

from __future__ import annotations

import json

import pytest

from keel.sdk import traces


@pytest.fixture(autouse=True)
def _limit():
    traces.configure(max_payload_bytes=1 << 20)
    yield
    traces.configure(max_payload_bytes=1 << 20)


@pytest.mark.parametrize(
    "value",
    [
        {"question": "why?", "n": 3, "stream": False, "user": None},
        {"x": 1.5, "nan": float("nan")},  # floats take the general path
        {1: "a", "b": [1, 2]},  # a key that is not text, a nested list
        {"big": 10**40, "neg": -(10**30)},
        {},
    ],
)
def test_plain_arguments_are_copied_as_the_general_path_copies_them(value: dict) -> None:
    kept = traces._payload(value)
    assert kept is not value  # a copy: the app may change its dict after the span ends
    assert json.dumps(kept, sort_keys=True) == json.dumps(traces._jsonable(value), sort_keys=True)


def test_payloads_over_the_limit_are_cut_and_marked() -> None:
    traces.configure(max_payload_bytes=200)
    small = {"q": "x" * 20}
    assert traces._payload(small) == small
    big = {"q": "y" * 500, "n": 1}
    cut = traces._payload(big)
    assert cut["keel.truncated"] is True and cut["size"] > 200 and len(cut["head"]) == 200
    # just over by the escaped size: the bound says "maybe larger", the exact size decides
    quotes = {"q": '"' * 60}  # 60 characters, 120 once escaped, 128 with the key
    assert traces._payload(quotes) == quotes
    assert traces._payload(7) == 7 and traces._payload(True) is True
    assert traces._payload("z" * 300)["keel.truncated"] is True
