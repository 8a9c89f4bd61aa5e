"""One open store in this process: its services, background writers and live runs.

Sessions are shared per store URL, so every run logging to one store shares
one set of writers (runs, conversations, LLM calls, A/B exposures: see
:mod:`keel.sdk.writer`) and one connection pool. Each writer spools to
``<spool root>/<destination>/<stream>/`` (:mod:`keel.sdk.spool`) what the store
cannot take yet; a session that opens delivers the spool an earlier process
left for the same destination.

**Exit is bounded.** At interpreter exit (and on SIGTERM, see
:mod:`keel.sdk.signals`) every live run is ended and every writer flushed for at
most ``KEEL_FLUSH_TIMEOUT`` seconds (default 5) in all; what is not delivered by
then stays in the spool (fsynced), and one line on stderr says how many records
wait and how they will be delivered.

A lost write is never silent. Rows a writer gave up on (the server refused
them, there was room neither in memory nor on disk) that nobody was told about
(``Run.finish()``, ``flush()`` and the ``with`` block raise ``WriteFailed`` for
their run's) are reported at exit: one line on stderr, and the process exits
with status 1 (128+N when signal N ended it). Python gives an ``atexit`` handler
no way to set the exit status (SystemExit raised there is ignored), so keel's
handler then runs the exit handlers still due, flushes stdio and open files,
and ends the process with ``os._exit``.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from keel.errors import InvalidInput, NoWorkspace
from keel.sdk import signals
from keel.sdk.run import Run
from keel.sdk.writer import BatchWriter, Loss, flush_timeout, split_by_run
from keel.services.tracking import TrackingService
from keel.services.workspace import open_pending_store, open_store, resolve_store_urls, workspace_server

if TYPE_CHECKING:
    from keel.services.abtests import ABService
    from keel.services.config import ConfigService
    from keel.services.conversations import ConversationService
    from keel.services.data_versions import DatasetVersionService
    from keel.services.flags import FlagService
    from keel.services.kb import KBService
    from keel.services.llm import LlmService
    from keel.services.models import ModelService
    from keel.services.prompts import PromptService
    from keel.services.reviews import ReviewService
    from keel.services.traces import TraceService

__all__ = ["Session", "get_session", "shutdown"]

S = TypeVar("S")

log = logging.getLogger("keel")

_SESSIONS: dict[tuple[str, str], Session] = {}
_BY_LOOKUP: dict[tuple[str | None, ...], Session] = {}
_LOCK = threading.Lock()
_uncaught: list[BaseException] = []
terminating = signals.terminating  # signals that are ending this process
#: Estimated memory of one queued row, per stream (the writers refine it as they spool).
_ROW_BYTES = {"runs": 160, "conversations": 2_000, "llm": 8_000, "exposures": 400, "traces": 1_000}
#: Rows per batch at most, per stream: each is encoded and written on its own, so no single
#: JSON encode or decode holds the interpreter (and the app's threads) for long.
_CHUNK_ROWS = {"runs": 50_000, "conversations": 1_000, "llm": 50, "exposures": 5_000, "traces": 2_000}


class Session:
    """A store's :class:`TrackingService`, :class:`BatchWriter` and live runs."""

    def __init__(self, service: TrackingService, remote: Any = None) -> None:
        self.service = service
        self.remote = remote  # a keel.sdk.remote.RemoteStore when the store is a keel server
        self._config: ConfigService | None = None
        self._flags: FlagService | None = None
        self._abtests: ABService | None = None
        self._reviews: ReviewService | None = None
        self._datasets: DatasetVersionService | None = None
        self._prompts: PromptService | None = None
        self._models: ModelService | None = None
        self._kb: KBService | None = None
        self._conversations: ConversationService | None = None
        self._conversation_writer: BatchWriter | None = None
        self._llm: LlmService | None = None
        self._llm_writer: BatchWriter | None = None
        self._exposure_writer: BatchWriter | None = None
        self._traces: TraceService | None = None
        self._trace_writer: BatchWriter | None = None
        self.live: dict[str, Run] = {}
        self._lock = threading.Lock()
        self.spool_dir, self.destination = self._spool_location()
        self.writer = BatchWriter(
            service.write_batch, idle=service.maintain, split=split_by_run, **self._stream("runs")
        )
        self._recover()

    # -- delivery -------------------------------------------------------------------------------
    def _spool_location(self) -> tuple[Path, str]:
        """This store's spool folder (see :func:`keel.sdk.spool.spool_root`) and its masked name."""
        from keel.core.urls import mask_url
        from keel.sdk.spool import destination_key, spool_root

        if self.remote is not None:
            identity = description = self.remote.url
        else:
            store = self.service.store
            identity = f"{store.db.url} {store.objects.url}"
            description = f"{mask_url(store.db.url)} {mask_url(store.objects.url)}"
        root = spool_root(self.root)
        return root / destination_key(identity), description

    def _stream(self, name: str) -> dict[str, Any]:
        """The writer arguments of stream ``name``: its name, spool and row size estimate."""
        from keel.sdk.spool import StreamSpool

        return {
            "stream": name,
            "spool": StreamSpool(self.spool_dir / name, self.destination),
            "row_bytes": _ROW_BYTES[name],
            "chunk_rows": _CHUNK_ROWS[name],
        }

    def _recover(self) -> None:
        """Start delivering what earlier processes left in this store's spool (in the background)."""
        from keel.sdk.spool import STREAMS

        try:
            waiting = [name for name in STREAMS if _has_segments(self.spool_dir / name)]
        except OSError:
            return
        for name in waiting:
            try:
                self.writer_for(name).start()
            except Exception as exc:  # e.g. the store cannot be opened for that stream now
                log.warning("keel: cannot deliver the %s spool left in %s: %s", name, self.spool_dir, exc)

    def writer_for(self, stream: str) -> BatchWriter:
        """The writer of ``stream`` (``runs``, ``conversations``, ``llm``, ``exposures``)."""
        if stream == "runs":
            return self.writer
        if stream == "conversations":
            return self.conversation_writer
        if stream == "llm":
            return self.llm_writer
        if stream == "exposures":
            return self.exposure_writer
        if stream == "traces":
            return self.trace_writer
        raise InvalidInput(f"unknown stream {stream!r}", "one of runs, conversations, llm, exposures, traces")

    def _service(self, cls: type[S], build: Callable[[], S]) -> S:
        """``cls`` for this store: its remote proxy against a keel server, else ``build()``."""
        if self.remote is None:
            return build()
        from keel.sdk.remote import remote

        return remote(cls, self.remote)

    @property
    def prompts(self) -> PromptService:
        """The store's prompt registry service (created on first use)."""
        if self._prompts is None:
            from keel.services.prompts import PromptService

            self._prompts = self._service(PromptService, lambda: PromptService(self.service.store))
        return self._prompts

    @property
    def models(self) -> ModelService:
        """The store's model registry service (created on first use)."""
        if self._models is None:
            from keel.services.models import ModelService

            self._models = self._service(ModelService, lambda: ModelService(self.service.store, self.service))
        return self._models

    @property
    def kb(self) -> KBService:
        """The store's knowledge-base service (created on first use)."""
        if self._kb is None:
            from keel.services.kb import KBService

            self._kb = self._service(KBService, lambda: KBService(self.service.store))
        return self._kb

    @property
    def conversations(self) -> ConversationService:
        """The store's conversation service (created on first use)."""
        if self._conversations is None:
            from keel.services.conversations import ConversationService

            self._conversations = self._service(ConversationService, lambda: ConversationService(self.service.store))
        return self._conversations

    @property
    def config(self) -> ConfigService:
        """The store's config-snapshot service (created on first use)."""
        if self._config is None:
            from keel.services.config import ConfigService

            self._config = self._service(ConfigService, lambda: ConfigService(self.service.store))
        return self._config

    @property
    def flags(self) -> FlagService:
        """The store's feature-flag service (created on first use)."""
        if self._flags is None:
            from keel.services.flags import FlagService

            self._flags = self._service(FlagService, lambda: FlagService(self.service.store, self.prompts))
        return self._flags

    @property
    def datasets(self) -> DatasetVersionService:
        """The store's registered dataset versions (created on first use)."""
        if self._datasets is None:
            from keel.services.data_versions import DatasetVersionService

            self._datasets = self._service(DatasetVersionService, lambda: DatasetVersionService(self.service.store))
        return self._datasets

    @property
    def abtests(self) -> ABService:
        """The store's A/B test service (created on first use)."""
        if self._abtests is None:
            from keel.services.abtests import ABService

            self._abtests = self._service(ABService, lambda: ABService(self.service.store, self.prompts, self.models))
        return self._abtests

    @property
    def reviews(self) -> ReviewService:
        """Protected refs and change requests (created on first use)."""
        if self._reviews is None:
            from keel.services.reviews import ReviewService

            self._reviews = self._service(
                ReviewService, lambda: ReviewService(self.service.store, self.service, self.abtests)
            )
        return self._reviews

    @property
    def root(self) -> Any:
        """The workspace folder (a Path), or None (a database URL, or a server with no local workspace)."""
        return self.remote.root if self.remote else self.service.store.root

    def local_store(self, what: str) -> Any:
        """The open local store, for ``what`` that needs it; InvalidInput against a keel server."""
        if self.remote:
            raise InvalidInput(
                f"{what} needs a local store; KEEL_URI points at the keel server {self.remote.url}",
                "run it against a local workspace (unset KEEL_URI)",
            )
        return self.service.store

    def describe(self) -> dict[str, Any]:
        """Where the store lives: workspace, database and objects, or the server and user."""
        return dict(self.remote.describe() if self.remote else self.service.store.describe())

    @property
    def conversation_writer(self) -> BatchWriter:
        """The background writer of logged conversations (its own thread, created on first use)."""
        writer = self._conversation_writer
        if writer is None:
            with self._lock:
                if self._conversation_writer is None:
                    from keel.core.conversations import ConversationBatch

                    self._conversation_writer = BatchWriter(
                        self.conversations.write_batch,
                        idle=self.conversations.maintain,
                        wake_at=5_000,
                        new_batch=ConversationBatch,
                        kinds={"c": "conversations", "f": "feedback"},
                        **self._stream("conversations"),
                    )
                writer = self._conversation_writer
        return writer

    @property
    def llm(self) -> LlmService:
        """The store's recorded-LLM-call service (created on first use)."""
        if self._llm is None:
            from keel.services.llm import LlmService

            self._llm = self._service(LlmService, lambda: LlmService(self.service.store, self.service))
        return self._llm

    @property
    def llm_writer(self) -> BatchWriter:
        """The background writer of recorded LLM calls (its own thread, created on first use)."""
        writer = self._llm_writer
        if writer is None:
            with self._lock:
                if self._llm_writer is None:
                    from keel.services.llm import CallBatch

                    self._llm_writer = BatchWriter(
                        self.llm.write_batch,
                        wake_at=2_000,
                        max_attempts=3,
                        new_batch=CallBatch,
                        kinds={"c": "calls"},
                        prepare=_plain_calls,
                        **self._stream("llm"),
                    )
                writer = self._llm_writer
        return writer

    @property
    def traces(self) -> TraceService:
        """The store's trace service (created on first use)."""
        if self._traces is None:
            from keel.services.traces import TraceService

            self._traces = self._service(TraceService, lambda: TraceService(self.service.store))
        return self._traces

    @property
    def trace_writer(self) -> BatchWriter:
        """The background writer of finished spans and trace scores (created on first use)."""
        writer = self._trace_writer
        if writer is None:
            with self._lock:
                if self._trace_writer is None:
                    from keel.core.traces import SpanBatch

                    self._trace_writer = BatchWriter(
                        self.traces.write_batch,
                        wake_at=5_000,
                        new_batch=SpanBatch,
                        kinds={"s": "spans", "f": "scores"},
                        **self._stream("traces"),
                    )
                writer = self._trace_writer
        return writer

    @property
    def exposure_writer(self) -> BatchWriter:
        """The background writer of A/B exposures and outcomes (created on first use)."""
        writer = self._exposure_writer
        if writer is None:
            with self._lock:
                if self._exposure_writer is None:
                    from keel.services.abtests import ABBatch

                    self._exposure_writer = BatchWriter(
                        self.abtests.write_batch,
                        wake_at=5_000,
                        new_batch=ABBatch,
                        kinds={"x": "exposures", "o": "outcomes"},
                        **self._stream("exposures"),
                    )
                writer = self._exposure_writer
        return writer

    def start_run(
        self,
        project: str | None = None,
        name: str | None = None,
        tags: dict[str, Any] | None = None,
        parent_id: str | None = None,
    ) -> Run:
        """Create a run and return it live.

        The run's row is queued with its first logged values, so a short run
        costs one transaction in all (written at ``finish()`` at the latest).
        """
        known = parent_id is not None and parent_id in self.live
        if parent_id is not None and not known:
            self.writer.flush()  # the parent may be queued, not yet written
        record, batch = self.service.new_run(project, name, tags, parent_id, parent_known=known)
        self.writer.add("r", batch.new_runs[0])
        for row in batch.tags:
            self.writer.add("t", row)
        for edge in batch.lineage:
            self.writer.add("l", edge)
        run = Run(self, record)
        with self._lock:
            self.live[run.id] = run
        return run

    def resume_run(self, run_id: str) -> Run:
        """Continue logging to an existing run."""
        self.writer.flush()
        record, stored = self.service.resume_run(run_id)
        with self._lock:
            if record.run_id in self.live:
                return self.live[record.run_id]
            run = Run(self, record, stored)
            self.live[run.id] = run
        return run

    def forget(self, run: Run) -> None:
        """Drop a finished run from the live set."""
        with self._lock:
            self.live.pop(run.id, None)

    def writers(self) -> list[BatchWriter]:
        """Every background writer this session has started (runs, conversations, calls, exposures...)."""
        found = [self.writer, self._conversation_writer, self._llm_writer, self._exposure_writer, self._trace_writer]
        return [w for w in found if w is not None]

    def take_losses(self) -> dict[str | None, Loss]:
        """The rows each writer gave up on and nobody reported yet, by run (and forget them)."""
        lost: dict[str | None, Loss] = {}
        for writer in self.writers():
            for key, loss in writer.take_losses().items():
                if key in lost:
                    lost[key].rows += loss.rows
                else:
                    lost[key] = loss
        return lost

    def end_runs(self) -> None:
        """End every live run (killed by a signal, failed by an uncaught error, else finished),
        queueing the ends without waiting for them."""
        if terminating:
            status, error = "killed", f"signal {terminating[0]}"
        elif _uncaught:
            status, error = "failed", f"{type(_uncaught[0]).__name__}: {_uncaught[0]}"
        else:
            status, error = "finished", None
        for run in list(self.live.values()):
            try:
                run._end(status, error, wait=False)
            except Exception:  # pragma: no cover - best effort at exit
                log.exception("keel: could not finish run %s at exit", run.id)

    def shutdown(self, timeout: float | None = None) -> None:
        """End live runs and flush every writer (at most ``timeout`` seconds, default
        ``KEEL_FLUSH_TIMEOUT``); what is left stays in the spool."""
        _shutdown([self], timeout)


