"""MLflow's evaluation datasets (``/api/3.0/mlflow/datasets/...``, what ``mlflow.genai.datasets``
and ``MlflowClient``'s dataset methods call) over
:class:`~keel.services.mlflow_datasets.MlflowDatasets`: each dataset is a keel data path, each
change of its records a new ``keel data`` version.

Datasets are keel's versioned data, which the ``@registries`` scope covers (as ``keel data``
versions on a server): readers read them, writers create and change them. The experiments a
dataset is associated with must be ones the caller can see.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from keel.errors import InvalidInput
from keel.server.mlflow.dispatch import Call, answer
from keel.server.mlflow.tracking import _no_experiment, _visible
from keel.services.mlflow_datasets import MlflowDatasets

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
_PATHS = ("/api/3.0/mlflow/datasets", "/ajax-api/3.0/mlflow/datasets")


def datasets(call: Call) -> MlflowDatasets:
    """The evaluation-dataset use cases for this call."""
    return MlflowDatasets(call.context.store)


def _json_text(call: Call, key: str, required: bool = False) -> Any:
    """A field MLflow's proto carries as JSON text (``tags``, ``records``), parsed."""
    value = call.need(key) if required else call.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"Invalid value for parameter '{key}': it must be JSON text", f"send {key} as a string")
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"'{key}' is not valid JSON: {exc}"[:300], f"send {key} as JSON text") from None


def _experiments(call: Call, value: Any) -> list[str]:
    """Experiment ids the caller can see (an unknown or hidden one is RESOURCE_DOES_NOT_EXIST)."""
    listed = value if isinstance(value, list) else [] if value is None else [value]
    out = []
    for item in listed:
        text = str(item)
        _visible(call, call.mlflow.tracking.project(text), "reader", _no_experiment(text))
        out.append(text)
    return out


def create_dataset(call: Call) -> dict[str, Any]:
    """CreateDataset."""
    call.registry("writer")
    experiment_ids = _experiments(call, call.get("experiment_ids"))
    row = datasets(call).create(call.need("name"), experiment_ids, _json_text(call, "tags"))
    return {"dataset": MlflowDatasets.to_json(row, with_experiments=True)}


def get_dataset(call: Call) -> dict[str, Any]:
    """GetDataset."""
    call.registry("reader")
    return {"dataset": MlflowDatasets.to_json(datasets(call).row(call.need("dataset_id")))}


def delete_dataset(call: Call) -> dict[str, Any]:
    """DeleteDataset (an unknown id is no error, as in MLflow); its keel versions stay."""
    call.registry("writer")
    datasets(call).delete(call.text("dataset_id"))
    return {}


def search_datasets(call: Call) -> dict[str, Any]:
    """SearchEvaluationDatasets."""
    call.registry("reader")
    experiment_ids = _experiments(call, call.get("experiment_ids"))
    order_by = call.get("order_by")
    found, token = datasets(call).search(
        experiment_ids,
        call.get("filter_string"),
        call.get("max_results"),
        order_by if isinstance(order_by, list) else [order_by] if order_by else None,
        call.get("page_token"),
    )
    return {"datasets": found, "next_page_token": token} if token else {"datasets": found}


def set_tags(call: Call) -> dict[str, Any]:
    """SetDatasetTags (merged into the dataset's)."""
    call.registry("writer")
    datasets(call).set_tags(call.text("dataset_id"), _json_text(call, "tags", required=True))
    return {}


def delete_tag(call: Call) -> dict[str, Any]:
    """DeleteDatasetTag (a missing tag is no error, as in MLflow)."""
    call.registry("writer")
    datasets(call).set_tags(call.text("dataset_id"), {}, remove=call.text("key"))
    return {}


def upsert_records(call: Call) -> dict[str, Any]:
    """UpsertDatasetRecords (``merge_records``): a new keel version of the dataset's path."""
    call.registry("writer")
    inserted, updated = datasets(call).upsert(call.text("dataset_id"), _json_text(call, "records", required=True))
    return {"inserted_count": inserted, "updated_count": updated}


def get_records(call: Call) -> dict[str, Any]:
    """GetDatasetRecords: a page of records (JSON text, as MLflow's proto carries them)."""
    call.registry("reader")
    service = datasets(call)
    records, token = service.records_page(
        service.row(call.need("dataset_id")), call.get("max_results"), call.get("page_token")
    )
    body: dict[str, Any] = {"records": json.dumps(records)}
    return {**body, "next_page_token": token} if token else body


