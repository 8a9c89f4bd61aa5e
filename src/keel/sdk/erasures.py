"""``keel.sdk.erasures``: erase everything about one end user, and read the erasure audit.

::

    from keel.sdk import erasures

    reports = erasures.erase_user("u-42", dry_run=True)   # what would go, per kind and project
    reports = erasures.erase_user("u-42")                 # conversations, traces, recorded calls
    erasures.entries()                                     # the audit: who erased what, when

:func:`erase_user` erases the user's conversations (``metadata.user_id``), traces
(``user_id``, in every project) and recorded LLM calls (``metadata.user_id``), each through
its own erasure operation (the same checks and audit rows as ``keel.conversations.delete``
...). Every kind and project is counted first (a dry run, which also checks that the caller
may erase there), so a refusal leaves nothing erased. See docs/erasure.md.
"""

from __future__ import annotations

import weakref

from keel.core.erasure import ErasureEntry, ErasureReport, user_filters
from keel.errors import InvalidInput
from keel.sdk.session import Session, get_session
from keel.services.erasures import ErasureService

__all__ = ["ErasureEntry", "ErasureReport", "entries", "erase_user", "service"]

_SERVICES: weakref.WeakKeyDictionary[Session, ErasureService] = weakref.WeakKeyDictionary()


def service() -> ErasureService:
    """The erasure audit service of the current session's store (its remote proxy against a server)."""
    session = get_session(create=False)
    found = _SERVICES.get(session)
    if found is None:
        found = session._service(ErasureService, lambda: ErasureService(session.service.store))  # noqa: SLF001
        _SERVICES[session] = found
    return found


def entries(limit: int = 100, kind: str | None = None, project: str | None = None) -> list[ErasureEntry]:
    """The newest erasure audit entries first (of one kind or project when given)."""
    return list(service().entries(limit, kind, project))


def erase_user(user_id: str, *, dry_run: bool = False, reason: str = "request") -> list[tuple[str, ErasureReport]]:
    """Erase every record keel holds about end user ``user_id``: ``(project, report)`` per kind
    (project ``""`` for the workspace-wide conversations and recorded calls; traces once per
    project that holds some of the user's). With ``dry_run`` nothing changes: the reports count
    what would go (traces in every project) and list the dataset versions made from it.

    The filters are exact matches on the user id, so they may match every record of a kind
    (a store holding one user's records) and are run with ``all=True``.
    """
    from keel.sdk import conversations, llm, traces

    if not isinstance(user_id, str) or not user_id.strip():
        raise InvalidInput(f"invalid user id {user_id!r}"[:200], "give the id your app logs as metadata.user_id")
    filters = user_filters(user_id)
    session = get_session(create=False)
    projects = sorted(p.name for p, _count in session.service.list_projects())

    def run(dry: bool, trace_projects: list[str]) -> list[tuple[str, ErasureReport]]:
        found = [("", conversations.delete(filter=filters["conversations"], all=True, dry_run=dry, reason=reason))]
        for project in trace_projects:
            report = traces.delete(filter=filters["traces"], project=project, all=True, dry_run=dry, reason=reason)
            found.append((project, report))
        found.append(("", llm.delete_calls(filter=filters["llm_calls"], all=True, dry_run=dry, reason=reason)))
        return found

    plans = run(True, projects)
    if dry_run:
        return plans
    return run(False, [project for project, plan in plans if plan.kind == "traces" and plan.matched])
