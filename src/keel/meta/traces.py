"""Trace rows: idempotent batch appends, per-trace summaries, search, trees and stats in SQL.

Spans arrive in any order and more than once (OTLP exporters retry, the SDK
redelivers a batch whose answer was lost). One batch is one transaction:

1. the batch id is claimed (:mod:`keel.meta.delivered`): a batch written before
   writes nothing;
2. spans already stored (same project, trace and span id) and repeats inside
   the batch are dropped: the first copy wins;
3. the new spans are inserted (multi-row INSERTs on SQLite, ``COPY`` on PostgreSQL);
4. each touched trace's summary row is inserted or updated from the new spans
   alone (earliest start, latest end, counts, tokens, cost, the root's name,
   the first model/prompt/run/conversation/user seen, tags merged), so a late
   span, even one whose parent never comes, is counted exactly once;
5. the versions the spans name become ``trace_links``, and scores are appended.

Reads compile keel's filter language to SQL over the summary rows, with
span-level conditions (``model``, ``prompt``, ``span.kind`` ...) as ``EXISTS``
over the spans index and score conditions over ``trace_scores``. User text
never reaches SQL: every value and key is a bound parameter.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from keel.core.conversations import parse_time
from keel.core.entities import now_ms
from keel.core.filters import And, Comparison, Node, Not, Or, OrderBy
from keel.core.traces import LINK_ATTRIBUTES, LINK_PREFIXES, ScoreRow, SpanRow, links_of
from keel.errors import InvalidInput
from keel.meta.dbapi import Connection
from keel.meta.delivered import claim_batch
from keel.meta.engine import Database
from keel.meta.erasures import Found, erasing, temp_table
from keel.meta.trace_partitions import TracePartitions

__all__ = [
    "FILTER_PREFIXES",
    "GROUPS",
    "SPAN_GROUPS",
    "TRACE_FIELDS",
    "RawTraces",
    "TraceQuery",
    "payload_oids",
]

T = TypeVar("T")

_SPAN_COLUMNS = (
    "project_id, trace_id, span_id, parent_id, name, kind, status, status_message, start_ns, end_ns, "
    "duration_ms, model, input_tokens, output_tokens, cost, prompt, run_id, conversation_id, user_id, "
    "attributes, inputs, outputs, events, flags, created_at"
)
_SPAN_WIDTH = 25
_ROWS_PER_INSERT = 32_000 // _SPAN_WIDTH
_IN_CHUNK = 500
_LOOKUP_TRACES = 50  # known traces of a batch whose new span ids are looked up one trace at a time
_TRACE_COLUMNS = (
    "trace_id, name, root_span_id, start_ns, end_ns, duration_ms, status, span_count, error_count, "
    "input_tokens, output_tokens, cost, model, prompt, run_id, conversation_id, user_id, tags, created_at, updated_at"
)

#: Filter prefixes of trace search: ``span.kind``, ``tags.env``, ``feedback.helpful``, ``tokens.input``.
FILTER_PREFIXES = {
    "span": "span",
    "spans": "span",
    "tags": "tags",
    "tag": "tags",
    "feedback": "scores",
    "score": "scores",
    "scores": "scores",
    "tokens": "tokens",
}
#: Trace-level fields -> (SQL over the summary row ``t``, kind: text, number, time).
TRACE_FIELDS: dict[str, tuple[str, str]] = {
    "trace_id": ("t.trace_id", "text"),
    "id": ("t.trace_id", "text"),
    "name": ("t.name", "text"),
    "status": ("t.status", "text"),
    "latency": ("t.duration_ms", "number"),
    "latency_ms": ("t.duration_ms", "number"),
    "duration": ("t.duration_ms", "number"),
    "duration_ms": ("t.duration_ms", "number"),
    "time": ("t.start_ns", "time"),
    "start": ("t.start_ns", "time"),
    "start_time": ("t.start_ns", "time"),
    "end": ("t.end_ns", "time"),
    "spans": ("t.span_count", "number"),
    "span_count": ("t.span_count", "number"),
    "errors": ("t.error_count", "number"),
    "error_count": ("t.error_count", "number"),
    "cost": ("t.cost", "number"),
    "run": ("t.run_id", "text"),
    "run_id": ("t.run_id", "text"),
    "conversation": ("t.conversation_id", "text"),
    "conversation_id": ("t.conversation_id", "text"),
    "session": ("t.conversation_id", "text"),
    "session_id": ("t.conversation_id", "text"),
    "user": ("t.user_id", "text"),
    "user_id": ("t.user_id", "text"),
}
_TOKENS = {
    "input": ("t.input_tokens", "number"),
    "output": ("t.output_tokens", "number"),
    "total": ("(COALESCE(t.input_tokens, 0) + COALESCE(t.output_tokens, 0))", "number"),
}
#: Span-level fields (true when any span of the trace matches): ``model = 'x'`` or ``span.model = 'x'``.
_SPAN_FIELDS: dict[str, tuple[str, str]] = {
    "name": ("s.name", "text"),
    "kind": ("s.kind", "text"),
    "status": ("s.status", "text"),
    "model": ("s.model", "text"),
    "prompt": ("s.prompt", "text"),
    "prompt_version": ("s.prompt", "text"),
    "latency": ("s.duration_ms", "number"),
    "latency_ms": ("s.duration_ms", "number"),
    "duration_ms": ("s.duration_ms", "number"),
    "cost": ("s.cost", "number"),
    "input_tokens": ("s.input_tokens", "number"),
    "output_tokens": ("s.output_tokens", "number"),
}
_SPAN_SHORTCUTS = {"model", "prompt", "prompt_version", "kind"}
#: ``stats`` groups over traces.
GROUPS = {
    "day": "(t.start_ns / 86400000000000)",
    "name": "t.name",
    "status": "t.status",
    "run_id": "t.run_id",
    "conversation_id": "t.conversation_id",
    "user_id": "t.user_id",
}
#: ``stats`` groups over spans (every span of the matching traces with that field set).
SPAN_GROUPS = {"model": "s.model", "prompt": "s.prompt", "prompt_version": "s.prompt", "kind": "s.kind"}
_ORDER = {
    "time": "t.start_ns",
    "start": "t.start_ns",
    "start_time": "t.start_ns",
    "latency": "t.duration_ms",
    "latency_ms": "t.duration_ms",
    "duration": "t.duration_ms",
    "duration_ms": "t.duration_ms",
    "cost": "t.cost",
    "spans": "t.span_count",
    "errors": "t.error_count",
    "name": "t.name",
    "status": "t.status",
    "tokens": "(COALESCE(t.input_tokens, 0) + COALESCE(t.output_tokens, 0))",
}
_OPS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_TRACE_SELECT = (
    "SELECT t.trace_id, t.name, t.root_span_id, t.start_ns, t.end_ns, t.duration_ms, t.status, t.span_count, "
    "t.error_count, t.input_tokens, t.output_tokens, t.cost, t.model, t.prompt, t.run_id, t.conversation_id, "
    "t.user_id, t.tags, t.created_at, t.updated_at FROM traces t"
)
_SPAN_SELECT = (
    "SELECT trace_id, span_id, parent_id, name, kind, status, status_message, start_ns, end_ns, model, "
    "input_tokens, output_tokens, cost, prompt, run_id, conversation_id, user_id, attributes, inputs, "
    "outputs, events, flags FROM spans"
)


def _hint() -> str:
    return (
        f"filter on {', '.join(sorted(TRACE_FIELDS))}, model, prompt, span.<{'|'.join(sorted(_SPAN_FIELDS))}>, "
        "tokens.input/output/total, tags.<key> or feedback.<key>"
    )


@dataclass
class TraceQuery:
    """A compiled WHERE clause over ``traces t``: ``sql`` with ``?`` placeholders and its ``params``."""

    project_id: int
    sql: str
    params: list[Any]

    def where(self) -> str:
        """`` WHERE t.project_id = ? [AND ...]`` (its first parameter is the project id)."""
        return " WHERE t.project_id = ?" + (f" AND {self.sql}" if self.sql else "")

    def all_params(self) -> list[Any]:
        """The project id, then the filter's parameters."""
        return [self.project_id, *self.params]


