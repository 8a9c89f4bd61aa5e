"""One run: its params, metric charts, artifacts (with previews), logged tables (the eval
``samples`` table with search) and lineage; and the writer's delete/restore buttons.

Artifacts are previewed on the page (text, JSON, images, tables; at most
:data:`MAX_PREVIEW` bytes) and downloaded from ``/ui/runs/{id}/raw/{path}``: as an
attachment, except raster images, always with ``nosniff`` and a sandboxing CSP, so
an uploaded HTML or SVG file can never run as this site.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from markupsafe import Markup

from keel.core.comparison import SAMPLES_TABLE
from keel.core.entities import Artifact, MetricSummary, RunRecord
from keel.core.table import Table
from keel.errors import KeelError, NotFound
from keel.server.auth import Context
from keel.server.context import ServerContext
from keel.server.transfer import stream_object
from keel.server.ui.charts import MAX_POINTS, Series, line_chart
from keel.server.ui.render import render, url
from keel.server.ui.routing import UIRouter
from keel.server.ui.sessions import Viewer
from keel.services.contract import authorized_run
from keel.services.tracking import table_path

__all__ = ["router"]

router = UIRouter()

MAX_PREVIEW = 2 << 20  # bytes of an artifact read for a preview
MAX_CHARTS = 24  # metric charts on a run page
TABLE_PAGE = 100  # rows of a table per page
_IMAGES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}  # fmt: skip  - never SVG: it can carry script
_TEXT = (".txt", ".md", ".log", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".py", ".sh", ".jsonl", ".html",
         ".xml", ".svg", ".js", ".css", ".sql", ".rst", ".j2", ".jinja", ".prompt")  # fmt: skip


def _run(context: ServerContext, viewer: Viewer, run_id: str) -> RunRecord:
    """The run, if the viewer may read it; a hidden run is the NotFound of an unknown id."""
    return authorized_run(context, viewer.principal, run_id, "reader")


def _metric_charts(context: ServerContext, record: RunRecord) -> tuple[list[MetricSummary], list[Markup]]:
    """Summaries of every metric, and a chart for each one logged at more than one step."""
    summaries = context.tracking.metric_summaries(record.run_id)
    charts: list[Markup] = []
    for summary in summaries:
        if summary.count > 1 and len(charts) < MAX_CHARTS:
            history = context.tracking.metric_history(record.run_id, summary.key, MAX_POINTS)
            series = Series(summary.key, [m.step for m in history], [m.value for m in history])
            charts.append(line_chart([series], title=summary.key, y_label=summary.key))
    return summaries, charts


def _sample_rows(context: ServerContext, run_id: str, limit: int = 10) -> Table | None:
    try:
        table = context.tracking.read_table(run_id, SAMPLES_TABLE)
    except NotFound:
        return None
    return Table(table.columns, table.rows[:limit]) if len(table) > limit else table


@router.get("/runs/{run_id}")
def run_page(request: Request, run_id: str, viewer: Viewer, context: Context) -> HTMLResponse:
    """Everything about one run."""
    record = _run(context, viewer, run_id)
    summaries, charts = _metric_charts(context, record)
    artifacts = context.tracking.list_artifacts(record.run_id)
    tables = [a for a in artifacts if a.path.startswith("tables/") and a.path.endswith(".json")]
    edges = context.tracking.lineage(record.run_id)
    return render(
        request,
        "run.html",
        title=record.name,
        run=record,
        summaries=summaries,
        charts=charts,
        artifacts=[a for a in artifacts if a not in tables],
        tables=[(a, a.path[len("tables/") : -len(".json")]) for a in tables],
        samples=_sample_rows(context, record.run_id),
        inputs=[e for e in edges if e.direction == "input" and e.role != "parent"],
        outputs=[e for e in edges if e.direction == "output"],
        children=context.tracking.children(record.run_id),
        context_items=sorted(record.context.items()),
        can_write=viewer.can(record.project, "writer"),
    )


def _preview(artifact: Artifact, data: bytes) -> dict[str, Any]:
    """What the preview shows: ``kind`` is image, table, json, text or binary."""
    suffix = os.path.splitext(artifact.path)[1].lower()
    if suffix in _IMAGES:
        return {"kind": "image"}
    if artifact.kind == "table" or (artifact.path.startswith("tables/") and suffix == ".json"):
        try:
            table = Table.from_bytes(data)
            return {"kind": "table", "columns": table.columns, "rows": table.rows[:500], "total": len(table)}
        except (ValueError, KeyError, TypeError):
            pass
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"kind": "binary"}
    if "\x00" in text:
        return {"kind": "binary"}
    if suffix in (".csv", ".tsv"):
        rows = list(csv.reader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ","))
        if rows:
            return {"kind": "table", "columns": rows[0], "rows": rows[1:501], "total": len(rows) - 1}
    if suffix == ".json":
        try:
            return {"kind": "json", "text": json.dumps(json.loads(text), indent=2, ensure_ascii=False)}
        except ValueError:
            pass
    return {"kind": "text", "text": text}


@router.get("/runs/{run_id}/artifacts/{path:path}")
def artifact_page(request: Request, run_id: str, path: str, viewer: Viewer, context: Context) -> HTMLResponse:
    """A preview of one artifact."""
    record = _run(context, viewer, run_id)
    artifact = context.tracking.artifact(record.run_id, path)
    too_large = artifact.size > MAX_PREVIEW
    preview = (
        {"kind": "large"} if too_large else _preview(artifact, context.tracking.read_artifact(record.run_id, path))
    )
    return render(request, "artifact.html", title=artifact.path, run=record, artifact=artifact, preview=preview)


@router.get("/runs/{run_id}/raw/{path:path}")
def artifact_raw(run_id: str, path: str, viewer: Viewer, context: Context) -> StreamingResponse:
    """Download one artifact (streamed from the store while hashed; a corrupt one breaks off)."""
    record = _run(context, viewer, run_id)
    artifact = context.tracking.artifact(record.run_id, path)
    media = _IMAGES.get(os.path.splitext(artifact.path)[1].lower())
    return stream_object(
        context.tracking.objects,
        artifact.oid,
        filename=os.path.basename(artifact.path),
        inline=bool(media),
        media_type=media or "application/octet-stream",
        headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox; default-src 'none'"},
    )


@router.get("/runs/{run_id}/tables/{name}")
def table_page(
    request: Request,
    run_id: str,
    name: str,
    viewer: Viewer,
    context: Context,
    q: str = "",
    filter: str = "",  # noqa: A002 - the query parameter users see
    offset: int = 0,
) -> HTMLResponse:
    """A logged table (the eval ``samples`` table: inputs, outputs, scores per sample), searchable:
    ``q`` keeps rows with the text in any cell, ``filter`` is the filter language over columns."""
    record = _run(context, viewer, run_id)
    table = Table.from_bytes(context.tracking.read_artifact(record.run_id, table_path(name)))
    total, error = len(table), ""
    if filter.strip():
        try:
            table = table.filter(filter)
        except KeelError as exc:
            error = exc.message + (f" ({exc.hint})" if exc.hint else "")
    if q:
        needle = q.lower()
        rows = tuple(row for row in table.rows if any(needle in str(v).lower() for v in row if v is not None))
        table = Table(table.columns, rows)
    offset = max(0, offset)
    return render(
        request,
        "table.html",
        status_code=400 if error else 200,
        title=f"{name} · {record.name}",
        run=record,
        name=name,
        columns=table.columns,
        rows=table.rows[offset : offset + TABLE_PAGE],
        matched=len(table),
        total=total,
        offset=offset,
        page=TABLE_PAGE,
        q=q,
        filter=filter,
        error=error,
    )


@router.post("/runs/{run_id}/delete")
def delete_run(run_id: str, viewer: Viewer, context: Context) -> RedirectResponse:
    """Soft-delete a run (writers; restorable from its page)."""
    record = _run(context, viewer, run_id)
    viewer.require(record.project, "writer")
    context.tracking.delete_run(record.run_id)
    return RedirectResponse(url(f"/runs/{record.run_id}"), status_code=303)


@router.post("/runs/{run_id}/restore")
def restore_run(run_id: str, viewer: Viewer, context: Context) -> RedirectResponse:
    """Undo a delete (writers)."""
    record = _run(context, viewer, run_id)
    viewer.require(record.project, "writer")
    context.tracking.restore_run(record.run_id)
    return RedirectResponse(url(f"/runs/{record.run_id}"), status_code=303)
