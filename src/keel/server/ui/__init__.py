"""keel's web UI: server-rendered pages under ``/ui`` (Jinja2, inline SVG charts, little JavaScript).

:func:`mount_ui` adds to the app: the static files (``/ui/static``), every page module of
this package (each module named ``pages_*.py`` with a ``router``; found automatically, in
name order), an HTML 404 for unknown ``/ui`` paths, and ``/`` redirecting to ``/ui/``.
See ``docs/ui.md`` ("Adding a page").
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from keel.errors import NotFound
from keel.server.ui.render import STATIC_DIR, UI_PREFIX
from keel.server.ui.routing import UIRouter
from keel.server.ui.sessions import UISettings, Viewer

__all__ = ["UI_PREFIX", "UISettings", "mount_ui", "page_modules"]


def page_modules() -> list[ModuleType]:
    """The UI's page modules (``keel.server.ui.pages_*``), imported, in name order."""
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("pages_"))
    return [importlib.import_module(f"{__name__}.{name}") for name in names]


_fallback = UIRouter()


@_fallback.get("/{path:path}")
def _unknown_page(path: str, _viewer: Viewer) -> HTMLResponse:
    raise NotFound(f"no page at {UI_PREFIX}/{path}", "start from the projects list")


def mount_ui(app: FastAPI, settings: UISettings | None = None) -> None:
    """Serve the web UI from ``app`` (settings default to :meth:`UISettings.from_env`)."""
    app.state.keel_ui = settings or UISettings.from_env()
    app.mount(f"{UI_PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    for module in page_modules():
        app.include_router(module.router, prefix=UI_PREFIX)
    app.include_router(_fallback, prefix=UI_PREFIX)

    @app.get("/", include_in_schema=False)
    def _root(_request: Request) -> RedirectResponse:
        return RedirectResponse(f"{UI_PREFIX}/", status_code=307)