#: Span columns with an index of their own (``ix_spans_model``, ``ix_spans_prompt``).
_INDEXED_SPAN_COLUMNS = {"s.model": "model", "s.prompt": "prompt"}
#: A span condition matching fewer spans than this is searched from the span index (see ``_Compiler``).
SPARSE_SPANS = 20_000
#: SQLite: the spans a store holds before the trace tables get planner statistics (``RawTraces._statistics``).
ANALYZE_FROM = 10_000


class _Compiler:
    """Compiles a filter to SQL over ``traces t``.

    A span condition (true when any span of the trace matches) is ``EXISTS`` over the trace's
    spans: with the newest-first order that finds a common model's traces at once, but a rare
    one only after probing every trace of the project. So on SQLite, whose planner cannot know,
    ``model``/``prompt`` ``=``/``in`` conditions that match fewer than :data:`SPARSE_SPANS` spans
    (``sparse`` counts them in the index, bounded) are written as ``t.trace_id IN (...)`` over
    that index instead: the matching traces are looked up, then sorted. PostgreSQL's planner
    chooses between the two itself (it keeps per-value statistics).
    """

    def __init__(self, sqlite: bool, project_id: int = 0, sparse: Any = None) -> None:
        self.sqlite = sqlite
        self.project_id = project_id
        self.sparse = sparse  # (column, values) -> True when few spans match
        self.params: list[Any] = []

    def condition(self, node: Node) -> str:
        if isinstance(node, And):
            return "(" + " AND ".join(self.condition(n) for n in node.items) + ")"
        if isinstance(node, Or):
            return "(" + " OR ".join(self.condition(n) for n in node.items) + ")"
        if isinstance(node, Not):
            return f"(NOT {self.condition(node.item)})"
        return self.comparison(node)

    def _json_text(self, key: str) -> str:
        parts = key.split(".")
        if self.sqlite:
            if any('"' in p for p in parts):
                raise InvalidInput(f"invalid tag key {key!r}", "tag keys used in filters cannot contain '\"'")
            self.params.append("$" + "".join(f'."{p}"' for p in parts))
            return "CAST(json_extract(t.tags, ?) AS TEXT)"
        self.params.append(parts)
        return "(CAST(t.tags AS jsonb) #>> CAST(? AS text[]))"

    def comparison(self, cmp: Comparison) -> str:
        kind, key = cmp.field.kind, cmp.field.key
        if kind == "span" or (kind in (None, "attributes") and key in _SPAN_SHORTCUTS):
            found = _SPAN_FIELDS.get(key)
            if found is None:
                raise InvalidInput(f"unknown span field {key!r}", _hint())
            column = _INDEXED_SPAN_COLUMNS.get(found[0])
            if column is not None and self.sparse is not None and cmp.op in ("=", "in"):
                values = [self.value(found[1], v, key) for v in (cmp.value if cmp.op == "in" else [cmp.value])]
                if self.sparse(column, values):
                    self.params.append(self.project_id)
                    inner = self.simple(found[0], found[1], cmp)
                    return f"t.trace_id IN (SELECT s.trace_id FROM spans s WHERE s.project_id = ? AND {inner})"
            inner = self.simple(found[0], found[1], cmp)
            return (
                "EXISTS (SELECT 1 FROM spans s WHERE s.project_id = t.project_id AND s.trace_id = t.trace_id "
                f"AND {inner})"
            )
        if kind == "scores":
            self.params.append(key)
            inner = self.simple("sc.value", "number", cmp) if cmp.op not in ("is null", "is not null") else "1 = 1"
            exists = (
                "EXISTS (SELECT 1 FROM trace_scores sc WHERE sc.project_id = t.project_id "
                f"AND sc.trace_id = t.trace_id AND sc.key = ? AND {inner})"
            )
            return f"NOT {exists}" if cmp.op == "is null" else exists
        if kind == "tags":
            expr = self._json_text(key)
            return self.simple(expr, "text", cmp)
        if kind == "tokens":
            found = _TOKENS.get(key)
            if found is None:
                raise InvalidInput(f"unknown token count {key!r}", "use tokens.input, tokens.output or tokens.total")
            return self.simple(found[0], found[1], cmp)
        found = TRACE_FIELDS.get(key)
        if found is None:
            raise InvalidInput(f"unknown trace field {key!r}", _hint())
        return self.simple(found[0], found[1], cmp)

    def value(self, kind: str, value: Any, key: str) -> Any:
        if kind == "time":
            return parse_time(value) * 1_000_000
        if kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInput(f"{key} is compared with {value!r}", f"{key} compares with numbers")
            return value
        return value if isinstance(value, str) else json.dumps(value) if isinstance(value, bool) else str(value)

    def simple(self, expr: str, kind: str, cmp: Comparison) -> str:
        op, key = cmp.op, cmp.field.key
        if op == "is null":
            return f"{expr} IS NULL"
        if op == "is not null":
            return f"{expr} IS NOT NULL"
        if op in ("in", "not in"):
            values = [self.value(kind, v, key) for v in cmp.value]
            self.params += values
            return f"{expr} {'NOT IN' if op == 'not in' else 'IN'} ({', '.join('?' for _ in values)})"
        if op.endswith("like"):
            if kind != "text":
                raise InvalidInput(f"'{op}' does not apply to {key!r}", "use =, <, > ...")
            negate = "NOT " if op.startswith("not") else ""
            self.params.append(cmp.value)
            if op.endswith("ilike"):
                return f"{negate}LOWER({expr}) LIKE LOWER(?)"
            return f"{negate}{expr} LIKE ?"
        self.params.append(self.value(kind, cmp.value, key))
        return f"{expr} {_OPS[op]} ?"


