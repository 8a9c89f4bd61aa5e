"""Anthropic streams as data: the events a Message is replayed as add up to it again."""

from __future__ import annotations

from keel.core.llm import assemble_messages_stream, messages_stream_events, usage_tokens

MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5",
    "content": [
        {"type": "thinking", "thinking": "Add them.", "signature": "sig"},
        {"type": "text", "text": "It is 42."},
        {"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {"a": 17, "b": 25}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 9},
}


def test_synthesized_events_add_up_to_the_message() -> None:
    events = messages_stream_events(MESSAGE)
    assert [e["type"] for e in events][:2] == ["message_start", "content_block_start"]
    assert events[-2]["type"] == "message_delta" and events[-1] == {"type": "message_stop"}
    assert assemble_messages_stream(events) == MESSAGE


def test_deltas_are_joined_and_usage_merged() -> None:
    events = [
        {
            "type": "message_start",
            "message": {**MESSAGE, "content": [], "usage": {"input_tokens": 5, "output_tokens": 1}},
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "4"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "2"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}},
        },
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"x": '}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "1}"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}},
        {"type": "message_stop"},
    ]
    message = assemble_messages_stream(events)
    assert message["content"] == [
        {"type": "text", "text": "42"},
        {"type": "tool_use", "id": "t", "name": "f", "input": {"x": 1}},
    ]
    assert message["stop_reason"] == "end_turn" and message["usage"] == {"input_tokens": 5, "output_tokens": 7}


def test_prompt_cache_tokens_count_as_input() -> None:
    usage = {"input_tokens": 10, "output_tokens": 3, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20}
    assert usage_tokens({"usage": usage}) == (130, 3)
    assert usage_tokens({"usage": {"prompt_tokens": 10, "completion_tokens": 3}}) == (10, 3)
