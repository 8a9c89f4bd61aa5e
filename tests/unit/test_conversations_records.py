"""Conversation records: what log() accepts, what it refuses, and what is stored."""

import datetime as dt
import json
import math
import uuid

import pytest

from keel.core.conversations import (
    Conversation,
    normalize_feedback,
    normalize_record,
    parse_thumb,
    parse_time,
    to_row,
)
from keel.errors import InvalidInput

MESSAGES = [{"role": "user", "content": "Where is my order?"}, {"role": "assistant", "content": "It ships tomorrow."}]


def reference_record(**changes):
    """A record as the reference's ConversationLogger builds it."""
    record = {
        "conversation_id": "c-1",
        "messages": MESSAGES,
        "model": "gpt-4",
        "prompt_version": "v1.3",
        "user_feedback": "up",
        "tokens_used": {"prompt_tokens": 812, "completion_tokens": 64, "total_tokens": 876},
        "latency_ms": 1240,
        "timestamp": dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC),
    }
    record.update(changes)
    return record


def test_the_reference_format_is_accepted_and_normalized():
    record = normalize_record(reference_record(metadata={"user_id": "u1", "variant": "B"}))
    assert record["conversation_id"] == "c-1"
    assert record["user_feedback"] == {"thumb": 1, "score": None, "comment": None}
    assert record["tokens_used"] == {"prompt": 812, "completion": 64, "total": 876}
    assert record["latency_ms"] == 1240.0
    assert record["timestamp"] == int(dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC).timestamp() * 1000)
    assert record["metadata"] == {"user_id": "u1", "variant": "B"}
    assert record["run_id"] is None


def test_a_minimal_record_gets_an_id_and_the_current_time():
    record = normalize_record({"messages": MESSAGES}, now_ms=1234)
    assert len(record["conversation_id"]) == 32 and record["timestamp"] == 1234
    assert record["model"] is None and record["metadata"] == {}
    assert normalize_record({"conversation_id": 42, "messages": []})["conversation_id"] == "42"
    some = uuid.uuid4()
    assert normalize_record({"conversation_id": some, "messages": []})["conversation_id"] == str(some)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"messages": "hello"}, "messages"),
        ({"messages": None}, "no messages"),
        ({"messages": ["hello"]}, "messages[0]"),
        ({"messages": [{"content": "x"}]}, "messages[0]"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "x"}, 7]}, "messages[1]"),
        ({"model": 4}, "model"),
        ({"model": "gpt\x00"}, "model"),
        ({"model": "x" * 201}, "model"),
        ({"conversation_id": ""}, "conversation_id"),
        ({"conversation_id": 1.5}, "conversation_id"),
        ({"conversation_id": "bad\udc80"}, "conversation_id"),
        ({"latency_ms": "120"}, "latency_ms"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"latency_ms": math.nan}, "latency_ms"),
        ({"latency_ms": True}, "latency_ms"),
        ({"tokens_used": -800}, "tokens_used"),
        ({"tokens_used": 12.5}, "tokens_used"),
        ({"tokens_used": "120"}, "tokens_used"),
        ({"tokens_used": True}, "tokens_used"),
        ({"tokens_used": {"total_tokens": "many"}}, "tokens_used.total_tokens"),
        ({"tokens_used": {"prompt": 10, "completion": 5, "total": 12}}, "tokens_used.total"),
        ({"tokens_used": {"prompt": 1.5}}, "tokens_used.prompt"),
        ({"tokens_used": {"prompt": -3}}, "tokens_used.prompt"),
        ({"tokens_used": {"foo": 1}}, "tokens_used"),
        ({"user_feedback": "meh"}, "user_feedback"),
        ({"user_feedback": {"thumb": "sideways"}}, "user_feedback"),
        ({"user_feedback": {"score": math.inf}}, "user_feedback.score"),
        ({"user_feedback": {"thumb": "up", "stars": 5}}, "user_feedback"),
        ({"user_feedback": {"score": "high"}}, "user_feedback.score"),
        ({"user_feedback": {"comment": 5}}, "user_feedback.comment"),
        ({"user_feedback": 3.5}, "user_feedback"),
        ({"timestamp": "yesterday-ish"}, "timestamp"),
        ({"metadata": ["a"]}, "metadata"),
        ({"metadata": {1: "a"}}, "metadata keys"),
        ({"run_id": 7}, "run_id"),
        ({"extra": 1}, "unknown key"),
    ],
)
def test_wrong_types_are_refused_naming_the_field(changes, field):
    """Both the message and the hint name the field that is wrong (a bad tokens_used once got a
    hint about messages)."""
    with pytest.raises(InvalidInput) as caught:
        normalize_record(reference_record(**changes))
    assert field in caught.value.message
    if field == "unknown key":
        assert "put the rest in metadata" in caught.value.hint
        return
    named = field.replace("no messages", "messages").replace(" keys", "")
    assert named.partition(".")[0].partition("[")[0] in caught.value.hint
    for other in ("messages", "tokens_used", "user_feedback", "latency_ms", "metadata", "timestamp"):
        if other not in named:
            assert other not in caught.value.hint, caught.value


