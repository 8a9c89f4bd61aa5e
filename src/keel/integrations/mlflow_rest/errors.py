"""MLflow's error shape: ``{"error_code": "...", "message": "..."}`` with MLflow's status codes."""

from __future__ import annotations

from typing import Any

from keel.errors import KeelError

__all__ = ["NOT_SUPPORTED", "error_body", "error_of", "unsupported_feature", "unsupported_message"]

#: The code (and status 501) of an MLflow endpoint keel does not map.
NOT_SUPPORTED = "NOT_IMPLEMENTED"

# keel error code -> (MLflow error_code, HTTP status), as MLflow's own server answers.
_BY_CODE: dict[str, tuple[str, int]] = {
    "not_found": ("RESOURCE_DOES_NOT_EXIST", 404),
    "already_exists": ("RESOURCE_ALREADY_EXISTS", 400),
    "invalid_input": ("INVALID_PARAMETER_VALUE", 400),
    "invalid_filter": ("INVALID_PARAMETER_VALUE", 400),
    "conflict": ("INVALID_STATE", 400),
    "unauthenticated": ("UNAUTHENTICATED", 401),
    "forbidden": ("PERMISSION_DENIED", 403),
    "too_large": ("RESOURCE_LIMIT_EXCEEDED", 413),
    "no_workspace": ("INVALID_PARAMETER_VALUE", 400),
}


def error_body(error_code: str, message: str) -> dict[str, Any]:
    """The JSON body MLflow's client parses into an ``MlflowException``."""
    return {"error_code": error_code, "message": message}


def error_of(exc: KeelError) -> tuple[int, dict[str, Any]]:
    """``(status, body)`` for a keel error: the message keeps keel's hint."""
    code, status = _BY_CODE.get(exc.code, ("INTERNAL_ERROR", 500))
    if code == "INTERNAL_ERROR" and 400 <= exc.http_status < 500:
        code, status = "INVALID_PARAMETER_VALUE", exc.http_status
    message = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
    return status, error_body(code, message)


# What an MLflow endpoint keel does not serve is for, by the first part of its path after
# the API prefix (MLflow 3.17's routes); the NOT_IMPLEMENTED message names it.
_FEATURES: dict[str, str] = {
    "traces": "MLflow tracing (this trace endpoint)",
    "unified-traces": "MLflow tracing (this trace endpoint)",
    "get-online-trace-details": "MLflow tracing (this trace endpoint)",
    "logged-models": "MLflow logged models",
    "runs/outputs": "MLflow logged models (run outputs)",
    "runs/log-model": "MLflow logged models (runs/log-model)",
    "webhooks": "MLflow webhooks",
    "datasets": "MLflow evaluation datasets",
    "experiments/search-datasets": "MLflow evaluation datasets",
    "gateway": "the MLflow AI gateway",
    "scorers": "MLflow scorers",
    "scorer": "MLflow scorers",
    "issues": "MLflow issues",
    "label-schemas": "MLflow labeling (label schemas)",
    "review-queues": "MLflow labeling (review queues)",
    "prompt-optimization": "MLflow prompt optimization",
    "jobs": "MLflow server jobs",
    "genai": "MLflow server-side GenAI evaluation",
    "demo": "MLflow demo data",
    "workspaces": "MLflow workspaces",
    "artifacts/presigned-upload-url": "presigned artifact transfers",
    "artifacts/presigned-download-url": "presigned artifact transfers",
    "metrics/get-history-bulk": "bulk metric history (MLflow's web UI)",
    "metrics/get-history-bulk-interval": "bulk metric history (MLflow's web UI)",
    "registered-models/rename": "renaming registered models",
    "mpu": "multipart artifact uploads",
    "presigned": "presigned artifact transfers",
}
_PREFIXES = ("/api/2.0/mlflow/", "/api/3.0/mlflow/", "/ajax-api/2.0/mlflow/", "/ajax-api/3.0/mlflow/",
             "/api/2.0/mlflow-artifacts/")  # fmt: skip
_WEB_UI = {
    "/graphql": "MLflow's GraphQL API (used by MLflow's web UI)",
    "/get-artifact": "MLflow's web UI artifact downloads (/get-artifact)",
    "/model-versions/get-artifact": "MLflow's web UI model version downloads (/model-versions/get-artifact)",
}


def unsupported_feature(method: str, path: str) -> str:
    """What the MLflow endpoint ``METHOD path`` (a URL path) is for, as a feature name."""
    clean = "/" + path.strip("/")
    if clean in _WEB_UI:
        return _WEB_UI[clean]
    if clean.startswith("/ajax-api/2.0/mlflow-artifacts/"):
        return "MLflow's web UI artifact API (keel serves /api/2.0/mlflow-artifacts)"
    rest = next((clean[len(p) :] for p in _PREFIXES if clean.startswith(p)), None)
    if rest is None:
        return "this endpoint of MLflow's web UI" if clean.startswith("/ajax-api/") else "this MLflow endpoint"
    if "mlflow-artifacts" in clean and method == "DELETE":
        return "deleting artifacts (keel artifacts are immutable)"
    parts = rest.split("/")
    for key in ("/".join(parts[:2]), parts[0]):
        if key in _FEATURES:
            return _FEATURES[key]
    return "this MLflow endpoint"


def unsupported_message(method: str, path: str) -> str:
    """The NOT_IMPLEMENTED message of an MLflow endpoint keel does not serve: names the feature."""
    clean = "/" + path.strip("/")
    return (
        f"{method} {clean}: {unsupported_feature(method, clean)} is not supported by keel "
        "(docs/mlflow.md lists what the keel server maps)"
    )
