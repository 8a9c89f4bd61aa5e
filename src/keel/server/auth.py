"""Request authentication (bearer API tokens) and role checks.

Every route depends on :func:`principal`. What the caller may do is decided
in the service layer (:mod:`keel.services.auth`, :mod:`keel.services.contract`);
``require`` and ``require_site_admin`` are re-exported for the routes that are
not service operations (the object store, the UI's pages).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from keel.errors import Unauthenticated
from keel.server.context import ServerContext, server_context
from keel.services.auth import Principal, require, require_site_admin

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
