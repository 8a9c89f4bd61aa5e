"""The team server's ASGI app: every router under ``/api/v1``, one error shape, token auth.

Run it with ``python -m keel.server --store URL --objects URL`` (see
:mod:`keel.server.__main__`), or build it yourself::

    from keel.server import create_app
    app = create_app("postgresql+psycopg://keel@db/keel", "s3://bucket/keel")

The app is stateless: it holds connections, not facts, so several processes or
hosts can serve one database and bucket behind a load balancer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from keel._version import __version__
from keel.errors import InvalidInput
from keel.server import mlflow as mlflow_api
from keel.server.auth import LocalOnly, local_principal
from keel.server.context import DEFAULT_MAX_UPLOAD, ServerContext
from keel.server.errors import KeelJSONResponse, install_error_handlers
from keel.server.hooks_worker import start_worker as start_hooks_worker
from keel.server.middleware import DEFAULT_MAX_JSON, BodyLimit, ServerTiming
from keel.server.observability import install_observability
from keel.server.routers import (
    artifacts,
    auth,
    changes,
    health,
    models,
    objects,
    otlp,
    projects,
    prompts,
    rpc,
    runs,
)
from keel.server.ui import UISettings, mount_ui
from keel.services.leftovers import ENV_SPOOL_AGE, SPOOL_AGE_S, age_from_env, sweep_spool
from keel.services.retention import ENV_INTERVAL as ENV_RETENTION_INTERVAL
from keel.services.retention import ENV_LEASE as ENV_RETENTION_LEASE
from keel.services.workspace import open_store

__all__ = ["API_PREFIX", "ENV_OBJECTS", "ENV_STORE", "app_from_env", "create_app"]

API_PREFIX = "/api/v1"
ENV_STORE = "KEEL_SERVER_STORE"
ENV_OBJECTS = "KEEL_SERVER_OBJECTS"
ENV_MAX_UPLOAD = "KEEL_SERVER_MAX_UPLOAD"
ENV_MAX_JSON = "KEEL_SERVER_MAX_JSON"
log = logging.getLogger("keel.server")


def create_app(
    store_url: str,
    objects_url: str | None = None,
    *,
    tmp_dir: str | os.PathLike[str] | None = None,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    max_json: int = DEFAULT_MAX_JSON,
    local: bool = False,
) -> FastAPI:
    """The FastAPI app serving the store at ``store_url`` / ``objects_url``.

    Args:
        store_url: a database URL (``sqlite:///path`` or ``postgresql+psycopg://...``).
        objects_url: the object store (a folder or ``s3://bucket/prefix``); default:
            ``objects/`` beside a SQLite file.
        tmp_dir: where uploads are spooled, in its ``keel-server-<uid>/`` folder (default:
            the system's temporary folder); leftovers of killed processes are swept at
            start and now and then (:mod:`keel.services.leftovers`).
        max_upload: the largest artifact upload accepted, in bytes (larger: 413).
        max_json: the largest JSON or form request body accepted, in bytes (larger: 413).
        local: serve as ``keel ui`` does, for one person on their machine: the web UI with no
            sign-in, the MLflow API and ``/v1/traces`` with no token, as the local user (a site
            admin); every request must come from and name a loopback host and not from another
            site's page (:class:`keel.server.auth.LocalOnly`). Listen on a loopback address only.
    """
    if store_url.startswith(("http://", "https://")):
        raise InvalidInput("the server needs a database URL, not another server", "pass --store sqlite:///... ")
    store = open_store(store_url, objects_url, cached=False)
    spool = Path(tmp_dir or tempfile.gettempdir())
    context = ServerContext(store, spool, max_upload)
    spool_age = age_from_env(ENV_SPOOL_AGE, SPOOL_AGE_S)
    retention_every = age_from_env(ENV_RETENTION_INTERVAL, 3600.0)  # 0: this process never applies retention
    retention_lease = age_from_env(ENV_RETENTION_LEASE, 600.0)
    context.spool_dir  # noqa: B018 - create (and check) the spool folder now, not at the first upload

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(_sweep_spool(context.spool_dir, spool_age))
        expiry = asyncio.create_task(_apply_retention(context, retention_every, retention_lease))
        hooks = start_hooks_worker(store.db)  # delivers webhooks from the queue (docs/hooks.md)
        try:
            yield
        finally:
            sweeper.cancel()
            expiry.cancel()
            if hooks is not None:
                await run_in_threadpool(hooks.stop)
            store.close()

    app = FastAPI(
        title="keel",
        version=__version__,
        description="Experiment management for LLM apps: the team server's REST API.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        default_response_class=KeelJSONResponse,
        lifespan=lifespan,
    )
    app.state.keel = context
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_json=max_json)
    app.add_middleware(ServerTiming)
    if local:  # keel ui: the local user needs no token, so nobody else may get in (keel.server.auth)
        app.state.keel_local = local_principal()
        app.add_middleware(LocalOnly)
    # Routes are matched in order, one by one: the MLflow API (a few catch-alls under its own
    # prefixes) and the hot logging routes go first, the ~100 service-API routes and the UI last.
    app.include_router(mlflow_api.router)  # MLflow's REST API: /api/2.0/mlflow/...
    app.include_router(otlp.router)  # OpenTelemetry's OTLP/HTTP traces: POST /v1/traces
    for module in (runs, artifacts, objects, auth, projects, prompts, models, rpc):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(health.router, prefix=API_PREFIX)  # /health (database and objects answer), /live
    app.include_router(changes.router, prefix=API_PREFIX)  # /changes: the change feed sdk caches follow

    mount_ui(app, UISettings(local=True) if local else None)
    install_observability(app)  # last: request ids, access log, metrics, the report of every 5xx
    return app


async def _sweep_spool(folder: Path, older_than: float) -> None:
    """Remove leftover spool files now and then (every half ``older_than``, at most every
    10 minutes): a worker killed mid-upload leaves its file, and the next sweep after it
    has aged removes it (:mod:`keel.services.leftovers`)."""
    interval = min(max(older_than / 2, 1.0), 600.0)
    while True:
        try:
            await run_in_threadpool(sweep_spool, folder, older_than)
        except OSError as exc:  # pragma: no cover - a vanished TMPDIR: try again later
            log.warning("sweeping the spool folder %s failed: %s", folder, exc)
        await asyncio.sleep(interval)


async def _apply_retention(context: ServerContext, every: float, lease: float) -> None:
    """Apply the retention policies every ``every`` seconds (``KEEL_RETENTION_INTERVAL``,
    default hourly; 0: never in this process), in this process only while it holds the
    ``retention`` lease (:func:`keel.services.retention.apply_with_lease`): with several
    server processes on one database one applies it, and another takes over once a dead
    holder's lease (``KEEL_RETENTION_LEASE`` seconds, default 600) has run out."""
    if every <= 0:
        return
    from keel.services.retention import apply_with_lease, holder_id

    holder = holder_id()
    lease_ms = int(max(lease, every) * 1000)
    wait = min(every, 30.0)  # the first pass soon after start: a server restarted often still applies it
    while True:
        await asyncio.sleep(wait)
        wait = every
        try:
            reports = await run_in_threadpool(apply_with_lease, context.retention, holder, lease_ms)
        except Exception as exc:  # noqa: BLE001 - the database away, a bug: log it, try at the next pass
            log.warning("applying retention failed: %s", exc)
            continue
        for report in reports or ():
            if report.deleted:
                log.info("retention: %s: %d expired", report.kind, report.deleted)


def app_from_env() -> FastAPI:
    """:func:`create_app` configured from ``KEEL_SERVER_STORE`` / ``KEEL_SERVER_OBJECTS``
    (the factory uvicorn imports in each worker process)."""
    store = os.environ.get(ENV_STORE)
    if not store:
        raise InvalidInput(f"{ENV_STORE} is not set", "start the server with: python -m keel.server --store URL")
    max_upload = int(os.environ.get(ENV_MAX_UPLOAD, DEFAULT_MAX_UPLOAD))
    max_json = int(os.environ.get(ENV_MAX_JSON, DEFAULT_MAX_JSON))
    return create_app(store, os.environ.get(ENV_OBJECTS) or None, max_upload=max_upload, max_json=max_json)
