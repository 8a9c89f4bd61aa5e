"""Authorization, as a domain service: who the caller is, and what it may see and change.

The rows (users, tokens, grants, sessions, the audit log) are kept by
:class:`keel.meta.auth.AuthStore`; the entities and role ranks are in
:mod:`keel.core.auth`. This module holds the checks every entry point makes
through :mod:`keel.services.contract`:

- :func:`require`: the caller holds at least a role on a scope (a project,
  ``@registries`` or ``*``). No role at all on a project is the same
  :class:`~keel.errors.NotFound` as a project that does not exist; a role that
  is too low is :class:`~keel.errors.Forbidden`.
- :func:`require_site_admin`: user and token management.

A local workspace has no users: its caller is :func:`local_principal`, a site
admin, so the same code runs locally and on a server.
"""

from __future__ import annotations

from keel.core.auth import (
    RANK,
    REGISTRIES,
    ROLES,
    WORKSPACE,
    LoginLimits,
    Principal,
    TokenInfo,
    User,
    check_role,
    hash_password,
    hash_token,
    verify_password,
)
from keel.core.entities import project_not_found
from keel.errors import Forbidden
from keel.meta.auth import AuthStore

__all__ = [
    "RANK",
    "REGISTRIES",
    "ROLES",
    "WORKSPACE",
    "AuthStore",
    "LoginLimits",
    "Principal",
    "TokenInfo",
    "User",
    "check_role",
    "hash_password",
    "hash_token",
    "local_principal",
    "project_not_found",
    "require",
    "require_site_admin",
    "verify_password",
]


def require(caller: Principal, scope: str, role: str) -> None:
    """Raise unless ``caller`` holds at least ``role`` on ``scope`` (a project name, ``*`` or ``@registries``).

    No role at all: NotFound for a project (it cannot learn the project exists),
    Forbidden for the registries and ``*``; a role too low: Forbidden.
    """
    have = caller.rank(scope)
    if have >= RANK[role]:
        return
    if have == 0 and scope not in (REGISTRIES, WORKSPACE):
        raise project_not_found(scope)
    what = {REGISTRIES: "the registries (prompts, models, ...)", WORKSPACE: "every project"}.get(
        scope, f"project {scope!r}"
    )
    raise Forbidden(f"{caller.name} needs the {role} role on {what} for this", "ask an admin to grant it")


def require_site_admin(caller: Principal) -> None:
    """Raise Forbidden unless ``caller`` is a site admin."""
    if not caller.user.is_admin:
        raise Forbidden(f"{caller.name} is not a site admin", "ask a site admin to do this")


def local_principal(name: str = "local") -> Principal:
    """The caller of a local workspace (no users there): a site admin acting as ``name``."""
    user = User(0, name, True, False, 0)
    return Principal(user, TokenInfo("local", name, "local", 0, None, None))
