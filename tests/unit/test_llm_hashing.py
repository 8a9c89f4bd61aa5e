"""The request hash of recorded LLM calls: canonical, and blind to volatile fields only."""

import enum
import math

import pytest
from openai import NOT_GIVEN
from openai.types.chat import ChatCompletionMessage

from keel.core.hashing import canonical_json, hash_bytes
from keel.core.llm import VOLATILE_FIELDS, hash_request, normalize, request_diff, request_hash, request_similarity

BASE = {
    "model": "gpt-4",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 17 + 25?"}],
    "temperature": 0.7,
    "seed": 42,
}


def test_the_hash_is_blake3_of_canonical_json_of_endpoint_and_request():
    expected = hash_bytes(canonical_json({"endpoint": "chat.completions", "request": BASE}))
    assert request_hash("chat.completions", BASE) == expected


def test_key_order_does_not_matter_but_every_value_does():
    reordered = {"seed": 42, "temperature": 0.7, "messages": BASE["messages"], "model": "gpt-4"}
    assert request_hash("chat.completions", reordered) == request_hash("chat.completions", BASE)
    for key, value in [("temperature", 0.2), ("seed", 7), ("model", "gpt-4o"), ("top_p", 0.9), ("n", 2)]:
        assert request_hash("chat.completions", {**BASE, key: value}) != request_hash("chat.completions", BASE), key
    changed = [BASE["messages"][0], {"role": "user", "content": "What is 17 + 26?"}]
    assert request_hash("chat.completions", {**BASE, "messages": changed}) != request_hash("chat.completions", BASE)


def test_the_endpoint_is_part_of_the_hash():
    assert request_hash("responses", BASE) != request_hash("chat.completions", BASE)


@pytest.mark.parametrize("field", sorted(VOLATILE_FIELDS))
def test_volatile_fields_are_excluded(field):
    assert request_hash("chat.completions", {**BASE, field: {"any": "value"}}) == request_hash("chat.completions", BASE)


def test_the_documented_volatile_list():
    assert VOLATILE_FIELDS == {
        "stream", "stream_options", "user", "timeout", "extra_headers", "extra_query", "metadata", "store",
        "service_tier", "safety_identifier", "prompt_cache_key", "user_profile_id", "workspace_id",
    }  # fmt: skip


def test_none_and_not_given_arguments_are_the_same_as_absent():
    assert request_hash("chat.completions", {**BASE, "max_tokens": None}) == request_hash("chat.completions", BASE)
    assert request_hash("chat.completions", {**BASE, "tools": NOT_GIVEN}) == request_hash("chat.completions", BASE)


def test_the_direct_path_equals_the_normalizing_path():
    class Color(enum.StrEnum):
        RED = "red"

    cases = [
        BASE,
        {**BASE, "messages": tuple(BASE["messages"])},
        {**BASE, "logit_bias": {50256: -100}},
        {**BASE, "extra_body": {"color": Color.RED, "ratio": math.inf}},
        {**BASE, "messages": [ChatCompletionMessage(role="assistant", content="42"), BASE["messages"][1]]},
    ]
    for request in cases:
        assert request_hash("chat.completions", request) == hash_request("chat.completions", normalize(request))


def test_pydantic_messages_hash_like_their_dicts():
    as_object = {**BASE, "messages": [ChatCompletionMessage(role="assistant", content="42")]}
    as_dict = {**BASE, "messages": [{"role": "assistant", "content": "42"}]}
    assert request_hash("chat.completions", as_object) == request_hash("chat.completions", as_dict)


def test_normalize_is_a_snapshot():
    messages = [{"role": "user", "content": "hi"}]
    snapshot = normalize({"messages": messages})
    messages.append({"role": "assistant", "content": "hello"})
    assert snapshot == {"messages": [{"role": "user", "content": "hi"}]}


def test_nan_and_infinity_hash_like_canonical_json():
    request = {**BASE, "temperature": math.nan}
    assert normalize(request)["temperature"] == "NaN"
    assert request_hash("chat.completions", request) == hash_bytes(
        canonical_json({"endpoint": "chat.completions", "request": request})
    )


def test_diff_and_similarity_name_what_changed():
    other = {**BASE, "temperature": 0.2, "messages": [BASE["messages"][0], {"role": "user", "content": "What is 1?"}]}
    lines = request_diff(normalize(other), normalize(BASE))
    assert any(line.startswith("temperature: 0.2 (recorded 0.7)") for line in lines)
    assert any("messages[1].content" in line for line in lines)
    assert request_similarity(BASE, BASE) == 1.0
    assert 0.5 < request_similarity(other, BASE) < 1.0
    assert request_diff(normalize({**BASE, "user": "x"}), normalize(BASE)) == []