@dataclasses.dataclass
class _Spooled:
    """What waits in the spool after a flush: rows, and where."""

    rows: int = 0
    folder: Path | None = None


def _shutdown(sessions: list[Session], timeout: float | None) -> _Spooled:
    """End the live runs of ``sessions``, flush all their writers under one deadline, then stop
    them (leftovers to the spool). Returns what this process left in the spool."""
    deadline = time.monotonic() + (flush_timeout() if timeout is None else timeout)
    for session in sessions:
        session.end_runs()
    writers = [(session, writer) for session in sessions for writer in session.writers()]
    targets = [(writer, writer.collect()) for _, writer in writers]
    for writer, target in targets:
        writer.wait(target, deadline)
    left = _Spooled()
    for session, writer in writers:
        rows = writer.stop()  # spills what memory still holds, releases the spool for the next process
        if rows:
            left.rows += rows
            left.folder = left.folder or session.spool_dir.parent
    return left


def _has_segments(folder: Path) -> bool:
    try:
        return any(name.endswith(".seg") for name in os.listdir(folder))
    except FileNotFoundError:
        return False


def _plain_calls(batch: Any) -> Any:
    """Recorded calls with the SDK's response objects turned into JSON data (for the spool)."""
    from keel.core.llm import normalize
    from keel.services.llm import CallBatch

    return CallBatch(
        [
            dataclasses.replace(
                call,
                response=normalize(call.response),
                chunks=None if call.chunks is None else [normalize(c) for c in call.chunks],
                context=normalize(call.context),
            )
            for call in batch.calls
        ]
    )


