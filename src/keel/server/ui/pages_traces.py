"""Traces: a project's traces (filter, sort, pages, figures by day or model), one trace as a
timing waterfall with each span's details, and the span fields loaded on click.

- ``/ui/traces``: the projects the viewer can read, with their trace counts.
- ``/ui/projects/{project}/traces``: one page of traces (``size`` rows from ``offset``),
  filtered with keel's filter language (``filter``; parsed by the service, an error is
  shown on the page with a 400), sorted by ``sort`` (time, latency, cost) and ``desc``,
  and the count, error rate and latency p50/p95 by ``by`` (day or model).
- ``/ui/projects/{project}/traces/{trace_id}``: the span tree as a waterfall, each span's
  attributes, inputs, outputs, events and status message, the trace's scores and the
  versions its spans used, and links to the run, the conversation and the prompt version
  when they exist. One :meth:`~keel.services.traces.TraceService.get`; fields larger than
  :data:`~keel.server.ui.trace_views.INLINE_VIEW_CHARS` (or kept in the object store) are
  not inlined.
- ``/ui/projects/{project}/traces/{trace_id}/spans/{span_id}/{field}``: one span field as
  JSON (what the page loads on click); errors in the API's JSON shape.

Every call goes through the traces service's declared operations for the viewer's
principal (:func:`keel.server.routers.operate`), so a project the viewer cannot read
answers exactly like one that does not exist (404).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from keel.core.entities import EntityRef, project_not_found
from keel.core.traces import TraceDetail, dumps
from keel.errors import InvalidInput, KeelError, NotFound
from keel.server.auth import Context
from keel.server.context import ServerContext
from keel.server.routers import operate
from keel.server.ui.registry_views import filter_literal
from keel.server.ui.render import SECURITY_HEADERS, add_nav, entity_url, quote_path, render, url
from keel.server.ui.routing import UIRouter
from keel.server.ui.sessions import UIUser, Viewer
from keel.server.ui.trace_views import (
    BAR_SCALE,
    INLINE_VIEW_CHARS,
    LAZY_FIELDS,
    fmt_ms,
    fmt_usd,
    is_stored_payload,
    waterfall,
)
from keel.services.auth import REGISTRIES
from keel.services.contract import authorized_run

__all__ = ["router"]

router = UIRouter()
add_nav("Traces", "/traces", order=55)

PAGE_SIZES = (25, 50, 100, 250)
SORTS = ("time", "latency", "cost")
STATS_BY = ("day", "model")
MAX_STATS_ROWS = 14  # days (newest) or models (most used) in the figures strip
MAX_VERSION_LINKS = 20  # versions (prompt, model, KB) looked up for a trace page to link to


def _call(context: ServerContext, viewer: UIUser, name: str, *args: Any, **kwargs: Any) -> Any:
    """The traces operation ``name`` for the viewer (its declaration checks role and arguments)."""
    return operate(context, viewer.principal, "traces", name, *args, **kwargs)


def _check_project(context: ServerContext, viewer: UIUser, project: str) -> None:
    """NotFound (404) unless the project exists and the viewer may read it: one answer for both."""
    viewer.require(project, "reader")
    if context.traces.raw.project_id(project) is None:
        raise project_not_found(project)


@router.get("/traces")
def traces_index(request: Request, viewer: Viewer, context: Context) -> HTMLResponse:
    """The projects the viewer can read, with how many traces each holds."""
    projects = []
    for project, _runs in context.tracking.list_projects():
        if viewer.can(project.name, "reader"):
            projects.append((project, _call(context, viewer, "count", project=project.name)))
    return render(request, "traces_index.html", title="Traces", projects=projects)


@router.get("/projects/{project}/traces")
def traces_page(
    request: Request,
    project: str,
    viewer: Viewer,
    context: Context,
    filter: str = "",  # noqa: A002 - the query parameter users see
    sort: str = "time",
    desc: bool = True,
    size: int = 50,
    offset: int = 0,
    by: str = "day",
) -> HTMLResponse:
    """One page of a project's traces, with figures by day or by model."""
    _check_project(context, viewer, project)
    started = time.perf_counter()
    if sort not in SORTS:
        raise InvalidInput(f"cannot sort traces by {sort!r}", f"sort by {', '.join(SORTS)}")
    if by not in STATS_BY:
        raise InvalidInput(f"cannot show figures by {by!r}", f"use by={' or by='.join(STATS_BY)}")
    size = size if size in PAGE_SIZES else 50
    offset = max(0, offset)
    query = filter.strip() or None
    error = ""
    try:
        traces = _call(context, viewer, "search", project=project, filter=query,
                       order_by=f"{sort} {'desc' if desc else 'asc'}", limit=size, offset=offset)  # fmt: skip
        matched = _call(context, viewer, "count", project=project, filter=query)
        stats = _call(context, viewer, "stats", project=project, by=by, filter=query)
    except InvalidInput as exc:  # a filter that does not parse: the page, with the message
        error = exc.message + (f" ({exc.hint})" if exc.hint else "")
        traces, matched, stats = [], 0, []
    if by == "day":
        stats = sorted(stats, key=lambda s: str(s.group.get("day")), reverse=True)
    state = {"filter": query, "sort": sort, "desc": int(desc), "size": size, "by": by}
    return render(
        request,
        "traces.html",
        status_code=400 if error else 200,
        title=f"{project}: traces",
        project=project,
        traces=traces,
        matched=matched,
        stats=stats[:MAX_STATS_ROWS],
        more_stats=max(0, len(stats) - MAX_STATS_ROWS),
        errors=sum(s.errors for s in stats) if by == "day" else None,
        state=state,
        filter=filter,
        sort=sort,
        desc=desc,
        size=size,
        sizes=PAGE_SIZES,
        offset=offset,
        by=by,
        error=error,
        prompt_url=_prompt_url,
        literal=filter_literal,
        narrow=lambda condition: f"({query}) and {condition}" if query else condition,
        ms=fmt_ms,
        usd=fmt_usd,
        server_ms=(time.perf_counter() - started) * 1000,
    )


