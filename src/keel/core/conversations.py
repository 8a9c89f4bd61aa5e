"""Conversation records: validation, normalisation, stored rows and read entities.

A *record* is what ``keel.conversations.log`` takes, in the format of the
reference's ``ConversationLogger``::

    {
        "conversation_id": "c-123",
        "messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}],
        "model": "gpt-4",
        "prompt_version": "support-bot@1.3.0",
        "user_feedback": {"thumb": "up", "score": 4, "comment": "helpful"},   # or "up" / True
        "tokens_used": {"prompt": 812, "completion": 64},   # OpenAI/Anthropic names too, or a total: 876
        "latency_ms": 1240,
        "timestamp": datetime.now(),             # datetime, epoch s or ms, ISO text; default now
        "metadata": {"user_id": "u1", "environment": "prod", "variant": "B"},
        "run_id": None,                           # default: the active run, if any
    }

:func:`normalize_record` checks the types and returns the canonical dict (the
input is not modified); :func:`to_row` turns it into the tuple the store
inserts (messages and metadata as compact JSON). Both are pure and cheap:
they run on the caller's thread for every logged record.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import json
import math
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from keel.errors import InvalidInput

__all__ = [
    "FILTER_PREFIXES",
    "MAX_ID_LENGTH",
    "RECORD_KEYS",
    "Conversation",
    "ConversationBatch",
    "FeedbackEvent",
    "check_text",
    "dumps",
    "normalize_feedback",
    "normalize_record",
    "parse_thumb",
    "parse_time",
    "thumb_name",
    "to_row",
    "total_tokens",
]

MAX_ID_LENGTH = 200
RECORD_KEYS = (
    "conversation_id",
    "messages",
    "model",
    "prompt_version",
    "user_feedback",
    "tokens_used",
    "latency_ms",
    "timestamp",
    "metadata",
    "run_id",
)
_KEYS = frozenset(RECORD_KEYS)
_MESSAGES_HINT = "pass messages=[{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello'}]"
_TOKENS_HINT = "pass tokens_used=876 (the total) or tokens_used={'prompt': 812, 'completion': 64}"
_FEEDBACK_HINT = "pass user_feedback='up' (or 'down') or user_feedback={'thumb': 'up', 'score': 4, 'comment': '...'}"

#: Filter prefixes for conversation queries (``feedback.thumb = 'down'``, ``metadata.user_id = 'u1'``).
FILTER_PREFIXES: Mapping[str, str] = {
    "feedback": "feedback",
    "user_feedback": "feedback",
    "tokens": "tokens",
    "tokens_used": "tokens",
    "metadata": "metadata",
    "meta": "metadata",
}

_THUMBS: dict[Any, int] = {"up": 1, "down": -1, "+1": 1, "-1": -1, "thumbs_up": 1, "thumbs_down": -1}
_TOKEN_NAMES = (
    ("prompt", "completion"),
    ("prompt_tokens", "completion_tokens"),
    ("input_tokens", "output_tokens"),
    ("input", "output"),
)
_TOTAL_NAMES = ("total", "total_tokens")


def _bad(message: str, hint: str) -> InvalidInput:
    """A refused record: ``message`` and ``hint`` both name the field that is wrong."""
    return InvalidInput(f"invalid conversation record: {message}", hint)


def check_text(value: Any, what: str, limit: int | None = MAX_ID_LENGTH) -> str:
    """``value`` if it is a string that every database can store (no NUL, no lone surrogates, bounded)."""
    if not isinstance(value, str):
        raise _bad(f"{what} must be a string, not {type(value).__name__}", f"pass {what} as text")
    if limit is not None and len(value) > limit:
        raise _bad(f"{what} is {len(value)} characters long (at most {limit})", f"shorten {what}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _bad(f"{what} is not valid Unicode (it holds a lone surrogate)", f"decode {what} properly") from None
    if "\x00" in value:
        raise _bad(f"{what} contains a NUL character", f"remove NUL characters from {what}")
    return value


def _number(value: Any, what: str, minimum: float | None = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | decimal.Decimal):
        raise _bad(f"{what} must be a number, not {type(value).__name__}", f"pass {what} as a number")
    number = float(value)
    if not math.isfinite(number) or (minimum is not None and number < minimum):
        wanted = "a finite number" if minimum is None else f"a finite number >= {minimum:g}"
        raise _bad(f"{what} must be {wanted}, not {_shown(value)}", f"pass {what} as {wanted}")
    return number


def _count(value: Any, what: str, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(f"{what} must be a whole number >= 0, not {_shown(value)}", f"token counts are integers: {example}")
    return int(value)


def parse_thumb(value: Any) -> int | None:
    """``"up"``/``True``/``1`` -> 1, ``"down"``/``False``/``-1`` -> -1, None -> None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return 1 if value else -1
    if isinstance(value, int) and value in (1, -1):
        return value
    if isinstance(value, str):
        found = _THUMBS.get(value.strip().lower())
        if found is not None:
            return found
    raise _bad(
        f"user_feedback's thumb must be 'up' or 'down' (or True/False), not {_shown(value)}",
        "pass user_feedback='up' or user_feedback={'thumb': 'down'}",
    )


