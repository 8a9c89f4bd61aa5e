"""The machinery behind :mod:`keel.sdk.llm`: the recorder and replay state (the client proxy
is :mod:`keel.sdk.llm_proxy`, the streams :mod:`keel.sdk.llm_streams`, the spans
:mod:`keel.sdk.llm_spans`).

Hot path of a recorded call: snapshot the request (:func:`keel.core.llm.normalize`),
hash it, find the active run, take the call's occurrence (the n-th call of this request
in its run, or through this wrapped client outside a run; per :data:`sequence` when one
is set), call, append a :class:`~keel.services.llm.PendingCall` to the store's
background writer. Replay: hash, take the occurrence the same way, find the recordings
of the request (the replay scope's, or the newest run's that has it: :class:`_State`),
pick the n-th in recorded order, build the client's type (openai's or anthropic's) from
the recorded data. Each call also gets a span in the current trace (:mod:`keel.sdk.llm_spans`).
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import secrets
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from keel.core.entities import EntityRef, now_ms
from keel.core.llm import (
    DEFAULT_PRICES,
    call_cost,
    messages_stream_events,
    normalize,
    request_hash,
    usage_tokens,
)
from keel.core.redaction import redact_mapping
from keel.errors import InvalidInput, ReplayMiss
from keel.sdk import llm_spans as spans
from keel.sdk.fluent import active_run
from keel.sdk.llm_streams import AsyncRecordingStream, AsyncReplayStream, RecordingStream, ReplayStream
from keel.sdk.session import Session, get_session
from keel.services.llm import CASSETTE_KIND, CallRow, Closest, PendingCall, StoredCall, cassette_entity

__all__ = [
    "MODES",
    "REPEATS",
    "CallInfo",
    "Recorder",
    "counters",
    "current",
    "prices_table",
    "sequence",
    "states",
]

log = logging.getLogger("keel")

MODES = ("record", "replay", "auto", "off")
#: What replay does with a call past the recordings of its request: ``strict`` raises
#: ReplayMiss, ``cycle`` starts again from the first recording.
REPEATS = ("strict", "cycle")
CACHE_SIZE = 50_000  # parsed recordings kept per store for replay
SOURCES_SIZE = 10_000  # requests whose recordings an unscoped replay keeps per store

_CONTEXT_KEYS = ("prompt", "rag_index_version", "api_version")

#: The process-wide price table (``keel.llm.set_prices`` changes it).
prices_table: dict[str, tuple[float, float]] = dict(DEFAULT_PRICES)
#: The last call of this thread / task (``keel.llm.last_call``).
current: contextvars.ContextVar[CallInfo | None] = contextvars.ContextVar("keel_llm_last_call", default=None)
#: The sequence calls of this thread / task are numbered in (``keel.llm.sequence``), or None.
sequence: contextvars.ContextVar[str | None] = contextvars.ContextVar("keel_llm_sequence", default=None)

# How many times each request was made, per run (dropped with the run object) or, outside a
# run, per wrapped client (Recorder._counts): ``(sequence, request hash) -> calls so far``.
_run_counts: weakref.WeakKeyDictionary[Any, dict[tuple[str | None, str], int]] = weakref.WeakKeyDictionary()
_counts_lock = threading.Lock()


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live = 0
        self.replayed = 0
        self.misses = 0
        self.failures = 0
        self.last_error = ""

    def failed(self, what: str, exc: BaseException) -> None:
        with self.lock:
            self.failures += 1
            self.last_error = f"{what}: {type(exc).__name__}: {exc}"
        log.warning("keel: could not %s (the call itself is unaffected): %s", what, exc, exc_info=exc)


counters = _Counters()


class CallInfo:
    """The last call made through keel in this thread or task (see :func:`last_call`)."""

    __slots__ = (
        "endpoint",
        "latency_ms",
        "model",
        "occurrence",
        "replayed",
        "request_hash",
        "run_id",
        "source",
        "_row",
        "_usage",
    )

    def __init__(
        self,
        endpoint: str,
        request_hash: str,
        model: str,
        latency_ms: float | None,
        replayed: bool,
        run_id: str | None,
        source: str = "",
        row: CallRow | None = None,
        usage: Any = None,
        occurrence: int | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.occurrence = occurrence  # the n-th call of this request (from 0) in its run / sequence
        self.request_hash = request_hash
        self.model = model
        self.latency_ms = latency_ms
        self.replayed = replayed
        self.run_id = run_id
        self.source = source
        self._row = row
        self._usage = usage

    @property
    def tokens(self) -> tuple[int | None, int | None]:
        """``(input_tokens, output_tokens)``."""
        if self._row is not None:
            return self._row.input_tokens, self._row.output_tokens
        return usage_tokens({"usage": normalize(self._usage)}) if self._usage is not None else (None, None)

    @property
    def cost(self) -> float | None:
        """Dollars, from the price table (None for an unpriced model)."""
        if self._row is not None and self._row.cost is not None:
            return self._row.cost
        tokens_in, tokens_out = self.tokens
        return call_cost(self.model, tokens_in, tokens_out, prices_table)

    def __repr__(self) -> str:
        how = f"replayed from {self.source[:12]}" if self.replayed else f"live {self.latency_ms or 0:.1f} ms"
        return f"<CallInfo {self.endpoint} {self.model} {self.request_hash[:12]} #{self.occurrence} {how}>"


# -- per-store replay state ---------------------------------------------------------
def _type_of(path: str | None) -> Any:
    """The class named ``module:QualName`` if its module is imported already (never imports)."""
    if not path or ":" not in path:
        return None
    module_name, _, qualname = path.partition(":")
    module = sys.modules.get(module_name)
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return target


@functools.cache
def _client_types(endpoint: str) -> tuple[Any, Any]:
    """``(response type, chunk type)`` of an openai or anthropic endpoint, or ``(None, None)``."""
    try:
        if endpoint == "messages":
            from anthropic.types import Message, RawMessageStreamEvent

            return Message, RawMessageStreamEvent
        if endpoint == "chat.completions":
            from openai.types.chat import ChatCompletion, ChatCompletionChunk

            return ChatCompletion, ChatCompletionChunk
        if endpoint == "responses":
            from openai.types.responses import Response, ResponseStreamEvent

            return Response, ResponseStreamEvent
        if endpoint == "embeddings":
            from openai.types import CreateEmbeddingResponse

            return CreateEmbeddingResponse, None
    except ImportError:  # pragma: no cover - the client is not installed: replay returns data
        pass
    return None, None


@functools.cache
def _validator(kind: Any) -> Callable[[Any], Any] | None:
    # Models validate fast (pydantic-core); unions such as ResponseStreamEvent are built
    # the client's way (keel does not depend on pydantic itself).
    validate = getattr(kind, "model_validate", None)
    return validate if callable(validate) else None


def _build(kind: Any, data: Any, endpoint: str = "") -> Any:
    """An object of ``kind`` from recorded data, equal to what the live client returned.

    Validation (pydantic-core) is ~50x faster than the client's own
    ``construct_type``; data a lenient server sent that does not validate, and
    unions of event types, are built the client's way instead.
    """
    if kind is None or data is None:
        return data
    validate = _validator(kind)
    if validate is not None:
        try:
            return validate(data)
        except Exception:  # noqa: BLE001, S110 - fall back to the client's lenient construction
            pass
    try:
        if endpoint == "messages":
            from anthropic._models import construct_type as construct
        else:
            from openai._models import construct_type as construct
        return construct(type_=kind, value=data)
    except ImportError:  # pragma: no cover - the client is not installed
        return data


def _synth_chunks(endpoint: str, response: Any) -> list[Any]:
    """Chunks for a stream replayed from a recording that was not streamed."""
    if not isinstance(response, Mapping):
        return []
    if endpoint == "responses":
        return [{"type": "response.completed", "sequence_number": 0, "response": response}]
    if endpoint == "messages":
        return messages_stream_events(response)
    head = {k: response.get(k) for k in ("id", "created", "model", "system_fingerprint")}
    head["object"] = "chat.completion.chunk"
    chunks = []
    for choice in response.get("choices") or []:
        message = dict(choice.get("message") or {})
        delta: dict[str, Any] = {"role": message.get("role", "assistant"), "content": message.get("content")}
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        index = choice.get("index", 0)
        chunks.append({**head, "choices": [{"index": index, "delta": delta, "finish_reason": None}]})
        finish = choice.get("finish_reason")
        chunks.append({**head, "choices": [{"index": index, "delta": {}, "finish_reason": finish}]})
    if response.get("usage"):
        chunks.append({**head, "choices": [], "usage": response["usage"]})
    return chunks


class _Entry:
    """A recording ready to replay: data plus the types to rebuild it as."""

    __slots__ = ("chunk_type", "chunks", "endpoint", "entity", "response", "response_type", "row")

    def __init__(self, stored: StoredCall) -> None:
        content = stored.content
        self.row = stored.row
        self.endpoint = stored.row.endpoint
        self.response = content.get("response")
        self.chunks = content.get("chunks")
        self.entity = cassette_entity(stored.row)
        response_type, chunk_type = _client_types(self.endpoint)
        self.response_type = response_type or _type_of(content.get("response_type"))
        self.chunk_type = chunk_type or _type_of(content.get("chunk_type"))

    def build(self) -> Any:
        return _build(self.response_type, self.response, self.endpoint)

    def build_chunks(self) -> Iterator[Any]:
        chunks = self.chunks if self.chunks is not None else _synth_chunks(self.endpoint, self.response)
        kind, endpoint = self.chunk_type, self.endpoint
        return (_build(kind, chunk, endpoint) for chunk in chunks)


class _State:
    """Replay caches and bookkeeping of one store (one :class:`Session`).

    ``scopes`` holds the recordings of each replay scope (``replay_from``) by request hash,
    ``sources`` those an unscoped replay uses (the newest run's that has the request), both in
    replay order; ``cache`` the parsed recordings by row id. A request this process recorded
    (``queued``) is flushed to the store before it is looked up, and what is cached about it
    is read again.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self.cache: OrderedDict[int, _Entry] = OrderedDict()
        self.scopes: dict[str, dict[str, list[CallRow]]] = {}
        self.sources: OrderedDict[str, list[CallRow]] = OrderedDict()
        self.queued: set[str] = set()
        self.outputs: set[str] = set()
        self.lock = threading.Lock()

    def recordings(self, digest: str, scope: str | None) -> list[CallRow]:
        """The recordings of a request that replay goes through, in replay order: the scope's,
        or (no scope) those of the newest run, cassette or recording session that has it."""
        if digest in self.queued:  # recorded by this process, maybe not written yet
            self.session.llm_writer.flush()
            with self.lock:
                self.queued.clear()
                self.scopes.clear()
                self.sources.clear()
        service = self.session.llm
        if scope is not None:
            by_hash = self.scopes.get(scope)
            if by_hash is None:
                by_hash = {}
                for row in service.scope_rows(scope):
                    by_hash.setdefault(row.request_hash, []).append(row)
                for rows in by_hash.values():
                    rows.sort(key=_replay_order)
                with self.lock:
                    self.scopes[scope] = by_hash
            return by_hash.get(digest, [])
        found = self.sources.get(digest)
        if found is None:
            found = service.replay_rows(digest)
            if found:  # a miss is asked again next time: it may be recorded meanwhile
                with self.lock:
                    self.sources[digest] = found
                    if len(self.sources) > SOURCES_SIZE:
                        self.sources.popitem(last=False)
        return found

    def entry(self, row: CallRow) -> _Entry:
        """A recording, parsed (kept in an LRU)."""
        entry = self.cache.get(row.id)
        if entry is not None:
            return entry
        entry = _Entry(self.session.llm.read(row))
        with self.lock:
            self.cache[row.id] = entry
            if len(self.cache) > CACHE_SIZE:
                self.cache.popitem(last=False)
        return entry

    def miss(self, endpoint: str, request: Mapping[str, Any], digest: str, scope: str | None) -> ReplayMiss:
        where = f"cassette {scope}" if scope else "the store"
        closest: Closest | None = None
        try:
            service = self.session.llm
            rows = [row for rows in self.scopes.get(scope, {}).values() for row in rows] if scope else None
            closest = service.closest(endpoint, request, rows)
        except Exception as exc:  # noqa: BLE001 - the miss is the error to report
            log.warning("keel: could not look for the closest recorded request: %s", exc)
        message = f"no recording of this {endpoint} request (hash {digest}) in {where}"
        if closest is None:
            message += "; nothing comparable is recorded"
        else:
            diffs = "; ".join(closest.differences) or "only in fields outside the hash"
            message += (
                f"; closest recorded request: {closest.request_hash} (model {closest.model or '-'}, "
                f"from {closest.source[:12] or '-'}, {closest.similarity:.0%} similar), which differs in: {diffs}"
            )
        hint = "record it first (mode='record' or 'auto'), or make the request match the recording"
        return ReplayMiss(message, hint, digest, closest)


def _replay_order(row: CallRow) -> tuple[int, int]:
    return row.replay_order


def _candidates(rows: list[CallRow], key: str | None) -> list[CallRow]:
    """The recordings a call in sequence ``key`` replays from: those of its sequence, or all of
    them when the call has none or when none was recorded in a sequence."""
    if key is None:
        return rows
    keyed = [row for row in rows if row.context.get("sequence") == key]
    if keyed or any("sequence" in row.context for row in rows):
        return keyed
    return rows


def _where(row: CallRow, key: str | None) -> str:
    """Where a request's recordings are, for a message."""
    if row.run_id:
        where = f"run {row.run_id}"
    elif row.cassette:
        where = f"cassette {row.cassette}"
    else:
        where = f"the calls recorded outside a run by one client (recording {row.context.get('recording', '-')})"
    return f"{where}, sequence {key!r}" if key is not None else where


states: weakref.WeakKeyDictionary[Session, _State] = weakref.WeakKeyDictionary()
_states_lock = threading.Lock()


def _state(session: Session) -> _State:
    state = states.get(session)
    if state is None:
        with _states_lock:
            state = states.get(session)
            if state is None:
                state = states[session] = _State(session)
    return state


# -- the recorder behind a wrapped client or function ------------------------------------
class _Prepared:
    """One call on its way: hash, occurrence, run, store; the request snapshot once it goes live."""

    __slots__ = (
        "context", "digest", "endpoint", "exhausted", "kwargs", "occurrence", "request", "run", "sequence", "state",
    )  # fmt: skip

    def __init__(
        self,
        endpoint: str,
        kwargs: Mapping[str, Any],
        digest: str,
        run: Any,
        state: _State,
        context: Any,
        occurrence: int,
        sequence: str | None,
    ):
        self.endpoint = endpoint
        self.kwargs = kwargs
        self.request: dict[str, Any] | None = None
        self.digest = digest
        self.run = run
        self.state = state
        self.context = context
        self.occurrence = occurrence
        self.sequence = sequence
        # (recordings, where) when the request is recorded fewer times than this call's number
        self.exhausted: tuple[int, str] | None = None

    def snapshot(self) -> dict[str, Any]:
        """The request as data (taken before a live call: the caller may change its lists after)."""
        if self.request is None:
            self.request = redact_mapping(normalize(self.kwargs))  # headers, URLs, tokens masked
        return self.request


def _type_path(value: Any) -> str | None:
    if value is None or not hasattr(value, "model_dump"):
        return None
    kind = type(value)
    return f"{kind.__module__}:{kind.__qualname__}"


class Recorder:
    """Mode, prices and context shared by every call of one wrapped client or function."""

    def __init__(
        self,
        mode: str | None,
        prices: Mapping[str, tuple[float, float]] | None,
        metadata: Mapping[str, Any] | None,
        prompt: Any,
        rag_index_version: str | None,
        api_version: str | None,
        replay_from: str | None,
        base_url: str | None = None,
        replay_repeats: str = "strict",
        trace: bool = True,
    ) -> None:
        mode = mode or os.environ.get("KEEL_LLM_MODE") or "record"
        if mode not in MODES:
            raise InvalidInput(f"invalid LLM recording mode {mode!r}", f"use one of {', '.join(MODES)}")
        if replay_repeats not in REPEATS:
            raise InvalidInput(
                f"invalid replay_repeats {replay_repeats!r}", f"use one of {', '.join(REPEATS)} (default strict)"
            )
        self.mode = mode
        self.prices = prices
        self.trace = bool(trace)  # a span per call (keel.sdk.llm_spans)
        self.server = spans.server_of(base_url)
        self.replay_from = replay_from
        self.replay_repeats = replay_repeats
        # Outside a run, this client's calls are numbered on their own, as one recording session.
        self.recording = secrets.token_hex(8)
        self._counts: dict[tuple[str | None, str], int] = {}
        context: dict[str, Any] = {}
        if metadata:
            context["metadata"] = dict(metadata)
        if prompt is not None:
            context["prompt"] = _prompt_ref(prompt)
        if rag_index_version is not None:
            context["rag_index_version"] = rag_index_version
        if api_version is not None:
            context["api_version"] = api_version
        if base_url:
            context["base_url"] = base_url
        self.context = context
        self._session: Session | None = None

    # -- before the call -----------------------------------------------------------
    def prepare(self, endpoint: str, kwargs: Mapping[str, Any], extra: Any, prompt: Any) -> _Prepared | None:
        """Hash the request, find the run, the store and the context; None if that failed (counted)."""
        try:
            digest = request_hash(endpoint, kwargs)
            run = active_run()  # this thread's / asyncio task's run
            session: Session | None = run._session if run is not None else self._session
            if session is None:
                session = self._session = get_session()
            key = sequence.get()
            occurrence = self._occurrence(run, key, digest)
            context = self._context(extra, prompt, run, key)
            return _Prepared(endpoint, kwargs, digest, run, _state(session), context, occurrence, key)
        except Exception as exc:  # noqa: BLE001 - never break the call
            counters.failed("prepare an LLM call's recording", exc)
            return None

    def _counts_of(self, run: Any) -> dict[tuple[str | None, str], int]:
        if run is None:
            return self._counts
        counts = _run_counts.get(run)
        if counts is None:
            counts = _run_counts[run] = {}
        return counts

    def _occurrence(self, run: Any, key: str | None, digest: str) -> int:
        """The n-th time (from 0) this request is made in the run (else through this client)
        and sequence: taken at call time, under a lock, so concurrent calls get their own."""
        with _counts_lock:
            counts = self._counts_of(run)
            n = counts.get((key, digest), 0)
            counts[(key, digest)] = n + 1
        return n

    def _uncount(self, prep: _Prepared) -> None:
        """A call that replay could not answer was not made: its number goes back (unless a
        later identical call took the next one already), so asking again gets the same one."""
        with _counts_lock:
            counts = self._counts_of(prep.run)
            key = (prep.sequence, prep.digest)
            if counts.get(key) == prep.occurrence + 1:
                counts[key] = prep.occurrence

    def _context(self, extra: Any, prompt: Any, run: Any, key: str | None) -> dict[str, Any]:
        context = dict(self.context)
        if key is not None:
            context["sequence"] = key
        if run is None:
            context["recording"] = self.recording
        if extra:
            if not isinstance(extra, Mapping):
                raise InvalidInput("extra_keel takes a dict", "e.g. extra_keel={'rag_index_version': '20240301'}")
            for key, value in extra.items():
                if key in _CONTEXT_KEYS:
                    context[key] = _prompt_ref(value) if key == "prompt" else value
                else:
                    context["metadata"] = {**context.get("metadata", {}), key: value}
        if prompt is not None:
            context["prompt"] = _prompt_ref(prompt)
        if run is not None:
            if "prompt" in context:
                ref = str(context["prompt"])
                if "@" in ref:
                    run.use(EntityRef("prompt", *ref.split("@", 1)), "prompt")
            else:
                used = sorted(f"{e.id}@{e.version}" for e, _role in run._used if e.kind == "prompt")
                if len(used) == 1:
                    context["prompt"] = used[0]
                elif used:
                    context["prompts"] = used
        return context

    def snapshot(self, prep: _Prepared) -> _Prepared | None:
        """Take the request snapshot before a live call; None (not recorded, counted) if that fails."""
        try:
            prep.snapshot()
            return prep
        except Exception as exc:  # noqa: BLE001 - never break the call
            counters.failed("snapshot an LLM call's request", exc)
            return None

    # -- replay ----------------------------------------------------------------------
    def lookup(self, prep: _Prepared) -> _Entry | None:
        """The recording to replay: the call's occurrence-th recording of its request (its
        sequence's), in recorded order; or None. In auto mode a store failure means "call live"."""
        try:
            rows = prep.state.recordings(prep.digest, self.replay_from)
            if not rows:
                return None
            found = _candidates(rows, prep.sequence)
            n = prep.occurrence
            if n >= len(found):
                if not found or self.replay_repeats != "cycle":
                    prep.exhausted = (len(found), _where(rows[0], prep.sequence))
                    return None
                n %= len(found)
            return prep.state.entry(found[n])
        except Exception as exc:
            if self.mode == "replay":
                raise
            counters.failed("look up a recording (calling live instead)", exc)
            return None

    def replayed(self, prep: _Prepared, entry: _Entry) -> None:
        with counters.lock:
            counters.replayed += 1
        row = entry.row
        info = CallInfo(prep.endpoint, prep.digest, row.model, row.latency_ms, True, None, row.source, row)
        info.occurrence = prep.occurrence
        current.set(info)
        if prep.run is not None:
            try:
                prep.run.use(entry.entity, "replay")
            except Exception as exc:  # noqa: BLE001
                counters.failed("record a replay's lineage", exc)

    def missed(self, prep: _Prepared) -> ReplayMiss:
        with counters.lock:
            counters.misses += 1
        self._uncount(prep)
        if prep.exhausted is not None:
            recorded, where = prep.exhausted
            times = "once" if recorded == 1 else f"{recorded} times"
            return ReplayMiss(
                f"request {prep.digest} ({prep.endpoint}) was recorded {times} in {where}; "
                f"this is call {prep.occurrence + 1}",
                "record the extra calls (mode='record' or 'auto'), or replay the recordings again from the "
                "first with keel.llm.wrap(client, mode='replay', replay_repeats='cycle')",
                prep.digest,
            )
        return prep.state.miss(prep.endpoint, prep.snapshot(), prep.digest, self.replay_from)

    # -- after a live call ---------------------------------------------------------------
    def queue(
        self,
        prep: _Prepared,
        response: Any,
        latency_ms: float,
        chunks: list[Any] | None = None,
        response_type: str | None = None,
        first_ms: float | None = None,
    ) -> None:
        """Hand a finished live call to the background writer (never raises)."""
        try:
            run = prep.run
            run_id = run.id if run is not None else None
            context = prep.context
            if first_ms is not None:
                context = {**context, "first_chunk_ms": round(first_ms, 3)}
            call = PendingCall(
                prep.endpoint,
                prep.snapshot(),
                None if chunks is not None else response,
                round(latency_ms, 3),
                now_ms(),
                run_id,
                context,
                response_type or _type_path(response),
                chunks,
                _type_path(chunks[0]) if chunks else None,
                prep.digest,
                self.prices if self.prices is not None else prices_table,
                prep.occurrence,
            )
            state = prep.state
            state.session.llm_writer.add("c", call)  # type: ignore[arg-type]
            state.queued.add(prep.digest)
            if len(state.queued) > 100_000:
                state.queued.clear()
            with counters.lock:
                counters.live += 1
            usage = getattr(response, "usage", None) if chunks is None else _stream_usage(prep.endpoint, chunks)
            model = str(prep.snapshot().get("model") or "")
            current.set(
                CallInfo(prep.endpoint, prep.digest, model, latency_ms, False, run_id, usage=usage,
                         occurrence=prep.occurrence)
            )  # fmt: skip
            if run is not None and run_id not in state.outputs:
                state.outputs.add(run_id)  # type: ignore[arg-type]
                run.log_output(EntityRef(CASSETTE_KIND, run_id or ""), "llm_calls")
        except Exception as exc:  # noqa: BLE001 - never break the call
            counters.failed("record an LLM call", exc)

    def queue_stream(self, prep: _Prepared, chunks: list[Any], latency_ms: float, first_ms: float | None) -> None:
        """Hand a live stream read to the end to the background writer (never raises)."""
        self.queue(prep, None, latency_ms, chunks, _stream_response_type(prep.endpoint), first_ms)

    # -- the two call paths ------------------------------------------------------------------
    def _start_span(self, endpoint: str, request: Mapping[str, Any], extra: Any, prompt: Any) -> Any:
        """The call's span (None when this client does not trace)."""
        if not self.trace:
            return None
        if prompt is None and isinstance(extra, Mapping) and extra.get("prompt") is not None:
            prompt = extra["prompt"]
        ref = _prompt_ref(prompt) if prompt is not None else self.context.get("prompt")
        return spans.start(endpoint, request, self.server, ref)

    def _lookup(self, prep: _Prepared, span: Any) -> _Entry | None:
        try:
            return self.lookup(prep)  # raises only in replay mode (the store failed)
        except BaseException as exc:
            spans.prepared(span, prep, "replay")
            spans.fail(span, exc)
            raise

    def _prices(self) -> Mapping[str, tuple[float, float]]:
        return self.prices if self.prices is not None else prices_table

    def _replay(self, prep: _Prepared, entry: _Entry, stream: bool, span: Any, is_async: bool) -> Any:
        self.replayed(prep, entry)
        spans.finish_replay(span, prep.endpoint, entry.row, entry.response, end=not stream)
        if stream:
            return (AsyncReplayStream if is_async else ReplayStream)(entry.build_chunks(), span)
        return entry.build()

    def _missed(self, prep: _Prepared | None, endpoint: str, span: Any) -> ReplayMiss:
        error = (
            self.missed(prep)
            if prep is not None
            else ReplayMiss(f"cannot replay this {endpoint} request: {counters.last_error}")
        )
        spans.fail(span, error)
        return error

    def _returned(
        self, prep: _Prepared | None, endpoint: str, request: Mapping[str, Any], response: Any,
        started: float, stream: bool, span: Any, is_async: bool,
    ) -> Any:  # fmt: skip
        """A live call's response: recorded (a stream once read to the end), its span ended."""
        latency = (time.perf_counter() - started) * 1000
        if stream and hasattr(response, "__aiter__" if is_async else "__iter__"):
            if prep is None and span is None:
                return response
            kind = AsyncRecordingStream if is_async else RecordingStream
            return kind(response, self, prep, started, span, endpoint, request.get("model"))
        if prep is not None:
            self.queue(prep, response, latency)
        spans.finish(span, endpoint, response, request.get("model"), self._prices())
        return response

    def _before(
        self, endpoint: str, request: Mapping[str, Any], stream: bool, extra: Any, prompt: Any, is_async: bool
    ) -> tuple[Any, Any, Any]:
        """Everything before a call is made, for :meth:`invoke` and :meth:`ainvoke` alike:
        ``(prep, span, answer)`` where ``answer`` is a replayed response, or :data:`_CALL`
        when the call must be made (``span`` None and ``prep`` None in off mode: untraced)."""
        if self.mode == "off":
            span = self._start_span(endpoint, request, extra, prompt)
            if span is not None:
                spans.prepared(span, None, "live")
            return None, span, _CALL
        prep = self.prepare(endpoint, request, extra, prompt)
        span = self._start_span(endpoint, request, extra, prompt)
        if prep is None and self.mode == "replay":
            spans.prepared(span, None, "replay")
            raise self._missed(None, endpoint, span)
        if prep is not None and self.mode != "record":
            entry = self._lookup(prep, span)
            if entry is not None:
                spans.prepared(span, prep, "replay")
                return prep, span, self._replay(prep, entry, stream, span, is_async)
            if self.mode == "replay":
                spans.prepared(span, prep, "replay")
                raise self._missed(prep, endpoint, span)
        if prep is not None:
            prep = self.snapshot(prep)
        spans.prepared(span, prep, "record" if prep is not None else "live")
        return prep, span, _CALL

    def invoke(
        self, endpoint: str, call: Callable[[], Any], request: Mapping[str, Any], stream: bool, extra: Any, prompt: Any
    ) -> Any:
        prep, span, answer = self._before(endpoint, request, stream, extra, prompt, False)
        if answer is not _CALL:
            return answer
        if prep is None and span is None:
            return call()
        started = time.perf_counter()
        try:
            response = call()
        except BaseException as exc:
            spans.fail(span, exc)
            raise
        return self._returned(prep, endpoint, request, response, started, stream, span, False)

    async def ainvoke(
        self, endpoint: str, call: Callable[[], Any], request: Mapping[str, Any], stream: bool, extra: Any, prompt: Any
    ) -> Any:
        prep, span, answer = self._before(endpoint, request, stream, extra, prompt, True)
        if answer is not _CALL:
            return answer
        if prep is None and span is None:
            return await call()
        started = time.perf_counter()
        try:
            response = await call()
        except BaseException as exc:
            spans.fail(span, exc)
            raise
        return self._returned(prep, endpoint, request, response, started, stream, span, True)


#: :meth:`Recorder._before`'s answer when the call must be made (None can be a response).
_CALL: Any = object()


def _prompt_ref(prompt: Any) -> str:
    ref = getattr(prompt, "ref", None)
    return str(ref) if ref is not None else str(prompt)


def _stream_usage(endpoint: str, chunks: list[Any]) -> Any:
    usage: Any
    if endpoint == "messages":  # Anthropic: input tokens come first, output tokens last
        usage = {}
        for chunk in chunks:
            if getattr(chunk, "type", None) == "message_start":
                usage.update(normalize(getattr(getattr(chunk, "message", None), "usage", None)) or {})
            elif getattr(chunk, "type", None) == "message_delta":
                found = normalize(getattr(chunk, "usage", None)) or {}
                usage.update({k: v for k, v in found.items() if v is not None})
        return usage or None
    for chunk in reversed(chunks):
        usage = getattr(chunk, "usage", None)
        if usage is None:
            usage = getattr(getattr(chunk, "response", None), "usage", None)
        if usage is not None:
            return usage
    return None


def _stream_response_type(endpoint: str) -> str | None:
    response_type, _ = _client_types(endpoint)
    return f"{response_type.__module__}:{response_type.__qualname__}" if response_type is not None else None
