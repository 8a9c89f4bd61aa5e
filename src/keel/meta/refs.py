"""Refs and the reflog: the only mutable state, with every move recorded.

A ref is ``(kind, name, ref) -> target``: e.g. ``("prompt", "chat",
"production") -> "1.3.0"``. Every set, move and delete appends a reflog row
(old target, new target, when, who, why) in the same transaction, so
"what did production point at, at time T" and "roll back" are queries over
the reflog, never guesses. Registries (prompts, later models and flags)
share this one implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update

from keel.core.digests import reflog_digest
from keel.core.entities import now_ms
from keel.errors import NotFound
from keel.meta.schema import reflog, refs

__all__ = ["RefMove", "Refs"]


@dataclass(frozen=True)
class RefMove:
    """One reflog entry: ``ref`` moved from ``old`` to ``new`` (None: unset/deleted)."""

    kind: str
    name: str
    ref: str
    old: str | None
    new: str | None
    at: int
    who: str
    reason: str

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
        }


def _move(row: Any) -> RefMove:
    return RefMove(row.kind, row.name, row.ref, row.old_target, row.new_target, int(row.at), row.who, row.reason)


class Refs:
    """Reads and moves refs; moves take the caller's connection (one transaction)."""

    # -- moves (inside a write transaction) --------------------------------------
    @staticmethod
    def current(conn: Any, kind: str, name: str, ref: str) -> str | None:
        """The target of a ref now, or None."""
        found = conn.execute(
            select(refs.c.target).where(refs.c.kind == kind, refs.c.name == name, refs.c.ref == ref)
        ).scalar()
        return None if found is None else str(found)

    @classmethod
    def set(cls, conn: Any, kind: str, name: str, ref: str, target: str, who: str = "", reason: str = "") -> RefMove:
        """Point ``ref`` at ``target`` and log the move (a no-op move is still logged: it was asked for)."""
        old = cls.current(conn, kind, name, ref)
        at = now_ms()
        if old is None:
            conn.execute(insert(refs).values(kind=kind, name=name, ref=ref, target=target, updated_at=at))
        else:
            conn.execute(
                update(refs)
                .where(refs.c.kind == kind, refs.c.name == name, refs.c.ref == ref)
                .values(target=target, updated_at=at)
            )
        move = RefMove(kind, name, ref, old, target, at, who, reason)
        cls._log(conn, move)
        return move

    @classmethod
    def delete(cls, conn: Any, kind: str, name: str, ref: str, who: str = "", reason: str = "") -> RefMove:
        """Remove ``ref`` (logged); raise NotFound if it does not exist."""
        old = cls.current(conn, kind, name, ref)
        if old is None:
            raise NotFound(f"{kind} {name!r} has no alias {ref!r}", f"list aliases with 'keel {kind}s show {name}'")
        conn.execute(delete(refs).where(refs.c.kind == kind, refs.c.name == name, refs.c.ref == ref))
        move = RefMove(kind, name, ref, old, None, now_ms(), who, reason)
        cls._log(conn, move)
        return move

    @staticmethod
    def _log(conn: Any, move: RefMove) -> None:
        # Each entry's digest covers the ref's previous entry's (keel.core.digests), so
        # 'keel verify' finds a changed, removed or reordered entry. Read after the ref's
        # lock and row write: two moves of one ref take turns, and chain in that order.
        previous = conn.execute(
            select(reflog.c.digest)
            .where(reflog.c.kind == move.kind, reflog.c.name == move.name, reflog.c.ref == move.ref)
            .order_by(reflog.c.id.desc())
            .limit(1)
        ).scalar()
        fields = (move.kind, move.name, move.ref, move.old, move.new, move.at, move.who, move.reason)
        conn.execute(
            insert(reflog).values(
                kind=move.kind,
                name=move.name,
                ref=move.ref,
                old_target=move.old,
                new_target=move.new,
                at=move.at,
                who=move.who,
                reason=move.reason,
                digest=reflog_digest(previous, *fields),
            )
        )

    # -- queries ----------------------------------------------------------------------
    @staticmethod
    def all_for(conn: Any, kind: str, name: str) -> dict[str, str]:
        """Every ref of one entity: ``{ref: target}``."""
        rows = conn.execute(
            select(refs.c.ref, refs.c.target).where(refs.c.kind == kind, refs.c.name == name).order_by(refs.c.ref)
        ).all()
        return {r: t for r, t in rows}

    @staticmethod
    def history(conn: Any, kind: str, name: str, ref: str | None = None) -> list[RefMove]:
        """The reflog of one entity (or one of its refs), oldest first."""
        query = select(reflog).where(reflog.c.kind == kind, reflog.c.name == name)
        if ref is not None:
            query = query.where(reflog.c.ref == ref)
        return [_move(row) for row in conn.execute(query.order_by(reflog.c.at, reflog.c.id))]

    @staticmethod
    def at(conn: Any, kind: str, name: str, ref: str, when: int) -> str | None:
        """Where ``ref`` pointed at time ``when`` (ms since the epoch), or None."""
        row = conn.execute(
            select(reflog.c.new_target)
            .where(reflog.c.kind == kind, reflog.c.name == name, reflog.c.ref == ref, reflog.c.at <= when)
            .order_by(reflog.c.at.desc(), reflog.c.id.desc())
            .limit(1)
        ).first()
        return None if row is None else row[0]

    @staticmethod
    def previous(moves: Sequence[RefMove]) -> str | None:
        """The target a ref had before its latest move (for rollback), or None."""
        return moves[-1].old if moves else None
