"""Request authentication (bearer API tokens) and role checks.

Every route depends on :func:`principal`; handlers then call :func:`require`
with the project the action touches. A caller with no role on a project gets
404 (it cannot learn the project exists); a caller whose role is too low gets
403. The workspace-wide registries (prompts, models) are checked against the
``@registries`` scope, which a ``*`` grant includes (see :mod:`keel.server.auth_store`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from keel.errors import Forbidden, NotFound, Unauthenticated
from keel.server.auth_store import RANK, REGISTRIES, Principal
from keel.server.context import ServerContext, server_context

__all__ = ["Caller", "Context", "principal", "require", "require_site_admin"]

_bearer = HTTPBearer(auto_error=False, description="An API token: Authorization: Bearer keel_...")

Context = Annotated[ServerContext, Depends(server_context)]


def principal(
    context: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """FastAPI dependency: the authenticated caller (401 without a valid token)."""
    if credentials is None or not credentials.credentials:
        raise Unauthenticated("this endpoint needs an API token", "send Authorization: Bearer keel_...")
    return context.auth.authenticate(credentials.credentials)


Caller = Annotated[Principal, Depends(principal)]


def require(caller: Principal, project: str, role: str) -> None:
    """Raise unless ``caller`` holds at least ``role`` on ``project`` (a name, ``*`` or ``@registries``).

    No role at all: NotFound (404) for a project, Forbidden (403) for the registries.
    """
    have = caller.rank(project)
    if have >= RANK[role]:
        return
    if have == 0 and project not in (REGISTRIES, "*"):
        raise NotFound(f"no project {project!r}", "list the projects you can see: GET /api/v1/projects")
    what = {REGISTRIES: "the registries (prompts, models)", "*": "every project"}.get(project, f"project {project!r}")
    raise Forbidden(f"{caller.name} needs the {role} role on {what} for this", "ask an admin to grant it")


def require_site_admin(caller: Principal) -> None:
    """Raise Forbidden unless ``caller`` is a site admin."""
    if not caller.user.is_admin:
        raise Forbidden(f"{caller.name} is not a site admin", "ask a site admin to do this")
