"""MLflow's model-registry endpoints (registered models, versions, stages, aliases, tags),
which also carry MLflow's prompt registry; answered by
:class:`~keel.services.mlflow_registry.MlflowRegistry`. Readers of keel's registries
read, writers change them (the ``@registries`` scope)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response

from keel.core.batch import is_run_id
from keel.errors import NotFound
from keel.integrations.mlflow_rest.entities import artifact_uri
from keel.integrations.mlflow_rest.errors import NOT_SUPPORTED
from keel.server.mlflow import logged_models
from keel.server.mlflow.dispatch import Call, endpoint, mlflow_error
from keel.services.auth import RANK
from keel.services.contract import authorized_run
from keel.services.mlflow_registry import IS_PROMPT

__all__: list[str] = []


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _paged(key: str, items: list[dict[str, Any]], token: str) -> dict[str, Any]:
    return {key: items, "next_page_token": token} if token else {key: items}


# -- registered models ---------------------------------------------------------------------------
@endpoint("POST", "registered-models/create")
def create_registered_model(call: Call) -> dict[str, Any]:
    call.registry("writer")
    model = call.mlflow.registry.create_registered_model(
        call.need("name"), call.get("tags"), call.get("description"), call.who
    )
    return {"registered_model": model}


@endpoint("GET", "registered-models/get")
def get_registered_model(call: Call) -> dict[str, Any]:
    call.registry("reader")
    return {"registered_model": call.mlflow.registry.get_registered_model(call.text("name"))}


@endpoint("PATCH", "registered-models/update")
def update_registered_model(call: Call) -> dict[str, Any]:
    call.registry("writer")
    model = call.mlflow.registry.update_registered_model(call.text("name"), call.get("description"))
    return {"registered_model": model}


@endpoint("POST", "registered-models/rename")
def rename_registered_model(call: Call) -> Response:
    """Refused (NOT_IMPLEMENTED): a model's name is part of what keel keeps immutable and sealed,
    the lineage edges ``model:NAME@VERSION`` of the runs that produced or used its versions (in
    their digests), each version's digest and the reflog chain of its stages and aliases."""
    call.registry("writer")
    name = call.text("name")
    return mlflow_error(
        501,
        NOT_SUPPORTED,
        f"renaming registered model {name[:200]!r} is not supported by keel: a model's name is part of its "
        "versions' sealed history (model:NAME@VERSION in the lineage of the runs that made or used them, "
        "and the reflog of its stages and aliases); create the versions under the new name instead: "
        "MlflowClient().create_model_version(new_name, source=version.source, run_id=version.run_id)",
    )


@endpoint("DELETE", "registered-models/delete")
def delete_registered_model(call: Call) -> dict[str, Any]:
    call.registry("writer")
    call.mlflow.registry.delete_registered_model(call.text("name"), call.who)
    return {}


@endpoint("GET", "registered-models/search")
def search_registered_models(call: Call) -> dict[str, Any]:
    call.registry("reader")
    models, token = call.mlflow.registry.search_registered_models(
        call.get("filter"), call.get("max_results"), _list(call.get("order_by")), call.get("page_token")
    )
    return _paged("registered_models", models, token)


@endpoint("POST", "registered-models/set-tag")
def set_registered_model_tag(call: Call) -> dict[str, Any]:
    call.registry("writer")
    call.mlflow.registry.set_registered_model_tag(call.text("name"), call.text("key"), str(call.get("value", "")))
    return {}


@endpoint("DELETE", "registered-models/delete-tag")
def delete_registered_model_tag(call: Call) -> dict[str, Any]:
    call.registry("writer")
    call.mlflow.registry.set_registered_model_tag(call.text("name"), call.text("key"), None)
    return {}


@endpoint("POST", "registered-models/get-latest-versions")
def get_latest_versions(call: Call) -> dict[str, Any]:
    call.registry("reader")
    versions = call.mlflow.registry.get_latest_versions(call.text("name"), _list(call.get("stages")))
    return {"model_versions": versions}


@endpoint("GET", "registered-models/get-latest-versions")
def get_latest_versions_get(call: Call) -> dict[str, Any]:
    return get_latest_versions(call)


@endpoint("POST", "registered-models/alias")
def set_alias(call: Call) -> dict[str, Any]:
    call.registry("writer")
    call.mlflow.registry.set_alias(call.text("name"), call.text("alias"), call.text("version"), call.who)
    return {}


