"""Refs and the reflog: the only mutable state, with every move recorded.

A ref is ``(kind, name, ref) -> target``: e.g. ``("prompt", "chat",
"production") -> "1.3.0"``. Every set, move and delete appends a reflog row
(old target, new target, when, who, why) in the same transaction, so
"what did production point at, at time T" and "roll back" are queries over
the reflog, never guesses. Registries (prompts, models, flags, A/B tests)
share this one implementation (the model registry's hot paths write the same
rows through the driver, :mod:`keel.meta.models`).

Concurrency: one writer per entity
----------------------------------
Every change of an entity's versions or refs (registering a version, moving,
creating or deleting an alias, moving a stage) is one transaction that
*first* takes the entity's lock, then reads what it decides on (the current
target, the highest version, an existing content hash) and writes (the
version, the ref, the reflog row). So the reads are never stale:

- PostgreSQL: a transaction-scoped advisory lock keyed by ``(kind, name)``,
  ``pg_advisory_xact_lock(hashtextextended('keel:KIND:NAME', 0))``
  (:meth:`Refs.lock`, :class:`EntityLock` for the driver-level paths). It
  needs no row, so the first registration of a new name is serialised too;
  it is released at commit or rollback, after the commit is visible. keel runs
  READ COMMITTED (PostgreSQL's default): every statement after the lock sees
  what the previous holder committed. A 64-bit hash collision between two
  names only makes them wait for each other.
- SQLite: write transactions begin ``IMMEDIATE`` (:mod:`keel.meta.engine`),
  so the database has one writer at a time and the lock is a no-op.

Hence concurrent registrations each get a unique, gap-free version;
concurrent creations of one alias all succeed (the later ones are moves);
each reflog row's ``old`` is the target it actually replaced, so a ref's
reflog is an exact chain. A move is never dated before the ref's previous
move (``max(now, the ref's updated_at)``), so ordering the reflog by
``(at, id)`` keeps the chain even across servers whose clocks differ a little.

Moves can be optimistic: ``expected`` names the target the caller believes
the ref has (:data:`ABSENT`, ``""``: the ref must not exist; None: no check).
It is compared inside the lock, and a mismatch is a :class:`~keel.errors.Conflict`
naming the actual target; nothing moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keel.core.digests import reflog_digest
from keel.core.entities import now_ms
from keel.errors import Conflict, NotFound
from keel.meta.engine import Database
from keel.meta.events import record_event
from keel.meta.protection import guard

__all__ = ["ABSENT", "EntityLock", "RefMove", "Refs", "check_expected", "lock_key"]

#: ``expected=ABSENT``: the ref must not exist yet.
ABSENT = ""

_PG_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(?, 0))"


def lock_key(kind: str, name: str) -> str:
    """The text an entity's advisory lock is keyed by (hashed to 64 bits by PostgreSQL)."""
    return f"keel:{kind}:{name}"


class EntityLock:
    """Takes an entity's lock through a DBAPI cursor (:meth:`Database.raw_write`); a no-op
    on SQLite, whose write transactions already exclude each other."""

    def __init__(self, db: Database) -> None:
        self.statement = None if db.is_sqlite else db.sql(_PG_LOCK)

    def __call__(self, cur: Any, kind: str, name: str) -> None:
        """Wait for, then hold until the transaction ends, the lock of ``(kind, name)``."""
        if self.statement is not None:
            cur.execute(self.statement, (lock_key(kind, name),))


def check_expected(what: str, actual: str | None, expected: str | None, hint: str = "") -> None:
    """Raise Conflict unless ``actual`` is what the caller ``expected`` (None: no check;
    :data:`ABSENT`: not set). ``what`` names the ref: ``"alias 'production' of prompt 'chat'"``."""
    if expected is None or (actual or ABSENT) == expected:
        return
    now = "is not set" if actual is None else f"points at {actual}"
    wanted = "unset" if expected == ABSENT else expected
    raise Conflict(
        f"{what} {now}, not {wanted} as expected: someone moved it meanwhile",
        hint or "read it again, then move it from the target you see",
    )


@dataclass(frozen=True)
class RefMove:
    """One reflog entry: ``ref`` moved from ``old`` to ``new`` (None: unset/deleted). ``id``:
    the entry's number in the reflog (set when read back from it; None on a move just made)."""

    kind: str
    name: str
    ref: str
    old: str | None
    new: str | None
    at: int
    who: str
    reason: str
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "kind": self.kind,
            "name": self.name,
            "ref": self.ref,
            "old": self.old,
            "new": self.new,
            "at": self.at,
            "who": self.who,
            "reason": self.reason,
            "id": self.id,
        }


