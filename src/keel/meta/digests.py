"""Record digests in the database: sealing records and checking them (``keel verify``).

The encodings are in :mod:`keel.core.digests`; this module reads the rows. A
run is sealed when it finishes, in the transaction that writes its end (see
:meth:`keel.meta.tracking.TrackingStore.write_batch`), and re-sealed by every
keel write that changes a finished run afterwards (a tag, an artifact, the
lineage edge of a model registered from it). :class:`Checker` streams every
table that has digests, in windows, so checking a large store needs bounded
memory; each mismatch is reported with what it affects.
"""

from __future__ import annotations

import contextlib
import itertools
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.core.digests import (
    RunContent,
    changed_sections,
    model_version_digest,
    prompt_version_digest,
    reflog_digest,
)
from keel.errors import KeelError
from keel.meta.dbapi import Connection
from keel.meta.engine import Database

__all__ = [
    "Checker",
    "Damage",
    "Progress",
    "RecordCount",
    "RunDigests",
    "chain_previous",
    "ref_label",
]

_IN_CHUNK = 500  # ids per IN (...) list
_WINDOW = 200  # records per verify window (one read transaction each)
_STREAM = 500  # rows fetched at a time from a streamed query
_SEAL_BATCH = 200  # reflog chains re-sealed per write transaction
# What a value of the wrong type (a damaged row) raises while it is encoded.
_DECODE_ERRORS = (TypeError, ValueError, OverflowError, UnicodeError, struct.error)

#: ``progress(stage, done, total)`` while verifying
Progress = Callable[[str, int, int], None]
#: ``stream(cursor, sql, args)``: a context manager over the rows of a query, fetched in pieces
Stream = Callable[[Any, str, Sequence[Any]], contextlib.AbstractContextManager[Iterable[Any]]]

_RUN = "SELECT id, run_id, status, start_time, end_time, parent_id, error, context, summary FROM runs WHERE id IN ({})"
_PARAMS = "SELECT run_pk, key, vtype, value FROM params WHERE run_pk IN ({})"
_TAGS = "SELECT run_pk, key, value FROM tags WHERE run_pk IN ({})"
_CHUNKS = (
    "SELECT run_pk, id, key, count, min_step, max_step, steps, timestamps, vals FROM metric_chunks WHERE run_pk IN ({})"
)
_LATEST = (
    "SELECT run_pk, key, value, is_nan, step, timestamp, min_value, max_value, count FROM latest_metrics "
    "WHERE run_pk IN ({})"
)
_ARTIFACTS = "SELECT run_pk, path, oid, size, kind, created_at FROM artifacts WHERE run_pk IN ({})"
_LINEAGE = (
    "SELECT run_pk, direction, entity_kind, entity_id, entity_version, role, created_at FROM lineage "
    "WHERE run_pk IN ({})"
)
_FINISHED = "SELECT id FROM runs WHERE id IN ({}) AND status <> 'running'"
# The lock an UPDATE takes (not FOR UPDATE: that would wait on the KEY SHARE locks the
# foreign-key checks of other writers hold on the run, while they wait on us: a deadlock).
_LOCK = "SELECT id FROM runs WHERE id IN ({}) ORDER BY id FOR NO KEY UPDATE"
_SEAL_RUN = "UPDATE runs SET digest = ? WHERE id = ?"
_SEAL_MISSING_RUN = "UPDATE runs SET digest = ? WHERE id = ? AND digest IS NULL"
# The newest entry of a ref: (at, id) is the reflog's order (a move is dated no earlier than the one
# before it, under the entity's lock, see keel.meta.refs), so the (kind, name, ref, at) index answers
# this without sorting the ref's whole history on every move.
_PREVIOUS = "SELECT digest FROM reflog WHERE kind = ? AND name = ? AND ref = ? ORDER BY at DESC, id DESC LIMIT 1"

