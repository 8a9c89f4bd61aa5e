"""The row attacks of issue 15 through ``/api/v1/svc/tracking/write_batch`` as a writer sends them:
each answers 400 in the one error shape (never 500), writes nothing, and the project's runs list
keeps answering."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keel.core.batch import WriteBatch
from keel.core.entities import new_run_id, now_ms
from keel.sdk.remote import wire_codec
from keel.server import create_app
from keel.services.auth import AuthStore

CODEC = wire_codec()
RUN = "c3" * 16
OID = "ab" * 32


@dataclass
class Site:
    client: TestClient
    context: Any
    headers: dict[str, str]

    def write(self, batch: WriteBatch) -> Any:
        body = json.dumps({"args": CODEC.encode([batch]), "kwargs": {}})  # ASCII: a lone surrogate travels escaped
        headers = {**self.headers, "Content-Type": "application/json"}
        return self.client.post("/api/v1/svc/tracking/write_batch", content=body, headers=headers)

    def state(self) -> Any:
        record = self.context.tracking.get_run(RUN)
        runs, _ = self.context.tracking.search_runs("victims")
        artifacts = self.context.tracking.list_artifacts(RUN)
        return record.status, record.params, record.tags, record.metrics, len(runs), artifacts


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder: Path = tmp_path_factory.mktemp("rows")
    app = create_app(f"sqlite:///{folder / 'keel.db'}", str(folder / "objects"))
    auth = AuthStore(app.state.keel.store.db)
    auth.create_user("wendy")
    token = auth.create_token("wendy", "t")[0]
    auth.grant("wendy", "victims", "writer", "test")
    app.state.keel.tracking.write_batch(WriteBatch(new_runs=[(RUN, "victims", "r", now_ms(), None, "{}")]))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Site(client, app.state.keel, {"Authorization": f"Bearer {token}"})


ROWS: dict[str, dict[str, list[tuple[Any, ...]]]] = {
    "artifact ../../x": {"artifacts": [(RUN, "../../x", OID, 1, "file", 0)]},
    "artifact /abs/x": {"artifacts": [(RUN, "/abs/x", OID, 1, "file", 0)]},
    "context {not json": {"new_runs": [(new_run_id(), "victims", "r", 0, None, "{not json")]},
    "run id ../../x": {"new_runs": [("../../x", "victims", "r", 0, None, "{}")]},
    "10 MB tag": {"tags": [(RUN, "big", "x" * 10_000_000)]},
    "<script> param key": {"params": [(RUN, "<script>", "str", "v", False)]},
    "bad vtype": {"params": [(RUN, "k", "pickle", "v", False)]},
    "string metric value": {"metrics": [(RUN, "m", "0.5", 0, 0)]},
    "step 2**63": {"metrics": [(RUN, "m", 0.5, 2**63, 0)]},
    "lone surrogate": {"params": [(RUN, "k", "str", "\ud800", False)]},
}


@pytest.mark.parametrize("attack", list(ROWS))
def test_a_bad_row_answers_400_and_writes_nothing(site: Site, attack: str) -> None:
    before = site.state()
    batch = WriteBatch(**ROWS[attack])  # type: ignore[arg-type]
    batch.params.append((RUN, "ok", "str", "fine", False))  # a good row of the same batch
    response = site.write(batch)
    if attack == "10 MB tag" and response.status_code == 413:  # pragma: no cover - depends on the limit
        return  # the server's body limit answered first: refused all the same
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and "write batch refused" in error["message"]
    assert len(response.text) < 2000  # the bad value is never echoed back whole
    assert site.state() == before
    listed = site.client.get("/api/v1/runs", params={"project": "victims"}, headers=site.headers)
    assert listed.status_code == 200
