"""Prices, usage and stream assembly of recorded LLM calls (pure functions)."""

import pytest

from keel.core.llm import DEFAULT_PRICES, assemble_chat_stream, call_cost, find_price, usage_tokens
from keel.integrations.standin import chat_answers, embed_text, model_accuracy


def test_price_lookup_by_exact_name_then_longest_prefix():
    assert find_price("gpt-4o", DEFAULT_PRICES) == (2.5, 10.0)
    assert find_price("gpt-4o-mini-2024-07-18", DEFAULT_PRICES) == DEFAULT_PRICES["gpt-4o-mini"]
    assert find_price("gpt-4-0613", DEFAULT_PRICES) == DEFAULT_PRICES["gpt-4"]
    assert find_price("gpt-4ox", DEFAULT_PRICES) is None  # a prefix must end at a separator
    assert find_price("llama-3", DEFAULT_PRICES) is None
    assert find_price("", DEFAULT_PRICES) is None


def test_cost_is_tokens_times_price_per_million():
    # gpt-4: $30 / 1M input, $60 / 1M output
    assert call_cost("gpt-4", 1000, 500, DEFAULT_PRICES) == pytest.approx(0.03 + 0.03)
    assert call_cost("gpt-3.5-turbo", 2_000_000, 0, DEFAULT_PRICES) == pytest.approx(1.0)
    assert call_cost("mine", 10, 10, {"mine": (1.0, 2.0)}) == pytest.approx(30 / 1_000_000)
    assert call_cost("unknown-model", 10, 10, DEFAULT_PRICES) is None
    assert call_cost("gpt-4", None, None, DEFAULT_PRICES) is None


def test_usage_of_every_endpoint():
    assert usage_tokens({"usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}}) == (9, 3)
    assert usage_tokens({"usage": {"input_tokens": 5, "output_tokens": 1, "total_tokens": 6}}) == (5, 1)
    assert usage_tokens({"usage": {"prompt_tokens": 4, "total_tokens": 4}}) == (4, 0)  # embeddings
    assert usage_tokens({"choices": []}) == (None, None)


def test_a_stream_assembles_into_the_completion():
    head = {"id": "c1", "created": 1, "model": "gpt-4", "object": "chat.completion.chunk", "system_fingerprint": "fp"}
    chunks = [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {**head, "choices": [{"index": 0, "delta": {"content": "4"}}]},
        {**head, "choices": [{"index": 0, "delta": {"content": "2"}}]},
        {**head, "choices": [{"index": 1, "delta": {"role": "assistant", "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a":'}}]}}]},
        {**head, "choices": [{"index": 1, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}}]},
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**head, "choices": [{"index": 1, "delta": {}, "finish_reason": "tool_calls"}]},
        {**head, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
    ]  # fmt: skip
    out = assemble_chat_stream(chunks)
    assert out["id"] == "c1" and out["object"] == "chat.completion" and out["system_fingerprint"] == "fp"
    assert out["choices"][0] == {
        "index": 0, "message": {"role": "assistant", "content": "42"}, "finish_reason": "stop",
    }  # fmt: skip
    call = out["choices"][1]["message"]["tool_calls"][0]
    assert call == {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a":1}'}}
    assert out["usage"]["total_tokens"] == 5


def _ask(model, question, system="", temperature=0.0):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    return chat_answers({"model": model, "messages": messages, "temperature": temperature})[0]


def test_the_standin_answers_deterministically_with_model_dependent_accuracy():
    assert _ask("gpt-4", "What is 17 + 25?") == _ask("gpt-4", "What is 17 + 25?")
    rates = {}
    for model in ("gpt-4", "gpt-4o-mini", "gpt-3.5-turbo", "llama"):
        right = sum(_ask(model, f"What is {i} + {i * 3}?") == str(4 * i) for i in range(400))
        rates[model] = right / 400
    assert rates["gpt-4"] > rates["gpt-4o-mini"] > rates["gpt-3.5-turbo"] > rates["llama"]
    for model, rate in rates.items():
        assert abs(rate - model_accuracy(model, temperature=0.0)) < 0.07, (model, rate)
    assert model_accuracy("gpt-4", "Think step by step.", 0.0) == pytest.approx(0.96)
    assert model_accuracy("gpt-4", "", 1.0) < model_accuracy("gpt-4", "", 0.0)


def test_the_standin_judges_echoes_and_embeds():
    score = float(_ask("gpt-4", "Rate the faithfulness of this answer from 1 to 5: 42"))
    assert 1 <= score <= 5
    assert "not a real LLM" in _ask("gpt-4", "Tell me a story")
    a, b = embed_text("refund policy for orders"), embed_text("Orders: for refund policy")
    c = embed_text("weather today")
    assert a == b and len(a) == 256
    assert sum(x * y for x, y in zip(a, c, strict=True)) < 0.5
