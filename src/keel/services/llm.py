"""Recorded LLM calls: write recordings, find them again, export and import cassettes.

A recording is two things:

- an entry of a **pack** object in the object store (content-addressed
  canonical JSON): every batch the SDK's background writer hands over is
  written as one pack, so recording costs one object per batch, not one
  file per call (a local object write costs ~0.4 ms)::

      {"format": "keel.llm_pack/1", "calls": [
          {"endpoint": ..., "request": {...}, "response": {...},
           "response_type": "openai.types.chat.chat_completion:ChatCompletion",
           "chunks": [...], "chunk_type": ...},      # chunks: streamed calls only
          ...]}

- a **row** in ``llm_calls``: request hash -> (pack oid, entry ``part``), with the model,
  latency, tokens, cost, ``system_fingerprint``, the run it was made in (or
  the imported cassette's name), its ``occurrence`` (the n-th call of that
  request in the run, from 0) and its context (prompt version,
  ``rag_index_version``, ``api_version``, user metadata; ``sequence`` and, for a
  call outside a run, ``recording``: see :mod:`keel.sdk.llm`).

**Erasure** (:meth:`LlmService.delete_calls`) removes recorded calls for good: their rows,
and their requests and responses from the object store. A pack that held an erased call is
written again without it (a new object: every pack written carries its batch id or a random
nonce, so no other writer's pack ever has the same content), the calls it still holds are
moved to the new pack in the transaction that deletes the erased rows, and the old pack is
deleted at once. A crash leaves at worst an unreferenced new pack for ``keel gc``, never a
row pointing at a missing object.

A **cassette** is a set of recordings: those of one run (lineage entity
``cassette:<run_id>``) or an imported file (``cassette:<name>@<version>``,
the version being the file's content hash). The file format (JSONL) is a
header line ``{"keel_cassette": 1, ...}`` then one call per line: the row's
fields plus ``request``, ``response``, ``response_type`` and, for streams,
``chunks`` and ``chunk_type``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from keel.core.batch import check_batch_id
from keel.core.conversations import parse_time
from keel.core.entities import EntityRef, now_ms
from keel.core.erasure import REASONS, ErasureReport
from keel.core.filters import parse_filter
from keel.core.hashing import hash_bytes
from keel.core.llm import (
    DEFAULT_PRICES,
    assemble_chat_stream,
    assemble_messages_stream,
    call_cost,
    encode_normalized,
    hash_request,
    normalize,
    request_diff,
    request_similarity,
    usage_tokens,
)
from keel.core.names import check_name
from keel.core.redaction import REDACTED, redact_mapping
from keel.errors import AlreadyExists, Conflict, IntegrityError, InvalidInput, NotFound, StoreError
from keel.fileio import atomic_write
from keel.meta.llm import FILTER_PREFIXES, CallRow, Changed, ErasePlan, RawLlmCalls
from keel.services.audit import who as audit_who
from keel.services.contract import (
    operation,
    service,
)
from keel.services.tracking import TrackingService
from keel.services.workspace import Store

__all__ = [
    "CASSETTE_KIND",
    "FORMAT",
    "CallBatch",
    "CallRow",
    "Cassette",
    "Closest",
    "LlmService",
    "PendingCall",
    "StoredCall",
    "cassette_entity",
]

FORMAT = "keel.llm_pack/1"
_PACK_CACHE = 64  # parsed packs kept in memory
CASSETTE_KIND = "cassette"
_CLOSEST_CANDIDATES = 200
_KNOWN_OIDS = 100_000  # object ids known to be stored: skip the existence check
_UNSCOPED_ROWS = 10_000  # recordings of one request outside runs read to find its newest session's
_ERASE_ATTEMPTS = 5  # plans made again when a concurrent erasure changed the same packs
_REWRITE_CALLS = 100  # calls per pack an erasure writes (the SDK writes up to 50 per batch)
_ERASE_JOBS = 16  # object deletes in flight at once (a local unlink may wait on the disk; S3: round trips)


@dataclass
class PendingCall:
    """A call made and not yet written: what the SDK hands over (cheap to build)."""

    endpoint: str
    request: dict[str, Any]  # normalized (keel.core.llm.normalize): a snapshot
    response: Any  # the response object (anything with model_dump) or JSON data
    latency_ms: float | None
    created_at: int
    run_id: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    response_type: str | None = None
    chunks: list[Any] | None = None  # a stream's chunks/events, as received
    chunk_type: str | None = None
    request_hash: str | None = None
    prices: Mapping[str, tuple[float, float]] | None = None
    occurrence: int | None = None  # the n-th call of this request in its run (see keel.sdk.llm)


@dataclass
class CallBatch:
    """Calls queued on the SDK's background writer (``BatchWriter(new_batch=CallBatch)``)."""

    calls: list[PendingCall] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.calls)


