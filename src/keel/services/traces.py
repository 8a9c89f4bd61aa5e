"""Traces: store spans from every source, search them, read a trace's tree, aggregate, export.

Every source ends in :meth:`TraceService.write_batch` (the SDK's background
writer, locally or through a keel server) or :meth:`TraceService.ingest` (the
OTLP and MLflow endpoints): raw spans are normalised here
(:func:`keel.core.traces.normalize_span`), so the server checks what any client
sends; a span that cannot be stored is counted and reported
(:class:`~keel.core.traces.IngestResult`), never allowed to fail the others.
Payloads (inputs, outputs) larger than :data:`INLINE_PAYLOAD_BYTES` go to the
object store and are read back on demand (:meth:`TraceService.payload`).

Projects: spans are written to the project named with them; reads name one
project (``default`` when omitted). The contract checks the caller's role on
every project a batch writes to and on the project a read names.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from keel.core.auth import RANK, REGISTRIES
from keel.core.batch import check_batch_id
from keel.core.conversation_stats import percentile_from_ranks
from keel.core.conversations import parse_time, thumb_name
from keel.core.entities import format_time, project_not_found
from keel.core.erasure import ErasureReport
from keel.core.filters import parse_filter, parse_order_by
from keel.core.limits import MAX_PAGE_SIZE, MAX_SORT_KEYS
from keel.core.llm import DEFAULT_PRICES as LLM_PRICES
from keel.core.llm import call_cost, find_price
from keel.core.names import check_name
from keel.core.redaction import redact_mapping
from keel.core.traces import (
    IngestResult,
    RawSpans,
    Score,
    ScoreRow,
    Span,
    SpanBatch,
    SpanRow,
    Trace,
    TraceDetail,
    TraceStats,
    dumps,
    is_trace_id,
    normalize_score,
    normalize_span,
)
from keel.errors import InvalidInput, KeelError, NotFound
from keel.meta import erasures
from keel.meta.erasures import Found
from keel.meta.traces import FILTER_PREFIXES, RawTraces, TraceQuery
from keel.services.audit import who as audit_who
from keel.services.contract import READABLE, operation, project_scope, projects_scope, service
from keel.services.conversations import write_examples
from keel.services.erasure import check_request, derived_datasets, describe_request, refuse_everything, remove_objects
from keel.services.workspace import Store

__all__ = ["INLINE_PAYLOAD_BYTES", "TraceService", "check_batch_projects", "hide_conversation_feedback"]

#: At most this many trace ids in one erasure by ids (each is resolved; more: erase by a filter).
MAX_TRACE_IDS = 10_000
#: Inputs or outputs larger than this (as JSON) are stored in the object store.
INLINE_PAYLOAD_BYTES = 16 * 1024
_MAX_ERRORS = 5
_PERCENTILES = (50, 95)


def check_batch_projects(services: Any, caller: Any, arguments: dict[str, Any]) -> None:
    """The contract's check of :meth:`TraceService.write_batch`: writer on every project it names."""
    from keel.services.auth import require

    batch = arguments.get("batch")
    if not isinstance(batch, SpanBatch):
        raise InvalidInput("traces.write_batch takes a SpanBatch", "send the batch the SDK builds")
    names = {project for project, _ in batch.spans} | {project for project, _ in batch.scores}
    if not names:  # an empty batch still records its id: only for a writer
        names = {"default"}
    for name in sorted(names, key=str):
        if not isinstance(name, str):
            raise InvalidInput("a span batch names projects by text", "send the batch the SDK builds")
        require(caller, name, "writer")


def _project(name: Any) -> str:
    if name is None:
        return "default"
    return check_name(name, "project")


