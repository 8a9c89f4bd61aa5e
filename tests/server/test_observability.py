"""What an operator sees: request ids, the access log (text and JSON), the report of every
5xx, Prometheus metrics, and workers that die with their main process.

The app runs in process (TestClient) for the request-level checks; the last tests start a
real ``keel server start --workers 2`` and ``kill -9`` its main process.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import ClientDisconnect

from keel.errors import StoreError
from keel.server import create_app
from keel.server.logs import JsonFormatter, RequestIdFilter, TextFormatter, logging_config
from keel.server.mlflow.dispatch import HANDLERS
from keel.server.request_context import REQUEST_ID_PATTERN
from keel.services.auth import AuthStore
from servers import free_port

API = "/api/v1"
KEEL = Path(sys.executable).with_name("keel")
TEXT_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<level>[A-Z]+) (?P<logger>\S+) \[(?P<request_id>[^\]]+)\] "
    r'(?P<client>\S+) (?P<user>\S+) "(?P<method>[A-Z]+) (?P<path>\S+)" (?P<status>\d{3}) (?P<bytes>\d+)B '
    r"(?P<ms>\d+\.\d\d)ms route=(?P<route>\S+)$"
)
ISO_UTC_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def team(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The app in process with an admin ``root`` and a reader ``bob`` (their tokens), and two
    test-only routes that fail: one with a bug, one with a store error."""
    app = create_app(f"sqlite:///{tmp_path / 'keel.db'}", str(tmp_path / "objects"))
    auth = AuthStore(app.state.keel.store.db)
    auth.create_user("root", is_admin=True)
    auth.create_user("bob")
    auth.grant("bob", "p", "reader", actor="root")
    tokens = {"root": auth.create_token("root", "t")[0], "bob": auth.create_token("bob", "t")[0]}

    @app.get(f"{API}/test/bug")
    def bug() -> None:
        raise RuntimeError("a bug in a handler")

    @app.get(f"{API}/test/store")
    def store_failure() -> None:
        try:
            raise ConnectionResetError("connection reset by peer")
        except ConnectionResetError as exc:
            raise StoreError("database error on sqlite:///x.db: connection reset", "retry") from exc

    @app.get(f"{API}/test/gone")
    def client_gone() -> None:
        raise ClientDisconnect()

    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {tokens['root']}"
        yield client, tokens


@pytest.fixture
def log_lines() -> Iterator[dict[str, io.StringIO]]:
    """What the server's log handler writes for ``keel`` loggers, as text and as JSON lines."""
    streams = {"text": io.StringIO(), "json": io.StringIO()}
    handlers = []
    for name, formatter in (("text", TextFormatter()), ("json", JsonFormatter())):
        handler = logging.StreamHandler(streams[name])
        handler.addFilter(RequestIdFilter())
        handler.setFormatter(formatter)
        handlers.append(handler)
    keel_log = logging.getLogger("keel")
    level = keel_log.level
    keel_log.setLevel(logging.INFO)
    for handler in handlers:
        keel_log.addHandler(handler)
    try:
        yield streams
    finally:
        for handler in handlers:
            keel_log.removeHandler(handler)
        keel_log.setLevel(level)