@dataclass(frozen=True)
class StoredCall:
    """A recording: its index row and its content (request, response, chunks)."""

    row: CallRow
    content: dict[str, Any]

    @property
    def request(self) -> dict[str, Any]:
        """The request's keyword arguments, as recorded."""
        return dict(self.content.get("request") or {})

    @property
    def response(self) -> Any:
        """The response as data (``model_dump()``)."""
        return self.content.get("response")

    def to_dict(self) -> dict[str, Any]:
        """The row's fields plus the content (the JSONL cassette line)."""
        out = self.row.to_dict()
        for local in ("id", "oid", "part"):  # where this store keeps it: not part of a cassette line
            out.pop(local, None)
        for key in ("request", "response", "response_type", "chunks", "chunk_type"):
            if self.content.get(key) is not None:
                out[key] = self.content[key]
        return out


@dataclass(frozen=True)
class Closest:
    """The recorded request most like one that was not found, and how they differ."""

    request_hash: str
    model: str
    source: str
    similarity: float
    differences: list[str]


@dataclass(frozen=True)
class Cassette:
    """An imported cassette file."""

    name: str
    version: str
    calls: int
    created: bool

    @property
    def entity(self) -> EntityRef:
        """The lineage reference ``cassette:NAME@VERSION``."""
        return EntityRef(CASSETTE_KIND, self.name, self.version)


def cassette_entity(row: CallRow) -> EntityRef:
    """The cassette a recording belongs to: ``cassette:<run_id>`` or ``cassette:<name>@<version>``."""
    if row.run_id:
        return EntityRef(CASSETTE_KIND, row.run_id)
    return EntityRef(CASSETTE_KIND, row.cassette, str(row.context.get("cassette_version", "")))


def _assembled(call: PendingCall, chunks: list[Any]) -> Any:
    if call.endpoint == "chat.completions":
        return assemble_chat_stream(chunks)
    if call.endpoint == "messages":  # Anthropic
        return assemble_messages_stream(chunks)
    for chunk in reversed(chunks):  # responses: the final event carries the whole response
        if isinstance(chunk, Mapping) and isinstance(chunk.get("response"), Mapping):
            return chunk["response"]
    return chunks[-1] if chunks else None


def _imported_hash(endpoint: str, request: Mapping[str, Any], recorded: Any) -> str:
    """The request hash of an imported call: computed from its request, unless a secret in a
    hashed field was masked when it was recorded (the request holds ``***``): then the hash it
    was recorded under, so that replay still finds it."""
    digest = hash_request(endpoint, request)
    if (
        isinstance(recorded, str)
        and recorded != digest
        and len(recorded) == 64
        and all(c in "0123456789abcdef" for c in recorded)
        and REDACTED in json.dumps(request)
    ):
        return recorded
    return digest


