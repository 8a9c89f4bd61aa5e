"""``keel.sdk.directions``: declare which way is better for a metric of a project's runs.

::

    from keel.sdk import directions

    directions.set("hallucination_free", "higher", project="chatbot")
    directions.set("tokens_used", "lower", project="chatbot")
    directions.declared("chatbot")          # {"chatbot": {"hallucination_free": "higher", ...}}
    directions.unset("tokens_used", project="chatbot")

``keel.compare`` and ``keel.gate`` read these declarations for the compared runs' projects,
after a comparison's own ``directions=`` and the runs' ``keel.direction.*`` tags (see
docs/statistics.md). Against a keel server the calls go through its service API.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

from keel.sdk.session import Session, get_session
from keel.services.directions import DirectionService

__all__ = ["declared", "service", "set", "unset"]

_SERVICES: weakref.WeakKeyDictionary[Session, DirectionService] = weakref.WeakKeyDictionary()


def service(session: Session | None = None) -> DirectionService:
    """The direction service of the current session's store (its remote proxy against a server)."""
    session = session or get_session(create=False)
    found = _SERVICES.get(session)
    if found is None:
        found = session._service(DirectionService, lambda: DirectionService(session.service.store))  # noqa: SLF001
        _SERVICES[session] = found
    return found


def set(metric: str, direction: str, project: str | None = None) -> dict[str, str]:  # noqa: A001
    """Declare ``higher`` (or ``lower``) is better for ``metric`` in ``project`` (default: ``default``)."""
    return service().set(metric, direction, project)


def unset(metric: str, project: str | None = None) -> None:
    """Remove a project's declaration for ``metric``."""
    service().unset(metric, project)


def declared(projects: str | Sequence[str] | None = None) -> dict[str, dict[str, str]]:
    """``{project: {metric: direction}}`` for the named projects (default: ``default``)."""
    return service().declared(projects)
