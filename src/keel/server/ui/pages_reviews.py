"""Reviews: the change requests of protected refs (``keel review``) and the protection rules;
one request's page shows what moves and what changes (a prompt's text side by side, a
model's version fields, a flag's definitions), its evidence (the runs compared with keel's
statistics, as on the compare page, and the attached comparison), the reviews so far and
its steps, with the reviewers' approve and reject forms."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse

from keel.errors import KeelError
from keel.server.auth import Context
from keel.server.ui.registry_views import prompt_text, side_by_side, yaml_text
from keel.server.ui.render import add_nav, render, url
from keel.server.ui.routing import UIRouter
from keel.server.ui.sessions import Form, Viewer
from keel.services.auth import REGISTRIES
from keel.services.compare import compare_runs
from keel.services.contract import authorize_run
from keel.services.reviews import STATUSES

__all__ = ["router"]

router = UIRouter()
add_nav("Reviews", "/reviews", order=65)

MAX_EVIDENCE_RUNS = 8
MODEL_FIELDS = ("source", "run_id", "stage", "description", "tags", "card", "author")


@router.get("/reviews")
def reviews_page(request: Request, viewer: Viewer, context: Context, status: str = "open") -> HTMLResponse:
    """Change requests (open first) and the protection rules."""
    viewer.require(REGISTRIES, "reader")
    chosen = status if status in STATUSES else None
    return render(
        request,
        "reviews.html",
        title="Reviews",
        requests=context.reviews.list_requests(status=chosen),
        rules=context.reviews.rules(),
        status=chosen or "",
        statuses=STATUSES,
    )


def _evidence(context: Context, viewer: Viewer, run_ids: list[str]) -> tuple[list[Any], Any]:
    """The evidence runs the viewer may read, and their comparison (two or more runs)."""
    readable = []
    for run_id in run_ids[:MAX_EVIDENCE_RUNS]:
        try:
            readable.append(authorize_run(context, viewer.principal, run_id, "reader"))
        except KeelError:  # hidden or deleted: left out, as a search would
            continue
    records = context.tracking.repo.get_runs(readable) if readable else []
    comparison = (
        compare_runs(context.tracking, [r.run_id for r in records], declared=context.directions)
        if len(records) >= 2
        else None
    )
    return records, comparison


def _changes(context: Context, row: Any) -> dict[str, Any]:
    """What the request changes, laid out for the page."""
    out: dict[str, Any] = {"rows": [], "diff": None, "fields": [], "definitions": None}
    if row.kind == "prompt":
        new = context.prompts.get(row.name, row.to_target)
        old = context.prompts.get(row.name, row.from_target) if row.from_target else None
        out["rows"] = side_by_side(prompt_text(old.content) if old else "", prompt_text(new.content))
        if old is not None:
            out["diff"] = context.prompts.diff(row.name, old.version, new.version)
    elif row.kind == "model":
        versions = context.reviews.changes(row.id).get("versions", {})
        before, after = versions.get("from") or {}, versions.get("to") or {}
        for key in MODEL_FIELDS:
            a, b = yaml_text(before.get(key)).strip(), yaml_text(after.get(key)).strip()
            out["fields"].append((key, a, b, a != b))
    elif row.kind == "flag":
        definitions = context.reviews.changes(row.id)["definitions"]
        out["definitions"] = (yaml_text(definitions["from"]), yaml_text(definitions["to"]))
    return out


@router.get("/reviews/{request_id}")
def review_page(request: Request, request_id: int, viewer: Viewer, context: Context) -> HTMLResponse:
    """One change request: what moves, what changes, the evidence, the reviews and the steps."""
    viewer.require(REGISTRIES, "reader")
    row = context.reviews.get(request_id)
    records, comparison = _evidence(context, viewer, list(row.evidence.get("runs") or []))
    return render(
        request,
        "review.html",
        title=f"Change request {row.id}",
        cr=row,
        changes=_changes(context, row),
        records=records,
        comparison=comparison,
        attached=yaml_text(row.evidence.get("comparison")),
        steps=context.reviews.history(row.id),
        can_review=viewer.principal.rank(REGISTRIES) >= 2 and row.status == "open",
    )


@router.post("/reviews/{request_id}/{verdict}")
def review_action(request_id: int, verdict: str, viewer: Viewer, form: Form, context: Context) -> RedirectResponse:
    """Approve or reject (writers; the signed-in user is the reviewer)."""
    viewer.require(REGISTRIES, "writer")
    comment = form.get("comment").strip()
    if verdict == "approve":
        context.reviews.approve(request_id, comment, who=viewer.name)
    elif verdict == "reject":
        context.reviews.reject(request_id, comment, who=viewer.name)
    else:
        from keel.errors import NotFound

        raise NotFound(f"no review action {verdict!r}", "approve or reject")
    return RedirectResponse(url(f"/reviews/{request_id}"), status_code=303)