def _sum(values: Iterable[int | float | None]) -> Any:
    found = [v for v in values if v is not None]
    return sum(found) if found else None


def _tags(row: SpanRow) -> dict[str, Any]:
    if "keel.tag." not in row.attributes and "mlflow.trace.tag." not in row.attributes:
        return {}
    attributes = json.loads(row.attributes)
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        for prefix in ("keel.tag.", "mlflow.trace.tag."):
            if key.startswith(prefix) and len(key) > len(prefix):
                out[key[len(prefix) :]] = value
    return out


def _summary(rows: list[SpanRow], now: int) -> tuple[Any, ...]:
    """The summary row of a trace's new spans (see the module docstring, step 4)."""
    if len(rows) == 1:  # the usual case of a batch of small traces: the same values, computed directly
        return _summary_of_one(rows[0], now)
    rows = sorted(rows, key=lambda r: r.start_ns)
    root = next((r for r in rows if r.parent_id is None), None)
    start = rows[0].start_ns
    end = max(r.end_ns for r in rows)
    errors = sum(1 for r in rows if r.status == "error")
    llm = [r for r in rows if r.model]
    tags: dict[str, Any] = {}
    for row in rows:
        tags.update(_tags(row))

    def first(attr: str) -> Any:
        return next((getattr(r, attr) for r in rows if getattr(r, attr)), None)

    return (
        rows[0].trace_id,
        (root or rows[0]).name,
        root.span_id if root else None,
        start,
        end,
        (end - start) / 1e6,
        "error" if errors else "ok",
        len(rows),
        errors,
        _sum(r.input_tokens for r in rows),
        _sum(r.output_tokens for r in rows),
        _sum(r.cost for r in rows),
        llm[0].model if llm else None,
        first("prompt"),
        first("run_id"),
        first("conversation_id"),
        first("user_id"),
        json.dumps(tags, separators=(",", ":"), ensure_ascii=False, default=str),
        now,
        now,
    )


def _summary_of_one(r: SpanRow, now: int) -> tuple[Any, ...]:
    errors = 1 if r.status == "error" else 0
    tags = _tags(r)
    return (
        r.trace_id,
        r.name,
        r.span_id if r.parent_id is None else None,
        r.start_ns,
        r.end_ns,
        (r.end_ns - r.start_ns) / 1e6,
        "error" if errors else "ok",
        1,
        errors,
        r.input_tokens,
        r.output_tokens,
        r.cost,
        r.model or None,
        r.prompt or None,
        r.run_id or None,
        r.conversation_id or None,
        r.user_id or None,
        json.dumps(tags, separators=(",", ":"), ensure_ascii=False, default=str) if tags else "{}",
        now,
        now,
    )


#: A span's attributes (JSON text) name a version only if they hold one of these.
_LINK_MARKS = (*(f'"{key}"' for key in LINK_ATTRIBUTES), *(f'"{prefix}' for prefix in LINK_PREFIXES))


def _names_versions(attributes: str) -> bool:
    return "keel." in attributes and any(mark in attributes for mark in _LINK_MARKS)


