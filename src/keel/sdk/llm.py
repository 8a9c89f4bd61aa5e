"""``keel.llm``: record every LLM call completely, and replay it offline bit for bit.

::

    import keel, openai

    client = keel.llm.wrap(openai.OpenAI())                 # or AsyncOpenAI, any base_url
    with keel.start_run(name="prompt_v1.3_gpt4"):
        r = client.chat.completions.create(model="gpt-4", messages=msgs, temperature=0, seed=42,
                                           keel_prompt="chat@1.3.0",
                                           extra_keel={"rag_index_version": "20240301", "user_group": "beta"})

    offline = keel.llm.wrap(openai.OpenAI(api_key="unused"), mode="replay")   # no network
    offline.chat.completions.create(model="gpt-4", messages=msgs, temperature=0, seed=42)  # same ChatCompletion

**What is recorded** per ``chat.completions.create``, ``responses.create`` and
``embeddings.create`` call (other attributes pass through untouched): the
request's keyword arguments, the response (``model_dump()``; a stream's
chunks and the completion they add up to), latency, token usage, cost (from
:func:`set_prices` / ``wrap(prices=)``, default :data:`keel.core.llm.DEFAULT_PRICES`),
``system_fingerprint``, and the context: the active run, the prompt version,
``rag_index_version``, ``api_version``, the client's ``base_url`` and user
``metadata``. ``@keel.llm.record`` does the same for any function (the
request is its bound arguments, the response its JSON-able return value).

**Context.** ``wrap(client, metadata=..., prompt=..., rag_index_version=...,
api_version=...)`` sets it for every call; per call, ``keel_prompt=`` (a
loaded :class:`~keel.sdk.prompts.Prompt` or ``"name@version"``) and
``extra_keel={...}`` (keys ``prompt``, ``rag_index_version``, ``api_version``;
any other key is metadata) add to it. Both are removed before the call
reaches the client and never count in the request hash. Without an explicit
prompt, the prompt versions loaded with ``keel.prompts.load`` in the active
run are recorded (``prompt`` when there is one, ``prompts`` when several).

**Modes** (``wrap(mode=...)``, else ``KEEL_LLM_MODE``, else ``record``):
``record`` calls and records; ``replay`` never calls the client: it returns
the recording or raises :class:`~keel.errors.ReplayMiss`, naming the request
hash and the closest recorded request; ``auto`` replays what is recorded and
calls and records the rest; ``off`` passes through. Replay looks in the
whole store (the newest run, imported cassette or recording session that
recorded the request hash) or, with ``replay_from=RUN_OR_CASSETTE``, only in
one run's recordings or one imported cassette (preloaded in one query).
Replayed responses are the ``openai`` types the live call returns
(``ChatCompletion``, ``Response``, ``CreateEmbeddingResponse``;
``stream=True`` yields ``ChatCompletionChunk`` objects / response events).
The request hash and the fields it leaves out are documented in
:mod:`keel.core.llm`.

**Repeated requests replay call by call.** Each call gets its *occurrence*:
the n-th time (from 0) its request hash was made in the active run (outside
a run: through this wrapped client or ``@record`` function), taken when the
call is made, under a lock, so concurrent calls get their own numbers. It is
recorded with the call. On replay the n-th identical call returns the n-th
recording in recorded order (by occurrence, not by arrival): three sampled
answers for a self-consistency vote come back as ``sample-1``, ``sample-2``,
``sample-3``. A call past the recordings raises ReplayMiss ("request H was
recorded 3 times in run R; this is call 4"), unless
``wrap(..., replay_repeats="cycle")``, which starts again from the first
recording (as VCR.py's ``allow_playback_repeats`` replays repeats). Threads
that make identical calls in no fixed order can each number theirs on their
own with :func:`sequence` (``keel.evaluate`` does, one sequence per sample).
Calls recorded before keel numbered them replay in the order they were stored.

**Readable when the run ends.** Leaving a run's ``with`` block (or
``run.finish()``) waits until its recorded calls are in the store, as it waits
for the run's own rows (at most ``KEEL_FLUSH_TIMEOUT``; past it they wait in the
spool): another process can replay the run as soon as it has ended. Replay in the
process that recorded writes its pending recordings of a request before it
looks the request up. Logging a call never waits.

**Lineage.** A run that records calls gets the output ``cassette:<run_id>``;
a run that replays gets the input it replayed from (``cassette:<run_id>`` or
``cassette:<name>@<version>`` for an imported file).

**Never breaks the call.** Recording happens off the calling thread: the call
appends to a queue that a background thread writes in batches (objects, then
one transaction of index rows). Any failure to record is logged (logger
``keel``) and counted in :func:`stats`; the response is returned unchanged.
Calls are durable after :func:`flush`, at the end of their run, at interpreter
exit, and when the store is reset. A stream is recorded once it has been read
to the end.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.core.erasure import ErasureReport
from keel.core.llm import request_hash
from keel.errors import InvalidInput, ReplayMiss
from keel.sdk.llm_proxy import Proxy, is_async_client
from keel.sdk.llm_recorder import (
    MODES,
    REPEATS,
    CallInfo,
    Recorder,
    counters,
    current,
    prices_table,
    states,
)
from keel.sdk.llm_recorder import sequence as _sequence
from keel.sdk.session import Session, get_session
from keel.services.llm import CallRow, Cassette, Closest, StoredCall

__all__ = [
    "MODES",
    "REPEATS",
    "CallInfo",
    "CallRow",
    "Cassette",
    "Closest",
    "LlmStats",
    "ReplayMiss",
    "StandInServer",
    "StoredCall",
    "calls",
    "cassettes",
    "delete_calls",
    "export_cassette",
    "flush",
    "get_call",
    "import_cassette",
    "last_call",
    "prices",
    "record",
    "request_hash",
    "sequence",
    "set_prices",
    "stats",
    "wrap",
]


# -- prices and counters ------------------------------------------------------------
def set_prices(table: Mapping[str, tuple[float, float] | list[float]], replace: bool = False) -> None:
    """Set model prices, USD per 1M tokens ``(input, output)``, e.g. ``{"my-model": (0.5, 1.5)}``.

    Names match by longest prefix (``gpt-4o-mini-2024-07-18`` uses ``gpt-4o-mini``).
    With ``replace`` the defaults are dropped.
    """
    checked = {}
    for model, price in table.items():
        try:
            pin, pout = (float(price[0]), float(price[1]))
        except (TypeError, ValueError, IndexError):
            raise InvalidInput(
                f"invalid price for {model!r}: {price!r}", "give (input, output) USD per 1M tokens"
            ) from None
        checked[str(model)] = (pin, pout)
    if replace:
        prices_table.clear()
    prices_table.update(checked)


def prices() -> dict[str, tuple[float, float]]:
    """The price table in use (a copy)."""
    return dict(prices_table)


@dataclass(frozen=True)
class LlmStats:
    """What recording and replay did in this process.

    ``failures`` counts recordings lost (calls that could not be recorded,
    batches the store refused); the calls themselves all returned normally.
    """

    live: int
    replayed: int
    misses: int
    recorded: int
    pending: int
    failures: int
    last_error: str


def stats() -> LlmStats:
    """Counters of this process: live calls, replays, misses, recordings written, pending, failures."""
    recorded = pending = failed_rows = 0
    last_error = ""
    for session in list(states):
        writer = session._llm_writer
        if writer is not None:
            recorded += writer.written
            pending += writer.pending
            failed_rows += writer.failed
            if writer.last_error is not None:  # e.g. the store is away: the calls wait in the spool
                last_error = f"store: {type(writer.last_error).__name__}: {writer.last_error}"
    c = counters
    return LlmStats(
        c.live, c.replayed, c.misses, recorded, pending, c.failures + failed_rows, c.last_error or last_error
    )


def last_call() -> CallInfo | None:
    """The last call recorded or replayed in this thread / asyncio task (for harnesses and logs)."""
    return current.get()


def wrap(
    client: Any,
    mode: str | None = None,
    *,
    prices: Mapping[str, tuple[float, float]] | None = None,
    metadata: Mapping[str, Any] | None = None,
    prompt: Any = None,
    rag_index_version: str | None = None,
    api_version: str | None = None,
    replay_from: str | None = None,
    replay_repeats: str = "strict",
    trace: bool = True,
) -> Any:
    """An ``openai.OpenAI`` / ``AsyncOpenAI`` (or compatible) or ``anthropic.Anthropic`` /
    ``AsyncAnthropic`` client that records its calls and adds a span per call to the trace.

    Args:
        client: the client to wrap; it is used as is (any ``base_url``).
        mode: ``record``, ``replay``, ``auto`` or ``off`` (default ``KEEL_LLM_MODE`` or record).
        prices: USD per 1M tokens by model for this client (default :func:`prices`).
        metadata: recorded with every call (e.g. ``{"experiment": "A"}``).
        prompt: the prompt version every call uses (a loaded Prompt or ``"name@version"``).
        rag_index_version: the knowledge-base / index version every call is grounded on.
        api_version: the provider API version (default: the client's, e.g. Azure's).
        replay_from: replay only from this run's recordings or this imported cassette.
        replay_repeats: a call past the recordings of its request: ``strict`` (default)
            raises ReplayMiss, ``cycle`` replays them again from the first.
        trace: add an LLM span per call to the current trace (a call outside any trace
            is a trace of its own); False: no spans.

    Returns:
        A proxy with the client's whole interface; see the module docstring.
    """
    if isinstance(client, Proxy):
        client = client._keel_target
    if api_version is None:
        api_version = getattr(client, "_api_version", None)
    base_url = getattr(client, "base_url", None)
    recorder = Recorder(
        mode, prices, metadata, prompt, rag_index_version, api_version, replay_from,
        str(base_url) if base_url is not None else None, replay_repeats, trace,
    )  # fmt: skip
    return Proxy(client, recorder, (), is_async_client(client))


def record(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    mode: str | None = None,
    prices: Mapping[str, tuple[float, float]] | None = None,
    metadata: Mapping[str, Any] | None = None,
    replay_from: str | None = None,
    replay_repeats: str = "strict",
    trace: bool = True,
) -> Any:
    """Decorator: record (and replay) calls of any function, sync or async, like :func:`wrap`
    (with a span per call named after the function: do not also decorate it with ``@keel.trace``).

    The request is the function's bound arguments (endpoint ``fn:<name>``,
    default its qualified name); the response its return value (JSON data or
    an object with ``model_dump``, rebuilt as that type on replay when its
    module is imported). Pass ``model=`` among the arguments to get costs.

    Example::

        @keel.llm.record
        def complete(model: str, prompt: str) -> dict: ...
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        recorder = Recorder(mode, prices, metadata, None, None, None, replay_from, None, replay_repeats, trace)
        endpoint = f"fn:{name or func.__qualname__}"
        signature = inspect.signature(func)

        def request_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:
                return {"args": list(args), "kwargs": kwargs}
            return dict(bound.arguments)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def arecorded(*args: Any, **kwargs: Any) -> Any:
                extra = kwargs.pop("extra_keel", None)
                return await recorder.ainvoke(
                    endpoint, lambda: func(*args, **kwargs), request_of(args, kwargs), False, extra, None
                )

            return arecorded

        @functools.wraps(func)
        def recorded(*args: Any, **kwargs: Any) -> Any:
            extra = kwargs.pop("extra_keel", None)
            request = request_of(args, kwargs)
            return recorder.invoke(endpoint, lambda: func(*args, **kwargs), request, False, extra, None)

        return recorded

    return decorate(fn) if fn is not None else decorate


