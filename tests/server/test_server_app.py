"""The ASGI app in process (no socket): the error shape for failures a real client
cannot easily provoke, and values JSON has no standard form for."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from keel.errors import InvalidInput
from keel.server import create_app
from keel.services.auth import AuthStore


@pytest.fixture
def app_and_token(tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    app = create_app(f"sqlite:///{tmp_path / 'keel.db'}", str(tmp_path / "objects"), max_upload=1000)
    auth = AuthStore(app.state.keel.store.db)
    auth.create_user("root", is_admin=True)
    token, _info = auth.create_token("root", "test")

    @app.get("/api/v1/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client, token


def test_an_unexpected_failure_is_a_500_in_the_one_shape_without_details(
    app_and_token: tuple[TestClient, str],
) -> None:
    client, _ = app_and_token
    response = client.get("/api/v1/boom")
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]  # the server log's lines of this request carry it
    assert response.json() == {
        "error": {
            "code": "internal",
            "message": f"internal server error (request id {request_id})",
            "hint": "the server log has the details",
            "details": {"request_id": request_id},
        }
    }


def test_nan_and_infinite_metrics_round_trip(app_and_token: tuple[TestClient, str]) -> None:
    client, _ = app_and_token
    run_id = client.post("/api/v1/runs", json={"project": "p"}).json()["run_id"]
    body = '{"metrics": [{"key": "m", "value": NaN, "step": 0}, {"key": "m", "value": Infinity, "step": 1}]}'
    response = client.post(f"/api/v1/runs/{run_id}/batch", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    history = client.get(f"/api/v1/runs/{run_id}/metric-history", params={"key": "m"}).json()
    assert math.isnan(history["values"][0]) and history["values"][1] == math.inf


def test_a_declared_oversized_upload_is_refused_before_reading_it(app_and_token: tuple[TestClient, str]) -> None:
    client, _ = app_and_token
    run_id = client.post("/api/v1/runs", json={"project": "p"}).json()["run_id"]
    response = client.put(f"/api/v1/runs/{run_id}/artifacts/big.bin", content=b"x" * 1001)
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
    assert client.get(f"/api/v1/runs/{run_id}/artifacts").json() == []


def test_the_server_refuses_another_server_as_its_store() -> None:
    with pytest.raises(InvalidInput):
        create_app("http://elsewhere:8080")


def test_the_batch_endpoint_takes_rows_or_columns_with_the_same_result(app_and_token: tuple[TestClient, str]) -> None:
    client, _ = app_and_token
    rows_run = client.post("/api/v1/runs", json={"project": "p"}).json()["run_id"]
    cols_run = client.post("/api/v1/runs", json={"project": "p"}).json()["run_id"]
    rows = {
        "metrics": [{"key": "loss", "value": 1, "step": 0, "timestamp": 5}, {"key": "loss", "value": 0.5, "step": 1}]
    }
    cols = {"metrics": {"keys": ["loss", "loss"], "values": [1, 0.5], "steps": [0, 1], "timestamps": [5, None]}}
    assert client.post(f"/api/v1/runs/{rows_run}/batch", json=rows).json() == {"written": 2}
    assert client.post(f"/api/v1/runs/{cols_run}/batch", json=cols).json() == {"written": 2}
    histories = [
        client.get(f"/api/v1/runs/{run}/metric-history", params={"key": "loss"}).json() for run in (rows_run, cols_run)
    ]
    for history in histories:
        assert history["steps"] == [0, 1] and history["values"] == [1.0, 0.5] and history["timestamps"][0] == 5
    # Numbers sent as strings and integral floats are read as pydantic's lax mode read them.
    lenient = {"metrics": [{"key": "acc", "value": "0.25", "step": 2.0}]}
    assert client.post(f"/api/v1/runs/{rows_run}/batch", json=lenient).json() == {"written": 1}
    bad_step = client.post(f"/api/v1/runs/{rows_run}/batch", json={"metrics": [{"key": "a", "value": 1, "step": 1.5}]})
    assert bad_step.status_code == 422 and "metrics.0.step" in bad_step.json()["error"]["message"]


def test_the_batch_body_is_documented_and_responses_carry_server_timing(
    app_and_token: tuple[TestClient, str],
) -> None:
    client, _ = app_and_token
    doc = client.get("/api/v1/openapi.json").json()
    schema = doc["paths"]["/api/v1/runs/{run_id}/batch"]["post"]["requestBody"]["content"]["application/json"]
    metrics = schema["schema"]["properties"]["metrics"]
    assert "$ref" not in str(metrics) and {"keys", "values"} <= set(metrics["anyOf"][1]["properties"])
    response = client.get("/api/v1/health")
    assert response.headers["server-timing"].startswith("app;dur=")
