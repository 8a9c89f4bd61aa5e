"""The review pages through the ASGI app: a model stage's and a flag's change requests (what
changes: the version fields, the definitions), readers see no review form and are refused,
a writer approves with the form, and the UI's own alias form is refused on a protected alias."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from keel.server import create_app
from keel.services.auth import AuthStore
from registry_seed import FLAG, MODEL, PROMPT, seed

PASSWORD = "review pages passphrase"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[dict[str, TestClient], object]]:
    app = create_app(f"sqlite:///{tmp_path / 'keel.db'}", str(tmp_path / "objects"))
    store = app.state.keel.store
    auth = AuthStore(store.db)
    for user, role in (("wendy", "writer"), ("rita", "reader")):
        auth.create_user(user)
        auth.set_password(user, PASSWORD, "test")
        auth.grant(user, "@registries", role, "test")
    seed(store, who="alice")
    clients = {}
    for user in ("wendy", "rita"):
        client = TestClient(app)
        client.__enter__()
        client.get("/ui/login")
        data = {"user": user, "password": PASSWORD, "login_token": client.cookies["keel_login"]}
        assert client.post("/ui/login", data=data, follow_redirects=False).status_code == 303
        clients[user] = client
    yield clients, app.state.keel
    for client in clients.values():
        client.__exit__(None, None, None)


def _csrf(client: TestClient) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', client.get("/ui/whoami").text)
    assert match
    return match.group(1)


def test_model_and_flag_requests_readers_and_writers(site):
    clients, context = site
    reviews = context.reviews
    reviews.protect("model", MODEL, "stage:Production", who="alice")
    reviews.protect("flag", FLAG, "production", who="alice")
    reviews.protect("prompt", PROMPT, "production", who="alice")
    stage = reviews.request("model", MODEL, "stage:Production", "2", reason="ndcg +0.03", who="alice")
    flag = reviews.request("flag", FLAG, "production", json.dumps({"rollout": 60}), reason="ramp", who="alice")

    rita, wendy = clients["rita"], clients["wendy"]
    listing = rita.get("/ui/reviews")
    assert listing.status_code == 200 and "ndcg +0.03" in listing.text and "stage:Production" in listing.text

    page = rita.get(f"/ui/reviews/{stage.id}")
    assert page.status_code == 200
    assert 'table class="grid model-fields"' in page.text and "version 2" in page.text
    assert "review-form" not in page.text  # a reader may look, not review
    flag_page = rita.get(f"/ui/reviews/{flag.id}").text
    assert "flag-definitions" in flag_page and "rollout: 60" in flag_page and "rollout: 25" in flag_page

    refused = rita.post(f"/ui/reviews/{stage.id}/approve", data={"csrf": _csrf(rita)}, follow_redirects=False)
    assert refused.status_code == 403
    done = wendy.post(
        f"/ui/reviews/{stage.id}/approve", data={"csrf": _csrf(wendy), "comment": "ok"}, follow_redirects=False
    )
    assert done.status_code == 303
    assert context.models.get(MODEL, stage="Production").version == 2
    rejected = wendy.post(f"/ui/reviews/{flag.id}/reject", data={"csrf": _csrf(wendy)}, follow_redirects=False)
    assert rejected.status_code == 303 and reviews.get(flag.id).status == "rejected"

    # The prompt page's own alias form: refused while production is protected.
    before = context.prompts.get(PROMPT, "production").version
    moved = wendy.post(
        f"/ui/prompts/{PROMPT}/aliases",
        data={"csrf": _csrf(wendy), "alias": "production", "version": "1.0.0", "reason": "ui"},
        follow_redirects=False,
    )
    assert moved.status_code == 409 and "is protected" in moved.text
    assert context.prompts.get(PROMPT, "production").version == before


def test_rest_through_the_service_contract(tmp_path):
    """The RPC routes: only admins protect and break glass; the reviewer is always the caller
    (a writer cannot approve as someone else to get round self-approval)."""
    from keel.sdk.remote import wire_codec

    codec = wire_codec()
    app = create_app(f"sqlite:///{tmp_path / 'keel.db'}", str(tmp_path / "objects"))
    store = app.state.keel.store
    auth = AuthStore(store.db)
    tokens = {}
    for user, role in (("root", None), ("wendy", "writer"), ("walt", "writer")):
        auth.create_user(user, is_admin=role is None)
        tokens[user], _ = auth.create_token(user, "test")
        if role:
            auth.grant(user, "@registries", role, "root")
    seed(store, who="alice")

    def call(client: TestClient, user: str, method: str, *args, **kwargs):
        body = {"args": codec.encode(list(args)), "kwargs": codec.encode(kwargs)}
        response = client.post(
            f"/api/v1/svc/reviews/{method}", json=body, headers={"Authorization": f"Bearer {tokens[user]}"}
        )
        data = response.json()
        return response.status_code, codec.decode(data["result"]) if response.status_code == 200 else data["error"]

    with TestClient(app, raise_server_exceptions=False) as client:
        status, error = call(client, "wendy", "protect", "prompt", PROMPT, "production")
        assert status == 403 and error["code"] == "forbidden"
        status, rule = call(client, "root", "protect", "prompt", PROMPT, "production", who="mallory")
        assert status == 200 and rule.created_by == "root"
        status, cr = call(client, "wendy", "request", "prompt", PROMPT, "production", "2.0.0", reason="cite")
        assert status == 200 and cr.requester == "wendy"
        status, error = call(client, "wendy", "approve", cr.id, who="walt")  # recorded as wendy: refused
        assert status == 403 and "self-approval is off" in error["message"]
        status, error = call(client, "wendy", "break_glass", "prompt", PROMPT, "production", "1.0.0", reason="x")
        assert status == 403
        status, done = call(client, "walt", "approve", cr.id, comment="ok")
        assert status == 200 and done.status == "applied" and done.reviews[0].reviewer == "walt"
        assert app.state.keel.prompts.get(PROMPT, "production").version == "2.0.0"

        # MLflow's REST API moves the same refs: refused too while protected.
        call(client, "root", "protect", "model", MODEL, "champion")
        call(client, "root", "protect", "model", MODEL, "stage:Production")
        root = {"Authorization": f"Bearer {tokens['root']}"}
        for path, body in (
            ("registered-models/alias", {"name": MODEL, "alias": "champion", "version": "2"}),
            ("model-versions/transition-stage", {"name": MODEL, "version": "2", "stage": "Production"}),
        ):
            response = client.post(f"/api/2.0/mlflow/{path}", json=body, headers=root)
            assert response.status_code >= 400 and "is protected" in response.text, path
        assert app.state.keel.models.get(MODEL, stage="Production").version != 2
