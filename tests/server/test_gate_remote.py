"""The gate against a keel server: the services it uses are the remote proxies of the service
contract (the sdk's view of a team server), over the real ASGI app in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import keel
from keel.errors import Forbidden, InvalidInput
from keel.objects.http import HttpObjectStore
from keel.sdk import session as sessions
from keel.sdk.remote import RemoteStore, remote
from keel.server import create_app
from keel.services.auth import AuthStore
from keel.services.gate import find_baseline, gate_runs, regression_data, require_metric, run_prompt
from keel.services.hooks import HookService
from keel.services.models import ModelService
from keel.services.prompts import PromptService
from keel.services.tracking import TrackingService
from keel.transport import HttpClient
from keel.transport.asgi import ASGIAppTransport

URL = "http://testserver"


def _runs(folder: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """calc 1.0.0 (production) and 1.0.1, and one evaluation run of each, written to the store."""
    from keel.core.entities import EntityRef

    monkeypatch.setenv("KEEL_URI", f"sqlite:///{folder / 'keel.db'}")
    monkeypatch.setenv("KEEL_OBJECTS", str(folder / "objects"))
    keel.prompts.register("calc", "What is {{ question }}?", version="1.0.0", changelog="First")
    keel.prompts.register("calc", "Number only: {{ question }}", version="1.0.1", changelog="Terse")
    keel.prompts.set_alias("calc", "production", "1.0.0")
    ids = []
    for version, right in (("1.0.0", 45), ("1.0.1", 20)):
        with keel.start_run(project="gate", name=f"calc_v{version}", tags={"keel.eval": "1"}) as run:
            run.log_params({"prompt": f"calc@{version}", "dataset_hash": "d1"})
            run.log_input(EntityRef("prompt", "calc", version))
            rows = [{"sample_id": f"q{i}", "score.exact_match": float(i < right)} for i in range(50)]
            run.log_table("samples", rows=rows)
            run.log_metric("exact_match", right / 50)
        ids.append(run.id)
    sessions.reset()
    return ids[0], ids[1]


def test_the_gate_runs_through_a_keel_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, cand = _runs(tmp_path, monkeypatch)
    app = create_app(f"sqlite:///{tmp_path / 'keel.db'}", str(tmp_path / "objects"))
    auth = AuthStore(app.state.keel.store.db)
    auth.create_user("rita")
    token, _ = auth.create_token("rita", "ci")
    auth.grant("rita", "gate", "reader", "rita")
    auth.grant("rita", "@registries", "reader", "rita")
    with ASGIAppTransport(app) as transport, HttpClient(URL, token, transport=transport) as client:
        store = RemoteStore(client, HttpObjectStore(URL, transport=client))
        tracking = remote(TrackingService, store)
        prompts, models = remote(PromptService, store), remote(ModelService, store)
        record = tracking.get_run(cand[:8])
        require_metric(tracking, record, "exact_match")
        chosen, target, note = find_baseline(
            tracking, prompts, models, "production", "exact_match", run_prompt(tracking, record), "d1", [cand]
        )
        assert chosen.run_id == base and target == "prompt:calc@1.0.0"
        result = gate_runs(
            tracking, cand, chosen, "exact_match", baseline_ref="production", baseline_target=target, baseline_note=note
        )
        # the regression reaches the server's webhooks as an event: writers of the project only
        hooks = remote(HookService, store)
        with pytest.raises(Forbidden):
            hooks.regression_detected("gate", cand, result.candidate_name, regression_data(result))
        auth.grant("rita", "gate", "writer", "rita")
        hooks.regression_detected("gate", cand, result.candidate_name, regression_data(result))
        with pytest.raises(InvalidInput):
            hooks.regression_detected("gate", cand, "x", {"delta": "x" * 20_000})
    assert result.regression and result.test.method == "mcnemar" and result.shared == 50
    assert result.test.delta == pytest.approx(-0.5)
    with app.state.keel.store.db.read() as conn:
        events = conn.execute("SELECT project, subject, data FROM events WHERE kind = 'regression.detected'").all()
    assert len(events) == 1 and events[0].project == "gate"
    assert json.loads(events[0].subject)["run_id"] == cand
    assert json.loads(events[0].data)["metric"] == "exact_match"
