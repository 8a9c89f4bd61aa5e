"""MLflow 3's logged models (``/api/2.0/mlflow/logged-models/...``) over
:class:`~keel.services.mlflow_models.MlflowLoggedModels`.

What ``mlflow.<flavor>.log_model`` and ``mlflow.set_active_model`` call: create (a PENDING
model of the active experiment, linked to the active run), ``runs/outputs``, the files
through the artifact proxy (:mod:`.artifacts`, under the model's
``<experiment>/models/<id>/artifacts``), metrics logged with the model's id, then finalize
(READY); and ``get``, ``search`` (``register_model("runs:/<run>/<name>")`` finds the model
by name and run), tags, params, delete. Registering ``models:/m-<id>``
(:func:`create_model_version`) makes a keel model version whose source is the logged model.

A model is read and written with the caller's role on its experiment's project; one the
caller cannot read answers as an unknown one.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from keel.core.batch import is_run_id
from keel.core.names import check_artifact_path
from keel.errors import InvalidInput, NotFound
from keel.integrations.mlflow_rest.entities import model_version_json
from keel.server.auth import require
from keel.server.mlflow.dispatch import Call, answer, endpoint
from keel.server.mlflow.tracking import _no_experiment, _run, _visible
from keel.server.transfer import stream_object
from keel.services.auth import RANK
from keel.services.contract import authorized_run
from keel.services.mlflow_artifacts import MlflowArtifacts, mime_type
from keel.services.mlflow_models import MlflowLoggedModels, ModelRow, logged_model_uri_id

__all__ = ["create_model_version", "download_uri", "router"]

router = APIRouter(include_in_schema=False)
_API, _AJAX = "/api/2.0/mlflow/logged-models", "/ajax-api/2.0/mlflow/logged-models"


def models(call: Call) -> MlflowLoggedModels:
    """The logged-model use cases for this call."""
    return MlflowLoggedModels(call.mlflow.tracking)


def _model(call: Call, role: str, allow_deleted: bool = False) -> ModelRow:
    """The model the call names, if the caller has ``role`` on its project (one it cannot read
    is not found)."""
    model_id = call.need("model_id")
    row = models(call).row(model_id, allow_deleted=allow_deleted)
    if call.caller.rank(row.project) == 0:  # hidden: the answer of an unknown id
        raise NotFound(
            f"Logged model with ID '{str(model_id)[:100]}' not found.", "list them: mlflow.search_logged_models()"
        )
    require(call.caller, row.project, role)
    return row


def _experiment(call: Call, experiment_id: Any, role: str) -> str:
    text = str(experiment_id)
    project = call.mlflow.tracking.project(text)
    _visible(call, project, role, _no_experiment(text))
    return project


# -- create, search ---------------------------------------------------------------------------------
@endpoint("POST", "logged-models")
def create_logged_model(call: Call) -> dict[str, Any]:
    """CreateLoggedModel: a PENDING model of an active experiment; its source run (a keel run the
    caller may write) records it as an output."""
    experiment_id = call.text("experiment_id")
    project = _experiment(call, experiment_id, "writer")
    experiment = call.mlflow.tracking.get_experiment(experiment_id)
    if experiment["lifecycle_stage"] != "active":
        raise InvalidInput(
            f"The experiment {experiment_id} must be in the 'active' state. Current state is "
            f"{experiment['lifecycle_stage']}.",
            "restore it first: MlflowClient().restore_experiment(experiment_id)",
        )
    source_run_id = call.get("source_run_id")
    if source_run_id is not None and not isinstance(source_run_id, str):
        raise InvalidInput("source_run_id must be text", "send the run's id")
    link = False
    if source_run_id and is_run_id(source_run_id):
        try:
            record = authorized_run(call.mlflow.tracking, call.caller, source_run_id, "reader")
            link = call.caller.rank(record.project) >= RANK["writer"]
        except NotFound:
            link = False  # a run of another store: recorded as given, as MLflow does
    service = models(call)
    row = service.create(
        project,
        call.get("name"),
        call.get("model_type"),
        source_run_id or None,
        call.get("params"),
        call.get("tags"),
        link,
    )
    return {"model": service.model_json(row)}


@endpoint("POST", "logged-models/search")
def search_logged_models(call: Call) -> dict[str, Any]:
    """SearchLoggedModels over the experiments named (each readable by the caller)."""
    ids = call.get("experiment_ids")
    if not ids:
        raise InvalidInput("Missing value for required parameter 'experiment_ids'", "pass experiment_ids=['0']")
    experiments = {str(e): _experiment(call, e, "reader") for e in (ids if isinstance(ids, list) else [ids])}
    found, token = models(call).search(
        experiments,
        call.get("filter"),
        call.get("datasets"),
        call.get("max_results"),
        call.get("order_by"),
        call.get("page_token"),
    )
    return {"models": found, "next_page_token": token} if token else {"models": found}


@endpoint("POST", "runs/outputs")
def log_outputs(call: Call) -> dict[str, Any]:
    """LogOutputs: the run produced these models (at these steps): lineage outputs of the run."""
    record = _run(call, "writer", active=True)
    listed = call.get("models") or []
    if not isinstance(listed, list):
        raise InvalidInput("models must be a list", 'send [{"model_id": ..., "step": 0}]')
    outputs = []
    for item in listed:
        if not isinstance(item, dict):
            raise InvalidInput("each output needs a model_id", 'send [{"model_id": ..., "step": 0}]')
        row = _model(Call(call.context, call.caller, item, call.mlflow), "reader")
        step = item.get("step", 0)
        if isinstance(step, bool) or not isinstance(step, int | str) or not str(step).lstrip("-").isdigit():
            raise InvalidInput(f"invalid step {str(step)[:40]!r}", "steps are whole numbers")
        outputs.append((row.model_id, int(step)))
    models(call).record_outputs(record.run_id, outputs)
    return {}


# -- one model -----------------------------------------------------------------------------------------
def get_logged_model(call: Call) -> dict[str, Any]:
    """GetLoggedModel (``allow_deleted=true`` reads a deleted one)."""
    allow = str(call.get("allow_deleted", "false")).lower() == "true"
    return {"model": models(call).model_json(_model(call, "reader", allow_deleted=allow))}


def finalize_logged_model(call: Call) -> dict[str, Any]:
    """FinalizeLoggedModel: set the status (READY, UPLOAD_FAILED)."""
    if call.get("status") is None:
        raise InvalidInput("Missing value for required parameter 'status'", "send LOGGED_MODEL_READY")
    service = models(call)
    return {"model": service.model_json(service.finalize(_model(call, "writer"), call.get("status")))}


def delete_logged_model(call: Call) -> dict[str, Any]:
    """DeleteLoggedModel (MLflow's soft delete)."""
    models(call).delete(_model(call, "writer"))
    return {}


def log_params(call: Call) -> dict[str, Any]:
    """LogLoggedModelParamsRequest."""
    models(call).log_params(_model(call, "writer"), call.get("params"))
    return {}


def set_tags(call: Call) -> dict[str, Any]:
    """SetLoggedModelTags."""
    models(call).set_tags(_model(call, "writer"), call.get("tags"))
    return {}


def delete_tag(call: Call) -> dict[str, Any]:
    """DeleteLoggedModelTag."""
    models(call).delete_tag(_model(call, "writer"), call.text("tag_key"))
    return {}


def _files(call: Call) -> MlflowArtifacts:
    return MlflowArtifacts(call.context.store.db)


def list_artifacts(call: Call) -> dict[str, Any]:
    """ListLoggedModelArtifacts: a folder of the model's files, as the artifact proxy lists it."""
    row = _model(call, "reader")
    given = call.get("artifact_directory_path")
    folder = check_artifact_path(str(given)) if given else ""
    where = f"{row.artifact_path}/{folder}" if folder else row.artifact_path
    files = [{**f, "path": f"{folder}/{f['path']}" if folder else f["path"]} for f in _files(call).children(where)]
    return {"files": files, "root_uri": row.artifact_uri} if files else {"root_uri": row.artifact_uri}


def download_file(call: Call) -> Response:
    """One of the model's files (``?artifact_file_path=``), as MLflow's web UI fetches it."""
    row = _model(call, "reader")
    given = call.get("artifact_file_path")
    if not given:
        raise InvalidInput('Request must include the "artifact_file_path" query parameter.', "name a file")
    path = check_artifact_path(str(given))
    found = _files(call).get(f"{row.artifact_path}/{path}")
    if found is None:
        raise NotFound(f"No such artifact: '{path}'", f"list them: GET {_API}/{row.model_id}/artifacts/directories")
    name = path.rsplit("/", 1)[-1]
    headers = {"Content-Type": mime_type(name), "X-Content-Type-Options": "nosniff"}
    return stream_object(call.context.tracking.objects, found.oid, filename=name, headers=headers)


# -- registration -----------------------------------------------------------------------------------------
def create_model_version(call: Call) -> dict[str, Any]:
    """CreateModelVersion of a logged model (``model_id`` given): MLflow's rules for the source
    (``models:/<that id>``, or a URI under the model's artifact location, or an external one);
    the keel version's source is the one given, its run the model's source run (linked when
    the caller may write it). The model's ``mlflow.modelVersions`` tag lists the version."""
    model_id = call.text("model_id")
    source = call.get("source")
    if not isinstance(source, str) or not source:
        raise InvalidInput("Missing value for required parameter 'source'", "register models:/<model_id>")
    invalid = InvalidInput(
        f"Invalid model version source: '{source[:300]}'. The model_id request parameter must identify the "
        "resource that contains the source.",
        f"register models:/{model_id[:40]}",
    )
    try:
        row = _model(call, "reader")
    except NotFound:
        raise invalid from None
    scheme = source.partition(":")[0].lower() if ":" in source else ""
    if scheme in ("", "file", "runs") or (scheme == "models" and logged_model_uri_id(source) != row.model_id):
        raise invalid
    if scheme == "mlflow-artifacts" and not (
        source == row.artifact_uri or source.startswith(row.artifact_uri.rstrip("/") + "/")
    ):
        raise invalid
    run_id = call.get("run_id") or row.source_run_id or None
    link = False
    if run_id and is_run_id(run_id):
        try:
            record = authorized_run(call.mlflow.tracking, call.caller, run_id, "reader")
            link = call.caller.rank(record.project) >= RANK["writer"]
        except NotFound:
            link = False
    tags = call.get("tags") or []
    version = call.context.models.register(
        call.text("name"),
        source,
        run_id=run_id,
        description=call.get("description") or "",
        tags={str(t.get("key")): str(t.get("value", "")) for t in tags if isinstance(t, dict)},
        author=call.who,
        external_run=not link,
        check_artifact=False,
    )
    models(call).add_model_version(row, version.name, version.version)
    return {"model_version": model_version_json(version.to_dict())}


def download_uri(call: Call, source: str) -> str:
    """Where the files of a version with ``source`` are: a logged model's artifact location for
    ``models:/m-<id>`` (as MLflow answers get-download-uri), else the source."""
    model_id = logged_model_uri_id(source)
    if model_id is None:
        return source
    try:
        return models(call).row(model_id, allow_deleted=True).artifact_uri
    except NotFound:
        return source


# -- routes ------------------------------------------------------------------------------------------------
@router.post(_API + "/{model_id}/params")
@router.post(_AJAX + "/{model_id}/params")
async def log_params_route(model_id: str, request: Request) -> Response:
    """LogLoggedModelParamsRequest."""
    return await answer(request, log_params, model_id=model_id)


@router.patch(_API + "/{model_id}/tags")
@router.patch(_AJAX + "/{model_id}/tags")
async def set_tags_route(model_id: str, request: Request) -> Response:
    """SetLoggedModelTags."""
    return await answer(request, set_tags, model_id=model_id)


@router.delete(_API + "/{model_id}/tags/{tag_key:path}")
@router.delete(_AJAX + "/{model_id}/tags/{tag_key:path}")
async def delete_tag_route(model_id: str, tag_key: str, request: Request) -> Response:
    """DeleteLoggedModelTag."""
    return await answer(request, delete_tag, model_id=model_id, tag_key=tag_key)


@router.get(_API + "/{model_id}/artifacts/directories")
@router.get(_AJAX + "/{model_id}/artifacts/directories")
async def list_artifacts_route(model_id: str, request: Request) -> Response:
    """ListLoggedModelArtifacts."""
    return await answer(request, list_artifacts, model_id=model_id)


@router.get(_AJAX + "/{model_id}/artifacts/files")
async def download_file_route(model_id: str, request: Request) -> Response:
    """A file of the model (MLflow's web UI)."""
    return await answer(request, download_file, model_id=model_id)


@router.get(_API + "/{model_id}")
@router.get(_AJAX + "/{model_id}")
async def get_route(model_id: str, request: Request) -> Response:
    """GetLoggedModel."""
    return await answer(request, get_logged_model, model_id=model_id)


@router.patch(_API + "/{model_id}")
@router.patch(_AJAX + "/{model_id}")
async def finalize_route(model_id: str, request: Request) -> Response:
    """FinalizeLoggedModel."""
    return await answer(request, finalize_logged_model, model_id=model_id)


@router.delete(_API + "/{model_id}")
@router.delete(_AJAX + "/{model_id}")
async def delete_route(model_id: str, request: Request) -> Response:
    """DeleteLoggedModel."""
    return await answer(request, delete_logged_model, model_id=model_id)