def test_tokens_used_as_a_total_or_as_counts():
    """The reference logs ``"tokens_used": conversation.token_usage``: a plain total is accepted."""

    def tokens(value):
        return normalize_record(reference_record(tokens_used=value))["tokens_used"]

    assert tokens(120) == {"prompt": None, "completion": None, "total": 120}
    assert tokens(0) == {"prompt": None, "completion": None, "total": 0}
    assert tokens({"prompt": 100, "completion": 20}) == {"prompt": 100, "completion": 20, "total": 120}
    assert tokens({"input_tokens": 7}) == {"prompt": 7, "completion": None, "total": 7}
    assert tokens({"total_tokens": 99}) == {"prompt": None, "completion": None, "total": 99}
    assert tokens({"total": 99}) == {"prompt": None, "completion": None, "total": 99}
    # OpenAI's usage object as a dict: extra detail keys are ignored, a larger total is kept as given
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 18, "prompt_tokens_details": {}}
    assert tokens(usage) == {"prompt": 10, "completion": 5, "total": 18}
    assert tokens(None) == {"prompt": None, "completion": None, "total": None}
    assert tokens({}) == {"prompt": None, "completion": None, "total": None}
    row = to_row(normalize_record(reference_record(tokens_used=120)), created_at=5)
    assert row[10:12] == (None, None) and row[14] == 120
    with pytest.raises(InvalidInput) as caught:
        tokens(-1)
    assert caught.value.message == "invalid conversation record: tokens_used must be a whole number >= 0, not -1"
    assert caught.value.hint == "token counts are integers: tokens_used=876"
    with pytest.raises(InvalidInput) as caught:
        tokens([1, 2])
    assert caught.value.hint == ("pass tokens_used=876 (the total) or tokens_used={'prompt': 812, 'completion': 64}")


def test_a_record_must_be_a_mapping():
    with pytest.raises(InvalidInput, match="a record is a dict"):
        normalize_record(["messages"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "thumb"),
    [("up", 1), ("DOWN", -1), (True, 1), (False, -1), (1, 1), (-1, -1), ("thumbs_up", 1), (None, None)],
)
def test_thumbs(value, thumb):
    assert parse_thumb(value) == thumb


def test_feedback_shorthands():
    assert normalize_feedback("down") == (-1, None, None)
    assert normalize_feedback({"score": 4, "comment": "ok"}) == (None, 4.0, "ok")
    assert normalize_feedback(None) == (None, None, None)
    with pytest.raises(InvalidInput):
        parse_thumb(0)


def test_times():
    now = 1_800_000_000_000
    assert parse_time(1_700_000_000) == 1_700_000_000_000  # epoch seconds
    assert parse_time(1_700_000_000_123) == 1_700_000_000_123  # epoch ms
    assert parse_time("1700000000123") == 1_700_000_000_123
    assert parse_time("2026-11-01T00:00:00Z") == int(dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp() * 1000)
    assert parse_time("24h", now_ms=now) == now - 86_400_000
    assert parse_time("7d", now_ms=now) == now - 7 * 86_400_000
    assert parse_time("30m", now_ms=now) == now - 1_800_000
    assert parse_time(dt.date(2026, 1, 2)) == int(dt.datetime(2026, 1, 2).timestamp() * 1000)
    for bad in ("soon", -5, math.inf, None):
        with pytest.raises(InvalidInput):
            parse_time(bad)


def test_rows_snapshot_the_messages_and_encode_compact_json():
    messages = [dict(m) for m in MESSAGES]
    record = normalize_record(
        reference_record(messages=messages, metadata={"at": dt.date(2026, 1, 2), "ids": {3, 1}, "u": "é"})
    )
    row = to_row(record, created_at=5)
    messages.append({"role": "user", "content": "one more"})
    messages[0]["content"] = "changed"
    stored = json.loads(row[5])
    assert stored == MESSAGES
    assert row[6] == '{"at":"2026-01-02","ids":[1,3],"u":"\\u00e9"}'
    assert row[0] == "c-1" and row[7] == 1 and row[10:15] == (812, 64, 1240.0, 5, 876)


def test_values_json_cannot_store_are_refused():
    record = normalize_record(reference_record(metadata={"obj": object()}))
    with pytest.raises(InvalidInput, match="metadata cannot be stored as JSON") as caught:
        to_row(record, 0)
    assert "in metadata" in caught.value.hint
    record = normalize_record(reference_record(messages=[{"role": "user", "content": [object()]}]))
    with pytest.raises(InvalidInput, match="messages cannot be stored as JSON"):
        to_row(record, 0)
    record = normalize_record(reference_record(metadata={"x": math.nan}))
    with pytest.raises(InvalidInput, match="JSON"):
        to_row(record, 0)


def test_an_eval_example_splits_input_and_output():
    conversation = Conversation(
        1, "c-1", 10, "gpt-4", "v1", None, list(MESSAGES), {"user_id": "u1"}, "down", None, "wrong", 11,
        5, 6, 100.0, 10,
    )  # fmt: skip
    example = conversation.to_example()
    assert example["input"] == MESSAGES[:1]
    assert example["output"] == "It ships tomorrow."
    assert example["feedback"] == {"thumb": "down", "score": None, "comment": "wrong"}
    assert example["metadata"]["user_id"] == "u1" and example["metadata"]["prompt_version"] == "v1"
    unanswered = Conversation(2, "c-2", 10, None, None, None, MESSAGES[:1], {}, None, None, None, None,
                              None, None, None, 10)  # fmt: skip
    assert unanswered.output is None and unanswered.input == MESSAGES[:1]
