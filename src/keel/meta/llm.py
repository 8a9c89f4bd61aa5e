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

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.meta.delivered import claim_batch
from keel.meta.engine import Database

__all__ = ["CallRow", "RawLlmCalls"]

_COLUMNS = (
    "id, request_hash, endpoint, model, oid, part, run_id, cassette, created_at, latency_ms, input_tokens, "
    "output_tokens, cost, system_fingerprint, streamed, context, occurrence"
)
_INSERT = (
    "INSERT INTO llm_calls (request_hash, endpoint, model, oid, part, run_id, cassette, created_at, latency_ms, "
    "input_tokens, output_tokens, cost, system_fingerprint, streamed, context, occurrence) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


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
        """JSON-ready fields."""
        return {
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