def move_subject(move: RefMove) -> dict[str, Any]:
    """The ``alias.moved`` event's subject: which ref of which entity."""
    return {"kind": move.kind, "name": move.name, "ref": move.ref}


def move_data(move: RefMove) -> dict[str, Any]:
    """The ``alias.moved`` event's data: from what to what, who and why."""
    return {"old": move.old, "new": move.new, "who": move.who, "reason": move.reason}


def _move(row: Any) -> RefMove:
    return RefMove(
        row.kind, row.name, row.ref, row.old_target, row.new_target, int(row.at), row.who, row.reason, int(row.id)
    )


_SQL_CURRENT = "SELECT target FROM refs WHERE kind = ? AND name = ? AND ref = ?"
_SQL_LOCKED_CURRENT = "SELECT target, updated_at FROM refs WHERE kind = ? AND name = ? AND ref = ?"
_SQL_INSERT = "INSERT INTO refs (kind, name, ref, target, updated_at) VALUES (?, ?, ?, ?, ?)"
_SQL_MOVE = "UPDATE refs SET target = ?, updated_at = ? WHERE kind = ? AND name = ? AND ref = ?"
_SQL_DELETE = "DELETE FROM refs WHERE kind = ? AND name = ? AND ref = ?"
# the reflog's order; the index (kind, name, ref, at) answers it
_SQL_PREVIOUS_DIGEST = (
    "SELECT digest FROM reflog WHERE kind = ? AND name = ? AND ref = ? ORDER BY at DESC, id DESC LIMIT 1"
)
_SQL_LOG = (
    "INSERT INTO reflog (kind, name, ref, old_target, new_target, at, who, reason, digest) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQL_ALL_FOR = "SELECT ref, target FROM refs WHERE kind = ? AND name = ? ORDER BY ref"
_MOVES = "SELECT id, kind, name, ref, old_target, new_target, at, who, reason FROM reflog WHERE kind = ? AND name = ?"
_SQL_HISTORY = _MOVES + " ORDER BY at, id"
_SQL_REF_HISTORY = _MOVES + " AND ref = ? ORDER BY at, id"
_SQL_AT = (
    "SELECT new_target FROM reflog WHERE kind = ? AND name = ? AND ref = ? AND at <= ? "
    "ORDER BY at DESC, id DESC LIMIT 1"
)
# every ref's last move at or before a time (its target then; NULL: it was deleted)
_SQL_ALL_AT = (
    "SELECT ref, new_target FROM (SELECT ref, new_target, ROW_NUMBER() OVER "
    "(PARTITION BY ref ORDER BY at DESC, id DESC) AS n FROM reflog WHERE kind = ? AND name = ? AND at <= ?) "
    "last_moves WHERE n = 1 AND new_target IS NOT NULL ORDER BY ref"
)
_SQL_EVER = "SELECT DISTINCT ref FROM reflog WHERE kind = ? AND name = ?"


class Refs:
    """Reads and moves refs; moves take the caller's connection (one transaction)."""

    # -- moves (inside a write transaction) --------------------------------------
    @staticmethod
    def lock(conn: Any, kind: str, name: str) -> None:
        """Serialise changes of one entity: on PostgreSQL wait for, then hold until the
        transaction ends, its advisory lock (a no-op on SQLite: see the module doc).
        Call it before reading anything the change depends on; taking it again is free."""
        if conn.dialect.name == "postgresql":
            conn.execute(_PG_LOCK, (lock_key(kind, name),))

    @staticmethod
    def current(conn: Any, kind: str, name: str, ref: str) -> str | None:
        """The target of a ref now, or None."""
        found = conn.execute(_SQL_CURRENT, (kind, name, ref)).scalar()
        return None if found is None else str(found)

    @staticmethod
    def _locked_current(conn: Any, kind: str, name: str, ref: str) -> tuple[str | None, int]:
        """Take the entity's lock; then the ref's target (or None) and when it last moved (0)."""
        Refs.lock(conn, kind, name)
        row = conn.execute(_SQL_LOCKED_CURRENT, (kind, name, ref)).first()
        return (None, 0) if row is None else (str(row[0]), int(row[1]))

    @classmethod
    def set(
        cls,
        conn: Any,
        kind: str,
        name: str,
        ref: str,
        target: str,
        who: str = "",
        reason: str = "",
        expected: str | None = None,
    ) -> RefMove:
        """Point ``ref`` at ``target`` and log the move (a no-op move is still logged: it was
        asked for). ``expected``: the target the caller believes it has (see the module doc)."""
        old, moved_at = cls._locked_current(conn, kind, name, ref)
        check_expected(f"{ref!r} of {kind} {name!r}", old, expected)
        at = max(now_ms(), moved_at)
        if old is None:
            conn.execute(_SQL_INSERT, (kind, name, ref, target, at))
        else:
            conn.execute(_SQL_MOVE, (target, at, kind, name, ref))
        move = RefMove(kind, name, ref, old, target, at, who, reason)
        cls._log(conn, move)
        return move

    @classmethod
    def delete(
        cls,
        conn: Any,
        kind: str,
        name: str,
        ref: str,
        who: str = "",
        reason: str = "",
        expected: str | None = None,
    ) -> RefMove:
        """Remove ``ref`` (logged); raise NotFound if it does not exist, Conflict if it
        does not point at ``expected``."""
        old, moved_at = cls._locked_current(conn, kind, name, ref)
        if old is None:
            raise NotFound(f"{kind} {name!r} has no alias {ref!r}", f"list aliases with 'keel {kind}s show {name}'")
        check_expected(f"{ref!r} of {kind} {name!r}", old, expected)
        conn.execute(_SQL_DELETE, (kind, name, ref))
        move = RefMove(kind, name, ref, old, None, max(now_ms(), moved_at), who, reason)
        cls._log(conn, move)
        return move

    @staticmethod
    def _log(conn: Any, move: RefMove) -> None:
        # Each entry's digest covers the ref's previous entry's (keel.core.digests), so
        # 'keel verify' finds a changed, removed or reordered entry. Read after the ref's
        # lock and row write: two moves of one ref take turns, and chain in that order.
        guard(lambda sql, args: conn.execute(sql, args).all(), move.kind, move.name, move.ref, move.old, move.new)
        previous = conn.execute(_SQL_PREVIOUS_DIGEST, (move.kind, move.name, move.ref)).scalar()
        fields = (move.kind, move.name, move.ref, move.old, move.new, move.at, move.who, move.reason)
        conn.execute(_SQL_LOG, (*fields, reflog_digest(previous, *fields)))
        record_event(conn, "alias.moved", project=None, subject=move_subject(move), data=move_data(move))

    # -- queries ----------------------------------------------------------------------
    @staticmethod
    def all_for(conn: Any, kind: str, name: str) -> dict[str, str]:
        """Every ref of one entity: ``{ref: target}``."""
        return {r: t for r, t in conn.execute(_SQL_ALL_FOR, (kind, name)).all()}

    @staticmethod
    def history(conn: Any, kind: str, name: str, ref: str | None = None) -> list[RefMove]:
        """The reflog of one entity (or one of its refs), oldest first."""
        if ref is None:
            rows = conn.execute(_SQL_HISTORY, (kind, name)).all()
        else:
            rows = conn.execute(_SQL_REF_HISTORY, (kind, name, ref)).all()
        return [_move(row) for row in rows]

    @staticmethod
    def at(conn: Any, kind: str, name: str, ref: str, when: int) -> str | None:
        """Where ``ref`` pointed at time ``when`` (ms since the epoch), or None."""
        row = conn.execute(_SQL_AT, (kind, name, ref, when)).first()
        return None if row is None else row[0]

    @staticmethod
    def all_at(conn: Any, kind: str, name: str, when: int) -> dict[str, str]:
        """Every ref of one entity as it was at time ``when`` (ms): ``{ref: target}``
        (refs deleted by then, or created later, are absent)."""
        return {r: t for r, t in conn.execute(_SQL_ALL_AT, (kind, name, when)).all()}

    @staticmethod
    def ever(conn: Any, kind: str, name: str) -> list[str]:
        """Every ref name the entity's reflog has seen (deleted ones too), in their stored spelling."""
        return sorted(str(r) for (r,) in conn.execute(_SQL_EVER, (kind, name)).all())

    @staticmethod
    def target_before(moves: Sequence[RefMove], steps: int = 1) -> str | None:
        """Where a ref pointed before its ``steps``-th latest move, i.e. the target that undoing
        its last ``steps`` moves gives back (git's ``ref@{N}``); None when the history has fewer
        moves, or the ref was not set before that move.

        ``moves`` is the ref's reflog, oldest first (:meth:`history`). A rollback is a move
        too, so rolling back one step twice returns to where it started; ``steps=N`` reaches
        further back::

            moves 1.0.0 -> 1.0.1 -> 5.0.0 -> 1.0.0 -> 6.0.0
            steps=1: 1.0.0   steps=2: 5.0.0   steps=3: 1.0.1   steps=4: 1.0.0   steps=5: None
        """
        if steps < 1 or steps > len(moves):
            return None
        return moves[-steps].old

    @staticmethod
    def previous(moves: Sequence[RefMove]) -> str | None:
        """The target a ref had before its latest move (for rollback), or None."""
        return Refs.target_before(moves, 1)
