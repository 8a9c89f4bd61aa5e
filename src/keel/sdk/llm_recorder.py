"""The machinery behind :mod:`keel.sdk.llm`: the client proxy, the recorder, replay state, streams.

Hot path of a recorded call: snapshot the request (:func:`keel.core.llm.normalize`),
hash it, find the active run, take the call's occurrence (the n-th call of this request
in its run, or through this wrapped client outside a run; per :data:`sequence` when one
is set), call, append a :class:`~keel.services.llm.PendingCall` to the store's
background writer. Replay: hash, take the occurrence the same way, find the recordings
of the request (the replay scope's, or the newest run's that has it: :class:`_State`),
pick the n-th in recorded order, build the openai type from the recorded data.
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
from keel.core.llm import DEFAULT_PRICES, call_cost, normalize, request_hash, usage_tokens
from keel.core.redaction import redact_mapping
from keel.errors import InvalidInput, ReplayMiss
from keel.sdk.fluent import active_run
from keel.sdk.session import Session, get_session
from keel.services.llm import CASSETTE_KIND, CallRow, Closest, PendingCall, StoredCall, cassette_entity

__all__ = [
    "MODES",
    "REPEATS",
    "CallInfo",
    "Proxy",
    "Recorder",
    "counters",
    "current",
    "is_async_client",
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

_INTERCEPT = {
    ("chat", "completions", "create"): "chat.completions",
    ("responses", "create"): "responses",
    ("embeddings", "create"): "embeddings",
}
_PREFIXES = {path[:i] for path in _INTERCEPT for i in range(1, len(path))}
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
def _openai_types(endpoint: str) -> tuple[Any, Any]:
    """``(response type, chunk type)`` of an openai endpoint, or ``(None, None)``."""
    try:
        if endpoint == "chat.completions":
            from openai.types.chat import ChatCompletion, ChatCompletionChunk

            return ChatCompletion, ChatCompletionChunk
        if endpoint == "responses":
            from openai.types.responses import Response, ResponseStreamEvent

            return Response, ResponseStreamEvent
        if endpoint == "embeddings":
            from openai.types import CreateEmbeddingResponse

            return CreateEmbeddingResponse, None
    except ImportError:  # pragma: no cover - openai not installed: replay returns data
        pass
    return None, None


@functools.cache
def _validator(kind: Any) -> Callable[[Any], Any] | None:
    # Models validate fast (pydantic-core); unions such as ResponseStreamEvent are built
    # the client's way (keel does not depend on pydantic itself).
    validate = getattr(kind, "model_validate", None)
    return validate if callable(validate) else None


def _build(kind: Any, data: Any) -> Any:
    """An object of ``kind`` from recorded data, equal to what the live client returned.

    Validation (pydantic-core) is ~50x faster than the openai client's own
    ``construct_type``; data a lenient server sent that does not validate is
    built the client's way instead.
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
        from openai._models import construct_type

        return construct_type(type_=kind, value=data)
    except ImportError:  # pragma: no cover - openai not installed
        return data


