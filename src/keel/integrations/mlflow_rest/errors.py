"""MLflow's error shape: ``{"error_code": "...", "message": "..."}`` with MLflow's status codes."""

from __future__ import annotations

from typing import Any

from keel.errors import KeelError

__all__ = ["NOT_SUPPORTED", "error_body", "error_of"]

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