def thumb_name(value: int | None) -> str | None:
    """1 -> ``"up"``, -1 -> ``"down"``, None -> None."""
    return None if value is None else ("up" if value > 0 else "down")


def normalize_feedback(value: Any) -> tuple[int | None, float | None, str | None]:
    """``user_feedback`` -> ``(thumb, score, comment)``; a bare ``"up"``/``True`` is a thumb."""
    if value is None:
        return None, None, None
    if isinstance(value, str | bool | int) and not isinstance(value, Mapping):
        return parse_thumb(value), None, None
    if not isinstance(value, Mapping):
        raise _bad(f"user_feedback must be a dict or 'up'/'down', not {type(value).__name__}", _FEEDBACK_HINT)
    unknown = set(value) - {"thumb", "score", "comment"}
    if unknown:
        raise _bad(
            f"unknown user_feedback key(s) {sorted(map(str, unknown))}",
            "user_feedback takes thumb, score and comment: user_feedback={'thumb': 'up', 'score': 4}",
        )
    score = value.get("score")
    comment = value.get("comment")
    return (
        parse_thumb(value.get("thumb")),
        None if score is None else _number(score, "user_feedback.score", None),
        None if comment is None else check_text(comment, "user_feedback.comment", 100_000),
    )


def _tokens(value: Any) -> tuple[int | None, int | None, int | None]:
    """``tokens_used`` -> ``(prompt, completion, total)``.

    A whole number is the total (the split unknown); a dict gives prompt/completion
    counts under any of the :data:`_TOKEN_NAMES` pairs and/or a total (``total``,
    ``total_tokens``). Without a total given, it is the sum of the counts given.
    """
    if value is None:
        return None, None, None
    if isinstance(value, int) and not isinstance(value, bool):
        return None, None, _count(value, "tokens_used", "tokens_used=876")
    if type(value) is not dict and not isinstance(value, Mapping):
        raise _bad(
            f"tokens_used must be a whole number (the total) or a dict like {{'prompt': 812, 'completion': 64}}, "
            f"not {_shown(value)}",
            _TOKENS_HINT,
        )
    prompt = completion = None
    for prompt_key, completion_key in _TOKEN_NAMES:
        if prompt_key in value or completion_key in value:
            example = f"tokens_used={{'{prompt_key}': 812, '{completion_key}': 64}}"
            raw_prompt, raw_completion = value.get(prompt_key), value.get(completion_key)
            prompt = None if raw_prompt is None else _count(raw_prompt, f"tokens_used.{prompt_key}", example)
            completion = (
                None if raw_completion is None else _count(raw_completion, f"tokens_used.{completion_key}", example)
            )
            break
    total_key = next((k for k in _TOTAL_NAMES if value.get(k) is not None), None)
    total = None if total_key is None else _count(value[total_key], f"tokens_used.{total_key}", "tokens_used=876")
    parts = None if prompt is None and completion is None else (prompt or 0) + (completion or 0)
    if total is None:
        if parts is None and value:
            raise _bad(f"tokens_used has no token counts: {sorted(map(str, value))}"[:300], _TOKENS_HINT)
        return prompt, completion, parts
    if parts is not None and total < parts:
        raise _bad(
            f"tokens_used.{total_key} ({total}) is less than its prompt and completion counts ({parts})",
            f"pass tokens_used.{total_key} >= {parts}, or leave it out: the total is then their sum",
        )
    return prompt, completion, total


