"""A/B analysis against a keel server: the remote sdk's ABService proxy over the real ASGI app
in process gets the same Analysis (design, guardrail checks, verdict) as the local service, and
moving an old experiment to the sequential design needs a writer."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from keel.errors import Forbidden
from keel.meta.abtests import ABStore
from keel.objects.http import HttpObjectStore
from keel.sdk.remote import RemoteStore, remote
from keel.server import create_app
from keel.services.abtests import ABBatch, ABService
from keel.services.auth import AuthStore
from keel.transport import HttpClient
from keel.transport.asgi import ASGIAppTransport

URL = "http://testserver"


def _feed(service: ABService, name: str, rates: dict[str, float]) -> None:
    rng = random.Random(3)
    batch = ABBatch()
    for i in range(600):
        variant = "a" if i % 2 else "b"
        batch.exposures.append((name, f"{name}{i}", variant, "{}", None, 1_000 + i))
        batch.outcomes.append((name, f"{name}{i}", "converted", float(rng.random() < rates[variant]), 1_000 + i))
        batch.outcomes.append((name, f"{name}{i}", "latency", rng.gauss(800, 50), 1_000 + i))
    service.write_batch(batch)


def test_ab_analysis_through_a_keel_server(tmp_path: Path) -> None:
    app = create_app(f"sqlite:///{tmp_path / 'keel.db'}", str(tmp_path / "objects"))
    local = ABService(app.state.keel.store)
    spec = {"name": "new", "variants": [{"name": "a"}, {"name": "b"}], "primary_metric": "converted",
            "guardrails": [{"metric": "latency", "worse": "higher", "margin": 20}]}  # fmt: skip
    local.create(spec)
    local.start("new")
    _feed(local, "new", {"a": 0.3, "b": 0.45})
    old = {"name": "old", "hypothesis": "", "unit": "user_id", "primary_metric": "converted", "higher_is_better": True,
           "variants": [{"name": "a", "weight": 0.5}, {"name": "b", "weight": 0.5}], "guardrails": [],
           "targeting": {}, "salt": ""}  # fmt: skip
    with local.db.write() as conn:
        ABStore.create(conn, "old", old, "alice")  # as keel stored it before designs existed
    _feed(local, "old", {"a": 0.3, "b": 0.3})
    auth = AuthStore(app.state.keel.store.db)
    auth.create_user("rita")
    token, _ = auth.create_token("rita", "ci")
    auth.grant("rita", "@registries", "reader", "rita")
    with ASGIAppTransport(app) as transport, HttpClient(URL, token, transport=transport) as client:
        service = remote(ABService, RemoteStore(client, HttpObjectStore(URL, transport=client)))
        result = service.analyze("new")
        assert result == local.analyze("new")
        assert result.design.kind == "sequential" and result.verdict[-1] == "Verdict: ship b."
        assert result.guardrail_checks[0].status == "non-inferior"
        with pytest.raises(Forbidden):
            service.set_design("old", "sequential")
        auth.grant("rita", "@registries", "writer", "rita")
        assert service.analyze("old").design.kind == "unstated"
        assert service.set_design("old", "sequential", None, "we look daily").design.kind == "sequential"
        assert service.analyze("old").comparisons[0].test == "mSPRT (always valid)"
