"""The built-in redaction patterns: what they catch and what they leave alone."""

import pytest

from keel.core.redaction import redact_record, redact_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail me at john.doe+x@example.co.uk now", "mail me at [EMAIL] now"),
        ("Jane_Roe@mail.example.com.", "[EMAIL]."),
        ("key sk-proj-abcdefghijklmnop1234 ok", "key [API_KEY] ok"),
        ("sk-ant-api03-AbCdEfGhIjKlMnOpQrSt", "[API_KEY]"),
        ("Authorization: Bearer abc.def-ghi_jkl", "Authorization: Bearer [API_KEY]"),
        ("id AKIAIOSFODNN7EXAMPLE here", "id [API_KEY] here"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key = [API_KEY]"),
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "token [API_KEY]"),
        ("call +44 20 7946 0958 today", "call [PHONE] today"),
        ("(555) 123-4567", "[PHONE]"),
        ("555-123-4567 or 555.123.4567", "[PHONE] or [PHONE]"),
        ("+4915112345678", "[PHONE]"),
    ],
)
def test_secrets_and_personal_data_are_replaced(text, expected):
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "on 2024-01-15 at 12:30",
        "server 192.168.10.20 answered",
        "version 1.2.3 costs $1,299.00",
        "order 12345 of 2024",
        "pi is 3.14159",
        "sketch-artist and task-force",
        "no secrets here, just text",
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert redact_text(text) == text


def test_records_are_redacted_in_messages_metadata_and_comments_without_touching_the_input():
    record = {
        "conversation_id": "c",
        "messages": [
            {"role": "user", "content": "I am bob@example.com"},
            {"role": "user", "content": [{"type": "text", "text": "call 555-123-4567"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"arguments": '{"email": "a@b.io"}'}]},
        ],
        "metadata": {"user": {"email": "x@y.org"}, "n": 3, "tags": ["sk-abcdefghijklmnopqrstu"]},
        "user_feedback": {"thumb": -1, "score": None, "comment": "my phone is +1 555 123 4567"},
    }
    original = repr(record)
    redacted = redact_record(record)
    assert repr(record) == original
    assert redacted["messages"][0]["content"] == "I am [EMAIL]"
    assert redacted["messages"][1]["content"][0]["text"] == "call [PHONE]"
    assert redacted["messages"][2]["tool_calls"] == [{"arguments": '{"email": "a@b.io"}'}]  # no content: kept
    assert redacted["metadata"] == {"user": {"email": "[EMAIL]"}, "n": 3, "tags": ["[API_KEY]"]}
    assert redacted["user_feedback"]["comment"] == "my phone is [PHONE]"