def total_tokens(prompt: int | None, completion: int | None, total: int | None) -> int | None:
    """A record's total: as stored, else the sum of its counts (records stored before totals were)."""
    if total is not None:
        return total
    if prompt is None and completion is None:
        return None
    return (prompt or 0) + (completion or 0)


def _messages(value: Any) -> list[Any]:
    if type(value) is not list and (isinstance(value, str | bytes) or not isinstance(value, Sequence)):
        raise _bad(
            f"messages must be a list of {{'role', 'content'}} dicts, not {type(value).__name__}", _MESSAGES_HINT
        )
    for i, message in enumerate(value):
        if type(message) is not dict and not isinstance(message, Mapping):
            raise _bad(
                f"messages[{i}] must be a dict with 'role' and 'content', not {type(message).__name__}",
                f"write messages[{i}] as {{'role': 'user', 'content': 'Hi'}}",
            )
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise _bad(
                f"messages[{i}] has no 'role' (a string such as 'user' or 'assistant')",
                f"give messages[{i}] a role: {{'role': 'user', 'content': ...}}",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise _bad(
                f"messages[{i}].content must be a string, a list of parts or None, not {type(content).__name__}",
                f"make messages[{i}].content text: {{'role': {role!r}, 'content': 'Hi'}}"[:300],
            )
    return list(value)


#: The latest time keel reads: the end of year 9999 (epoch milliseconds); a time is
#: refused past it either way, so every time fits the database's 64-bit integers.
MAX_TIME_MS = 253_402_300_799_999


def _bounded(ms: float, value: Any) -> int:
    if not -MAX_TIME_MS <= ms <= MAX_TIME_MS:
        raise InvalidInput(f"invalid time {_shown(value)}: out of range", "give a time between the years 1 and 9999")
    return int(ms)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_time(value: Any, now_ms: int | None = None) -> int:
    """A time as epoch milliseconds.

    Accepts a ``datetime`` (naive means local time), epoch seconds or
    milliseconds (numbers from 1e11 up are milliseconds), ISO-8601 text
    (``2026-11-01``, ``2026-11-01T12:00:00+00:00``), digits (epoch ms) or a
    duration before now: ``30s``, ``15m``, ``24h``, ``7d``, ``2w``. Anything
    else, or a time past the year 9999, is InvalidInput.
    """
    if isinstance(value, _dt.datetime):
        try:
            return _bounded(value.timestamp() * 1000, value)
        except (OverflowError, ValueError, OSError):  # the platform cannot place it in time
            raise InvalidInput(
                f"invalid time {_shown(value)}: out of range", "give a time in the years 1-9999"
            ) from None
    if isinstance(value, _dt.date):
        return parse_time(_dt.datetime(value.year, value.month, value.day))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise InvalidInput(f"invalid time {value!r}", "give a datetime or epoch seconds")
        return _bounded(value if value >= 1e11 else value * 1000, value)
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            if len(text) > 19:
                raise InvalidInput(f"invalid time {_shown(value)}: out of range", "give epoch milliseconds")
            return parse_time(int(text))
        match = re.fullmatch(r"([0-9]{1,15}(?:\.[0-9]{1,15})?)\s*([smhdw])", text)
        if match:
            unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
            now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
            return _bounded(now - int(float(match.group(1)) * unit * 1000), value)
        try:
            return parse_time(_dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
        except ValueError:
            pass
    raise InvalidInput(
        f"invalid time {_shown(value)}", "write 2026-11-01, 2026-11-01T12:00:00, epoch milliseconds, or 24h / 7d ago"
    )


def normalize_record(raw: Mapping[str, Any], now_ms: int | None = None) -> dict[str, Any]:
    """Check a record's types and return its canonical form (a new dict).

    The canonical form has every key of :data:`RECORD_KEYS`: ``user_feedback``
    as ``{"thumb": 1|-1|None, "score", "comment"}``, ``tokens_used`` as
    ``{"prompt", "completion", "total"}``, ``timestamp`` in epoch ms, a generated
    ``conversation_id`` when none was given. Raises InvalidInput naming the bad field.
    """
    if type(raw) is not dict and not isinstance(raw, Mapping):
        raise _bad(
            f"a record is a dict, not {type(raw).__name__}",
            "keel.conversations.log({'conversation_id': 'c-1', 'messages': [{'role': 'user', 'content': 'Hi'}]})",
        )
    if not _KEYS.issuperset(raw):
        unknown = sorted(str(k) for k in raw if k not in _KEYS)
        raise _bad(f"unknown key(s) {unknown}", f"a record has {', '.join(RECORD_KEYS)}; put the rest in metadata")
    cid = raw.get("conversation_id")
    if cid is None:
        cid = uuid.uuid4().hex
    elif isinstance(cid, int) and not isinstance(cid, bool) or isinstance(cid, uuid.UUID):
        cid = str(cid)
    else:
        cid = check_text(cid, "conversation_id")
        if not cid:
            raise _bad("conversation_id is empty", "pass conversation_id='c-1' (or leave it out for a new id)")
    messages = raw.get("messages")
    if messages is None:
        raise _bad("it has no messages", _MESSAGES_HINT)
    model = raw.get("model")
    prompt_version = raw.get("prompt_version")
    run_id = raw.get("run_id")
    metadata = raw.get("metadata")
    if metadata is None:
        metadata = {}
    elif type(metadata) is not dict and not isinstance(metadata, Mapping):
        raise _bad(f"metadata must be a dict, not {type(metadata).__name__}", "metadata={'user_id': 'u1'}")
    elif not all(isinstance(k, str) for k in metadata):
        raise _bad("metadata keys must be strings", "metadata={'user_id': 'u1'}")
    thumb, score, comment = normalize_feedback(raw.get("user_feedback"))
    prompt_tokens, completion_tokens, all_tokens = _tokens(raw.get("tokens_used"))
    latency = raw.get("latency_ms")
    stamp = raw.get("timestamp")
    try:
        at = (now_ms if now_ms is not None else time.time_ns() // 1_000_000) if stamp is None else parse_time(stamp)
    except InvalidInput as exc:
        raise _bad(f"timestamp {_shown(stamp)} is not a time", f"pass timestamp=datetime.now(): {exc.hint}") from None
    return {
        "conversation_id": cid,
        "messages": _messages(messages),
        "model": None if model is None else check_text(model, "model"),
        "prompt_version": None if prompt_version is None else check_text(str(prompt_version), "prompt_version"),
        "user_feedback": {"thumb": thumb, "score": score, "comment": comment},
        "tokens_used": {"prompt": prompt_tokens, "completion": completion_tokens, "total": all_tokens},
        "latency_ms": None if latency is None else _number(latency, "latency_ms"),
        "timestamp": at,
        "metadata": dict(metadata),
        "run_id": None if run_id is None else check_text(run_id, "run_id", 32),
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | PurePath | decimal.Decimal):
        return str(value) if not isinstance(value, decimal.Decimal) else float(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_encode = json.JSONEncoder(separators=(",", ":"), default=_json_default, allow_nan=False).encode


def dumps(value: Any) -> str:
    """Compact JSON (ASCII-escaped, so any database stores it; NaN refused)."""
    return _encode(value)


def to_row(record: Mapping[str, Any], created_at: int) -> tuple[Any, ...]:
    """The stored row of a normalized (and redacted) record, JSON encoded now.

    Encoding on the caller's thread snapshots the messages: an app that keeps
    appending to the same list afterwards does not change what was logged.
    """
    feedback = record["user_feedback"]
    tokens = record["tokens_used"]
    encoded = []
    for key in ("messages", "metadata"):
        try:
            encoded.append(dumps(record[key]))
        except (TypeError, ValueError) as exc:
            raise _bad(
                f"{key} cannot be stored as JSON: {exc}", f"put only strings, numbers, lists and dicts in {key}"
            ) from None
    messages, metadata = encoded
    return (
        record["conversation_id"],
        record["timestamp"],
        record["model"],
        record["prompt_version"],
        record["run_id"],
        messages,
        metadata,
        feedback["thumb"],
        feedback["score"],
        feedback["comment"],
        tokens["prompt"],
        tokens["completion"],
        record["latency_ms"],
        created_at,
        total_tokens(tokens["prompt"], tokens["completion"], tokens.get("total")),
    )


@dataclass
class ConversationBatch:
    """Rows waiting to be written in one transaction.

    - ``conversations``: rows from :func:`to_row`
    - ``feedback``: ``(conversation_id, thumb, score, comment, at)``
    """

    conversations: list[tuple[Any, ...]] = field(default_factory=list)
    feedback: list[tuple[str, int | None, float | None, str | None, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.conversations) + len(self.feedback)


@dataclass(frozen=True)
class FeedbackEvent:
    """One piece of feedback that arrived after the conversation was logged."""

    conversation_id: str
    thumb: str | None
    score: float | None
    comment: str | None
    at: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "conversation_id": self.conversation_id,
            "thumb": self.thumb,
            "score": self.score,
            "comment": self.comment,
            "at": self.at,
        }


@dataclass(frozen=True)
class Conversation:
    """A stored conversation record, with its latest feedback."""

    id: int
    conversation_id: str
    timestamp: int
    model: str | None
    prompt_version: str | None
    run_id: str | None
    messages: list[Any]
    metadata: dict[str, Any]
    thumb: str | None
    score: float | None
    comment: str | None
    feedback_at: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float | None
    created_at: int
    total_tokens: int | None = None  # given, or the sum of the counts

    @property
    def user_feedback(self) -> dict[str, Any]:
        """``{"thumb": "up"|"down"|None, "score", "comment"}`` (the latest)."""
        return {"thumb": self.thumb, "score": self.score, "comment": self.comment}

    @property
    def tokens_used(self) -> dict[str, int | None]:
        """``{"prompt", "completion", "total"}`` (a total logged alone has no split: None, None, N)."""
        return {"prompt": self.prompt_tokens, "completion": self.completion_tokens, "total": self.total_tokens}

    @property
    def output(self) -> Any:
        """The final assistant message's content (None if the last message is not the assistant's)."""
        if self.messages and isinstance(self.messages[-1], Mapping) and self.messages[-1].get("role") == "assistant":
            return self.messages[-1].get("content")
        return None

    @property
    def input(self) -> list[Any]:
        """The messages before the final assistant message (all of them if there is none)."""
        return self.messages[:-1] if self.output is not None else list(self.messages)

    def to_dict(self) -> dict[str, Any]:
        """The record as logged (reference format), plus ``id``/``created_at``."""
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "timestamp": self.timestamp,
            "model": self.model,
            "prompt_version": self.prompt_version,
            "run_id": self.run_id,
            "messages": self.messages,
            "metadata": self.metadata,
            "user_feedback": self.user_feedback,
            "feedback_at": self.feedback_at,
            "tokens_used": self.tokens_used,
            "latency_ms": self.latency_ms,
            "created_at": self.created_at,
        }

    def to_example(self) -> dict[str, Any]:
        """One eval-dataset line: input messages, output, feedback, metadata."""
        return {
            "conversation_id": self.conversation_id,
            "input": self.input,
            "output": self.output,
            "feedback": self.user_feedback,
            "metadata": {
                **self.metadata,
                "model": self.model,
                "prompt_version": self.prompt_version,
                "timestamp": self.timestamp,
                "run_id": self.run_id,
            },
        }
