"""A span's inputs and outputs read by convention (keel.core.trace_payloads): GenAI, OpenInference, MLflow."""

from __future__ import annotations

import json

from keel.core.trace_payloads import MAX_PAYLOAD_DEPTH, MAX_PAYLOAD_NODES, payloads_of
from keel.core.traces import TRUNCATED, normalize_span, payload_from_attributes

USER = {"role": "user", "parts": [{"type": "text", "content": "What is 17 + 25?"}]}
ANSWER = {"role": "assistant", "parts": [{"type": "text", "content": "42"}], "finish_reason": "stop"}


def test_genai_messages_with_system_instructions_first():
    found = payloads_of(
        {
            "gen_ai.input.messages": json.dumps([USER]),
            "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "be brief"}]),
            "gen_ai.output.messages": json.dumps([ANSWER]),
            "gen_ai.request.model": "gpt-4o",
        }
    )
    assert found.inputs == [{"role": "system", "parts": [{"type": "text", "content": "be brief"}]}, USER]
    assert found.outputs == [ANSWER]
    assert found.attributes == {"gen_ai.input.messages", "gen_ai.system_instructions", "gen_ai.output.messages"}
    assert not found.events


def test_structured_genai_messages_are_taken_as_they_are():
    # An exporter may send the messages as an array of key-value lists rather than JSON text.
    found = payloads_of({"gen_ai.input.messages": [USER], "gen_ai.system_instructions": "be brief"})
    assert found.inputs == [{"role": "system", "content": "be brief"}, USER]
    assert found.outputs is None


def test_flattened_prompt_and_completion_attributes_become_message_lists():
    attributes = {
        "gen_ai.prompt.1.role": "user",
        "gen_ai.prompt.1.content": "hi",
        "gen_ai.prompt.0.role": "system",
        "gen_ai.prompt.0.content": "be brief",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.finish_reason": "tool_calls",
        "gen_ai.completion.0.tool_calls.0.name": "search",
        "gen_ai.completion.0.tool_calls.0.arguments": '{"q": "x"}',
        "gen_ai.completion.0.tool_calls.1.name": "fetch",
        "gen_ai.prompt.nope": "not an index: stays an attribute",
        "gen_ai.usage.input_tokens": 3,
    }
    found = payloads_of(attributes)
    assert found.inputs == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert found.outputs == [
        {
            "role": "assistant",
            "finish_reason": "tool_calls",
            "tool_calls": [{"name": "search", "arguments": '{"q": "x"}'}, {"name": "fetch"}],
        }
    ]
    assert "gen_ai.prompt.nope" not in found.attributes and "gen_ai.usage.input_tokens" not in found.attributes
    assert {k for k in attributes if k.startswith(("gen_ai.prompt.0", "gen_ai.prompt.1", "gen_ai.completion."))} == set(
        found.attributes
    )


def test_openinference_values_and_flattened_messages():
    found = payloads_of({"input.value": '{"question": "hi"}', "output.value": "plain answer"})
    assert found.inputs == {"question": "hi"} and found.outputs == "plain answer"
    text = payloads_of({"input.value": '{"not": "parsed"}', "input.mime_type": "text/plain"})
    assert text.inputs == '{"not": "parsed"}'
    messages = payloads_of(
        {
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": "hi",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": "hello",
        }
    )
    assert messages.inputs == [{"role": "user", "content": "hi"}]
    assert messages.outputs == [{"role": "assistant", "content": "hello"}]


def test_input_value_wins_over_other_conventions_which_stay_attributes():
    found = payloads_of({"input.value": "q", "gen_ai.input.messages": json.dumps([USER])})
    assert found.inputs == "q" and found.attributes == {"input.value"}


def test_message_and_choice_events():
    events = [
        {"name": "gen_ai.system.message", "attributes": {"content": "be brief", "gen_ai.system": "openai"}},
        {"name": "gen_ai.user.message", "attributes": {"content": "hi"}},
        {"name": "exception", "attributes": {"exception.message": "kept"}},
        {"name": "gen_ai.choice", "attributes": {"index": 1, "finish_reason": "stop", "message": '{"content": "b"}'}},
        {
            "name": "gen_ai.choice",
            "attributes": {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "a"}},
        },
    ]
    found = payloads_of({}, events)
    assert found.inputs == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert found.outputs == [
        {"role": "assistant", "content": "a", "index": 0, "finish_reason": "stop"},
        {"role": "assistant", "content": "b", "index": 1, "finish_reason": "stop"},
    ]
    assert found.events == {0, 1, 3, 4}


def test_older_content_events_and_the_details_event():
    older = payloads_of(
        {},
        [
            {"name": "gen_ai.content.prompt", "attributes": {"gen_ai.prompt": '[{"role": "user", "content": "hi"}]'}},
            {"name": "gen_ai.content.completion", "attributes": {"gen_ai.completion": '[{"content": "yo"}]'}},
        ],
    )
    assert older.inputs == [{"role": "user", "content": "hi"}] and older.outputs == [{"content": "yo"}]
    details = payloads_of(
        {},
        [
            {
                "name": "gen_ai.client.inference.operation.details",
                "attributes": {"gen_ai.input.messages": json.dumps([USER]), "gen_ai.output.messages": [ANSWER]},
            }
        ],
    )
    assert details.inputs == [USER] and details.outputs == [ANSWER] and details.events == {0}


def test_attributes_win_over_events_and_unused_events_stay():
    events = [{"name": "gen_ai.user.message", "attributes": {"content": "hi"}}]
    found = payloads_of({"gen_ai.input.messages": json.dumps([USER])}, events)
    assert found.inputs == [USER] and found.outputs is None and not found.events


def test_json_text_is_parsed_only_within_bounds():
    deep = "[" * (MAX_PAYLOAD_DEPTH + 5) + "]" * (MAX_PAYLOAD_DEPTH + 5)
    assert payloads_of({"input.value": deep}).inputs == deep
    wide = json.dumps(list(range(MAX_PAYLOAD_NODES + 1)))
    assert payloads_of({"output.value": wide}).outputs == wide
    broken = '{"a": '
    assert payloads_of({"input.value": broken}).inputs == broken
    very_deep = "[" * 100_000  # the parser's recursion limit: kept as text, no RecursionError
    assert payloads_of({"input.value": very_deep}).inputs == very_deep
    lone_surrogate = '"\\ud800"'  # valid JSON text for a string that is not valid Unicode
    assert payloads_of({"input.value": lone_surrogate}).inputs == lone_surrogate
    assert payloads_of({"input.value": '  {"a": 1}'}).inputs == {"a": 1}


def test_payload_from_attributes_reads_the_same_conventions():
    assert payload_from_attributes({"gen_ai.prompt.0.content": "hi"}, "inputs") == [{"content": "hi"}]
    assert payload_from_attributes({"mlflow.spanOutputs": '"ok"'}, "outputs") == "ok"


def test_a_source_marks_a_span_it_cut_with_keel_truncated():
    base = {"trace_id": "a" * 32, "span_id": "b" * 16, "name": "n", "start_ns": 1, "end_ns": 2}
    assert normalize_span({**base, "attributes": {"keel.truncated": True}}).flags & TRUNCATED
    assert not normalize_span({**base, "attributes": {"keel.truncated": "yes"}}).flags & TRUNCATED
