"""Prompts: the registry, a prompt's versions (changelog, author, aliases, eval scores of
the runs that used each version), one version's content, a side-by-side diff of two
versions, the aliases with their reflog, and the writers' alias forms (move, roll back).

Eval scores come from lineage: a run that loaded ``chat@1.3.0`` recorded the input
``prompt:chat@1.3.0``; the page shows, per version, how many of those runs the viewer
may read and the mean of each metric over them.
"""

from __future__ import annotations

from dataclasses import replace

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse

from keel.core.entities import EntityRef
from keel.errors import InvalidInput, NotFound
from keel.server.auth import Context
from keel.server.ui.charts import Bar, bar_chart
from keel.server.ui.registry_views import RunScores, as_of, prompt_text, run_scores, side_by_side, yaml_text
from keel.server.ui.render import add_nav, link_entities, quote_path, render, url
from keel.server.ui.routing import UIRouter
from keel.server.ui.sessions import Form, Viewer
from keel.services.auth import REGISTRIES
from keel.services.prompts import PromptVersion, RefMove

__all__ = ["router"]

router = UIRouter()
add_nav("Prompts", "/prompts", order=20)
link_entities(
    "prompt",
    lambda ref: (
        url(f"/prompts/{quote_path(ref.id)}/versions/{quote_path(ref.version)}")
        if ref.version
        else url(f"/prompts/{quote_path(ref.id)}")
    ),
)

MAX_SCORE_COLUMNS = 6  # metric columns in the versions table
PREFERRED = ("accuracy", "score", "quality", "f1", "exact_match", "thumbs_up")


def _scores(context: Context, viewer: Viewer, versions: list[PromptVersion]) -> dict[str, RunScores]:
    return {
        v.version: run_scores(context, viewer, context.tracking.used_by(EntityRef("prompt", v.name, v.version)))
        for v in versions
    }


def _score_keys(scores: dict[str, RunScores]) -> list[str]:
    keys: dict[str, int] = {}
    for s in scores.values():
        for key in s.means:
            keys[key] = keys.get(key, 0) + 1
    ordered = sorted(keys, key=lambda k: (k not in PREFERRED, -keys[k], k))
    return ordered[:MAX_SCORE_COLUMNS]


@router.get("/prompts")
def prompts_page(request: Request, viewer: Viewer, context: Context) -> HTMLResponse:
    """Every prompt with its latest version."""
    viewer.require(REGISTRIES, "reader")
    prompts = sorted(context.prompts.list_prompts(), key=lambda p: p[0])
    aliases = {name: _aliases(context.prompts.versions(name)) for name, _latest in prompts}
    return render(request, "prompts.html", title="Prompts", prompts=prompts, aliases=aliases)


def _aliases(versions: list[PromptVersion]) -> list[tuple[str, str]]:
    """``(alias, version)`` pairs of a prompt, by alias."""
    return sorted((alias, v.version) for v in versions for alias in v.aliases)


@router.get("/prompts/{name}")
def prompt_page(request: Request, name: str, viewer: Viewer, context: Context, at: str | None = None) -> HTMLResponse:
    """A prompt: versions with eval scores, aliases with their history, alias forms for writers;
    with ``?at=T``, as it was then: the versions registered by T, each alias where it pointed."""
    viewer.require(REGISTRIES, "reader")
    moment = as_of(at)
    versions = context.prompts.versions(name)
    history = context.prompts.history(name)
    if moment.ms is not None:
        cutoff = moment.ms
        history = [m for m in history if m.at <= cutoff]
        pointed = {m.ref: m.new for m in history}  # oldest first: the last move by T wins
        versions = [
            replace(v, aliases=tuple(sorted(a for a, target in pointed.items() if target == v.version)))
            for v in versions
            if v.created_at <= cutoff
        ]
        if not versions:
            raise NotFound(f"prompt {name!r} had no versions at {moment.text}", "pick a later time")
    scores = _scores(context, viewer, versions)
    keys = _score_keys(scores)
    chart = None
    if keys and any(keys[0] in s.means for s in scores.values()):
        key = keys[0]
        bars = [
            Bar(v.version, scores[v.version].means[key]) for v in reversed(versions) if key in scores[v.version].means
        ]
        chart = bar_chart(bars, title=f"{key} by version (mean over runs)", y_label=key)
    aliases = dict(_aliases(versions))
    last_move = {m.ref: m for m in history}
    previous = {alias: _previous_target([m for m in history if m.ref == alias]) for alias in aliases}
    return render(
        request,
        "prompt.html",
        title=name,
        name=name,
        versions=versions,
        latest=versions[0],
        latest_text=prompt_text(versions[0].content),
        scores=scores,
        score_keys=keys,
        chart=chart,
        aliases=sorted(aliases.items()),
        last_move=last_move,
        previous=previous,
        history=list(reversed(history)),
        at_text=moment.text,
        now_url=url(f"/prompts/{quote_path(name)}"),
        can_write=viewer.can(REGISTRIES, "writer") and moment.ms is None,
    )


