"""The registry pages in a real browser: Debian's Chromium, driven by Playwright, against a
real ``python -m keel.server`` process. Open every registry page from the navigation bar,
diff two prompt versions, roll an alias back with the button and see it moved, move a
model's stage, see the A/B chart drawn; no console errors anywhere.

Screenshots of the main pages are saved as test artifacts (see ``browser_harness``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from browser_harness import browser_tab, charts_drawn, require_chromium, save_screenshot, start_server

from keel.services.auth import AuthStore
from keel.services.workspace import open_store
from registry_seed import EXPERIMENT, KB, MODEL, PROMPT, XSS_SCRIPT, seed

PASSWORD = "a long registry passphrase"

require_chromium()

pytest.importorskip("playwright.sync_api")


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    shots: Path
    errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("ui-browser-registry")
    store_url = f"sqlite:///{folder / 'keel.db'}"
    store = open_store(store_url, str(folder / "objects"), cached=False)
    try:
        auth = AuthStore(store.db)
        auth.create_user("alice", is_admin=True)
        auth.set_password("alice", PASSWORD, "test")
        seed(store, who="alice")
    finally:
        store.close()
    url, process = start_server(store_url, folder)
    shots = folder / "screenshots"
    shots.mkdir()
    yield LiveServer(url, process, shots)
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def page(live: LiveServer) -> Iterator[Any]:
    with browser_tab(live.errors) as tab:
        yield tab


def _shot(live: LiveServer, page: Any, name: str) -> None:
    save_screenshot(live.shots, page, name)


def _charts_drawn(page: Any) -> int:
    return charts_drawn(page, "rect, path")


def _alias_target(page: Any, alias: str) -> str:
    return str(page.inner_text(f"table.aliases tr[data-alias='{alias}'] td:nth-child(2)")).strip()


def test_browse_the_registries_diff_and_roll_back(live: LiveServer, page: Any) -> None:
    page.goto(f"{live.url}/ui/login")
    page.fill("input[name=user]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live.url}/ui/")

    # Every registry page from the navigation bar.
    for label, path, marker in (("Prompts", "/prompts", PROMPT), ("Models", "/models", MODEL),
                                ("Data", "/data", "data/faq"), ("Knowledge bases", "/kb", KB),
                                ("Conversations", "/conversations", "conv-00"), ("Flags", "/flags", "new-retriever"),
                                ("A/B tests", "/abtests", EXPERIMENT)):  # fmt: skip
        page.click(f"header nav a[href='/ui{path}']")
        page.wait_for_url(f"**/ui{path}")
        assert marker in page.inner_text("main"), label
        assert page.locator("header nav a.active").inner_text() == label, label

    # A prompt: its versions, a diff of two of them.
    page.click("header nav >> text=Prompts")
    page.click(f"table.prompts >> text={PROMPT}")
    page.wait_for_url(f"**/ui/prompts/{PROMPT}")
    assert XSS_SCRIPT in page.inner_text("pre.template")  # shown as text, never run
    assert _charts_drawn(page) == 1  # accuracy by version
    page.check("input[name=a][value='1.0.0']")
    page.check("input[name=b][value='2.0.0']")
    page.click("button.diff-button")
    page.wait_for_url("**/diff?**")
    assert "a=1.0.0" in page.url and "b=2.0.0" in page.url
    assert page.locator("table.side-by-side tr.changed").count() >= 1
    assert "major" in page.inner_text("main")
    _shot(live, page, "prompt-diff")
    page.select_option("select[name=a]", "1.0.1")  # auto-submits
    page.wait_for_url("**/diff?a=1.0.1&b=2.0.0")

    # Roll production back with the button, and see it moved.
    page.goto(f"{live.url}/ui/prompts/{PROMPT}")
    assert _alias_target(page, "production") == "1.0.1"
    page.click("table.aliases tr[data-alias='production'] button:has-text('Roll back to 1.0.0')")
    page.wait_for_load_state()
    assert _alias_target(page, "production") == "1.0.0"
    assert "rollback from the web UI" in page.inner_text("table.history")
    assert page.locator("table.aliases tr[data-alias='production'] button").inner_text() == "Roll back to 1.0.1"

    # A model: move version 2 to Production, archiving version 1.
    page.goto(f"{live.url}/ui/models/{MODEL}")
    page.select_option("form.transition select[name=version]", "2")
    page.select_option("form.transition select[name=stage]", "Production")
    page.check("form.transition input[name=archive_existing]")
    page.fill("form.transition input[name=reason]", "ndcg +0.03")
    page.click("form.transition button[type=submit]")
    page.wait_for_load_state()
    assert page.inner_text("table.versions tr[data-version='2'] td.stage") == "Production"
    assert page.inner_text("table.versions tr[data-version='1'] td.stage") == "Archived"
    assert "ndcg +0.03" in page.inner_text("table.history")
    _shot(live, page, "models")
    page.click("table.versions tr[data-version='1'] td >> text=1")
    page.wait_for_url(f"**/ui/models/{MODEL}/versions/1")
    assert "cross-encoder" in page.inner_text("dl.card")

    # The A/B test: the per-variant chart with intervals is drawn.
    page.goto(f"{live.url}/ui/abtests/{EXPERIMENT}")
    assert _charts_drawn(page) == 2
    assert page.locator("#ab-charts svg rect:has(title)").count() == 4  # two variants, two metrics
    assert "ship short" in page.inner_text(".verdict")
    _shot(live, page, "abtest")

    # Data and KB diffs, conversations filtered by feedback.
    page.goto(f"{live.url}/ui/data")
    page.click("form button:has-text('Diff A → B')")
    page.wait_for_url("**/ui/data/diff?**")
    assert "gone.txt" in page.inner_text("table.files-removed") and "c.txt" in page.inner_text("table.files-added")
    page.goto(f"{live.url}/ui/kb/{KB}")
    page.click("form button:has-text('Diff A → B')")
    page.wait_for_url(f"**/ui/kb/{KB}/diff?**")
    assert "shipping.md" in page.inner_text("table.docs-added")
    page.goto(f"{live.url}/ui/conversations")
    page.select_option("select[name=thumb]", "down")
    page.click("form.conversation-filter button[type=submit]")
    page.wait_for_url("**thumb=down**")
    assert page.locator("table.conversations tbody tr").count() == 3
    page.click("table.conversations >> text=conv-00")
    page.wait_for_url("**/ui/conversations/conv-00")
    assert XSS_SCRIPT in page.inner_text("table.messages")
    assert live.errors == []
