"""The traces pages in a real browser: Debian's Chromium, driven by Playwright, against a real
``python -m keel.server`` process. Open the traces table from the navigation bar, filter it,
open a trace, see its waterfall drawn, pick a span and load its large output on click; a
trace full of XSS payloads opens without a dialog; no console errors anywhere.

The trace page's screenshot is a test artifact; with ``KEEL_UPDATE_SCREENSHOTS=1`` it also
refreshes ``docs/img/trace-page.png`` (the README's "the trace page").
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from browser_harness import ARTIFACTS, ROOT, browser_tab, require_chromium, start_server

from keel.services.auth import AuthStore
from keel.services.workspace import open_store
from trace_seed import CONVERSATION, PROJECT, seed_traces

PASSWORD = "a long traces passphrase"
DOCS_IMAGE = ROOT / "docs" / "img" / "trace-page.png"

require_chromium()

pytest.importorskip("playwright.sync_api")


def _bars_drawn(page: Any) -> int:
    """How many waterfall bars have a non-zero drawn size."""
    return int(
        page.evaluate(
            """() => [...document.querySelectorAll('table.waterfall rect.bar')].filter(r => {
                const box = r.getBoundingClientRect();
                return box.width > 0 && box.height > 0;
            }).length"""
        )
    )


def _screenshot(page: Any) -> None:
    """The trace page as a test artifact, and as the docs' image with ``KEEL_UPDATE_SCREENSHOTS=1``
    (``browser_harness.save_screenshot`` keeps the README's other pictures in ``docs/screenshots``)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / DOCS_IMAGE.name), full_page=False)
    if os.environ.get("KEEL_UPDATE_SCREENSHOTS"):
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ARTIFACTS / DOCS_IMAGE.name, DOCS_IMAGE)


def test_filter_open_a_trace_and_load_a_large_output(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'keel.db'}"
    store = open_store(store_url, str(tmp_path / "objects"), cached=False)
    try:
        auth = AuthStore(store.db)
        auth.create_user("alice", is_admin=True)
        auth.set_password("alice", PASSWORD, "test")
        data = seed_traces(store, who="alice")
    finally:
        store.close()
    url, process = start_server(store_url, tmp_path)
    errors: list[str] = []
    try:
        with browser_tab(errors, height=820) as page:
            page.goto(f"{url}/ui/login")
            page.fill("input[name=user]", "alice")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{url}/ui/")

            page.click("header nav a[href='/ui/traces']")
            page.wait_for_url("**/ui/traces")
            page.click(f"a[href='/ui/projects/{PROJECT}/traces']")
            page.wait_for_url(f"**/ui/projects/{PROJECT}/traces")
            assert page.locator("table.traces tbody tr").count() == 33
            page.fill("input[name=filter]", f"conversation_id = '{CONVERSATION}' and status = 'ok'")
            page.click("form.bar button[type=submit]")
            page.wait_for_url("**filter=conversation_id*")
            assert page.locator("table.traces tbody tr").count() == 1
            page.click(f"table.traces a[href$='/traces/{data.agent}']")
            page.wait_for_url(f"**/traces/{data.agent}")

            rows = page.locator("table.waterfall tbody tr")
            assert rows.count() == 7 and _bars_drawn(page) == 7
            shown = page.locator("section.span-detail:visible")
            assert shown.count() == 1 and "support-agent" in shown.inner_text()  # the root, by default
            page.click(f"tr[data-span='{data.big_span}'] td.span-name")
            assert page.url.endswith(f"#span-{data.big_span}")
            detail = page.locator(f"section#span-{data.big_span}")
            assert page.locator("section.span-detail:visible").count() == 1 and detail.is_visible()
            assert "812 in, 164 out" in detail.inner_text()
            detail.locator("a[data-load]:has-text('Load outputs')").click()
            output = detail.locator("pre.payload.outputs")
            output.wait_for(state="visible")
            assert "The full answer. The full answer." in output.inner_text()
            assert detail.locator("a[data-load]").count() == 0
            page.evaluate("window.scrollTo(0, 0)")
            _screenshot(page)

            page.goto(f"{url}/ui/projects/{PROJECT}/traces/{data.hostile}")
            page.click("table.waterfall tbody tr >> nth=1")
            assert "<script>alert('trace')</script>" in page.locator("section.span-detail:visible").inner_text()
        assert errors == []
    finally:
        process.terminate()
        process.wait(10)
