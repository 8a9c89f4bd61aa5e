"""A/B tests: every experiment with its state and allocation, and one experiment's
results: exposures per variant against the allocation (the sample-ratio-mismatch check),
each metric per variant with its confidence interval (bar charts), the differences from
the control with p-values and significance, guardrail breaches and the verdict."""

from __future__ import annotations

import math

from fastapi import Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from keel.core.abtests import Analysis
from keel.server.auth import Context
from keel.server.ui.charts import Bar, bar_chart
from keel.server.ui.registry_views import yaml_text
from keel.server.ui.render import add_nav, render
from keel.server.ui.routing import UIRouter
from keel.server.ui.sessions import Viewer
from keel.services.auth import REGISTRIES

__all__ = ["router"]

router = UIRouter()
add_nav("A/B tests", "/abtests", order=65)

MAX_CHARTS = 6  # metrics charted on an experiment's page


@router.get("/abtests")
def abtests_page(request: Request, viewer: Viewer, context: Context) -> HTMLResponse:
    """Every experiment: state, unit, allocation, primary metric (exposures and results are
    on each experiment's page: counting them reads every exposure)."""
    viewer.require(REGISTRIES, "reader")
    experiments = context.abtests.list_experiments()
    return render(request, "abtests.html", title="A/B tests", experiments=experiments)


def _charts(analysis: Analysis) -> list[Markup]:
    """One bar chart per metric (primary first): each variant's mean and interval; the
    variants significantly different from the control are highlighted."""
    significant = {(c.metric, c.variant) for c in analysis.comparisons if c.significant}
    charts = []
    for metric, rows in list(analysis.stats.items())[:MAX_CHARTS]:
        binary = analysis.binary.get(metric, False)
        scale = 100.0 if binary else 1.0
        bars = [
            Bar(
                f"{row.variant} (n={row.n})",
                row.mean * scale,
                row.ci[0] * scale if math.isfinite(row.ci[0]) else None,
                row.ci[1] * scale if math.isfinite(row.ci[1]) else None,
                highlight=(metric, row.variant) in significant,
            )
            for row in rows
        ]
        label = f"{metric} (%)" if binary else metric
        title = f"{metric}{' (primary)' if metric == analysis.primary_metric else ''}"
        charts.append(bar_chart(bars, title=title, y_label=label))
    return charts


@router.get("/abtests/{name}")
def abtest_page(request: Request, name: str, viewer: Viewer, context: Context) -> HTMLResponse:
    """One experiment: definition, state history, and the analysis of its results."""
    viewer.require(REGISTRIES, "reader")
    exp = context.abtests.get(name)
    analysis = context.abtests.analyze(name)
    total = sum(analysis.exposures.values())
    expected = {v.name: v.weight * total for v in exp.variants}
    return render(
        request,
        "abtest.html",
        title=name,
        exp=exp,
        analysis=analysis,
        comparisons={(c.metric, c.variant): c for c in analysis.comparisons},
        charts=_charts(analysis),
        total=total,
        expected=expected,
        history=list(reversed(context.abtests.history(name))),
        targeting=yaml_text({c.attribute: c.to_data() for c in exp.targeting}) if exp.targeting else "",
        configs={v.name: yaml_text(v.config) for v in exp.variants if v.config},
    )
