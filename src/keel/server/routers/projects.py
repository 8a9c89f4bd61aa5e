"""``/projects``: list the visible ones, create, and manage who has which role."""

from __future__ import annotations

from typing import Any

from fastapi import status
from pydantic import BaseModel, ConfigDict

from keel.server.auth import Caller, Context, require
from keel.server.routers import Router
from keel.services.auth import WORKSPACE

__all__ = ["router"]

router = Router(tags=["projects"])


class ProjectRequest(BaseModel):
    """A new project."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""


class GrantRequest(BaseModel):
    """A role for a user on a project."""

    model_config = ConfigDict(extra="forbid")
    role: str


@router.get("/projects", summary="Projects the caller has a role in, with run counts")
def list_projects(caller: Caller, context: Context) -> list[dict[str, Any]]:
    return [
        {"name": p.name, "description": p.description, "created_at": p.created_at, "runs": count}
        for p, count in context.tracking.list_projects()
        if caller.rank(p.name) > 0
    ]


@router.post(
    "/projects",
    status_code=status.HTTP_201_CREATED,
    summary="Create a project (writers on '*'); the creator becomes its admin",
)
def create_project(body: ProjectRequest, caller: Caller, context: Context) -> dict[str, Any]:
    require(caller, WORKSPACE, "writer")
    project = context.tracking.create_project(body.name, body.description)
    if caller.rank(project.name) < 3:
        context.auth.grant(caller.name, project.name, "admin", caller.name)
    return {"name": project.name, "description": project.description, "created_at": project.created_at, "runs": 0}


@router.get("/projects/{project}/grants", summary="Who has which role on a project (project admins)")
def list_grants(project: str, caller: Caller, context: Context) -> list[dict[str, Any]]:
    require(caller, project, "admin")
    return context.auth.grants(project=project)


@router.put("/projects/{project}/grants/{user}", summary="Give a user a role on a project (audited)")
def grant(project: str, user: str, body: GrantRequest, caller: Caller, context: Context) -> dict[str, Any]:
    require(caller, project, "admin")
    context.auth.grant(user, project, body.role, caller.name)
    return {"user": user, "project": project, "role": body.role}


@router.delete("/projects/{project}/grants/{user}", summary="Remove a user's role on a project (audited)")
def revoke(project: str, user: str, caller: Caller, context: Context) -> dict[str, Any]:
    require(caller, project, "admin")
    context.auth.revoke_grant(user, project, caller.name)
    return {"user": user, "project": project, "role": None}
