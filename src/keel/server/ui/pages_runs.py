"""Projects, the runs table of a project, and the comparison of runs.

- ``/ui/`` and ``/ui/projects``: the projects the viewer has a role in, with run counts.
- ``/ui/projects/{project}/runs``: one page of runs (``size`` rows), sorted by any column
  (``sort``, ``desc``), filtered with keel's filter language (``filter``; parsed by the
  service, never pasted into SQL), with chosen param/metric/tag columns (``col``,
  repeatable) and checkboxes to compare runs.
- ``/ui/experiments/{id}``: an MLflow experiment id (from the MLflow client's links) to its
  project's runs table.
- ``/ui/compare?run=A&run=B[&baseline=A][&quality=M]``: params and metrics side by side,
  deltas against the baseline with confidence intervals and significance
  (:func:`keel.services.compare.compare_runs`), the quality-vs-cost Pareto chart, and
  overlaid metric histories.
"""

from __future__ import annotations

import math
import time
from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup

from keel.core.comparison import Comparison
from keel.core.entities import project_not_found
from keel.errors import InvalidInput, KeelError, NotFound
from keel.server.auth import Context
from keel.server.context import ServerContext
from keel.server.ui.charts import MAX_POINTS, Bar, Point, Series, bar_chart, line_chart, scatter_chart
from keel.server.ui.render import add_nav, link_entities, quote_path, render, url
from keel.server.ui.routing import UIRouter
from keel.server.ui.runs_table import SORTABLE_ATTRIBUTES, available_columns, choose_columns, sort_clause
from keel.server.ui.sessions import Viewer
from keel.services.compare import compare_runs
from keel.services.contract import authorize_run
from keel.services.tracking import DEFAULT_PROJECT

__all__ = ["router"]

router = UIRouter()
add_nav("Projects", "/projects", order=10)
link_entities("run", lambda ref: url(f"/runs/{ref.id}"))

PAGE_SIZES = (25, 50, 100, 250, 500)
MAX_COMPARED = 12
MAX_HISTORY_CHARTS = 6


@router.get("/")
@router.get("/projects")
def projects_page(request: Request, viewer: Viewer, context: Context) -> HTMLResponse:
    """The projects the viewer can read."""
    projects = [(p, count) for p, count in context.tracking.list_projects() if viewer.can(p.name, "reader")]
    return render(request, "projects.html", title="Projects", projects=projects)


@router.get("/experiments/{experiment_id}")
def experiment_page(experiment_id: str, viewer: Viewer, context: Context) -> RedirectResponse:
    """An MLflow experiment id to its project's runs (the MLflow client prints links to
    ``<server>/#/experiments/ID``; keel.js sends them here). The id is the project's numeric
    id, and ``0`` is the project ``default``, as in keel's MLflow API."""
    wanted = experiment_id.strip()
    if wanted == "0":
        name: str | None = DEFAULT_PROJECT
    else:
        pk = int(wanted) if wanted.isdigit() else -1
        name = next((p.name for p, _ in context.tracking.list_projects() if p.id == pk), None)
    # A project the viewer cannot read answers exactly like one that does not exist.
    if name is None or not viewer.can(name, "reader"):
        raise NotFound(f"no experiment with id {wanted[:40]!r}", "start from the projects list")
    return RedirectResponse(url(f"/projects/{quote_path(name)}/runs"), status_code=303)


@router.get("/projects/{project}/runs")
def runs_page(
    request: Request,
    project: str,
    viewer: Viewer,
    context: Context,
    filter: str = "",  # noqa: A002 - the query parameter users see
    sort: str = "start_time",
    desc: bool = True,
    col: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI copies defaults
    page: str | None = None,
    n: int = 1,
    size: int = 50,
) -> HTMLResponse:
    """One page of a project's runs."""
    viewer.require(project, "reader")
    started = time.perf_counter()
    count = context.tracking.repo.run_count(project)  # this project's only: 1M runs in all cost ~0.2 s to count
    if count is None:
        raise project_not_found(project)
    size = size if size in PAGE_SIZES else 50
    error = ""
    try:
        records, next_page = context.tracking.search_runs(
            [project], filter or None, [sort_clause(sort, desc), "start_time desc"], size, page
        )
    except KeelError as exc:  # a filter that does not parse: show the page with the message
        records, next_page, error = [], None, f"{exc.message}" + (f" ({exc.hint})" if exc.hint else "")
    available = available_columns(records)
    columns = choose_columns(col, available)
    state = {"filter": filter or None, "sort": sort, "desc": int(desc), "col": [c.name for c in columns],
             "size": size}  # fmt: skip
    return render(
        request,
        "runs.html",
        status_code=400 if error else 200,
        title=f"{project}: runs",
        project=project,
        count=count,
        records=records,
        columns=columns,
        available=available,
        sortable=SORTABLE_ATTRIBUTES,
        state=state,
        filter=filter,
        sort=sort,
        desc=desc,
        size=size,
        sizes=PAGE_SIZES,
        page_number=n,
        next_page=next_page,
        error=error,
        can_write=viewer.can(project, "writer"),
        server_ms=(time.perf_counter() - started) * 1000,
    )