@contextlib.contextmanager
def sequence(key: str) -> Iterator[None]:
    """Number the calls made in this block (this thread / asyncio task) on their own.

    Inside ``with keel.llm.sequence(key)``, the n-th identical request counts
    within ``key`` (in the run) instead of the whole run, and on replay it gets
    the n-th recording made in a sequence of the same key. Use it when threads
    or tasks make identical calls in no fixed order: each unit of work (a sample,
    a conversation) gets back its own answers, whatever order they run in::

        def answer(question_id, messages):
            with keel.llm.sequence(question_id):
                return [client.chat.completions.create(model="gpt-4o", messages=messages,
                                                       temperature=0.9) for _ in range(3)]

    Recordings made without sequences replay to every sequence (each counting from
    its first call); a call outside any sequence replays all recordings of its request
    in order. Keys are recorded with the calls (context ``sequence``).
    """
    if not isinstance(key, str) or not key or len(key) > 500:
        raise InvalidInput(f"invalid sequence key {key!r:.80}", "give a non-empty string of at most 500 characters")
    token = _sequence.set(key)
    try:
        yield
    finally:
        _sequence.reset(token)


# -- reading recordings back ---------------------------------------------------------------------
def flush() -> None:
    """Write every queued recording now (they are also written at exit)."""
    for session in list(states):
        writer = session._llm_writer
        if writer is not None:
            writer.flush()


