"""``keel.conversations``: log what your app serves, collect feedback, turn it into eval data.

Logging from inside an app::

    import keel

    keel.conversations.log({
        "conversation_id": "c-123",
        "messages": [{"role": "user", "content": "Where is my order?"},
                     {"role": "assistant", "content": "It ships tomorrow."}],
        "model": "gpt-4o",
        "prompt_version": "support-bot@1.3.0",
        "tokens_used": {"prompt": 812, "completion": 64},     # or the total alone: 876
        "latency_ms": 1240,
        "metadata": {"user_id": "u1", "environment": "prod", "variant": "B"},
    })
    keel.conversations.feedback("c-123", thumb="down", comment="wrong order")   # later, any process

:func:`log` and :func:`feedback` cost a validation and a queue append: a
background thread writes batches (one transaction each), and everything is
flushed at interpreter exit and on SIGTERM. They never raise into the app: a
bad record or a store failure is logged (``logging.getLogger("keel")``) and
counted in :func:`counters`. Pass ``strict=True`` (or call :func:`validate`) in
tests to get the :class:`~keel.errors.InvalidInput` instead. Inside an active
run, records carry its run id.

Reading: :func:`search`, :func:`get`, :func:`stats` (per prompt version,
model or metadata key: count, thumbs-up rate, latency p50/p95, tokens, cost)
and :func:`export` (an eval dataset in JSON Lines to track with ``keel data add``).

Erasure: :func:`delete` removes conversations by id or by filter (a user's, ``until='90d'``),
with their feedback; see docs/erasure.md.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from keel.core.conversation_stats import DEFAULT_PRICES, GroupStats
from keel.core.conversations import Conversation, FeedbackEvent, normalize_record
from keel.core.erasure import ErasureReport
from keel.core.redaction import redact_record, redact_text
from keel.errors import InvalidInput
from keel.sdk import fluent
from keel.sdk.session import get_session
from keel.services.conversations import ConversationDetail, load_redactor

__all__ = [
    "DEFAULT_PRICES",
    "Conversation",
    "ConversationDetail",
    "FeedbackEvent",
    "GroupStats",
    "count",
    "counters",
    "delete",
    "export",
    "feedback",
    "flush",
    "get",
    "log",
    "redact_builtin",
    "redact_text",
    "reset_counters",
    "search",
    "set_redactor",
    "stats",
    "validate",
]

log_ = logging.getLogger("keel")

#: The built-in redactor: e-mails, phone numbers and API keys in messages, metadata and comments.
redact_builtin = redact_record

_UNSET: Any = object()
_redactor: Any = _UNSET  # set_redactor() overrides the workspace's [conversations] redact
_lock = threading.Lock()
_counts = {"invalid": 0, "redaction_errors": 0, "redacted_out": 0, "errors": 0}
_WARN_FIRST = 10  # warnings logged per kind before only every 1000th is


def _count(kind: str, message: str, *args: Any) -> None:
    with _lock:
        _counts[kind] += 1
        n = _counts[kind]
    if n <= _WARN_FIRST or n % 1000 == 0:
        suffix = f" ({n} so far; see keel.conversations.counters())" if n > 1 else ""
        log_.warning("keel: " + message + suffix, *args)


def set_redactor(redactor: Callable[[dict[str, Any]], Any] | str | None) -> None:
    """Run ``redactor(record) -> record`` on every record before it is stored.

    ``redactor`` gets the normalized record (see :func:`validate`) and returns
    the record to store (a new dict or the same one changed), or None to drop
    it. ``"builtin"`` (or :data:`redact_builtin`) replaces e-mails, phone numbers
    and API keys in message contents, metadata strings and feedback comments.
    ``None`` turns redaction off. Without a call, the workspace's
    ``[conversations] redact`` setting applies. A redactor that raises drops the
    record (it is never stored unredacted) and counts a ``redaction_errors``.
    """
    global _redactor
    _redactor = load_redactor(redactor)


_cached: list[Any] = [None]  # the session of the last log() call


def _session() -> Any:
    """The session log() and feedback() write to, resolved once (like a logging handler).

    Resolving it per call would cost a ``getcwd`` and environment lookups (~3 us, and
    the system call hands the GIL to the writer thread and back). It is resolved again
    once that session is shut down (``keel.sdk.session.reset()``, interpreter exit).
    """
    session = _cached[0]
    if session is not None and not session.conversation_writer._closed:
        return session
    session = get_session()
    _cached[0] = session
    return session


def _current_redactor(service: Any) -> Any:
    redactor = _redactor
    return service.configured_redactor if redactor is _UNSET else redactor


def _active_run_id() -> str | None:
    run = fluent.active_run()
    return None if run is None else run.id


def _record(conversation: Any, fields: Mapping[str, Any]) -> Any:
    if not fields:
        return conversation
    if conversation is None:
        return fields
    if not isinstance(conversation, Mapping):
        return conversation  # refused by validation with a clear message
    return {**conversation, **fields}


def validate(conversation: Mapping[str, Any] | None = None, /, **fields: Any) -> dict[str, Any]:
    """Check a record as :func:`log` would, raising InvalidInput for wrong types or
    unknown keys; returns the normalized record (nothing is stored)."""
    record = _record(conversation, fields)
    if record is None:
        raise InvalidInput("no conversation given", "validate({'messages': [...], ...})")
    return normalize_record(record)


def log(conversation: Mapping[str, Any] | None = None, /, *, strict: bool = False, **fields: Any) -> str | None:
    """Queue one conversation record; returns its conversation id (None if it was rejected).

    Takes a dict in the record format (see this module's docstring) and/or the
    same fields as keyword arguments: ``conversation_id`` (generated when
    absent), ``messages``, ``model``, ``prompt_version``, ``user_feedback``
    (``{"thumb": "up"|"down", "score", "comment"}``), ``tokens_used``
    (``{"prompt": 812, "completion": 64}``, the OpenAI/Anthropic usage names, or a
    whole number: the total, when the split is unknown), ``latency_ms``, ``timestamp`` (default now),
    ``metadata`` (any JSON dict), ``run_id`` (default: the active run).

    Never raises unless ``strict``: a bad record is logged as a warning,
    counted (``counters()["invalid"]``) and dropped; the app goes on.
    """
    try:
        record = _record(conversation, fields)
        if record is None:
            raise InvalidInput("no conversation given", "keel.conversations.log({'messages': [...], ...})")
        session = _session()
        service = session.conversations
        redactor = _current_redactor(service)
        try:
            row = service.prepare(record, _active_run_id(), redactor)
        except InvalidInput:
            raise
        except Exception as exc:
            if redactor is None:
                raise
            if strict:
                raise
            _count("redaction_errors", "the redactor failed (%s: %s); conversation dropped", type(exc).__name__, exc)
            return None
        if row is None:
            with _lock:
                _counts["redacted_out"] += 1
            return None
        session.conversation_writer.add("c", row)
        return str(row[0])
    except InvalidInput as exc:
        if strict:
            raise
        _count("invalid", "conversation not logged: %s", exc)
    except Exception as exc:
        if strict:
            raise
        _count("errors", "conversation not logged: %s: %s", type(exc).__name__, exc)
    return None


def feedback(
    conversation_id: str,
    thumb: str | bool | int | None = None,
    score: float | None = None,
    comment: str | None = None,
    *,
    strict: bool = False,
) -> bool:
    """Record feedback that arrived after the conversation was logged; True if queued.

    It updates the conversation's latest record (each of thumb, score and comment
    takes the newest value given) and is kept as an event (see :func:`get`).
    Feedback for a conversation not stored yet is applied when it is. Never
    raises unless ``strict``.
    """
    try:
        session = _session()
        service = session.conversations
        row = service.feedback_row(conversation_id, thumb, score, comment, _current_redactor(service))
        session.conversation_writer.add("f", row)
        return True
    except InvalidInput as exc:
        if strict:
            raise
        _count("invalid", "feedback not logged: %s", exc)
    except Exception as exc:
        if strict:
            raise
        _count("errors", "feedback not logged: %s: %s", type(exc).__name__, exc)
    return False


def flush() -> None:
    """Write every queued record and feedback now (returns once they are committed)."""
    _session().conversation_writer.flush()


def counters() -> dict[str, int]:
    """What the logging path did in this process.

    - ``written``: records and feedback committed to the store
    - ``pending``: queued, not written yet
    - ``failed``: given up on after retries (store errors; see the log)
    - ``invalid``: rejected records or feedback (wrong types, unknown keys)
    - ``redaction_errors``: records dropped because the redactor raised
    - ``redacted_out``: records the redactor chose to drop (it returned None)
    - ``errors``: other failures before queueing (e.g. the store could not be opened)
    """
    with _lock:
        out = dict(_counts)
    written = pending = failed = 0
    try:
        writer = get_session(create=False)._conversation_writer
    except Exception:
        writer = None
    if writer is not None:
        written, pending, failed = writer.written, writer.pending, writer.failed
    return {"written": written, "pending": pending, "failed": failed, **out}


def reset_counters() -> None:
    """Zero the rejection counters (``written``/``failed`` belong to the writer and stay)."""
    with _lock:
        for key in _counts:
            _counts[key] = 0


def _service() -> Any:
    session = get_session(create=False)
    writer = session._conversation_writer
    if writer is not None:
        writer.flush()  # read what this process logged
    return session.conversations


def search(
    filter: str | None = None, since: Any = None, until: Any = None, limit: int | None = 100
) -> list[Conversation]:
    """Logged records, newest first.

    Args:
        filter: e.g. ``"feedback.thumb = 'down' and model = 'gpt-4'"``,
            ``"metadata.environment = 'prod' and latency_ms > 2000"``,
            ``"prompt_version like 'support-bot@1.%'"``.
        since / until: datetime, epoch s/ms, ISO text, or a duration ago (``"24h"``, ``"7d"``).
        limit: at most this many records (None: all).
    """
    result: list[Conversation] = _service().search(filter, since, until, limit)
    return result


def count(filter: str | None = None, since: Any = None, until: Any = None) -> int:
    """How many logged records match."""
    return int(_service().count(filter, since, until))


def get(conversation_id: str) -> ConversationDetail:
    """Every record of a conversation (id or unique prefix) and its feedback events."""
    detail: ConversationDetail = _service().get(conversation_id)
    return detail


def stats(
    by: str | Sequence[str] = "prompt_version",
    filter: str | None = None,
    since: Any = None,
    until: Any = None,
    prices: Mapping[str, Any] | None = None,
) -> list[GroupStats]:
    """Per group: count, thumbs up/down and rate, avg score, latency avg/p50/p95,
    prompt/completion tokens and cost in USD.

    ``by``: ``prompt_version``, ``model``, ``run_id``, ``day``, ``feedback.thumb``,
    ``metadata.<key>`` (e.g. ``metadata.variant``), or a list of them.
    ``prices``: USD per 1M tokens, ``{"my-model": {"prompt": 1.0, "completion": 2.0}}``,
    on top of :data:`DEFAULT_PRICES` and the workspace's ``[conversations.prices]``.
    """
    result: list[GroupStats] = _service().stats(by, filter, since, until, prices)
    return result


def export(
    path: str | os.PathLike[str],
    filter: str | None = None,
    since: Any = None,
    until: Any = None,
    limit: int | None = None,
    all_records: bool = False,
) -> int:
    """Write matching conversations to ``path`` as an eval dataset (JSON Lines); returns the count.

    Each line: ``{"conversation_id", "input": [...messages before the answer],
    "output": "<final assistant message>", "feedback": {...}, "metadata": {...}}``,
    one per conversation (its newest matching record) unless ``all_records``.
    Track the file with ``keel data add dataset.jsonl``.
    """
    return int(_service().export(path, filter, since, until, limit, all_records))


def delete(
    ids: str | Sequence[str] | None = None,
    filter: str | None = None,
    since: Any = None,
    until: Any = None,
    *,
    all: bool = False,  # noqa: A002 - the request's word (--all)
    dry_run: bool = False,
    reason: str = "request",
) -> ErasureReport:
    """Erase conversations for good: every record of the conversations ``ids``, or the
    records a ``filter`` and time range match, with their feedback. What this process has
    queued is written first, so nothing logged before the call escapes it.

    ``keel.conversations.delete(filter="metadata.user_id = 'u-42'")`` erases one end user's
    conversations. Refused with nothing deleted: an unknown id (:class:`~keel.errors.NotFound`),
    a filter that matches every record unless ``all=True``. ``dry_run=True`` only counts and
    lists the dataset versions made from the matching records (``derived``). One audit entry
    stays (``keel erasures list``): who, when, the filter or the number of ids, the counts.
    """
    listed = [ids] if isinstance(ids, str) else (None if ids is None else list(ids))
    report: ErasureReport = _service().delete(listed, filter, since, until, all=all, dry_run=dry_run, reason=reason)
    return report