def _synth_chunks(endpoint: str, response: Any) -> list[Any]:
    """Chunks for a stream replayed from a recording that was not streamed."""
    if not isinstance(response, Mapping):
        return []
    if endpoint == "responses":
        return [{"type": "response.completed", "sequence_number": 0, "response": response}]
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
        response_type, chunk_type = _openai_types(self.endpoint)
        self.response_type = response_type or _type_of(content.get("response_type"))
        self.chunk_type = chunk_type or _type_of(content.get("chunk_type"))

    def build(self) -> Any:
        return _build(self.response_type, self.response)

    def build_chunks(self) -> Iterator[Any]:
        chunks = self.chunks if self.chunks is not None else _synth_chunks(self.endpoint, self.response)
        kind = self.chunk_type
        return (_build(kind, chunk) for chunk in chunks)


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
            usage = getattr(response, "usage", None) if chunks is None else _stream_usage(chunks)
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

    # -- the two call paths ------------------------------------------------------------------
    def invoke(
        self, endpoint: str, call: Callable[[], Any], request: Mapping[str, Any], stream: bool, extra: Any, prompt: Any
    ) -> Any:
        if self.mode == "off":
            return call()
        prep = self.prepare(endpoint, request, extra, prompt)
        if prep is None:
            if self.mode == "replay":
                raise ReplayMiss(f"cannot replay this {endpoint} request: {counters.last_error}")
            return call()
        if self.mode != "record":
            entry = self.lookup(prep)
            if entry is not None:
                self.replayed(prep, entry)
                return _ReplayStream(entry.build_chunks()) if stream else entry.build()
            if self.mode == "replay":
                raise self.missed(prep)
        prep = self.snapshot(prep)
        started = time.perf_counter()
        response = call()
        latency = (time.perf_counter() - started) * 1000
        if prep is None:
            return response
        if stream and hasattr(response, "__iter__"):
            return _RecordingStream(response, self, prep, started)
        self.queue(prep, response, latency)
        return response

    async def ainvoke(
        self, endpoint: str, call: Callable[[], Any], request: Mapping[str, Any], stream: bool, extra: Any, prompt: Any
    ) -> Any:
        if self.mode == "off":
            return await call()
        prep = self.prepare(endpoint, request, extra, prompt)
        if prep is None:
            if self.mode == "replay":
                raise ReplayMiss(f"cannot replay this {endpoint} request: {counters.last_error}")
            return await call()
        if self.mode != "record":
            entry = self.lookup(prep)
            if entry is not None:
                self.replayed(prep, entry)
                return _AsyncReplayStream(entry.build_chunks()) if stream else entry.build()
            if self.mode == "replay":
                raise self.missed(prep)
        prep = self.snapshot(prep)
        started = time.perf_counter()
        response = await call()
        latency = (time.perf_counter() - started) * 1000
        if prep is None:
            return response
        if stream and hasattr(response, "__aiter__"):
            return _AsyncRecordingStream(response, self, prep, started)
        self.queue(prep, response, latency)
        return response


def _prompt_ref(prompt: Any) -> str:
    ref = getattr(prompt, "ref", None)
    return str(ref) if ref is not None else str(prompt)


def _stream_usage(chunks: list[Any]) -> Any:
    for chunk in reversed(chunks):
        usage = getattr(chunk, "usage", None)
        if usage is None:
            usage = getattr(getattr(chunk, "response", None), "usage", None)
        if usage is not None:
            return usage
    return None


def _stream_response_type(endpoint: str) -> str | None:
    response_type, _ = _openai_types(endpoint)
    return f"{response_type.__module__}:{response_type.__qualname__}" if response_type is not None else None