_SECTION_WORDS = {
    "run": "its status, times, context or error",
    "params": "params",
    "tags": "tags",
    "metrics": "metrics",
    "latest": "metric summaries",
    "summary": "its summary document",
    "artifacts": "artifacts",
    "lineage": "lineage",
}


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _cursor(cur: Connection | Any) -> Any:
    """The DBAPI cursor to run on: ``cur`` itself, or a new cursor in the transaction of a
    keel :class:`~keel.meta.dbapi.Connection` (callers hold one or the other)."""
    return cur.cursor() if isinstance(cur, Connection) else cur


def _execute(cur: Any, sql: str, args: Sequence[Any]) -> Any:
    """Run a query (placeholders already the driver's) on a DBAPI cursor; iterate its rows."""
    cur.execute(sql, tuple(args))
    return cur


def chain_previous(cur: Any, db: Database, kind: str, name: str, ref: str) -> str | None:
    """The digest of the latest reflog entry of a ref (to chain the next one to), or None.

    Called inside the transaction that appends the entry, after the ref's row was
    written: on PostgreSQL that row lock orders concurrent moves of one ref. ``cur``: a
    DBAPI cursor or a keel connection.
    """
    for (digest,) in _execute(_cursor(cur), db.sql(_PREVIOUS), (kind, name, ref)):
        return None if digest is None else str(digest)
    return None


def ref_label(kind: str, name: str, ref: str) -> str:
    """What a reflog chain records, in words: ``prompt chat alias production``."""
    if kind == "model" and ref.startswith("stage:"):
        return f"model {name} stage of version {ref[6:]}"
    if kind == "model" and ref.startswith("version:"):
        return f"model {name} deletion of version {ref[8:]}"
    if kind == "model" and ref == "model":
        return f"model {name} deletion"
    if kind in ("prompt", "model"):
        return f"{kind} {name} alias {ref}"
    if kind == "flag":
        return f"flag {name} in {ref}"
    return f"{kind} {name} {ref}"


