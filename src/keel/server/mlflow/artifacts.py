"""MLflow's proxied artifact API (``/api/2.0/mlflow-artifacts/artifacts/...``) over keel artifacts.

A run's MLflow artifact URI is ``mlflow-artifacts:/<experiment>/<run_id>/artifacts``,
so the MLflow client uploads, lists and downloads through these routes, which
store keel artifacts of that run (content-addressed objects, on disk or S3).
Uploads are spooled to a file of the server's spool folder chunk by chunk and
downloads streamed straight from the store while hashed (never whole in memory, no
temporary copy), as keel's own artifact routes do (:mod:`keel.server.transfer`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from keel.core.batch import WriteBatch
from keel.core.entities import RunRecord, now_ms
from keel.core.names import check_artifact_path
from keel.errors import InvalidInput, NotFound, TooLarge
from keel.integrations.mlflow_rest.entities import parse_artifact_path
from keel.integrations.mlflow_rest.errors import NOT_SUPPORTED
from keel.server.context import ServerContext
from keel.server.errors import KeelJSONResponse
from keel.server.mlflow.dispatch import authenticate, error_response, mlflow_error
from keel.server.routers.artifacts import verified_download
from keel.server.transfer import spooled_body
from keel.services.contract import authorized_run

__all__ = ["children", "router"]

router = APIRouter(include_in_schema=False)
_PREFIX = "/api/2.0/mlflow-artifacts"


def children(context: ServerContext, run_id: str, path: str, relative_to_root: bool = False) -> list[dict[str, Any]]:
    """The files and folders directly under ``path`` of a run's artifacts, as MLflow lists them
    (names relative to ``path``, or to the run's root with ``relative_to_root``)."""
    folder = check_artifact_path(path) if path else ""
    items = context.tracking.list_artifacts(run_id, folder)
    seen: dict[str, dict[str, Any]] = {}
    for item in items:
        if item.path == folder:  # a file, not a folder: MLflow lists nothing
            continue
        rest = item.path[len(folder) + 1 :] if folder else item.path
        name, slash, _ = rest.partition("/")
        shown = f"{folder}/{name}" if relative_to_root and folder else name
        if slash:
            seen.setdefault(name, {"path": shown, "is_dir": True})
        else:
            seen[name] = {"path": shown, "is_dir": False, "file_size": item.size}
    return [seen[k] for k in sorted(seen)]


def _locate(context: ServerContext, request: Request, path: str, role: str) -> tuple[RunRecord, str]:
    caller = authenticate(context, request)
    try:
        _experiment, run_id, artifact = parse_artifact_path(path)
    except ValueError as exc:
        raise InvalidInput(
            f"invalid artifact path {path!r}", "keel serves <experiment_id>/<run_id>/artifacts/<path>"
        ) from exc
    record = authorized_run(context, caller, run_id, role)
    return record, artifact


@router.get(_PREFIX + "/artifacts")
def list_artifacts(request: Request, path: str = "") -> Response:
    """List a folder of a run's artifacts: ``?path=<experiment>/<run_id>/artifacts/<folder>``."""
    context: ServerContext = request.app.state.keel
    try:
        record, folder = _locate(context, request, path, "reader")
        return KeelJSONResponse({"files": children(context, record.run_id, folder)})
    except Exception as exc:  # noqa: BLE001 - MLflow's error shape for every failure
        return error_response(exc)


@router.put(_PREFIX + "/artifacts/{path:path}")
async def upload_artifact(path: str, request: Request) -> Response:
    """Store the request body (streamed to a temporary file) as one artifact of the run."""
    context: ServerContext = request.app.state.keel
    try:
        record, artifact = await run_in_threadpool(_locate, context, request, path, "writer")
        artifact = check_artifact_path(artifact)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > context.max_upload:
            raise TooLarge(f"upload of {declared} bytes is over the limit of {context.max_upload}", "split it")
        async with spooled_body(request, context, "mlflow") as body:
            oid, size = await run_in_threadpool(context.tracking.store_file, body.path)
        row = (record.run_id, artifact, oid, size, "file", now_ms())
        await run_in_threadpool(context.tracking.write_batch, WriteBatch(artifacts=[row]))
        return KeelJSONResponse({})
    except Exception as exc:  # noqa: BLE001 - MLflow's error shape for every failure
        return error_response(exc)


@router.get(_PREFIX + "/artifacts/{path:path}")
def download_artifact(path: str, request: Request) -> Response:
    """Stream one artifact from the store, hashed as it passes (a corrupt one breaks off)."""
    context: ServerContext = request.app.state.keel
    try:
        record, artifact = _locate(context, request, path, "reader")
        if not artifact:
            raise NotFound("no artifact path given", "download <experiment>/<run_id>/artifacts/<path>")
        item = context.tracking.artifact(record.run_id, artifact)
        return verified_download(context, item.oid, item.path)
    except Exception as exc:  # noqa: BLE001 - MLflow's error shape for every failure
        return error_response(exc)


@router.api_route(_PREFIX + "/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
def unsupported(path: str, request: Request) -> Response:
    """Artifact deletion and multipart uploads: not supported by keel (artifacts are immutable)."""
    context: ServerContext = request.app.state.keel
    try:
        authenticate(context, request)
    except Exception as exc:  # noqa: BLE001
        return error_response(exc)
    return mlflow_error(
        501,
        NOT_SUPPORTED,
        f"{request.method} {_PREFIX}/{path} is not supported by keel (artifacts are immutable; "
        "multipart uploads are not proxied)",
    )
