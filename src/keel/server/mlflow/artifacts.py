"""MLflow's proxied artifact API (``/api/2.0/mlflow-artifacts/artifacts/...``) over keel artifacts.

A run's MLflow artifact URI is ``mlflow-artifacts:/<experiment>/<run_id>/artifacts``,
so the MLflow client uploads, lists and downloads through these routes, which
store keel artifacts of that run (content-addressed objects, on disk or S3). As
MLflow's proxy, any other relative path is served too (``dir/a.txt``, a logged
model's ``<experiment>/models/<id>/artifacts/...``): its files are kept in
:class:`~keel.services.mlflow_artifacts.MlflowArtifacts`, readable and writable with
the caller's role on the experiment the path starts with, or on every project (``*``)
for a path outside experiments. Downloads carry MLflow's Content-Type for the file's
name (whatever the request's ``Accept`` says), as attachments, with ``nosniff``.

Uploads are spooled to a file of the server's spool folder chunk by chunk and
downloads streamed straight from the store while hashed (never whole in memory, no
temporary copy), as keel's own artifact routes do (:mod:`keel.server.transfer`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from keel.core.batch import WriteBatch, is_run_id
from keel.core.entities import RunRecord, now_ms
from keel.core.names import check_artifact_path
from keel.errors import InvalidInput, NotFound, TooLarge
from keel.integrations.mlflow_rest.entities import parse_artifact_path
from keel.integrations.mlflow_rest.errors import NOT_SUPPORTED, unsupported_message
from keel.server.context import ServerContext
from keel.server.errors import KeelJSONResponse
from keel.server.mlflow.dispatch import authenticate, error_response, mlflow_error, services
from keel.server.transfer import spooled_body, stream_object
from keel.services.auth import WORKSPACE, Principal, require
from keel.services.contract import authorized_run
from keel.services.mlflow_artifacts import MlflowArtifacts, mime_type

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


def _safe(path: str) -> str:
    """A relative artifact path by MLflow's rules (no ``#``, no ``..``, not absolute), normalised."""
    if "#" in path or path.startswith("/") or any(part == ".." for part in path.split("/")):
        raise InvalidInput("Invalid path", "artifact paths are relative, without '..'")
    return check_artifact_path(path)


def _project_of(context: ServerContext, request: Request, path: str) -> str | None:
    """The project of the experiment a path starts with (None: not an experiment's path)."""
    first = path.partition("/")[0]
    if not first.isdigit():
        return None
    try:
        return services(context, request.app.state).tracking.project(first)
    except NotFound:
        return None


def _authorize_path(context: ServerContext, request: Request, caller: Principal, path: str, role: str) -> None:
    """``role`` on the path's experiment (one the caller cannot see: no such file), else on ``*``."""
    project = _project_of(context, request, path)
    if project is None:
        require(caller, WORKSPACE, role)
    elif caller.rank(project) == 0:
        raise _no_artifact(path)
    else:
        require(caller, project, role)


def _no_artifact(path: str) -> NotFound:
    return NotFound(f"No such artifact: '{path}'", "list them: MlflowClient().list_artifacts(run_id)")


def _locate(context: ServerContext, request: Request, path: str, role: str) -> tuple[Principal, RunRecord | None, str]:
    """Who calls, and where ``path`` is: a keel run's artifact (the run, the path in it) or,
    for any other path, ``(None, the path)``; ``role`` is checked either way."""
    caller = authenticate(context, request)
    clean = _safe(path) if path.strip("/") else ""
    try:
        _experiment, run_id, artifact = parse_artifact_path(clean)
    except ValueError:
        run_id, artifact = "", ""
    if is_run_id(run_id):
        try:
            return caller, authorized_run(context, caller, run_id, role), artifact
        except NotFound:
            pass  # not a keel run (or one the caller cannot see): a path like any other
    _authorize_path(context, request, caller, clean, role)
    return caller, None, clean


def _files(context: ServerContext) -> MlflowArtifacts:
    return MlflowArtifacts(context.store.db)


