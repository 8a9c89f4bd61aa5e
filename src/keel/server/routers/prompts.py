"""``/prompts``: the prompt registry (workspace-wide: roles on ``@registries`` or ``*``)."""

from __future__ import annotations

from typing import Any

from fastapi import Response, status
from pydantic import BaseModel, ConfigDict, Field

from keel.server.auth import Caller, Context
from keel.server.routers import Router, operate

__all__ = ["router"]

router = Router(tags=["prompts"])


class PromptRequest(BaseModel):
    """A version to register; identical content returns the existing version (200, not 201)."""

    model_config = ConfigDict(extra="forbid")
    template: Any = Field(description="text, or a list of {role, content} messages")
    model: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)
    few_shot: Any = None
    response_schema: Any = None
    changelog: str = ""
    bump: str | None = None
    version: str | None = None


class AliasRequest(BaseModel):
    """Where an alias should point, and why (kept in the reflog): a ``version``, or ``at`` a
    time (ISO 8601 with a zone, ``1733500000s``): where the alias pointed then."""

    model_config = ConfigDict(extra="forbid")
    version: str | None = None
    at: str | int | None = Field(default=None, description="instead of version: where the alias pointed at this time")
    reason: str = ""
    expected: str | None = Field(
        default=None,
        description="the version the alias points at now, as the caller saw it ('': not set); "
        "409 if it points elsewhere. Omitted: no check",
    )


@router.get("/prompts", summary="Every prompt with its latest version")
def list_prompts(caller: Caller, context: Context) -> list[dict[str, Any]]:
    return [
        {"name": name, "latest": latest.to_dict()}
        for name, latest in operate(context, caller, "prompts", "list_prompts")
    ]


@router.get("/prompts/{name}/versions", summary="Every version of a prompt, newest first")
def versions(name: str, caller: Caller, context: Context) -> list[dict[str, Any]]:
    return [v.to_dict() for v in operate(context, caller, "prompts", "versions", name)]


@router.get("/prompts/{name}/versions/{selector}", summary="One version, by number or alias (as of ?at=)")
def get_version(name: str, selector: str, caller: Caller, context: Context, at: str | None = None) -> dict[str, Any]:
    return operate(context, caller, "prompts", "get", name, selector, at).to_dict()


@router.get("/prompts/{name}", summary="The latest version of a prompt (as of ?at=)")
def get_latest(name: str, caller: Caller, context: Context, at: str | None = None) -> dict[str, Any]:
    return operate(context, caller, "prompts", "get", name, None, at).to_dict()


@router.post("/prompts/{name}/versions", status_code=status.HTTP_201_CREATED, summary="Register a version")
def register(name: str, body: PromptRequest, caller: Caller, context: Context, response: Response) -> dict[str, Any]:
    version, created = operate(
        context,
        caller,
        "prompts",
        "register",
        name,
        body.template,
        model=body.model,
        parameters=body.parameters,
        few_shot=body.few_shot,
        response_schema=body.response_schema,
        changelog=body.changelog,
        bump=body.bump,
        version=body.version,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return {**version.to_dict(), "created": created}


@router.put("/prompts/{name}/aliases/{alias}", summary="Point an alias at a version (logged)")
def set_alias(name: str, alias: str, body: AliasRequest, caller: Caller, context: Context) -> dict[str, Any]:
    return operate(
        context,
        caller,
        "prompts",
        "set_alias",
        name,
        alias,
        body.version,
        body.reason,
        expected=body.expected,
        at=body.at,
    ).to_dict()


@router.delete("/prompts/{name}/aliases/{alias}", summary="Remove an alias (logged)")
def delete_alias(
    name: str, alias: str, caller: Caller, context: Context, reason: str = "", expected: str | None = None
) -> dict[str, Any]:
    return operate(context, caller, "prompts", "delete_alias", name, alias, reason, expected=expected).to_dict()


@router.post("/prompts/{name}/aliases/{alias}/rollback", summary="Undo an alias's last move (or last ?steps=N)")
def rollback(
    name: str,
    alias: str,
    caller: Caller,
    context: Context,
    reason: str = "",
    expected: str | None = None,
    steps: int = 1,
) -> dict[str, Any]:
    return operate(
        context, caller, "prompts", "rollback", name, alias, reason, expected=expected, steps=steps
    ).to_dict()


@router.get("/prompts/{name}/history", summary="Every alias move (or one alias's), oldest first")
def history(name: str, caller: Caller, context: Context, alias: str | None = None) -> list[dict[str, Any]]:
    return [move.to_dict() for move in operate(context, caller, "prompts", "history", name, alias)]
