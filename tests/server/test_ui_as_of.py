"""The registry pages "as of T" (``?at=``): the model page lists the versions that existed
then with their stage and aliases of then (a version deleted since is marked deleted), the
prompt page the versions registered by then with each alias where it pointed; a time
without a zone is a 400 saying how to write it; no write forms on a past view."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from keel.core.entities import now_ms
from keel.core.times import format_at
from keel.server import create_app
from keel.services.auth import AuthStore
from keel.services.models import ModelService
from keel.services.prompts import PromptService
from keel.services.tracking import TrackingService

PASSWORD = "as of pages passphrase"


def _wait_past(ms: int) -> int:
    while now_ms() <= ms:
        pass
    return now_ms()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, int]]]:
    tmp_path = tmp_path_factory.mktemp("as-of-pages")
    app = create_app(f"sqlite:///{tmp_path / 'keel.db'}", str(tmp_path / "objects"))
    store = app.state.keel.store
    auth = AuthStore(store.db)
    auth.create_user("wendy")
    auth.set_password("wendy", PASSWORD, "test")
    auth.grant("wendy", "@registries", "writer", "test")
    models, prompts = ModelService(store, TrackingService(store)), PromptService(store)
    times: dict[str, int] = {}
    for n in (1, 2, 3):
        models.register("ranker", f"s3://bucket/ranker-v{n}")
    models.set_alias("ranker", "champion", 3)
    models.transition_stage("ranker", 3, "Production")
    prompts.register("chat", "Hello {{ name }}", changelog="first")
    prompts.set_alias("chat", "production", "1.0.0")
    times["then"] = _wait_past(now_ms())
    _wait_past(times["then"])
    models.delete_version("ranker", 3, reason="bad weights")
    prompts.register("chat", "Hi {{ name }}", changelog="shorter")
    prompts.set_alias("chat", "production", "1.0.1")
    with TestClient(app) as c:
        c.get("/ui/login")
        data = {"user": "wendy", "password": PASSWORD, "login_token": c.cookies["keel_login"]}
        assert c.post("/ui/login", data=data, follow_redirects=False).status_code == 303
        yield c, times


def _row(html: str, attr: str, value: str) -> str:
    match = re.search(rf'<tr data-{attr}="{re.escape(value)}">(.*?)</tr>', html, re.S)
    assert match, f"no row {attr}={value}"
    return match.group(1)


def test_the_model_page_as_of_t_shows_the_deleted_version_that_was_champion(
    client: tuple[TestClient, dict[str, int]],
) -> None:
    c, times = client
    now = c.get("/ui/models/ranker").text
    assert 'data-version="3"' not in now
    page = c.get("/ui/models/ranker", params={"at": format_at(times["then"])})
    assert page.status_code == 200
    row = _row(page.text, "version", "3")
    assert "deleted" in row and "champion" in row and "Production" in row
    assert format_at(times["then"]) in page.text
    assert "Move an alias" not in page.text  # no write forms on a past view


def test_the_prompt_page_as_of_t_shows_the_alias_where_it_pointed(client: tuple[TestClient, dict[str, int]]) -> None:
    c, times = client
    page = c.get("/ui/prompts/chat", params={"at": format_at(times["then"])}).text
    assert "1.0.1" not in page
    assert re.search(r'data-alias="production">.*?1\.0\.0', page, re.S)
    assert "Move alias" not in page


@pytest.mark.parametrize("bad", ["2026-12-07T10:00:00", "1733500000", "yesterday"])
def test_a_time_without_a_zone_or_unit_is_refused_with_how_to_write_it(
    client: tuple[TestClient, dict[str, int]], bad: str
) -> None:
    c, _ = client
    for path in ("/ui/models/ranker", "/ui/prompts/chat"):
        page = c.get(path, params={"at": bad})
        assert page.status_code == 400
        assert "2026-12-07T10:00:00Z" in page.text or "Z for UTC" in page.text or "unit" in page.text


def test_the_kb_and_flag_pages_as_of_t(tmp_path_factory: pytest.TempPathFactory) -> None:
    from keel.services.flags import FlagService
    from keel.services.kb import KBService

    folder = tmp_path_factory.mktemp("as-of-kb-flags")
    app = create_app(f"sqlite:///{folder / 'keel.db'}", str(folder / "objects"))
    store = app.state.keel.store
    auth = AuthStore(store.db)
    auth.create_user("rita")
    auth.set_password("rita", PASSWORD, "test")
    auth.grant("rita", "@registries", "reader", "test")
    kb, flags = KBService(store), FlagService(store)
    kb.create("faq", embedding_model="hashing-384")
    kb.add_documents("faq", [{"text": "Refunds take 5 days.", "source": "refunds.md"}])
    kb.commit("faq", "first")
    flags.set("checkout", {"enabled": True, "default": True}, env="production", reason="launch")
    then = _wait_past(now_ms())
    _wait_past(then)
    kb.add_documents("faq", [{"text": "Refunds take 10 days.", "source": "refunds.md"}])
    kb.commit("faq", "second")
    flags.kill("checkout", env="production", reason="incident")
    with TestClient(app) as c:
        c.get("/ui/login")
        data = {"user": "rita", "password": PASSWORD, "login_token": c.cookies["keel_login"]}
        assert c.post("/ui/login", data=data, follow_redirects=False).status_code == 303
        at = format_at(then)
        now_page, past_page = c.get("/ui/kb/faq").text, c.get("/ui/kb/faq", params={"at": at}).text
        assert ">v2<" in now_page and ">v2<" not in past_page and ">v1<" in past_page
        assert at in past_page
        assert "incident" in c.get("/ui/flags/checkout").text
        flag_then = c.get("/ui/flags/checkout", params={"at": at})
        assert flag_then.status_code == 200 and "incident" not in flag_then.text and at in flag_then.text
        assert c.get("/ui/flags", params={"at": at}).status_code == 200
        assert c.get("/ui/kb/faq", params={"at": "2000-01-01T00:00:00Z"}).status_code == 404  # before any
        assert c.get("/ui/flags", params={"at": "2026-12-07 10:00"}).status_code == 400