def _split_version(text: str) -> tuple[str, str]:
    """``name@version`` -> ``(name, version)``; ``name`` alone -> ``(name, "")``."""
    name, at, version = text.rpartition("@")
    return (name, version) if at and name else (text, "")


def _prompt_url(prompt: str | None) -> str | None:
    """The prompt version page of ``name@version`` (the prompt's page without a version)."""
    if not prompt:
        return None
    return entity_url(EntityRef("prompt", *_split_version(prompt)))


# The registry pages a version used by a span links to, and the operation that finds the version.
_VERSION_PAGES = {"prompt": ("prompts", "get"), "model": ("models", "get"), "kb": ("kb", "version")}


def _version_url(context: ServerContext, viewer: UIUser, kind: str, name: str, version: str) -> str | None:
    """The page of a registered version, if it exists and the viewer may read the registries."""
    found = _VERSION_PAGES.get(kind)
    if found is None or not viewer.can(REGISTRIES, "reader"):
        return None
    try:
        operate(context, viewer.principal, found[0], found[1], name, version or None)
    except KeelError:
        return None
    return entity_url(EntityRef(kind, name, version))


def _links(context: ServerContext, viewer: UIUser, detail: TraceDetail) -> dict[str, Any]:
    """The pages this trace links to, each only when it exists and the viewer may open it: the
    run, the conversation, and the versions its spans used (``prompts``: by ``name@version``;
    ``versions``: ``(kind, name, version, url)`` of each lineage link)."""
    trace = detail.trace
    run_url = None
    if trace.run_id:
        try:
            run_url = url(f"/runs/{authorized_run(context, viewer.principal, trace.run_id, 'reader').run_id}")
        except KeelError:
            run_url = None
    conversation_url = None
    if trace.conversation_id and viewer.can(REGISTRIES, "reader"):
        wanted = f"conversation_id = {filter_literal(trace.conversation_id)}"
        if operate(context, viewer.principal, "conversations", "count", wanted):
            conversation_url = url(f"/conversations/{quote_path(trace.conversation_id)}")
    checked: dict[tuple[str, str, str], str | None] = {}
    wanted_versions = [("prompt", *_split_version(p)) for p in (trace.prompt, *(s.prompt for s in detail.spans)) if p]
    for kind, name, version in [*detail.links, *wanted_versions]:
        key = (kind, name, version)
        if key not in checked and len(checked) < MAX_VERSION_LINKS:
            checked[key] = _version_url(context, viewer, kind, name, version)
    prompts = {f"{n}@{v}" if v else n: href for (k, n, v), href in checked.items() if k == "prompt"}
    versions = [(k, n, v, checked.get((k, n, v))) for k, n, v in detail.links]
    return {"run": run_url, "conversation": conversation_url, "prompts": prompts, "versions": versions}