# -- request ids --------------------------------------------------------------------------------
def test_a_request_id_round_trips_and_an_unsafe_one_is_replaced(team: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = team
    kept = client.get(f"{API}/health", headers={"X-Request-Id": "lb-7f3a.01_x"})
    assert kept.headers["x-request-id"] == "lb-7f3a.01_x"
    for unsafe in ("has space", "a" * 65, "x\u00e9".encode(), "-leading-dash", 'quote"d', "a;b=c"):
        replaced = client.get(f"{API}/health", headers={"X-Request-Id": unsafe}).headers["x-request-id"]
        assert replaced != unsafe and re.fullmatch(r"[0-9a-f]{16}", replaced)
    first = client.get(f"{API}/health").headers["x-request-id"]
    second = client.get(f"{API}/health").headers["x-request-id"]
    assert first != second and REQUEST_ID_PATTERN.fullmatch(first)


def test_every_error_body_carries_the_request_id(team: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = team
    for response in (
        client.get(f"{API}/runs/0123456789abcdef0123456789abcdef"),  # 404 from a service
        client.get(f"{API}/no/such/route"),  # 404 from routing
        client.post(f"{API}/runs", json={"nope": 1}),  # 422 from validation
        client.get(f"{API}/runs", headers={"Authorization": "Bearer keel_wrong"}),  # 401
    ):
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "hint", "details"}
        assert body["error"]["details"]["request_id"] == response.headers["x-request-id"], body


# -- every 5xx is logged once, with its traceback, under the id the client sees ----------------
def _error_records(caplog: pytest.LogCaptureFixture, request_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and request_id in r.getMessage()]


def test_an_unexpected_exception_is_a_500_logged_with_its_traceback_under_the_request_id(
    team: tuple[TestClient, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = team
    with caplog.at_level(logging.INFO, logger="keel"):
        response = client.get(f"{API}/test/bug")
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    error = response.json()["error"]
    assert error["code"] == "internal" and request_id in error["message"]
    assert error["details"] == {"request_id": request_id} and "a bug" not in json.dumps(error)
    [record] = _error_records(caplog, request_id)  # once: not again by uvicorn or Starlette
    assert record.name == "keel.server" and getattr(record, "request_id", None) == request_id
    assert "RuntimeError: a bug in a handler" in record.getMessage() and "GET /api/v1/test/bug" in record.getMessage()
    traceback = logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]
    assert "Traceback (most recent call last)" in traceback and 'raise RuntimeError("a bug in a handler")' in traceback
    assert [r for r in caplog.records if r.name == "keel.access" and getattr(r, "request_id", None) == request_id]


def test_a_keel_error_answered_5xx_is_logged_with_its_cause(
    team: tuple[TestClient, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = team
    with caplog.at_level(logging.INFO, logger="keel"):
        response = client.get(f"{API}/test/store")
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    error = response.json()["error"]
    assert error["code"] == "store" and error["message"].endswith(f"(request id {request_id})")
    [record] = _error_records(caplog, request_id)
    traceback = logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]
    assert "StoreError" in record.getMessage() and "ConnectionResetError: connection reset by peer" in traceback


def test_an_mlflow_call_that_fails_is_logged_and_names_the_request_id(
    team: tuple[TestClient, dict[str, str]], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = team

    def broken(_call: Any) -> dict[str, Any]:
        raise RuntimeError("a bug in an MLflow handler")

    def store_down(_call: Any) -> dict[str, Any]:
        raise StoreError("database error: the server closed the connection", "retry")

    monkeypatch.setitem(HANDLERS, ("GET", "test/broken"), broken)
    monkeypatch.setitem(HANDLERS, ("GET", "test/store"), store_down)
    with caplog.at_level(logging.INFO, logger="keel"):
        responses = [client.get("/api/2.0/mlflow/test/broken"), client.get("/api/2.0/mlflow/test/store")]
    for response, cause in zip(responses, ("RuntimeError", "StoreError"), strict=True):
        request_id = response.headers["x-request-id"]
        assert response.status_code == 500 and set(response.json()) == {"error_code", "message"}
        assert request_id in response.json()["message"]
        [record] = _error_records(caplog, request_id)
        assert cause in record.getMessage() and record.exc_info is not None


def test_a_client_that_went_away_is_499_in_the_access_log_not_a_server_error(
    team: tuple[TestClient, dict[str, str]], log_lines: dict[str, io.StringIO]
) -> None:
    client, _ = team
    before = _samples(client.get("/metrics").text)
    client.get(f"{API}/test/gone", headers={"X-Request-Id": "gone-1"})
    records = [json.loads(raw) for raw in log_lines["json"].getvalue().splitlines()]
    assert [(r["logger"], r["status"]) for r in records if r["request_id"] == "gone-1"] == [("keel.access", 499)]
    after = _samples(client.get("/metrics").text)
    labels = {"route": f"{API}/test/gone", "method": "GET"}
    assert _metric(after, "keel_http_requests_total", status="499", **labels) == 1 + _metric(
        before, "keel_http_requests_total", status="499", **labels
    )


def test_access_lines_parse_as_text_and_as_json_with_every_field(
    team: tuple[TestClient, dict[str, str]], log_lines: dict[str, io.StringIO]
) -> None:
    client, _ = team
    run_id = client.post(f"{API}/runs", json={"project": "p"}).json()["run_id"]
    response = client.get(f"{API}/runs/{run_id}", headers={"X-Request-Id": "trace-42"})
    assert response.status_code == 200
    anonymous = client.get(f"{API}/health", headers={"Authorization": ""})

    text = [TEXT_LINE.match(line) for line in log_lines["text"].getvalue().splitlines() if " keel.access " in line]
    assert all(text), log_lines["text"].getvalue()
    fields = {m["request_id"]: m.groupdict() for m in text if m}
    line = fields["trace-42"]
    assert (line["level"], line["logger"], line["user"], line["method"]) == ("INFO", "keel.access", "root", "GET")
    assert line["path"] == f"{API}/runs/{run_id}" and line["route"] == f"{API}/runs/{{run_id}}"
    assert line["status"] == "200" and int(line["bytes"]) == len(response.content) and float(line["ms"]) > 0
    assert fields[anonymous.headers["x-request-id"]]["user"] == "-"

    records = [json.loads(raw) for raw in log_lines["json"].getvalue().splitlines()]
    access = {r["request_id"]: r for r in records if r["logger"] == "keel.access"}
    record = access["trace-42"]
    assert ISO_UTC_MS.match(record["ts"]) and record["level"] == "INFO"
    assert {k: record[k] for k in ("method", "path", "route", "status", "user", "bytes")} == {
        "method": "GET",
        "path": f"{API}/runs/{run_id}",
        "route": f"{API}/runs/{{run_id}}",
        "status": 200,
        "user": "root",
        "bytes": len(response.content),
    }
    assert isinstance(record["duration_ms"], float) and record["client"] == "testclient"


def test_a_failure_in_json_lines_holds_its_traceback_in_one_line(
    team: tuple[TestClient, dict[str, str]], log_lines: dict[str, io.StringIO]
) -> None:
    client, _ = team
    request_id = client.get(f"{API}/test/bug").headers["x-request-id"]
    records = [json.loads(raw) for raw in log_lines["json"].getvalue().splitlines()]
    [failure] = [r for r in records if r["level"] == "ERROR"]
    assert failure["request_id"] == request_id and failure["status"] == 500
    assert failure["exc_type"] == "RuntimeError" and failure["exc_message"] == "a bug in a handler"
    assert failure["traceback"].startswith("Traceback") and "a bug in a handler" in failure["traceback"]
    assert f"[{request_id}] request {request_id}: GET" in log_lines["text"].getvalue()


def test_the_logging_config_is_valid_for_both_formats() -> None:
    for log_format in ("text", "json"):
        config = logging_config("debug", log_format)
        assert config["loggers"]["uvicorn.access"]["propagate"] is False
        assert config["root"]["level"] == "WARNING" and config["loggers"]["keel"]["level"] == "DEBUG"
    with pytest.raises(ValueError):
        logging_config("info", "xml")


# -- /metrics ------------------------------------------------------------------------------------
def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _metric(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_by_route_template_and_status(team: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = team
    route = f"{API}/runs/{{run_id}}"
    before = _samples(client.get("/metrics").text)
    run_id = client.post(f"{API}/runs", json={"project": "p"}).json()["run_id"]
    for _ in range(3):
        assert client.get(f"{API}/runs/{run_id}").status_code == 200
    assert client.get(f"{API}/runs/0123456789abcdef0123456789abcdef").status_code == 404
    batch = {"metrics": [{"key": "loss", "value": v, "step": i} for i, v in enumerate((3, 2, 1))]}
    batch |= {"params": {"lr": 0.1}, "tags": {"team": "a"}}
    assert client.post(f"{API}/runs/{run_id}/batch", json=batch).status_code == 200
    client.get(f"{API}/nothing/{run_id}")

    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    after = _samples(response.text)

    def grew(name: str, **labels: str) -> float:
        return _metric(after, name, **labels) - _metric(before, name, **labels)

    assert grew("keel_http_requests_total", route=route, method="GET", status="200") == 3
    assert grew("keel_http_requests_total", route=route, method="GET", status="404") == 1
    assert grew("keel_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert not [key for key in after if run_id in str(key)]  # no raw path in a label
    assert grew("keel_http_request_duration_seconds_count", route=route, method="GET") == 4
    assert grew("keel_ingest_rows_total", kind="metric") == 3
    assert grew("keel_ingest_rows_total", kind="param") == 1 and grew("keel_ingest_rows_total", kind="tag") == 1
    assert grew("keel_http_received_bytes_total", route=f"{API}/runs/{{run_id}}/batch") > 100
    assert _metric(after, "keel_db_pool_size") >= 1 and _metric(after, "keel_db_pool_max") >= 1
    assert ("keel_db_pool_checked_out", ()) in after and ("keel_http_requests_in_progress", ()) in after


def test_metrics_are_for_site_admins_only(team: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = team
    assert client.get("/metrics", headers={"Authorization": ""}).status_code == 401
    refused = client.get("/metrics", headers={"Authorization": f"Bearer {tokens['bob']}"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert "keel_http_requests_total" not in refused.text


# -- a real server with two workers --------------------------------------------------------------
def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (read from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _start(store: str, folder: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_SERVER_", "PROMETHEUS_"))}
    env["TMPDIR"] = str(folder)
    command = [str(KEEL), "server", "start", "--store", store, "--port", str(port), *extra]
    with open(folder / "server.log", "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, (folder / "server.log").read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}{API}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    process.wait()
    raise AssertionError(f"no answer within 60 s: {(folder / 'server.log').read_text()}")


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc, sends POSIX signals")
def test_two_workers_share_metrics_log_json_and_die_with_their_main_process(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'team.db'}"
    out = subprocess.run(
        [str(KEEL), "server", "admin", "create", "root", "--store", store], capture_output=True, text=True, check=True
    )
    token = out.stdout.strip().splitlines()[-1]
    port, metrics_port = free_port(), free_port()
    main = _start(store, tmp_path, port, "--workers", "2", "--log-format", "json", "--metrics-port", str(metrics_port))
    started = [main]
    workers = _children(main.pid)
    try:
        assert len(workers) >= 2  # two workers (and multiprocessing's resource tracker)
        [metrics_dir] = tmp_path.glob("keel-metrics-*")
        headers = {"Authorization": f"Bearer {token}"}
        for _ in range(20):  # a new connection each: the workers share them
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as one:
                assert one.get(f"{API}/runs").status_code == 200
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as client:
            traced = client.get(f"{API}/runs/0123456789abcdef0123456789abcdef", headers={"X-Request-Id": "find-me-1"})
            assert traced.status_code == 404 and traced.headers["x-request-id"] == "find-me-1"
            scraped = client.get("/metrics")
            assert scraped.status_code == 200
            assert client.get("/metrics", headers={"Authorization": ""}).status_code == 401
        summed = _samples(scraped.text)
        assert _metric(summed, "keel_http_requests_total", route=f"{API}/runs", method="GET", status="200") == 20
        assert _metric(summed, "keel_db_pool_size") >= 5
        unauthenticated = _samples(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text)
        assert (
            _metric(unauthenticated, "keel_http_requests_total", route=f"{API}/runs", method="GET", status="200") == 20
        )

        lines = [line for line in (tmp_path / "server.log").read_text().splitlines() if line.strip()]
        records = [json.loads(line) for line in lines]  # every line is JSON
        [found] = [r for r in records if r["request_id"] == "find-me-1" and r["logger"] == "keel.access"]
        assert (found["status"], found["route"], found["user"]) == (404, f"{API}/runs/{{run_id}}", "root")
        assert ISO_UTC_MS.match(found["ts"]) and not [r for r in records if r["logger"] == "uvicorn.access"]

        workers |= _children(main.pid)  # a worker uvicorn restarted (slow to answer its pings) too
        main.send_signal(signal.SIGKILL)
        main.wait()
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)], "processes outlived their main process"
        assert not _listening(port) and not _listening(metrics_port)
        assert metrics_dir.exists()  # left by the killed main process: the next start removes it

        again = _start(store, tmp_path, port, "--workers", "2")
        started.append(again)
        workers |= _children(again.pid)
        assert not metrics_dir.exists()
        [own_dir] = tmp_path.glob("keel-metrics-*")
        again.send_signal(signal.SIGTERM)
        again.wait(30)
        assert not own_dir.exists() and not _listening(port)
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
