"""``/health`` (readiness: the database and the object store answer) and ``/live`` (liveness).

Neither needs a token; neither says more than which dependency failed (what went
wrong, which may name hosts, goes to the server log).

- ``GET /api/v1/live``: 200 ``{"status": "alive", "version"}`` whenever the process
  answers HTTP at all; it touches nothing (a liveness probe must not restart a
  server because its database is away).
- ``GET /api/v1/health``: pings the database (``SELECT 1``) and the object store (a
  one-key listing) at the same time, each within 2 s. 200 ``{"status": "ok",
  "version", "checks": {"database": "ok", "objects": "ok"}}``; when one fails, 503
  with ``Retry-After`` and ``{"status": "unavailable", "version", "failing":
  ["database"], "checks": {"database": "unavailable", "objects": "ok"}}``.
"""

from __future__ import annotations

import logging

from fastapi.concurrency import run_in_threadpool

from keel._version import __version__
from keel.server.auth import Context
from keel.server.errors import KeelJSONResponse
from keel.server.routers import Router
from keel.services.health import check_health

__all__ = ["router"]

log = logging.getLogger("keel.server")

router = Router(tags=["meta"])


@router.get("/live", summary="Liveness: the process answers (checks nothing else)")
async def live() -> KeelJSONResponse:
    return KeelJSONResponse({"status": "alive", "version": __version__})


@router.get("/health", summary="Readiness: the database and the object store answer (503 naming what fails)")
async def health(context: Context) -> KeelJSONResponse:
    found = await run_in_threadpool(check_health, context.store)
    if found.ok:
        return KeelJSONResponse({"status": "ok", "version": __version__, "checks": found.checks()})
    for name, problem in found.problems.items():
        log.warning("health: %s unavailable: %s", name, problem)
    body = {"status": "unavailable", "version": __version__, "failing": found.failing, "checks": found.checks()}
    return KeelJSONResponse(body, status_code=503, headers={"Retry-After": str(found.retry_after)})
