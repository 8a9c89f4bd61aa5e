"""The MLflow REST API of the keel server: the real ``mlflow`` client works against keel.

Set ``MLFLOW_TRACKING_URI=http://<keel server>`` and ``MLFLOW_TRACKING_TOKEN=<keel API
token>``; MLflow code then logs keel runs, registers keel models and prompts, and
reads what keel wrote. The mapping (experiments/projects, ids, stages and aliases,
integer vs semver prompt versions) and what is not supported: ``docs/mlflow.md``.

- :mod:`.dispatch`: ``/api/2.0/mlflow/...`` (and ``/ajax-api/...``): auth, arguments,
  MLflow's error shape, "not supported by keel" for unmapped endpoints;
- :mod:`.tracking`, :mod:`.registry`: the handlers;
- :mod:`.traces`: MLflow tracing (``/api/3.0/mlflow/traces/...`` and a trace's
  ``traces.json`` upload) over keel's traces, shapes in :mod:`.trace_format`;
- :mod:`.artifacts`: ``/api/2.0/mlflow-artifacts/...``, streamed;
- :mod:`.logged_models`: MLflow 3's logged models (``/api/2.0/mlflow/logged-models/...``);
- :mod:`.datasets`: MLflow's evaluation datasets (``/api/3.0/mlflow/datasets/...``) as keel
  dataset versions;
- :mod:`.unsupported`: MLflow's other paths (``/graphql``, ``/get-artifact``, the rest of
  ``/ajax-api``): NOT_IMPLEMENTED in MLflow's shape, naming the feature.
"""

from __future__ import annotations

from fastapi import APIRouter

from keel.server.mlflow import registry, tracking  # noqa: F401 - importing registers their handlers
from keel.server.mlflow.artifacts import router as artifacts_router
from keel.server.mlflow.datasets import router as datasets_router
from keel.server.mlflow.dispatch import HANDLERS
from keel.server.mlflow.dispatch import router as api_router
from keel.server.mlflow.logged_models import router as logged_models_router
from keel.server.mlflow.traces import router as traces_router
from keel.server.mlflow.unsupported import router as unsupported_router

__all__ = ["HANDLERS", "router"]

router = APIRouter(include_in_schema=False)
router.include_router(traces_router)  # first: its paths are more specific than the two below
router.include_router(logged_models_router)  # /logged-models/{id}..., before /api/2.0/mlflow/{path}
router.include_router(datasets_router)  # /api/3.0/mlflow/datasets/..., before /api/3.0/mlflow/{path}
router.include_router(artifacts_router)
router.include_router(api_router)
router.include_router(unsupported_router)  # last: every real route wins
