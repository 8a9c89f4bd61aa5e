"""``keel.sdk.retention``: retention policies and purging deleted runs from Python (docs/retention.md).

::

    from keel.sdk import retention

    retention.set("conversations", "30d")           # workspace-wide (@registries)
    retention.set("traces", "90d", project="chatbot")
    retention.show()                                # [{"project", "kind", "max_age", ...}]
    retention.apply(dry_run=True)                   # what would expire now, per policy
    retention.purge_runs(older_than="30d")          # deleted runs, permanently

Against a keel server (``KEEL_URI=http(s)://...``) the same calls go through the service
API; the server applies retention on its own schedule as well.
"""

from __future__ import annotations

import weakref
from typing import Any

from keel.core.erasure import ErasureReport
from keel.sdk.session import Session, get_session
from keel.services.retention import RetentionService

__all__ = ["apply", "purge_runs", "service", "set", "show", "unset"]

_SERVICES: weakref.WeakKeyDictionary[Session, RetentionService] = weakref.WeakKeyDictionary()


def service() -> RetentionService:
    """The retention service of the current session's store (its remote proxy against a server)."""
    session = get_session(create=False)
    found = _SERVICES.get(session)
    if found is None:
        found = session._service(  # noqa: SLF001
            RetentionService, lambda: RetentionService(session.service.store, session.service)
        )
        _SERVICES[session] = found
    return found


def set(kind: str, max_age: str, project: str | None = None) -> dict[str, Any] | None:  # noqa: A001
    """Keep records of ``kind`` (``conversations``, ``llm_calls``, ``traces``) at most ``max_age``
    (``30d``); traces per ``project``, the others workspace-wide."""
    return service().set(project, kind, max_age)


def unset(kind: str, project: str | None = None) -> None:
    """Remove a policy: records of ``kind`` are kept forever again."""
    service().set(project, kind, None)


def show() -> list[dict[str, Any]]:
    """Every policy the caller may read."""
    return service().show()


def apply(dry_run: bool = False) -> list[ErasureReport]:
    """Expire what the policies say now (admin on every project); a report per policy."""
    return service().apply(dry_run=dry_run)


def purge_runs(
    run_ids: list[str] | None = None,
    *,
    project: str | None = None,
    older_than: str | None = None,
    dry_run: bool = False,
) -> ErasureReport:
    """Permanently remove deleted runs (see :meth:`keel.services.tracking.TrackingService.purge_runs`)."""
    session = get_session(create=False)
    session.writer.flush()
    return session.service.purge_runs(project, older_than, run_ids or None, dry_run=dry_run)
