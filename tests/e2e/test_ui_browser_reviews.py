"""The review page in a real browser (Debian's Chromium, Playwright) against a real
``python -m keel.server``: a protected ``production`` alias, a change request with two
evidence runs; the page shows the prompt text side by side and the runs' comparison; the
requester cannot approve their own; another reviewer approves in the form and the alias
moves; no console errors anywhere."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from browser_harness import browser_tab, require_chromium, save_screenshot, start_server

from keel.services.auth import AuthStore
from keel.services.prompts import PromptService
from keel.services.reviews import ReviewService
from keel.services.workspace import open_store
from registry_seed import PROMPT, seed

PASSWORD = "a long reviews passphrase"

require_chromium()

pytest.importorskip("playwright.sync_api")


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    shots: Path
    request_id: int
    errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("ui-browser-reviews")
    store_url = f"sqlite:///{folder / 'keel.db'}"
    store = open_store(store_url, str(folder / "objects"), cached=False)
    try:
        auth = AuthStore(store.db)
        for user in ("alice", "bob"):
            auth.create_user(user, is_admin=True)
            auth.set_password(user, PASSWORD, "test")
        seeded = seed(store, who="alice")
        reviews = ReviewService(store)
        reviews.protect("prompt", PROMPT, "production", approvals=1, who="alice")
        versions = sorted(seeded.runs)
        cr = reviews.request(
            "prompt",
            PROMPT,
            "production",
            versions[2],
            reason="cite the source: +8% accuracy",
            runs=[seeded.runs[versions[1]], seeded.runs[versions[2]]],
            comparison={"accuracy": "+0.08"},
            who="alice",
        )
    finally:
        store.close()
    url, process = start_server(store_url, folder)
    shots = folder / "screenshots"
    shots.mkdir()
    yield LiveServer(url, process, shots, cr.id)
    process.terminate()
    process.wait(10)


def _sign_in(page: Any, live: LiveServer, user: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{live.url}/ui/login")
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live.url}/ui/")


def test_review_page_shows_the_diff_and_evidence_and_approves(live: LiveServer) -> None:
    with browser_tab(live.errors) as page:
        _sign_in(page, live, "alice")
        page.click("header nav a[href='/ui/reviews']")
        page.wait_for_url("**/ui/reviews")
        assert "cite the source" in page.inner_text("table.reviews")
        assert "production" in page.inner_text("table.rules")
        page.click(f"table.reviews a[href='/ui/reviews/{live.request_id}']")
        page.wait_for_url(f"**/ui/reviews/{live.request_id}")

        assert "1.0.1 → 2.0.0" in page.inner_text("dl.request .move")
        assert page.locator("table.review-diff tr.changed, table.review-diff tr.added").count() >= 1
        assert "citing" in page.inner_text("table.review-diff")
        evidence = page.inner_text("table.evidence")
        assert "accuracy" in evidence and "eval-1.0.1" in evidence and "eval-2.0.0" in evidence
        assert "+0.08" in page.inner_text("pre.attached")
        save_screenshot(live.shots, page, "review")

        # The requester's own approval is refused (self-approval is off), and nothing moves.
        page.fill("form.review-form input[name=comment]", "mine")
        page.click("form.review-form button:has-text('Approve')")
        page.wait_for_load_state()
        assert "self-approval is off" in page.inner_text("main")

        _sign_in(page, live, "bob")
        page.goto(f"{live.url}/ui/reviews/{live.request_id}")
        page.fill("form.review-form input[name=comment]", "numbers check out")
        page.click("form.review-form button:has-text('Approve')")
        page.wait_for_url(f"**/ui/reviews/{live.request_id}")
        assert "applied" in page.inner_text("h1")
        assert "bob approved" in page.inner_text("ul.reviews-list") and "numbers check out" in page.inner_text("main")
        assert "applied" in page.inner_text("table.steps")
        assert page.locator("form.review-form").count() == 0

        page.goto(f"{live.url}/ui/prompts/{PROMPT}")
        assert "change request" in page.inner_text("table.history")
    store = open_store(
        f"sqlite:///{Path(live.shots).parent / 'keel.db'}", str(Path(live.shots).parent / "objects"), cached=False
    )
    try:
        assert PromptService(store).get(PROMPT, "production").version == "2.0.0"
    finally:
        store.close()
    # The one refused approval answered 403 (the browser logs that); nothing else went wrong.
    assert [e for e in live.errors if "status of 403" not in e] == []
    assert len(live.errors) == 1