def get_session(database: str | None = None, objects: str | None = None, create: bool = True) -> Session:
    """The session for the store this process uses (see ``keel.services.workspace``).

    With ``create`` and no workspace anywhere, the session works against a workspace
    in the current directory that its first write creates (like MLflow's ``mlruns/``):
    read-only calls see an empty store and create nothing; the first logged row,
    registered version or stored object creates ``.keel/`` and says where, once
    (one ``keel: created workspace at ...`` warning on the ``keel`` logger, which
    prints on stderr unless logging is configured otherwise). Without ``create`` no
    workspace raises NoWorkspace.
    Where the store is, is looked up once per (folder, arguments, ``KEEL_*``
    variables): finding ``.keel/`` walks up the folders and reads its config.
    """
    lookup = (database, objects, os.getcwd(), os.environ.get("KEEL_URI"), os.environ.get("KEEL_OBJECTS"))
    session = _BY_LOOKUP.get(lookup)
    if session is not None:
        return session
    uri = database if database is not None else os.environ.get("KEEL_URI")
    if uri and uri.lower().startswith(("http://", "https://")):
        return _remote_session(uri, lookup)
    pending = None
    try:
        db_url, obj_url, root = resolve_store_urls(database, objects)
    except NoWorkspace:
        if not create:
            raise
        pending = open_pending_store(os.getcwd(), on_created=_report_created)
        db_url, obj_url, root = pending.db.url, pending.objects.url, pending.root
    if pending is None and root is not None and not uri:
        server = workspace_server(root)  # set by 'keel init --store http://...'
        if server is not None:
            return _remote_session(server, lookup)
    key = (db_url, obj_url)
    with _LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            store = pending or open_store(db_url, obj_url)
            store.root = root
            session = Session(TrackingService(store))
            _SESSIONS[key] = session
            _install_exit_hooks()
        _BY_LOOKUP[lookup] = session
        return session


