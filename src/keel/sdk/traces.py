"""``keel.trace`` / ``keel.span``: an LLM app's requests as trees of spans, and their queries.

::

    @keel.trace                       # a span per call: inputs, outputs, timing, errors
    def answer(question: str) -> str:
        with keel.span("retrieve", kind="retrieval") as s:
            docs = kb.search(question)
            s.set_outputs([d.id for d in docs])
        return llm(question, docs)    # keel.llm.wrap(client) adds an LLM span per call

    keel.traces.search(filter="status = 'error' and latency > 2000")
    keel.traces.get(trace_id).tree()

**Nesting.** The current span lives in a :class:`contextvars.ContextVar`: a span
started inside another is its child; each thread and asyncio task has its own
current span (a task created inside a span sees it as its parent, a new thread
does not), like keel's runs.

**Ties.** A root span records the active run (``keel.run_id``); prompts loaded,
KB searches, flag evaluations and A/B assignments made inside a span are noted
on it (:func:`note`: ``keel.prompt``, ``keel.kb``, ``keel.flag.<key>``,
``keel.ab.<experiment>``), so the trace links to those versions. Pass
``conversation_id=``/``user_id=``/``tags=`` to a root span (or :func:`set_trace`)
to tie it to a conversation and a user.

**Export never raises into the app and never blocks it.** A finished span is a
dict appended to the ``traces`` stream of the SDK's delivery path
(:mod:`keel.sdk.writer`: background batches, spool, retries); the store
normalises and checks it. Errors inside keel's own tracing are counted
(:func:`counters`) and logged, never raised.

**Sampling.** ``KEEL_TRACE_SAMPLE`` (or :func:`configure`) keeps that ratio of
traces, decided at the root; a trace that was not sampled is still kept when
one of its spans fails (its spans wait in memory until the root ends).

**Limits and redaction.** Inputs and outputs are converted to JSON values when
the span ends; one larger than ``max_payload_bytes`` (default 1 MiB) is kept
truncated and marked. :func:`set_redactor` installs a function that sees each
finished span dict and returns it changed (or None to drop the span);
``"builtin"`` masks e-mail addresses, phone numbers and card numbers in inputs and
outputs, like the conversation redactor. Secrets (API keys, tokens, passwords by
their key names) are masked by the store whatever the redactor.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from keel.core.erasure import ErasureReport
from keel.core.traces import SPAN_KINDS, IngestResult, Trace, TraceDetail, TraceStats
from keel.errors import InvalidInput
from keel.sdk import fluent

__all__ = [
    "ActiveSpan",
    "configure",
    "counters",
    "current_span",
    "current_trace_id",
    "delete",
    "export",
    "feedback",
    "flush",
    "get",
    "ingest",
    "note",
    "reset_counters",
    "search",
    "set_redactor",
    "set_trace",
    "span",
    "stats",
    "trace",
]

log = logging.getLogger("keel")
F = TypeVar("F", bound=Callable[..., Any])

_current: contextvars.ContextVar[ActiveSpan | None] = contextvars.ContextVar("keel_span", default=None)
_rand = random.Random()
_counts = {"spans": 0, "sampled_out": 0, "redacted_out": 0, "errors": 0}
_lock = threading.Lock()
_MAX_ITEMS = 1000  # list items / dict keys kept per level of a payload
_MAX_DEPTH = 16
_MAX_GENERATOR_ITEMS = 100
_FLAT_ITEMS = 64  # arguments of a call read in one pass (see _flat)
_LOW_BITS = (1 << 64) | 1  # the lowest bit of both ids drawn at once: neither is all zero


class _Settings:
    project: str = "default"
    sample: float = 1.0
    max_payload_bytes: int = 1 << 20
    redactor: Callable[[dict[str, Any]], Any] | None = None
    loaded = False


_settings = _Settings()


def _load_settings() -> None:
    _settings.project = os.environ.get("KEEL_PROJECT") or "default"
    text = os.environ.get("KEEL_TRACE_SAMPLE", "")
    if text:
        try:
            ratio = float(text)
        except ValueError:
            ratio = -1.0
        if 0.0 <= ratio <= 1.0:
            _settings.sample = ratio
        else:
            log.warning("keel: KEEL_TRACE_SAMPLE=%r is not a ratio in 0..1; keeping every trace", text[:40])
    _settings.loaded = True


def configure(sample: float | None = None, max_payload_bytes: int | None = None) -> None:
    """Set the sampling ratio (0..1, decided per trace; failed traces are always kept) and the
    largest payload kept whole (bytes of JSON)."""
    if sample is not None:
        if isinstance(sample, bool) or not isinstance(sample, int | float) or not 0.0 <= sample <= 1.0:
            raise InvalidInput(f"sample must be a ratio in 0..1, not {sample!r}", "e.g. configure(sample=0.1)")
        _settings.sample = float(sample)
    if max_payload_bytes is not None:
        if isinstance(max_payload_bytes, bool) or not isinstance(max_payload_bytes, int) or max_payload_bytes < 64:
            raise InvalidInput(f"max_payload_bytes must be an int >= 64, not {max_payload_bytes!r}", "")
        _settings.max_payload_bytes = max_payload_bytes
    _settings.loaded = True


def set_redactor(redactor: Callable[[dict[str, Any]], Any] | str | None) -> None:
    """A function that gets each finished span (a dict) and returns it (changed) or None to drop
    it; ``"builtin"`` masks personal data in inputs and outputs; None removes it."""
    if redactor is None or callable(redactor):
        _settings.redactor = redactor
    elif redactor == "builtin":
        _settings.redactor = _builtin_redactor
    else:
        raise InvalidInput(f"invalid redactor {redactor!r}", "pass a function, 'builtin' or None")


def _builtin_redactor(span: dict[str, Any]) -> dict[str, Any]:
    from keel.core.redaction import redact_text

    def clean(value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            return redact_text(value)
        if depth > _MAX_DEPTH:
            return value
        if isinstance(value, dict):
            return {k: clean(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v, depth + 1) for v in value]
        return value

    for key in ("inputs", "outputs"):
        if span.get(key) is not None:
            span[key] = clean(span[key])
    return span


def counters() -> dict[str, int]:
    """Spans queued, traces sampled out, spans a redactor dropped, internal errors (this process)."""
    with _lock:
        return dict(_counts)


def reset_counters() -> None:
    """Zero :func:`counters` (tests)."""
    with _lock:
        for key in _counts:
            _counts[key] = 0


def _count(key: str, n: int = 1) -> None:
    with _lock:
        _counts[key] += n


# -- payloads ---------------------------------------------------------------------------------
def _jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON value for ``value`` (bounded in depth and width); objects become their ``repr``."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is dict and depth < _MAX_DEPTH and len(value) <= _MAX_ITEMS:
        # the common case (a dict of plain values) without the generic checks below
        out = {}
        for key, item in value.items():
            of = type(item)
            out[key if type(key) is str else str(key)] = (
                item if of is str or of is int or of is bool or item is None else _jsonable(item, depth + 1)
            )
        return out
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if depth >= _MAX_DEPTH:
        return f"<{type(value).__name__}>"
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, depth + 1) for k, v in list(value.items())[:_MAX_ITEMS]}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v, depth + 1) for v in list(value)[:_MAX_ITEMS]]
    dump = getattr(value, "model_dump", None)  # pydantic models: the OpenAI/Anthropic responses
    if callable(dump):
        try:
            return _jsonable(dump(), depth + 1)
        except Exception:  # noqa: BLE001 - fall back to the repr
            pass
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    text = repr(value)
    return text if len(text) <= 1000 else text[:1000] + "..."


def _fits(data: Any, limit: int) -> bool:
    """True when ``data`` (a value :func:`_jsonable` returned) is surely at most ``limit``
    characters as JSON: an upper bound (every character escaped), so most payloads need no
    encoding here; False means "maybe larger" (the caller encodes to know)."""
    left = limit
    stack = [data]
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is str:
            left -= 6 * len(item) + 3  # each character escaped at worst, quotes, a separator
        elif kind is dict:
            left -= 2
            for key, value in item.items():
                left -= 6 * len(key) + 4
                push(value)
        elif kind is list:
            left -= 2
            extend(item)
        elif kind is int:
            left -= item.bit_length() // 3 + 3  # decimal digits, a sign, a separator
        else:  # float (24 characters at most), bool, None
            left -= 26
        if left < 0:
            return False
    return True


def _flat(value: dict[Any, Any], limit: int) -> dict[str, Any] | None:
    """The copy :func:`_jsonable` makes of a dict of text keys and plain values (text, int,
    bool, None: a function's arguments, most often) when :func:`_fits` would pass it, in one
    pass; None for any other dict (the general path decides)."""
    left = limit - 2
    out: dict[str, Any] = {}
    for key, item in value.items():
        if type(key) is not str:
            return None
        of = type(item)
        if of is str:
            left -= 6 * len(item) + 3
        elif of is int:
            left -= item.bit_length() // 3 + 3
        elif of is bool or item is None:
            left -= 26
        else:
            return None
        left -= 6 * len(key) + 4
        out[key] = item
    return out if left >= 0 else None


def _payload(value: Any) -> Any:
    if value is None:
        return None
    limit = _settings.max_payload_bytes
    kind = type(value)
    if kind is int or kind is bool:
        return value
    if kind is dict and len(value) <= _FLAT_ITEMS:
        flat = _flat(value, limit)
        if flat is not None:
            return flat
    data = _jsonable(value)
    if isinstance(data, str | int | float | bool):
        if isinstance(data, str) and len(data) > limit:
            return {"keel.truncated": True, "size": len(data), "head": data[:limit]}
        return data
    if _fits(data, limit):
        return data
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
    if len(text) > limit:
        return {"keel.truncated": True, "size": len(text), "head": text[:limit]}
    return data


# -- spans ------------------------------------------------------------------------------------
class _TraceState:
    """What the spans of one trace share: sampling, the buffer of an unsampled trace, the project."""

    __slots__ = ("buffer", "failed", "project", "sampled")

    def __init__(self, project: str, sampled: bool) -> None:
        self.project = project
        self.sampled = sampled
        self.failed = False
        self.buffer: list[dict[str, Any]] = []


#: The state of spans that are not recorded at all (:func:`discard`).
_DISCARDED = _TraceState("", False)


def discard(span: ActiveSpan) -> None:
    """Record nothing of ``span`` when it ends (keel's own use: a replayed LLM call outside any
    trace). Its children, if any were started, are discarded with it."""
    span._state = _DISCARDED


class ActiveSpan:
    """A span being recorded: set its attributes, inputs, outputs and status while it runs."""

    __slots__ = (
        "_state",
        "attributes",
        "events",
        "inputs",
        "kind",
        "name",
        "outputs",
        "parent_id",
        "span_id",
        "start_ns",
        "status",
        "status_message",
        "trace_id",
    )

    def __init__(
        self, name: str, kind: str, trace_id: str, span_id: str, parent_id: str | None, state: _TraceState
    ) -> None:
        self.name = name
        self.kind = kind
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self._state = state
        self.attributes: dict[str, Any] = {}
        self.inputs: Any = None
        self.outputs: Any = None
        self.events: list[dict[str, Any]] | None = None
        self.status = "unset"
        self.status_message: str | None = None
        self.start_ns = time.time_ns()

    def set_attribute(self, key: str, value: Any) -> None:
        """Set one attribute (a JSON scalar or list)."""
        self.attributes[str(key)] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Set several attributes."""
        for key, value in attributes.items():
            self.attributes[str(key)] = value

    def set_inputs(self, inputs: Any) -> None:
        """What the step was given."""
        self.inputs = inputs

    def set_outputs(self, outputs: Any) -> None:
        """What the step produced."""
        self.outputs = outputs

    def set_status(self, status: str, message: str | None = None) -> None:
        """``ok``, ``error`` or ``unset``, with an optional message."""
        if status not in ("ok", "error", "unset"):
            raise InvalidInput(f"invalid span status {status!r}", "use 'ok', 'error' or 'unset'")
        self.status = status
        self.status_message = message

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        """Add a timestamped event (OpenTelemetry's span events)."""
        if self.events is None:
            self.events = []
        self.events.append({"name": str(name), "time_ns": time.time_ns(), "attributes": dict(attributes or {})})

    def record_exception(self, error: BaseException) -> None:
        """Mark the span failed with ``error`` (an ``exception`` event with its type and message)."""
        self.status = "error"
        self.status_message = f"{type(error).__name__}: {error}"[:4000]
        self.add_event(
            "exception",
            {"exception.type": type(error).__name__, "exception.message": str(error)[:4000]},
        )

    def _finish(self) -> None:
        state = self._state
        if state is _DISCARDED:
            return
        if self.status == "unset":
            self.status = "ok"
        raw: dict[str, Any] = {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_id": self.parent_id,
            "name": self.name,
            "kind": self.kind,
            "start_ns": self.start_ns,
            "end_ns": time.time_ns(),
            "status": self.status,
            "status_message": self.status_message,
            "attributes": _jsonable(self.attributes) if self.attributes else {},
        }
        if self.inputs is not None:
            raw["inputs"] = _payload(self.inputs)
        if self.outputs is not None:
            raw["outputs"] = _payload(self.outputs)
        if self.events:
            raw["events"] = _jsonable(self.events)
        redactor = _settings.redactor
        if redactor is not None:
            try:
                changed = redactor(raw)
            except Exception as exc:  # noqa: BLE001 - never into the app
                log.warning("keel: the trace redactor failed (%s: %s); span dropped", type(exc).__name__, exc)
                _count("errors")
                return
            if changed is None:
                _count("redacted_out")
                return
            raw = changed
        if self.status == "error":
            state.failed = True
        if state.sampled:
            _emit(state.project, raw)
            return
        state.buffer.append(raw)
        if self.parent_id is None or state.failed:
            # the root ended, or a failure decides it: keep the trace if anything failed
            if state.failed:
                for item in state.buffer:
                    _emit(state.project, item)
                state.sampled = True  # the rest of the trace goes straight out
            elif self.parent_id is None:
                _count("sampled_out")
            state.buffer = []


def _emit(project: str, raw: dict[str, Any]) -> None:
    try:
        writer = _cached_writer[0]
        if writer is None or writer._closed:
            writer = _cached_writer[0] = _writer()
        writer.add("s", (project, raw))
        _counts["spans"] += 1  # a counter for people, not for accounting: no lock on this path
    except Exception as exc:  # noqa: BLE001 - tracing never breaks the app
        _count("errors")
        log.warning("keel: span not recorded: %s: %s", type(exc).__name__, exc)


_cached: list[Any] = [None]
_cached_writer: list[Any] = [None]


def _session() -> Any:
    from keel.sdk.session import get_session

    session = _cached[0]
    # Its writer, if it started one (the property would start one on a session that was reset).
    writer = None if session is None else session._trace_writer
    if writer is not None and not writer._closed:
        return session
    session = get_session()
    _cached[0] = session
    return session


def _writer() -> Any:
    return _session().trace_writer


def _project_for(project: str | None, run: Any = None) -> str:
    if project is not None:
        return project
    if run is None:
        run = fluent.active_run()
    if run is not None:
        return str(run.project)
    if not _settings.loaded:
        _load_settings()
    return _settings.project


def _new_span(
    name: str,
    kind: str,
    project: str | None,
    attributes: Mapping[str, Any] | None,
) -> ActiveSpan:
    if not _settings.loaded:
        _load_settings()
    parent = _current.get()
    if parent is not None:
        active = ActiveSpan(
            name, kind, parent.trace_id, f"{_rand.getrandbits(64) or 1:016x}", parent.span_id, parent._state
        )
    else:
        sampled = _settings.sample >= 1.0 or _rand.random() < _settings.sample
        run = fluent.active_run()
        if project is None:
            project = str(run.project) if run is not None else _settings.project
        ids = f"{_rand.getrandbits(192) | _LOW_BITS:048x}"  # the trace id, then the span id (neither zero)
        active = ActiveSpan(name, kind, ids[:32], ids[32:], None, _TraceState(project, sampled))
        if run is not None:
            active.attributes["keel.run_id"] = run.id
    if attributes:
        active.set_attributes(attributes)
    return active


def _check_kind(kind: str) -> str:
    if kind not in SPAN_KINDS:
        raise InvalidInput(f"unknown span kind {kind!r}", f"use one of {', '.join(SPAN_KINDS)}")
    return kind


def _root_fields(active: ActiveSpan, conversation_id: Any, user_id: Any, tags: Mapping[str, Any] | None) -> None:
    if conversation_id is not None:
        active.attributes["keel.conversation_id"] = str(conversation_id)
    if user_id is not None:
        active.attributes["keel.user_id"] = str(user_id)
    if tags:
        for key, value in tags.items():
            active.attributes[f"keel.tag.{key}"] = value


@contextmanager
def span(
    name: str,
    kind: str = "other",
    *,
    inputs: Any = None,
    attributes: Mapping[str, Any] | None = None,
    project: str | None = None,
    conversation_id: Any = None,
    user_id: Any = None,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[ActiveSpan]:
    """A span around a block: a child of the current span, or the root of a new trace.

    An exception leaving the block marks the span failed and is re-raised unchanged.
    ``project`` (root only; default: the active run's, ``KEEL_PROJECT`` or ``default``),
    ``conversation_id``, ``user_id`` and ``tags`` tie the trace to the rest of keel.
    """
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"a span needs a name, not {name!r}", "e.g. keel.span('retrieve')")
    active = _new_span(name, _check_kind(kind), project, attributes)
    _root_fields(active, conversation_id, user_id, tags)
    if inputs is not None:
        active.inputs = inputs
    token = _current.set(active)
    try:
        yield active
    except BaseException as exc:
        active.record_exception(exc)
        raise
    finally:
        _current.reset(token)
        active._finish()


def _inputs(names: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    found = dict(zip(names, args))  # noqa: B905 - fewer arguments than names is the usual case
    if len(args) > len(names):
        found["*args"] = list(args[len(names) :])
    if kwargs:
        found.update(kwargs)
    if "self" in found:
        del found["self"]
    return found


def trace(
    fn: F | None = None,
    *,
    name: str | None = None,
    kind: str = "chain",
    capture_inputs: bool = True,
    capture_outputs: bool = True,
    attributes: Mapping[str, Any] | None = None,
) -> Any:
    """Decorate a function (sync, ``async``, generator or async generator) so each call is a span.

    ``@keel.trace`` or ``@keel.trace(name=..., kind="retrieval")``. Inputs are the call's
    arguments by parameter name, outputs its return value (for generators: the items yielded,
    at most 100); an exception marks the span failed and propagates unchanged.
    """
    _check_kind(kind)

    def decorate(func: F) -> F:
        label = str(name or getattr(func, "__qualname__", None) or getattr(func, "__name__", "call"))
        try:
            names = tuple(
                p.name
                for p in inspect.signature(func).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            )
        except (TypeError, ValueError):
            names = ()

        def start(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[ActiveSpan, contextvars.Token[Any]]:
            active = _new_span(label, kind, None, attributes)
            if capture_inputs and (args or kwargs):
                active.inputs = _inputs(names, args, kwargs)
            return active, _current.set(active)

        if inspect.isasyncgenfunction(func):

            @functools.wraps(func)
            async def agen_wrapper(*args: Any, **kwargs: Any) -> Any:
                active, token = start(args, kwargs)
                items: list[Any] = []
                try:
                    async for item in func(*args, **kwargs):
                        if capture_outputs and len(items) < _MAX_GENERATOR_ITEMS:
                            items.append(item)
                        yield item
                except BaseException as exc:
                    active.record_exception(exc)
                    raise
                finally:
                    if capture_outputs:
                        active.outputs = items
                    _current.reset(token)
                    active._finish()

            return agen_wrapper  # type: ignore[return-value]

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                active, token = start(args, kwargs)
                try:
                    result = await func(*args, **kwargs)
                    if capture_outputs:
                        active.outputs = result
                    return result
                except BaseException as exc:
                    active.record_exception(exc)
                    raise
                finally:
                    _current.reset(token)
                    active._finish()

            return async_wrapper  # type: ignore[return-value]

        if inspect.isgeneratorfunction(func):

            @functools.wraps(func)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                active, token = start(args, kwargs)
                items: list[Any] = []
                try:
                    for item in func(*args, **kwargs):
                        if capture_outputs and len(items) < _MAX_GENERATOR_ITEMS:
                            items.append(item)
                        yield item
                except BaseException as exc:
                    active.record_exception(exc)
                    raise
                finally:
                    if capture_outputs:
                        active.outputs = items
                    _current.reset(token)
                    active._finish()

            return gen_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            active, token = start(args, kwargs)
            try:
                result = func(*args, **kwargs)
                if capture_outputs:
                    active.outputs = result
                return result
            except BaseException as exc:
                active.record_exception(exc)
                raise
            finally:
                _current.reset(token)
                active._finish()

        return wrapper  # type: ignore[return-value]

    if fn is not None:
        return decorate(fn)
    return decorate


def current_span() -> ActiveSpan | None:
    """The span being recorded in this thread or task, or None."""
    return _current.get()


def current_trace_id() -> str | None:
    """The id of the trace being recorded here, or None."""
    active = _current.get()
    return None if active is None else active.trace_id


def set_trace(conversation_id: Any = None, user_id: Any = None, tags: Mapping[str, Any] | None = None) -> None:
    """Tie the current trace to a conversation, a user or tags (from anywhere inside it)."""
    active = _current.get()
    if active is not None:
        _root_fields(active, conversation_id, user_id, tags)


def note(kind: str, name: str, version: Any) -> None:
    """Record on the current span that it used a version keel manages (no-op outside a span).

    ``kind``: ``prompt`` (``keel.prompt = name@version``), ``model``, ``kb``, ``config``,
    ``flag`` (``keel.flag.<name> = variant``) or ``ab`` (``keel.ab.<experiment> = arm``).
    Called by keel's prompt, model, KB, config, flag and A/B code; never raises.
    """
    active = _current.get()
    if active is None:
        return
    try:
        if kind == "flag":
            active.attributes[f"keel.flag.{name}"] = str(version)
        elif kind == "ab":
            active.attributes[f"keel.ab.{name}"] = str(version)
        elif kind == "model":
            active.attributes["keel.model_version"] = f"{name}@{version}"
        elif kind in ("prompt", "kb", "config"):
            active.attributes[f"keel.{kind}"] = f"{name}@{version}" if version not in (None, "") else str(name)
    except Exception:  # noqa: BLE001 - a note never breaks the app
        _count("errors")


# -- scores and queries -----------------------------------------------------------------------
def feedback(
    trace_id: str,
    key: str = "feedback",
    value: float | bool | None = None,
    label: str | None = None,
    comment: str | None = None,
    span_id: str | None = None,
    project: str | None = None,
) -> None:
    """Queue feedback or a score on a trace (a user's thumbs, an evaluator's score).

    The score is checked now (InvalidInput for a bad one) and delivered in the background,
    so it may reach the store before or after the trace itself."""
    from keel.core.traces import normalize_score

    raw = {
        "trace_id": trace_id,
        "span_id": span_id,
        "key": key,
        "value": value,
        "label": label,
        "comment": comment,
        "source": "user",
        "at": int(time.time() * 1000),
    }
    normalize_score(raw)
    _writer().add("f", (_project_for(project), raw))


def flush(timeout: float | None = None) -> bool:
    """Wait until the spans recorded so far are stored (or spooled); False on timeout."""
    return bool(_session().trace_writer.flush(timeout))


def _service() -> Any:
    """The trace service, after this process's own finished spans are stored (read your writes:
    a query right after a traced call sees it; bounded by ``KEEL_FLUSH_TIMEOUT``)."""
    session = _session()
    writer = session._trace_writer
    if writer is not None and writer.pending:
        writer.flush()
    return session.traces


def search(
    filter: str | None = None,
    order_by: str | list[str] | None = None,
    since: Any = None,
    until: Any = None,
    limit: int = 100,
    project: str | None = None,
    offset: int = 0,
) -> list[Trace]:
    """Traces of a project matching a filter (see :meth:`keel.services.traces.TraceService.search`)."""
    return list(_service().search(_project_for(project), filter, order_by, since, until, limit, offset))


def get(trace_id: str, project: str | None = None) -> TraceDetail:
    """A trace (id or unique prefix) with its spans, scores and links; ``.tree()`` nests the spans."""
    detail: TraceDetail = _service().get(trace_id, _project_for(project))
    return detail


def stats(
    by: str | list[str] = "day",
    filter: str | None = None,
    since: Any = None,
    until: Any = None,
    project: str | None = None,
) -> list[TraceStats]:
    """Count, error rate, latency p50/p95, tokens and cost per group (``model``, ``prompt``, ``day``...)."""
    return list(_service().stats(_project_for(project), by, filter, since, until))


def export(
    path: str | os.PathLike[str],
    filter: str | None = None,
    span: str | None = None,
    since: Any = None,
    until: Any = None,
    limit: int = 100_000,
    project: str | None = None,
) -> int:
    """Write matching traces as an evaluation dataset (JSON Lines: input, output, metadata of the
    root span, or of the span named ``span``); the line count. ``keel data add`` versions it."""
    return int(_service().export(path, _project_for(project), filter, span, since, until, limit))


def delete(
    ids: str | list[str] | None = None,
    filter: str | None = None,
    since: Any = None,
    until: Any = None,
    *,
    project: str | None = None,
    all: bool = False,  # noqa: A002 - the request's word (--all)
    dry_run: bool = False,
    reason: str = "request",
) -> ErasureReport:
    """Erase traces of a project for good: ``ids`` (full ids or unique prefixes), or those a
    ``filter`` and time range match (``delete(filter="user_id = 'u-42'")``), with their spans,
    scores, links and the span payloads stored as objects. This process's finished spans are
    stored first. Refused with nothing deleted: an unknown id (NotFound), a filter that matches
    every trace of the project unless ``all=True``. ``dry_run=True`` only counts and lists the
    dataset versions made from them (``derived``). See docs/erasure.md."""
    listed = [ids] if isinstance(ids, str) else (None if ids is None else list(ids))
    report: ErasureReport = _service().delete(
        _project_for(project), listed, filter, since, until, all=all, dry_run=dry_run, reason=reason
    )
    return report


def ingest(spans: list[dict[str, Any]], project: str | None = None) -> IngestResult:
    """Store raw spans now (see :func:`keel.core.traces.normalize_span` for their shape)."""
    result: IngestResult = _service().ingest(spans, _project_for(project))
    return result
