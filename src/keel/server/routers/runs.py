"""``/runs``: create, read, search, finish, delete/restore, batch logging, metric history."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, Literal

from fastapi import Depends, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from keel.core.batch import WriteBatch
from keel.core.entities import RunRecord, now_ms
from keel.core.names import check_key
from keel.core.values import decode_param, encode_param, flatten
from keel.errors import Conflict
from keel.server.auth import Caller, Context, principal, require
from keel.server.batch_body import BATCH_OPENAPI, parse_batch
from keel.server.context import ServerContext
from keel.server.routers import Router
from keel.services.auth import Principal
from keel.services.contract import authorized_run, invoke
from keel.services.contract import find as find_operation

__all__ = ["router", "run_for"]

router = Router(tags=["runs"])

WRITE_SLOTS = 2  # batch writes parsed and written at once by one server process
# The bearer token, read without authenticating: the hot routes authenticate in their own thread-pool trip.
_bearer = HTTPBearer(auto_error=False, description="An API token: Authorization: Bearer keel_...")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


class RunRequest(BaseModel):
    """A new run. ``context`` is where the client runs (git, host, versions): the server's
    own would be meaningless. ``run_id`` lets a client choose the id (32 hex digits)."""

    model_config = ConfigDict(extra="forbid")
    project: str = "default"
    name: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    parent_id: str | None = None
    run_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    context: dict[str, Any] = Field(default_factory=dict)


class RunUpdate(BaseModel):
    """A status change: finish (``finished``/``failed``/``killed``) or resume (``running``)."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["running", "finished", "failed", "killed"]
    end_time: int | None = None
    error: str | None = None


def run_for(context: ServerContext, caller: Principal, run_id: str, role: str) -> RunRecord:
    """The run ``run_id`` (id or unique prefix) after checking ``caller`` has ``role`` on its
    stored project; a run the caller may not read is the NotFound of an unknown id."""
    return authorized_run(context, caller, run_id, role)


def _write(context: ServerContext, caller: Principal, batch: WriteBatch) -> None:
    """Write ``batch`` through the declared ``tracking.write_batch`` (checks and authorization included)."""
    invoke(_WRITE_BATCH, context, caller, [batch], {})


_WRITE_BATCH = find_operation("tracking", "write_batch")
_SEARCH_RUNS = find_operation("tracking", "search_runs")


@router.post("/runs", status_code=status.HTTP_201_CREATED, summary="Create a running run")
def create_run(body: RunRequest, caller: Caller, context: Context) -> dict[str, Any]:
    require(caller, body.project, "writer")
    parent = run_for(context, caller, body.parent_id, "reader").run_id if body.parent_id else None
    record, batch = context.tracking.new_run(body.project, body.name, body.tags, parent, body.run_id, parent_known=True)
    record.context_json = json.dumps(body.context, sort_keys=True, default=str)
    batch.new_runs = [(*row[:5], record.context_json) for row in batch.new_runs]
    _write(context, caller, batch)
    return context.tracking.get_run(record.run_id).to_dict()


@router.get("/runs", summary="Search runs: filter, order, page")
def search_runs(
    caller: Caller,
    context: Context,
    project: Annotated[list[str], Query(description="repeat for several; default: all you can read")] = [],  # noqa: B006
    filter: Annotated[str | None, Query(description="e.g. metrics.acc > 0.8 and params.model = 'x'")] = None,  # noqa: A002
    order_by: Annotated[list[str], Query(description="e.g. metrics.acc DESC; repeatable")] = [],  # noqa: B006
    limit: int = 100,
    page_token: str | None = None,
    deleted: Literal["exclude", "include", "only"] = "exclude",
) -> dict[str, Any]:
    records, token = invoke(
        _SEARCH_RUNS,
        context,
        caller,
        [project or None, filter, order_by or None, limit, page_token, deleted == "include", deleted == "only"],
        {},
    )
    return {"runs": [r.to_dict() for r in records], "next_page_token": token}


@router.get("/runs/{run_id}", summary="One run by id or unique prefix")
async def get_run(run_id: str, credentials: Credentials, context: Context) -> dict[str, Any]:
    # The hottest read: authenticate and read in one trip to the thread pool, not two.
    return await run_in_threadpool(_read_run, context, credentials, run_id)


def _read_run(context: ServerContext, credentials: HTTPAuthorizationCredentials | None, run_id: str) -> dict[str, Any]:
    return run_for(context, principal(context, credentials), run_id, "reader").to_dict()