def _report_created(keel_dir: Path) -> None:
    """Say where the first write created a workspace (once per workspace: it is created once)."""
    log.warning("keel: created workspace at %s", keel_dir)


def _remote_session(url: str, lookup: tuple[str | None, ...]) -> Session:
    """The session of the keel server at ``url`` (services are proxies; writers send batches over HTTP)."""
    from keel.sdk.remote import open_remote, remote

    with _LOCK:
        session = _SESSIONS.get((url, ""))
        if session is None:
            store = open_remote(url)
            session = Session(remote(TrackingService, store), store)
            _SESSIONS[(url, "")] = session
            _install_exit_hooks()
        _BY_LOOKUP[lookup] = session
        return session


def shutdown(timeout: float | None = None) -> int:
    """End every live run and flush every writer under one deadline (``timeout``, default
    ``KEEL_FLUSH_TIMEOUT``); returns the rows left in the spool (runs at interpreter exit)."""
    with _LOCK:
        sessions = list(_SESSIONS.values())
    return _shutdown(sessions, timeout).rows


_hooks_installed = False


def _install_exit_hooks() -> None:
    global _hooks_installed
    signals.install()  # each time: a server may have installed its handler since
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_at_exit)

    previous_hook = sys.excepthook

    def excepthook(exc_type: Any, exc: BaseException, tb: Any) -> None:
        _uncaught.append(exc)  # runs left open by the failing script end as failed
        previous_hook(exc_type, exc, tb)

    sys.excepthook = excepthook