@endpoint("DELETE", "registered-models/alias")
def delete_alias(call: Call) -> dict[str, Any]:
    call.registry("writer")
    call.mlflow.registry.delete_alias(call.text("name"), call.text("alias"), call.who)
    return {}


@endpoint("GET", "registered-models/alias")
def get_by_alias(call: Call) -> dict[str, Any]:
    call.registry("reader")
    return {"model_version": call.mlflow.registry.get_by_alias(call.text("name"), call.text("alias"))}


# -- model versions --------------------------------------------------------------------------------------
@endpoint("POST", "model-versions/create")
def create_model_version(call: Call) -> dict[str, Any]:
    """MLflow takes any ``run_id`` (a run of another store too); a keel run the caller may read
    is checked as the source's run, and linked (its lineage records the version) when the
    caller may also write its project, as keel's own ``register`` requires. A logged model's
    version (``model_id``) is :func:`keel.server.mlflow.logged_models.create_model_version`'s."""
    call.registry("writer")
    tags = call.get("tags")
    prompt = isinstance(tags, list) and {"key": IS_PROMPT, "value": "true"} in tags
    if call.get("model_id") and not prompt:
        return logged_models.create_model_version(call)
    run_id = call.get("run_id") or ""
    run_root, link = None, False
    if isinstance(run_id, str) and is_run_id(run_id):
        try:
            record = authorized_run(call.mlflow.tracking, call.caller, run_id, "reader")
        except NotFound:
            record = None
        if record is not None:
            run_root = artifact_uri(call.mlflow.tracking.experiment_id(record.project), record.run_id)
            link = call.caller.rank(record.project) >= RANK["writer"]
    version = call.mlflow.registry.create_model_version(
        call.text("name"),
        call.get("source"),
        run_id,
        call.get("tags"),
        call.get("description"),
        call.who,
        run_root=run_root,
        link=link,
    )
    return {"model_version": version}


@endpoint("GET", "model-versions/get")
def get_model_version(call: Call) -> dict[str, Any]:
    call.registry("reader")
    return {"model_version": call.mlflow.registry.get_model_version(call.text("name"), call.text("version"))}


@endpoint("PATCH", "model-versions/update")
def update_model_version(call: Call) -> dict[str, Any]:
    call.registry("writer")
    version = call.mlflow.registry.update_model_version(
        call.text("name"), call.text("version"), call.get("description")
    )
    return {"model_version": version}


@endpoint("DELETE", "model-versions/delete")
def delete_model_version(call: Call) -> dict[str, Any]:
    call.registry("writer")
    call.mlflow.registry.delete_model_version(call.text("name"), call.text("version"), call.who)
    return {}


@endpoint("GET", "model-versions/search")
def search_model_versions(call: Call) -> dict[str, Any]:
    call.registry("reader")
    versions, token = call.mlflow.registry.search_model_versions(
        call.get("filter"), call.get("max_results"), _list(call.get("order_by")), call.get("page_token")
    )
    return _paged("model_versions", versions, token)


@endpoint("POST", "model-versions/transition-stage")
def transition_stage(call: Call) -> dict[str, Any]:
    call.registry("writer")
    archive = call.get("archive_existing_versions", False)
    if isinstance(archive, str):
        archive = archive.lower() == "true"
    version = call.mlflow.registry.transition_stage(
        call.text("name"), call.text("version"), call.text("stage"), bool(archive), call.who
    )
    return {"model_version": version}


@endpoint("POST", "model-versions/set-tag")
def set_model_version_tag(call: Call) -> dict[str, Any]:
    call.registry("writer")
    call.mlflow.registry.set_model_version_tag(
        call.text("name"), call.text("version"), call.text("key"), str(call.get("value", ""))
    )
    return {}


@endpoint("DELETE", "model-versions/delete-tag")
def delete_model_version_tag(call: Call) -> dict[str, Any]:
    call.registry("writer")
    call.mlflow.registry.set_model_version_tag(call.text("name"), call.text("version"), call.text("key"), None)
    return {}


@endpoint("GET", "model-versions/get-download-uri")
def get_download_uri(call: Call) -> dict[str, Any]:
    call.registry("reader")
    version = call.mlflow.registry.get_model_version(call.text("name"), call.text("version"))
    return {"artifact_uri": logged_models.download_uri(call, version["source"])}
