"""Knowledge bases: each one's configuration and versions (documents, chunks, embedder,
what each commit embedded or reused), and the diff of two versions (documents added,
removed and modified, chunks, configuration, data sources)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse

from keel.server.auth import Context
from keel.server.ui.registry_views import as_of
from keel.server.ui.render import add_nav, link_entities, quote_path, render, url
from keel.server.ui.routing import UIRouter
from keel.server.ui.sessions import Viewer
from keel.services.auth import REGISTRIES

__all__ = ["router"]

router = UIRouter()
add_nav("Knowledge bases", "/kb", order=45)
link_entities("kb", lambda ref: url(f"/kb/{quote_path(ref.id)}", version=ref.version or None))

MAX_DOCUMENTS = 1000  # documents listed per kind of change


@router.get("/kb")
def kbs_page(request: Request, viewer: Viewer, context: Context) -> HTMLResponse:
    """Every knowledge base with its newest version."""
    viewer.require(REGISTRIES, "reader")
    return render(request, "kbs.html", title="Knowledge bases", kbs=context.kb.list_kbs())


@router.get("/kb/{name}")
def kb_page(
    request: Request, name: str, viewer: Viewer, context: Context, version: str = "", at: str | None = None
) -> HTMLResponse:
    """A knowledge base: configuration, staged changes, versions, and a form to diff two;
    with ``?at=T``, the versions committed by then, the one searched then selected."""
    viewer.require(REGISTRIES, "reader")
    moment = as_of(at)
    info = context.kb.get(name)
    versions = context.kb.log(name)
    selected = version.lower().lstrip("v")
    if moment.ms is not None:
        then = context.kb.version(name, None, moment.ms)  # NotFound (404) before the first commit
        versions = [v for v in versions if v.number <= then.number]
        selected = selected or str(then.number)
    return render(
        request,
        "kb.html",
        title=name,
        kb=info,
        versions=versions,
        selected=selected,
        at_text=moment.text,
        now_url=url(f"/kb/{quote_path(name)}"),
    )


@router.get("/kb/{name}/diff")
def kb_diff_page(
    request: Request, name: str, viewer: Viewer, context: Context, a: str = "", b: str = ""
) -> HTMLResponse:
    """What changed from version ``a`` to version ``b`` (default: the two newest)."""
    viewer.require(REGISTRIES, "reader")
    versions = context.kb.log(name)
    if not a or not b:
        if not versions:
            context.kb.version(name)  # raises NotFound: no versions yet
        b = b or versions[0].version
        a = a or (versions[1].version if len(versions) > 1 else versions[0].version)
    diff = context.kb.diff(name, a, b)
    return render(
        request,
        "kb_diff.html",
        title=f"{name}: {diff.a.version} → {diff.b.version}",
        name=name,
        diff=diff,
        changes=diff.changes,
        versions=[v.version for v in versions],
        limit=MAX_DOCUMENTS,
    )