class RunDigests:
    """Computes runs' digests from their stored rows, inside the caller's transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._sql = {
            "run": _RUN,
            "params": _PARAMS,
            "tags": _TAGS,
            "chunks": _CHUNKS,
            "latest": _LATEST,
            "artifacts": _ARTIFACTS,
            "lineage": _LINEAGE,
            "finished": _FINISHED,
            "lock": _LOCK,
        }
        self._seal = db.sql(_SEAL_RUN)
        self._seal_missing = db.sql(_SEAL_MISSING_RUN)

    def _statement(self, name: str, n: int) -> str:
        """Query ``name`` for ``n`` run ids, placeholders in the driver's style."""
        return self.db.sql(self._sql[name].format(_marks(n)))

    def _query(self, cur: Any, name: str, pks: Sequence[int]) -> Iterable[Any]:
        return _execute(cur, self._statement(name, len(pks)), pks)

    def contents(self, cur: Any, pks: Iterable[int], stream: Stream | None = None) -> dict[int, RunContent]:
        """The stored content of each run in ``pks`` (runs that do not exist are absent).

        ``cur`` is a DBAPI cursor or a keel connection. Metric arrays are hashed
        as they are read; ``stream`` (see :meth:`Checker.stream`) fetches them a few
        hundred rows at a time, so a window of long runs is never held in memory.
        """
        cur = _cursor(cur)
        found: dict[int, RunContent] = {}
        # A run that vanished meanwhile has no content; its rows are skipped.
        other = RunContent()
        for part in _chunks(sorted(set(pks))):
            for pk, run_id, status, start, end, parent, error, context, summary in self._query(cur, "run", part):
                content = found[int(pk)] = RunContent()
                content.set_run(run_id, status, start, end, parent, error, context or "{}", summary or "{}")
            for pk, key, vtype, value in self._query(cur, "params", part):
                found.get(int(pk), other).add_param(key, vtype, value)
            for pk, key, value in self._query(cur, "tags", part):
                found.get(int(pk), other).add_tag(key, value)
            # Chunks are encoded (large arrays hashed) as they arrive, then added in written order.
            chunks: dict[int, list[tuple[int, str, bytes]]] = {}
            sql = self._statement("chunks", len(part))
            with stream(cur, sql, part) if stream else contextlib.nullcontext(_execute(cur, sql, part)) as rows:
                for pk, cid, key, count, low, high, steps, stamps, vals in rows:
                    row = RunContent.encode_chunk(count, low, high, bytes(steps), bytes(stamps), bytes(vals))
                    chunks.setdefault(int(pk), []).append((int(cid), key, row))
            for pk, pieces in chunks.items():
                pieces.sort(key=lambda piece: piece[0])
                for _cid, key, row in pieces:
                    found.get(pk, other).add_chunk(key, row)
            for pk, *row in self._query(cur, "latest", part):
                found.get(int(pk), other).add_latest(*row)
            for pk, *row in self._query(cur, "artifacts", part):
                found.get(int(pk), other).add_artifact(*row)
            for pk, *row in self._query(cur, "lineage", part):
                found.get(int(pk), other).add_edge(*row)
        return found

    def finished(self, cur: Any, pks: Iterable[int]) -> list[int]:
        """Which of ``pks`` are runs that are not running (``cur``: a DBAPI cursor or a keel connection)."""
        cur = _cursor(cur)
        out: list[int] = []
        for part in _chunks(sorted(set(pks))):
            out.extend(int(pk) for (pk,) in self._query(cur, "finished", part))
        return out

    def seal(self, cur: Any, pks: Iterable[int], only_missing: bool = False) -> int:
        """Store the digest of each run in ``pks`` from its rows as they are now (NULL for a
        running run); with ``only_missing``, only where there is none yet. Returns how many.

        On PostgreSQL the runs' rows are locked first, so two transactions sealing one run
        (two writers tagging it at once) take turns, and the later one reads what the
        earlier committed (READ COMMITTED) instead of overwriting its digest with an older
        view. SQLite has one writer at a time already. ``cur``: a DBAPI cursor or a keel connection."""
        cur = _cursor(cur)
        pks = sorted(set(pks))
        if not self.db.is_sqlite:
            for part in _chunks(pks):
                list(self._query(cur, "lock", part))
        rows = [
            (None if content.status == "running" else content.digest(), pk)
            for pk, content in self.contents(cur, pks).items()
        ]
        if only_missing:
            rows = [row for row in rows if row[0] is not None]
        if rows:
            cur.executemany(self._seal_missing if only_missing else self._seal, rows)
        return len(rows)


# -- verify ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Damage:
    """One thing ``keel verify`` found wrong in the database."""

    kind: str  # run, prompt_version, model_version, reflog, ref, database
    key: str  # the record: a run id, chat@1.3.0, prompt/chat/production, ...
    what: str  # in words: "run 1a2b3c4d (project p)"
    problem: str  # "metrics changed since it finished"

    def to_dict(self) -> dict[str, str]:
        """A JSON-ready dict."""
        return {"kind": self.kind, "key": self.key, "what": self.what, "problem": self.problem}


@dataclass
class RecordCount:
    """How many records of one kind were checked, could not be (no digest), or got one now."""

    checked: int = 0
    not_covered: int = 0
    running: int = 0
    sealed: int = 0

    def to_dict(self) -> dict[str, int]:
        """A JSON-ready dict."""
        return {
            "checked": self.checked,
            "not_covered": self.not_covered,
            "running": self.running,
            "sealed": self.sealed,
        }


