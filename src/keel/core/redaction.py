"""Built-in redaction of personal data and secrets in logged conversations.

:func:`redact_text` replaces, in one pass over the text:

- e-mail addresses                        -> ``[EMAIL]``
- API keys and tokens: OpenAI/Anthropic ``sk-...``, ``Bearer <token>``,
  AWS access key ids (``AKIA...``/``ASIA...``) and ``aws_secret_access_key=...``,
  GitHub (``ghp_...``), Google (``AIza...``), Slack (``xox?-...``) tokens,
  JWTs                                    -> ``[API_KEY]``
- phone numbers (7-15 digits: ``+44 20 7946 0958``, ``(555) 123-4567``,
  ``555-123-4567``, ``+4915112345678``; dates and IP addresses are left alone)
                                          -> ``[PHONE]``

:func:`redact_record` applies it to every message's text, every string in
the metadata and the feedback comment of a normalized record, returning a
new record (the caller's data is never modified). It errs on the side of
redacting: a 10-digit number written with separators may be taken for a
phone number.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["redact_record", "redact_text"]

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])"
)
_BEARER = re.compile(r"(?i:\bbearer)\s+[A-Za-z0-9._~+/=-]{8,}")
_AWS_SECRET = re.compile(r"(?i:aws_secret_access_key|aws_secret)(\s*[=:]\s*)[\"']?[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])")
_KEY = re.compile(
    r"""\bsk-[A-Za-z0-9_-]{16,}
      | \b(?:AKIA|ASIA)[0-9A-Z]{16}\b
      | \bgh[pousr]_[A-Za-z0-9]{30,}
      | \bgithub_pat_[A-Za-z0-9_]{30,}
      | \bAIza[0-9A-Za-z_-]{35}
      | \bxox[abposr]-[A-Za-z0-9-]{10,}
      | \beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}""",
    re.VERBOSE,
)
_PHONE = re.compile(
    r"""(?=[+(\d])(?:
        (?<![\w+.])\+\d{8,15}(?![\w.])
      | (?<![\w+.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?![\w]|[.-]\d)
    )""",
    re.VERBOSE,
)
_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{4}")
_IP = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


def _phone(match: re.Match[str]) -> str:
    text = match.group()
    digits = sum(c.isdigit() for c in text)
    if not 7 <= digits <= 15 or _DATE.fullmatch(text) or _IP.fullmatch(text):
        return text
    return "[PHONE]"


def _has_digit(text: str) -> bool:
    # Ten substring scans run in C; a regex search for \d costs ~10x more on prose.
    return (
        "0" in text
        or "1" in text
        or "2" in text
        or "3" in text
        or "4" in text
        or "5" in text
        or "6" in text
        or "7" in text
        or "8" in text
        or "9" in text
    )


def redact_text(text: str) -> str:
    """``text`` with e-mails, phone numbers and API keys replaced by placeholders.

    Each pattern runs only when the text holds what it needs (an '@', a digit,
    a key prefix), so clean prose costs a few substring scans.
    """
    if "@" in text:
        text = _EMAIL.sub("[EMAIL]", text)
    if "earer" in text or "EARER" in text:
        text = _BEARER.sub("Bearer [API_KEY]", text)
    if "ws_secret" in text or "WS_SECRET" in text:
        text = _AWS_SECRET.sub(lambda m: m.group()[: m.start(1) - m.start()] + "=[API_KEY]", text)
    if (
        "sk-" in text
        or "_" in text
        or "AKIA" in text
        or "ASIA" in text
        or "AIza" in text
        or "xox" in text
        or "eyJ" in text
    ):
        text = _KEY.sub("[API_KEY]", text)
    if _has_digit(text):
        text = _PHONE.sub(_phone, text)
    return text


def _redact_value(value: Any) -> Any:
    kind = type(value)
    if kind is str:
        return redact_text(value)
    if kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is dict:
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def _redact_message(message: Any) -> Any:
    if type(message) is not dict and not isinstance(message, Mapping):
        return message
    content = message.get("content")
    if content is None:
        return message
    copy = dict(message)
    # Content parts ({"type": "text", "text": ...}) and tool-call arguments are text too.
    copy["content"] = _redact_value(content)
    if "tool_calls" in copy:
        copy["tool_calls"] = _redact_value(copy["tool_calls"])
    return copy


def redact_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a normalized record with message texts, metadata strings and the
    feedback comment redacted by :func:`redact_text`."""
    out = dict(record)
    out["messages"] = [_redact_message(m) for m in record.get("messages") or ()]
    out["metadata"] = _redact_value(record.get("metadata") or {})
    feedback = record.get("user_feedback")
    if isinstance(feedback, Mapping) and isinstance(feedback.get("comment"), str):
        out["user_feedback"] = {**feedback, "comment": redact_text(feedback["comment"])}
    return out
