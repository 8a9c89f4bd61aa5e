"""keel records as MLflow's JSON entities (the shapes of MLflow's REST protos).

Ids: an MLflow run id is the keel run id (both 32 hex digits); an experiment id
is the keel project's numeric id, except keel's ``default`` project, which is
MLflow's experiment ``"0"`` (``Default``). Artifacts are served by the keel
server itself (``mlflow-artifacts:/<experiment>/<run>/artifacts``), so the
MLflow client uploads and downloads through it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from keel.core.entities import RunRecord
from keel.integrations.mlflow_rest.filters import MLFLOW_STATUS

__all__ = [
    "DEFAULT_EXPERIMENT_ID",
    "DEFAULT_EXPERIMENT_NAME",
    "artifact_uri",
    "experiment_json",
    "key_values",
    "model_version_json",
    "param_text",
    "parse_artifact_path",
    "registered_model_json",
    "run_json",
]

DEFAULT_EXPERIMENT_ID = "0"
DEFAULT_EXPERIMENT_NAME = "Default"
ARTIFACT_SCHEME = "mlflow-artifacts:"


def key_values(mapping: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``{"a": "1"}`` -> ``[{"key": "a", "value": "1"}]`` (MLflow's tag/param lists)."""
    return [{"key": k, "value": v} for k, v in mapping.items()]


def param_text(value: Any) -> str:
    """A keel param value as MLflow's string (what ``mlflow.log_param`` would have stored)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def artifact_uri(experiment_id: str, run_id: str) -> str:
    """Where the MLflow client reads and writes a run's artifacts: this server, proxied."""
    return f"{ARTIFACT_SCHEME}/{experiment_id}/{run_id}/artifacts"


def parse_artifact_path(path: str) -> tuple[str, str, str]:
    """``<experiment>/<run_id>/artifacts[/<path>]`` -> ``(experiment, run_id, path)``; ValueError else."""
    parts = path.strip("/").split("/", 3)
    if len(parts) < 3 or parts[2] != "artifacts" or len(parts[1]) != 32:
        raise ValueError(path)
    return parts[0], parts[1], parts[3] if len(parts) > 3 else ""


def run_json(
    record: RunRecord,
    experiment_id: str,
    metrics: Iterable[tuple[str, float, int, int]] | None = None,
) -> dict[str, Any]:
    """A keel run as MLflow's ``Run`` (``info`` + ``data``).

    ``metrics`` are ``(key, latest value, step, timestamp)``; without them the run's
    latest values are given at step 0 with the run's start time.
    """
    tags = dict(record.tags)
    tags["mlflow.runName"] = record.name
    if record.parent_id:
        tags["mlflow.parentRunId"] = record.parent_id
    info: dict[str, Any] = {
        "run_id": record.run_id,
        "run_uuid": record.run_id,
        "run_name": record.name,
        "experiment_id": experiment_id,
        "user_id": tags.get("mlflow.user", ""),
        "status": MLFLOW_STATUS.get(record.status, "RUNNING"),
        "start_time": record.start_time,
        "artifact_uri": artifact_uri(experiment_id, record.run_id),
        "lifecycle_stage": "deleted" if record.deleted else "active",
    }
    if record.end_time is not None:
        info["end_time"] = record.end_time
    if metrics is None:
        metrics = ((k, v, 0, record.start_time) for k, v in record.metrics.items())
    return {
        "info": info,
        "data": {
            "metrics": [{"key": k, "value": v, "step": s, "timestamp": t} for k, v, s, t in metrics],
            "params": [{"key": k, "value": param_text(v)} for k, v in record.params.items()],
            "tags": key_values(tags),
        },
        "inputs": {},
    }


def experiment_json(
    experiment_id: str,
    name: str,
    created_at: int,
    updated_at: int,
    lifecycle_stage: str,
    tags: Mapping[str, str],
) -> dict[str, Any]:
    """MLflow's ``Experiment``."""
    return {
        "experiment_id": experiment_id,
        "name": name,
        "artifact_location": f"{ARTIFACT_SCHEME}/{experiment_id}",
        "lifecycle_stage": lifecycle_stage,
        "creation_time": created_at,
        "last_update_time": updated_at,
        "tags": key_values(tags),
    }


def model_version_json(version: Mapping[str, Any]) -> dict[str, Any]:
    """A keel model version (its ``to_dict()``) as MLflow's ``ModelVersion``."""
    return {
        "name": version["name"],
        "version": str(version["version"]),
        "creation_timestamp": version["created_at"],
        "last_updated_timestamp": version["updated_at"],
        "user_id": version.get("author", ""),
        "current_stage": version.get("stage", "None"),
        "description": version.get("description", ""),
        "source": version.get("source", ""),
        "run_id": version.get("run_id") or "",
        "status": "READY",
        "tags": key_values(version.get("tags", {})),
        "aliases": list(version.get("aliases", ())),
    }


def registered_model_json(model: Mapping[str, Any], versions: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """A keel registered model (its ``to_dict()``) as MLflow's ``RegisteredModel``;
    ``latest_versions`` holds the highest version of each stage, as MLflow's does."""
    latest: dict[str, Mapping[str, Any]] = {}
    for version in versions:
        stage = version.get("stage", "None")
        if stage not in latest or int(version["version"]) > int(latest[stage]["version"]):
            latest[stage] = version
    return {
        "name": model["name"],
        "creation_timestamp": model["created_at"],
        "last_updated_timestamp": model["updated_at"],
        "description": model.get("description", ""),
        "latest_versions": [model_version_json(v) for v in latest.values()],
        "tags": key_values(model.get("tags", {})),
        "aliases": [{"alias": a, "version": str(v)} for a, v in sorted(model.get("aliases", {}).items())],
    }
