"""The web UI's registry pages through the ASGI app: prompts (versions, eval scores, diff,
aliases and their history, rollback), models (versions, cards, stages, alias and stage
forms), data versions and their diff, knowledge bases, conversations (filters, stats),
flags and A/B tests: each page with data, 404 for unknown names, what readers and writers
see and may do, CSRF refusals, and escaping of user content."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from keel.server import create_app
from keel.server.ui.pages_conversations import combined_filter
from keel.server.ui.registry_views import side_by_side
from keel.services.auth import AuthStore
from registry_seed import DATA_PATH, EXPERIMENT, FLAG, KB, MODEL, PROMPT, XSS_ATTR, XSS_SCRIPT, Seeded, seed

PASSWORD = "registry pages passphrase"
USERS = (("wendy", "writer"), ("rita", "reader"), ("nora", None))


@dataclass
class Site:
    app: FastAPI
    data: Seeded
    clients: dict[str, TestClient] = field(default_factory=dict)

    def as_user(self, name: str) -> TestClient:
        """A signed-in client for ``name``."""
        if name not in self.clients:
            client = TestClient(self.app)
            client.__enter__()
            client.get("/ui/login")
            data = {"user": name, "password": PASSWORD, "login_token": client.cookies["keel_login"]}
            assert client.post("/ui/login", data=data, follow_redirects=False).status_code == 303
            self.clients[name] = client
        return self.clients[name]

    def csrf(self, name: str) -> str:
        match = re.search(r'name="csrf" value="([^"]+)"', self.as_user(name).get("/ui/whoami").text)
        assert match
        return match.group(1)

    def close(self) -> None:
        for client in self.clients.values():
            client.__exit__(None, None, None)


def _site(folder: Path) -> Site:
    app = create_app(f"sqlite:///{folder / 'keel.db'}", str(folder / "objects"))
    store = app.state.keel.store
    auth = AuthStore(store.db)
    for user, role in USERS:
        auth.create_user(user)
        auth.set_password(user, PASSWORD, "test")
        if role:
            auth.grant(user, "@registries", role, "test")
            auth.grant(user, "support-bot", "reader", "test")
    return Site(app, seed(store, who="alice"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    built = _site(tmp_path_factory.mktemp("ui-registry"))
    yield built
    built.close()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Site]:
    """A site of its own, for tests that change aliases and stages."""
    built = _site(tmp_path)
    yield built
    built.close()


def _pages(site: Site) -> dict[str, list[str]]:
    """Every registry page, with text it must show."""
    old, new = site.data.data_oids
    return {
        "/ui/prompts": [PROMPT, "2.0.0", "production", "plain"],
        f"/ui/prompts/{PROMPT}": ["1.0.0", "1.0.1", "2.0.0", "cite the source", "accuracy", "0.86", "Alias history"],
        f"/ui/prompts/{PROMPT}/versions/1.0.1": ["shorter answers", "eval-1.0.1", "train-ranker", "question"],
        f"/ui/prompts/{PROMPT}/diff?a=1.0.0&b=2.0.0": ["major", "max_tokens", "temperature", "source"],
        "/ui/models": [MODEL, "Production: 1", "champion → 1"],
        f"/ui/models/{MODEL}": ["s3://bucket/ranker-v2", "first release", "candidate", "best so far", "Staging"],
        f"/ui/models/{MODEL}/versions/1": [
            "cross-encoder",
            "license",
            "MIT",
            "train-ranker",
            "ndcg",
            f"prompt:{PROMPT}@1.0.1",
        ],  # fmt: skip
        "/ui/data": [DATA_PATH, old[:12], new[:12], "abc1234def"[:10], "data/config.json", "folder"],
        f"/ui/data/diff?path={DATA_PATH}&a={old[:16]}&b={new[:16]}": [
            "c.txt",
            "gone.txt",
            "b.txt",
            "1 added, 1 removed, 1 modified",
        ],  # fmt: skip
        "/ui/kb": [KB, "v2", "hashing-384"],
        f"/ui/kb/{KB}": ["v1", "v2", "first", "characters"],
        f"/ui/kb/{KB}/diff": ["shipping.md", "passwords.md", "refunds.md"],
        "/ui/conversations": ["conv-00", "conv-11", f"{PROMPT}@1.0.0", "gpt-4o-mini", "By prompt version"],
        "/ui/conversations/conv-03": ["question 3", "answer 3", "user_id"],
        "/ui/flags": [FLAG, "answer-tone", "25%", "multivariate"],
        f"/ui/flags/{FLAG}": ["ramp up", "enterprise first", "enterprise", "created"],
        "/ui/abtests": [EXPERIMENT, "running", "control 50%"],
        f"/ui/abtests/{EXPERIMENT}": ["converted", "Sample ratio check", "mSPRT (always valid)", "ship short"],
    }


def test_every_registry_page_shows_its_data(site: Site) -> None:
    rita = site.as_user("rita")
    for path, texts in _pages(site).items():
        page = rita.get(path)
        assert page.status_code == 200, (path, page.text[:2000])
        assert page.headers["content-type"].startswith("text/html")
        for text in texts:
            assert text in page.text, (path, text)
    nav = rita.get("/ui/prompts").text
    for label in ("Prompts", "Models", "Data", "Knowledge bases", "Conversations", "Flags", "A/B tests"):
        assert f">{label}</a>" in nav


def test_charts_are_drawn_on_the_ab_and_prompt_pages(site: Site) -> None:
    rita = site.as_user("rita")
    ab = rita.get(f"/ui/abtests/{EXPERIMENT}").text
    assert ab.count('class="chart-svg"') == 2  # converted (primary) and latency
    assert "control (n=200)" in ab and "short (n=200)" in ab
    assert 'id="scores-chart"' in rita.get(f"/ui/prompts/{PROMPT}").text


def test_unknown_names_are_404_pages(site: Site) -> None:
    rita = site.as_user("rita")
    for path in (
        "/ui/prompts/nope",
        f"/ui/prompts/{PROMPT}/versions/9.9.9",
        f"/ui/prompts/{PROMPT}/diff?a=1.0.0&b=7.0.0",
        "/ui/models/nope",
        f"/ui/models/{MODEL}/versions/99",
        "/ui/data?path=nope",
        f"/ui/data/diff?path={DATA_PATH}&a=0000&b=1111",
        "/ui/kb/nope",
        "/ui/kb/nope/diff",
        f"/ui/kb/{KB}/diff?a=v1&b=v9",
        "/ui/conversations/nope",
        "/ui/flags/nope",
        "/ui/abtests/nope",
    ):
        page = rita.get(path)
        assert page.status_code == 404, path
        assert page.headers["content-type"].startswith("text/html") and '<section class="error">' in page.text


def test_a_user_without_a_registry_role_is_refused(site: Site) -> None:
    nora = site.as_user("nora")
    for path in ("/ui/prompts", f"/ui/models/{MODEL}", "/ui/data", "/ui/kb", "/ui/conversations", "/ui/flags",
                 f"/ui/abtests/{EXPERIMENT}"):  # fmt: skip
        assert nora.get(path).status_code == 403, path


def test_readers_see_no_forms_and_are_refused_if_they_post(site: Site) -> None:
    rita = site.as_user("rita")
    prompt_page = rita.get(f"/ui/prompts/{PROMPT}").text
    assert "Roll back to" not in prompt_page and "Move alias" not in prompt_page
    model_page = rita.get(f"/ui/models/{MODEL}").text
    assert "Move alias" not in model_page and "Transition" not in model_page
    token = site.csrf("rita")
    prompts, models = site.app.state.keel.prompts, site.app.state.keel.models
    posts = [
        (f"/ui/prompts/{PROMPT}/aliases/production/rollback", {}),
        (f"/ui/prompts/{PROMPT}/aliases", {"alias": "production", "version": "2.0.0"}),
        (f"/ui/models/{MODEL}/alias", {"alias": "champion", "version": "2"}),
        (f"/ui/models/{MODEL}/stage", {"version": "2", "stage": "Production"}),
    ]
    for path, data in posts:
        response = rita.post(path, data={"csrf": token, **data}, follow_redirects=False)
        assert response.status_code == 403 and "writer role" in response.text, path
    assert prompts.resolve(PROMPT, "production") == "1.0.1"
    assert models.get(MODEL, alias="champion").version == 1 and models.get(MODEL, version=2).stage == "Staging"
    wendy = site.as_user("wendy")
    assert "Roll back to 1.0.0" in wendy.get(f"/ui/prompts/{PROMPT}").text
    assert "Transition" in wendy.get(f"/ui/models/{MODEL}").text


def test_forms_without_the_csrf_token_or_from_another_site_are_refused(site: Site) -> None:
    wendy = site.as_user("wendy")
    path = f"/ui/prompts/{PROMPT}/aliases/production/rollback"
    assert wendy.post(path, data={}, follow_redirects=False).status_code == 403
    assert wendy.post(path, data={"csrf": "0" * 64}, follow_redirects=False).status_code == 403
    foreign = wendy.post(path, data={"csrf": site.csrf("wendy")}, headers={"Origin": "https://evil.example"},
                         follow_redirects=False)  # fmt: skip
    assert foreign.status_code == 403
    stage = wendy.post(f"/ui/models/{MODEL}/stage", data={"version": "2", "stage": "Production"})
    assert stage.status_code == 403
    assert site.app.state.keel.prompts.resolve(PROMPT, "production") == "1.0.1"
    assert site.app.state.keel.models.get(MODEL, version=2).stage == "Staging"


def test_a_writer_rolls_back_and_moves_aliases(fresh: Site) -> None:
    wendy = fresh.as_user("wendy")
    token = fresh.csrf("wendy")
    prompts = fresh.app.state.keel.prompts
    done = wendy.post(f"/ui/prompts/{PROMPT}/aliases/production/rollback", data={"csrf": token, "reason": "bad tone"},
                      follow_redirects=False)  # fmt: skip
    assert done.status_code == 303 and done.headers["location"] == f"/ui/prompts/{PROMPT}"
    assert prompts.resolve(PROMPT, "production") == "1.0.0"
    last = prompts.history(PROMPT, "production")[-1]
    assert (last.old, last.new, last.who, last.reason) == ("1.0.1", "1.0.0", "wendy", "bad tone")
    page = wendy.get(f"/ui/prompts/{PROMPT}").text
    assert "bad tone" in page and "Roll back to 1.0.1" in page
    assert 'name="expected" value="1.0.0"' in page  # the rollback button moves only from what the page showed
    stale = wendy.post(f"/ui/prompts/{PROMPT}/aliases/production/rollback",
                       data={"csrf": token, "expected": "1.0.1"})  # fmt: skip
    assert stale.status_code == 409 and "points at 1.0.0, not 1.0.1" in stale.text
    assert prompts.resolve(PROMPT, "production") == "1.0.0"
    moved = wendy.post(f"/ui/prompts/{PROMPT}/aliases", data={"csrf": token, "alias": "canary", "version": "2.0.0"},
                       follow_redirects=False)  # fmt: skip
    assert moved.status_code == 303 and prompts.resolve(PROMPT, "canary") == "2.0.0"
    nothing_before = wendy.post(f"/ui/prompts/{PROMPT}/aliases/canary/rollback", data={"csrf": token})
    assert nothing_before.status_code == 409 and "no earlier target" in nothing_before.text
    bad = wendy.post(f"/ui/prompts/{PROMPT}/aliases", data={"csrf": token, "alias": "latest", "version": "1.0.0"})
    assert bad.status_code == 400

    models = fresh.app.state.keel.models
    alias = wendy.post(f"/ui/models/{MODEL}/alias", data={"csrf": token, "alias": "champion", "version": "2",
                                                          "reason": "better ndcg"}, follow_redirects=False)  # fmt: skip
    assert alias.status_code == 303 and models.get(MODEL, alias="champion").version == 2
    stage = wendy.post(f"/ui/models/{MODEL}/stage", data={"csrf": token, "version": "2", "stage": "production",
                                                          "archive_existing": "on", "reason": "promote"},
                       follow_redirects=False)  # fmt: skip
    assert stage.status_code == 303
    assert models.get(MODEL, version=2).stage == "Production" and models.get(MODEL, version=1).stage == "Archived"
    history = wendy.get(f"/ui/models/{MODEL}").text
    assert "promote" in history and "better ndcg" in history and "Archived" in history
    unknown = wendy.post(f"/ui/models/{MODEL}/stage", data={"csrf": token, "version": "2", "stage": "Gone"})
    assert unknown.status_code == 400


def test_user_content_is_escaped(site: Site) -> None:
    rita = site.as_user("rita")
    pages = [
        f"/ui/prompts/{PROMPT}",
        f"/ui/prompts/{PROMPT}/versions/2.0.0",
        f"/ui/prompts/{PROMPT}/diff?a=1.0.0&b=2.0.0",
        "/ui/prompts",
        f"/ui/models/{MODEL}",
        f"/ui/models/{MODEL}/versions/1",
        f"/ui/kb/{KB}",
        "/ui/kb",
        f"/ui/kb/{KB}/diff",
        "/ui/conversations",
        "/ui/conversations/conv-00",
        "/ui/flags",
        f"/ui/flags/{FLAG}",
        "/ui/abtests",
        f"/ui/abtests/{EXPERIMENT}",
        f"/ui/conversations?filter={XSS_SCRIPT}",
        f"/ui/conversations?model={XSS_ATTR}",
    ]
    for path in pages:
        page = rita.get(path)
        assert page.status_code in (200, 400), path
        assert XSS_SCRIPT not in page.text and XSS_ATTR not in page.text and "<img" not in page.text, path
        assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rita.get(f"/ui/prompts/{PROMPT}/versions/2.0.0").text
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in rita.get(f"/ui/prompts/{PROMPT}").text
    assert "&lt;script&gt;" in rita.get("/ui/conversations/conv-00").text


def test_the_prompt_diff_is_side_by_side(site: Site) -> None:
    page = site.as_user("rita").get(f"/ui/prompts/{PROMPT}/diff", params={"a": "1.0.1", "b": "2.0.0"}).text
    assert '<tr class="changed">' in page and "citing {{ source }}" in page
    assert "+source" in page  # the variable added
    assert "1.0.1 → 2.0.0" in page or "1.0.1</span> → <span" in page
    default = site.as_user("rita").get(f"/ui/prompts/{PROMPT}/diff").text
    assert "<option selected>1.0.1</option>" in default and "<option selected>2.0.0</option>" in default
    rows = side_by_side("a\nb\nc\n", "a\nB\nc\nd")
    assert [r.kind for r in rows] == ["equal", "changed", "equal", "added"]
    assert (rows[3].left_no, rows[3].right_no, rows[3].right) == (None, 4, "d")


def test_conversations_filter_by_feedback_prompt_version_and_model(site: Site) -> None:
    rita = site.as_user("rita")
    down = rita.get("/ui/conversations", params={"thumb": "down"}).text
    ids = set(re.findall(r">(conv-\d\d)</a>", down))
    assert ids == {"conv-00", "conv-04", "conv-08"}
    version = rita.get("/ui/conversations", params={"prompt_version": f"{PROMPT}@1.0.1", "model": "gpt-4o"}).text
    assert set(re.findall(r">(conv-\d\d)</a>", version)) == {"conv-03", "conv-09"}
    free = rita.get("/ui/conversations", params={"filter": "metadata.user_id = 'u5'"}).text
    assert set(re.findall(r">(conv-\d\d)</a>", free)) == {"conv-05"}
    bad = rita.get("/ui/conversations", params={"filter": "latency_ms >>> 3"})
    assert bad.status_code == 400 and 'role="alert"' in bad.text
    assert rita.get("/ui/conversations", params={"thumb": "sideways"}).status_code == 400
    quoted = rita.get("/ui/conversations", params={"model": "o'neil \\ model"})
    assert quoted.status_code == 200 and "conv-" not in quoted.text.split("Records")[1]
    assert combined_filter("a = 1", "up", "p@1", "it's") == (
        "(a = 1) and feedback.thumb = 'up' and prompt_version = 'p@1' and model = 'it''s'"
    )


def test_a_data_diff_without_tree_manifests_says_so(site: Site) -> None:
    from keel.services.data_versions import register_with

    store = site.app.state.keel.store
    register_with(
        store, [("data/remote-only", "a" * 64, "dir", 10, 2, ""), ("data/remote-only", "b" * 64, "dir", 12, 2, "")]
    )
    page = site.as_user("rita").get("/ui/data/diff", params={"path": "data/remote-only", "a": "a" * 8, "b": "b" * 8})
    assert page.status_code == 200 and "is not in this store" in page.text
    file_diff = site.as_user("rita").get("/ui/data/diff", params={"path": "data/config.json", "a": "", "b": ""})
    assert file_diff.status_code == 400


def test_run_pages_link_lineage_to_the_registry_pages(site: Site) -> None:
    run_id = site.data.runs["2.0.0"]
    page = site.as_user("rita").get(f"/ui/runs/{run_id}").text
    assert f'href="/ui/prompts/{PROMPT}/versions/2.0.0"' in page
    assert f'href="/ui/data?path=data%2Ffaq&amp;oid={site.data.data_oids[1]}"' in page
    assert "via production" not in page  # named the version
    via = site.as_user("rita").get(f"/ui/runs/{site.data.runs['1.0.1']}").text
    assert "via production" in via  # resolved the alias
    model_page = site.as_user("rita").get(f"/ui/models/{MODEL}/versions/1").text
    assert f'href="/ui/prompts/{PROMPT}/versions/1.0.1"' in model_page


def test_keel_ui_shows_the_workspace_flags_file_and_the_writer_forms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keel.server.ui import UISettings

    app = create_app(f"sqlite:///{tmp_path / 'keel.db'}", str(tmp_path / "objects"))
    app.state.keel_ui = UISettings(local=True)
    app.state.keel.flags.set("stored-flag", {"default": True}, reason="from the store")
    app.state.keel.prompts.register("greet", "Hi {{ name }}", changelog="first")
    (tmp_path / "flags.yaml").write_text("flags:\n  file-flag:\n    rollout: 10\n")
    monkeypatch.chdir(tmp_path)
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:
        page = client.get("/ui/flags").text
        assert "file-flag" in page and "stored-flag" in page
        assert "Move alias" in client.get("/ui/prompts/greet").text
    site_app = create_app(f"sqlite:///{tmp_path / 'keel.db'}", str(tmp_path / "objects"))
    auth = AuthStore(site_app.state.keel.store.db)
    auth.create_user("rita")
    auth.set_password("rita", PASSWORD, "test")
    auth.grant("rita", "@registries", "reader", "test")
    server = Site(site_app, Seeded())
    try:
        page = server.as_user("rita").get("/ui/flags").text
        assert "stored-flag" in page and "file-flag" not in page  # a server's folder is nobody's workspace
    finally:
        server.close()