def _listing(context: ServerContext, request: Request, path: str) -> dict[str, Any]:
    caller, record, folder = _locate(context, request, path, "reader")
    if record is not None:
        files = children(context, record.run_id, folder)
    else:
        files = _files(context).children(folder)
        if not folder:  # the root: experiments the caller cannot see are not listed
            files = [f for f in files if (p := _project_of(context, request, f["path"])) is None or caller.rank(p)]
    return {"files": files} if files else {}


@router.get(_PREFIX + "/artifacts")
def list_artifacts(request: Request, path: str = "") -> Response:
    """List a folder: ``?path=<experiment>/<run_id>/artifacts/<folder>``, or any other path."""
    context: ServerContext = request.app.state.keel
    try:
        return KeelJSONResponse(_listing(context, request, path))
    except Exception as exc:  # noqa: BLE001 - MLflow's error shape for every failure
        return error_response(exc)


def _stored_at(context: ServerContext, request: Request, path: str, role: str) -> tuple[RunRecord | None, str]:
    _caller, record, artifact = _locate(context, request, path, role)
    if not artifact:
        raise InvalidInput("Invalid path", "name a file: <experiment>/<run_id>/artifacts/<path>")
    return record, artifact


@router.put(_PREFIX + "/artifacts/{path:path}")
async def upload_artifact(path: str, request: Request) -> Response:
    """Store the request body (streamed to a temporary file) as one artifact of a run, or as
    the file at any other path."""
    context: ServerContext = request.app.state.keel
    try:
        record, artifact = await run_in_threadpool(_stored_at, context, request, path, "writer")
        if record is None:
            MlflowArtifacts.check_path(artifact)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > context.max_upload:
            raise TooLarge(f"upload of {declared} bytes is over the limit of {context.max_upload}", "split it")
        async with spooled_body(request, context, "mlflow") as body:
            oid, size = await run_in_threadpool(context.tracking.store_file, body.path)
        if record is not None:
            row = (record.run_id, artifact, oid, size, "file", now_ms())
            await run_in_threadpool(context.tracking.write_batch, WriteBatch(artifacts=[row]))
        else:
            await run_in_threadpool(_files(context).put, artifact, oid, size)
        return KeelJSONResponse({})
    except Exception as exc:  # noqa: BLE001 - MLflow's error shape for every failure
        return error_response(exc)


def _download(context: ServerContext, request: Request, path: str) -> Response:
    record, artifact = _stored_at(context, request, path, "reader")
    shown = path.strip("/")
    if record is not None:
        try:
            oid = context.tracking.artifact(record.run_id, artifact).oid
        except NotFound:
            if children(context, record.run_id, artifact):
                raise InvalidInput(f"Artifact path refers to a directory, not a file: '{shown}'") from None
            raise _no_artifact(shown) from None
    else:
        found = _files(context).get(artifact)
        if found is None:
            if _files(context).is_folder(artifact):
                raise InvalidInput(f"Artifact path refers to a directory, not a file: '{shown}'")
            raise _no_artifact(shown)
        oid = found.oid
    name = artifact.rsplit("/", 1)[-1]
    return stream_object(
        context.tracking.objects,
        oid,
        filename=name,
        media_type=mime_type(name),
        # set as is: a media type alone would get "; charset=utf-8" added to text types
        headers={"Content-Type": mime_type(name), "X-Content-Type-Options": "nosniff"},
    )


@router.get(_PREFIX + "/artifacts/{path:path}")
def download_artifact(path: str, request: Request) -> Response:
    """Stream one file from the store, hashed as it passes (a corrupt one breaks off), with
    MLflow's Content-Type for its name."""
    context: ServerContext = request.app.state.keel
    try:
        return _download(context, request, path)
    except Exception as exc:  # noqa: BLE001 - MLflow's error shape for every failure
        return error_response(exc)


@router.api_route(_PREFIX + "/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
def unsupported(path: str, request: Request) -> Response:
    """Artifact deletion, multipart and presigned transfers: not supported by keel."""
    context: ServerContext = request.app.state.keel
    try:
        authenticate(context, request)
    except Exception as exc:  # noqa: BLE001
        return error_response(exc)
    return mlflow_error(501, NOT_SUPPORTED, unsupported_message(request.method, request.url.path))