# -- streams ------------------------------------------------------------------------------
class _StreamRecord:
    """What a recording stream remembers: its chunks and when they came."""

    def __init__(self, stream: Any, recorder: Recorder, prep: _Prepared, started: float) -> None:
        self._stream = stream
        self._recorder = recorder
        self._prep = prep
        self._started = started
        self._first: float | None = None
        self._chunks: list[Any] = []
        self._done = False

    def _keep(self, chunk: Any) -> None:
        if self._first is None:
            self._first = time.perf_counter()
        self._chunks.append(chunk)

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        now = time.perf_counter()
        first = (self._first - self._started) * 1000 if self._first is not None else None
        endpoint = self._prep.endpoint
        self._recorder.queue(
            self._prep, None, (now - self._started) * 1000, self._chunks, _stream_response_type(endpoint), first
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _RecordingStream(_StreamRecord):
    """The caller's stream, unchanged, remembering its chunks; recorded once read to the end."""

    def __init__(self, stream: Any, recorder: Recorder, prep: _Prepared, started: float) -> None:
        super().__init__(stream, recorder, prep, started)
        self._iterator = iter(stream)

    def __iter__(self) -> _RecordingStream:
        return self

    def __next__(self) -> Any:
        try:
            chunk = next(self._iterator)
        except StopIteration:
            self._finish()
            raise
        self._keep(chunk)
        return chunk

    def close(self) -> None:
        """Close the underlying stream (an unfinished stream is not recorded)."""
        self._stream.close()

    def __enter__(self) -> _RecordingStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _AsyncRecordingStream(_StreamRecord):
    """The async flavour of :class:`_RecordingStream`."""

    def __init__(self, stream: Any, recorder: Recorder, prep: _Prepared, started: float) -> None:
        super().__init__(stream, recorder, prep, started)
        self._iterator = stream.__aiter__()

    def __aiter__(self) -> _AsyncRecordingStream:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self._iterator.__anext__()
        except StopAsyncIteration:
            self._finish()
            raise
        self._keep(chunk)
        return chunk

    async def close(self) -> None:
        """Close the underlying stream (an unfinished stream is not recorded)."""
        await self._stream.close()

    async def __aenter__(self) -> _AsyncRecordingStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class _ReplayStream:
    """A replayed stream: the recorded chunks, as the types the live stream yields."""

    response = None

    def __init__(self, chunks: Iterator[Any]) -> None:
        self._chunks = chunks

    def __iter__(self) -> _ReplayStream:
        return self

    def __next__(self) -> Any:
        return next(self._chunks)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> _ReplayStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _AsyncReplayStream:
    """A replayed stream for async clients."""

    response = None

    def __init__(self, chunks: Iterator[Any]) -> None:
        self._chunks = chunks

    def __aiter__(self) -> _AsyncReplayStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return next(self._chunks)
        except StopIteration:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        """Nothing to release."""

    async def __aenter__(self) -> _AsyncReplayStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


# -- the wrapped client ---------------------------------------------------------------------------
def _intercept(recorder: Recorder, endpoint: str, method: Any, is_async: bool) -> Any:
    if is_async:

        async def acreate(*args: Any, **kwargs: Any) -> Any:
            if args:  # the openai methods are keyword-only: leave anything else alone
                return await method(*args, **kwargs)
            extra = kwargs.pop("extra_keel", None)
            prompt = kwargs.pop("keel_prompt", None)
            return await recorder.ainvoke(
                endpoint, lambda: method(**kwargs), kwargs, bool(kwargs.get("stream")), extra, prompt
            )

        return functools.wraps(method)(acreate)

    def create(*args: Any, **kwargs: Any) -> Any:
        if args:
            return method(*args, **kwargs)
        extra = kwargs.pop("extra_keel", None)
        prompt = kwargs.pop("keel_prompt", None)
        return recorder.invoke(endpoint, lambda: method(**kwargs), kwargs, bool(kwargs.get("stream")), extra, prompt)

    return functools.wraps(method)(create)


class Proxy:
    """Passes every attribute through to the wrapped object; intercepts the recorded methods."""

    __slots__ = ("_keel_async", "_keel_children", "_keel_path", "_keel_recorder", "_keel_target")

    def __init__(self, target: Any, recorder: Recorder, path: tuple[str, ...], is_async: bool) -> None:
        object.__setattr__(self, "_keel_target", target)
        object.__setattr__(self, "_keel_recorder", recorder)
        object.__setattr__(self, "_keel_path", path)
        object.__setattr__(self, "_keel_async", is_async)
        object.__setattr__(self, "_keel_children", {})

    def __getattr__(self, name: str) -> Any:
        children = self._keel_children
        found = children.get(name)
        if found is not None:
            return found
        value = getattr(self._keel_target, name)
        path = (*self._keel_path, name)
        endpoint = _INTERCEPT.get(path)
        if endpoint is not None:
            found = _intercept(self._keel_recorder, endpoint, value, self._keel_async)
        elif path in _PREFIXES:
            found = Proxy(value, self._keel_recorder, path, self._keel_async)
        elif not self._keel_path and name in ("with_options", "copy"):
            found = _client_factory(value, self._keel_recorder, self._keel_async)
        else:
            return value
        children[name] = found
        return found

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._keel_target, name, value)

    def __dir__(self) -> list[str]:
        return dir(self._keel_target)

    def __repr__(self) -> str:
        return f"<keel.llm {self._keel_recorder.mode} {self._keel_target!r}>"

    def __enter__(self) -> Any:
        self._keel_target.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._keel_target.__exit__(*exc)

    async def __aenter__(self) -> Any:
        await self._keel_target.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._keel_target.__aexit__(*exc)


def _client_factory(factory: Any, recorder: Recorder, is_async: bool) -> Any:
    @functools.wraps(factory)
    def make(*args: Any, **kwargs: Any) -> Any:
        return Proxy(factory(*args, **kwargs), recorder, (), is_async)

    return make


def is_async_client(client: Any) -> bool:
    try:
        import openai

        if isinstance(client, openai.AsyncOpenAI):
            return True
        if isinstance(client, openai.OpenAI):
            return False
    except ImportError:  # pragma: no cover
        pass
    return type(client).__name__.startswith("Async")