def _upsert_sql(sqlite: bool) -> str:
    least, greatest = ("MIN", "MAX") if sqlite else ("LEAST", "GREATEST")
    merge = (
        "json_patch(traces.tags, excluded.tags)"
        if sqlite
        else "CAST(CAST(traces.tags AS jsonb) || CAST(excluded.tags AS jsonb) AS TEXT)"
    )

    def add(col: str) -> str:
        return (
            f"{col} = CASE WHEN traces.{col} IS NULL THEN excluded.{col} WHEN excluded.{col} IS NULL "
            f"THEN traces.{col} ELSE traces.{col} + excluded.{col} END"
        )

    values = ", ".join("?" for _ in range(21))
    return (
        f"INSERT INTO traces (project_id, {_TRACE_COLUMNS}) VALUES ({values}) "
        "ON CONFLICT (project_id, trace_id) DO UPDATE SET "
        "name = CASE WHEN excluded.root_span_id IS NOT NULL THEN excluded.name "
        "WHEN traces.root_span_id IS NULL AND excluded.start_ns < traces.start_ns THEN excluded.name "
        "ELSE traces.name END, "
        "root_span_id = COALESCE(excluded.root_span_id, traces.root_span_id), "
        f"start_ns = {least}(traces.start_ns, excluded.start_ns), "
        f"end_ns = {greatest}(traces.end_ns, excluded.end_ns), "
        f"duration_ms = ({greatest}(traces.end_ns, excluded.end_ns) - {least}(traces.start_ns, excluded.start_ns)) "
        "/ 1000000.0, "
        "status = CASE WHEN traces.error_count + excluded.error_count > 0 THEN 'error' ELSE 'ok' END, "
        "span_count = traces.span_count + excluded.span_count, "
        "error_count = traces.error_count + excluded.error_count, "
        f"{add('input_tokens')}, {add('output_tokens')}, {add('cost')}, "
        "model = COALESCE(traces.model, excluded.model), prompt = COALESCE(traces.prompt, excluded.prompt), "
        "run_id = COALESCE(traces.run_id, excluded.run_id), "
        "conversation_id = COALESCE(traces.conversation_id, excluded.conversation_id), "
        "user_id = COALESCE(traces.user_id, excluded.user_id), "
        f"tags = CASE WHEN excluded.tags = '{{}}' THEN traces.tags ELSE {merge} END, "
        "updated_at = excluded.updated_at"
    )