def _previous_target(moves: list[RefMove]) -> str | None:
    """What a rollback would move the alias to: the target before its latest move."""
    if not moves:
        return None
    old = moves[-1].old
    return str(old) if old is not None else None


@router.get("/prompts/{name}/versions/{version}")
def prompt_version_page(request: Request, name: str, version: str, viewer: Viewer, context: Context) -> HTMLResponse:
    """One version's full content: template, variables, model, parameters, few-shot, schema."""
    viewer.require(REGISTRIES, "reader")
    pv = context.prompts.get(name, version)
    scores = run_scores(context, viewer, context.tracking.used_by(EntityRef("prompt", pv.name, pv.version)))
    content = pv.content
    return render(
        request,
        "prompt_version.html",
        title=pv.ref,
        pv=pv,
        text=prompt_text(content),
        parameters=yaml_text(dict(content.parameters)) if content.parameters else "",
        few_shot=yaml_text(content.few_shot),
        response_schema=yaml_text(content.response_schema),
        scores=scores,
        others=[v.version for v in context.prompts.versions(name) if v.version != pv.version],
    )


@router.get("/prompts/{name}/diff")
def prompt_diff_page(
    request: Request, name: str, viewer: Viewer, context: Context, a: str = "", b: str = ""
) -> HTMLResponse:
    """Two versions side by side: template lines, variables, model and parameters."""
    viewer.require(REGISTRIES, "reader")
    versions = context.prompts.versions(name)
    if not a or not b:
        b = b or versions[0].version
        a = a or (versions[1].version if len(versions) > 1 else versions[0].version)
    old, new = context.prompts.get(name, a), context.prompts.get(name, b)
    diff = context.prompts.diff(name, old.version, new.version)
    return render(
        request,
        "prompt_diff.html",
        title=f"{name}: {old.version} → {new.version}",
        name=name,
        old=old,
        new=new,
        diff=diff,
        rows=side_by_side(prompt_text(old.content), prompt_text(new.content)),
        versions=[v.version for v in versions],
        old_params=yaml_text(dict(old.content.parameters)),
        new_params=yaml_text(dict(new.content.parameters)),
    )


@router.post("/prompts/{name}/aliases")
def set_alias(name: str, viewer: Viewer, form: Form, context: Context) -> RedirectResponse:
    """Point an alias at a version (writers; logged with who and why)."""
    viewer.require(REGISTRIES, "writer")
    alias, version = form.get("alias").strip(), form.get("version").strip()
    if not alias or not version:
        raise InvalidInput("moving an alias needs the alias and the version", "fill in both fields")
    context.prompts.set_alias(name, alias, version, reason=form.get("reason").strip(), who=viewer.name)
    return RedirectResponse(url(f"/prompts/{quote_path(name)}"), status_code=303)


@router.post("/prompts/{name}/aliases/{alias}/rollback")
def rollback_alias(name: str, alias: str, viewer: Viewer, form: Form, context: Context) -> RedirectResponse:
    """Move an alias back to the version it pointed at before its latest move (writers); only
    from the target the page showed (``expected``): a move made meanwhile is a Conflict."""
    viewer.require(REGISTRIES, "writer")
    expected = form.get("expected").strip() or None
    context.prompts.rollback(name, alias, reason=form.get("reason").strip(), who=viewer.name, expected=expected)
    return RedirectResponse(url(f"/prompts/{quote_path(name)}"), status_code=303)
