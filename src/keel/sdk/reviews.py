"""Protected refs and change requests, from Python (see :mod:`keel.services.reviews`).

Example::

    import keel

    keel.reviews.protect("prompt", "chat", "production", approvals=1)
    cr = keel.reviews.request("prompt", "chat", "production", "1.3.0", reason="+5% exact match", runs=[run.id])
    keel.reviews.approve(cr.id, comment="numbers check out", who="bob")  # production -> 1.3.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from keel.meta.refs import RefMove
from keel.meta.reviews import ChangeRequestRow, RuleRow
from keel.sdk.session import get_session

__all__ = [
    "approve",
    "break_glass",
    "changes",
    "get",
    "history",
    "list_requests",
    "protect",
    "reject",
    "request",
    "rules",
    "unprotect",
]


def protect(
    kind: str, name: str, ref: str, approvals: int = 1, self_approval: bool = False, who: str | None = None
) -> RuleRow:
    """Protect ``ref`` of ``kind`` ``name`` (``*``: the whole registry); moves then need approvals."""
    return get_session().reviews.protect(kind, name, ref, approvals, self_approval, who)


def unprotect(kind: str, name: str, ref: str, reason: str = "", who: str | None = None) -> RefMove:
    """Remove a protection rule (logged)."""
    return get_session().reviews.unprotect(kind, name, ref, reason, who)


def rules() -> list[RuleRow]:
    """Every protection rule."""
    return get_session().reviews.rules()


def request(
    kind: str,
    name: str,
    ref: str,
    target: str,
    reason: str = "",
    runs: Sequence[str] | None = None,
    comparison: Mapping[str, Any] | None = None,
    who: str | None = None,
) -> ChangeRequestRow:
    """Ask to move a protected ref to ``target``, with a reason and evidence (run ids, a comparison)."""
    return get_session().reviews.request(kind, name, ref, str(target), reason, runs, comparison, who)


def _moved(row: ChangeRequestRow) -> ChangeRequestRow:
    """Forget this process's cached prompt references after a move it made (as set_alias does)."""
    if row.kind == "prompt" and row.status in ("applied", "forced"):
        from keel.sdk.prompts import _forget

        _forget(row.name)
    return row


def approve(request_id: int, comment: str = "", who: str | None = None) -> ChangeRequestRow:
    """Approve a change request; the approval reaching the required count applies the move."""
    return _moved(get_session().reviews.approve(request_id, comment, who))


def reject(request_id: int, comment: str = "", who: str | None = None) -> ChangeRequestRow:
    """Reject a change request (nothing moves)."""
    return get_session().reviews.reject(request_id, comment, who)


def get(request_id: int) -> ChangeRequestRow:
    """One change request with its reviews."""
    return get_session().reviews.get(request_id)


def list_requests(
    status: str | None = None, kind: str | None = None, name: str | None = None, limit: int = 100
) -> list[ChangeRequestRow]:
    """Change requests, newest first."""
    return get_session().reviews.list_requests(status, kind, name, limit)


def history(request_id: int) -> list[RefMove]:
    """Every step of a change request, oldest first."""
    return get_session().reviews.history(request_id)


def changes(request_id: int) -> dict[str, Any]:
    """What a change request changes (a prompt's diff, a model's versions, a flag's definitions)."""
    return get_session().reviews.changes(request_id)


def break_glass(kind: str, name: str, ref: str, target: str, reason: str, who: str | None = None) -> ChangeRequestRow:
    """Move a protected ref now (admin; the reason is recorded)."""
    return _moved(get_session().reviews.break_glass(kind, name, ref, str(target), reason, who))