class RawTraces:
    """The trace statements of one database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._upsert = db.sql(_upsert_sql(db.is_sqlite))
        self._multi: str | None = None
        self.partitions = TracePartitions(db)
        self._analyze_after: int | None = None  # spans to write before the next ANALYZE
        self._written = 0  # PostgreSQL: spans this process wrote, and had written at its last ANALYZE
        self._analyzed_at = 0

    # -- projects ---------------------------------------------------------------------
    def _project_id(self, cur: Any, name: str, create: bool) -> int | None:
        # Not cached: a project may be renamed by another process (keel.meta.projects).
        cur.execute(self.db.sql("SELECT id FROM projects WHERE name = ?"), (name,))
        row = cur.fetchone()
        if row is None:
            if not create:
                return None
            cur.execute(
                self.db.sql(
                    "INSERT INTO projects (name, description, created_at) VALUES (?, '', ?) "
                    "ON CONFLICT (name) DO NOTHING"
                ),
                (name, now_ms()),
            )
            cur.execute(self.db.sql("SELECT id FROM projects WHERE name = ?"), (name,))
            row = cur.fetchone()
        return int(row[0])

    def project_id(self, name: str) -> int | None:
        """The id of project ``name``, or None when it does not exist."""
        with self.db.raw_read() as cur:
            return self._project_id(cur, name, create=False)

    # -- writing ----------------------------------------------------------------------
    def write_batch(
        self,
        spans: Sequence[tuple[str, SpanRow]],
        scores: Sequence[tuple[str, ScoreRow]] = (),
        batch_id: str | None = None,
    ) -> tuple[int, int]:
        """Append normalised spans and scores (one transaction): ``(stored, duplicates)``.

        Nothing is written when ``batch_id`` names a batch written before (``(0, 0)``)."""
        now = now_ms()
        stored = duplicates = 0
        if spans and not self.db.is_sqlite:
            self.partitions.ensure({row.start_ns for _, row in spans})  # its own short transactions
        with self.db.raw_write() as cur:
            if not claim_batch(self.db, cur, batch_id):
                return 0, 0
            by_project: dict[str, dict[tuple[str, str], SpanRow]] = {}
            for project, row in spans:
                found = by_project.setdefault(project, {})
                if (row.trace_id, row.span_id) in found:
                    duplicates += 1
                else:
                    found[(row.trace_id, row.span_id)] = row
            for project, found in by_project.items():
                pid = self._project_id(cur, project, create=True)
                assert pid is not None
                rows = self._new_spans(cur, pid, found)
                duplicates += len(found) - len(rows)
                if rows:
                    self._insert_spans(cur, pid, rows, now)
                    self._summarize(cur, pid, rows, now)
                    stored += len(rows)
            if scores:
                values = [(self._project_id(cur, project, create=True), *score) for project, score in scores]
                cur.executemany(
                    self.db.sql(
                        "INSERT INTO trace_scores (project_id, trace_id, span_id, key, value, label, comment, "
                        "source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    ),
                    values,
                )
            if stored:
                self._statistics(cur, stored)
        return stored, duplicates

    def _statistics(self, cur: Any, stored: int) -> None:
        """Keep the planner statistics of the trace tables current: ``ANALYZE`` them once the
        spans table holds :data:`ANALYZE_FROM` rows without statistics, then each time as many
        spans again were written. Without them SQLite orders every filtered search by the
        project's time index (a scan of the project) rather than using the index of the filtered
        column, and PostgreSQL, whose autovacuum never analyzes a partitioned table itself
        (``spans``), misjudges which spans a condition keeps. On SQLite the analysis reads 1,000
        rows per index (a few ms); PostgreSQL samples 30,000 rows."""
        if not self.db.is_sqlite:  # by this process's writes (a server's workers each count theirs)
            self._written += stored
            if self._written < max(ANALYZE_FROM, 2 * self._analyzed_at):
                return
            cur.execute("ANALYZE traces")
            cur.execute("ANALYZE spans")
            self._analyzed_at = self._written
            return
        if self._analyze_after is None:  # the first write of this process: how big, analyzed when?
            cur.execute("SELECT MAX(rowid) FROM spans")
            rows = int(cur.fetchone()[0] or 0)
            cur.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")
            analyzed = 0
            if cur.fetchone()[0]:
                cur.execute("SELECT stat FROM sqlite_stat1 WHERE tbl = 'spans' AND idx IS NOT NULL LIMIT 1")
                found = cur.fetchone()
                analyzed = int(str(found[0]).split()[0]) if found else 0
            self._analyze_after = max(ANALYZE_FROM, analyzed) - max(0, rows - analyzed)
        else:
            self._analyze_after -= stored
        if self._analyze_after > 0:
            return
        cur.execute("PRAGMA analysis_limit=1000")
        cur.execute("ANALYZE traces")
        cur.execute("ANALYZE spans")
        cur.execute("PRAGMA analysis_limit=0")
        cur.execute("SELECT MAX(rowid) FROM spans")
        self._analyze_after = max(ANALYZE_FROM, int(cur.fetchone()[0] or 0))

    def _new_spans(self, cur: Any, pid: int, found: dict[tuple[str, str], SpanRow]) -> list[SpanRow]:
        """The spans of ``found`` not stored yet (only traces already known can hold any)."""
        trace_ids = sorted({trace_id for trace_id, _ in found})
        known: list[str] = []
        for start in range(0, len(trace_ids), _IN_CHUNK):
            chunk = trace_ids[start : start + _IN_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            cur.execute(
                self.db.sql(f"SELECT trace_id FROM traces WHERE project_id = ? AND trace_id IN ({marks})"),
                [pid, *chunk],
            )
            known += [r[0] for r in cur.fetchall()]
        stored: set[tuple[str, str]] = set()
        if not known:
            return list(found.values())
        if len(known) <= _LOOKUP_TRACES:
            # A few known traces (a long trace arriving batch after batch): look up this batch's
            # span ids in each, not every span the trace already has (quadratic over its batches).
            wanted: dict[str, list[str]] = {trace_id: [] for trace_id in known}
            for trace_id, span_id in found:
                if trace_id in wanted:
                    wanted[trace_id].append(span_id)
            for trace_id, span_ids in wanted.items():
                for start in range(0, len(span_ids), _IN_CHUNK):
                    chunk = span_ids[start : start + _IN_CHUNK]
                    marks = ", ".join("?" for _ in chunk)
                    cur.execute(
                        self.db.sql(
                            f"SELECT span_id FROM spans WHERE project_id = ? AND trace_id = ? AND span_id IN ({marks})"
                        ),
                        [pid, trace_id, *chunk],
                    )
                    stored.update((trace_id, r[0]) for r in cur.fetchall())
            return [row for key, row in found.items() if key not in stored]
        for start in range(0, len(known), _IN_CHUNK):
            chunk = known[start : start + _IN_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            cur.execute(
                self.db.sql(f"SELECT trace_id, span_id FROM spans WHERE project_id = ? AND trace_id IN ({marks})"),
                [pid, *chunk],
            )
            stored.update((r[0], r[1]) for r in cur.fetchall())
        return [row for key, row in found.items() if key not in stored]

    def _insert_spans(self, cur: Any, pid: int, rows: list[SpanRow], now: int) -> None:
        values = [
            (
                pid,
                *r[:9],
                (r.end_ns - r.start_ns) / 1e6,
                *r[9:],
                now,
            )
            for r in rows
        ]
        if self.db.is_sqlite:
            size = _ROWS_PER_INSERT
            whole = len(values) - len(values) % size
            if whole:
                if self._multi is None:
                    one = "(" + ", ".join("?" for _ in range(_SPAN_WIDTH)) + ")"
                    self._multi = f"INSERT INTO spans ({_SPAN_COLUMNS}) VALUES " + ", ".join([one] * size)
                for start in range(0, whole, size):
                    cur.execute(self._multi, [v for row in values[start : start + size] for v in row])
            if whole < len(values):
                marks = ", ".join("?" for _ in range(_SPAN_WIDTH))
                cur.executemany(f"INSERT INTO spans ({_SPAN_COLUMNS}) VALUES ({marks})", values[whole:])
            return
        with cur.copy(f"COPY spans ({_SPAN_COLUMNS}) FROM STDIN") as copy:
            for row in values:
                copy.write_row(row)

    def _summarize(self, cur: Any, pid: int, rows: list[SpanRow], now: int) -> None:
        by_trace: dict[str, list[SpanRow]] = {}
        for row in rows:
            by_trace.setdefault(row.trace_id, []).append(row)
        cur.executemany(self._upsert, [(pid, *_summary(spans, now)) for spans in by_trace.values()])
        links = {
            (pid, row.trace_id, kind, entity[:250], version[:200])
            for row in rows
            if _names_versions(row.attributes)
            for kind, entity, version in links_of(json.loads(row.attributes))
        }
        if links:
            cur.executemany(
                self.db.sql(
                    "INSERT INTO trace_links (project_id, trace_id, kind, entity_id, version) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (project_id, trace_id, kind, entity_id, version) DO NOTHING"
                ),
                sorted(links),
            )

    # -- reading ----------------------------------------------------------------------
    def compile(self, project_id: int, node: Node | None, since_ms: int | None, until_ms: int | None) -> TraceQuery:
        """The WHERE clause of a parsed filter and a time range (``until`` exclusive) in one project."""
        sparse = None
        if self.db.is_sqlite:

            def sparse(column: str, values: list[Any]) -> bool:
                return self._matching_spans(project_id, column, values, SPARSE_SPANS) < SPARSE_SPANS

        compiler = _Compiler(self.db.is_sqlite, project_id, sparse)
        parts = []
        if since_ms is not None:
            parts.append("t.start_ns >= ?")
            compiler.params.append(since_ms * 1_000_000)
        if until_ms is not None:
            parts.append("t.start_ns < ?")
            compiler.params.append(until_ms * 1_000_000)
        if node is not None:
            parts.append(compiler.condition(node))
        return TraceQuery(project_id, " AND ".join(parts), compiler.params)

    def _matching_spans(self, project_id: int, column: str, values: list[Any], limit: int) -> int:
        """How many spans of the project have ``column`` in ``values``, counted up to ``limit``
        (an index-only count)."""
        marks = ", ".join("?" for _ in values)
        sql = f"SELECT COUNT(*) FROM (SELECT 1 FROM spans WHERE project_id = ? AND {column} IN ({marks}) LIMIT ?) q"
        with self.db.raw_read() as cur:
            cur.execute(self.db.sql(sql), [project_id, *values, limit])
            return int(cur.fetchone()[0])

    def order_sql(self, order_by: Sequence[OrderBy]) -> str:
        """`` ORDER BY ...`` for parsed sort keys (default: newest first), with the trace id last."""
        parts = []
        for clause in order_by:
            if clause.field.kind not in (None, "attributes") or clause.field.key not in _ORDER:
                raise InvalidInput(
                    f"cannot order traces by {clause.field.key!r}", f"order by {', '.join(sorted(_ORDER))}"
                )
            parts.append(f"{_ORDER[clause.field.key]} {'ASC' if clause.ascending else 'DESC'}")
        if not parts:
            parts.append("t.start_ns DESC")
        return " ORDER BY " + ", ".join(parts) + ", t.trace_id"

    def select(self, query: TraceQuery, order: str, limit: int, offset: int = 0) -> list[tuple[Any, ...]]:
        """Summary rows of matching traces (see ``_TRACE_SELECT`` for the columns)."""
        sql = f"{_TRACE_SELECT}{query.where()}{order} LIMIT ? OFFSET ?"
        with self.db.raw_read() as cur:
            cur.execute(self.db.sql(sql), [*query.all_params(), int(limit), int(offset)])
            return [tuple(r) for r in cur.fetchall()]

    def count(self, query: TraceQuery) -> int:
        """How many traces match."""
        with self.db.raw_read() as cur:
            cur.execute(self.db.sql(f"SELECT COUNT(*) FROM traces t{query.where()}"), query.all_params())
            return int(cur.fetchone()[0])

    def trace(self, project_id: int, trace_id: str) -> tuple[tuple[Any, ...] | None, list[tuple[Any, ...]]]:
        """One trace's summary row (None if unknown) and its spans, by start time."""
        with self.db.raw_read() as cur:
            cur.execute(
                self.db.sql(f"{_TRACE_SELECT} WHERE t.project_id = ? AND t.trace_id = ?"), (project_id, trace_id)
            )
            summary = cur.fetchone()
            if summary is None:
                return None, []
            # sorted here: an ORDER BY lets SQLite's planner pick the project's time index over the
            # trace's own (a scan of the project instead of a lookup of its spans)
            cur.execute(self.db.sql(f"{_SPAN_SELECT} WHERE project_id = ? AND trace_id = ?"), (project_id, trace_id))
            spans = [tuple(r) for r in cur.fetchall()]
            spans.sort(key=lambda r: (r[7], r[1]))  # start_ns, span_id
            return tuple(summary), spans

    def trace_ids(self, project_id: int, prefix: str, limit: int = 2) -> list[str]:
        """Trace ids of the project starting with ``prefix`` (to resolve a short id)."""
        with self.db.raw_read() as cur:
            cur.execute(
                self.db.sql(
                    "SELECT trace_id FROM traces WHERE project_id = ? AND trace_id >= ? AND trace_id < ? "
                    "ORDER BY trace_id LIMIT ?"
                ),
                (project_id, prefix, prefix + "g", limit),
            )
            return [r[0] for r in cur.fetchall()]

    def scores(self, project_id: int, trace_id: str) -> list[tuple[Any, ...]]:
        """``(span_id, key, value, label, comment, source, created_at)`` of one trace, oldest first."""
        with self.db.raw_read() as cur:
            cur.execute(
                self.db.sql(
                    "SELECT span_id, key, value, label, comment, source, created_at FROM trace_scores "
                    "WHERE project_id = ? AND trace_id = ? ORDER BY id"
                ),
                (project_id, trace_id),
            )
            return [tuple(r) for r in cur.fetchall()]

    def links(self, project_id: int, trace_id: str) -> list[tuple[str, str, str]]:
        """``(kind, id, version)`` of the versions a trace's spans used."""
        with self.db.raw_read() as cur:
            cur.execute(
                self.db.sql(
                    "SELECT kind, entity_id, version FROM trace_links WHERE project_id = ? AND trace_id = ? "
                    "ORDER BY kind, entity_id, version"
                ),
                (project_id, trace_id),
            )
            return [tuple(r) for r in cur.fetchall()]  # type: ignore[misc]

    def used_by(
        self, kind: str, entity_id: str, version: str | None, limit: int, projects: Sequence[str] | None = None
    ) -> list[tuple[str, str, int]]:
        """``(project, trace_id, start_ns)`` of traces whose spans used a version (any version: None),
        in the named ``projects`` only (None: every project)."""
        sql = (
            "SELECT p.name, t.trace_id, t.start_ns FROM trace_links l "
            "JOIN traces t ON t.project_id = l.project_id AND t.trace_id = l.trace_id "
            "JOIN projects p ON p.id = l.project_id WHERE l.kind = ? AND l.entity_id = ?"
        )
        params: list[Any] = [kind, entity_id]
        if version is not None:
            sql += " AND l.version = ?"
            params.append(version)
        if projects is not None:
            if not projects:
                return []
            sql += f" AND p.name IN ({', '.join('?' for _ in projects)})"
            params += list(projects)
        sql += " ORDER BY t.start_ns DESC LIMIT ?"
        params.append(int(limit))
        with self.db.raw_read() as cur:
            cur.execute(self.db.sql(sql), params)
            return [(r[0], r[1], int(r[2])) for r in cur.fetchall()]

    def conversation_feedback(self, conversation_id: str, limit: int = 1000) -> list[tuple[Any, ...]]:
        """Feedback on a conversation (the newest ``limit``, oldest first): ``(thumb, score, comment, at)``
        (thumb 1/-1, at in epoch ms) of each ``keel.conversations.feedback`` event, and of the
        feedback logged with a record (``user_feedback``) that no later event changed."""
        sql = (
            "SELECT thumb, score, comment, at, id, 1 FROM conversation_feedback WHERE conversation_id = ? "
            "UNION ALL SELECT thumb, score, comment, timestamp, id, 0 FROM conversations "
            "WHERE conversation_id = ? AND feedback_at IS NULL "
            "AND (thumb IS NOT NULL OR score IS NOT NULL OR comment IS NOT NULL) "
            "ORDER BY 4 DESC, 6 DESC, 5 DESC LIMIT ?"
        )
        with self.db.raw_read() as cur:
            cur.execute(self.db.sql(sql), (conversation_id, conversation_id, int(limit)))
            return [(r[0], r[1], r[2], int(r[3])) for r in reversed(cur.fetchall())]

    def group_expression(self, by: str) -> tuple[str, bool]:
        """The SQL of a ``stats`` group and whether it is span-level."""
        if by in SPAN_GROUPS:
            return SPAN_GROUPS[by], True
        if by in GROUPS:
            return GROUPS[by], False
        raise InvalidInput(f"cannot group traces by {by!r}", f"group by {', '.join(sorted({*GROUPS, *SPAN_GROUPS}))}")

    def _span_source(self, query: TraceQuery, exprs: Sequence[tuple[str, bool]]) -> str:
        """``FROM`` and ``WHERE`` of span-level stats: the spans with their group fields set, of
        the traces the query matches (its parameters: :meth:`TraceQuery.all_params`)."""
        not_null = " AND ".join(f"{expr} IS NOT NULL" for expr, span in exprs if span)
        if not query.sql and all(span for _, span in exprs):
            # every trace of the project: its spans alone (no join; their index serves the groups)
            return f"spans s WHERE s.project_id = ? AND {not_null}"
        # On SQLite the traces come first (CROSS JOIN fixes the order): a time range or a filter
        # keeps few of them, while its planner prefers walking the group's span index over all.
        join = "traces t CROSS JOIN spans s" if self.db.is_sqlite else "traces t JOIN spans s"
        return f"{join} ON t.project_id = s.project_id AND t.trace_id = s.trace_id{query.where()} AND {not_null}"

    def aggregate(self, query: TraceQuery, groups: Sequence[str]) -> list[tuple[Any, ...]]:
        """Per group: count, errors, latency sum, input/output tokens, cost, first/last start (ns).

        Span-level groups (model, prompt, kind) count the spans with that field set, in the
        matching traces; trace-level groups count traces.
        """
        exprs = [self.group_expression(g) for g in groups]
        spans = any(span for _, span in exprs)
        cols = ", ".join(f"{expr} AS g{i}" for i, (expr, _) in enumerate(exprs))
        keys = ", ".join(str(i + 1) for i in range(len(exprs)))
        if spans:
            source = self._span_source(query, exprs)
            measures = (
                "COUNT(*), SUM(CASE WHEN s.status = 'error' THEN 1 ELSE 0 END), SUM(s.duration_ms), "
                "SUM(s.input_tokens), SUM(s.output_tokens), SUM(s.cost), MIN(s.start_ns), MAX(s.start_ns)"
            )
        else:
            source = f"traces t{query.where()}"
            measures = (
                "COUNT(*), SUM(CASE WHEN t.error_count > 0 THEN 1 ELSE 0 END), SUM(t.duration_ms), "
                "SUM(t.input_tokens), SUM(t.output_tokens), SUM(t.cost), MIN(t.start_ns), MAX(t.start_ns)"
            )
        sql = f"SELECT {cols}, {measures} FROM {source} GROUP BY {keys}"
        with self.db.raw_read() as cur:
            cur.execute(self.db.sql(sql), query.all_params())
            return [tuple(r) for r in cur.fetchall()]

    def latency_ranks(self, query: TraceQuery, groups: Sequence[str], pcts: Sequence[int]) -> list[tuple[Any, ...]]:
        """``(group..., n, rank, latency_ms)`` for the ranks the percentiles ``pcts`` need."""
        exprs = [self.group_expression(g) for g in groups]
        spans = any(span for _, span in exprs)
        cols = ", ".join(f"{expr} AS g{i}" for i, (expr, _) in enumerate(exprs))
        names = ", ".join(f"g{i}" for i in range(len(exprs)))
        if spans:
            inner = f"SELECT {cols}, s.duration_ms AS latency FROM {self._span_source(query, exprs)}"
        else:
            inner = f"SELECT {cols}, t.duration_ms AS latency FROM traces t{query.where()}"
        wanted = []
        for pct in pcts:
            wanted += [f"((n - 1) * {int(pct)}) / 100", f"((n - 1) * {int(pct)} + 99) / 100"]
        sql = (
            f"SELECT {names}, n, rn, latency FROM ("
            f"SELECT {names}, latency, ROW_NUMBER() OVER (PARTITION BY {names} ORDER BY latency) - 1 AS rn, "
            f"COUNT(*) OVER (PARTITION BY {names}) AS n FROM ({inner}) q) r WHERE rn IN ({', '.join(wanted)})"
        )
        with self.db.raw_read() as cur:
            cur.execute(self.db.sql(sql), query.all_params())
            return [tuple(r) for r in cur.fetchall()]

    # -- erasing ------------------------------------------------------------------------
    def erasure_scope(self, query: TraceQuery) -> tuple[int, int, int | None]:
        """``(matched, total, earliest created_at)`` of ``query`` in its project (the total: the
        project's traces; the earliest: when the oldest matching trace was first written)."""
        with self.db.raw_read() as cur:
            cur.execute(
                self.db.sql(f"SELECT COUNT(*), MIN(t.created_at) FROM traces t{query.where()}"), query.all_params()
            )
            matched, earliest = cur.fetchone()
            cur.execute(self.db.sql("SELECT COUNT(*) FROM traces WHERE project_id = ?"), (query.project_id,))
            total = int(cur.fetchone()[0])
        return int(matched), total, None if earliest is None else int(earliest)

    def ids_query(self, project_id: int, trace_ids: Sequence[str]) -> TraceQuery:
        """The query of the traces ``trace_ids`` of a project (full ids, resolved by the caller)."""
        if not trace_ids:
            return TraceQuery(project_id, "1 = 0", [])
        return TraceQuery(project_id, f"t.trace_id IN ({', '.join('?' for _ in trace_ids)})", list(trace_ids))

    def matching_ids(self, query: TraceQuery) -> Iterator[str]:
        """The trace ids ``query`` matches, streamed."""
        with self.db.raw_read() as cur:
            cur.execute(self.db.sql(f"SELECT t.trace_id FROM traces t{query.where()}"), query.all_params())
            while True:
                rows = cur.fetchmany(5000)
                if not rows:
                    return
                for row in rows:
                    yield row[0]

    def erase(
        self, query: TraceQuery, decide: Callable[[Found], T], audit: Callable[[Connection, int, int], int]
    ) -> tuple[int, set[str], int, T]:
        """Delete the traces ``query`` matches with their spans, links and scores in one
        transaction: ``(deleted, payload oids, audit id, what decide returned)``; the oids are
        those of the offloaded span payloads (``{"$object": oid}``) the deleted spans held (the
        caller deletes those no remaining record references, once this committed).

        All in SQL: the matching trace ids go to a temporary table first (the filter may test
        spans and scores, deleted next), ``decide(found)`` sees how many matched and how many
        the project holds and may refuse (its exception rolls everything back), then every
        table is deleted by a join on it, and ``audit(conn, matched, deleted)`` writes the
        audit row in the same transaction.
        """
        temp = temp_table(self.db, "keel_erase_traces", "trace_id VARCHAR(32) PRIMARY KEY, created BIGINT")
        pid = query.project_id
        oids: set[str] = set()
        with erasing(self.db) as conn:
            cur = conn.cursor()
            cur.execute(temp.create)
            cur.execute(
                self.db.sql(
                    f"INSERT INTO {temp.name} (trace_id, created) SELECT t.trace_id, t.created_at "
                    f"FROM traces t{query.where()}"
                ),
                query.all_params(),
            )
            cur.execute(f"SELECT COUNT(*), MIN(created) FROM {temp.name}")
            matched, earliest = cur.fetchone()
            cur.execute(self.db.sql("SELECT COUNT(*) FROM traces WHERE project_id = ?"), (pid,))
            total = int(cur.fetchone()[0])

            def found_ids() -> Iterator[str]:
                reader = conn.cursor()
                reader.execute(f"SELECT trace_id FROM {temp.name}")
                for row in reader.fetchall():
                    yield row[0]

            decided = decide(Found(int(matched), total, None if earliest is None else int(earliest), found_ids))
            mine = f"project_id = ? AND trace_id IN (SELECT trace_id FROM {temp.name})"
            cur.execute(
                self.db.sql(f"SELECT inputs, outputs FROM spans WHERE {mine} AND (inputs LIKE ? OR outputs LIKE ?)"),
                (pid, _OBJECT_PAYLOAD, _OBJECT_PAYLOAD),
            )
            for row in cur.fetchall():
                oids.update(payload_oids(row))
            for table in ("spans", "trace_links", "trace_scores"):
                cur.execute(self.db.sql(f"DELETE FROM {table} WHERE {mine}"), (pid,))
            cur.execute(self.db.sql(f"DELETE FROM traces WHERE {mine}"), (pid,))
            deleted = int(cur.rowcount)
            if temp.drop:
                cur.execute(temp.drop)
            audit_id = audit(conn, int(matched), deleted)
        return deleted, oids, audit_id, decided


#: What an offloaded payload's JSON starts with (``keel.services.traces``: ``{"$object": oid, "size": n}``).
_OBJECT_PAYLOAD = '{"$object":%'


def payload_oids(texts: Iterable[str | None]) -> list[str]:
    """The object ids of the offloaded payloads among a span's ``inputs``/``outputs`` texts."""
    out = []
    for text in texts:
        if text and text.startswith('{"$object":'):
            try:
                value = json.loads(text)
            except ValueError:
                continue
            if isinstance(value, dict) and set(value) == {"$object", "size"} and isinstance(value["$object"], str):
                out.append(value["$object"])
    return out
