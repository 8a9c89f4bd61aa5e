"""``POST /v1/traces``: OpenTelemetry traces over OTLP/HTTP (protobuf or JSON), as MLflow's server takes them.

Point an OpenTelemetry SDK's OTLP HTTP exporter at the server::

    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://keel.example.com:8080/v1/traces
    OTEL_EXPORTER_OTLP_TRACES_HEADERS="Authorization=Bearer%20keel_...,x-keel-project=chat"

- **Who.** ``Authorization: Bearer <keel API token>``, as every API call: the spans are
  written through the declared ``traces.ingest`` operation (:func:`keel.services.contract.invoke`),
  so a reader cannot write (403) and a project the caller cannot see answers as one that does
  not exist (404). Under ``keel ui`` no token is needed: the local user sends them
  (:func:`keel.server.auth.local_caller`).
- **Where.** The project is the ``x-keel-project`` header; else the project of MLflow's
  experiment in ``x-mlflow-experiment-id`` (what MLflow's OTLP clients send; an experiment
  the caller cannot see is an unknown one); else ``default``.
- **What.** The body is decoded by :mod:`keel.integrations.otlp` (gzip too, bounded by
  :data:`~keel.integrations.otlp.MAX_BODY_BYTES` before and after decompression: 413).
- **Replies**, in the request's encoding: ``ExportTraceServiceResponse``, with
  ``partial_success`` (``rejected_spans`` and the first reasons) when the store refused some
  spans, and a note when some were already stored (duplicates are ignored); every failure is
  a ``google.rpc.Status`` with the HTTP status (400 malformed, 401, 403, 404, 413, 415, 503
  with ``Retry-After`` when the database is away).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from keel.core.traces import RawSpans
from keel.errors import KeelError, NotFound, Unauthenticated
from keel.integrations.otlp import (
    JSON,
    MAX_BODY_BYTES,
    PROTOBUF,
    decode,
    export_response,
    media_of,
    status_body,
)
from keel.server.auth import local_caller, require
from keel.server.context import ServerContext
from keel.server.mlflow.dispatch import services as mlflow_services
from keel.server.request_context import current_request_id, report_failure
from keel.server.routers import Router
from keel.services.auth import Principal
from keel.services.contract import find, invoke
from keel.services.health import DRIVER_ERRORS, known_error

__all__ = ["EXPERIMENT_HEADER", "PROJECT_HEADER", "router"]

PROJECT_HEADER = "x-keel-project"
EXPERIMENT_HEADER = "x-mlflow-experiment-id"
_CONTENT_TYPES = {PROTOBUF: "application/x-protobuf", JSON: "application/json"}
_MAX_MESSAGES = 3  # reasons of refused spans quoted in a partial success

router = Router(tags=["traces"])
_INGEST = find("traces", "ingest")


@router.post(
    "/v1/traces",
    summary="OpenTelemetry traces in (OTLP/HTTP: protobuf or JSON, gzip)",
    description="An OTLP `ExportTraceServiceRequest`. Project: the `x-keel-project` header, else the "
    "project of MLflow's `x-mlflow-experiment-id`, else `default`. Errors are `google.rpc.Status` "
    "in the request's encoding.",
    response_class=Response,
)
async def export_traces(request: Request) -> Response:
    media = media_of(request.headers.get("content-type"))
    if media is None:
        return _failure(
            415,
            f"unsupported Content-Type {request.headers.get('content-type', '')!r}: "
            "send application/x-protobuf or application/json",
            JSON,
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return _failure(413, _too_large(), media)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return _failure(413, _too_large(), media)
    context: ServerContext = request.app.state.keel
    return await run_in_threadpool(_export, context, request.app.state, request.headers, bytes(body), media)


def _too_large() -> str:
    return (
        f"the OTLP request body is over {MAX_BODY_BYTES:,} bytes; "
        "export smaller batches (OTEL_BSP_MAX_EXPORT_BATCH_SIZE)"
    )


def _export(context: ServerContext, state: Any, headers: Headers, body: bytes, media: str) -> Response:
    """Authenticate, choose the project, decode and store (in a worker thread: one hop per request)."""
    try:
        caller = local_caller(state) or _authenticate(context, headers)  # keel ui: no token
        project = _project(context, state, caller, headers)
        require(caller, project or "default", "writer")  # before the body is parsed; invoke checks again
        spans = decode(body, headers.get("content-type"), headers.get("content-encoding"))
        duplicates = rejected = 0
        reasons: list[str] = []
        for batch in spans.batches() if len(spans) else iter([[]]):
            result = invoke(_INGEST, context, caller, [RawSpans(list(batch))], {"project": project})
            duplicates += result.duplicates
            rejected += result.rejected
            reasons.extend(result.errors[: _MAX_MESSAGES - len(reasons)])
        message = _summary(rejected, duplicates, reasons)
        return Response(export_response(rejected, message, media), media_type=_CONTENT_TYPES[media])
    except KeelError as exc:
        return _error(exc, media)
    except DRIVER_ERRORS as exc:
        found = known_error(exc)
        if found is not None:
            return _error(found, media)
        report_failure(exc, 500)
        return _failure(500, _internal(), media)
    except Exception as exc:  # noqa: BLE001 - every failure answers in OTLP's shape
        report_failure(exc, 500)
        return _failure(500, _internal(), media)


def _authenticate(context: ServerContext, headers: Headers) -> Principal:
    scheme, _, secret = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated(
            "this endpoint needs a keel API token",
            "set OTEL_EXPORTER_OTLP_TRACES_HEADERS=Authorization=Bearer%20keel_...",
        )
    return context.auth.authenticate(secret.strip())


def _project(context: ServerContext, state: Any, caller: Principal, headers: Headers) -> str | None:
    """The project named by the headers (None: ``default``); the service checks the name and the role."""
    named = headers.get(PROJECT_HEADER, "").strip()
    if named:
        return named
    experiment = headers.get(EXPERIMENT_HEADER, "").strip()
    if not experiment:
        return None
    project = mlflow_services(context, state).tracking.project(experiment)
    if caller.rank(project) == 0:  # hidden: the answer of an unknown experiment
        raise NotFound(f"no experiment with id {experiment}", "list them: mlflow.search_experiments()")
    return project


def _summary(rejected: int, duplicates: int, reasons: list[str]) -> str | None:
    parts = []
    if rejected:
        parts.append(f"{rejected} span(s) refused: " + "; ".join(reasons))
    if duplicates:
        parts.append(f"{duplicates} span(s) already stored were ignored")
    return ". ".join(parts) or None


def _internal() -> str:
    request_id = current_request_id()
    where = f" (request id {request_id}: the keel server log has the details)" if request_id else ""
    return f"internal server error{where}"


def _error(exc: KeelError, media: str) -> Response:
    status = exc.http_status
    message = str(exc)
    if status >= 500:
        report_failure(exc, status)
        request_id = current_request_id()
        message = f"{message} (request id {request_id})" if request_id else message
    response = _failure(status, message, media)
    retry_after = getattr(exc, "retry_after", None)
    if status in (429, 503) and isinstance(retry_after, int) and not isinstance(retry_after, bool):
        response.headers["Retry-After"] = str(max(1, retry_after))
    return response


def _failure(status: int, message: str, media: str) -> Response:
    """A ``google.rpc.Status`` reply (OTLP/HTTP's error body) in the request's encoding."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Response(
        status_body(status, message, media), status_code=status, media_type=_CONTENT_TYPES[media], headers=headers
    )
