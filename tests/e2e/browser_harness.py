"""What the browser tests share: Debian's Chromium under Playwright, a live server, screenshots.

Screenshots are test artifacts: every run saves them in ``.test-artifacts/screenshots/``
(git-ignored). ``KEEL_UPDATE_SCREENSHOTS=1`` also refreshes the README's copies in
``docs/screenshots/``, so an ordinary test run leaves the checkout clean.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from servers import free_port, in_ci

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]  # fmt: skip
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".test-artifacts" / "screenshots"
SCREENSHOTS = ROOT / "docs" / "screenshots"


def require_chromium() -> None:
    """Skip the calling test module without Chromium (fail in CI, where ``make test`` installs it)."""
    if os.path.exists(CHROMIUM):
        return
    if in_ci():  # pragma: no cover
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium", pytrace=False)
    pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium", allow_module_level=True)


def start_server(store_url: str, folder: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """``python -m keel.server`` on a free port of 127.0.0.1, once it answers; its URL and process."""
    port = free_port()
    log = folder / "server.log"
    command = [sys.executable, "-m", "keel.server", "--store", store_url, "--port", str(port), "--log-level", "warning"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the server did not start: {log.read_text()}")
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                return url, process
        except httpx.TransportError:
            time.sleep(0.05)


@contextmanager
def browser_tab(errors: list[str], height: int = 900) -> Iterator[Any]:
    """A headless Chromium tab whose console errors, page errors and dialogs (an ``alert()``
    would be XSS) are appended to ``errors``."""
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": height})
        tab = context.new_page()
        tab.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
        tab.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        tab.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}"))
        tab.set_default_timeout(10_000)
        try:
            yield tab
        finally:
            browser.close()


def save_screenshot(shots: Path, page: Any, name: str) -> None:
    """Screenshot ``page`` as ``NAME.png`` into ``shots`` and the artifacts (see the module doc)."""
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    targets = [ARTIFACTS, SCREENSHOTS] if os.environ.get("KEEL_UPDATE_SCREENSHOTS") else [ARTIFACTS]
    for folder in targets:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / path.name)


def charts_drawn(page: Any, shapes: str = "path") -> int:
    """How many SVG charts have at least one drawn ``shapes`` element of non-zero size."""
    return int(
        page.evaluate(
            """(shapes) => [...document.querySelectorAll('svg.chart-svg')].filter(svg =>
                [...svg.querySelectorAll(shapes)].some(p => {
                    const box = p.getBBox();
                    return box.width > 0 && box.height > 0;
                })
            ).length""",
            shapes,
        )
    )
