"""Protection rules, change requests and their reviews: the rows (see :mod:`keel.services.reviews`).

Every statement takes the caller's :class:`keel.meta.dbapi.Connection`, so a review, the
move it applies and their reflog rows commit together. A request's row is locked for the
rest of the transaction by :meth:`ReviewStore.lock_request` (PostgreSQL: ``FOR UPDATE``;
SQLite: write transactions already exclude each other), so two approvals of one request
take turns and the move is applied once.

The reflog records every step: a rule's change as kind ``protection`` (name
``KIND:NAME``, ref = the protected ref, targets ``approvals=N self=yes|no``), each step of
a request as kind ``review`` (name = the request id, ref ``status``, targets the status;
an approval that does not yet apply keeps ``open`` and says who approved in the reason).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from keel.core.entities import now_ms
from keel.meta.refs import RefMove, Refs

__all__ = ["ChangeRequestRow", "ReviewRow", "ReviewStore", "RuleRow"]


@dataclass(frozen=True)
class RuleRow:
    """A protection rule: ``ref`` of ``kind`` ``name`` (``*``: every entry) needs ``approvals``."""

    kind: str
    name: str
    ref: str
    approvals: int
    self_approval: bool
    created_by: str
    created_at: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class ReviewRow:
    """One reviewer's verdict (``approve`` or ``reject``) on a request."""

    reviewer: str
    verdict: str
    comment: str
    at: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class ChangeRequestRow:
    """A change request: move ``ref`` of ``kind`` ``name`` from ``from_target`` to ``to_target``."""

    id: int
    kind: str
    name: str
    ref: str
    from_target: str | None
    to_target: str
    requester: str
    reason: str
    evidence: dict[str, Any]
    required: int
    self_approval: bool
    status: str
    created_at: int
    updated_at: int
    reviews: list[ReviewRow] = field(default_factory=list)

    @property
    def approvals(self) -> int:
        """How many reviewers approved it."""
        return sum(1 for r in self.reviews if r.verdict == "approve")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (reviews included)."""
        out = {k: v for k, v in self.__dict__.items() if k != "reviews"}
        out["approvals"] = self.approvals
        out["reviews"] = [r.to_dict() for r in self.reviews]
        return out


_RULE_COLS = "kind, name, ref, approvals, self_approval, created_by, created_at"
_REQ_COLS = (
    "id, kind, name, ref, from_target, to_target, requester, reason, evidence, required, self_approval, "
    "status, created_at, updated_at"
)
_SQL_RULE = f"SELECT {_RULE_COLS} FROM protected_refs WHERE kind = ? AND name = ? AND ref = ?"
_SQL_MATCHING_RULES = (
    f"SELECT {_RULE_COLS} FROM protected_refs WHERE kind = ? AND (name = ? OR name = '*') AND ref = ? "
    "ORDER BY approvals DESC"
)
_SQL_RULES = f"SELECT {_RULE_COLS} FROM protected_refs ORDER BY kind, name, ref"
_SQL_NEW_RULE = (
    "INSERT INTO protected_refs (kind, name, ref, approvals, self_approval, created_by, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SQL_UPDATE_RULE = "UPDATE protected_refs SET approvals = ?, self_approval = ? WHERE kind = ? AND name = ? AND ref = ?"
_SQL_DROP_RULE = "DELETE FROM protected_refs WHERE kind = ? AND name = ? AND ref = ?"
_SQL_NEW_REQUEST = (
    "INSERT INTO change_requests (kind, name, ref, from_target, to_target, requester, reason, evidence, required, "
    "self_approval, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
_SQL_REQUEST = f"SELECT {_REQ_COLS} FROM change_requests WHERE id = ?"
_SQL_LOCK_REQUEST = _SQL_REQUEST + " FOR UPDATE"
_SQL_REQUESTS = f"SELECT {_REQ_COLS} FROM change_requests"
_SQL_SET_STATUS = "UPDATE change_requests SET status = ?, updated_at = ? WHERE id = ?"
_SQL_REVIEWS = "SELECT reviewer, verdict, comment, at FROM change_reviews WHERE request_id = ? ORDER BY at, id"
_SQL_NEW_REVIEW = "INSERT INTO change_reviews (request_id, reviewer, verdict, comment, at) VALUES (?, ?, ?, ?, ?)"


def _rule(row: Any) -> RuleRow:
    return RuleRow(row[0], row[1], row[2], int(row[3]), bool(row[4]), row[5], int(row[6]))


def _request(row: Any, reviews: list[ReviewRow]) -> ChangeRequestRow:
    return ChangeRequestRow(
        int(row[0]),
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        json.loads(row[8] or "{}"),
        int(row[9]),
        bool(row[10]),
        row[11],
        int(row[12]),
        int(row[13]),
        reviews,
    )


def _rule_label(approvals: int, self_approval: bool) -> str:
    return f"approvals={approvals} self={'yes' if self_approval else 'no'}"


class ReviewStore:
    """The statements of protection rules and change requests (static: they take a connection)."""

    # -- rules ------------------------------------------------------------------------------
    @staticmethod
    def rule(conn: Any, kind: str, name: str, ref: str) -> RuleRow | None:
        """The rule stored for exactly ``(kind, name, ref)``, or None."""
        row = conn.execute(_SQL_RULE, (kind, name, ref)).first()
        return None if row is None else _rule(row)

    @staticmethod
    def matching_rule(conn: Any, kind: str, name: str, ref: str) -> RuleRow | None:
        """The strictest rule protecting ``ref`` of ``kind`` ``name`` (its own or the registry's ``*``)."""
        row = conn.execute(_SQL_MATCHING_RULES, (kind, name, ref)).first()
        return None if row is None else _rule(row)

    @staticmethod
    def rules(conn: Any) -> list[RuleRow]:
        """Every rule, by kind, name and ref."""
        return [_rule(row) for row in conn.execute(_SQL_RULES).all()]

    @staticmethod
    def protect(conn: Any, kind: str, name: str, ref: str, approvals: int, self_approval: bool, who: str) -> RefMove:
        """Create or change a rule; logged (kind ``protection``)."""
        Refs.lock(conn, "protection", f"{kind}:{name}")
        found = ReviewStore.rule(conn, kind, name, ref)
        if found is None:
            conn.execute(_SQL_NEW_RULE, (kind, name, ref, approvals, int(self_approval), who, now_ms()))
        else:
            conn.execute(_SQL_UPDATE_RULE, (approvals, int(self_approval), kind, name, ref))
        return Refs.set(
            conn, "protection", f"{kind}:{name}", ref, _rule_label(approvals, self_approval), who, "protected"
        )

    @staticmethod
    def unprotect(conn: Any, kind: str, name: str, ref: str, who: str, reason: str) -> RefMove | None:
        """Remove a rule (logged); None if there was none."""
        Refs.lock(conn, "protection", f"{kind}:{name}")
        if ReviewStore.rule(conn, kind, name, ref) is None:
            return None
        conn.execute(_SQL_DROP_RULE, (kind, name, ref))
        return Refs.delete(conn, "protection", f"{kind}:{name}", ref, who, reason or "unprotected")

    # -- requests ---------------------------------------------------------------------------
    @staticmethod
    def create(
        conn: Any,
        kind: str,
        name: str,
        ref: str,
        from_target: str | None,
        to_target: str,
        requester: str,
        reason: str,
        evidence: dict[str, Any],
        required: int,
        self_approval: bool,
        status: str = "open",
    ) -> int:
        """Insert a request; returns its id (the caller logs the step)."""
        at = now_ms()
        row = conn.execute(
            _SQL_NEW_REQUEST,
            (
                kind,
                name,
                ref,
                from_target,
                to_target,
                requester,
                reason,
                json.dumps(evidence, sort_keys=True),
                required,
                int(self_approval),
                status,
                at,
                at,
            ),
        ).first()
        return int(row[0])

    @staticmethod
    def get(conn: Any, request_id: int) -> ChangeRequestRow | None:
        """One request with its reviews, or None."""
        row = conn.execute(_SQL_REQUEST, (request_id,)).first()
        if row is None:
            return None
        return _request(row, ReviewStore.reviews(conn, request_id))

    @staticmethod
    def lock_request(conn: Any, request_id: int) -> ChangeRequestRow | None:
        """One request, its row locked until the transaction ends (see the module doc), or None."""
        sql = _SQL_LOCK_REQUEST if conn.dialect.name == "postgresql" else _SQL_REQUEST
        row = conn.execute(sql, (request_id,)).first()
        if row is None:
            return None
        return _request(row, ReviewStore.reviews(conn, request_id))

    @staticmethod
    def reviews(conn: Any, request_id: int) -> list[ReviewRow]:
        """A request's reviews, oldest first."""
        rows = conn.execute(_SQL_REVIEWS, (request_id,)).all()
        return [ReviewRow(r[0], r[1], r[2], int(r[3])) for r in rows]

    @staticmethod
    def requests(
        conn: Any, status: str | None = None, kind: str | None = None, name: str | None = None, limit: int = 100
    ) -> list[ChangeRequestRow]:
        """Requests, newest first, optionally of one status, kind and name (reviews not loaded)."""
        where, args = [], []
        for column, value in (("status", status), ("kind", kind), ("name", name)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = _SQL_REQUESTS + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
        return [_request(row, []) for row in conn.execute(sql, (*args, limit)).all()]

    @staticmethod
    def add_review(conn: Any, request_id: int, reviewer: str, verdict: str, comment: str) -> None:
        """Record one reviewer's verdict (the caller checked they had none yet)."""
        conn.execute(_SQL_NEW_REVIEW, (request_id, reviewer, verdict, comment, now_ms()))

    @staticmethod
    def set_status(conn: Any, request_id: int, status: str) -> None:
        """Change a request's status."""
        conn.execute(_SQL_SET_STATUS, (status, now_ms(), request_id))

    @staticmethod
    def log(conn: Any, request_id: int, old: str | None, new: str, who: str, reason: str) -> RefMove:
        """Append a step of a request to the reflog (kind ``review``, name = its id)."""
        return Refs.set(conn, "review", str(request_id), "status", new, who, reason, expected=old or "")

    @staticmethod
    def history(conn: Any, request_id: int) -> list[RefMove]:
        """Every step of a request, oldest first."""
        return Refs.history(conn, "review", str(request_id), "status")