def _history_charts(context: ServerContext, comparison: Comparison) -> list[Markup]:
    """Overlaid metric histories of the compared runs (metrics logged at several steps)."""
    charts: list[Markup] = []
    for metric in comparison.metrics:
        series = []
        for arm in comparison.arms:
            history = context.tracking.metric_history(arm.key, metric, MAX_POINTS)
            series.append(Series(arm.label, [m.step for m in history], [m.value for m in history]))
        if any(len(s.xs) > 1 for s in series):
            charts.append(line_chart(series, title=metric, y_label=metric))
        if len(charts) >= MAX_HISTORY_CHARTS:
            break
    return charts


def _pareto_chart(comparison: Comparison) -> Markup | None:
    """Quality against cost (or latency), the Pareto front highlighted; None without a cost metric."""
    objectives = list(comparison.objectives)
    if len(objectives) < 2:
        return None
    quality, x_metric = objectives[0], objectives[1]
    points = []
    for arm in comparison.arms:
        if quality in comparison.metrics:
            y = comparison.result(arm.key, quality).mean
        else:
            y = float(arm.metrics.get(quality, math.nan))
        points.append(Point(arm.label, float(arm.metrics.get(x_metric, math.nan)), y, arm.key in comparison.pareto))
    return scatter_chart(
        points, title=f"{quality} vs {x_metric}", x_label=x_metric, y_label=quality, log_x=True, height=300
    )


def _quality_bars(comparison: Comparison) -> Markup | None:
    """The quality metric of each run with its 95% interval."""
    if not comparison.metrics:
        return None
    quality = next(iter(comparison.objectives), comparison.metrics[0])
    if quality not in comparison.metrics:
        return None
    bars = []
    for arm in comparison.arms:
        result = comparison.result(arm.key, quality)
        low = None if math.isnan(result.ci_low) else result.ci_low
        high = None if math.isnan(result.ci_high) else result.ci_high
        bars.append(Bar(arm.label, result.mean, low, high, bool(result.significant)))
    return bar_chart(bars, title=f"{quality} (95% interval)", y_label=quality)


@router.get("/compare")
def compare_page(
    request: Request,
    viewer: Viewer,
    context: Context,
    run: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI copies defaults
    baseline: str | None = None,
    quality: str | None = None,
) -> HTMLResponse:
    """Runs side by side against a baseline."""
    ids = list(dict.fromkeys(r for r in run if r))
    if len(ids) < 2:
        raise InvalidInput("a comparison needs at least two runs", "tick two or more runs in a runs table")
    if len(ids) > MAX_COMPARED:
        raise InvalidInput(f"at most {MAX_COMPARED} runs can be compared at once", "tick fewer runs")
    full = [authorize_run(context, viewer.principal, run_id, "reader") for run_id in ids]
    records = context.tracking.repo.get_runs(full)
    if baseline and baseline not in {r.run_id for r in records}:
        baseline = None
    comparison = compare_runs(
        context.tracking, [r.run_id for r in records], baseline, quality=quality or None, declared=context.directions
    )
    param_keys = sorted({k for r in records for k in r.params})
    differing = {k for k in param_keys if len({repr(r.params.get(k)) for r in records}) > 1}
    return render(
        request,
        "compare.html",
        title="Compare runs",
        records=records,
        comparison=comparison,
        param_keys=param_keys,
        differing=differing,
        pareto_chart=_pareto_chart(comparison),
        quality_chart=_quality_bars(comparison),
        history_charts=_history_charts(context, comparison),
        run_ids=[r.run_id for r in records],
        quality=quality or "",
    )
