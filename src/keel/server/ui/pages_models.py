"""Models: registered models, their versions (stage, aliases, source, producing run,
card), the stage and alias history, and the writers' forms to move an alias or
transition a version's stage (every move is in the reflog with who and why)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse

from keel.errors import InvalidInput
from keel.server.auth import Context
from keel.server.ui.registry_views import as_of, card_items, yaml_text
from keel.server.ui.render import add_nav, link_entities, quote_path, render, url
from keel.server.ui.routing import UIRouter
from keel.server.ui.sessions import Form, Viewer
from keel.services.auth import REGISTRIES
from keel.services.models import STAGES

__all__ = ["router"]

router = UIRouter()
add_nav("Models", "/models", order=30)
link_entities(
    "model",
    lambda ref: (
        url(f"/models/{quote_path(ref.id)}/versions/{quote_path(ref.version)}")
        if ref.version.isdigit()
        else url(f"/models/{quote_path(ref.id)}")
    ),
)


@router.get("/models")
def models_page(request: Request, viewer: Viewer, context: Context) -> HTMLResponse:
    """Every registered model with its latest version, stages and aliases."""
    viewer.require(REGISTRIES, "reader")
    return render(request, "models.html", title="Models", models=context.models.list_models())


@router.get("/models/{name}")
def model_page(request: Request, name: str, viewer: Viewer, context: Context, at: str | None = None) -> HTMLResponse:
    """A model: its versions, the history of stages and aliases, and the writers' forms;
    with ``?at=T``, as it was then (versions deleted since are listed, marked deleted)."""
    viewer.require(REGISTRIES, "reader")
    moment = as_of(at)
    model = context.models.get_model(name)
    history = context.models.history(name)
    if moment.ms is None:
        versions = context.models.versions(name)
    else:
        versions = context.models.versions_at(name, moment.ms)
        history = [m for m in history if m.at <= moment.ms]
    return render(
        request,
        "model.html",
        title=name,
        model=model,
        versions=versions,
        history=list(reversed(history)),
        stages=STAGES,
        at_text=moment.text,
        now_url=url(f"/models/{quote_path(name)}"),
        can_write=viewer.can(REGISTRIES, "writer") and moment.ms is None,
    )


@router.get("/models/{name}/versions/{version}")
def model_version_page(request: Request, name: str, version: str, viewer: Viewer, context: Context) -> HTMLResponse:
    """One version: source, producing run, the run's inputs, and its card."""
    viewer.require(REGISTRIES, "reader")
    lineage = context.models.lineage(name, version)
    mv = lineage.version
    run = lineage.run if lineage.run is not None and viewer.can(lineage.run.project, "reader") else None
    ref = str(mv.version)
    moves = [m for m in context.models.history(name) if m.ref == f"stage:{ref}" or m.new == ref or m.old == ref]
    return render(
        request,
        "model_version.html",
        title=mv.ref,
        mv=mv,
        run=run,
        inputs=lineage.inputs if run is not None else [],
        card=card_items(mv.card),
        card_text=context.models.card_text(name, mv.version),
        tags=yaml_text(mv.tags) if mv.tags else "",
        history=list(reversed(moves)),
    )


@router.post("/models/{name}/alias")
def move_alias(name: str, viewer: Viewer, form: Form, context: Context) -> RedirectResponse:
    """Point an alias at a version (writers; logged)."""
    viewer.require(REGISTRIES, "writer")
    alias, version = form.get("alias").strip(), form.get("version").strip()
    if not alias or not version:
        raise InvalidInput("moving an alias needs the alias and the version", "fill in both fields")
    context.models.set_alias(name, alias, version, reason=form.get("reason").strip(), who=viewer.name)
    return RedirectResponse(url(f"/models/{quote_path(name)}"), status_code=303)


@router.post("/models/{name}/stage")
def transition_stage(name: str, viewer: Viewer, form: Form, context: Context) -> RedirectResponse:
    """Move a version to a stage (writers; logged), optionally archiving the others in it."""
    viewer.require(REGISTRIES, "writer")
    version, stage = form.get("version").strip(), form.get("stage").strip()
    if not version or not stage:
        raise InvalidInput("a stage transition needs the version and the stage", "fill in both fields")
    context.models.transition_stage(
        name,
        version,
        stage,
        archive_existing=form.get("archive_existing") == "on",
        reason=form.get("reason").strip(),
        who=viewer.name,
    )
    return RedirectResponse(url(f"/models/{quote_path(name)}"), status_code=303)
