"""Metric history downsampled for charts (``max_points``) through the service, the Python
client and REST, on SQLite and PostgreSQL (fixture ``migrated_database_url``)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from keel.core.batch import WriteBatch
from keel.core.downsample import bucket_extremes
from keel.errors import InvalidInput
from keel.sdk.remote import wire_codec
from keel.server import create_app
from keel.services.auth import AuthStore
from keel.services.tracking import TrackingService
from keel.services.workspace import open_store

POINTS = 3_000


def _values() -> list[float]:
    values = [1.0 / (1 + step / 100) for step in range(POINTS)]
    values[1234] = 40.0  # a spike a stride would miss
    values[2345] = -40.0
    values[100] = math.nan
    return values


def _log_series(service: TrackingService) -> str:
    """A 3,000-point series written in 4 batches, the second one out of step order."""
    run_id = service.start_run("p", "long").run_id
    values = _values()
    order = list(range(POINTS))
    parts = [order[:700], order[1400:2100], order[700:1400], order[2100:]]  # chunks not in step order
    for part in parts:
        service.write_batch(WriteBatch(metrics=[(run_id, "loss", values[s], s, 1_000 + s) for s in part]))
    return run_id


@pytest.fixture
def store_and_run(migrated_database_url: str, tmp_path: Path):
    store = open_store(migrated_database_url, str(tmp_path / "objects"), cached=False)
    try:
        yield store, _log_series(TrackingService(store))
    finally:
        store.close()


def test_max_points_keeps_the_shape_through_the_service(store_and_run) -> None:
    store, run_id = store_and_run
    service = TrackingService(store)
    full = service.metric_history(run_id, "loss")
    assert [m.step for m in full] == list(range(POINTS))  # chunks sorted back into step order
    small = service.metric_history(run_id, "loss", max_points=100)
    assert 90 <= len(small) <= 100
    expected = [full[i] for i in bucket_extremes([m.value for m in full], 100)]
    assert [(m.step, m.timestamp) for m in small] == [(m.step, m.timestamp) for m in expected]
    steps = [m.step for m in small]
    assert steps[0] == 0 and steps[-1] == POINTS - 1 and 1234 in steps and 2345 in steps
    assert all(m.key == "loss" for m in small)
    # more points asked than there are: every point
    assert len(service.metric_history(run_id, "loss", max_points=50_000)) == POINTS


def test_a_bad_max_points_is_refused_with_a_hint(store_and_run) -> None:
    store, run_id = store_and_run
    for bad in (0, 1, -5, 50_001, True, 2.5, "600"):
        with pytest.raises(InvalidInput) as caught:
            TrackingService(store).metric_history(run_id, "loss", max_points=bad)
        assert "max_points" in caught.value.message and "max_points=2..50000" in (caught.value.hint or "")


def test_max_points_over_rest(migrated_database_url: str, tmp_path: Path) -> None:
    app = create_app(migrated_database_url, str(tmp_path / "objects"))
    auth = AuthStore(app.state.keel.store.db)
    auth.create_user("root", is_admin=True)
    token, _info = auth.create_token("root", "test")
    run_id = _log_series(TrackingService(app.state.keel.store))
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        path = f"/api/v1/runs/{run_id}/metric-history"
        body = client.get(path, params={"key": "loss", "max_points": 60}).json()
        assert len(body["steps"]) <= 60 and body["steps"][0] == 0 and body["steps"][-1] == POINTS - 1
        assert 40.0 in body["values"] and -40.0 in body["values"]
        assert len(body["steps"]) == len(body["values"]) == len(body["timestamps"])
        assert len(client.get(path, params={"key": "loss"}).json()["steps"]) == POINTS
        refused = client.get(path, params={"key": "loss", "max_points": 1})
        assert refused.status_code == 400 and "max_points" in refused.json()["error"]["message"]
        # the service RPC (what keel's remote client sends) takes it too, with the same answer
        codec = wire_codec()
        call = {"args": codec.encode([run_id, "loss"]), "kwargs": codec.encode({"max_points": 60})}
        answer = client.post("/api/v1/svc/tracking/metric_history", json=call)
        assert answer.status_code == 200, answer.text
        assert [m.step for m in codec.decode(answer.json()["result"])] == body["steps"]
