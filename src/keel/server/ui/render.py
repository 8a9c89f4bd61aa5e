"""Rendering pages: the Jinja environment (autoescape on for every template), formatting
filters, URL helpers, the navigation bar, and links to versioned entities.

Templates live in ``src/keel/web/templates`` and extend ``layout.html``; static files
(CSS, a little JavaScript) in ``src/keel/web/static``, served at ``/ui/static``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from keel._version import __version__
from keel.core.entities import EntityRef

__all__ = [
    "SECURITY_HEADERS",
    "STATIC_DIR",
    "TEMPLATE_DIR",
    "UI_PREFIX",
    "NavItem",
    "add_nav",
    "entity_url",
    "environment",
    "fmt_bytes",
    "fmt_duration",
    "fmt_num",
    "fmt_time",
    "link_entities",
    "quote_path",
    "render",
    "url",
]

UI_PREFIX = "/ui"
WEB_DIR = Path(__file__).resolve().parents[2] / "web"
TEMPLATE_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"


@dataclass(frozen=True)
class NavItem:
    """One entry of the navigation bar: ``path`` is under ``/ui`` (``/projects``)."""

    label: str
    path: str
    order: int = 50


# No inline script or style may run: even if some user content escaped escaping, it could not execute.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_NAV: list[NavItem] = []
_ENTITY_LINKS: dict[str, Callable[[EntityRef], str | None]] = {}


def add_nav(label: str, path: str, order: int = 50) -> None:
    """Add a navigation bar entry (idempotent); entries show sorted by ``order``, then label."""
    item = NavItem(label, path, order)
    if item not in _NAV:
        _NAV.append(item)
        _NAV.sort(key=lambda n: (n.order, n.label))


def link_entities(kind: str, to_url: Callable[[EntityRef], str | None]) -> None:
    """Make lineage references of ``kind`` (``prompt``, ``model``...) link to a page:
    ``to_url(ref)`` returns a full path (use :func:`url`) or None for no link."""
    _ENTITY_LINKS[kind] = to_url


def entity_url(ref: EntityRef | str) -> str | None:
    """The page of a lineage entity (``run:ID``, ``prompt:name@1.0.0``...), if a page module links it."""
    ref = EntityRef.parse(ref)
    to_url = _ENTITY_LINKS.get(ref.kind)
    return to_url(ref) if to_url else None


def url(path: str, /, **query: Any) -> str:
    """A UI URL: ``url("/runs/abc", tab="metrics")`` -> ``/ui/runs/abc?tab=metrics``.

    ``path`` segments are kept as given (quote user values with :func:`quote_path`);
    ``None`` query values are dropped and lists repeat the key.
    """
    pairs: list[tuple[str, Any]] = []
    for key, value in query.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            pairs.extend((key, v) for v in value)
        else:
            pairs.append((key, value))
    return UI_PREFIX + path + (f"?{urlencode(pairs)}" if pairs else "")


def quote_path(value: str) -> str:
    """One user-supplied path segment, percent-encoded (``/`` kept, for artifact paths)."""
    return quote(value, safe="/")


def fmt_num(value: Any, digits: int = 4) -> str:
    """A number for a table cell: ints as they are, floats to ``digits`` significant digits."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if value == int(value) and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.{digits}g}"
    return str(value)


def fmt_time(ms: int | None) -> str:
    """Epoch milliseconds as ``2026-11-29 23:59:07Z`` (UTC, and saying so); empty for None."""
    if ms is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ms // 1000))


def fmt_duration(seconds: float | None) -> str:
    """``850 ms``, ``12.3 s``, ``4 min 05 s``, ``2 h 03 min``; empty for None."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def fmt_bytes(size: int | None) -> str:
    """``512 B``, ``1.5 KiB``, ``3.2 MiB``..."""
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop returns first


def _static(path: str) -> str:
    return f"{UI_PREFIX}/static/{path}?v={__version__}"


def _build_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,  # every template, whatever its name: user content is always escaped
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters.update(num=fmt_num, when=fmt_time, duration=fmt_duration, bytes=fmt_bytes, qp=quote_path)
    env.globals.update(url=url, static=_static, entity_url=entity_url, version=__version__, ui_prefix=UI_PREFIX)
    return env


environment = _build_environment()


def render(
    request: Request,
    template: str,
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """Render ``template`` (which extends ``layout.html``) as the page for ``request``.

    The template also sees: ``request``, ``viewer`` (the :class:`~keel.server.ui.sessions.UIUser`
    or None on the sign-in and error pages), ``csrf_field`` (the hidden input every POST form
    must include), ``nav`` (navigation entries), ``title`` (default "keel"), ``path`` (this
    page's path) and ``page_path`` (the same without ``/ui``, for ``url()``), and the globals
    ``url``, ``static``, ``entity_url`` and the filters ``num``, ``when``, ``duration``,
    ``bytes``, ``qp``.
    """
    user = getattr(request.state, "ui_user", None)
    token = user.csrf_token if user is not None else ""
    values: dict[str, Any] = {
        "request": request,
        "viewer": user,
        "csrf_token": token,
        "csrf_field": Markup('<input type="hidden" name="csrf" value="{}">').format(escape(token)),
        "nav": list(_NAV),
        "title": "keel",
        "path": request.url.path,
        "page_path": request.url.path.removeprefix(UI_PREFIX),
    }
    values.update(context)
    html = environment.get_template(template).render(values)
    return HTMLResponse(html, status_code=status_code, headers={**SECURITY_HEADERS, **(headers or {})})
