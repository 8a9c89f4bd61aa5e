"""Conversation rows: batched appends, late feedback, filtered reads and aggregates.

Everything goes straight through the driver (:meth:`Database.raw_write` /
:meth:`Database.raw_read`): a batch of records is one ``executemany`` in one
transaction (on PostgreSQL a ``COPY``), and queries are SQL built from a
parsed filter (:mod:`keel.core.filters`): user text never reaches SQL, every
value and every metadata key is a bound parameter.

Late feedback updates the latest stored record of its conversation (thumb,
score and comment each take the newest value given) and is appended to
``conversation_feedback``. Feedback for a conversation that is not stored yet
stays *pending* (``record_pk`` NULL) and is applied when the conversation's
record is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from keel.core.conversations import (
    Conversation,
    ConversationBatch,
    FeedbackEvent,
    parse_thumb,
    parse_time,
    thumb_name,
    total_tokens,
)
from keel.core.filters import And, Comparison, Field, Node, Not, Or
from keel.errors import InvalidInput
from keel.meta.dbapi import Connection
from keel.meta.delivered import claim_batch
from keel.meta.engine import Database
from keel.meta.erasures import Found, erasing, temp_table

__all__ = ["ATTRIBUTES", "GROUPS", "Query", "RawConversations"]

T = TypeVar("T")

_COLUMNS = (
    "conversation_id, timestamp, model, prompt_version, run_id, messages, metadata, thumb, score, comment, "
    "prompt_tokens, completion_tokens, latency_ms, created_at, total_tokens"
)
_WIDTH = 15  # values per row (keel.core.conversations.to_row)
_MARKS = ", ".join(["?"] * _WIDTH)
# A record's total: stored (0017), else the sum of its counts (records stored before).
_TOTAL = "COALESCE(total_tokens, COALESCE(prompt_tokens, 0) + COALESCE(completion_tokens, 0))"
_SELECT = (
    "SELECT id, conversation_id, timestamp, model, prompt_version, run_id, messages, metadata, thumb, score, "
    "comment, feedback_at, prompt_tokens, completion_tokens, latency_ms, created_at, total_tokens FROM conversations"
)
_SQL = {
    "insert": f"INSERT INTO conversations ({_COLUMNS}) VALUES ({_MARKS})",
    "latest_pk": "SELECT MAX(id) FROM conversations WHERE conversation_id = ?",
    "apply": (
        "UPDATE conversations SET thumb = COALESCE(?, thumb), score = COALESCE(?, score), "
        "comment = COALESCE(?, comment), feedback_at = ? WHERE id = ?"
    ),
    "event": (
        "INSERT INTO conversation_feedback (conversation_id, record_pk, thumb, score, comment, at) "
        "VALUES (?, ?, ?, ?, ?, ?)"
    ),
    # PostgreSQL: one statement per feedback (pipelined by executemany) instead of three round trips.
    "feedback_pg": (
        "WITH target AS (SELECT MAX(id) AS pk FROM conversations WHERE conversation_id = ?), "
        "applied AS (UPDATE conversations SET thumb = COALESCE(CAST(? AS INTEGER), thumb), "
        "score = COALESCE(CAST(? AS DOUBLE PRECISION), score), comment = COALESCE(CAST(? AS TEXT), comment), "
        "feedback_at = CAST(? AS BIGINT) WHERE id = (SELECT pk FROM target)) "
        "INSERT INTO conversation_feedback (conversation_id, record_pk, thumb, score, comment, at) "
        "SELECT CAST(? AS TEXT), pk, CAST(? AS INTEGER), CAST(? AS DOUBLE PRECISION), CAST(? AS TEXT), "
        "CAST(? AS BIGINT) FROM target"
    ),
    "any_pending": "SELECT 1 FROM conversation_feedback WHERE record_pk IS NULL LIMIT 1",
    "resolve": "UPDATE conversation_feedback SET record_pk = ? WHERE id = ?",
    "events": (
        "SELECT conversation_id, thumb, score, comment, at FROM conversation_feedback "
        "WHERE conversation_id = ? ORDER BY id"
    ),
    "records": _SELECT + " WHERE conversation_id = ? ORDER BY id",
}
_IN_CHUNK = 500
_ROWS_PER_INSERT = 500  # x 15 columns = 7,500 bound variables (SQLite allows 32,766 since 3.32)

#: Filterable record attributes -> (column, kind): kind is text, number or time.
ATTRIBUTES: dict[str, tuple[str, str]] = {
    "conversation_id": ("conversation_id", "text"),
    "id": ("conversation_id", "text"),
    "model": ("model", "text"),
    "prompt_version": ("prompt_version", "text"),
    "prompt": ("prompt_version", "text"),
    "run_id": ("run_id", "text"),
    "run": ("run_id", "text"),
    "timestamp": ("timestamp", "time"),
    "time": ("timestamp", "time"),
    "latency_ms": ("latency_ms", "number"),
    "latency": ("latency_ms", "number"),
    "created_at": ("created_at", "time"),
}
_FEEDBACK = {"thumb": ("thumb", "thumb"), "score": ("score", "number"), "comment": ("comment", "text")}
_TOKENS = {
    "prompt": ("prompt_tokens", "number"),
    "completion": ("completion_tokens", "number"),
    "total": (_TOTAL, "number"),
}
#: ``stats --by`` groups other than ``metadata.<key>``.
GROUPS = {
    "prompt_version": "prompt_version",
    "model": "model",
    "run_id": "run_id",
    "conversation_id": "conversation_id",
    "day": "(timestamp / 86400000)",
    "feedback.thumb": "thumb",
}
_OPS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def _hint() -> str:
    return (
        f"filter on {', '.join(sorted(ATTRIBUTES))}, feedback.thumb/score/comment, "
        "tokens.prompt/completion/total or metadata.<key>"
    )


@dataclass
class Query:
    """A compiled WHERE clause: ``sql`` with ``?`` placeholders and its ``params``."""

    sql: str
    params: list[Any]

    def where(self) -> str:
        """`` WHERE ...`` or an empty string."""
        return f" WHERE {self.sql}" if self.sql else ""


class _Compiler:
    """Filter -> SQL over a table whose JSON column ``document`` holds the metadata under the
    path ``root`` (conversations: the ``metadata`` column itself; recorded LLM calls, which
    reuse this compiler in :mod:`keel.meta.llm`: ``context`` under ``metadata``)."""

    def __init__(self, sqlite: bool, document: str = "metadata", root: tuple[str, ...] = ()) -> None:
        self.sqlite = sqlite
        self.document = document  # a column name keel chooses, never user text
        self.root = root
        self.params: list[Any] = []

    # -- metadata values ---------------------------------------------------------
    def _path(self, key: str) -> Any:
        parts = [*self.root, *key.split(".")]
        if self.sqlite:
            if any('"' in p for p in parts):
                raise InvalidInput(f"invalid metadata key {key!r}", "metadata keys used in filters cannot contain '\"'")
            return "$" + "".join(f'."{p}"' for p in parts)
        return parts

    def meta_text(self, key: str) -> str:
        """The metadata value as text (JSON true/false as 'true'/'false'), NULL if absent."""
        path, doc = self._path(key), self.document
        if self.sqlite:
            self.params += [path, path]
            return (
                f"(CASE json_type({doc}, ?) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
                f"ELSE CAST(json_extract({doc}, ?) AS TEXT) END)"
            )
        self.params.append(path)
        return f"(CAST({doc} AS jsonb) #>> CAST(? AS text[]))"

    def meta_number(self, key: str) -> str:
        """The metadata value if it is a JSON number, else NULL."""
        path, doc = self._path(key), self.document
        if self.sqlite:
            self.params += [path, path]
            return f"(CASE WHEN json_type({doc}, ?) IN ('integer', 'real') THEN json_extract({doc}, ?) END)"
        self.params += [path, path]
        return (
            f"(CASE WHEN jsonb_typeof(CAST({doc} AS jsonb) #> CAST(? AS text[])) = 'number' "
            f"THEN CAST(CAST({doc} AS jsonb) #>> CAST(? AS text[]) AS double precision) END)"
        )

    # -- conditions ----------------------------------------------------------------
    def condition(self, node: Node) -> str:
        if isinstance(node, And):
            return "(" + " AND ".join(self.condition(n) for n in node.items) + ")"
        if isinstance(node, Or):
            return "(" + " OR ".join(self.condition(n) for n in node.items) + ")"
        if isinstance(node, Not):
            return f"(NOT {self.condition(node.item)})"
        return self.comparison(node)

    def column(self, field: Field, value: Any) -> tuple[str, str]:
        """``(sql expression, kind)`` of a field (kind: text, number, time, thumb)."""
        kind, key = field.kind, field.key
        if kind == "metadata":
            numeric = any(
                isinstance(v, int | float) and not isinstance(v, bool)
                for v in (value if isinstance(value, tuple) else (value,))
            )
            return (self.meta_number(key), "number") if numeric else (self.meta_text(key), "text")
        table = {"feedback": _FEEDBACK, "tokens": _TOKENS}.get(kind or "", ATTRIBUTES)
        found = table.get(key)
        if found is None:
            where = f"{kind}.{key}" if kind not in (None, "attributes") else key
            raise InvalidInput(f"unknown conversation field {where!r}", _hint())
        return found

    def value(self, kind: str, value: Any, field: Field) -> Any:
        if kind == "thumb":
            return parse_thumb(value)
        if kind == "time":
            return parse_time(value)
        if kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInput(f"{field.key} is compared with {value!r}", f"{field.key} compares with numbers")
            return value
        return value if isinstance(value, str) else json.dumps(value) if isinstance(value, bool) else str(value)

    def comparison(self, cmp: Comparison) -> str:
        expr, kind = self.column(cmp.field, cmp.value)
        op = cmp.op
        if op == "is null":
            return f"{expr} IS NULL"
        if op == "is not null":
            return f"{expr} IS NOT NULL"
        if op in ("in", "not in"):
            values = [self.value(kind, v, cmp.field) for v in cmp.value]
            self.params += values
            marks = ", ".join("?" for _ in values)
            return f"{expr} {'NOT IN' if op == 'not in' else 'IN'} ({marks})"
        if op.endswith("like"):
            if kind not in ("text",):
                raise InvalidInput(f"'{op}' does not apply to {cmp.field.key!r}", "use =, <, > ...")
            negate = "NOT " if op.startswith("not") else ""
            self.params.append(cmp.value)
            if op.endswith("ilike"):
                return f"{negate}LOWER({expr}) LIKE LOWER(?)"
            return f"{negate}{expr} LIKE ?"
        self.params.append(self.value(kind, cmp.value, cmp.field))
        return f"{expr} {_OPS[op]} ?"


def _row(row: Sequence[Any]) -> Conversation:
    return Conversation(
        int(row[0]),
        row[1],
        int(row[2]),
        row[3],
        row[4],
        row[5],
        json.loads(row[6]),
        json.loads(row[7]),
        thumb_name(row[8]),
        row[9],
        row[10],
        None if row[11] is None else int(row[11]),
        None if row[12] is None else int(row[12]),
        None if row[13] is None else int(row[13]),
        row[14],
        int(row[15]),
        total_tokens(row[12], row[13], None if row[16] is None else int(row[16])),
    )


class RawConversations:
    """The conversation statements of one database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.sql = {key: db.sql(text) for key, text in _SQL.items()}
        self._rows_per_insert = _ROWS_PER_INSERT
        self._multi: str | None = None
        if db.is_sqlite:
            import sqlite3

            if sqlite3.sqlite_version_info < (3, 32):  # at most 999 bound variables before 3.32
                self._rows_per_insert = 999 // _WIDTH

    def _multi_insert(self) -> str:
        if self._multi is None:
            values = ", ".join([f"({_MARKS})"] * self._rows_per_insert)
            self._multi = f"INSERT INTO conversations ({_COLUMNS}) VALUES {values}"
        return self._multi

    # -- writing ----------------------------------------------------------------------
    def write_batch(self, batch: ConversationBatch, batch_id: str | None = None) -> None:
        """Append a batch's records and feedback in one transaction (nothing when ``batch_id``
        names a batch already written: see :mod:`keel.meta.delivered`)."""
        with self.db.raw_write() as cur:
            if not claim_batch(self.db, cur, batch_id):
                return
            if batch.conversations:
                self._insert(cur, batch.conversations)
                self._apply_pending(cur, {row[0] for row in batch.conversations})
            if batch.feedback and not self.db.is_sqlite:
                cur.executemany(self.sql["feedback_pg"], [(*row, *row) for row in batch.feedback])
                return
            for cid, thumb, score, comment, at in batch.feedback:
                cur.execute(self.sql["latest_pk"], (cid,))
                found = cur.fetchone()
                pk = None if found is None or found[0] is None else int(found[0])
                if pk is not None:
                    cur.execute(self.sql["apply"], (thumb, score, comment, at, pk))
                cur.execute(self.sql["event"], (cid, pk, thumb, score, comment, at))

    def _insert(self, cur: Any, rows: list[tuple[Any, ...]]) -> None:
        if self.db.is_sqlite:
            # Multi-row INSERTs: the driver releases the GIL around each statement's
            # execution, so one statement per few hundred rows lets the app's thread run
            # while SQLite works (one per row would hand the GIL back and forth per row).
            size = self._rows_per_insert
            whole = len(rows) - len(rows) % size
            if whole:
                sql = self._multi_insert()
                for start in range(0, whole, size):
                    cur.execute(sql, [v for row in rows[start : start + size] for v in row])
            if whole < len(rows):
                cur.executemany(self.sql["insert"], rows[whole:])
            return
        # PostgreSQL: COPY is several times faster than a pipelined executemany.
        with cur.copy(f"COPY conversations ({_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def _apply_pending(self, cur: Any, ids: set[str]) -> None:
        """Apply feedback that arrived before its conversation was stored."""
        cur.execute(self.sql["any_pending"])
        if cur.fetchone() is None:
            return
        listed = sorted(ids)
        for start in range(0, len(listed), _IN_CHUNK):
            chunk = listed[start : start + _IN_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            cur.execute(
                self.db.sql(
                    "SELECT id, conversation_id, thumb, score, comment, at FROM conversation_feedback "
                    f"WHERE record_pk IS NULL AND conversation_id IN ({marks}) ORDER BY id"
                ),
                chunk,
            )
            for event_id, cid, thumb, score, comment, at in cur.fetchall():
                cur.execute(self.sql["latest_pk"], (cid,))
                pk = int(cur.fetchone()[0])
                cur.execute(self.sql["apply"], (thumb, score, comment, at, pk))
                cur.execute(self.sql["resolve"], (pk, event_id))

    # -- reading ------------------------------------------------------------------------
    def compile(self, node: Node | None, since: int | None = None, until: int | None = None) -> Query:
        """The WHERE clause for a parsed filter and a time range (``until`` exclusive)."""
        compiler = _Compiler(self.db.is_sqlite)
        parts = []
        if since is not None:
            parts.append("timestamp >= ?")
            compiler.params.append(int(since))
        if until is not None:
            parts.append("timestamp < ?")
            compiler.params.append(int(until))
        if node is not None:
            parts.append(compiler.condition(node))
        return Query(" AND ".join(parts), compiler.params)

    def group_expression(self, by: str, params: list[Any]) -> str:
        """The SQL of one ``--by`` group (its parameters appended to ``params``)."""
        if by in GROUPS:
            return GROUPS[by]
        prefix, dot, key = by.partition(".")
        if dot and key and prefix in ("metadata", "meta"):
            compiler = _Compiler(self.db.is_sqlite)
            expr = compiler.meta_text(key)
            params += compiler.params
            return expr
        raise InvalidInput(f"cannot group conversations by {by!r}", f"group by {', '.join(GROUPS)} or metadata.<key>")

    def select(self, query: Query, limit: int | None, newest_first: bool = True) -> list[Conversation]:
        """Matching records, newest first."""
        order = "DESC" if newest_first else "ASC"
        sql = f"{_SELECT}{query.where()} ORDER BY timestamp {order}, id {order}"
        params = list(query.params)
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self.db.raw_read() as cur:
            cur.execute(self.db.sql(sql), params)
            return [_row(r) for r in cur.fetchall()]

    def iterate(self, query: Query, size: int = 2000) -> Iterator[Conversation]:
        """Every matching record, newest first, fetched ``size`` at a time."""
        sql = f"{_SELECT}{query.where()} ORDER BY timestamp DESC, id DESC"
        with self.db.raw_read() as cur:
            cur.execute(self.db.sql(sql), list(query.params))
            while True:
                rows = cur.fetchmany(size)
                if not rows:
                    return
                for r in rows:
                    yield _row(r)

    def records(self, conversation_id: str) -> tuple[list[Conversation], list[FeedbackEvent]]:
        """Every record of one conversation (oldest first) and its feedback events."""
        with self.db.raw_read() as cur:
            cur.execute(self.sql["records"], (conversation_id,))
            records = [_row(r) for r in cur.fetchall()]
            cur.execute(self.sql["events"], (conversation_id,))
            events = [FeedbackEvent(c, thumb_name(t), s, m, int(a)) for c, t, s, m, a in cur.fetchall()]
        return records, events

    def conversation_ids(self, prefix: str, limit: int = 2) -> list[str]:
        """Distinct conversation ids starting with ``prefix`` (to resolve a short id)."""
        upper = prefix + "\U0010ffff"
        with self.db.raw_read() as cur:
            cur.execute(
                self.db.sql(
                    "SELECT DISTINCT conversation_id FROM conversations WHERE conversation_id >= ? "
                    "AND conversation_id < ? ORDER BY conversation_id LIMIT ?"
                ),
                (prefix, upper, limit),
            )
            return [r[0] for r in cur.fetchall()]

    def aggregate(self, query: Query, groups: Sequence[str]) -> list[tuple[Any, ...]]:
        """Per (group..., model): count, ups, downs, score sum/count, latency sum/count,
        prompt/completion tokens, first/last time, all tokens, tokens logged only as a total."""
        params: list[Any] = []
        exprs = [self.group_expression(g, params) for g in groups]
        cols = ", ".join(f"{e} AS g{i}" for i, e in enumerate(exprs))
        n = len(exprs)
        sql = (
            f"SELECT {cols}, model, COUNT(*), "
            "SUM(CASE WHEN thumb = 1 THEN 1 ELSE 0 END), SUM(CASE WHEN thumb = -1 THEN 1 ELSE 0 END), "
            "SUM(score), COUNT(score), SUM(latency_ms), COUNT(latency_ms), "
            "SUM(prompt_tokens), SUM(completion_tokens), MIN(timestamp), MAX(timestamp), "
            f"SUM({_TOTAL}), SUM(CASE WHEN prompt_tokens IS NULL AND completion_tokens IS NULL THEN total_tokens END) "
            f"FROM conversations{query.where()} GROUP BY {', '.join(str(i + 1) for i in range(n + 1))}"
        )
        with self.db.raw_read() as cur:
            cur.execute(self.db.sql(sql), params + list(query.params))
            return [tuple(r) for r in cur.fetchall()]

    def latency_ranks(self, query: Query, groups: Sequence[str], pcts: Sequence[int]) -> list[tuple[Any, ...]]:
        """``(group..., n, rank, latency)`` for the ranks the percentiles ``pcts`` need (window functions)."""
        params: list[Any] = []
        exprs = [self.group_expression(g, params) for g in groups]
        cols = ", ".join(f"{e} AS g{i}" for i, e in enumerate(exprs))
        names = ", ".join(f"g{i}" for i in range(len(exprs)))
        where = query.where()
        where = f"{where} AND latency_ms IS NOT NULL" if where else " WHERE latency_ms IS NOT NULL"
        wanted = []
        for pct in pcts:
            wanted += [f"((n - 1) * {int(pct)}) / 100", f"((n - 1) * {int(pct)} + 99) / 100"]
        sql = (
            f"SELECT {names}, n, rn, latency_ms FROM ("
            f"SELECT {names}, latency_ms, ROW_NUMBER() OVER (PARTITION BY {names} ORDER BY latency_ms) - 1 AS rn, "
            f"COUNT(*) OVER (PARTITION BY {names}) AS n FROM (SELECT {cols}, latency_ms FROM conversations{where}) s"
            f") t WHERE rn IN ({', '.join(wanted)})"
        )
        with self.db.raw_read() as cur:
            cur.execute(self.db.sql(sql), params + list(query.params))
            return [tuple(r) for r in cur.fetchall()]

    def count(self, query: Query) -> int:
        """How many records match."""
        with self.db.raw_read() as cur:
            cur.execute(self.db.sql(f"SELECT COUNT(*) FROM conversations{query.where()}"), list(query.params))
            return int(cur.fetchone()[0])

    # -- erasing ------------------------------------------------------------------------
    def missing_ids(self, conversation_ids: Sequence[str]) -> list[str]:
        """Those of ``conversation_ids`` with no stored record (in the given order)."""
        found: set[str] = set()
        listed = list(dict.fromkeys(conversation_ids))
        with self.db.raw_read() as cur:
            for start in range(0, len(listed), _IN_CHUNK):
                chunk = listed[start : start + _IN_CHUNK]
                marks = ", ".join("?" for _ in chunk)
                cur.execute(
                    self.db.sql(
                        f"SELECT DISTINCT conversation_id FROM conversations WHERE conversation_id IN ({marks})"
                    ),
                    chunk,
                )
                found.update(r[0] for r in cur.fetchall())
        return [cid for cid in listed if cid not in found]

    def erasure_scope(self, query: Query) -> tuple[int, int, int | None]:
        """``(matched, total, earliest created_at)``: how many records ``query`` matches, how many
        the store holds, and when the oldest matching one was written (None: none matched)."""
        with self.db.raw_read() as cur:
            cur.execute(
                self.db.sql(f"SELECT COUNT(*), MIN(created_at) FROM conversations{query.where()}"), list(query.params)
            )
            matched, earliest = cur.fetchone()
            cur.execute("SELECT COUNT(*) FROM conversations")
            total = int(cur.fetchone()[0])
        return int(matched), total, None if earliest is None else int(earliest)

    def matching_ids(self, query: Query) -> Iterator[str]:
        """The distinct conversation ids of the records ``query`` matches, streamed."""
        with self.db.raw_read() as cur:
            cur.execute(self.db.sql(f"SELECT DISTINCT conversation_id FROM conversations{query.where()}"), query.params)
            while True:
                rows = cur.fetchmany(5000)
                if not rows:
                    return
                for row in rows:
                    yield row[0]

    def ids_scope(self, conversation_ids: Sequence[str]) -> tuple[int, int | None]:
        """``(records, earliest created_at)`` of the conversations ``conversation_ids``."""
        matched, earliest = 0, None
        with self.db.raw_read() as cur:
            for start in range(0, len(conversation_ids), _IN_CHUNK):
                chunk = list(conversation_ids[start : start + _IN_CHUNK])
                marks = ", ".join("?" for _ in chunk)
                cur.execute(
                    self.db.sql(
                        f"SELECT COUNT(*), MIN(created_at) FROM conversations WHERE conversation_id IN ({marks})"
                    ),
                    chunk,
                )
                count, first = cur.fetchone()
                matched += int(count)
                if first is not None:
                    earliest = int(first) if earliest is None else min(earliest, int(first))
        return matched, earliest

    def erase(
        self,
        decide: Callable[[Found], T],
        audit: Callable[[Connection, int, int], int],
        *,
        query: Query | None = None,
        ids: Sequence[str] | None = None,
    ) -> tuple[int, int, T]:
        """Delete the records ``query`` matches, or every record of the conversations ``ids``,
        with their feedback, in one transaction: ``(deleted, audit id, what decide returned)``.

        The matching records are found in one pass (the filter is evaluated once: reading a
        record's metadata walks past its messages) into a temporary table of their keys,
        conversation ids and times; ``decide(found)`` then sees how many matched, how many the
        store holds and their conversation ids, and may refuse (its exception rolls everything
        back: nothing deleted). The records are deleted by key; their feedback rows go with
        them (ON DELETE CASCADE on ``record_pk``, indexed), and so does the feedback still
        waiting for a record (``record_pk`` NULL) of a conversation left with no record.
        Feedback applied to a record that stays, stays. ``audit(conn, matched, deleted)``
        writes the audit row in the same transaction.
        """
        temp = temp_table(self.db, "keel_erase_records", "pk BIGINT PRIMARY KEY, cid TEXT, created BIGINT")
        with erasing(self.db) as conn:
            cur = conn.cursor()
            cur.execute(temp.create)
            if query is not None:
                cur.execute(
                    self.db.sql(
                        f"INSERT INTO {temp.name} (pk, cid, created) SELECT id, conversation_id, created_at "
                        f"FROM conversations{query.where()}"
                    ),
                    list(query.params),
                )
            else:
                listed = list(ids or ())
                for start in range(0, len(listed), _IN_CHUNK):
                    chunk = listed[start : start + _IN_CHUNK]
                    marks = ", ".join("?" for _ in chunk)
                    cur.execute(
                        self.db.sql(
                            f"INSERT INTO {temp.name} (pk, cid, created) SELECT id, conversation_id, created_at "
                            f"FROM conversations WHERE conversation_id IN ({marks})"
                        ),
                        chunk,
                    )
            cur.execute(f"SELECT COUNT(*), MIN(created) FROM {temp.name}")
            matched, earliest = cur.fetchone()
            cur.execute("SELECT COUNT(*) FROM conversations")
            total = int(cur.fetchone()[0])

            def found_ids() -> Iterator[str]:
                reader = conn.cursor()
                reader.execute(f"SELECT DISTINCT cid FROM {temp.name}")
                for row in reader.fetchall():
                    yield row[0]

            decided = decide(Found(int(matched), total, None if earliest is None else int(earliest), found_ids))
            cur.execute(f"DELETE FROM conversations WHERE id IN (SELECT pk FROM {temp.name})")
            deleted = int(cur.rowcount)
            cur.execute(
                f"DELETE FROM conversation_feedback WHERE record_pk IS NULL AND conversation_id IN "
                f"(SELECT cid FROM {temp.name}) AND NOT EXISTS (SELECT 1 FROM conversations c "
                "WHERE c.conversation_id = conversation_feedback.conversation_id)"
            )
            if temp.drop:
                cur.execute(temp.drop)
            audit_id = audit(conn, int(matched), deleted)
        return deleted, audit_id, decided
