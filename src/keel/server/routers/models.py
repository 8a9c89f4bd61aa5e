"""``/models``: the model registry (workspace-wide: roles on ``@registries`` or ``*``)."""

from __future__ import annotations

from typing import Any

from fastapi import status
from pydantic import BaseModel, ConfigDict, Field

from keel.server.auth import Caller, Context
from keel.server.routers import Router, operate

__all__ = ["router"]

router = Router(tags=["models"])


class ModelVersionRequest(BaseModel):
    """A version to register: ``runs:/RUN_ID/PATH``, a path or a URI."""

    model_config = ConfigDict(extra="forbid")
    source: str
    run_id: str | None = None
    card: dict[str, Any] | None = None
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)


class StageRequest(BaseModel):
    """A stage move (None, Staging, Production, Archived), and why."""

    model_config = ConfigDict(extra="forbid")
    stage: str
    archive_existing: bool = False
    reason: str = ""
    expected: str | None = Field(
        default=None, description="the stage the version is in now, as the caller saw it; 409 if it is in another"
    )


class AliasRequest(BaseModel):
    """Where an alias should point, and why: a ``version``, or ``at`` a time (ISO 8601 with a
    zone, ``1733500000s``): where the alias pointed then."""

    model_config = ConfigDict(extra="forbid")
    version: int | None = None
    at: str | int | None = Field(default=None, description="instead of version: where the alias pointed at this time")
    reason: str = ""
    expected: int | str | None = Field(
        default=None,
        description="the version the alias points at now, as the caller saw it ('': not set); "
        "409 if it points elsewhere. Omitted: no check",
    )


@router.get("/models", summary="Every registered model")
def list_models(caller: Caller, context: Context) -> list[dict[str, Any]]:
    return [m.to_dict() for m in operate(context, caller, "models", "list_models")]


@router.get("/models/{name}", summary="A registered model with its stages and aliases")
def get_model(name: str, caller: Caller, context: Context) -> dict[str, Any]:
    return operate(context, caller, "models", "get_model", name).to_dict()


@router.get("/models/{name}/versions", summary="Every version, newest first")
def versions(name: str, caller: Caller, context: Context) -> list[dict[str, Any]]:
    return [v.to_dict() for v in operate(context, caller, "models", "versions", name)]


@router.get("/models/{name}/versions/{version}", summary="One version by number")
def get_version(name: str, version: int, caller: Caller, context: Context) -> dict[str, Any]:
    return operate(context, caller, "models", "get", name, version=version).to_dict()


@router.get("/models/{name}/stages/{stage}", summary="The highest version in a stage (as of ?at=)")
def get_stage(name: str, stage: str, caller: Caller, context: Context, at: str | None = None) -> dict[str, Any]:
    return operate(context, caller, "models", "get", name, stage=stage, at=at).to_dict()


@router.get("/models/{name}/aliases/{alias}", summary="The version an alias points at (as of ?at=)")
def get_alias(name: str, alias: str, caller: Caller, context: Context, at: str | None = None) -> dict[str, Any]:
    return operate(context, caller, "models", "get", name, alias=alias, at=at).to_dict()


@router.post("/models/{name}/versions", status_code=status.HTTP_201_CREATED, summary="Register the next version")
def register(name: str, body: ModelVersionRequest, caller: Caller, context: Context) -> dict[str, Any]:
    version = operate(
        context, caller, "models", "register", name, body.source, body.run_id, body.card, body.description, body.tags
    )
    return version.to_dict()


@router.put("/models/{name}/versions/{version}/stage", summary="Move a version to a stage (logged)")
def transition_stage(name: str, version: int, body: StageRequest, caller: Caller, context: Context) -> dict[str, Any]:
    moved = operate(
        context,
        caller,
        "models",
        "transition_stage",
        name,
        version,
        body.stage,
        body.archive_existing,
        body.reason,
        expected=body.expected,
    )
    return moved.to_dict()


@router.put("/models/{name}/aliases/{alias}", summary="Point an alias at a version (logged)")
def set_alias(name: str, alias: str, body: AliasRequest, caller: Caller, context: Context) -> dict[str, Any]:
    return operate(
        context,
        caller,
        "models",
        "set_alias",
        name,
        alias,
        body.version,
        body.reason,
        expected=body.expected,
        at=body.at,
    ).to_dict()


@router.post("/models/{name}/aliases/{alias}/rollback", summary="Undo an alias's last move (or last ?steps=N)")
def rollback(
    name: str,
    alias: str,
    caller: Caller,
    context: Context,
    reason: str = "",
    expected: int | str | None = None,
    steps: int = 1,
) -> dict[str, Any]:
    return operate(
        context, caller, "models", "rollback", name, alias, reason=reason, expected=expected, steps=steps
    ).to_dict()


@router.delete("/models/{name}/aliases/{alias}", summary="Remove an alias (logged)")
def delete_alias(
    name: str, alias: str, caller: Caller, context: Context, reason: str = "", expected: str | None = None
) -> dict[str, Any]:
    return operate(context, caller, "models", "delete_alias", name, alias, reason, expected=expected).to_dict()


@router.delete("/models/{name}/versions/{version}", summary="Delete a version (logged; 'as of' still finds it)")
def delete_version(name: str, version: int, caller: Caller, context: Context, reason: str = "") -> list[dict[str, Any]]:
    return [m.to_dict() for m in operate(context, caller, "models", "delete_version", name, version, reason)]


@router.get("/models/{name}/history", summary="Every stage change and alias move, oldest first")
def history(name: str, caller: Caller, context: Context) -> list[dict[str, Any]]:
    return [move.to_dict() for move in operate(context, caller, "models", "history", name)]
