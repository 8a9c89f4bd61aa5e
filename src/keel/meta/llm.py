"""Rows of ``llm_calls``: the index of recorded LLM calls.

Straight through the driver (:meth:`Database.raw_write` / :meth:`Database.raw_read`):
recording inserts a whole batch with one ``executemany`` and replay preloads a
run's or a cassette's index with one query. The requests and responses
themselves are in pack objects in the object store (``oid``, entry ``part``).

``occurrence`` (migration 0019) numbers identical requests: the n-th call (from 0) with this
request hash in its run (or its sequence / recording session: see :mod:`keel.sdk.llm`). It is
NULL for calls recorded before it existed; those replay in the order they were stored.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.core.filters import Comparison, Field, Node
from keel.errors import InvalidInput
from keel.meta import erasures
from keel.meta.conversations import Query
from keel.meta.conversations import _Compiler as _JsonCompiler
from keel.meta.delivered import claim_batch
from keel.meta.engine import Database

__all__ = ["ATTRIBUTES", "FILTER_PREFIXES", "CallRow", "Changed", "ErasePlan", "Query", "RawLlmCalls"]

_COLUMNS = (
    "id, request_hash, endpoint, model, oid, part, run_id, cassette, created_at, latency_ms, input_tokens, "
    "output_tokens, cost, system_fingerprint, streamed, context, occurrence"
)
_INSERT = (
    "INSERT INTO llm_calls (request_hash, endpoint, model, oid, part, run_id, cassette, created_at, latency_ms, "
    "input_tokens, output_tokens, cost, system_fingerprint, streamed, context, occurrence) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


#: Filterable fields of a recorded call -> (column, kind): kind is text, number or time.
ATTRIBUTES: dict[str, tuple[str, str]] = {
    "id": ("id", "number"),
    "request_hash": ("request_hash", "text"),
    "hash": ("request_hash", "text"),
    "endpoint": ("endpoint", "text"),
    "model": ("model", "text"),
    "run_id": ("run_id", "text"),
    "run": ("run_id", "text"),
    "cassette": ("cassette", "text"),
    "created_at": ("created_at", "time"),
    "time": ("created_at", "time"),
    "timestamp": ("created_at", "time"),
    "latency_ms": ("latency_ms", "number"),
    "latency": ("latency_ms", "number"),
    "input_tokens": ("input_tokens", "number"),
    "output_tokens": ("output_tokens", "number"),
    "cost": ("cost", "number"),
    "system_fingerprint": ("system_fingerprint", "text"),
    "occurrence": ("occurrence", "number"),
}
#: ``metadata.<key>``: what the wrapper's ``metadata=`` / ``extra_keel`` recorded (context
#: ``metadata``); ``context.<key>``: any other context key (``prompt``, ``rag_index_version``,
#: ``sequence``, ``source_run`` of an imported call, ...).
FILTER_PREFIXES: dict[str, str] = {"metadata": "metadata", "meta": "metadata", "context": "context"}
# Ids or oids per ``IN (?, ...)`` list on SQLite (at most 32,766 bound variables since 3.32, 999
# before): each list is one statement, and without an index on the column one scan of the
# table, so they are long. PostgreSQL takes a whole list as one array (``= ANY(?)``).
_SQLITE_IN = 30_000
_SQLITE_IN_OLD = 900
_PG_IN = 100_000


@functools.cache
def _sqlite_in() -> int:
    import sqlite3  # here: the driver is loaded when a database is opened, not with this module

    return _SQLITE_IN if sqlite3.sqlite_version_info >= (3, 32) else _SQLITE_IN_OLD


class _CallCompiler(_JsonCompiler):
    """The conversations' filter compiler (:mod:`keel.meta.conversations`) over ``llm_calls``:
    the same JSON operators on ``context`` (metadata under its ``metadata`` key)."""

    def __init__(self, sqlite: bool) -> None:
        super().__init__(sqlite, document="context")

    def column(self, field: Field, value: Any) -> tuple[str, str]:
        if field.kind == "metadata":  # metadata.user_id -> context $.metadata.user_id
            return super().column(Field("metadata", "metadata." + field.key), value)
        if field.kind == "context":  # context.prompt -> context $.prompt
            return super().column(Field("metadata", field.key), value)
        found = ATTRIBUTES.get(field.key)
        if found is None:
            raise InvalidInput(
                f"unknown recorded call field {field.key!r}",
                f"filter on {', '.join(sorted(ATTRIBUTES))}, metadata.<key> or context.<key>",
            )
        return found


class Changed(Exception):
    """The rows of a pack being rewritten changed since the erasure read them (a concurrent
    erasure): the transaction rolled back; plan again."""


@dataclass
class ErasePlan:
    """One erasure, decided before its transaction: the rows to delete, the rows to move to
    rewritten packs (``id -> (new oid, new part)``) and, to detect a concurrent change, every
    row the affected packs held when it was read (``id -> (oid, part)``)."""

    erase: list[int]
    moves: dict[int, tuple[str, int]]
    expected: dict[int, tuple[str, int]]


@dataclass(frozen=True)
class CallRow:
    """One recorded call as indexed (the request and response are entry ``part`` of pack ``oid``)."""

    id: int
    request_hash: str
    endpoint: str
    model: str
    oid: str
    part: int
    run_id: str | None
    cassette: str
    created_at: int
    latency_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    cost: float | None
    system_fingerprint: str | None
    streamed: bool
    context: dict[str, Any] = field(default_factory=dict)
    occurrence: int | None = None  # the n-th call of this request in its run (None: recorded before 0019)

    @property
    def source(self) -> str:
        """Where the recording came from: its run id, or the imported cassette's name."""
        return self.run_id or self.cassette

    @property
    def replay_order(self) -> tuple[int, int]:
        """Sort key of identical requests on replay: by occurrence, then as stored (old
        recordings, with no occurrence, in the order they were stored)."""
        return (-1 if self.occurrence is None else self.occurrence, self.id)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``id`` is this store's: what ``keel llm delete`` takes)."""
        return {
            "id": self.id,
            "request_hash": self.request_hash,
            "endpoint": self.endpoint,
            "model": self.model,
            "oid": self.oid,
            "part": self.part,
            "run_id": self.run_id,
            "cassette": self.cassette,
            "created_at": self.created_at,
            "latency_ms": self.latency_ms,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost": self.cost,
            "system_fingerprint": self.system_fingerprint,
            "streamed": self.streamed,
            "context": self.context,
            "occurrence": self.occurrence,
        }


