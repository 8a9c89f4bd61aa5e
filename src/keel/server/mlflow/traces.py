"""MLflow's trace endpoints over keel's traces: ``@mlflow.trace`` lands as keel traces, and
``mlflow.search_traces`` / ``MlflowClient.get_trace`` read any keel trace.

Writing (what the MLflow 3 client does with a finished trace, see
:data:`~keel.server.mlflow.dispatch.MLFLOW_SERVER_VERSION`):

1. ``POST /api/3.0/mlflow/traces`` (StartTraceV3) with the trace info: checked, kept in
   the object store, and answered with an artifact location naming it
   (``mlflow-artifacts:/<experiment>/traces/<trace id>/<kept info>/artifacts``);
2. ``PUT /api/2.0/mlflow-artifacts/artifacts/<that location>/traces.json``: the spans,
   joined with the kept info (:func:`~keel.server.mlflow.trace_format.raw_spans`) and
   stored with :meth:`TraceService.ingest` into the experiment's project.

Reading: ``GET /api/3.0/mlflow/traces/{id}`` (the info), ``GET .../traces/get`` and
``.../traces/batchGet`` (with spans), ``POST .../traces/batchGetInfos``, ``POST
.../traces/search``; feedback: ``POST .../traces/{id}/assessments``. A trace id is
looked up in the projects the caller may read (or the experiments named), so a trace
of a hidden project is RESOURCE_DOES_NOT_EXIST, as an unknown one.

Every call goes through the service contract (:func:`keel.services.contract.invoke`):
the caller's role is checked on the project, as for keel's own API.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from keel.core.limits import MAX_PAGE_SIZE
from keel.core.traces import IngestResult, RawSpans, Span, Trace, TraceDetail
from keel.errors import InvalidInput, NotFound, TooLarge
from keel.integrations.mlflow_rest.errors import NOT_SUPPORTED
from keel.integrations.mlflow_rest.paging import _offset as page_offset
from keel.integrations.mlflow_rest.paging import page_size
from keel.objects import ObjectStore
from keel.server.errors import KeelJSONResponse
from keel.server.mlflow.dispatch import Call, answer, authenticate, endpoint, error_response, mlflow_error, services
from keel.server.mlflow.trace_format import (
    ARTIFACT_TAG,
    SPANS_LOCATION_TAG,
    TraceInfo,
    check_trace_info,
    detail_info_json,
    keel_trace_id,
    mlflow_trace_id,
    raw_spans,
    search_filter,
    search_order,
    sort_traces,
    trace_info_json,
    trace_json,
)
from keel.server.mlflow.tracking import _no_experiment, _visible
from keel.server.transfer import open_object
from keel.services.contract import find, invoke

__all__ = ["MAX_TRACE_DATA", "router"]

router = APIRouter(include_in_schema=False)
_V3 = ("/api/3.0/mlflow/traces", "/ajax-api/3.0/mlflow/traces")
_ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
#: Largest ``traces.json`` taken (bytes): one payload is kept up to 8 MiB, a trace holds many.
MAX_TRACE_DATA = 64 << 20
_MAX_IDS = 100  # trace ids in one batch read
_DEFAULT_PAGE = 100  # MLflow's default max_results for traces
_OID = re.compile(r"[0-9a-f]{64}")
_MAX_KEPT_INFO = 4 << 20  # bytes: a start request's body is smaller


def _invoke(call: Call, name: str, *args: Any, **kwargs: Any) -> Any:
    """``traces.<name>`` through the service contract, as the caller."""
    return invoke(find("traces", name), call.context, call.caller, list(args), kwargs)


def _experiment_project(call: Call, experiment_id: Any, role: str) -> str:
    """The project of an experiment the caller may see (one it may not is RESOURCE_DOES_NOT_EXIST)."""
    text = str(experiment_id)
    project = call.mlflow.tracking.project(text)
    _visible(call, project, role, _no_experiment(text))
    return project


def _ids(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [] if value is None else [value]
    if len(items) > _MAX_IDS:
        raise InvalidInput(f"{len(items)} trace ids in one call, at most {_MAX_IDS}", "ask in smaller batches")
    return [keel_trace_id(item) for item in items]


def _projects(call: Call, experiment_ids: Any) -> list[str]:
    """The projects a lookup searches: the experiments named, else every project the caller may read."""
    named = experiment_ids if isinstance(experiment_ids, list) else [] if experiment_ids is None else [experiment_ids]
    if named:
        return [_experiment_project(call, e, "reader") for e in named]
    readable = call.caller.readable()
    names = [project.name for project, _count in call.context.tracking.list_projects()]
    if readable is None:
        return names
    allowed = set(readable)
    return [n for n in names if n in allowed]


def _locate(call: Call, trace_ids: Sequence[str], experiment_ids: Any = None) -> dict[str, str]:
    """keel trace id -> the project holding it, among the projects the lookup may search."""
    found: dict[str, str] = {}
    wanted = list(dict.fromkeys(trace_ids))
    for project in _projects(call, experiment_ids):
        missing = [t for t in wanted if t not in found]
        if not missing:
            break
        quoted = ", ".join(f"'{t}'" for t in missing)
        for trace in _invoke(call, "search", project, f"trace_id in ({quoted})", None, None, None, len(missing)):
            found.setdefault(trace.trace_id, project)
    return found


def _not_found(trace_id: str) -> NotFound:
    return NotFound(f"Trace with ID {trace_id} not found", "list traces: mlflow.search_traces()")


def _loader(call: Call) -> Any:
    def load(span: Span, which: str) -> Any:
        value = getattr(span, which)
        if isinstance(value, dict) and set(value) == {"$object", "size"}:  # stored in the object store
            return json.loads(call.context.store.objects.get_bytes(str(value["$object"])).decode("utf-8"))
        return value

    return load


def _details(call: Call, trace_ids: Sequence[str], experiment_ids: Any = None) -> list[tuple[TraceDetail, str]]:
    """The stored traces among ``trace_ids`` the caller may read, with their experiment ids, in
    the order asked (the client lists a search's results in the order batchGet answers)."""
    found = _locate(call, trace_ids, experiment_ids)
    out = []
    for trace_id in dict.fromkeys(t for t in trace_ids if t in found):
        project = found[trace_id]
        detail = _invoke(call, "get", trace_id, project)
        out.append((detail, call.mlflow.tracking.experiment_id(project)))
    return out


def _one(call: Call, trace_id: Any) -> tuple[TraceDetail, str]:
    found = _details(call, [keel_trace_id(trace_id)])
    if not found:
        raise _not_found(str(trace_id))
    return found[0]


# -- writing ----------------------------------------------------------------------------------------
def start_trace(call: Call) -> dict[str, Any]:
    """StartTraceV3: keep the trace info until its spans arrive (or answer the stored trace)."""
    trace = call.need("trace")
    info = check_trace_info(trace)
    project = _experiment_project(call, info.experiment_id, "writer")
    if _invoke(call, "count", project, f"trace_id = '{info.trace_id}'"):  # stored already: no upload
        detail = _invoke(call, "get", info.trace_id, project)
        return {"trace": {"trace_info": detail_info_json(detail, info.experiment_id, _loader(call))}}
    data = info.to_bytes()
    if len(data) > _MAX_KEPT_INFO:
        raise InvalidInput(f"a trace info of {len(data):,} bytes, at most {_MAX_KEPT_INFO:,}", "log less metadata")
    kept = call.context.store.objects.put_bytes(data)
    echo = dict(trace["trace_info"])
    tags = {k: v for k, v in info.tags.items() if k != SPANS_LOCATION_TAG}
    tid = mlflow_trace_id(info.trace_id)
    tags[ARTIFACT_TAG] = f"mlflow-artifacts:/{info.experiment_id}/traces/{tid}/{kept}/artifacts"
    echo["tags"] = tags
    return {"trace": {"trace_info": echo}}


def _kept_info(objects: ObjectStore, oid: str) -> TraceInfo:
    """The trace info kept at StartTraceV3. The location names any object: one larger than a
    trace info is refused before it is read."""
    size, chunks = open_object(objects, oid)
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
    if size is not None and size > _MAX_KEPT_INFO:
        raise InvalidInput("this location holds no trace info", "upload where StartTraceV3 answered")
    return TraceInfo.from_bytes(objects.get_bytes(oid))


def store_trace_data(call: Call, experiment_id: str, trace_id: str, kept: str, body: bytes) -> IngestResult:
    """The spans of a ``traces.json`` upload, with the trace info kept at StartTraceV3, stored."""
    project = _experiment_project(call, experiment_id, "writer")
    if not _OID.fullmatch(kept):
        raise InvalidInput(f"invalid trace data location {kept[:80]!r}", "upload where StartTraceV3 answered")
    try:
        info = _kept_info(call.context.store.objects, kept)
    except NotFound:
        raise NotFound(f"trace {trace_id[:40]} was not started", "start it first: StartTraceV3") from None
    if mlflow_trace_id(info.trace_id) != trace_id or info.experiment_id != experiment_id:
        raise InvalidInput(f"this location is not trace {trace_id[:40]}'s", "upload where StartTraceV3 answered")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInput(f"the trace data is not JSON: {exc}"[:300], "upload what the MLflow client writes") from None
    result: IngestResult = _invoke(call, "ingest", RawSpans(raw_spans(data, info)), project)
    if result.rejected:
        raise InvalidInput(
            f"{result.rejected} span(s) of trace {trace_id} refused ({result.stored} stored): "
            + "; ".join(result.errors),
            "fix the spans (see docs/traces.md, 'The span record')",
        )
    return result


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_TRACE_DATA:
        raise TooLarge(f"trace data of {declared} bytes is over the limit of {MAX_TRACE_DATA}", "log smaller payloads")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_TRACE_DATA:
            raise TooLarge(f"trace data over the limit of {MAX_TRACE_DATA} bytes", "log smaller payloads")
        chunks.append(chunk)
    return b"".join(chunks)


@router.put(_ARTIFACTS + "/{experiment_id}/traces/{trace_id}/{kept}/artifacts/{name:path}")
async def upload_trace_data(experiment_id: str, trace_id: str, kept: str, name: str, request: Request) -> Response:
    """A trace's spans (``traces.json``) where StartTraceV3 said to put them."""
    context = request.app.state.keel
    try:
        caller = await run_in_threadpool(authenticate, context, request)
        if name != "traces.json":
            return mlflow_error(501, NOT_SUPPORTED, f"trace attachments ({name[:100]}) are not supported by keel")
        body = await _body(request)
        call = Call(context, caller, {}, services(context, request.app.state))
        await run_in_threadpool(store_trace_data, call, experiment_id, trace_id, kept, body)
        return KeelJSONResponse({})
    except Exception as exc:  # noqa: BLE001 - MLflow's error shape for every failure
        return error_response(exc)


# -- reading ----------------------------------------------------------------------------------------
def get_trace_info(call: Call) -> dict[str, Any]:
    """GetTraceInfoV3."""
    detail, experiment_id = _one(call, call.need("trace_id"))
    return {"trace": {"trace_info": detail_info_json(detail, experiment_id, _loader(call))}}


def get_trace(call: Call) -> dict[str, Any]:
    """GetTrace: the info and the spans."""
    detail, experiment_id = _one(call, call.need("trace_id"))
    return {"trace": trace_json(detail, experiment_id, _loader(call))}


def batch_get_traces(call: Call) -> dict[str, Any]:
    """BatchGetTraces: the traces found among ``trace_ids`` (unknown and hidden ones are left out)."""
    found = _details(call, _ids(call.get("trace_ids")), call.get("experiment_ids"))
    load = _loader(call)
    return {"traces": [trace_json(detail, experiment_id, load) for detail, experiment_id in found]}


def batch_get_trace_infos(call: Call) -> dict[str, Any]:
    """BatchGetTraceInfos: the infos of the traces found among ``trace_ids``."""
    found = _details(call, _ids(call.get("trace_ids")), call.get("experiment_ids"))
    load = _loader(call)
    return {"trace_infos": [detail_info_json(detail, experiment_id, load) for detail, experiment_id in found]}


def _locations(value: Any) -> list[str]:
    """Experiment ids of SearchTracesV3's ``locations`` (v2's ``experiment_ids`` too)."""
    ids = []
    for location in value if isinstance(value, list) else [value]:
        if isinstance(location, dict):
            experiment = location.get("mlflow_experiment")
            location = experiment.get("experiment_id") if isinstance(experiment, dict) else None
        if not isinstance(location, str | int) or isinstance(location, bool):
            raise InvalidInput("search_traces needs experiment locations", "pass locations=['<experiment id>']")
        ids.append(str(location))
    return ids


def _page_token(offset: int) -> str:
    """The next page's token, as :func:`keel.integrations.mlflow_rest.paging.page_of` writes it."""
    return base64.urlsafe_b64encode(str(offset).encode()).decode()


def search_traces(call: Call) -> dict[str, Any]:
    """SearchTracesV3: the infos of matching traces of one or more experiments (from the traces'
    summaries: the client reads spans, previews and assessments with batchGet), paged."""
    experiment_ids = _locations(call.get("locations") or call.get("experiment_ids"))
    projects = {_experiment_project(call, e, "reader"): e for e in experiment_ids}
    keel_filter = search_filter(call.get("filter"))
    order = search_order(call.get("order_by"))
    size = page_size(call.get("max_results"), _DEFAULT_PAGE, MAX_PAGE_SIZE)
    start = page_offset(call.get("page_token"))
    if len(projects) == 1:
        (project,) = projects
        found = _invoke(call, "search", project, keel_filter, order or None, None, None, size + 1, start)
    else:  # each experiment's first start + size + 1, merged in order
        if start + size + 1 > MAX_PAGE_SIZE:
            raise InvalidInput(f"paging past {MAX_PAGE_SIZE:,} traces of several experiments", "search one at a time")
        merged: list[Trace] = []
        for project in projects:
            merged += _invoke(call, "search", project, keel_filter, order or None, None, None, start + size + 1)
        found = sort_traces(merged, order)[start:]
    infos = [trace_info_json(trace, projects[trace.project]) for trace in found[:size]]
    if len(found) > size:
        return {"traces": infos, "next_page_token": _page_token(start + size)}
    return {"traces": infos}


# -- feedback and what keel does not change after the fact ----------------------------------------------
_SOURCES = {"HUMAN": "user", "LLM_JUDGE": "evaluator", "CODE": "api"}


def create_assessment(call: Call) -> dict[str, Any]:
    """CreateAssessment of a feedback: a score on the trace (:meth:`TraceService.feedback`)."""
    assessment = call.need("assessment")
    if not isinstance(assessment, dict):
        raise InvalidInput("assessment must be an object", "send what mlflow.log_feedback sends")
    detail, _experiment = _one(call, call.need("trace_id"))
    feedback = assessment.get("feedback")
    if not isinstance(feedback, dict):
        raise InvalidInput("keel records feedback, not expectations", "use mlflow.log_feedback")
    value = feedback.get("value")
    if value is not None and not isinstance(value, bool | int | float | str):
        raise InvalidInput("a feedback value is a number, a bool or a text", "e.g. value=True")
    given = assessment.get("source")
    source: dict[str, Any] = given if isinstance(given, dict) else {}
    name = assessment.get("assessment_name")
    _invoke(
        call,
        "feedback",
        detail.trace.trace_id,
        key=name if isinstance(name, str) else "feedback",
        value=None if isinstance(value, str) else value,
        label=value if isinstance(value, str) else None,
        comment=assessment.get("rationale") or None,
        span_id=assessment.get("span_id") or None,
        source=_SOURCES.get(str(source.get("source_type", "")).upper(), "api"),
        project=detail.trace.project,
    )
    index = len(detail.scores)
    return {"assessment": {**assessment, "assessment_id": f"keel-{detail.trace.trace_id[:8]}-{index}"}}


def _append_only(what: str, hint: str) -> Response:
    return mlflow_error(501, NOT_SUPPORTED, f"{what} is not supported by keel: traces are append-only ({hint})")


def trace_tags(call: Call) -> Response:
    """SetTraceTag / DeleteTraceTag on a stored trace: refused (after checking the trace is there)."""
    _one(call, call.need("request_id"))
    return _append_only(
        "changing the tags of a stored trace", "set tags while the trace runs: mlflow.update_current_trace(tags=...)"
    )


@endpoint("POST", "traces/delete-traces")
def delete_traces(call: Call) -> Response:
    """DeleteTraces: refused; keel's retention setting removes old traces."""
    _experiment_project(call, call.text("experiment_id"), "writer")
    return _append_only("deleting traces", "the server's trace retention removes old ones")


@endpoint("POST", "traces/link-to-run")
def link_traces_to_run(call: Call) -> Response:
    """LinkTracesToRun: refused; a trace started inside a run is linked to it already."""
    return _append_only("linking stored traces to a run", "start the trace inside the run: mlflow.start_run()")


# -- routes ------------------------------------------------------------------------------------------
_API, _AJAX = _V3


@router.post(_API)
@router.post(_AJAX)
async def start_trace_route(request: Request) -> Response:
    """StartTraceV3."""
    return await answer(request, start_trace)


@router.get(_API + "/get")
@router.get(_AJAX + "/get")
async def get_trace_route(request: Request) -> Response:
    """GetTrace."""
    return await answer(request, get_trace)


@router.get(_API + "/batchGet")
@router.get(_AJAX + "/batchGet")
async def batch_get_traces_route(request: Request) -> Response:
    """BatchGetTraces."""
    return await answer(request, batch_get_traces)


@router.post(_API + "/batchGetInfos")
@router.post(_AJAX + "/batchGetInfos")
async def batch_get_trace_infos_route(request: Request) -> Response:
    """BatchGetTraceInfos."""
    return await answer(request, batch_get_trace_infos)


@router.post(_API + "/search")
@router.post(_AJAX + "/search")
async def search_traces_route(request: Request) -> Response:
    """SearchTracesV3."""
    return await answer(request, search_traces)


@router.post(_API + "/{trace_id}/assessments")
@router.post(_AJAX + "/{trace_id}/assessments")
async def create_assessment_route(trace_id: str, request: Request) -> Response:
    """CreateAssessment."""
    return await answer(request, create_assessment, trace_id=trace_id)


@router.get(_API + "/{trace_id}")
@router.get(_AJAX + "/{trace_id}")
async def get_trace_info_route(trace_id: str, request: Request) -> Response:
    """GetTraceInfoV3."""
    return await answer(request, get_trace_info, trace_id=trace_id)


@router.api_route("/api/2.0/mlflow/traces/{request_id}/tags", methods=["PATCH", "DELETE"])
@router.api_route("/ajax-api/2.0/mlflow/traces/{request_id}/tags", methods=["PATCH", "DELETE"])
async def trace_tags_route(request_id: str, request: Request) -> Response:
    """SetTraceTag, DeleteTraceTag."""
    return await answer(request, trace_tags, request_id=request_id)