def _session() -> Session:
    session = get_session()
    flush()
    return session


def calls(run: str | None = None, cassette: str | None = None, limit: int | None = 1000) -> list[CallRow]:
    """Recorded calls of a run (id or prefix), of an imported cassette, or the store's newest."""
    return _session().llm.calls(run, cassette, limit)


def get_call(request_hash: str) -> StoredCall:
    """The newest recording of a request hash (or a unique prefix): row, request and response."""
    return _session().llm.get(request_hash)


def export_cassette(path: str | os.PathLike[str], run: str | None = None, cassette: str | None = None) -> int:
    """Write recordings (a run's, an imported cassette's, or all) to a JSONL file; how many."""
    return _session().llm.export(path, run, cassette)


def import_cassette(path: str | os.PathLike[str], name: str | None = None) -> Cassette:
    """Load a JSONL cassette file (name default: the file's stem); replay then finds its calls."""
    cassette = _session().llm.import_(Path(path), name)
    for state in list(states.values()):
        state.scopes.pop(cassette.name, None)
    return cassette


def cassettes() -> list[tuple[str, int]]:
    """Imported cassettes and their call counts."""
    return _session().llm.cassettes()


def delete_calls(
    ids: list[int] | None = None,
    filter: str | None = None,  # noqa: A002 - the filter language's word, as in keel.conversations.delete
    since: Any = None,
    until: Any = None,
    run_id: str | None = None,
    *,
    all: bool = False,  # noqa: A002 - as in keel.conversations.delete
    dry_run: bool = False,
    reason: str = "request",
) -> ErasureReport:
    """Erase recorded calls for good: their rows, requests and responses (see
    :meth:`keel.services.llm.LlmService.delete_calls`). Example, everything one end user sent::

        report = keel.llm.delete_calls(filter="metadata.user_id = 'u-42'")
        report.deleted, report.derived   # how many; runs that replayed them, cassettes copied from them

    Select by ``ids`` (``keel llm calls --json``), ``run_id``, ``filter`` (``endpoint``,
    ``model``, ``request_hash``, ``run_id``, ``cassette``, ``created_at``, ``metadata.<key>``,
    ``context.<key>``, ...) and ``since``/``until`` (datetimes, epoch, ISO text or ``"30d"``),
    combined with AND; ``all=True`` to erase every call. ``dry_run`` only counts. This
    process's queued recordings are written first, so they are erased too if they match;
    replay afterwards no longer finds the erased calls (strict replay raises ReplayMiss).
    """
    session = _session()
    report = session.llm.delete_calls(
        ids, filter, since, until, run_id, all=all, dry_run=dry_run, reason=reason
    )  # fmt: skip
    if not dry_run:
        _forget_replays(session)
    return report


def _forget_replays(session: Session) -> None:
    """Drop what this process's replay caches hold of a store (rows and parsed recordings):
    read again, the erased calls are gone and the moved ones are in their new packs."""
    state = states.get(session)
    if state is None:
        return
    with state.lock:
        state.scopes.clear()
        state.sources.clear()
        state.cache.clear()


if TYPE_CHECKING:  # pragma: no cover
    from keel.integrations.standin import StandInServer


def __getattr__(name: str) -> Any:
    if name == "StandInServer":  # the demo/test model server, loaded on first use
        return importlib.import_module("keel.integrations.standin").StandInServer
    raise AttributeError(f"module 'keel.sdk.llm' has no attribute {name!r}")