def _take_all_losses() -> dict[str | None, Loss]:
    with _LOCK:
        sessions = list(_SESSIONS.values())
    lost: dict[str | None, Loss] = {}
    for session in sessions:
        for key, loss in session.take_losses().items():
            if key in lost:
                lost[key].rows += loss.rows
            else:
                lost[key] = loss
    return lost


def lost_rows_line(lost: dict[str | None, Loss]) -> str:
    """The one line that reports rows nobody was told were lost: how many, of which runs, and why."""
    rows = sum(loss.rows for loss in lost.values())
    runs = [key for key in lost if key is not None]
    key = runs[0] if runs else None
    cause = lost[key].failure(key or "").cause
    count = f"{rows} logged row{'s' if rows != 1 else ''}"
    if len(runs) > 1:
        return f"keel: {count} of {len(runs)} runs could not be written; the first, of run {runs[0][:8]}: {cause}"
    where = f" of run {key[:8]}" if key is not None else ""
    return f"keel: {count}{where} could not be written: {cause}"


def spooled_line(rows: int, folder: Path | None) -> str:
    """The one line that says what the exit left in the spool and how it will be delivered."""
    where = str(folder) if folder is not None else "the spool"
    if folder is not None:
        with contextlib.suppress(OSError, ValueError):
            where = os.path.relpath(folder) if Path(folder).resolve().is_relative_to(Path.cwd()) else str(folder)
    return (
        f"keel: {rows:,} logged record{'s' if rows != 1 else ''} {'are' if rows != 1 else 'is'} spooled in {where}; "
        "they will be sent by the next keel process here or by `keel sync`"
    )


