"""MLflow's UI links on a keel server: ``/ui/experiments/{id}`` (where keel.js sends
``<server>/#/experiments/ID``, the link the MLflow client prints) opens the project's runs.
The fragment itself is mapped in the browser: tests/e2e/test_ui_browser.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from keel.server import create_app
from keel.services.auth import AuthStore

PASSWORD = "correct horse battery"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, int]]]:
    app = create_app(f"sqlite:///{tmp_path / 'keel.db'}", str(tmp_path / "objects"))
    auth = AuthStore(app.state.keel.store.db)
    auth.create_user("wendy")
    auth.set_password("wendy", PASSWORD, "test")
    auth.grant("wendy", "demo", "reader", "test")
    auth.grant("wendy", "default", "reader", "test")
    tracking = app.state.keel.tracking
    for project in ("demo", "secret-lab", "default"):
        tracking.create_project(project)
    ids = {p.name: p.id for p, _ in tracking.list_projects()}
    with TestClient(app) as client:
        yield client, ids


def test_experiment_ids_open_their_projects_runs(site: tuple[TestClient, dict[str, int]]) -> None:
    client, ids = site
    signed_out = client.get(f"/ui/experiments/{ids['demo']}", follow_redirects=False)
    assert signed_out.status_code == 303
    assert signed_out.headers["location"] == f"/ui/login?next=%2Fui%2Fexperiments%2F{ids['demo']}"

    client.get("/ui/login")
    form = {"user": "wendy", "password": PASSWORD, "login_token": client.cookies["keel_login"]}
    assert client.post("/ui/login", data=form, follow_redirects=False).status_code == 303
    for experiment, project in ((str(ids["demo"]), "demo"), ("0", "default")):
        found = client.get(f"/ui/experiments/{experiment}", follow_redirects=False)
        assert (found.status_code, found.headers["location"]) == (303, f"/ui/projects/{project}/runs")
    assert "demo" in client.get(f"/ui/experiments/{ids['demo']}").text

    # a project wendy cannot read answers exactly like an id that does not exist
    pages = [client.get(f"/ui/experiments/{e}") for e in (ids["secret-lab"], 999_999, "nope")]
    assert [p.status_code for p in pages] == [404, 404, 404]
    assert "secret-lab" not in pages[0].text and "no experiment with id" in pages[0].text
