"""One entry for every ``/api/2.0/mlflow/...`` call: auth, arguments, MLflow's error shape.

MLflow's client expects MLflow's own error body (``{"error_code", "message"}``),
not keel's, so these routes do not go through keel's exception handlers: every
call is answered here. Handlers register with :func:`endpoint` under MLflow's
method and path; any other path answers ``NOT_IMPLEMENTED`` (501) naming the
endpoint as not supported by keel, and a malformed body answers
``INVALID_PARAMETER_VALUE`` (400).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from keel.errors import InvalidInput, KeelError, Unauthenticated
from keel.integrations.mlflow_rest.errors import NOT_SUPPORTED, error_body, error_of, unsupported_message
from keel.integrations.mlflow_rest.validation import check_request, schema_of
from keel.server.auth import local_caller, require
from keel.server.context import ServerContext
from keel.server.errors import KeelJSONResponse
from keel.server.request_context import current_request_id, report_failure
from keel.services.auth import REGISTRIES, Principal
from keel.services.mlflow_registry import MlflowRegistry
from keel.services.mlflow_tracking import MlflowTracking

__all__ = [
    "Call",
    "HANDLERS",
    "MLFLOW_SERVER_VERSION",
    "answer",
    "authenticate",
    "endpoint",
    "mlflow_error",
    "router",
    "services",
]

log = logging.getLogger("keel.server.mlflow")

router = APIRouter(include_in_schema=False)

#: A handler answers a JSON object, or a response of its own (NOT_IMPLEMENTED for a known call).
Handler = Callable[["Call"], "dict[str, Any] | Response"]
#: (HTTP method, path after ``/api/2.0/mlflow/``) -> handler.
HANDLERS: dict[tuple[str, str], Handler] = {}
_services_lock = threading.Lock()


@dataclass
class MlflowServices:
    """The MLflow-facing services of one process."""

    tracking: MlflowTracking
    registry: MlflowRegistry


def services(context: ServerContext, state: Any) -> MlflowServices:
    """The process's :class:`MlflowServices`, built on first use over the server's own services."""
    found = getattr(state, "mlflow", None)
    if found is None:
        with _services_lock:
            found = getattr(state, "mlflow", None)
            if found is None:
                found = MlflowServices(
                    MlflowTracking(context.tracking), MlflowRegistry(context.models, context.prompts)
                )
                state.mlflow = found
    return found  # type: ignore[no-any-return]


@dataclass
class Call:
    """One MLflow call: who makes it, its arguments, and the services to answer it."""

    context: ServerContext
    caller: Principal
    args: dict[str, Any]
    mlflow: MlflowServices

    @property
    def who(self) -> str:
        """The caller's user name (recorded in keel's reflog and audit)."""
        return self.caller.name

    def get(self, key: str, default: Any = None) -> Any:
        """An optional argument."""
        value = self.args.get(key)
        return default if value is None else value

    def need(self, key: str) -> Any:
        """A required argument (INVALID_PARAMETER_VALUE when missing)."""
        value = self.args.get(key)
        if value is None or value == "":
            raise InvalidInput(f"Missing value for required parameter '{key}'", "see MLflow's REST API reference")
        return value

    def text(self, key: str) -> str:
        """A required text argument."""
        value = self.need(key)
        if not isinstance(value, str | int):
            raise InvalidInput(f"Invalid value {value!r} for parameter '{key}'", "pass text")
        return str(value)

    def registry(self, role: str) -> None:
        """Check the caller's role on the prompt and model registries."""
        require(self.caller, REGISTRIES, role)


H = TypeVar("H", bound=Handler)


def endpoint(method: str, path: str) -> Callable[[H], H]:
    """Register ``handler`` for ``METHOD /api/2.0/mlflow/<path>``."""

    def register(handler: H) -> H:
        HANDLERS[(method, path)] = _checked(method, path, handler) if schema_of(method, path) else handler
        return handler

    return register


def _checked(method: str, path: str, handler: Handler) -> Handler:
    """``handler`` after MLflow's own checks of the request (:mod:`keel.integrations.mlflow_rest.validation`)."""

    def checked(call: Call) -> dict[str, Any] | Response:
        check_request(method, path, call.args)
        return handler(call)

    return checked


def mlflow_error(status: int, code: str, message: str) -> Response:
    """An error in MLflow's shape."""
    return KeelJSONResponse(error_body(code, message), status_code=status)


def authenticate(context: ServerContext, request: Request) -> Principal:
    """The caller of an MLflow request: ``Authorization: Bearer <keel API token>``
    (what the MLflow client sends for ``MLFLOW_TRACKING_TOKEN``); under ``keel ui``, the
    local user, with no token (:func:`keel.server.auth.local_caller`)."""
    local = local_caller(request.app.state)
    if local is not None:
        return local
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated(
            "this endpoint needs a keel API token", "set MLFLOW_TRACKING_TOKEN to a keel API token (keel_...)"
        )
    return context.auth.authenticate(secret.strip())


def _arguments(request: Request, body: bytes) -> dict[str, Any]:
    """The query string (repeated keys as lists) and, except for GET, the JSON body."""
    args: dict[str, Any] = {}
    for key in request.query_params:
        values = request.query_params.getlist(key)
        args[key] = values if len(values) > 1 else values[0]
    if request.method == "GET" or not body.strip():
        return args
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the request body is not JSON: {exc}", "send a JSON object") from exc
    if not isinstance(parsed, dict):
        raise InvalidInput("the request body must be a JSON object", "send a JSON object")
    return {**args, **parsed}


