"""Web UI sign-in through the ASGI app: passwords and tokens, session cookies, CSRF,
login rate limiting shared through the database, and the password command."""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from keel.cli.main import main as keel_main
from keel.server import create_app
from keel.server.ui import UISettings
from keel.services.auth import AuthStore, LoginLimits, hash_password, verify_password

PASSWORD = "correct horse battery"


def sign_in(client: TestClient, user: str, password: str = PASSWORD, **extra: str) -> tuple[int, str | None]:
    """Post the sign-in form as a browser would; ``(status, redirect location)``."""
    client.get("/ui/login")
    data = {"user": user, "password": password, "login_token": client.cookies.get("keel_login", ""), **extra}
    response = client.post("/ui/login", data=data, follow_redirects=False)
    return response.status_code, response.headers.get("location")


def csrf_of(client: TestClient, page: str = "/ui/whoami") -> str:
    """The CSRF token embedded in a page's forms."""
    match = re.search(r'name="csrf" value="([^"]+)"', client.get(page).text)
    assert match, page
    return match.group(1)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'keel.db'}"


@pytest.fixture
def app(store_url: str, tmp_path: Path) -> FastAPI:
    app = create_app(store_url, str(tmp_path / "objects"))
    auth = AuthStore(app.state.keel.store.db)
    auth.create_user("ann")
    auth.set_password("ann", PASSWORD, "test")
    auth.grant("ann", "demo", "writer", "test")
    auth.create_user("bob")  # no password: token sign-in only
    app.state.keel.tracking.create_project("demo")
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def test_pages_redirect_to_sign_in_and_back(client: TestClient) -> None:
    response = client.get("/ui/projects/demo/runs?filter=x", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=%2Fui%2Fprojects%2Fdemo%2Fruns%3Ffilter%3Dx"
    assert sign_in(client, "ann", next="/ui/projects/demo/runs") == (303, "/ui/projects/demo/runs")
    page = client.get("/ui/projects/demo/runs")
    assert page.status_code == 200 and "ann" in page.text


def test_the_session_cookie_is_httponly_lax_and_stored_hashed(client: TestClient, app: FastAPI) -> None:
    client.get("/ui/login")
    response = client.post(
        "/ui/login",
        data={"user": "ann", "password": PASSWORD, "login_token": client.cookies["keel_login"]},
        follow_redirects=False,
    )
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("keel_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Max-Age=43200" in cookie
    assert "Secure" not in cookie  # plain http in this test; https or KEEL_UI_SECURE_COOKIES add it
    secret = client.cookies["keel_session"]
    with app.state.keel.store.db.read() as conn:
        stored = [row[0] for row in conn.exec_driver_sql("SELECT session_hash FROM ui_sessions")]
    assert len(stored) == 1 and secret not in stored[0] and len(stored[0]) == 64


def test_cookies_are_secure_over_https_or_when_configured(app: FastAPI) -> None:
    with TestClient(app, base_url="https://keel.example") as client:
        client.get("/ui/login")
        assert "Secure" in client.get("/ui/login").headers["set-cookie"]
    app.state.keel_ui = UISettings(secure_cookies=True)
    with TestClient(app) as client:
        assert "Secure" in client.get("/ui/login").headers["set-cookie"]


def test_wrong_password_unknown_user_and_no_password_all_fail_alike(client: TestClient) -> None:
    for user, password in (("ann", "wrong password"), ("nobody", PASSWORD), ("bob", PASSWORD)):
        status, _ = sign_in(client, user, password)
        assert status == 401
    assert "keel_session" not in client.cookies
    page = client.post("/ui/login", data={"user": "ann", "password": "x", "login_token": client.cookies["keel_login"]})
    assert "wrong user name or password" in page.text


def test_sign_in_with_an_api_token(client: TestClient, app: FastAPI) -> None:
    secret, _info = AuthStore(app.state.keel.store.db).create_token("bob", "laptop")
    status, location = sign_in(client, "", "", token=secret)
    assert (status, location) == (303, "/ui/")
    assert "browser session (token)" in client.get("/ui/whoami").text
    status, _ = sign_in(client, "", "", token="keel_forged")
    assert status == 401


def test_sign_in_form_needs_its_double_submit_token_and_origin(client: TestClient) -> None:
    client.get("/ui/login")
    response = client.post("/ui/login", data={"user": "ann", "password": PASSWORD, "login_token": "guess"})
    assert response.status_code == 403
    response = client.post(
        "/ui/login",
        data={"user": "ann", "password": PASSWORD, "login_token": client.cookies["keel_login"]},
        headers={"origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert "keel_session" not in client.cookies


def test_no_open_redirect_after_sign_in(client: TestClient) -> None:
    for target in ("https://evil.example/", "//evil.example/ui/", "/api/v1/runs"):
        assert sign_in(client, "ann", next=target) == (303, "/ui/")


def test_state_changing_forms_need_the_csrf_token_and_same_origin(client: TestClient, app: FastAPI) -> None:
    run = app.state.keel.tracking.start_run("demo", "victim")
    sign_in(client, "ann")
    token = csrf_of(client)
    for data, headers in (({}, {}), ({"csrf": "forged"}, {}), ({"csrf": token}, {"origin": "https://evil.example"})):
        response = client.post(f"/ui/runs/{run.run_id}/delete", data=data, headers=headers, follow_redirects=False)
        assert response.status_code == 403, (data, headers)
    assert not app.state.keel.tracking.get_run(run.run_id).deleted
    response = client.post(f"/ui/runs/{run.run_id}/delete", data={"csrf": token}, follow_redirects=False)
    assert response.status_code == 303
    assert app.state.keel.tracking.get_run(run.run_id).deleted


def test_sign_out_ends_the_session_everywhere(client: TestClient, app: FastAPI) -> None:
    sign_in(client, "ann")
    secret = client.cookies["keel_session"]
    response = client.post("/ui/logout", data={"csrf": csrf_of(client)}, follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/ui/login")
    with TestClient(app, cookies={"keel_session": secret}) as replay:
        assert replay.get("/ui/projects", follow_redirects=False).status_code == 303


def test_expired_sessions_and_disabled_users_are_signed_out(client: TestClient, app: FastAPI) -> None:
    auth = AuthStore(app.state.keel.store.db)
    sign_in(client, "ann")
    assert client.get("/ui/projects", follow_redirects=False).status_code == 200
    auth.set_disabled("ann", True, "test")
    assert client.get("/ui/projects", follow_redirects=False).status_code == 303
    auth.set_disabled("ann", False, "test")
    expired = auth.create_session("ann", "password", ttl_s=-1)
    with TestClient(app, cookies={"keel_session": expired}) as other:
        assert other.get("/ui/projects", follow_redirects=False).status_code == 303


def test_changing_a_password_ends_sessions(client: TestClient, app: FastAPI) -> None:
    sign_in(client, "ann")
    AuthStore(app.state.keel.store.db).set_password("ann", "a new long passphrase", "test")
    assert client.get("/ui/projects", follow_redirects=False).status_code == 303


def test_failed_sign_ins_are_rate_limited_per_user_across_processes(store_url: str, app: FastAPI) -> None:
    other_process = create_app(store_url)  # a second server process over the same database
    with TestClient(app) as first, TestClient(other_process) as second:
        for _ in range(5):
            assert sign_in(first, "ann", "wrong guess")[0] == 401
        blocked = second.post(
            "/ui/login",
            data={"user": "ann", "password": PASSWORD, "login_token": second.get("/ui/login").cookies["keel_login"]},
        )
        assert blocked.status_code == 429  # even the right password, even on another process
        assert int(blocked.headers["retry-after"]) > 0
        assert "too many failed sign-in attempts" in blocked.text
        assert sign_in(second, "ann")[0] == 429
        assert sign_in(second, "bob-has-no-limit-yet", "x")[0] == 401  # other user names are not blocked


def test_failed_sign_ins_are_rate_limited_per_address(app: FastAPI) -> None:
    app.state.keel_ui = UISettings(limits=LoginLimits(per_user=100, per_address=4, window_s=60))
    with TestClient(app) as client:
        for i in range(4):
            assert sign_in(client, f"guess{i}", "wrong guess")[0] == 401
        assert sign_in(client, "ann")[0] == 429


def test_a_success_resets_the_user_count(app: FastAPI) -> None:
    app.state.keel_ui = UISettings(limits=LoginLimits(per_user=3, per_address=100, window_s=60))
    with TestClient(app) as client:
        for _ in range(2):
            assert sign_in(client, "ann", "wrong guess")[0] == 401
        assert sign_in(client, "ann")[0] == 303
        for _ in range(2):
            assert sign_in(client, "ann", "wrong guess")[0] == 401
        assert sign_in(client, "ann")[0] == 303


def test_passwords_are_salted_scrypt() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first != second and first.startswith("scrypt$") and PASSWORD not in first
    assert verify_password(PASSWORD, first) and not verify_password("other", first)
    assert not verify_password(PASSWORD, None) and not verify_password(PASSWORD, "md5$abc")


def test_the_password_command_reads_stdin_never_argv(
    store_url: str, app: FastAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    command = ["server", "user", "password", "bob", "--store", store_url]
    monkeypatch.setattr(sys, "stdin", io.StringIO("bobs long passphrase\n"))
    assert keel_main(command) == 0
    assert AuthStore(app.state.keel.store.db).check_password("bob", "bobs long passphrase").name == "bob"
    assert keel_main([*command[:4], "pw-on-argv", *command[4:]]) == 2  # never a password on the command line
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert keel_main(command) != 0
    assert "8 to 1024 characters" in capsys.readouterr().err


def test_sessions_and_rate_limits_on_every_database(database_url: str, tmp_path: Path) -> None:
    app = create_app(database_url, str(tmp_path / "objects"))
    auth = AuthStore(app.state.keel.store.db)
    auth.create_user("ann")
    auth.set_password("ann", PASSWORD, "test")
    limits = LoginLimits(per_user=2, per_address=50, window_s=60)
    assert auth.login_retry_after("ann", "10.0.0.1", limits) == 0
    auth.record_login("ann", "10.0.0.1", False)
    auth.record_login("ann", "10.0.0.2", False)
    assert 0 < auth.login_retry_after("ann", "10.0.0.3", limits) <= 60
    secret = auth.create_session("ann", "password", 60)
    assert auth.session_principal(secret).name == "ann"
    auth.end_session(secret)
    with TestClient(app, cookies={"keel_session": secret}) as client:
        assert client.get("/ui/projects", follow_redirects=False).status_code == 303
