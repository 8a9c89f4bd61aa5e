"""``/runs/{run_id}/artifacts``: list, and streamed upload and download.

Uploads are spooled to a file of the server's spool folder chunk by chunk (never
whole in memory; removed whatever happens), then stored with
:meth:`ObjectStore.put_file`, which streams to disk or S3. Downloads stream from the
store to the client while they are hashed (no temporary copy): a corrupt object
breaks the response off after its last byte (:mod:`keel.server.transfer`).
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import Request, status
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from keel.core.batch import WriteBatch
from keel.core.entities import now_ms
from keel.core.names import check_artifact_path
from keel.errors import InvalidInput, TooLarge
from keel.server.auth import Caller, Context
from keel.server.context import ServerContext
from keel.server.routers import Router
from keel.server.routers.objects import PRESIGN_SECONDS, presigned_download, wants_presigned
from keel.server.routers.runs import run_for
from keel.server.transfer import spooled_body, stream_object

__all__ = ["router", "verified_download"]

router = Router(tags=["artifacts"])

_KINDS = ("file", "table", "text", "html")


def _artifact_path(path: str) -> str:
    """``path`` normalised by :func:`check_artifact_path`; control characters (NUL) refused too."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
        raise InvalidInput(f"invalid artifact path {path!r}", "artifact paths may not contain control characters")
    return check_artifact_path(path)


@router.get("/runs/{run_id}/artifacts", summary="A run's artifacts (all, or under a folder)")
def list_artifacts(run_id: str, caller: Caller, context: Context, prefix: str = "") -> list[dict[str, Any]]:
    full = run_for(context, caller, run_id, "reader").run_id
    return [
        {"path": a.path, "oid": a.oid, "size": a.size, "kind": a.kind}
        for a in context.tracking.list_artifacts(full, prefix)
    ]


@router.put(
    "/runs/{run_id}/artifacts/{path:path}",
    status_code=status.HTTP_201_CREATED,
    summary="Upload one artifact (the request body, streamed)",
    openapi_extra={"requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}},
)
async def upload_artifact(
    run_id: str, path: str, request: Request, caller: Caller, context: Context, kind: str = "file"
) -> dict[str, Any]:
    path = _artifact_path(path)
    if kind not in _KINDS:
        raise InvalidInput(f"invalid artifact kind {kind!r}", f"use one of {', '.join(_KINDS)}")
    record = await run_in_threadpool(run_for, context, caller, run_id, "writer")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > context.max_upload:
        raise TooLarge(f"upload of {declared} bytes is over the limit of {context.max_upload}", "split it")
    async with spooled_body(request, context, "upload") as body:
        oid, size = await run_in_threadpool(context.tracking.store_file, body.path)
    row = (record.run_id, path, oid, size, kind, now_ms())
    await run_in_threadpool(context.tracking.write_batch, WriteBatch(artifacts=[row]))
    return {"path": path, "oid": oid, "size": size, "kind": kind}


@router.get(
    "/runs/{run_id}/artifacts/{path:path}",
    summary="Download one artifact (streamed; from S3 through a presigned URL with Prefer: presigned or ?presign=1)",
    response_class=StreamingResponse,
)
def download_artifact(
    run_id: str, path: str, request: Request, caller: Caller, context: Context, presign: str | None = None
) -> Response:
    full = run_for(context, caller, run_id, "reader").run_id
    artifact = context.tracking.artifact(full, _artifact_path(path))
    if wants_presigned(request, presign):
        url = presigned_download(context.tracking.objects, artifact.oid, os.path.basename(artifact.path))
        if url is not None:
            if presign is not None and presign.lower() == "json":
                return JSONResponse({"url": url, "expires_in": PRESIGN_SECONDS})
            return RedirectResponse(url, status_code=status.HTTP_307_TEMPORARY_REDIRECT)
    return verified_download(context, artifact.oid, artifact.path, {"X-Keel-Oid": artifact.oid})


def verified_download(
    context: ServerContext, oid: str, path: str, headers: dict[str, str] | None = None
) -> StreamingResponse:
    """Object ``oid`` as a download named after ``path``, streamed from the store while it
    is hashed (:func:`keel.server.transfer.stream_object`: no temporary copy; a corrupt
    object breaks the response off after its last byte, and is logged)."""
    return stream_object(context.tracking.objects, oid, filename=os.path.basename(path), headers=headers)