def error_response(exc: Exception) -> Response:
    """An exception as MLflow's error: keel errors keep their meaning, anything else is a 500.
    A 5xx is logged with its traceback, and its message names the request id."""
    request_id = current_request_id()
    if isinstance(exc, KeelError):
        status, body = error_of(exc)
        if status >= 500:
            report_failure(exc, status)
            if request_id and isinstance(body.get("message"), str):
                body = {**body, "message": f"{body['message']} (request id {request_id})"}
        return KeelJSONResponse(body, status_code=status)
    report_failure(exc, 500)
    where = f"request id {request_id}: " if request_id else ""
    return mlflow_error(500, "INTERNAL_ERROR", f"internal server error ({where}the keel server log has the details)")


def _answer(path: str, request: Request, body: bytes) -> Response:
    """Answer one ``/api/2.0/mlflow/<path>`` call (in a worker thread: one hop per request)."""
    label = f"{request.method} /api/2.0/mlflow/{path}"
    return _run(HANDLERS.get((request.method, path.strip("/"))), label, request, body, {})


def _run(handler: Handler | None, label: str, request: Request, body: bytes, path: dict[str, str]) -> Response:
    """Authenticate, parse and answer one call; ``path`` holds the arguments in the URL's path."""
    context: ServerContext = request.app.state.keel
    try:
        caller = authenticate(context, request)
        if handler is None:
            return mlflow_error(501, NOT_SUPPORTED, unsupported_message(request.method, request.url.path))
        call = Call(context, caller, {**_arguments(request, body), **path}, services(context, request.app.state))
        result = handler(call)
        return result if isinstance(result, Response) else KeelJSONResponse(result)
    except KeelError as exc:
        return error_response(exc)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        # A field of the wrong type deep in a body (e.g. a list where a text was due).
        log.info("malformed MLflow request", exc_info=exc)
        return mlflow_error(400, "INVALID_PARAMETER_VALUE", f"malformed request: {exc!r}")
    except Exception as exc:  # noqa: BLE001 - every failure answers in MLflow's shape
        return error_response(exc)


async def answer(request: Request, handler: Handler | None, **path: str) -> Response:
    """Answer a call to a route of its own (MLflow's paths with an id in them, ``/api/3.0/...``)
    as every ``/api/2.0/mlflow/...`` call is: auth, arguments (query, JSON body, ``path``),
    MLflow's error shape; ``None`` answers NOT_IMPLEMENTED."""
    body = b"" if request.method == "GET" else await request.body()
    return await run_in_threadpool(_run, handler, f"{request.method} {request.url.path}", request, body, path)


async def _dispatch(path: str, request: Request) -> Response:
    body = b"" if request.method == "GET" else await request.body()
    return await run_in_threadpool(_answer, path, request, body)


_METHODS = ["GET", "POST", "PATCH", "PUT", "DELETE"]

#: What the MLflow client learns from ``server-info`` before it authenticates (no secrets):
#: no workspaces, no multipart or presigned artifact transfers (uploads go through the server).
SERVER_INFO: dict[str, Any] = {
    "store_type": None,
    "workspaces_enabled": False,
    "trace_archival_enabled": False,
    "multipart_uploads_enabled": False,
    "multipart_downloads_enabled": False,
    "presigned_upload_run_id_supported": False,
    "presigned_upload_model_id_supported": False,
    "features_enabled": {"gateway": False},
}


#: What ``GET /version`` answers: the MLflow server keel's trace endpoints behave as. The
#: client sends a finished trace as its info then its spans (``traces.json``), in one task,
#: to a server older than 3.4; to 3.4 and later it also sends each span over OTLP
#: (``/v1/traces``) in tasks of their own that race the trace info, so a trace's tags and
#: metadata could arrive after its spans were stored. keel keeps the ordered path.
MLFLOW_SERVER_VERSION = "3.3.0"


@router.get("/api/3.0/mlflow/server-info")
@router.get("/ajax-api/3.0/mlflow/server-info")
def server_info() -> Response:
    """MLflow's capability probe (unauthenticated, as MLflow's own)."""
    return KeelJSONResponse(SERVER_INFO)


@router.get("/version")
def server_version() -> Response:
    """MLflow's version probe (unauthenticated, as MLflow's own): see :data:`MLFLOW_SERVER_VERSION`."""
    return Response(MLFLOW_SERVER_VERSION, media_type="text/plain")


@router.api_route("/api/2.0/mlflow/{path:path}", methods=_METHODS)
async def mlflow_api(path: str, request: Request) -> Response:
    """MLflow's REST API (``/api/2.0/mlflow/...``)."""
    return await _dispatch(path, request)


@router.api_route("/ajax-api/2.0/mlflow/{path:path}", methods=_METHODS)
async def mlflow_ajax_api(path: str, request: Request) -> Response:
    """The same API under the prefix MLflow's web UI uses."""
    return await _dispatch(path, request)


@router.api_route("/api/3.0/mlflow/{path:path}", methods=_METHODS)
@router.api_route("/ajax-api/3.0/mlflow/{path:path}", methods=_METHODS)
async def mlflow_api_v3(path: str, request: Request) -> Response:
    """MLflow's 3.0 endpoints keel does not map (its trace endpoints have routes of their own:
    :mod:`keel.server.mlflow.traces`): NOT_IMPLEMENTED, in MLflow's shape."""
    return await answer(request, None)
