"""The web UI in a real browser: Debian's Chromium, driven by Playwright, against a real
``python -m keel.server`` process. Sign in, open every page of the runs area, see charts
drawn, compare two runs picked in the table, sign out; no console errors anywhere.

Screenshots of the main pages are saved as test artifacts (see ``browser_harness``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_harness import browser_tab, charts_drawn, require_chromium, save_screenshot, start_server

from keel.core.batch import WriteBatch
from keel.core.entities import now_ms
from keel.core.table import Table
from keel.services.auth import AuthStore
from keel.services.tracking import TrackingService
from keel.services.workspace import init_workspace, open_store
from servers import free_port

PASSWORD = "a long browser passphrase"

require_chromium()

pytest.importorskip("playwright.sync_api")


def _seed(tracking: TrackingService) -> dict[str, str]:
    """Three evaluation runs of one project, with histories, samples, artifacts and lineage."""
    ids = {}
    variants = [("gpt-small", 0.71, 0.0004, 3), ("gpt-large", 0.86, 0.0060, 2), ("gpt-medium", 0.80, 0.0015, 1)]
    for model, accuracy, cost, seed in variants:
        record = tracking.start_run("support-bot", f"eval-{model}", tags={"team": "search", "dataset": "faq-v2"})
        run_id = record.run_id
        rows = [
            {"sample_id": f"q{i:02d}", "question": f"How do I reset my password? (variant {i})",
             "answer": f"Open Settings, then Security ({model})", "score.accuracy": float(i < accuracy * 50),
             "cost": cost}
            for i in range(50)
        ]  # fmt: skip
        table = Table.build(rows=rows).to_bytes()
        notes = f"model: {model}\nprompt: support-answer@1.3.0\n".encode()
        artifacts = [
            (run_id, "tables/samples.json", tracking.store_bytes(table), len(table), "table", now_ms()),
            (run_id, "notes.txt", tracking.store_bytes(notes), len(notes), "file", now_ms()),
        ]
        loss = [(run_id, "loss", 2.5 * 0.93**step + 0.05 * seed + 0.02 * (step % 7) / 7, step, now_ms())
                for step in range(120)]  # fmt: skip
        tracking.write_batch(
            WriteBatch(
                params=[
                    (run_id, "model", "str", model, False),
                    (run_id, "temperature", "float", "0.2", False),
                    (run_id, "top_k", "int", str(seed * 2), False),
                ],  # fmt: skip
                metrics=[
                    *loss,
                    (run_id, "accuracy", accuracy, 0, now_ms()),
                    (run_id, "cost_per_query", cost, 0, now_ms()),
                ],  # fmt: skip
                artifacts=artifacts,
                lineage=[
                    (run_id, "input", "prompt", "support-answer", "1.3.0", "prompt", now_ms()),
                    (run_id, "input", "dataset", "9f2c41d07e", "", "eval set", now_ms()),
                ],
                run_ends=[(run_id, "finished", now_ms() + 42_000, None)],
            )
        )
        ids[model] = run_id
    return ids


@dataclass
class LiveServer:
    url: str
    runs: dict[str, str]
    process: subprocess.Popen[bytes]
    shots: Path
    errors: list[str] = field(default_factory=list)
    experiment_id: int = 0  # the MLflow experiment id of support-bot: its project id


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("ui-browser")
    store_url = f"sqlite:///{folder / 'keel.db'}"
    store = open_store(store_url, str(folder / "objects"), cached=False)
    try:
        auth = AuthStore(store.db)
        auth.create_user("alice", is_admin=True)
        auth.set_password("alice", PASSWORD, "test")
        tracking = TrackingService(store)
        runs = _seed(tracking)
        experiment_id = next(p.id for p, _ in tracking.list_projects() if p.name == "support-bot")
    finally:
        store.close()
    url, process = start_server(store_url, folder)
    shots = folder / "screenshots"
    shots.mkdir()
    yield LiveServer(url, runs, process, shots, experiment_id=experiment_id)
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def page(live: LiveServer) -> Iterator[Any]:
    with browser_tab(live.errors, height=860) as tab:
        yield tab


def _shot(live: LiveServer, page: Any, name: str) -> None:
    save_screenshot(live.shots, page, name)


def test_sign_in_browse_runs_and_compare(live: LiveServer, page: Any) -> None:
    page.goto(f"{live.url}/")
    assert page.url.startswith(f"{live.url}/ui/login")
    _shot(live, page, "login")
    page.fill("input[name=user]", "alice")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert "wrong user name or password" in page.inner_text("[role=alert]")
    # The refused sign-in answers 401, which Chromium reports on the console; nothing else may.
    assert [e for e in live.errors if "401" not in e] == []
    live.errors.clear()
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live.url}/ui/")
    assert "support-bot" in page.inner_text("main")
    _shot(live, page, "projects")

    page.click("text=support-bot")
    page.wait_for_url("**/ui/projects/support-bot/runs")
    assert page.locator("table.runs tbody tr").count() == 3
    page.fill("input[name=filter]", "metrics.accuracy > 0.75")
    page.click("form.bar button[type=submit]")
    page.wait_for_url("**filter=metrics.accuracy*")
    assert page.locator("table.runs tbody tr").count() == 2
    page.click("text=clear")
    page.click("th a[title='sort by metrics.accuracy']")
    page.wait_for_url("**sort=metrics.accuracy*")
    first = page.locator("table.runs tbody tr").first.inner_text()
    assert "eval-gpt-large" in first  # sorted by accuracy, highest first
    button = page.locator("button[data-compare-button]")
    assert button.is_disabled()
    page.check(f"input[name=run][value='{live.runs['gpt-small']}']")
    page.check(f"input[name=run][value='{live.runs['gpt-large']}']")
    assert button.is_enabled() and button.inner_text() == "Compare 2 runs"
    _shot(live, page, "runs")
    button.click()
    page.wait_for_url("**/ui/compare?**")
    assert page.locator("#pareto svg circle:has(title)").count() == 2  # one point per run
    assert charts_drawn(page) >= 2  # Pareto (front path), accuracy bars (interval paths), loss histories
    assert "baseline" in page.inner_text("table.compare")
    _shot(live, page, "compare")

    page.goto(f"{live.url}/ui/runs/{live.runs['gpt-medium']}")
    assert charts_drawn(page) >= 1  # the loss curve
    assert "prompt:support-answer@1.3.0" in page.inner_text("main")
    _shot(live, page, "run")
    page.fill("input[name=q]", "variant 4")
    page.click("form.bar button[type=submit]")
    page.wait_for_url("**/tables/samples?q=*")
    assert page.locator("table.grid tbody tr").count() == 11  # variant 4, 40..49
    _shot(live, page, "samples")
    page.goto(f"{live.url}/ui/runs/{live.runs['gpt-medium']}/artifacts/notes.txt")
    assert "support-answer@1.3.0" in page.inner_text("pre")

    page.click("text=Sign out")
    page.wait_for_url("**/ui/login")
    page.goto(f"{live.url}/ui/projects")
    assert "/ui/login" in page.url
    assert live.errors == []


def test_mlflow_view_run_link_lands_on_the_run_through_sign_in(live: LiveServer, page: Any) -> None:
    """The MLflow client prints "View run NAME at: <server>/#/experiments/E/runs/R"; the fragment
    never reaches the server, so keel.js maps it, and signing in first keeps it."""
    page.context.clear_cookies()
    run_id = live.runs["gpt-large"]
    page.goto(f"{live.url}/#/experiments/{live.experiment_id}/runs/{run_id}")
    assert page.url == f"{live.url}/ui/login?next=%2Fui%2F"  # the fragment is consumed
    assert page.input_value("input[name=next]") == f"/ui/runs/{run_id}"
    page.fill("input[name=user]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live.url}/ui/runs/{run_id}")
    assert "eval-gpt-large" in page.inner_text("main")
    page.goto(f"{live.url}/#/experiments/{live.experiment_id}")  # "View experiment at: ...", signed in
    page.wait_for_url(f"{live.url}/ui/projects/support-bot/runs")
    assert page.locator("table.runs tbody tr").count() == 3
    page.context.clear_cookies()
    assert live.errors == []


def test_keel_ui_serves_the_workspace_without_sign_in(tmp_path: Path, page: Any) -> None:
    root = init_workspace(tmp_path / "project")
    store = open_store(start=root, cached=False)
    try:
        run_id = TrackingService(store).start_run("notebook", "local-experiment").run_id
    finally:
        store.close()
    port = free_port()
    keel = Path(sys.executable).with_name("keel")
    command = [str(keel), "ui", "--port", str(port), "--no-browser"]
    env = {**os.environ, "KEEL_URI": ""}  # the nearest .keel/, not an inherited store
    log = tmp_path / "keel-ui.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=root, env=env, start_new_session=True, stdout=out, stderr=out)
    try:
        url = f"http://127.0.0.1:{port}/ui/"
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        assert httpx.get(url, headers={"host": f"attacker.example:{port}"}).status_code == 403
        page.goto(f"{url}projects/notebook/runs")
        assert "local-experiment" in page.inner_text("table.runs")
        assert page.locator("text=Sign out").count() == 0
        page.click("text=local-experiment")
        page.wait_for_url(f"**/ui/runs/{run_id}")
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the CLI and the server it started
        process.wait(10)