@router.get("/projects/{project}/traces/{trace_id}")
def trace_page(request: Request, project: str, trace_id: str, viewer: Viewer, context: Context) -> HTMLResponse:
    """One trace: the waterfall of its spans, their details, scores, versions used and links."""
    _check_project(context, viewer, project)
    started = time.perf_counter()
    detail: TraceDetail = _call(context, viewer, "get", trace_id, project=project)
    rows = waterfall(detail)
    links = _links(context, viewer, detail)
    span_count = len(rows)
    duration_ms = (max(r.span.end_ns for r in rows) - min(r.span.start_ns for r in rows)) / 1e6 if rows else 0.0
    return render(
        request,
        "trace.html",
        title=f"Trace {detail.trace.name}",
        project=project,
        detail=detail,
        trace=detail.trace,
        rows=rows,
        span_count=span_count,
        duration_ms=duration_ms,
        ticks=["0", fmt_ms(duration_ms / 2), fmt_ms(duration_ms)],
        links=links,
        version_links=links["versions"],
        trace_scores=[s for s in detail.scores if not s.span_id],
        field_url=lambda span_id, which: url(
            f"/projects/{quote_path(project)}/traces/{detail.trace.trace_id}/spans/{span_id}/{which}"
        ),
        bar_scale=int(BAR_SCALE),
        inline_chars=INLINE_VIEW_CHARS,
        ms=fmt_ms,
        usd=fmt_usd,
        server_ms=(time.perf_counter() - started) * 1000,
    )


# The span fields the page loads on click answer JSON, errors in the API's JSON shape (a plain
# APIRouter: the app's error handlers), never an HTML page or a redirect to the sign-in page.
_fields = APIRouter()


@_fields.get("/projects/{project}/traces/{trace_id}/spans/{span_id}/{field}")
def span_field(project: str, trace_id: str, span_id: str, field: str, viewer: Viewer, context: Context) -> Response:
    """One field of one span as JSON: ``inputs`` and ``outputs`` through the service's ``payload``
    (which reads a payload kept in the object store), ``attributes`` and ``events`` from ``get``."""
    if field not in LAZY_FIELDS:
        raise NotFound(f"a span has no field {field[:40]!r}", f"ask for one of {', '.join(LAZY_FIELDS)}")
    _check_project(context, viewer, project)
    if field in ("inputs", "outputs"):
        value = _call(context, viewer, "payload", trace_id, span_id, field, project=project)
    else:
        detail: TraceDetail = _call(context, viewer, "get", trace_id, project=project)
        span = next((s for s in detail.spans if s.span_id == span_id), None)
        if span is None:
            raise NotFound(f"no span {span_id[:40]!r} in trace {detail.trace.trace_id}", "open the trace's page")
        value = getattr(span, field)
    if is_stored_payload(value):  # pragma: no cover - payload() reads it; a marker is never sent
        raise NotFound("the payload is missing from the object store", "see 'keel traces show TRACE'")
    body = dumps(value).encode("utf-8")
    return Response(body, media_type="application/json", headers=dict(SECURITY_HEADERS))


router.include_router(_fields)