@router.patch("/runs/{run_id}", summary="Finish, fail, kill or resume a run")
def update_run(run_id: str, body: RunUpdate, caller: Caller, context: Context) -> dict[str, Any]:
    record = run_for(context, caller, run_id, "writer")
    if body.status == "running":
        context.tracking.resume_run(record.run_id)
    else:
        end = body.end_time or now_ms()
        _write(context, caller, WriteBatch(run_ends=[(record.run_id, body.status, end, body.error)]))
    return context.tracking.get_run(record.run_id).to_dict()


@router.delete("/runs/{run_id}", summary="Soft-delete a run (restorable)")
def delete_run(run_id: str, caller: Caller, context: Context) -> dict[str, Any]:
    record = run_for(context, caller, run_id, "writer")
    return {"run_id": context.tracking.delete_run(record.run_id), "deleted": True}


@router.post("/runs/{run_id}/restore", summary="Undo a delete")
def restore_run(run_id: str, caller: Caller, context: Context) -> dict[str, Any]:
    record = run_for(context, caller, run_id, "writer")
    return {"run_id": context.tracking.restore_run(record.run_id), "deleted": False}


@router.post(
    "/runs/{run_id}/batch",
    summary="Log params, metrics and tags in one transaction",
    description="Metrics as rows (`[{key, value, step, timestamp}]`) or as columns "
    "(`{keys, values, steps, timestamps}`, the compact form). Changing a logged param is 409 "
    "unless `overwrite_params` is true.",
    openapi_extra=BATCH_OPENAPI,
)
async def log_batch(run_id: str, request: Request, credentials: Credentials, context: Context) -> dict[str, int]:
    raw = await request.body()  # bounded by the app's JSON body limit (413 past it)
    content_type = request.headers.get("content-type")
    async with _write_slots(request):
        return await run_in_threadpool(_write_batch, context, credentials, run_id, raw, content_type)


def _write_slots(request: Request) -> asyncio.Semaphore:
    """The process's batch-write slots: at most :data:`WRITE_SLOTS` batches are parsed and
    written at once. The database takes one write at a time and the parsing holds the GIL, so
    more in flight would only make every request of the process, reads too, wait longer."""
    slots: asyncio.Semaphore | None = getattr(request.app.state, "keel_write_slots", None)
    if slots is None:
        slots = request.app.state.keel_write_slots = asyncio.Semaphore(WRITE_SLOTS)
    return slots


def _write_batch(
    context: ServerContext,
    credentials: HTTPAuthorizationCredentials | None,
    run_id: str,
    raw: bytes,
    content_type: str | None,
) -> dict[str, int]:
    """Authenticate, check the caller may write the run, parse the body (see
    :mod:`keel.server.batch_body`) and write it in one transaction: one trip to the thread pool."""
    full = run_for(context, principal(context, credentials), run_id, "writer").run_id
    body = parse_batch(raw, content_type)
    if len(body.keys) + len(body.params) + len(body.tags) == 0:
        return {"written": 0}
    batch = WriteBatch()
    stored = context.tracking.repo.params_of(full) if body.params and not body.overwrite_params else {}
    for key, value in flatten(body.params):
        vtype, text = encode_param(key, value)
        old = stored.get(key)
        if old is not None and old != (vtype, text):
            # The store keeps the first value silently; over HTTP the caller must hear about it.
            raise Conflict(
                f"param {key!r} of run {full[:8]} is {decode_param(*old)!r}; cannot change it to {value!r}",
                "params are fixed once logged: log a new key, or send overwrite_params: true",
            )
        batch.params.append((full, key, vtype, text, body.overwrite_params))
    batch.metrics = body.metric_rows(full, now_ms())
    for key, value in body.tags.items():
        batch.tags.append((full, check_key(key, "tag key"), value))
    context.tracking.write_batch(batch)
    return {"written": len(batch)}


@router.get("/runs/{run_id}/metrics", summary="Latest, min, max and count of each metric")
def metric_summaries(run_id: str, caller: Caller, context: Context) -> list[dict[str, Any]]:
    full = run_for(context, caller, run_id, "reader").run_id
    return [
        {"key": s.key, "latest": s.latest, "step": s.step, "timestamp": s.timestamp, "min": s.min, "max": s.max,
         "count": s.count}
        for s in context.tracking.metric_summaries(full)
    ]  # fmt: skip


@router.get("/runs/{run_id}/metric-history", summary="Every value of one metric, by step")
def metric_history(
    run_id: str, key: str, caller: Caller, context: Context, max_points: int | None = None
) -> dict[str, Any]:
    """``max_points``: at most that many points, for a chart (each bucket's lowest and highest value)."""
    full = run_for(context, caller, run_id, "reader").run_id
    history = context.tracking.metric_history(full, key, max_points)
    return {
        "run_id": full,
        "key": key,
        "steps": [m.step for m in history],
        "values": [m.value for m in history],
        "timestamps": [m.timestamp for m in history],
    }