def _without_secrets(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """``raw`` with secrets masked in its attributes, inputs, outputs and events (by key name and
    by shape: :func:`keel.core.redaction.redact_mapping`), whatever the source or its redactor."""
    if not isinstance(raw, Mapping):
        return raw
    out = dict(raw)
    for key in ("attributes", "inputs", "outputs", "events"):
        value = out.get(key)
        if value is not None and not ((type(value) is dict or type(value) is list) and not value):
            if not isinstance(value, int | float | bool):
                out[key] = redact_mapping(value)
    return out


_COST_AT = SpanRow._fields.index("cost")
_PRICES: dict[str, dict[str, tuple[float, float]]] = {}  # model -> {model: its price} (LLM_PRICES is fixed)


def _cost(model: str, input_tokens: int | None, output_tokens: int | None) -> float | None:
    """:func:`keel.core.llm.call_cost` with each model's price looked up in the table once
    (the lookup tries every listed prefix)."""
    prices = _PRICES.get(model)
    if prices is None:
        price = find_price(model, LLM_PRICES)
        prices = {} if price is None else {model: price}
        if len(_PRICES) < 10_000:
            _PRICES[model] = prices
    return call_cost(model, input_tokens, output_tokens, prices) if prices else None


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def hide_conversation_feedback(services: Any, caller: Any, detail: TraceDetail) -> TraceDetail:
    """The contract's filter of :meth:`TraceService.get`: conversation feedback is shown to
    callers who may read conversations (the reader role on the registries, as
    ``keel.conversations`` requires); others get the trace without it."""
    if caller.rank(REGISTRIES) >= RANK["reader"] or not any(s.source == "conversation" for s in detail.scores):
        return detail
    kept = [s for s in detail.scores if s.source != "conversation"]
    return TraceDetail(detail.trace, detail.spans, kept, detail.links)


@service("traces")
class TraceService:
    """Traces and spans on one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.raw = RawTraces(store.db)

    # -- writing ------------------------------------------------------------------------
    def _rows(self, pairs: Sequence[tuple[str, Mapping[str, Any]]]) -> tuple[list[tuple[str, SpanRow]], list[str]]:
        rows: list[tuple[str, SpanRow]] = []
        errors: list[str] = []
        checked: dict[str, str] = {}
        for project, raw in pairs:
            try:
                name = checked.get(project) if isinstance(project, str) else None
                if name is None:
                    name = checked[project] = _project(project)
                row = normalize_span(_without_secrets(raw))
                if row.cost is None and row.model and (row.input_tokens or row.output_tokens):
                    cost = _cost(row.model, row.input_tokens, row.output_tokens)
                    row = SpanRow._make((*row[:_COST_AT], cost, *row[_COST_AT + 1 :]))  # faster than _replace
                inputs, outputs = row.inputs, row.outputs
                if (inputs is not None and len(inputs) > INLINE_PAYLOAD_BYTES) or (
                    outputs is not None and len(outputs) > INLINE_PAYLOAD_BYTES
                ):
                    row = self._offload(row)
                rows.append((name, row))
            except KeelError as exc:
                errors.append(exc.message)
        return rows, errors

    def _offload(self, row: SpanRow) -> SpanRow:
        """The row with payloads over :data:`INLINE_PAYLOAD_BYTES` moved to the object store."""
        changes: dict[str, str] = {}
        for which in ("inputs", "outputs"):
            text = getattr(row, which)
            if text is not None and len(text) > INLINE_PAYLOAD_BYTES:
                data = text.encode("utf-8")
                oid = self.store.objects.put_bytes(data)
                changes[which] = dumps({"$object": oid, "size": len(data)})
        return row._replace(**changes) if changes else row  # type: ignore[arg-type]

    def _write(
        self, spans: Sequence[tuple[str, Mapping[str, Any]]], scores: Sequence[tuple[str, Any]], batch_id: str | None
    ) -> IngestResult:
        rows, errors = self._rows(spans)
        score_rows: list[tuple[str, ScoreRow]] = []
        for project, raw in scores:
            try:
                score_rows.append((_project(project), normalize_score(raw)))
            except KeelError as exc:
                errors.append(exc.message)
        stored, duplicates = self.raw.write_batch(rows, score_rows, batch_id)
        return IngestResult(stored, duplicates, len(errors), errors[:_MAX_ERRORS])

    @operation("writer", READABLE, check=check_batch_projects)
    def write_batch(self, batch: SpanBatch, batch_id: str | None = None) -> IngestResult:
        """Store a batch of raw spans and scores in one transaction (the SDK's delivery path);
        ``batch_id`` makes a retried batch a no-op (see :mod:`keel.meta.delivered`)."""
        return self._write(batch.spans, batch.scores, check_batch_id(batch_id))

    @operation("writer", project_scope())
    def ingest(self, spans: RawSpans | list[dict[str, Any]], project: str | None = None) -> IngestResult:
        """Store raw spans of one project (the OTLP and MLflow endpoints). A :class:`RawSpans`
        is checked by its shape (each span when stored); a plain list value by value."""
        name = _project(project)
        items = spans.spans if isinstance(spans, RawSpans) else spans
        return self._write([(name, raw) for raw in items], (), None)

    @operation("writer", project_scope())
    def feedback(
        self,
        trace_id: str,
        key: str = "feedback",
        value: float | bool | None = None,
        label: str | None = None,
        comment: str | None = None,
        span_id: str | None = None,
        source: str = "api",
        project: str | None = None,
    ) -> None:
        """Add feedback or a score to a stored trace (NotFound when the project has no such trace)."""
        name = _project(project)
        full = self.resolve(trace_id, name)
        raw = {
            "trace_id": full,
            "span_id": span_id,
            "key": key,
            "value": value,
            "label": label,
            "comment": comment,
            "source": source,
        }
        self.raw.write_batch((), [(name, normalize_score(raw))])

    # -- reading ------------------------------------------------------------------------
    def _project_id(self, project: str | None) -> int:
        name = _project(project)
        pid = self.raw.project_id(name)
        if pid is None:
            raise project_not_found(name)
        return pid

    def query(
        self, project: str | None = None, filter: str | None = None, since: Any = None, until: Any = None
    ) -> TraceQuery:
        """Compile a filter and a time range (datetimes, epoch s/ms, ISO text or '7d') in one project."""
        node = parse_filter(filter, FILTER_PREFIXES, "attributes") if filter else None
        return self.raw.compile(
            self._project_id(project),
            node,
            None if since is None else parse_time(since),
            None if until is None else parse_time(until),
        )

    def _trace(self, row: Sequence[Any], project: str) -> Trace:
        return Trace(
            row[0],
            project,
            row[1],
            row[2],
            int(row[3]),
            int(row[4]),
            float(row[5]),
            row[6],
            int(row[7]),
            int(row[8]),
            None if row[9] is None else int(row[9]),
            None if row[10] is None else int(row[10]),
            row[11],
            row[12],
            row[13],
            row[14],
            row[15],
            row[16],
            json.loads(row[17] or "{}"),
        )

    @operation("reader", project_scope())
    def search(
        self,
        project: str | None = None,
        filter: str | None = None,
        order_by: str | list[str] | None = None,
        since: Any = None,
        until: Any = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Trace]:
        """Matching traces, newest first unless ``order_by`` (``latency desc``, ``cost``, ``time``...).

        ``filter`` is keel's filter language over trace fields (``status = 'error'``,
        ``latency > 2000``, ``conversation_id = 'c1'``, ``tokens.total > 1000``, ``tags.env = 'prod'``),
        span fields true when any span matches (``model = 'gpt-4o'``, ``prompt = 'chat@1.3.0'``,
        ``span.kind = 'retrieval'``) and scores (``feedback.helpful < 0.5``).
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidInput(f"invalid limit {limit!r}", f"give a whole number in 1..{MAX_PAGE_SIZE:,}")
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= 10_000_000:
            raise InvalidInput(f"invalid offset {offset!r}", "give a whole number >= 0")
        name = _project(project)
        query = self.query(name, filter, since, until)
        order = self.raw.order_sql(parse_order_by(order_by, {}, None) if order_by else [])
        return [self._trace(r, name) for r in self.raw.select(query, order, limit, offset)]

    @operation("reader", project_scope())
    def count(self, project: str | None = None, filter: str | None = None, since: Any = None, until: Any = None) -> int:
        """How many traces match."""
        return self.raw.count(self.query(project, filter, since, until))

    @operation("reader", project_scope())
    def resolve(self, trace_id: str, project: str | None = None) -> str:
        """A full trace id from an id or a unique prefix (at least 4 hex digits) in the project."""
        if not isinstance(trace_id, str) or not 4 <= len(trace_id) <= 32:
            raise InvalidInput(f"invalid trace id {trace_id!r}"[:120], "give the trace id or its first 8 characters")
        wanted = trace_id.lower()
        if not all(c in "0123456789abcdef" for c in wanted):
            raise InvalidInput(f"invalid trace id {trace_id!r}", "a trace id is hex digits")
        pid = self._project_id(project)
        found = self.raw.trace_ids(pid, wanted)
        if is_trace_id(wanted) and wanted in found:
            return wanted
        if len(found) == 1 and found[0].startswith(wanted):
            return found[0]
        if len(found) > 1:
            raise InvalidInput(f"trace id prefix {trace_id!r} is ambiguous", "give more characters")
        raise NotFound(f"no trace {trace_id!r} in project {_project(project)!r}", "list traces with 'keel traces list'")

    @operation("reader", project_scope(), filter=hide_conversation_feedback)
    def get(self, trace_id: str, project: str | None = None) -> TraceDetail:
        """A trace with its spans, scores and the versions it used (NotFound if unknown).

        The feedback given on the trace's conversation (``keel.conversations.feedback``, or
        logged with its records) is among the scores, with source ``conversation``: read from
        the conversation when the trace is read, so feedback given after the trace shows too.
        """
        detail = self._detail(trace_id, project)
        conversation = detail.trace.conversation_id
        if not conversation:
            return detail
        given = _conversation_scores(self.raw.conversation_feedback(conversation))
        if not given:
            return detail
        scores = sorted([*detail.scores, *given], key=lambda s: s.created_at)
        return TraceDetail(detail.trace, detail.spans, scores, detail.links)

    def _detail(self, trace_id: str, project: str | None = None) -> TraceDetail:
        """A trace as stored: its spans, its own scores and links."""
        name = _project(project)
        full = self.resolve(trace_id, name)
        pid = self._project_id(name)
        summary, rows = self.raw.trace(pid, full)
        if summary is None:  # pragma: no cover - resolved just above
            raise NotFound(f"no trace {trace_id!r}", "list traces with 'keel traces list'")
        spans = [
            Span(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                int(r[7]),
                int(r[8]),
                r[9],
                None if r[10] is None else int(r[10]),
                None if r[11] is None else int(r[11]),
                r[12],
                r[13],
                r[14],
                r[15],
                r[16],
                json.loads(r[17] or "{}"),
                _load(r[18]),
                _load(r[19]),
                _load(r[20]) or [],
                int(r[21]),
            )
            for r in rows
        ]
        scores = [Score(r[1], r[2], r[3], r[4], r[5], r[0], int(r[6])) for r in self.raw.scores(pid, full)]
        return TraceDetail(self._trace(summary, name), spans, scores, self.raw.links(pid, full))

    @operation("reader", project_scope())
    def payload(self, trace_id: str, span_id: str, which: str = "outputs", project: str | None = None) -> Any:
        """A span's inputs or outputs, loaded from the object store when it was stored there."""
        if which not in ("inputs", "outputs"):
            raise InvalidInput(f"which must be 'inputs' or 'outputs', not {which!r}", "")
        detail = self._detail(trace_id, project)
        for span in detail.spans:
            if span.span_id == span_id:
                value = getattr(span, which)
                if isinstance(value, dict) and set(value) == {"$object", "size"}:
                    return json.loads(self.store.objects.get_bytes(str(value["$object"])).decode("utf-8"))
                return value
        raise NotFound(f"no span {span_id!r} in trace {detail.trace.trace_id}", "see 'keel traces show TRACE'")

    @operation("reader", project_scope())
    def stats(
        self,
        project: str | None = None,
        by: str | list[str] = "day",
        filter: str | None = None,
        since: Any = None,
        until: Any = None,
    ) -> list[TraceStats]:
        """Per group: count, errors and error rate, latency avg/p50/p95, tokens, cost.

        ``by``: ``day``, ``name``, ``status``, ``run_id``, ``conversation_id``, ``user_id``
        (traces), or ``model``, ``prompt``, ``kind`` (the spans with that field). Largest first.
        """
        groups = [by] if isinstance(by, str) else list(by)
        if not groups or len(groups) > MAX_SORT_KEYS or not all(isinstance(g, str) for g in groups):
            raise InvalidInput(f"stats groups by 1-{MAX_SORT_KEYS} names, got {by!r}"[:200], "e.g. by='model'")
        query = self.query(project, filter, since, until)
        n = len(groups)
        found: dict[tuple[Any, ...], TraceStats] = {}
        for row in self.raw.aggregate(query, groups):
            key = tuple(_group_value(g, v) for g, v in zip(groups, row[:n], strict=True))
            count, errors, latency, tokens_in, tokens_out, cost, first, last = row[n:]
            found[key] = TraceStats(
                dict(zip(groups, key, strict=True)),
                int(count),
                int(errors or 0),
                float(latency) / int(count) if latency is not None and count else None,
                None,
                None,
                int(tokens_in or 0),
                int(tokens_out or 0),
                float(cost or 0.0),
                None if first is None else int(first),
                None if last is None else int(last),
            )
        ranks: dict[tuple[Any, ...], tuple[int, dict[int, float]]] = {}
        for row in self.raw.latency_ranks(query, groups, _PERCENTILES):
            key = tuple(_group_value(g, v) for g, v in zip(groups, row[:n], strict=True))
            ranks.setdefault(key, (int(row[n]), {}))[1][int(row[n + 1])] = float(row[n + 2])
        for key, (count, values) in ranks.items():
            stats = found.get(key)
            if stats is not None:
                stats.latency_p50_ms = percentile_from_ranks(count, 50, values)
                stats.latency_p95_ms = percentile_from_ranks(count, 95, values)
        return sorted(found.values(), key=lambda s: (-s.count, [str(v) for v in s.group.values()]))

    @operation("reader", projects_scope())
    def used_by(
        self,
        kind: str,
        name: str,
        version: str | None = None,
        limit: int = 100,
        projects: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Traces whose spans used a version (``prompt``, ``chat``, ``1.3.0``; any version: None),
        newest first: ``{"project", "trace_id", "start_ns"}``.

        ``projects`` narrows the search; on a server, none means every project the caller
        may read (the contract's ``projects_scope`` fills them in), so traces of other
        projects are never returned.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidInput(f"invalid limit {limit!r}", f"give a whole number in 1..{MAX_PAGE_SIZE:,}")
        names = None if projects is None else [_project(p) for p in projects]
        return [
            {"project": p, "trace_id": t, "start_ns": s}
            for p, t, s in self.raw.used_by(kind, name, version, limit, names)
        ]

    @operation("admin")
    def prune(self, older_than: str) -> dict[str, int]:
        """Apply a retention cutoff: spans that started before it and traces whose last span
        ended before it are removed (PostgreSQL drops whole monthly partitions). ``older_than``:
        a duration (``30d``, ``12w``) or a time (``2026-01-01``)."""
        if not isinstance(older_than, str) or not older_than.strip():
            raise InvalidInput(f"invalid retention {older_than!r}", "e.g. older_than='30d' or '2026-01-01'")
        cutoff_ms = parse_time(older_than)
        return self.raw.partitions.prune(cutoff_ms * 1_000_000).to_dict()

    # -- erasure -------------------------------------------------------------------------
    @operation("writer", project_scope())
    def delete(
        self,
        project: str | None = None,
        ids: list[str] | None = None,
        filter: str | None = None,
        since: Any = None,
        until: Any = None,
        *,
        all: bool = False,  # noqa: A002 - the request's word (--all)
        dry_run: bool = False,
        who: str = "",
        reason: str = "request",
    ) -> ErasureReport:
        """Erase traces of one project: by ``ids`` (full ids or unique prefixes), or those a
        ``filter`` and time range match (``"user_id = 'u-42'"``, ``conversation_id = 'c1'``,
        ``until='30d'``: traces that started before).

        Their spans, scores and version links go with them, and the span payloads stored
        as objects (large inputs and outputs) that no remaining record references are
        deleted from the object store at once. One audit row stays (who, when, the filter or
        the number of ids, the counts; never the content) and the database is scrubbed (see
        docs/erasure.md). Refused with nothing deleted: an unknown id (NotFound), a filter or
        time range that matches every trace of the project unless ``all``, ids mixed with a
        filter. ``dry_run`` only counts and lists the dataset versions made from the traces.
        """
        name = _project(project)
        listed = check_request("traces", ids, filter, since, until, reason)
        if listed is not None:
            if len(listed) > MAX_TRACE_IDS:
                raise InvalidInput(
                    f"{len(listed):,} trace ids in one erasure", f"give at most {MAX_TRACE_IDS:,}, or erase by a filter"
                )
            full = [self.resolve(trace_id, name) for trace_id in listed]
            pid = self._project_id(name)
            query = self.raw.ids_query(pid, sorted(set(full)))
        else:
            if filter is None and since is None and until is None and not all:
                raise InvalidInput(
                    "no traces named: give ids, a filter or a time range; nothing was deleted",
                    "pass all=True (--all) to erase every trace of the project",
                )
            query = self.query(name, filter, since, until)

        def decide(found: Found) -> list[dict[str, str]]:
            if listed is None:
                refuse_everything("trace", found.matched, found.total, all, f"project {name!r}")
            return derived_datasets(self.store, found.earliest, found.ids, _example_trace)

        if dry_run:
            matched, total, earliest = self.raw.erasure_scope(query)
            found = Found(matched, total, earliest, functools.partial(self.raw.matching_ids, query))
            return ErasureReport("traces", matched, 0, dry_run=True, derived=decide(found))
        text = describe_request(listed, filter, since, until)

        def audit(conn: Any, matched: int, deleted: int) -> int:
            return erasures.record(
                conn,
                kind="traces",
                actor=audit_who(who),
                scope=name,
                filter=text,
                ids=len(listed or ()),
                matched=matched,
                deleted=deleted,
                reason=reason,
            )

        deleted, oids, audit_id, derived = self.raw.erase(query, decide, audit)
        removed, freed = remove_objects(self.store, oids)
        if removed:
            with self.store.db.write() as conn:
                erasures.update_objects(conn, audit_id, removed, freed)
        self.store.db.scrub()
        return ErasureReport("traces", deleted, deleted, removed, freed, derived=derived, audit_id=audit_id)

    # -- export -------------------------------------------------------------------------
    @operation("reader", project_scope())
    def examples(
        self,
        project: str | None = None,
        filter: str | None = None,
        span: str | None = None,
        since: Any = None,
        until: Any = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Matching traces as evaluation examples: ``{"input", "output", "metadata"}`` of the root
        span, or of the first span named ``span`` in each trace (traces without one are skipped)."""
        return list(self.iter_examples(project, filter, span, since, until, limit))

    def iter_examples(
        self,
        project: str | None = None,
        filter: str | None = None,
        span: str | None = None,
        since: Any = None,
        until: Any = None,
        limit: int = 1000,
    ) -> Iterator[dict[str, Any]]:
        """What :meth:`examples` returns, one at a time."""
        name = _project(project)
        written = 0
        offset = 0
        while written < limit:
            page = self.search(name, filter, None, since, until, min(500, MAX_PAGE_SIZE), offset)
            if not page:
                return
            offset += len(page)
            for trace in page:
                detail = self._detail(trace.trace_id, name)  # its own scores (not its conversation's)
                chosen = next(
                    (s for s in detail.spans if (s.name == span if span else s.span_id == trace.root_span_id)),
                    None,
                )
                if chosen is None:
                    continue
                yield {
                    "input": self.payload(trace.trace_id, chosen.span_id, "inputs", name),
                    "output": self.payload(trace.trace_id, chosen.span_id, "outputs", name),
                    "metadata": {
                        "trace_id": trace.trace_id,
                        "span": chosen.name,
                        "model": chosen.model or trace.model,
                        "prompt": chosen.prompt or trace.prompt,
                        "run_id": trace.run_id,
                        "conversation_id": trace.conversation_id,
                        "status": chosen.status,
                        "time": format_time(trace.start_ns // 1_000_000),
                        "scores": {s.key: s.value if s.value is not None else s.label for s in detail.scores},
                    },
                }
                written += 1
                if written >= limit:
                    return

    def export(
        self,
        path: str | os.PathLike[str],
        project: str | None = None,
        filter: str | None = None,
        span: str | None = None,
        since: Any = None,
        until: Any = None,
        limit: int = 100_000,
    ) -> int:
        """Write matching traces as an evaluation dataset (JSON Lines, atomically); the line count."""
        target = Path(path)
        if target.is_dir():
            raise InvalidInput(f"{target} is a folder", "give a file name, e.g. dataset.jsonl")
        if not target.parent.is_dir():
            raise NotFound(f"folder {target.parent} does not exist", "create it first")
        return write_examples(target, self.iter_examples(project, filter, span, since, until, limit))


def _conversation_scores(rows: Sequence[tuple[Any, ...]]) -> list[Score]:
    """Conversation feedback ``(thumb, score, comment, at)`` as trace scores (source
    ``conversation``): a thumb is ``thumb`` (1 up, 0 down, labelled), a score ``score``, a
    comment alone ``comment``; the comment goes with the first of them."""
    out: list[Score] = []
    for thumb, value, comment, at in rows:
        if thumb is not None:
            out.append(Score("thumb", 1.0 if thumb > 0 else 0.0, thumb_name(thumb), comment, "conversation", None, at))
            comment = None
        if value is not None:
            out.append(Score("score", float(value), None, comment, "conversation", None, at))
            comment = None
        if comment is not None:
            out.append(Score("comment", None, None, comment, "conversation", None, at))
    return out


def _group_value(group: str, value: Any) -> Any:
    if group == "day" and value is not None:
        return format_time(int(value) * 86_400_000)[:10]
    return value


def _example_trace(line: Any) -> Any:
    """The trace id an exported example carries (``keel traces export``: ``metadata.trace_id``)."""
    metadata = line.get("metadata") if isinstance(line, dict) else None
    return metadata.get("trace_id") if isinstance(metadata, dict) else None
