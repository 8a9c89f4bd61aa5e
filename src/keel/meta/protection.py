"""Protected refs: the one check every ref move passes.

A rule in ``protected_refs`` protects ``ref`` of ``kind`` ``name`` (``*``: every entry of
the registry). Every ref move in keel appends a reflog row, and both writers of the reflog
(:meth:`keel.meta.refs.Refs._log` and :meth:`keel.meta.models.RawModels.log`) call
:func:`guard` first, inside the move's transaction. So no path moves a protected ref
unnoticed, whichever service, route or importer it comes from: the guard raises
:class:`~keel.errors.Conflict` and the transaction (the new version row, the ref, ...) rolls
back whole.

A move passes when the task holds a :class:`Permit` for it (:func:`permitted`), which only
:mod:`keel.services.reviews` grants: while it applies an approved change request, or an
admin's break glass with a recorded reason. Permits live in a ``ContextVar``, so they are
per thread and per task, never process-wide.

What a protected ref name means per kind (see :func:`protected_names`):

==========  ===============================================================================
``prompt``  an alias (``production``)
``model``   an alias (``champion``), or a stage as ``stage:Production`` (every move of a
            version into or out of that stage, archivals included)
``kb``      an alias of a knowledge-base version
``flag``    an environment (``production``): every change of the flag there
``abtest``  ``start``: an experiment's move from draft to running
==========  ===============================================================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from keel.errors import Conflict

__all__ = ["KINDS", "Permit", "guard", "permitted", "protected_names"]

#: The registries whose refs can be protected.
KINDS = ("prompt", "model", "kb", "flag", "abtest")

#: ``fetch(sql, params) -> rows``: runs a query in the caller's transaction.
Fetch = Callable[[str, Sequence[Any]], Sequence[Any]]

#: The reflog's kind of a registry where it differs from the name a rule uses.
_REFLOG_KINDS = {"experiment": "abtest"}

_RULES = "SELECT ref FROM protected_refs WHERE kind = ? AND (name = ? OR name = '*')"


@dataclass(frozen=True)
class Permit:
    """Leave to move protected ``ref`` (a rule's ref name) of ``kind`` ``name``; ``why`` says by
    what right (``change request 4``, ``break glass``)."""

    kind: str
    name: str
    ref: str
    why: str


_PERMITS: ContextVar[tuple[Permit, ...]] = ContextVar("keel_ref_permits", default=())


@contextlib.contextmanager
def permitted(permit: Permit) -> Iterator[None]:
    """Within the block (this thread or task only), moves of ``permit``'s ref pass the guard."""
    token = _PERMITS.set((*_PERMITS.get(), permit))
    try:
        yield
    finally:
        _PERMITS.reset(token)


def protected_names(kind: str, ref: str, old: str | None, new: str | None) -> list[str]:
    """The protected-ref names a move of ``ref`` (``old`` -> ``new``) touches."""
    if kind == "model" and ref.startswith("stage:"):
        return [f"stage:{stage}" for stage in dict.fromkeys((old, new)) if stage and stage != "None"]
    if kind == "abtest":
        return ["start"] if ref == "status" and new == "running" else []
    return [ref]


def _target_hint(kind: str, ref: str, new: str | None) -> str:
    """What to type as the change request's target for this move."""
    if kind == "model" and ref.startswith("stage:"):
        return ref[6:]  # the version moving into or out of the stage
    if kind == "flag":
        return "'DEFINITION_JSON'"  # the flag's new definition, e.g. '{"rollout": 50}'
    return "VERSION" if new is None else new


def guard(fetch: Fetch, kind: str, name: str, ref: str, old: str | None, new: str | None) -> None:
    """Raise Conflict if this move touches a protected ref the task holds no permit for.
    Called by the reflog writers inside the move's transaction (see the module doc)."""
    kind = _REFLOG_KINDS.get(kind, kind)
    if kind not in KINDS:
        return
    touched = protected_names(kind, ref, old, new)
    if not touched:
        return
    rules = {str(row[0]) for row in fetch(_RULES, (kind, name))}
    permits = _PERMITS.get()
    for protected in touched:
        if protected not in rules:
            continue
        if any(p.kind == kind and p.name == name and p.ref == protected for p in permits):
            continue
        target = _target_hint(kind, ref, new)
        raise Conflict(
            f"{protected!r} of {kind} {name!r} is protected: it moves only through an approved change request",
            f"ask for a review: keel review request {kind} {name} {protected} {target} --reason TEXT"
            f" (an admin may force it: keel review break-glass {kind} {name} {protected} {target} --reason TEXT)",
        )