@dataclass
class Checker:
    """Checks every digest of one database (and, on SQLite, the file's integrity).

    Problems go to :attr:`damaged` (at most :attr:`limit` listed; :attr:`damaged_total`
    counts them all); a part of the database that cannot be read is one
    ``database`` problem, and checking goes on with the next part.
    """

    db: Database
    seal: bool = False
    progress: Progress | None = None
    limit: int = 10_000
    counts: dict[str, RecordCount] = field(default_factory=dict)
    damaged: list[Damage] = field(default_factory=list)
    damaged_total: int = 0
    _names: Iterator[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.runs = RunDigests(self.db)
        for kind in ("runs", "prompt_versions", "model_versions", "reflog"):
            self.counts.setdefault(kind, RecordCount())

    # -- reporting ------------------------------------------------------------------
    def _damage(self, kind: str, key: str, what: str, problem: str) -> None:
        self.damaged_total += 1
        if len(self.damaged) < self.limit:
            self.damaged.append(Damage(kind, key, what, problem))

    def _unreadable(self, what: str, exc: KeelError) -> None:
        self._damage("database", self.name, f"database {self.name}", f"cannot read {what}: {_reason(exc)}")

    def _progress(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)

    @property
    def name(self) -> str:
        """The database in words: the SQLite file's name, or the PostgreSQL database's."""
        return self.db.name

    def _count(self, table: str) -> int:
        """How many rows ``table`` has (for progress; 0 if it cannot be counted: the check says why)."""
        try:
            with self.db.raw_read() as cur:
                cur.execute(f"SELECT COUNT(*) FROM {table}")
                return int(cur.fetchone()[0])
        except KeelError:
            return 0

    @contextlib.contextmanager
    def stream(self, cur: Any, sql: str, args: Sequence[Any] = ()) -> Iterator[Iterable[Any]]:
        """Rows of one query (placeholders already the driver's), fetched a few hundred at a
        time (a server-side cursor on PostgreSQL), on a cursor of its own so ``cur`` stays
        free for point queries."""
        if self.db.is_sqlite:
            streaming = cur.connection.cursor()
        else:
            streaming = cur.connection.cursor(name=f"keel_verify_{next(self._names)}")
            streaming.itersize = _STREAM
        try:
            streaming.execute(sql, tuple(args))
            yield _fetch(streaming)
        finally:
            with contextlib.suppress(Exception):
                streaming.close()

    # -- the file ---------------------------------------------------------------------
    def integrity(self, quick: bool = False) -> list[str] | None:
        """SQLite's ``PRAGMA integrity_check`` (or ``quick_check``): the problems it lists
        (at most 100), ``[]`` when the file is sound; None on PostgreSQL (not available)."""
        if not self.db.is_sqlite:
            return None
        pragma = "quick_check" if quick else "integrity_check"
        try:
            with self.db.raw_read() as cur:
                cur.execute(f"PRAGMA {pragma}(100)")
                lines = [str(row[0]) for row in cur.fetchall()]
        except KeelError as exc:  # so damaged that the check itself stops
            return [_reason(exc)]
        return [] if lines == ["ok"] else lines

    # -- runs -----------------------------------------------------------------------------
    def check_runs(self) -> None:
        """Recompute the digest of every run that has one; count the others."""
        count = self.counts["runs"]
        total = self._count("runs")
        last, done = -1, 0
        query = self.db.sql(
            "SELECT r.id, r.run_id, p.name, r.status, r.digest FROM runs r JOIN projects p ON p.id = r.project_id "
            f"WHERE r.id > ? ORDER BY r.id LIMIT {_WINDOW}"
        )
        while True:
            window: list[Any] | None = None
            contents: dict[int, RunContent] = {}
            unreadable: dict[int, str] = {}
            try:
                with self.db.raw_read() as cur:  # digests and rows from one snapshot
                    cur.execute(query, (last,))
                    window = list(cur.fetchall())
                    contents = self.runs.contents(cur, [int(r[0]) for r in window if r[4] is not None], self.stream)
            except (KeelError, *_DECODE_ERRORS) as exc:
                if window is None:
                    if isinstance(exc, KeelError):
                        self._unreadable(f"the runs after row {last}", exc)
                        return
                    raise
                window, contents, unreadable = self._runs_one_by_one(window)
            if not window:
                return
            last = int(window[-1][0])
            missing: list[int] = []
            for pk, run_id, project, status, stored in window:
                what = f"run {run_id[:8]} (project {project})"
                if stored is None:
                    if status == "running":
                        count.running += 1
                    else:
                        count.not_covered += 1
                        missing.append(int(pk))
                    continue
                count.checked += 1
                if int(pk) in unreadable:
                    self._damage("run", run_id, what, unreadable[int(pk)])
                    continue
                content = contents.get(int(pk))
                try:
                    computed = content.digest() if content is not None else ""
                except _DECODE_ERRORS as exc:
                    self._damage("run", run_id, what, f"a stored value has the wrong type ({exc})")
                    continue
                if computed != stored:
                    self._damage("run", run_id, what, _run_problem(stored, computed))
            if missing and self.seal:
                with self.db.raw_write() as cur:
                    sealed_now = self.runs.seal(cur, missing, only_missing=True)
                count.sealed += sealed_now
                count.not_covered -= sealed_now
            done += len(window)
            self._progress("runs", done, total)

    def _runs_one_by_one(self, window: list[Any]) -> tuple[list[Any], dict[int, RunContent], dict[int, str]]:
        """A window whose rows could not all be read, run by run (each its digest and rows
        from one snapshot), so the damage is pinned on the runs whose rows are unreadable."""
        rows: list[Any] = []
        contents: dict[int, RunContent] = {}
        unreadable: dict[int, str] = {}
        digest_of = self.db.sql("SELECT digest FROM runs WHERE id = ?")
        for pk, run_id, project, status, stored in window:
            if stored is not None:
                try:
                    with self.db.raw_read() as cur:
                        cur.execute(digest_of, (int(pk),))
                        found = cur.fetchone()
                        stored = None if found is None else found[0]
                        if stored is not None:
                            contents.update(self.runs.contents(cur, [int(pk)], self.stream))
                except KeelError as exc:
                    unreadable[int(pk)] = f"its rows cannot be read: {_reason(exc)}"
                except _DECODE_ERRORS as exc:
                    unreadable[int(pk)] = f"a stored value has the wrong type ({exc})"
            rows.append((pk, run_id, project, status, stored))
        return rows, contents, unreadable

    # -- registry versions ------------------------------------------------------------------
    def _check_versions(
        self,
        kind: str,
        query: str,
        digest: Callable[[Any], str],
        describe: Callable[[Any], tuple[str, str]],
        seal_sql: str,
    ) -> None:
        count = self.counts[kind]
        total = self._count(kind)
        last, done = -1, 0
        query = self.db.sql(query + f" WHERE v.id > ? ORDER BY v.id LIMIT {_WINDOW}")
        while True:
            try:
                with self.db.raw_read() as cur:
                    cur.execute(query, (last,))
                    window = cur.fetchall()
            except KeelError as exc:
                self._unreadable(kind.replace("_", " "), exc)
                return
            if not window:
                return
            last = int(window[-1][0])
            fills: list[tuple[str, int]] = []
            for row in window:
                stored = row[-1]
                try:
                    computed = digest(row)
                except _DECODE_ERRORS:
                    computed = ""  # a value of the wrong type: it changed
                if stored is None:
                    count.not_covered += 1
                    if self.seal and computed:
                        fills.append((computed, int(row[0])))
                    continue
                count.checked += 1
                if computed != stored:
                    key, what = describe(row)
                    self._damage(kind[:-1], key, what, "content changed since it was registered")
            if fills and self.seal:
                with self.db.raw_write() as cur:
                    cur.executemany(self.db.sql(seal_sql), fills)
                count.sealed += len(fills)
                count.not_covered -= len(fills)
            done += len(window)
            self._progress(kind.replace("_", " "), done, total)

    def check_prompt_versions(self) -> None:
        """Recompute every prompt version's digest."""
        self._check_versions(
            "prompt_versions",
            "SELECT v.id, p.name, v.version, v.major, v.minor, v.patch, v.content, v.content_hash, v.variables, "
            "v.changelog, v.author, v.created_at, v.digest FROM prompt_versions v JOIN prompts p ON p.id = v.prompt_id",
            lambda r: prompt_version_digest(r[1], r[2], (r[3], r[4], r[5]), *r[6:12]),
            lambda r: (f"{r[1]}@{r[2]}", f"prompt {r[1]}@{r[2]}"),
            "UPDATE prompt_versions SET digest = ? WHERE id = ? AND digest IS NULL",
        )

    def check_model_versions(self) -> None:
        """Recompute every model version's digest."""
        self._check_versions(
            "model_versions",
            "SELECT v.id, m.name, v.version, v.source, v.run_id, v.card, v.card_text, v.author, v.created_at, "
            "v.digest FROM model_versions v JOIN registered_models m ON m.id = v.model_id",
            lambda r: model_version_digest(*r[1:9]),
            lambda r: (f"{r[1]}/{r[2]}", f"model {r[1]} version {r[2]}"),
            "UPDATE model_versions SET digest = ? WHERE id = ? AND digest IS NULL",
        )

    # -- the reflog ---------------------------------------------------------------------------
    def check_reflog(self) -> None:
        """Walk every ref's chain of reflog entries, oldest first; check each entry against the
        one before it, and each chain's last entry against where the ref points now."""
        count = self.counts["reflog"]
        total = self._count("reflog")
        done = 0
        to_seal: list[tuple[str, str, str]] = []
        try:
            with self.db.raw_read() as cur:
                with self.stream(
                    cur,
                    self.db.sql(
                        "SELECT kind, name, ref, id, old_target, new_target, at, who, reason, digest FROM reflog "
                        "ORDER BY kind, name, ref, id"
                    ),
                ) as rows:
                    chain: tuple[str, str, str] | None = None
                    previous: str | None = None
                    position, broken, uncovered, last_new = 0, False, False, None
                    for kind, name, ref, _id, old, new, at, who, reason, stored in rows:
                        if (kind, name, ref) != chain:
                            if chain is not None:
                                self._chain_end(cur, chain, last_new, broken, uncovered, to_seal)
                            chain, previous, position, broken, uncovered = (kind, name, ref), None, 0, False, False
                        position += 1
                        last_new = new
                        if stored is None:
                            count.not_covered += 1
                            uncovered = True
                        else:
                            count.checked += 1
                            if _reflog_digest(previous, kind, name, ref, old, new, at, who, reason) != stored:
                                broken = True
                                self._damage(
                                    "reflog",
                                    f"{kind}/{name}/{ref}",
                                    f"reflog of {ref_label(kind, name, ref)}",
                                    f"entry {position} changed, or an entry before it was removed",
                                )
                        previous = stored
                        done += 1
                        if done % 10_000 == 0:
                            self._progress("reflog entries", done, total)
                    if chain is not None:
                        self._chain_end(cur, chain, last_new, broken, uncovered, to_seal)
                self._orphan_refs(cur)
        except KeelError as exc:
            self._unreadable("the reflog", exc)
        self._progress("reflog entries", done, total)
        for part in _chunks(to_seal, _SEAL_BATCH):
            with self.db.raw_write() as cur:
                sealed = sum(self._seal_chain(cur, chain) for chain in part)
            count.sealed += sealed
            count.not_covered -= sealed

    def _chain_end(
        self,
        cur: Any,
        chain: tuple[str, str, str],
        last_new: str | None,
        broken: bool,
        uncovered: bool,
        to_seal: list[tuple[str, str, str]],
    ) -> None:
        kind, name, ref = chain
        if uncovered and not broken and self.seal:
            to_seal.append(chain)
        if kind == "model" and (ref.startswith("version:") or ref == "model"):
            return  # deletions: nothing points anywhere now
        if kind == "model" and ref.startswith("stage:"):
            cur.execute(
                self.db.sql(
                    "SELECT v.stage FROM model_versions v JOIN registered_models m ON m.id = v.model_id "
                    "WHERE m.name = ? AND v.version = ?"
                ),
                (name, _int(ref[6:])),
            )
            row = cur.fetchone()
            if row is not None and row[0] != last_new:
                self._damage(
                    "model_version",
                    f"{name}/{ref[6:]}",
                    f"model {name} version {ref[6:]}",
                    f"its stage is {row[0]!r}, but its reflog's last entry moved it to {last_new!r}",
                )
            return
        cur.execute(self.db.sql("SELECT target FROM refs WHERE kind = ? AND name = ? AND ref = ?"), chain)
        row = cur.fetchone()
        target = None if row is None else row[0]
        if target != last_new:
            now = "is not set" if target is None else f"points at {target}"
            logged = "removed it" if last_new is None else f"moved it to {last_new}"
            self._damage(
                "ref",
                f"{kind}/{name}/{ref}",
                ref_label(kind, name, ref),
                f"{now}, but the reflog's last entry {logged}: an entry was removed, or the ref changed outside keel",
            )

    def _orphan_refs(self, cur: Any) -> None:
        with self.stream(
            cur,
            "SELECT kind, name, ref FROM refs r WHERE NOT EXISTS (SELECT 1 FROM reflog l "
            "WHERE l.kind = r.kind AND l.name = r.name AND l.ref = r.ref)",
        ) as rows:
            for kind, name, ref in rows:
                self._damage(
                    "ref",
                    f"{kind}/{name}/{ref}",
                    ref_label(kind, name, ref),
                    "has no reflog entry: its history was removed, or the ref was set outside keel",
                )

    def _seal_chain(self, cur: Any, chain: tuple[str, str, str]) -> int:
        """Re-chain every entry of one ref from the first (inside a write transaction);
        returns how many entries had no digest."""
        cur.execute(
            self.db.sql(
                "SELECT id, old_target, new_target, at, who, reason, digest FROM reflog "
                "WHERE kind = ? AND name = ? AND ref = ? ORDER BY id"
            ),
            chain,
        )
        previous: str | None = None
        updates: list[tuple[str, int]] = []
        filled = 0
        for pk, old, new, at, who, reason, stored in cur.fetchall():
            digest = _reflog_digest(previous, *chain, old, new, at, who, reason)
            if not digest:
                return 0  # a damaged entry: leave the chain as it is
            if stored != digest:
                filled += stored is None
                updates.append((digest, int(pk)))
            previous = digest
        if updates:
            cur.executemany(self.db.sql("UPDATE reflog SET digest = ? WHERE id = ?"), updates)
        return filled


def _reflog_digest(*fields: Any) -> str:
    try:
        return reflog_digest(*fields)
    except _DECODE_ERRORS:
        return ""  # a value of the wrong type: it changed


def _reason(exc: KeelError) -> str:
    """What the database said, without keel's wrapping (which names the URL and a hint)."""
    cause = exc.__cause__
    text = str(cause).strip() if cause is not None else ""
    return text.splitlines()[0] if text else exc.message


def _fetch(cur: Any) -> Iterator[Any]:
    while True:
        rows = cur.fetchmany(_STREAM)
        if not rows:
            return
        yield from rows


def _int(text: str) -> int:
    return int(text) if text.isdigit() else -1


def _run_problem(stored: str, computed: str) -> str:
    if not computed:
        return "its row is gone"
    sections = changed_sections(stored, computed)
    if not sections:
        return "its stored digest is damaged (its rows look intact)"
    words = [_SECTION_WORDS[s] for s in sections]
    listed = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    return f"{listed} changed since it finished"
