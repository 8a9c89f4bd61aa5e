"""Feature flags: each environment's effective flags (state, variants, rollout, rules,
where each comes from) and one flag's definition with its history (who changed it,
when, why, and the definition it moved to)."""

from __future__ import annotations

from pathlib import Path

from fastapi import Request
from fastapi.responses import HTMLResponse

from keel.errors import NotFound
from keel.server.auth import Context
from keel.server.context import ServerContext
from keel.server.ui.registry_views import as_of, yaml_text
from keel.server.ui.render import add_nav, render
from keel.server.ui.routing import UIRouter
from keel.server.ui.sessions import Viewer
from keel.services.auth import REGISTRIES
from keel.services.flags import FILE_NAME, FlagSet

__all__ = ["router"]

router = UIRouter()
add_nav("Flags", "/flags", order=60)

DEFAULT_ENV = "production"


def snapshot(context: ServerContext, env: str, local: bool, at: int | None = None) -> FlagSet:
    """The effective flags of ``env``: under ``keel ui`` (``local``) with the workspace's
    ``flags.yaml`` (beside the store, or in the folder ``keel ui`` runs in); on a server
    the store's alone (its working folder is nobody's workspace). ``at``: the stored flags
    as they were then (the file as it is now: its past is in git)."""
    root = context.store.root
    file = Path(root) / FILE_NAME if root is not None else None
    if file is not None and file.is_file():
        return context.flags.snapshot(env, path=file, at=at)  # type: ignore[no-any-return]
    return context.flags.snapshot(env, use_file=local, at=at)  # type: ignore[no-any-return]


def _environments(context: ServerContext, env: str) -> list[str]:
    return sorted({DEFAULT_ENV, env, *context.flags.environments()})


@router.get("/flags")
def flags_page(
    request: Request, viewer: Viewer, context: Context, env: str = DEFAULT_ENV, at: str | None = None
) -> HTMLResponse:
    """The flags of one environment (with ``?at=T``: the stored flags in force then)."""
    viewer.require(REGISTRIES, "reader")
    moment = as_of(at)
    flags = snapshot(context, env, viewer.local, moment.ms)
    return render(
        request,
        "flags.html",
        title="Flags",
        flagset=flags,
        flags=[flags.flags[k] for k in sorted(flags.flags)],
        env=env,
        environments=_environments(context, env),
        at_text=moment.text,
    )


@router.get("/flags/{key}")
def flag_page(
    request: Request, key: str, viewer: Viewer, context: Context, env: str = DEFAULT_ENV, at: str | None = None
) -> HTMLResponse:
    """One flag: its definition now (or ``?at=T``: then) and every stored change (up to T)."""
    viewer.require(REGISTRIES, "reader")
    moment = as_of(at)
    flags = snapshot(context, env, viewer.local, moment.ms)
    history = context.flags.history(key, env)
    if moment.ms is not None:
        history = [entry for entry in history if entry.move.at <= moment.ms]
    flag = flags.flags.get(key)
    if flag is None and not history:
        raise NotFound(f"no flag {key!r} in {env!r}", "pick one from the flags list")
    return render(
        request,
        "flag.html",
        title=key,
        key=key,
        env=env,
        flag=flag,
        source=flags.sources.get(key, ""),
        definition=yaml_text(flag.to_data()) if flag is not None else "",
        rules=[yaml_text(rule.to_data()) for rule in flag.rules] if flag is not None else [],
        history=[(entry.move, yaml_text(entry.definition)) for entry in reversed(history)],
        environments=_environments(context, env),
        at_text=moment.text,
    )