def _row(r: Sequence[Any]) -> CallRow:
    return CallRow(
        int(r[0]), r[1], r[2], r[3], r[4], int(r[5]), r[6], r[7], int(r[8]), r[9], r[10], r[11], r[12], r[13],
        bool(r[14]), json.loads(r[15]) if r[15] else {}, None if r[16] is None else int(r[16]),
    )  # fmt: skip


class RawLlmCalls:
    """Insert and query ``llm_calls`` rows."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._insert = db.sql(_INSERT)

    def insert(self, rows: Sequence[tuple[Any, ...]], batch_id: str | None = None) -> None:
        """Insert rows ``(request_hash, endpoint, model, oid, part, run_id, cassette, created_at,
        latency_ms, input_tokens, output_tokens, cost, system_fingerprint, streamed, context_json,
        occurrence)``
        in one transaction (none when ``batch_id`` names a batch already written: see
        :mod:`keel.meta.delivered`)."""
        if not rows:
            return
        with self.db.raw_write() as cur:
            if not claim_batch(self.db, cur, batch_id):
                return
            cur.executemany(self._insert, list(rows))

    def _select(
        self, where: str, params: Sequence[Any], order: str = "id DESC", limit: int | None = None
    ) -> list[CallRow]:
        sql = f"SELECT {_COLUMNS} FROM llm_calls WHERE {where} ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self.db.raw_read() as cur:
            cur.execute(self.db.sql(sql), list(params))
            return [_row(r) for r in cur.fetchall()]

    def by_id(self, row_id: int) -> CallRow | None:
        """One recorded call by its id (None if there is none)."""
        rows = self._select("id = ?", [row_id], limit=1)
        return rows[0] if rows else None

    def latest(self, request_hash: str) -> CallRow | None:
        """The newest recording of a request."""
        rows = self._select("request_hash = ?", [request_hash], limit=1)
        return rows[0] if rows else None

    def of_request(self, request_hash: str, run_id: str | None, cassette: str, limit: int | None) -> list[CallRow]:
        """The recordings of one request in one run (``run_id``), one imported cassette
        (``cassette``) or (neither) outside any run, newest first."""
        if run_id is not None:
            return self._select("request_hash = ? AND run_id = ?", [request_hash, run_id], "id DESC", limit)
        if cassette:
            return self._select("request_hash = ? AND cassette = ?", [request_hash, cassette], "id DESC", limit)
        where = "request_hash = ? AND run_id IS NULL AND cassette = ''"
        return self._select(where, [request_hash], "id DESC", limit)

    def of_run(self, run_id: str, limit: int | None = None) -> list[CallRow]:
        """A run's recorded calls, oldest first."""
        return self._select("run_id = ?", [run_id], "id", limit)

    def of_cassette(self, name: str, limit: int | None = None) -> list[CallRow]:
        """An imported cassette's calls, oldest first."""
        return self._select("cassette = ?", [name], "id", limit)

    def recent(self, limit: int | None = None) -> list[CallRow]:
        """Every recorded call, newest first."""
        return self._select("1 = 1", [], "id DESC", limit)

    def by_prefix(self, prefix: str, limit: int = 2) -> list[CallRow]:
        """Recordings whose request hash starts with ``prefix`` (newest first)."""
        return self._select("request_hash >= ? AND request_hash < ?", [prefix, prefix + "g"], "id DESC", limit)

    def candidates(self, endpoint: str, model: str | None, limit: int) -> list[CallRow]:
        """The newest recordings of an endpoint (and model, if given): where a miss looks for the closest."""
        if model is None:
            return self._select("endpoint = ?", [endpoint], "id DESC", limit)
        return self._select("endpoint = ? AND model = ?", [endpoint, model], "id DESC", limit)

    def cassettes(self) -> list[tuple[str, int]]:
        """Imported cassette names with their call counts."""
        with self.db.raw_read() as cur:
            cur.execute("SELECT cassette, COUNT(*) FROM llm_calls WHERE cassette <> '' GROUP BY cassette ORDER BY 1")
            return [(r[0], int(r[1])) for r in cur.fetchall()]

    # -- erasure -----------------------------------------------------------------------------
    def compile(
        self, node: Node | None, since: int | None = None, until: int | None = None, run_id: str | None = None
    ) -> Query:
        """The WHERE clause of a parsed filter (:data:`ATTRIBUTES`, ``metadata.<key>``,
        ``context.<key>``), a time range on ``created_at`` (``until`` exclusive) and a run."""
        compiler = _CallCompiler(self.db.is_sqlite)
        parts = []
        if run_id is not None:
            parts.append("run_id = ?")
            compiler.params.append(run_id)
        if since is not None:
            parts.append("created_at >= ?")
            compiler.params.append(int(since))
        if until is not None:
            parts.append("created_at < ?")
            compiler.params.append(int(until))
        if node is not None:
            parts.append(compiler.condition(node))
        return Query(" AND ".join(parts), compiler.params)

    def _in(self, column: str, values: Sequence[Any]) -> Iterator[tuple[str, list[Any]]]:
        """``(condition, params)`` pieces that together say ``column`` is one of ``values``."""
        if not self.db.is_sqlite:
            for start in range(0, len(values), _PG_IN):
                yield f"{column} = ANY(?)", [list(values[start : start + _PG_IN])]
            return
        size = _sqlite_in()
        for start in range(0, len(values), size):
            chunk = list(values[start : start + size])
            yield f"{column} IN ({', '.join('?' for _ in chunk)})", chunk

    def _chunked(self, cur: Any, sql: str, params: Sequence[Any], column: str, values: Sequence[Any]) -> list[Any]:
        """Rows of ``sql`` (its WHERE ends where ``column IN (...)`` is added) for ``values``."""
        out: list[Any] = []
        for condition, chunk in self._in(column, values):
            cur.execute(self.db.sql(f"{sql} {condition}"), [*params, *chunk])
            out += cur.fetchall()
        return out

    def total(self) -> int:
        """How many calls are recorded."""
        with self.db.raw_read() as cur:
            cur.execute("SELECT COUNT(*) FROM llm_calls")
            return int(cur.fetchone()[0])

    def has_run(self, run_id: str) -> bool:
        """True if run ``run_id`` (a full id) recorded a call."""
        with self.db.raw_read() as cur:
            cur.execute(self.db.sql("SELECT 1 FROM llm_calls WHERE run_id = ? LIMIT 1"), [run_id])
            return cur.fetchone() is not None

    def present_ids(self, ids: Sequence[int]) -> set[int]:
        """Those of ``ids`` that are recorded calls."""
        with self.db.raw_read() as cur:
            return {int(r[0]) for r in self._chunked(cur, "SELECT id FROM llm_calls WHERE", [], "id", ids)}

    def matching(self, query: Query, ids: Sequence[int] | None = None) -> list[tuple[int, str, int, str | None, str]]:
        """``(id, oid, part, run_id, cassette)`` of the calls ``query`` matches (only among
        ``ids`` if given)."""
        sql = "SELECT id, oid, part, run_id, cassette FROM llm_calls"
        with self.db.raw_read() as cur:
            if ids is None:
                cur.execute(self.db.sql(sql + query.where()), list(query.params))
                rows = cur.fetchall()
            else:
                where = f" WHERE {query.sql} AND" if query.sql else " WHERE"
                rows = self._chunked(cur, sql + where, query.params, "id", ids)
        return [(int(r[0]), r[1], int(r[2]), r[3], r[4]) for r in rows]

    def copies(self, runs: Sequence[str]) -> list[tuple[int, str, str, str]]:
        """``(id, cassette, cassette version, source run)`` of imported calls that came from an
        export of one of ``runs`` (context ``source_run``)."""
        out: list[tuple[int, str, str, str]] = []
        for start in range(0, len(runs), _SQLITE_IN_OLD):
            chunk = tuple(runs[start : start + _SQLITE_IN_OLD])
            compiler = _CallCompiler(self.db.is_sqlite)
            # Built in the statement's order: the compiler appends each part's parameters.
            version = compiler.meta_text("cassette_version")
            source = compiler.meta_text("source_run")
            where = compiler.condition(Comparison(Field("context", "source_run"), "in", chunk))
            sql = f"SELECT id, cassette, {version}, {source} FROM llm_calls WHERE cassette <> '' AND {where}"
            with self.db.raw_read() as cur:
                cur.execute(self.db.sql(sql), compiler.params)
                out += [(int(r[0]), r[1], r[2] or "", r[3] or "") for r in cur.fetchall()]
        return out

    def of_packs(self, oids: Sequence[str]) -> list[tuple[int, str, int]]:
        """``(id, oid, part)`` of every call stored in the packs ``oids``."""
        with self.db.raw_read() as cur:
            rows = self._chunked(cur, "SELECT id, oid, part FROM llm_calls WHERE", [], "oid", oids)
        return [(int(r[0]), r[1], int(r[2])) for r in rows]

    def referenced(self, oids: Sequence[str]) -> set[str]:
        """Those of ``oids`` that a recorded call still points at."""
        with self.db.raw_read() as cur:
            rows = self._chunked(cur, "SELECT DISTINCT oid FROM llm_calls WHERE", [], "oid", oids)
        return {r[0] for r in rows}

    def erase(self, plan: ErasePlan, audit: dict[str, Any]) -> int:
        """Delete the plan's rows and repoint the moved ones, with the ``erasures`` audit row
        (``audit``: :func:`keel.meta.erasures.record`'s keywords), in one transaction; the
        audit row's id.

        Each delete and move names the pack the row was in when the plan was made: if a row
        is no longer there (a concurrent erasure moved or deleted it: on PostgreSQL the second
        transaction waits on the first's row locks, then finds the rows changed), fewer rows
        change than planned, the transaction rolls back and :class:`Changed` is raised. No call
        is ever added to an existing pack (every pack written is new content), so a concurrent
        recording is never in the way and never lost.
        """
        erase = [(row_id, plan.expected[row_id][0]) for row_id in plan.erase]
        moves = [(row_id, oid, part, plan.expected[row_id][0]) for row_id, (oid, part) in plan.moves.items()]

        def run(conn: Any) -> int:
            if self.db.is_sqlite:  # primary-key lookups, in the driver's loop
                deleted = conn.executemany("DELETE FROM llm_calls WHERE id = ? AND oid = ?", erase).rowcount
                moved = conn.executemany(
                    "UPDATE llm_calls SET oid = ?, part = ? WHERE id = ? AND oid = ?",
                    [(oid, part, row_id, old) for row_id, oid, part, old in moves],
                ).rowcount
            else:  # one statement per _PG_IN rows, the values as arrays
                # Lock every row the plan touches in id order first: two erasures of the same
                # packs then queue on each other instead of deadlocking.
                for condition, chunk in self._in("id", sorted(plan.expected)):
                    conn.execute(
                        f"SELECT COUNT(*) FROM (SELECT 1 FROM llm_calls WHERE {condition} ORDER BY id FOR UPDATE) s",
                        chunk,
                    )
                deleted = moved = 0
                for start in range(0, len(erase), _PG_IN):
                    chunk = erase[start : start + _PG_IN]
                    deleted += conn.execute(
                        "DELETE FROM llm_calls AS c USING unnest(CAST(? AS bigint[]), CAST(? AS text[])) AS v(id, old) "
                        "WHERE c.id = v.id AND c.oid = v.old",
                        [[r[0] for r in chunk], [r[1] for r in chunk]],
                    ).rowcount
                for start in range(0, len(moves), _PG_IN):
                    part = moves[start : start + _PG_IN]
                    moved += conn.execute(
                        "UPDATE llm_calls AS c SET oid = v.oid, part = v.part FROM unnest(CAST(? AS bigint[]), "
                        "CAST(? AS text[]), CAST(? AS integer[]), CAST(? AS text[])) AS v(id, oid, part, old) "
                        "WHERE c.id = v.id AND c.oid = v.old",
                        [[m[0] for m in part], [m[1] for m in part], [m[2] for m in part], [m[3] for m in part]],
                    ).rowcount
            if deleted != len(erase) or moved != len(moves):
                raise Changed
            return erasures.record(conn, **audit)

        return self.db.transaction(run)  # a deadlock or serialization failure runs it again

    def audit_objects(self, audit_id: int, objects_removed: int, bytes_freed: int) -> None:
        """Add the pack objects an erasure removed (after its commit) to its audit row."""
        with self.db.write() as conn:
            erasures.update_objects(conn, audit_id, objects_removed, bytes_freed)