def _at_exit() -> None:
    """End every live run and flush every writer (bounded); say what waits in the spool; if rows
    were lost unreported, say so and exit non-zero (also after a SIGTERM a server held back)."""
    with _LOCK:
        sessions = list(_SESSIONS.values())
    left = _shutdown(sessions, None)
    lost = _take_all_losses()
    try:
        if left.rows:
            sys.stderr.write(spooled_line(left.rows, left.folder) + "\n")
        if lost:
            sys.stderr.write(lost_rows_line(lost) + "\n")
    except Exception:  # a closed stderr: the status still tells
        pass
    if lost:
        _exit_with(128 + terminating[0] if terminating else 1)
    elif signals.blocked():
        _exit_with(128 + terminating[0])


def _exit_with(status: int) -> None:
    """End the process with ``status`` from an atexit handler, losing nothing of the normal exit:
    the handlers registered before this one (they would run after it) run first, then every
    open file and stdio stream is flushed."""
    atexit.unregister(_at_exit)
    try:
        atexit._run_exitfuncs()
    finally:
        _flush_open_files()
        os._exit(status)


def _flush_open_files() -> None:
    """Flush what interpreter shutdown would have: stdio, and files the program left open."""
    import gc
    import io

    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:  # best effort, as at a normal exit
            pass
    for obj in gc.get_objects():
        try:
            if type(obj) in (io.TextIOWrapper, io.BufferedWriter, io.BufferedRandom) and not obj.closed:
                obj.flush()
        except Exception:  # a file that cannot flush now would not have at exit either
            pass


def reset() -> None:
    """Finish and forget every session and close their stores (tests, long-lived hosts).

    Rows lost and not reported yet are logged (one warning), not carried over.
    """
    from keel.sdk.fluent import _clear_stack
    from keel.sdk.live import stop_all
    from keel.sdk.prompts import clear_cache
    from keel.services.workspace import close_all_stores

    rows = shutdown()
    lost = _take_all_losses()
    if lost:
        log.warning("%s", lost_rows_line(lost))
    if rows:
        log.warning("%s", spooled_line(rows, None))
    _clear_stack()
    stop_all()  # the cache refreshers read the stores closed below
    clear_cache()
    with _LOCK:
        remotes = [session.remote for session in _SESSIONS.values() if session.remote is not None]
        _SESSIONS.clear()
        _BY_LOOKUP.clear()
    for remote in remotes:  # a keel server's connections: not in close_all_stores' list
        remote.close()
    close_all_stores()
