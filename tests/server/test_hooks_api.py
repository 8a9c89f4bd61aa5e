"""Webhooks through the service API of a server app (``/api/v1/svc/hooks/...``): who may add,
see and remove which subscriptions, and the app's own worker thread delivering an event a
request recorded to a receiver on 127.0.0.1 that verifies the signature."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hook_receiver import Receiver
from keel.sdk.remote import wire_codec
from keel.server import create_app
from keel.services.auth import AuthStore

CODEC = wire_codec()


@dataclass
class Api:
    client: TestClient
    tokens: dict[str, str]

    def call(self, user: str, method: str, *args: Any, **kwargs: Any) -> tuple[int, Any]:
        body = {"args": CODEC.encode(list(args)), "kwargs": CODEC.encode(kwargs)}
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        response = self.client.post(f"/api/v1/svc/hooks/{method}", json=body, headers=headers)
        data = response.json()
        return response.status_code, CODEC.decode(data["result"]) if response.status_code == 200 else data["error"]


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.setenv("KEEL_HOOKS_ALLOW_PRIVATE", "1")
    monkeypatch.setenv("KEEL_HOOKS_POLL", "0.05")
    app = create_app(f"sqlite:///{tmp_path / 'keel.db'}", str(tmp_path / "objects"))
    auth = AuthStore(app.state.keel.store.db)
    tokens = {}
    for name, admin in (("root", True), ("alpha_reader", False), ("alpha_writer", False)):
        auth.create_user(name, is_admin=admin)
        tokens[name] = auth.create_token(name, "test")[0]
    auth.grant("alpha_reader", "alpha", "reader", "test")
    auth.grant("alpha_writer", "alpha", "writer", "test")
    with TestClient(app) as client:
        yield Api(client, tokens)


def test_roles_decide_who_adds_sees_and_removes_which_webhooks(api: Api) -> None:
    status, alpha = api.call("alpha_writer", "add", "http://127.0.0.1:9/alpha", "alpha", ["eval.finished"])
    assert status == 200 and alpha.scope == "alpha" and alpha.secret.startswith("whsec_")
    status, everything = api.call("root", "add", "http://127.0.0.1:9/all", "*")
    assert status == 200

    assert api.call("alpha_writer", "add", "http://127.0.0.1:9/x", "*")[0] == 403  # '*' needs every project
    assert api.call("alpha_writer", "add", "http://127.0.0.1:9/x", "beta")[0] == 404  # hidden project
    assert api.call("alpha_reader", "add", "http://127.0.0.1:9/x", "alpha")[0] == 403
    assert api.call("alpha_writer", "add", "http://127.0.0.1:9/x", "@registries")[0] == 403

    status, seen = api.call("alpha_reader", "subscriptions")
    assert status == 200 and [s.id for s in seen] == [alpha.id] and all(s.secret is None for s in seen)
    assert [s.id for s in api.call("root", "subscriptions")[1]] == [alpha.id, everything.id]

    hidden = api.call("alpha_writer", "remove", everything.id)
    unknown = api.call("alpha_writer", "remove", 999)
    assert (
        hidden[0] == unknown[0] == 404
        and hidden[1]["message"].replace(str(everything.id), "999") == unknown[1]["message"]
    )
    assert api.call("alpha_reader", "remove", alpha.id)[0] == 403
    assert api.call("alpha_reader", "test", alpha.id)[0] == 403
    assert api.call("alpha_reader", "deliver")[0] == 403
    assert api.call("alpha_writer", "remove", alpha.id)[0] == 200
    assert [s.id for s in api.call("root", "subscriptions")[1]] == [everything.id]


def test_the_server_worker_delivers_an_event_a_request_recorded(api: Api) -> None:
    with Receiver() as receiver:
        status, sub = api.call("alpha_writer", "add", receiver.url, "alpha", ["eval.finished"])
        receiver.secret = sub.secret
        api.call("root", "add", receiver.url, "beta", ["eval.finished"])  # another project: not this event

        status, _ = api.call("alpha_writer", "eval_finished", "alpha", "r" * 32, "eval-1", {"exact_match": 0.75})
        assert status == 200
        (got,) = receiver.wait_for(1, timeout=10)

        assert got.verified and got.kind == "eval.finished"
        assert got.body["event"]["project"] == "alpha"
        assert got.body["event"]["subject"] == {"kind": "run", "run_id": "r" * 32, "name": "eval-1"}
        assert got.body["event"]["data"] == {"metrics": {"exact_match": 0.75}}
        status, deliveries = api.call("alpha_reader", "deliveries")
        assert status == 200 and [(d.subscription_id, d.status, d.status_code) for d in deliveries] == [
            (sub.id, "delivered", 200)
        ]
        status, attempts = api.call("alpha_reader", "attempts", deliveries[0].id)
        assert status == 200 and [a.status_code for a in attempts] == [200]
        assert api.call("alpha_writer", "eval_finished", "beta", "r" * 32, "x", {})[0] == 404


def test_the_webhooks_page_shows_readable_subscriptions_and_their_deliveries(tmp_path: Path) -> None:
    from keel.services.hooks import HookService
    from keel.services.hooks_delivery import HookSettings

    app = create_app(f"sqlite:///{tmp_path / 'keel.db'}", str(tmp_path / "objects"))
    store = app.state.keel.store
    auth = AuthStore(store.db)
    auth.create_user("rita")
    auth.set_password("rita", "webhooks page passphrase", "test")
    auth.grant("rita", "alpha", "reader", "test")
    hooks = HookService(store, HookSettings(allow_private=True, max_attempts=1, connect_timeout=1, read_timeout=1))
    with Receiver() as receiver:
        seen = hooks.add(receiver.url, "alpha", ["eval.finished"], description="<script>alert(1)</script>")
        hidden = hooks.add("http://127.0.0.1:9/beta-only", "beta")
        receiver.plan = [500]
        failed = hooks.test(seen.id)
        other = hooks.test(hidden.id)  # nothing listens on port 9: connection refused
    with TestClient(app) as client:
        client.get("/ui/login")
        login = {"user": "rita", "password": "webhooks page passphrase", "login_token": client.cookies["keel_login"]}
        assert client.post("/ui/login", data=login, follow_redirects=False).status_code == 303

        page = client.get("/ui/hooks")
        assert page.status_code == 200
        assert receiver.url in page.text and "beta-only" not in page.text
        assert "<script>alert(1)" not in page.text and "&lt;script&gt;" in page.text
        assert "HTTP 500 Internal Server Error" in page.text and "failed" in page.text
        assert "connection refused" not in page.text  # the beta delivery is not shown

        detail = client.get(f"/ui/hooks/deliveries/{failed.id}")
        assert detail.status_code == 200 and "not now" in detail.text and "hook.test" in detail.text
        assert client.get(f"/ui/hooks/deliveries/{other.id}").status_code == 404
        assert client.get("/ui/hooks/deliveries/9999").status_code == 404
