"""``/auth`` (who am I, my tokens) and ``/admin`` (users, anyone's tokens, grants, audit)."""

from __future__ import annotations

from typing import Any

from fastapi import status
from pydantic import BaseModel, ConfigDict, Field

from keel.core.entities import now_ms
from keel.errors import Forbidden, InvalidInput
from keel.server.auth import Caller, Context, require_site_admin
from keel.server.routers import Router

__all__ = ["router"]

router = Router(tags=["auth"])

_DAY_MS = 86_400_000


class TokenRequest(BaseModel):
    """A new token: a label and a lifetime."""

    model_config = ConfigDict(extra="forbid")
    name: str = ""
    expires_in_days: float | None = Field(default=90, gt=0, description="null: never expires")


class UserRequest(BaseModel):
    """A new user."""

    model_config = ConfigDict(extra="forbid")
    name: str
    is_admin: bool = False


class UserUpdate(BaseModel):
    """Enable or disable a user."""

    model_config = ConfigDict(extra="forbid")
    disabled: bool


def _expiry(request: TokenRequest, cap: int | None) -> int | None:
    expires = None if request.expires_in_days is None else now_ms() + int(request.expires_in_days * _DAY_MS)
    if cap is not None and (expires is None or expires > cap):
        # A token may not outlive the token that created it.
        raise InvalidInput("a new token cannot outlive the token used to create it", "ask for a shorter expiry")
    return expires


@router.get("/auth/whoami", summary="The caller: user, token and roles")
def whoami(caller: Caller) -> dict[str, Any]:
    return {"user": caller.user.to_dict(), "token": caller.token.to_dict(), "grants": caller.grants}


@router.get("/auth/tokens", summary="The caller's tokens (never their secrets)")
def my_tokens(caller: Caller, context: Context) -> list[dict[str, Any]]:
    return [t.to_dict() for t in context.auth.list_tokens(caller.name)]


@router.post("/auth/tokens", status_code=status.HTTP_201_CREATED, summary="Create a token for the caller")
def create_my_token(body: TokenRequest, caller: Caller, context: Context) -> dict[str, Any]:
    expires = _expiry(body, caller.token.expires_at)
    secret, info = context.auth.create_token(caller.name, body.name, expires, caller.name)
    return {"token": secret, **info.to_dict()}


@router.delete("/auth/tokens/{token_id}", summary="Revoke one of the caller's tokens")
def revoke_my_token(token_id: str, caller: Caller, context: Context) -> dict[str, Any]:
    info = context.auth.get_token(token_id)
    if info.user != caller.name and not caller.user.is_admin:
        raise Forbidden("this token belongs to another user", "ask a site admin to revoke it")
    return context.auth.revoke_token(token_id, caller.name).to_dict()


# -- site administration -------------------------------------------------------------------
@router.get("/admin/users", tags=["admin"], summary="Every user")
def list_users(caller: Caller, context: Context) -> list[dict[str, Any]]:
    require_site_admin(caller)
    return [u.to_dict() for u in context.auth.list_users()]


@router.post("/admin/users", tags=["admin"], status_code=status.HTTP_201_CREATED, summary="Create a user")
def create_user(body: UserRequest, caller: Caller, context: Context) -> dict[str, Any]:
    require_site_admin(caller)
    return context.auth.create_user(body.name, body.is_admin, caller.name).to_dict()


@router.patch("/admin/users/{name}", tags=["admin"], summary="Disable or enable a user")
def update_user(name: str, body: UserUpdate, caller: Caller, context: Context) -> dict[str, Any]:
    require_site_admin(caller)
    return context.auth.set_disabled(name, body.disabled, caller.name).to_dict()


@router.post(
    "/admin/users/{name}/tokens",
    tags=["admin"],
    status_code=status.HTTP_201_CREATED,
    summary="Create a token for a user (the secret is in this response only)",
)
def create_token(name: str, body: TokenRequest, caller: Caller, context: Context) -> dict[str, Any]:
    require_site_admin(caller)
    secret, info = context.auth.create_token(name, body.name, _expiry(body, None), caller.name)
    return {"token": secret, **info.to_dict()}


@router.get("/admin/tokens", tags=["admin"], summary="Tokens of every user, or of one")
def list_tokens(caller: Caller, context: Context, user: str | None = None) -> list[dict[str, Any]]:
    require_site_admin(caller)
    return [t.to_dict() for t in context.auth.list_tokens(user)]


@router.get("/admin/grants", tags=["admin"], summary="Role grants, by user and/or project")
def list_grants(
    caller: Caller, context: Context, user: str | None = None, project: str | None = None
) -> list[dict[str, Any]]:
    require_site_admin(caller)
    return context.auth.grants(user, project)


@router.get("/admin/audit", tags=["admin"], summary="The latest admin actions, newest first")
def audit(caller: Caller, context: Context, limit: int = 100) -> list[dict[str, Any]]:
    require_site_admin(caller)
    if not 1 <= limit <= 10_000:
        raise InvalidInput(f"invalid limit {limit}", "use 1..10000")
    return context.auth.audit_log(limit)