def delete_records(call: Call) -> dict[str, Any]:
    """DeleteDatasetRecords: a new keel version without them."""
    call.registry("writer")
    ids = call.get("dataset_record_ids") or []
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InvalidInput("dataset_record_ids must be a list of record ids", 'send ["dr-..."]')
    return {"deleted_count": datasets(call).delete_records(call.text("dataset_id"), ids)}


def experiment_ids(call: Call) -> dict[str, Any]:
    """GetDatasetExperimentIds."""
    call.registry("reader")
    return {"experiment_ids": datasets(call).row(call.need("dataset_id"))["experiment_ids"]}


def add_experiments(call: Call) -> dict[str, Any]:
    """AddDatasetToExperiments."""
    call.registry("writer")
    added = _experiments(call, call.get("experiment_ids"))
    row = datasets(call).set_experiments(call.text("dataset_id"), add=added)
    return {"dataset": MlflowDatasets.to_json(row, with_experiments=True)}


def remove_experiments(call: Call) -> dict[str, Any]:
    """RemoveDatasetFromExperiments."""
    call.registry("writer")
    listed = call.get("experiment_ids")
    removed = [str(e) for e in (listed if isinstance(listed, list) else [listed] if listed else [])]
    row = datasets(call).set_experiments(call.text("dataset_id"), remove=removed)
    return {"dataset": MlflowDatasets.to_json(row, with_experiments=True)}


# -- routes ------------------------------------------------------------------------------------------
@router.post(_PATHS[0] + "/create")
@router.post(_PATHS[1] + "/create")
async def create_route(request: Request) -> Response:
    """CreateDataset."""
    return await answer(request, create_dataset)


@router.post(_PATHS[0] + "/search")
@router.post(_PATHS[1] + "/search")
async def search_route(request: Request) -> Response:
    """SearchEvaluationDatasets."""
    return await answer(request, search_datasets)


@router.api_route(_PATHS[0] + "/{dataset_id}/records", methods=["GET", "POST", "DELETE"])
@router.api_route(_PATHS[1] + "/{dataset_id}/records", methods=["GET", "POST", "DELETE"])
async def records_route(dataset_id: str, request: Request) -> Response:
    """GetDatasetRecords, UpsertDatasetRecords, DeleteDatasetRecords."""
    handler = {"GET": get_records, "POST": upsert_records, "DELETE": delete_records}[request.method]
    return await answer(request, handler, dataset_id=dataset_id)


@router.patch(_PATHS[0] + "/{dataset_id}/tags")
@router.patch(_PATHS[1] + "/{dataset_id}/tags")
async def set_tags_route(dataset_id: str, request: Request) -> Response:
    """SetDatasetTags."""
    return await answer(request, set_tags, dataset_id=dataset_id)


@router.delete(_PATHS[0] + "/{dataset_id}/tags/{key:path}")
@router.delete(_PATHS[1] + "/{dataset_id}/tags/{key:path}")
async def delete_tag_route(dataset_id: str, key: str, request: Request) -> Response:
    """DeleteDatasetTag."""
    return await answer(request, delete_tag, dataset_id=dataset_id, key=key)


@router.get(_PATHS[0] + "/{dataset_id}/experiment-ids")
@router.get(_PATHS[1] + "/{dataset_id}/experiment-ids")
async def experiment_ids_route(dataset_id: str, request: Request) -> Response:
    """GetDatasetExperimentIds."""
    return await answer(request, experiment_ids, dataset_id=dataset_id)


@router.post(_PATHS[0] + "/{dataset_id}/add-experiments")
@router.post(_PATHS[1] + "/{dataset_id}/add-experiments")
async def add_experiments_route(dataset_id: str, request: Request) -> Response:
    """AddDatasetToExperiments."""
    return await answer(request, add_experiments, dataset_id=dataset_id)


@router.post(_PATHS[0] + "/{dataset_id}/remove-experiments")
@router.post(_PATHS[1] + "/{dataset_id}/remove-experiments")
async def remove_experiments_route(dataset_id: str, request: Request) -> Response:
    """RemoveDatasetFromExperiments."""
    return await answer(request, remove_experiments, dataset_id=dataset_id)


@router.api_route(_PATHS[0] + "/{dataset_id}", methods=["GET", "DELETE"])
@router.api_route(_PATHS[1] + "/{dataset_id}", methods=["GET", "DELETE"])
async def dataset_route(dataset_id: str, request: Request) -> Response:
    """GetDataset, DeleteDataset."""
    return await answer(request, get_dataset if request.method == "GET" else delete_dataset, dataset_id=dataset_id)
