"""The web UI's pages through the ASGI app: what each role sees and may do, escaping of
user content, the runs table (sort, filter, columns, pages), the run page (charts,
artifact previews, samples, lineage), the compare page, and ``keel ui``'s local mode."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from keel.core.batch import WriteBatch
from keel.core.entities import new_run_id, now_ms
from keel.core.table import Table
from keel.server import create_app
from keel.server.ui import UISettings
from keel.services.auth import AuthStore
from keel.services.tracking import TrackingService

PASSWORD = "correct horse battery"
XSS = "<script>alert('xss')</script>"
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89\x00"
    b"\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82"
)


@dataclass
class Site:
    app: FastAPI
    runs: dict[str, str]  # name -> run id
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


def _log_eval_run(tracking: TrackingService, name: str, accuracy: float, cost: float, shift: int) -> str:
    record = tracking.start_run("demo", name, tags={"note": XSS, "team": "search"})
    run_id = record.run_id
    samples = Table.build(
        rows=[
            {"sample_id": str(i), "question": f"question {i}" if i else XSS, "answer": f"answer {i}",
             "score.accuracy": float(i < int(accuracy * 40) + shift), "score.cost": cost}
            for i in range(40)
        ]
    )  # fmt: skip
    files = {
        "tables/samples.json": (samples.to_bytes(), "table"),
        "notes/readme.txt": (f"hello {XSS}".encode(), "file"),
        "config.json": (b'{"model": "m", "temperature": 0.2}', "file"),
        "plot.png": (PNG, "file"),
        "page.html": (f"<html>{XSS}</html>".encode(), "file"),
        "data.csv": (b"a,b\n1,<b>x</b>\n2,y\n", "file"),
    }
    artifacts = [
        (run_id, path, tracking.store_bytes(data), len(data), kind, now_ms()) for path, (data, kind) in files.items()
    ]
    tracking.write_batch(
        WriteBatch(
            params=[(run_id, "model", "str", f"model-{shift}", False), (run_id, "prompt", "str", XSS, False)],
            metrics=[(run_id, "loss", 2.0 / (step + 1 + shift), step, now_ms()) for step in range(60)]
            + [(run_id, "accuracy", accuracy, 0, now_ms()), (run_id, "cost_per_query", cost, 0, now_ms())],
            artifacts=artifacts,
            lineage=[
                (run_id, "input", "prompt", "qa", "1.2.0", "prompt", now_ms()),
                (run_id, "input", "dataset", "abc123", "", "eval set", now_ms()),
                (run_id, "output", "model", "assistant", "3", "", now_ms()),
            ],
            run_ends=[(run_id, "finished", now_ms() + 1000, None)],
        )
    )
    return run_id


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("ui")
    app = create_app(f"sqlite:///{folder / 'keel.db'}", str(folder / "objects"))
    auth = AuthStore(app.state.keel.store.db)
    for user, project, role in (("wendy", "demo", "writer"), ("rita", "demo", "reader"), ("nora", None, None)):
        auth.create_user(user)
        auth.set_password(user, PASSWORD, "test")
        if project and role:
            auth.grant(user, project, role, "test")
    tracking = app.state.keel.tracking
    runs = {
        "base": _log_eval_run(tracking, "base", 0.70, 0.002, 0),
        "better": _log_eval_run(tracking, "better", 0.85, 0.010, 1),
        "pricey": _log_eval_run(tracking, "pricey", 0.80, 0.050, 2),
    }
    runs["secret"] = tracking.start_run("hidden", "secret-run").run_id
    built = Site(app, runs)
    yield built
    for client in built.clients.values():
        client.__exit__(None, None, None)


def test_projects_list_only_what_the_user_may_read(site: Site) -> None:
    page = site.as_user("rita").get("/ui/projects")
    assert page.status_code == 200
    assert "/ui/projects/demo/runs" in page.text and "/ui/projects/hidden/" not in page.text
    assert "/ui/projects/demo/runs" not in site.as_user("nora").get("/ui/").text


def test_no_role_is_404_everywhere(site: Site) -> None:
    nora = site.as_user("nora")
    secret = site.runs["secret"]
    for path in (
        "/ui/projects/demo/runs",
        f"/ui/runs/{site.runs['base']}",
        f"/ui/runs/{site.runs['base']}/artifacts/config.json",
        f"/ui/runs/{site.runs['base']}/raw/config.json",
        f"/ui/runs/{site.runs['base']}/tables/samples",
        f"/ui/compare?run={site.runs['base']}&run={site.runs['better']}",
    ):
        response = nora.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("text/html")
    rita = site.as_user("rita")
    assert rita.get(f"/ui/runs/{secret}").status_code == 404
    assert rita.get(f"/ui/compare?run={site.runs['base']}&run={secret}").status_code == 404


def test_a_reader_cannot_post_and_sees_no_write_buttons(site: Site) -> None:
    run_id = site.runs["pricey"]
    rita = site.as_user("rita")
    assert "Delete run" not in rita.get(f"/ui/runs/{run_id}").text
    response = rita.post(f"/ui/runs/{run_id}/delete", data={"csrf": site.csrf("rita")}, follow_redirects=False)
    assert response.status_code == 403 and "writer role" in response.text
    assert not site.app.state.keel.tracking.get_run(run_id).deleted
    wendy = site.as_user("wendy")
    assert "Delete run" in wendy.get(f"/ui/runs/{run_id}").text
    token = site.csrf("wendy")
    assert wendy.post(f"/ui/runs/{run_id}/delete", data={"csrf": token}, follow_redirects=False).status_code == 303
    assert "Restore run" in wendy.get(f"/ui/runs/{run_id}").text
    assert wendy.post(f"/ui/runs/{run_id}/restore", data={"csrf": token}, follow_redirects=False).status_code == 303
    assert not site.app.state.keel.tracking.get_run(run_id).deleted


def test_user_content_is_escaped_on_every_page(site: Site) -> None:
    rita = site.as_user("rita")
    run_id = site.runs["base"]
    pages = [
        "/ui/projects/demo/runs?col=params.prompt&col=tags.note",
        f"/ui/runs/{run_id}",
        f"/ui/runs/{run_id}/tables/samples",
        f"/ui/runs/{run_id}/artifacts/notes/readme.txt",
        f"/ui/runs/{run_id}/artifacts/page.html",
        f"/ui/runs/{run_id}/artifacts/tables/samples.json",
        f"/ui/runs/{run_id}/artifacts/data.csv",
        f"/ui/compare?run={run_id}&run={site.runs['better']}",
        f"/ui/projects/demo/runs?filter={XSS}",
    ]
    for path in pages:
        page = rita.get(path)
        assert page.status_code in (200, 400), path
        assert "<script>alert" not in page.text and "<b>x</b>" not in page.text, path
        assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "&lt;script&gt;alert(" in rita.get(f"/ui/runs/{run_id}").text


def test_downloads_never_render_as_this_site(site: Site) -> None:
    rita = site.as_user("rita")
    run_id = site.runs["base"]
    html = rita.get(f"/ui/runs/{run_id}/raw/page.html")
    assert html.status_code == 200 and html.content.startswith(b"<html>")
    assert html.headers["content-type"] == "application/octet-stream"
    assert html.headers["content-disposition"].startswith("attachment")
    assert html.headers["content-security-policy"].startswith("sandbox")
    image = rita.get(f"/ui/runs/{run_id}/raw/plot.png")
    assert image.headers["content-type"] == "image/png" and image.content == PNG
    assert image.headers["content-disposition"].startswith("inline")
    assert rita.get(f"/ui/runs/{run_id}/raw/..%2F..%2Fetc/passwd").status_code in (400, 404)


def test_runs_table_sorts_filters_and_chooses_columns(site: Site) -> None:
    rita = site.as_user("rita")
    page = rita.get("/ui/projects/demo/runs", params={"sort": "metrics.accuracy", "desc": "1"})
    assert page.status_code == 200
    names = re.findall(r'<a href="/ui/runs/[0-9a-f]{32}">([^<]+)</a>', page.text)
    assert names == ["better", "pricey", "base"]
    page = rita.get("/ui/projects/demo/runs", params={"sort": "metrics.cost_per_query", "desc": "0"})
    assert re.findall(r'<a href="/ui/runs/[0-9a-f]{32}">([^<]+)</a>', page.text) == ["base", "better", "pricey"]
    page = rita.get("/ui/projects/demo/runs", params={"filter": "metrics.accuracy > 0.75 and params.model != 'x'"})
    assert re.findall(r'<a href="/ui/runs/[0-9a-f]{32}">([^<]+)</a>', page.text) == ["pricey", "better"]
    page = rita.get("/ui/projects/demo/runs", params={"col": ["params.model", "tags.team"]})
    headers = re.findall(r'title="sort by ([^"]+)"', page.text)
    assert headers == ["Run", "Status", "Started (UTC)", "params.model", "tags.team"]
    assert "model-1" in page.text and "cost_per_query" in page.text  # offered in the column chooser
    page = rita.get("/ui/projects/demo/runs", params={"size": "25", "sort": "name", "desc": "0"})
    assert "next page" not in page.text and page.text.count('name="run"') == 3


def test_a_bad_or_hostile_filter_is_a_400_page_and_changes_nothing(site: Site) -> None:
    rita = site.as_user("rita")
    for text in ("metrics.accuracy >", "params.model = 'x'; DROP TABLE runs; --", "1=1 or name = 'a'"):
        page = rita.get("/ui/projects/demo/runs", params={"filter": text})
        assert page.status_code == 400, text
        assert 'role="alert"' in page.text
    assert len(site.app.state.keel.tracking.search_runs("demo")[0]) == 3


def test_run_page_shows_params_charts_artifacts_samples_and_lineage(site: Site) -> None:
    page = site.as_user("rita").get(f"/ui/runs/{site.runs['better']}")
    assert page.status_code == 200
    text = page.text
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="chart-svg"' in text and '<path d="M' in text
    assert "model-1" in text and "cost_per_query" in text
    assert "prompt:qa@1.2.0" in text and "dataset:abc123" in text and "model:assistant@3" in text
    assert "Evaluation samples" in text and "question 3" in text
    assert "/ui/runs/" + site.runs["better"] + "/artifacts/notes/readme.txt" in text


def test_artifact_previews(site: Site) -> None:
    rita = site.as_user("rita")
    base = f"/ui/runs/{site.runs['base']}/artifacts"
    assert "\n  &#34;temperature&#34;: 0.2\n" in rita.get(f"{base}/config.json").text  # pretty-printed JSON
    assert '<img class="preview"' in rita.get(f"{base}/plot.png").text
    table = rita.get(f"{base}/tables/samples.json").text
    assert "<th>score.accuracy</th>" in table and "40 rows" in table
    assert "<th>a</th>" in rita.get(f"{base}/data.csv").text
    assert rita.get(f"{base}/missing.txt").status_code == 404


def test_samples_table_search_and_filter(site: Site) -> None:
    rita = site.as_user("rita")
    path = f"/ui/runs/{site.runs['base']}/tables/samples"
    assert "40 rows" in rita.get(path).text
    found = rita.get(path, params={"q": "question 1"}).text  # question 1, 10..19
    assert "11 of 40 rows" in found
    failed = rita.get(path, params={"filter": "score.accuracy = 0"}).text
    assert "12 of 40 rows" in failed
    assert rita.get(path, params={"filter": "nope >"}).status_code == 400


def test_compare_page_shows_deltas_significance_and_the_pareto_chart(site: Site) -> None:
    rita = site.as_user("rita")
    ids = [site.runs["base"], site.runs["better"], site.runs["pricey"]]
    page = rita.get("/ui/compare", params={"run": ids})
    assert page.status_code == 200
    text = page.text
    assert 'id="pareto"' in text and "stroke-dasharray" in text  # the front is drawn
    assert "baseline</span>" in text and "Pareto</span>" in text
    assert re.search(r"[+-]0\.1\d* p=", text)  # a delta with its p-value
    assert "model-0" in text and 'class="cell diff"' in text
    assert rita.get("/ui/compare", params={"run": ids[:1]}).status_code == 400


def test_unknown_pages_are_html_404_and_the_api_keeps_json(site: Site) -> None:
    rita = site.as_user("rita")
    page = rita.get("/ui/no/such/page")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    api = rita.get("/api/v1/runs")
    assert api.status_code == 401 and api.json()["error"]["code"] == "unauthenticated"  # cookies are not tokens
    paths = rita.get("/api/v1/openapi.json").json()["paths"]
    assert not any(p.startswith("/ui") for p in paths)


def test_local_mode_needs_no_sign_in_but_answers_only_loopback_names(tmp_path: Path) -> None:
    app = create_app(f"sqlite:///{tmp_path / 'keel.db'}", str(tmp_path / "objects"))
    app.state.keel_ui = UISettings(local=True)
    run_id = app.state.keel.tracking.start_run("mine", "local-run").run_id
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:
        assert "local-run" in client.get("/ui/projects/mine/runs").text
        assert client.get("/ui/login", follow_redirects=False).status_code == 303
        page = client.get(f"/ui/runs/{run_id}").text
        assert "Sign out" not in page and "Delete run" in page
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        assert token
        assert client.post(f"/ui/runs/{run_id}/delete", data={}).status_code == 403
        assert client.post(f"/ui/runs/{run_id}/delete", data={"csrf": token.group(1)}).status_code == 200
    with TestClient(app, base_url="http://attacker.example") as rebound:
        assert rebound.get("/ui/projects").status_code == 403


@pytest.fixture(scope="module")
def big_project(site: Site) -> str:
    """A project of 10,000 runs, each with 4 metrics, 3 params and a tag."""
    tracking = site.app.state.keel.tracking
    start = now_ms() - 10_000_000
    batch = WriteBatch()
    for i in range(10_000):
        run_id = new_run_id()
        batch.new_runs.append((run_id, "big", f"run-{i}", start + i * 1000, None, "{}"))
        batch.metrics.extend(
            (run_id, key, value, 0, start) for key, value in (
                ("accuracy", (i * 7919 % 1000) / 1000), ("loss", 1 / (i + 1)), ("cost", i * 1e-5), ("f1", 0.5))
        )  # fmt: skip
        batch.params.extend(
            [(run_id, "lr", "float", str(1e-4 * (i % 10)), False), (run_id, "model", "str", f"m{i % 5}", False),
             (run_id, "seed", "int", str(i), False)]
        )  # fmt: skip
        batch.tags.append((run_id, "group", f"g{i % 3}"))
        batch.run_ends.append((run_id, "finished", start + i * 1000 + 500, None))
    tracking.write_batch(batch)
    AuthStore(site.app.state.keel.store.db).grant("rita", "big", "reader", "test")
    return "big"


def test_runs_table_of_ten_thousand_runs_is_fast(site: Site, big_project: str) -> None:
    rita = site.as_user("rita")
    queries = {
        "default (newest 50)": {},
        "sorted by a metric": {"sort": "metrics.accuracy", "desc": "1"},
        "filtered and sorted, 100 rows": {
            "filter": "metrics.accuracy > 0.5 and params.model = 'm3'",
            "sort": "params.seed",
            "size": "100",
        },  # fmt: skip
    }
    for label, params in queries.items():
        rita.get(f"/ui/projects/{big_project}/runs", params=params)  # warm
        started = time.perf_counter()
        page = rita.get(f"/ui/projects/{big_project}/runs", params=params)
        elapsed = (time.perf_counter() - started) * 1000
        assert page.status_code == 200 and "10000 runs" in page.text
        print(f"\nruns table, 10,000 runs, {label}: {elapsed:.0f} ms (server, in process)")
        assert elapsed < 3000  # the target is < 300 ms; this only catches a pathological regression
