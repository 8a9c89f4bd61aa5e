"""The rest of MLflow's paths: every call keel does not serve answers MLflow's error,
NOT_IMPLEMENTED (501) naming the feature (``{"error_code": "NOT_IMPLEMENTED", "message":
"... <feature> is not supported by keel ..."}``), so the MLflow client says what is missing
instead of failing on a body it cannot read.

``/api/2.0/mlflow/*``, ``/api/3.0/mlflow/*`` and their ``/ajax-api`` twins already answer so
(:mod:`.dispatch`), as do the proxied artifacts' (:mod:`.artifacts`); these routes take the
other paths MLflow's server and web UI have: the rest of ``/ajax-api/...``, ``/graphql``,
``/get-artifact`` and ``/model-versions/get-artifact``. Included last, so every real route wins.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from keel.server.mlflow.dispatch import answer

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
_METHODS = ["GET", "POST", "PATCH", "PUT", "DELETE"]


@router.api_route("/ajax-api/{path:path}", methods=_METHODS)
@router.api_route("/graphql", methods=_METHODS)
@router.api_route("/get-artifact", methods=_METHODS)
@router.api_route("/model-versions/get-artifact", methods=_METHODS)
async def not_served(request: Request) -> Response:
    """NOT_IMPLEMENTED in MLflow's shape (after the token check, as every MLflow call)."""
    return await answer(request, None)