def _occurrence(value: Any, source: Path, number: int) -> int | None:
    """An imported call's occurrence: a count, or None (a file exported before it was recorded)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise InvalidInput(f"{source} line {number}: invalid occurrence {value!r}", "re-export it")
    return value


@service("llm")
class LlmService:
    """Recordings of one store: write, look up, list, export and import."""

    def __init__(self, store: Store, tracking: TrackingService) -> None:
        self.store = store
        self.objects = store.objects
        self.tracking = tracking
        self.repo = RawLlmCalls(store.db)
        self._known: dict[str, None] = {}
        self._known_lock = threading.Lock()
        self._packs: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()

    # -- writing ---------------------------------------------------------------
    def _put(self, data: bytes) -> str:
        oid = hash_bytes(data)
        if oid in self._known:
            return oid
        self.objects.put_bytes(data)
        with self._known_lock:
            if len(self._known) >= _KNOWN_OIDS:
                self._known.clear()
            self._known[oid] = None
        return oid

    def content_of(self, call: PendingCall) -> dict[str, Any]:
        """A call's entry in its pack (see the module docstring)."""
        # Secrets masked (headers, URLs, tokens); the request hash is taken from the request as made.
        content: dict[str, Any] = {"endpoint": call.endpoint, "request": redact_mapping(call.request)}
        if call.chunks is not None:
            chunks = [normalize(c) for c in call.chunks]
            content["chunks"] = chunks
            content["chunk_type"] = call.chunk_type
            content["response"] = _assembled(call, chunks) if call.response is None else normalize(call.response)
        else:
            content["response"] = normalize(call.response)
        content["response_type"] = call.response_type
        return content

    @operation("writer")
    def write_batch(self, batch: CallBatch, batch_id: str | None = None) -> None:
        """Write a batch queued by the SDK (see :meth:`write`); ``batch_id`` (made by the SDK)
        makes it idempotent (see :mod:`keel.meta.delivered`)."""
        self.write(batch.calls, check_batch_id(batch_id))

    def write(self, calls: Iterable[PendingCall], batch_id: str | None = None) -> list[str]:
        """Store calls: one pack object, then one transaction of index rows; their request hashes."""
        contents: list[dict[str, Any]] = []
        rows: list[list[Any]] = []
        for call in calls:
            content = self.content_of(call)
            digest = call.request_hash or hash_request(call.endpoint, call.request)
            response = content["response"] if isinstance(content["response"], Mapping) else {}
            model = str(call.request.get("model") or response.get("model") or "")
            tokens_in, tokens_out = usage_tokens(response)
            cost = call_cost(model, tokens_in, tokens_out, call.prices if call.prices is not None else DEFAULT_PRICES)
            fingerprint = response.get("system_fingerprint")
            rows.append(
                [
                    digest,
                    call.endpoint,
                    model[:200],
                    "",  # the pack's oid, known once every call is in
                    len(contents),
                    call.run_id,
                    "",
                    call.created_at,
                    call.latency_ms,
                    tokens_in,
                    tokens_out,
                    cost,
                    str(fingerprint)[:200] if fingerprint else None,
                    call.chunks is not None,
                    json.dumps(redact_mapping(normalize(call.context)), sort_keys=True),
                    call.occurrence,
                ]
            )
            contents.append(content)
        if not contents:
            return []
        oid = self._put_pack(contents, batch_id)
        for row in rows:
            row[3] = oid
        self.repo.insert([tuple(row) for row in rows], batch_id)
        return [row[0] for row in rows]

    def _put_pack(self, contents: list[dict[str, Any]], batch_id: str | None = None) -> str:
        """Store a pack; its oid. The pack carries the batch id (a retried batch makes the same
        object) or a random nonce, so it is never the content of another pack: an erasure that
        deletes an old pack can never delete what a concurrent writer was about to point at."""
        # Every part is normalized data (see content_of and import_): the fast encoder gives canonical JSON.
        batch = batch_id or "n:" + secrets.token_hex(16)
        oid = self._put(encode_normalized({"format": FORMAT, "batch": batch, "calls": contents}))
        self._remember(oid, contents)
        return oid

    def _remember(self, oid: str, contents: list[dict[str, Any]]) -> None:
        with self._known_lock:
            self._packs[oid] = contents
            self._packs.move_to_end(oid)
            while len(self._packs) > _PACK_CACHE:
                self._packs.popitem(last=False)

    # -- reading ---------------------------------------------------------------
    @operation("reader")
    def pack(self, oid: str) -> list[dict[str, Any]]:
        """The calls of a pack object (hash-verified when read; the last packs are kept parsed)."""
        contents = self._packs.get(oid)
        if contents is None:
            data = json.loads(self.objects.get_bytes(oid))
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise IntegrityError(f"object {oid} is not a pack of recorded LLM calls", "check the llm_calls index")
            contents = list(data["calls"])
            self._remember(oid, contents)
        return contents

    def read(self, row: CallRow) -> StoredCall:
        """A recording's content.

        A row read before an erasure may name a pack the erasure replaced (its call moved to
        a new pack) or held an erased call: its pack is then gone, and the row is read again."""
        try:
            contents = self.pack(row.oid)
        except NotFound:
            fresh = self.call_row(row.id)
            if fresh is None:
                raise NotFound(
                    f"recorded LLM call {row.id} (request {row.request_hash[:12]}) was erased",
                    "record it again if you need it",
                ) from None
            if fresh.oid == row.oid:
                raise
            row = fresh
            contents = self.pack(row.oid)
        if not 0 <= row.part < len(contents):
            raise IntegrityError(f"pack {row.oid} has no entry {row.part}", "check the llm_calls index")
        return StoredCall(row, contents[row.part])

    @operation("reader")
    def call_row(self, row_id: int) -> CallRow | None:
        """A recorded call's row by its id, as stored now (None if there is none)."""
        return self.repo.by_id(row_id)

    @operation("reader")
    def latest(self, request_hash: str) -> CallRow | None:
        """The newest recording of a request hash, anywhere in the store."""
        return self.repo.latest(request_hash)

    @operation("reader")
    def replay_rows(self, request_hash: str) -> list[CallRow]:
        """The recordings an unscoped replay of a request goes through, in replay order
        (:attr:`CallRow.replay_order`): those of the newest run, imported cassette or recording
        session (calls made outside a run by one wrapped client) that recorded it."""
        newest = self.repo.latest(request_hash)
        if newest is None:
            return []
        if newest.run_id is not None or newest.cassette:
            rows = self.repo.of_request(request_hash, newest.run_id, newest.cassette, None)
        else:
            session = newest.context.get("recording")
            rows = self.repo.of_request(request_hash, None, "", _UNSCOPED_ROWS)
            rows = [row for row in rows if row.context.get("recording") == session]
        return sorted(rows, key=lambda row: row.replay_order)

    @operation("reader")
    def resolve_scope(self, scope: str) -> tuple[str, str]:
        """``("cassette", name)`` for an imported cassette's name, else ``("run", run_id)``."""
        if self.repo.of_cassette(scope, limit=1):
            return "cassette", scope
        try:
            return "run", self.tracking.resolve_run_id(scope)
        except NotFound:
            raise NotFound(
                f"no run or imported cassette {scope!r} has recorded LLM calls",
                "give a run id (or prefix) or a name from 'keel llm calls'",
            ) from None

    @operation("reader")
    def scope_rows(self, scope: str) -> list[CallRow]:
        """Every recording of a run or an imported cassette, oldest first."""
        kind, name = self.resolve_scope(scope)
        return self.repo.of_cassette(name) if kind == "cassette" else self.repo.of_run(name)

    @operation("reader")
    def calls(self, run: str | None = None, cassette: str | None = None, limit: int | None = 1000) -> list[CallRow]:
        """Recorded calls of a run, of an imported cassette, or (neither) the newest of the store."""
        if run is not None:
            return self.repo.of_run(self.tracking.resolve_run_id(run), limit)
        if cassette is not None:
            return self.repo.of_cassette(cassette, limit)
        return self.repo.recent(limit)

    @operation("reader")
    def get(self, request_hash: str) -> StoredCall:
        """The newest recording of a request hash (or unique prefix of one)."""
        prefix = request_hash.strip().lower()
        if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix):
            raise InvalidInput(f"invalid request hash {request_hash!r}", "give at least 4 hex digits of a hash")
        rows = self.repo.by_prefix(prefix, limit=50)
        if not rows:
            raise NotFound(f"no recorded LLM call with request hash {prefix}", "list them with 'keel llm calls'")
        if len({r.request_hash for r in rows}) > 1:
            raise InvalidInput(f"request hash prefix {prefix} is ambiguous", "give more digits")
        return self.read(rows[0])

    @operation("reader")
    def closest(
        self, endpoint: str, request: Mapping[str, Any], rows: Iterable[CallRow] | None = None
    ) -> Closest | None:
        """The recorded request most like ``request`` (same endpoint; same model first).

        ``rows`` limits the search to a replay scope; otherwise the store's newest recordings."""
        model = request.get("model")
        if rows is not None:
            pool = [r for r in rows if r.endpoint == endpoint]
            same = [r for r in pool if r.model == model]
            candidates = (same or pool)[-_CLOSEST_CANDIDATES:]
        else:
            candidates = self.repo.candidates(endpoint, str(model) if model else None, _CLOSEST_CANDIDATES)
            if not candidates:
                candidates = self.repo.candidates(endpoint, None, _CLOSEST_CANDIDATES)
        best: tuple[float, CallRow, dict[str, Any]] | None = None
        seen: set[str] = set()
        for row in candidates:
            if row.request_hash in seen:
                continue
            seen.add(row.request_hash)
            try:
                recorded = self.read(row).request
            except Exception:  # noqa: BLE001 - a missing object only makes it a worse candidate
                continue
            score = request_similarity(request, recorded)
            if best is None or score > best[0]:
                best = (score, row, recorded)
        if best is None:
            return None
        score, row, recorded = best
        return Closest(row.request_hash, row.model, row.source, score, request_diff(request, recorded))

    # -- cassette files ----------------------------------------------------------
    def export(self, path: str | os.PathLike[str], run: str | None = None, cassette: str | None = None) -> int:
        """Write recordings (one run's, one imported cassette's, or all) to a JSONL cassette file."""
        if run is not None:
            rows = self.repo.of_run(self.tracking.resolve_run_id(run))
            source = {"run_id": rows[0].run_id if rows else run}
        elif cassette is not None:
            rows = self.repo.of_cassette(cassette)
            source = {"cassette": cassette}
        else:
            rows = list(reversed(self.repo.recent()))
            source = {}
        if not rows:
            raise NotFound("no recorded LLM calls to export", "record some first, or check the run / cassette name")
        target = Path(path)

        def write(out: TextIO) -> None:
            header = {"keel_cassette": 1, "calls": len(rows), "exported_at": now_ms(), **source}
            out.write(json.dumps(header, sort_keys=True) + "\n")
            for row in rows:
                out.write(json.dumps(self.read(row).to_dict(), sort_keys=True, ensure_ascii=False) + "\n")

        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, write, text=True)
        except OSError as exc:
            raise StoreError(
                f"cannot write {target}: {exc.strerror or exc}", "check the path and its permissions"
            ) from exc
        return len(rows)

    def import_(self, path: str | os.PathLike[str], name: str | None = None) -> Cassette:
        """Load a JSONL cassette file as cassette ``name`` (default: the file's stem).

        Importing the same file again is a no-op; another file under a name in use is refused."""
        source = Path(path)
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise NotFound(f"cannot read cassette file {source}: {exc.strerror}", "check the path") from None
        name = check_name(name or source.stem, "cassette name")
        version = hash_bytes(data)[:16]
        lines = data.decode("utf-8").splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
        except ValueError:
            header = {}
        if not isinstance(header, dict) or header.get("keel_cassette") != 1:
            raise InvalidInput(
                f"{source} is not a keel cassette file (no keel_cassette header line)",
                "create one with 'keel llm export --run RUN --to FILE'",
            )
        existing = self.repo.of_cassette(name, limit=1)
        if existing:
            if existing[0].context.get("cassette_version") == version:
                return Cassette(name, version, len(self.repo.of_cassette(name)), False)
            raise AlreadyExists(
                f"cassette {name!r} exists already with other content", "import it under another name (--name)"
            )
        rows: list[list[Any]] = []
        contents: list[dict[str, Any]] = []
        for number, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                endpoint = str(item["endpoint"])
                request = dict(item["request"])
            except (ValueError, KeyError, TypeError) as exc:
                raise InvalidInput(f"{source} line {number} is not a recorded call: {exc}", "re-export it") from None
            item = normalize(item)  # parsed JSON may hold NaN / Infinity
            content: dict[str, Any] = {"endpoint": endpoint, "request": redact_mapping(normalize(request))}
            if item.get("chunks") is not None:
                content["chunks"] = item["chunks"]
                content["chunk_type"] = item.get("chunk_type")
            content["response"] = item.get("response")
            content["response_type"] = item.get("response_type")
            context = dict(item.get("context") or {})
            context["cassette_version"] = version
            if item.get("run_id"):
                context["source_run"] = item["run_id"]
            rows.append(
                [
                    _imported_hash(endpoint, request, item.get("request_hash")),
                    endpoint,
                    str(item.get("model") or request.get("model") or "")[:200],
                    "",
                    len(contents),
                    None,
                    name,
                    int(item.get("created_at") or now_ms()),
                    item.get("latency_ms"),
                    item.get("input_tokens"),
                    item.get("output_tokens"),
                    item.get("cost"),
                    item.get("system_fingerprint"),
                    bool(item.get("streamed")),
                    json.dumps(redact_mapping(context), sort_keys=True),
                    _occurrence(item.get("occurrence"), source, number),
                ]
            )
            contents.append(content)
        if not rows:
            raise InvalidInput(f"{source} holds no recorded calls", "export a run that recorded calls")
        oid = self._put_pack(contents)
        for row in rows:
            row[3] = oid
        self.repo.insert([tuple(row) for row in rows])
        return Cassette(name, version, len(rows), True)

    @operation("reader")
    def cassettes(self) -> list[tuple[str, int]]:
        """Imported cassettes with their call counts."""
        return self.repo.cassettes()

    # -- erasure -------------------------------------------------------------------------------
    @operation("writer")
    def delete_calls(
        self,
        ids: list[int] | None = None,
        filter: str | None = None,  # noqa: A002 - the word the other erasures use
        since: Any = None,
        until: Any = None,
        run_id: str | None = None,
        *,
        all: bool = False,  # noqa: A002 - the word the other erasures use
        dry_run: bool = False,
        who: str = "",
        reason: str = "request",
    ) -> ErasureReport:
        """Erase recorded calls: by ``ids`` (``llm_calls`` ids, as ``keel llm calls --json``
        lists them), by ``run_id`` (a run id or prefix), by ``filter`` (the filter language
        over ``endpoint``, ``model``, ``request_hash``, ``run_id``, ``cassette``, ``created_at``,
        tokens, ``cost``, ``metadata.<key>`` and ``context.<key>``) and by a time range
        ``since``/``until`` on when they were recorded (``until`` exclusive); what is given is
        combined with AND. ``all=True`` is required when nothing selects (every call) or the
        selection matches every recorded call.

        The rows go, and so do their requests and responses: each pack that held one is
        written again without them, the calls it still holds move to the new pack in the
        transaction that deletes the erased rows and writes the ``erasures`` audit row, and the
        old pack objects are deleted at once (then the database is scrubbed:
        :meth:`~keel.meta.engine.Database.scrub`). ``derived`` lists what lineage says was made
        from the erased calls: runs that replayed them and cassettes imported from an erased
        run's export (kept as they are: read the report). Cassette files exported to disk are
        outside the store. ``dry_run`` counts and lists, and changes nothing.
        """
        if reason not in REASONS:
            raise InvalidInput(f"invalid erasure reason {reason!r}", f"use one of {', '.join(REASONS)}")
        if ids is not None and any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
            raise InvalidInput("recorded call ids are integers", "take them from 'keel llm calls --json' (field id)")
        node = parse_filter(filter, FILTER_PREFIXES, "attributes") if filter else None
        run = self._erased_run(run_id) if run_id is not None else None
        query = self.repo.compile(
            node,
            None if since is None else parse_time(since),
            None if until is None else parse_time(until),
            run,
        )
        if ids is None and not query.sql and not all:
            raise InvalidInput(
                "nothing selects which recorded LLM calls to erase: that would erase every one",
                "give ids, a run, a filter or a time range, or all=True (keel llm delete --all) to erase them all",
            )
        wanted = sorted(set(ids)) if ids is not None else None
        if wanted:
            missing = sorted(set(wanted) - self.repo.present_ids(wanted))
            if missing:
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise NotFound(
                    f"no recorded LLM call with id {missing[0]}{more}: nothing was erased",
                    "list the ids with 'keel llm calls --json' (field id)",
                )
        rows = self.repo.matching(query, wanted) if wanted is None or wanted else []
        if rows and not all and len(rows) >= self.repo.total():
            raise InvalidInput(
                f"the selection matches every recorded LLM call ({len(rows):,}): nothing was erased",
                "narrow it, or pass all=True (keel llm delete --all) to erase them all",
            )
        derived = self._derived(rows)
        report = ErasureReport("llm_calls", len(rows), 0, dry_run=dry_run, derived=derived)
        if dry_run:
            return report
        audit = {
            "kind": "llm_calls",
            "actor": audit_who(who),
            "filter": self._described(filter, run, since, until),
            "ids": len(wanted or ()),
            "reason": reason,
        }
        for attempt in range(1, _ERASE_ATTEMPTS + 1):
            try:
                if attempt > 1:  # what the selection matches now
                    rows = self.repo.matching(query, wanted) if wanted is None or wanted else []
                erased = self._erase_once(rows, audit)
                break
            except Changed:  # a concurrent erasure moved or removed calls of the same packs
                if attempt == _ERASE_ATTEMPTS:
                    raise Conflict(
                        "recorded LLM calls kept changing under this erasure (other erasures ran at the same time)",
                        "run it again",
                    ) from None
        report.matched, report.deleted, report.objects_removed, report.bytes_freed, report.audit_id = erased
        self.store.db.scrub()
        return report

    def _erased_run(self, run_id: str) -> str:
        """The run whose calls to erase: a run id as recorded (even of a purged run), else a
        run id or unique prefix of a stored run."""
        if self.repo.has_run(run_id):
            return run_id
        return self.tracking.resolve_run_id(run_id)

    @staticmethod
    def _described(filter: str | None, run: str | None, since: Any, until: Any) -> str:  # noqa: A002
        """The selection as the audit row keeps it (never the ids, never content)."""
        parts = [filter] if filter else []
        if run:
            parts.append(f"run_id = '{run}'")
        if since is not None:
            parts.append(f"since {since}")
        if until is not None:
            parts.append(f"until {until}")
        return " AND ".join(parts)

    def _derived(self, rows: list[tuple[int, str, int, str | None, str]]) -> list[dict[str, str]]:
        """What lineage links to the calls ``rows`` (:meth:`RawLlmCalls.matching`): runs that
        replayed the cassette they belong to (``cassette:<run_id>`` or
        ``cassette:<name>@<version>``), and imported cassettes made from an export of a run
        whose calls are erased, which hold copies the selection leaves."""
        runs = sorted({run for _, _, _, run, _ in rows if run})
        names = sorted({cassette for _, _, _, run, cassette in rows if not run and cassette})
        found: dict[tuple[str, str, str], dict[str, str]] = {}

        def add(kind: str, name: str, version: str, why: str) -> None:
            found.setdefault((kind, name, version), {"kind": kind, "id": name, "version": version, "why": why})

        for run in runs:
            for user in self.tracking.repo.runs_with_entity(EntityRef(CASSETTE_KIND, run), "input"):
                add("run", user, "", f"replayed recorded LLM calls of run {run}")
        for name in names:
            first = self.repo.of_cassette(name, limit=1)
            version = str(first[0].context.get("cassette_version", "")) if first else ""
            for user in self.tracking.repo.runs_with_entity(EntityRef(CASSETTE_KIND, name, version), "input"):
                add("run", user, "", f"replayed imported cassette {name}@{version}")
        if runs:
            erased = {row[0] for row in rows}
            for row_id, name, version, source in self.repo.copies(runs):
                if row_id not in erased:
                    add(
                        "cassette", name, version, f"imported from an export of run {source}: holds copies of its calls"
                    )
        return [found[key] for key in sorted(found)]

    def _erase_once(
        self, rows: list[tuple[int, str, int, str | None, str]], audit: dict[str, Any]
    ) -> tuple[int, int, int, int, int]:
        """One attempt to erase ``rows`` (:meth:`RawLlmCalls.matching`): plan, write the new
        packs, commit, delete the old packs; ``(matched, deleted, objects removed, bytes
        freed, audit id)``."""
        erase = {row[0] for row in rows}
        packs = sorted({row[1] for row in rows})
        held = self.repo.of_packs(packs)
        if not erase <= {row[0] for row in held}:
            raise Changed  # a concurrent erasure moved or removed some since they were matched
        kept: dict[str, list[tuple[int, int]]] = {}
        for row_id, oid, part in held:
            if row_id not in erase:
                kept.setdefault(oid, []).append((part, row_id))
        # Whole old packs are grouped into new packs of about _REWRITE_CALLS calls: fewer
        # objects to write (and to list later) than one new pack per old one.
        groups: list[list[tuple[str, list[tuple[int, int]]]]] = [[]]
        size = 0
        for oid in sorted(kept):
            if size >= _REWRITE_CALLS:
                groups.append([])
                size = 0
            groups[-1].append((oid, sorted(kept[oid])))
            size += len(kept[oid])
        moves: dict[int, tuple[str, int]] = {}
        written: list[str] = []
        try:
            # Parsing and encoding packs holds the interpreter's lock: threads only help where
            # reads and writes wait on the network (S3, a keel server). On a local disk one
            # thread was faster (100,000 calls: 7.7 s against 10.6 s with four).
            local = self.objects.capabilities.local_path
            jobs = max(1, min(1 if local else self.objects.capabilities.transfer_jobs, len(groups)))
            with ThreadPoolExecutor(jobs, thread_name_prefix="keel-erase") as pool:
                for new, order in pool.map(lambda group: self._rewrite(group, written), groups if kept else []):
                    for part, row_id in enumerate(order):
                        moves[row_id] = (new, part)
            plan = ErasePlan(sorted(erase), moves, {row_id: (oid, part) for row_id, oid, part in held})
            audit_id = self.repo.erase(plan, {**audit, "matched": len(rows), "deleted": len(erase)})
        except BaseException:
            with contextlib.suppress(Exception):  # the error to report is the first one
                self._drop_packs(written)  # nothing points at them: the transaction did not commit
            raise
        try:
            removed, freed = self._drop_packs(packs)
        except Exception as exc:  # the rows are erased (committed): say what is left, and where
            with contextlib.suppress(Exception):
                self.store.db.scrub()
            raise StoreError(
                f"the {len(erase):,} recorded LLM calls are erased from the database, but the {len(packs):,} "
                f"pack objects that held them could not all be deleted: {exc}",
                "run 'keel gc' once the object store answers again: nothing references those packs any more",
            ) from exc
        if removed:
            self.repo.audit_objects(audit_id, removed, freed)
        return len(rows), len(erase), removed, freed, audit_id

    def _rewrite(self, group: list[tuple[str, list[tuple[int, int]]]], written: list[str]) -> tuple[str, list[int]]:
        """One new pack holding the entries ``group`` keeps of its old packs (``(oid, [(part,
        row id), ...])``), its oid appended to ``written``; ``(new oid, the row ids in the
        order of its entries)``."""
        entries: list[dict[str, Any]] = []
        order: list[int] = []
        for oid, kept in group:
            try:
                contents = self.pack(oid)
            except NotFound:
                if oid not in self.repo.referenced([oid]):
                    raise Changed from None  # a concurrent erasure rewrote this pack and deleted it
                raise
            for part, row_id in kept:
                if not 0 <= part < len(contents):
                    raise IntegrityError(f"pack {oid} has no entry {part}", "check the store with 'keel verify'")
                entries.append(contents[part])
                order.append(row_id)
        new = self._put_pack(entries)
        written.append(new)
        return new, order

    def _drop_packs(self, oids: list[str]) -> tuple[int, int]:
        """Delete those of the pack objects ``oids`` that no recorded call points at (forgotten
        by this process's caches too); ``(objects, bytes freed)``."""
        if not oids:
            return 0, 0
        unreferenced = sorted(set(oids) - self.repo.referenced(oids))
        with self._known_lock:
            for oid in unreferenced:
                self._packs.pop(oid, None)
                self._known.pop(oid, None)
        if not unreferenced:
            return 0, 0
        # In parallel: a local unlink of a synced file waits for the disk (~3 ms here with
        # discard), an S3 DeleteObjects request takes at most 1,000 keys.
        size = min(1000, -(-len(unreferenced) // _ERASE_JOBS))
        chunks = [unreferenced[start : start + size] for start in range(0, len(unreferenced), size)]
        with ThreadPoolExecutor(min(_ERASE_JOBS, len(chunks)), thread_name_prefix="keel-erase") as pool:
            freed = sum(pool.map(self.objects.delete_many, chunks))
        return len(unreferenced), freed
