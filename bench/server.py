"""keel's team server vs an MLflow tracking server under load, side by side in one run.

    .venv/bin/python bench/server.py --mlflow-python bench/.venv-mlflow/bin/python
    .venv/bin/python bench/server.py --quick --skip-mlflow     # a smoke run

Both servers are real processes on 127.0.0.1 with a fresh SQLite store each:
``python -m keel.server`` (uvicorn) and ``mlflow server``, with the same number
of worker processes (``--workers``, repeatable: ``--workers 1 --workers 2``).

The load: ``--clients`` threads (8), each with its own keep-alive HTTP
connection (``http.client``) and its own run, each sending metric batches of
``--batch`` values (MLflow's per-request limit is 1,000) and reading its run
(one GET) after every batch, until it has sent ``--metrics-per-client`` values or
``--duration`` seconds have passed. Request bodies are encoded before the clock
starts, so the clients spend their time waiting on the server. Reported:
metrics/s over the whole load, p50/p95 of the batch writes and of the single
reads under that load, and whether every value sent was stored, counted after
the load through each server's own API (keel: ``GET /runs/{id}/metrics``,
MLflow: ``metrics/get-history``).

Then the runs listing of a project of ``--listing-runs`` runs (10,000), with
10 params and 10 metrics each, populated before the server starts (keel:
through ``TrackingService``; MLflow: its fluent API in its own venv): the first
page (100 runs) of ``GET /api/v1/runs?project=...`` against MLflow's
``runs/search``, median of ``--reps``, timed by the client and, for keel, by
the server itself (its ``Server-Timing`` header). keel's web UI runs table is
timed too when the server has one (``--ui-path``).

Then downloads (``--download-mib``, 1024: a 1 GiB artifact, keel only): the artifact is
uploaded once, then fetched ``--download-reps`` times on fresh connections, through the
artifact route and the object route: time to the first body byte (median; the target is
<= 100 ms: downloads stream from the store while hashed) and time to the last byte.
``--download-objects URL`` puts the server's objects elsewhere (``s3://bucket/prefix?endpoint_url=...``).

Benchmarks assert nothing: they print. Machines are noisy: compare ratios
taken in the same run.
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import run_payloads  # noqa: E402
from tracking import DEFAULT_MLFLOW_PYTHON, MLFLOW_ENV, MLFLOW_WORKER, fmt_ratio, machine_lines  # noqa: E402

KEYS = [f"m{k}" for k in range(10)]
BASE_TS = 1_700_000_000_000
LISTING_PROJECT = "bench"  # the bench workers' project / experiment name
LOAD_PROJECT = "load"
TARGETS = {
    "ingest": (100_000.0, ">= 100,000/s", True),
    "read_p95": (20.0, "p95 < 20 ms", False),
    "listing": (300.0, "< 300 ms server", False),
    "ttfb": (100.0, "<= 100 ms", False),
}
SERVER_TIMING = re.compile(r"dur=([0-9.]+)")


# -- servers ---------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A server process on 127.0.0.1 and how to reach it."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    headers: dict[str, str] = field(default_factory=dict)

    def connection(self) -> http.client.HTTPConnection:
        """A new keep-alive connection."""
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any, dict[str, str]]:
        """One request on a fresh connection: status, decoded JSON body, headers."""
        conn = self.connection()
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = dict(self.headers)
            if data is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            parsed = json.loads(raw) if raw and "json" in (response.getheader("content-type") or "") else raw
            return response.status, parsed, {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        """:meth:`call`, failing loudly on an error status."""
        status, data, _headers = self.call(method, path, body)
        if status >= 300:
            raise RuntimeError(f"{self.name}: {method} {path} -> {status}: {str(data)[:300]}")
        return data

    def stop(self) -> None:
        """Terminate the server (all its workers) and wait for it."""
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def wait_ready(server: Server, path: str, timeout: float = 90) -> Server:
    """Poll ``path`` until it answers 200; stop the server and raise if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited: {server.log.read_text()[-2000:]}")
        try:
            if server.call("GET", path)[0] == 200:
                return server
        except OSError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.name} did not answer within {timeout} s: {server.log.read_text()[-2000:]}")


def keel_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "MLFLOW_"))}


def mlflow_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "MLFLOW_TRACKING"))}
    env.update(MLFLOW_ENV)
    env.pop("PYTHONPATH", None)
    return env


def keel_token(python: str, store: str) -> str:
    """Create (and migrate) the store and its first admin; the admin's token."""
    out = subprocess.run(
        [python, "-m", "keel.server", "admin", "create", "bench", "--store", store],
        capture_output=True,
        text=True,
        env=keel_env(),
        timeout=120,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def start_keel(python: str, folder: Path, workers: int, token: str, objects: str | None = None) -> Server:
    port = free_port()
    log = folder / f"keel-{port}.log"
    cmd = [python, "-m", "keel.server", "--store", f"sqlite:///{folder / 'keel.db'}", "--port", str(port)]
    if objects:
        cmd += ["--objects", objects]
    cmd += ["--workers", str(workers), "--log-level", "warning"]
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=keel_env(), cwd=folder)
    server = Server("keel", port, process, log, {"Authorization": f"Bearer {token}"})
    return wait_ready(server, "/api/v1/health")


def start_mlflow(python: str, folder: Path, workers: int) -> Server:
    port = free_port()
    log = folder / f"mlflow-{port}.log"
    mlflow = str(Path(python).parent / "mlflow")
    cmd = [mlflow, "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    cmd += ["--default-artifact-root", (folder / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", str(workers)]
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=mlflow_env(), cwd=folder)
    return wait_ready(Server("mlflow", port, process, log), "/health", timeout=180)


# -- the two APIs ----------------------------------------------------------------------
class Api(abc.ABC):
    """What the load does, in one server's dialect."""

    def __init__(self, server: Server) -> None:
        self.server = server

    @abc.abstractmethod
    def new_runs(self, n: int) -> list[str]:
        """Create ``n`` runs to log to; their ids."""

    @abc.abstractmethod
    def batch(self, run_id: str, index: int, size: int) -> tuple[str, bytes]:
        """The path and body of batch ``index`` (distinct steps per batch)."""

    @abc.abstractmethod
    def read_path(self, run_id: str) -> str:
        """The path that reads one run."""

    @abc.abstractmethod
    def stored(self, run_id: str) -> int:
        """How many metric values the server holds for the run, counted through its API."""


def metric_rows(index: int, size: int) -> list[tuple[str, float, int, int]]:
    """``size`` metrics: the 10 keys over consecutive steps, the steps of batch ``index``."""
    per_key = max(1, size // len(KEYS))
    first = index * per_key
    rows = []
    for step in range(first, first + per_key):
        for j, key in enumerate(KEYS):
            rows.append((key, (step * 7 + j) % 1000 / 1000.0, step, BASE_TS + step))
    return rows[:size]


class KeelApi(Api):
    def new_runs(self, n: int) -> list[str]:
        self.server.ok("POST", "/api/v1/projects", {"name": LOAD_PROJECT})
        return [self.server.ok("POST", "/api/v1/runs", {"project": LOAD_PROJECT})["run_id"] for _ in range(n)]

    def batch(self, run_id: str, index: int, size: int) -> tuple[str, bytes]:
        metrics = [{"key": k, "value": v, "step": s, "timestamp": t} for k, v, s, t in metric_rows(index, size)]
        return f"/api/v1/runs/{run_id}/batch", json.dumps({"metrics": metrics}).encode()

    def read_path(self, run_id: str) -> str:
        return f"/api/v1/runs/{run_id}"

    def stored(self, run_id: str) -> int:
        return sum(s["count"] for s in self.server.ok("GET", f"/api/v1/runs/{run_id}/metrics"))


class MlflowApi(Api):
    def new_runs(self, n: int) -> list[str]:
        exp = self.server.ok("POST", "/api/2.0/mlflow/experiments/create", {"name": LOAD_PROJECT})["experiment_id"]
        return [
            self.server.ok("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": exp, "start_time": BASE_TS})["run"][
                "info"
            ]["run_id"]
            for _ in range(n)
        ]

    def batch(self, run_id: str, index: int, size: int) -> tuple[str, bytes]:
        metrics = [{"key": k, "value": v, "step": s, "timestamp": t} for k, v, s, t in metric_rows(index, size)]
        return "/api/2.0/mlflow/runs/log-batch", json.dumps({"run_id": run_id, "metrics": metrics}).encode()

    def read_path(self, run_id: str) -> str:
        return f"/api/2.0/mlflow/runs/get?run_id={run_id}"

    def stored(self, run_id: str) -> int:
        total = 0
        for key in KEYS:
            token = ""
            while True:
                path = f"/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key={key}&max_results=25000"
                data = self.server.ok("GET", path + (f"&page_token={token}" if token else ""))
                total += len(data.get("metrics", []))
                token = data.get("next_page_token", "")
                if not token:
                    break
        return total


# -- the load ----------------------------------------------------------------------------
@dataclass
class ClientResult:
    sent: int = 0
    write_ms: list[float] = field(default_factory=list)
    read_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def client_loop(
    server: Server,
    run_id: str,
    bodies: list[tuple[str, bytes]],
    read_path: str,
    size: int,
    start: threading.Barrier,
    deadline_box: list[float],
    result: ClientResult,
) -> None:
    """Send the batches in turn, each followed by one read, until done or the deadline."""
    conn = server.connection()
    headers = {**server.headers, "Content-Type": "application/json"}
    try:
        start.wait()
        for path, body in bodies:
            if time.perf_counter() > deadline_box[0]:
                break
            t0 = time.perf_counter()
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read()
            result.write_ms.append((time.perf_counter() - t0) * 1000)
            if response.status != 200:
                result.errors.append(f"write {response.status}: {answer[:200]!r}")
                break
            result.sent += size
            t0 = time.perf_counter()
            conn.request("GET", read_path, headers=server.headers)
            response = conn.getresponse()
            answer = response.read()
            result.read_ms.append((time.perf_counter() - t0) * 1000)
            if response.status != 200:
                result.errors.append(f"read {response.status}: {answer[:200]!r}")
                break
    except Exception as exc:  # noqa: BLE001 - a bench reports, it does not stop
        result.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_load(api: Api, args: argparse.Namespace, batch: int) -> dict[str, Any]:
    """The concurrent load against one server; figures and the stored count."""
    runs = api.new_runs(args.clients)
    count = max(1, args.metrics_per_client // batch)
    bodies = [[api.batch(run_id, i, batch) for i in range(count)] for run_id in runs]
    results = [ClientResult() for _ in runs]
    start = threading.Barrier(args.clients + 1)
    deadline_box = [float("inf")]
    threads = [
        threading.Thread(
            target=client_loop,
            args=(api.server, run_id, bodies[i], api.read_path(run_id), batch, start, deadline_box, results[i]),
            daemon=True,
        )
        for i, run_id in enumerate(runs)
    ]
    for thread in threads:
        thread.start()
    deadline_box[0] = time.perf_counter() + args.duration
    start.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - t0
    sent = sum(r.sent for r in results)
    stored = sum(api.stored(run_id) for run_id in runs)
    writes = [ms for r in results for ms in r.write_ms]
    reads = [ms for r in results for ms in r.read_ms]
    return {
        "batch": batch,
        "seconds": seconds,
        "sent": sent,
        "stored": stored,
        "rate": sent / seconds if seconds else None,
        "requests": len(writes),
        "write_p50": percentile(writes, 0.5),
        "write_p95": percentile(writes, 0.95),
        "read_p50": percentile(reads, 0.5),
        "read_p95": percentile(reads, 0.95),
        "reads": len(reads),
        "errors": [e for r in results for e in r.errors][:5],
    }


# -- the runs listing -----------------------------------------------------------------------
def populate_keel(folder: Path, n: int) -> tuple[float, str | None]:
    """``n`` finished runs (10 params + 10 metrics) in project ``bench``, straight into the store;
    the seconds it took, and a web UI session of the admin (None if this keel has no UI sessions)."""
    from keel.core.batch import WriteBatch
    from keel.core.values import encode_param
    from keel.services.tracking import TrackingService
    from keel.services.workspace import open_store

    store = open_store(f"sqlite:///{folder / 'keel.db'}", None, cached=False)
    t0 = time.perf_counter()
    try:
        service = TrackingService(store)
        payloads = run_payloads(n)
        for first in range(0, n, 5000):
            batch = WriteBatch()
            for i in range(first, min(n, first + 5000)):
                params, metrics = payloads[i]
                run_id = service.start_run(LISTING_PROJECT, f"run-{i}").run_id
                batch.params.extend((run_id, k, *encode_param(k, v), False) for k, v in params.items())
                batch.metrics.extend((run_id, k, v, 0, BASE_TS + i) for k, v in metrics.items())
                batch.run_ends.append((run_id, "finished", BASE_TS + i, None))
            service.write_batch(batch)
        seconds = time.perf_counter() - t0
        session = None
        with contextlib.suppress(ImportError, AttributeError):
            from keel.services.auth import AuthStore

            session = AuthStore(store.db).create_session("bench", "password", 3600)
    finally:
        store.close()
    return seconds, session


def populate_mlflow(python: str, folder: Path, n: int, timeout: float) -> float:
    """``n`` runs through MLflow's fluent API (bench/_mlflow_worker.py ``runs``) into ``folder``/mlflow.db."""
    t0 = time.perf_counter()
    subprocess.run(
        [python, str(MLFLOW_WORKER), "runs", "--dir", str(folder), "--n", str(n)],
        capture_output=True,
        env=mlflow_env(),
        timeout=timeout,
        check=True,
        cwd=folder,
    )
    return time.perf_counter() - t0


def time_get(server: Server, path: str, reps: int, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """One warm-up, then ``reps`` GETs on one connection: client and server (Server-Timing) ms."""
    conn = server.connection()
    client_ms: list[float] = []
    server_ms: list[float] = []
    status = 0
    size = 0
    try:
        for i in range(reps + 1):
            t0 = time.perf_counter()
            conn.request("GET", path, headers=headers if headers is not None else server.headers)
            response = conn.getresponse()
            body = response.read()
            elapsed = (time.perf_counter() - t0) * 1000
            status, size = response.status, len(body)
            timing = SERVER_TIMING.search(response.getheader("server-timing") or "")
            if i:
                client_ms.append(elapsed)
                if timing:
                    server_ms.append(float(timing.group(1)))
    finally:
        conn.close()
    return {
        "status": status,
        "bytes": size,
        "client_ms": statistics.median(client_ms) if client_ms else None,
        "server_ms": statistics.median(server_ms) if server_ms else None,
    }


def time_mlflow_search(server: Server, reps: int) -> dict[str, Any]:
    exp = server.ok("GET", f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={LISTING_PROJECT}")
    body = json.dumps({"experiment_ids": [exp["experiment"]["experiment_id"]], "max_results": 100}).encode()
    conn = server.connection()
    times: list[float] = []
    count = 0
    try:
        for i in range(reps + 1):
            t0 = time.perf_counter()
            conn.request("POST", "/api/2.0/mlflow/runs/search", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = json.loads(response.read())
            if i:
                times.append((time.perf_counter() - t0) * 1000)
            count = len(data.get("runs", []))
    finally:
        conn.close()
    return {"client_ms": statistics.median(times), "count": count}


# -- main ----------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--mlflow-python",
        default=str(DEFAULT_MLFLOW_PYTHON) if DEFAULT_MLFLOW_PYTHON.exists() else "",
        help="python of a venv with mlflow installed (default bench/.venv-mlflow)",
    )
    parser.add_argument("--keel-python", default=sys.executable, help="python with keel (default: this one)")
    parser.add_argument("--skip-mlflow", action="store_true", help="measure keel only")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--workers", type=int, action="append", help="server worker processes; repeatable (1, 2)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (8)")
    parser.add_argument("--batch", type=int, default=1000, help="metrics per request, both servers (1,000)")
    parser.add_argument("--keel-batch", type=int, default=10_000, help="also keel alone with this batch (0: no)")
    parser.add_argument(
        "--metrics-per-client", type=int, default=0, help="most metrics each client sends (150,000; quick 10,000)"
    )
    parser.add_argument("--duration", type=float, default=0, help="most seconds per load (default 20, quick 5)")
    parser.add_argument("--listing-runs", type=int, default=0, help="runs in the listed project (10,000; quick 500)")
    parser.add_argument("--reps", type=int, default=9, help="timed listing requests (median)")
    parser.add_argument("--ui-path", default="/ui/projects/{project}/runs", help="keel's runs-table page")
    parser.add_argument("--download-mib", type=int, default=0, help="artifact size for the download timing "
                        "(1024; quick 64; 0 with --skip-download)")  # fmt: skip
    parser.add_argument("--download-reps", type=int, default=3, help="timed downloads per route (median)")
    parser.add_argument("--download-objects", metavar="URL", help="the server's object store for the download timing")
    parser.add_argument("--skip-download", action="store_true", help="no download timing")
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    parser.add_argument("--tmpdir", help="where the temporary stores go")
    parser.add_argument("--keep", action="store_true", help="keep the temporary stores")
    args = parser.parse_args()
    if args.skip_mlflow:
        args.mlflow_python = ""
    args.workers = args.workers or [1, 2]
    args.metrics_per_client = args.metrics_per_client or (10_000 if args.quick else 150_000)
    args.duration = args.duration or (5.0 if args.quick else 20.0)
    args.listing_runs = args.listing_runs or (500 if args.quick else 10_000)
    args.download_mib = 0 if args.skip_download else (args.download_mib or (64 if args.quick else 1024))
    args.keel_python = os.path.abspath(args.keel_python)
    if args.mlflow_python:
        args.mlflow_python = os.path.abspath(args.mlflow_python)
    return args


def measure_load(tool: str, args: argparse.Namespace, tmp: Path, workers: int, batch: int) -> dict[str, Any] | None:
    folder = tmp / f"{tool}-load-w{workers}-b{batch}"
    folder.mkdir()
    print(f"  .. {tool:<6} load, {workers} worker(s), batches of {batch:,}", file=sys.stderr, flush=True)
    server: Server | None = None
    try:
        if tool == "keel":
            token = keel_token(args.keel_python, f"sqlite:///{folder / 'keel.db'}")
            server = start_keel(args.keel_python, folder, workers, token)
            api: Api = KeelApi(server)
        else:
            server = start_mlflow(args.mlflow_python, folder, workers)
            api = MlflowApi(server)
        return run_load(api, args, batch)
    except Exception as exc:  # noqa: BLE001 - reported, the other measurements go on
        print(f"     FAILED: {exc}", file=sys.stderr)
        return None
    finally:
        if server:
            server.stop()


def measure_listing(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    n = args.listing_runs
    folder = tmp / "keel-listing"
    folder.mkdir()
    print(f"  .. keel   listing of {n:,} runs", file=sys.stderr, flush=True)
    token = keel_token(args.keel_python, f"sqlite:///{folder / 'keel.db'}")
    out["keel_populate_s"], session = populate_keel(folder, n)
    server = start_keel(args.keel_python, folder, 1, token)
    try:
        out["keel_api"] = time_get(server, f"/api/v1/runs?project={LISTING_PROJECT}&limit=100", args.reps)
        ui = time_get(server, args.ui_path.format(project=LISTING_PROJECT), args.reps,
                      {"Cookie": f"keel_session={session}"})  # fmt: skip
        out["keel_ui"] = ui if ui["status"] == 200 else None
    finally:
        server.stop()
    if args.mlflow_python:
        folder = tmp / "mlflow-listing"
        folder.mkdir()
        print(f"  .. mlflow listing of {n:,} runs (populating through its fluent API)", file=sys.stderr, flush=True)
        try:
            out["mlflow_populate_s"] = populate_mlflow(args.mlflow_python, folder, n, timeout=1800)
            mserver = start_mlflow(args.mlflow_python, folder, 1)
            try:
                out["mlflow_api"] = time_mlflow_search(mserver, args.reps)
            finally:
                mserver.stop()
        except Exception as exc:  # noqa: BLE001
            print(f"     FAILED: {exc}", file=sys.stderr)
    return out


def make_big_file(path: Path, mib: int) -> None:
    """``mib`` MiB of content unique to this run (a random block, numbered per MiB)."""
    block = os.urandom(1 << 20)
    with open(path, "wb") as out:
        for index in range(mib):
            out.write(index.to_bytes(8, "big") + block[8:])


def time_download(server: Server, path: str, reps: int) -> dict[str, Any]:
    """``reps`` downloads of ``path``, each on a new connection: median ms to the first body
    byte and to the last, and the bytes received."""
    first_ms: list[float] = []
    total_ms: list[float] = []
    size = 0
    for _ in range(reps):
        conn = server.connection()
        try:
            t0 = time.perf_counter()
            conn.request("GET", path, headers=server.headers)
            response = conn.getresponse()
            if response.status != 200:
                raise RuntimeError(f"GET {path} -> {response.status}: {response.read()[:300]!r}")
            first = response.read(1)
            first_ms.append((time.perf_counter() - t0) * 1000)
            size = len(first)
            while chunk := response.read(1 << 20):
                size += len(chunk)
            total_ms.append((time.perf_counter() - t0) * 1000)
        finally:
            conn.close()
    return {"ttfb_ms": statistics.median(first_ms), "total_ms": statistics.median(total_ms), "bytes": size}


def measure_download(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Upload one ``--download-mib`` artifact to a keel server, then time its downloads."""
    folder = tmp / "keel-download"
    folder.mkdir()
    mib = args.download_mib
    print(f"  .. keel   download of a {mib:,} MiB artifact", file=sys.stderr, flush=True)
    out: dict[str, Any] = {"mib": mib}
    try:
        token = keel_token(args.keel_python, f"sqlite:///{folder / 'keel.db'}")
        server = start_keel(args.keel_python, folder, 1, token, args.download_objects)
    except Exception as exc:  # noqa: BLE001 - reported, the other measurements stand
        print(f"     FAILED: {exc}", file=sys.stderr)
        return out
    try:
        run_id = server.ok("POST", "/api/v1/runs", {"project": "download"})["run_id"]
        big = folder / "big.bin"
        make_big_file(big, mib)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600, blocksize=1 << 20)
        try:
            t0 = time.perf_counter()
            with open(big, "rb") as body:
                headers = {**server.headers, "Content-Type": "application/octet-stream",
                           "Content-Length": str(big.stat().st_size)}  # fmt: skip
                conn.request("PUT", f"/api/v1/runs/{run_id}/artifacts/big.bin", body=body, headers=headers)
                response = conn.getresponse()
                stored = json.loads(response.read())
            if response.status != 201:
                raise RuntimeError(f"upload -> {response.status}: {stored}")
            out["upload_s"] = time.perf_counter() - t0
        finally:
            conn.close()
        big.unlink()
        out["artifact"] = time_download(server, f"/api/v1/runs/{run_id}/artifacts/big.bin", args.download_reps)
        out["object"] = time_download(server, f"/api/v1/objects/{stored['oid']}", args.download_reps)
    except Exception as exc:  # noqa: BLE001
        print(f"     FAILED: {exc}", file=sys.stderr)
    finally:
        server.stop()
    return out


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "/s":
        return f"{value:,.0f}/s"
    return f"{value:,.1f} ms" if value >= 10 else f"{value:,.2f} ms"


def report(loads: dict[tuple[str, int, int], dict[str, Any] | None], listing: dict[str, Any], args: argparse.Namespace,
           tmp: Path, total: float, download: dict[str, Any] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    rows: list[dict[str, Any]] = []

    def add(label: str, mlflow: float | None, keel: float | None, unit: str, target: str | None) -> None:
        higher = unit == "/s"
        ratio = None
        if mlflow and keel:
            ratio = keel / mlflow if higher else mlflow / keel
        met = None
        if target and keel is not None:
            limit, _text, up = TARGETS[target]
            met = keel >= limit if up else keel < limit
        rows.append(
            {"workload": label, "mlflow": mlflow, "keel": keel, "unit": unit, "ratio": ratio,
             "target": TARGETS[target][1] if target else "", "met": met}
        )  # fmt: skip

    clients = args.clients
    for workers in args.workers:
        m, k = loads.get(("mlflow", workers, args.batch)), loads.get(("keel", workers, args.batch))
        what = f"{clients} clients, {workers} worker(s), {args.batch:,}/request"

        def get(r: dict[str, Any] | None, key: str) -> float | None:
            return None if r is None else r.get(key)

        add(f"ingest metrics/s ({what})", get(m, "rate"), get(k, "rate"), "/s", "ingest")
        add(f"batch write p50 ({what})", get(m, "write_p50"), get(k, "write_p50"), "ms", None)
        add(f"batch write p95 ({what})", get(m, "write_p95"), get(k, "write_p95"), "ms", None)
        add(f"single read p50 under load ({what})", get(m, "read_p50"), get(k, "read_p50"), "ms", None)
        add(f"single read p95 under load ({what})", get(m, "read_p95"), get(k, "read_p95"), "ms", "read_p95")
        if args.keel_batch:
            kb = loads.get(("keel", workers, args.keel_batch))
            what = f"{clients} clients, {workers} worker(s), {args.keel_batch:,}/request"
            add(f"ingest metrics/s ({what}, keel only)", None, get(kb, "rate"), "/s", "ingest")
            add(f"single read p95 under load ({what}, keel only)", None, get(kb, "read_p95"), "ms", "read_p95")
    n = args.listing_runs
    keel_api = listing.get("keel_api") or {}
    mlflow_api = listing.get("mlflow_api") or {}
    add(f"runs list, first 100 of {n:,} (client ms)", mlflow_api.get("client_ms"), keel_api.get("client_ms"), "ms",
        None)  # fmt: skip
    add(f"runs list API, first 100 of {n:,} (server ms)", None, keel_api.get("server_ms"), "ms", "listing")
    ui = listing.get("keel_ui")
    if ui:
        add(f"runs table page, {n:,} runs (server ms)", None, ui.get("server_ms"), "ms", "listing")
        add(f"runs table page, {n:,} runs (client ms)", None, ui.get("client_ms"), "ms", None)
    download = download or {}
    for route in ("artifact", "object"):
        timed = download.get(route)
        if timed:
            what = f"{route} download, {download['mib']:,} MiB"
            add(f"{what}: time to first byte (client ms)", None, timed["ttfb_ms"], "ms", "ttfb")
            add(f"{what}: time to last byte (client ms)", None, timed["total_ms"], "ms", None)

    print()
    for line in machine_lines({}, tmp):
        if not line.startswith("mlflow"):
            print(line)
    mode = "QUICK sizes (targets are for the full sizes)" if args.quick else "full sizes"
    print(f"{mode}; clients={clients}, <= {args.metrics_per_client:,} metrics/client, "
          f"<= {args.duration:.0f} s per load; total {total:.0f} s")  # fmt: skip
    print()
    headers = ["workload", "MLflow", "keel", "ratio", "target", "met?"]
    table = [
        [r["workload"], "n/a" if r["mlflow"] is None else fmt(r["mlflow"], r["unit"]), fmt(r["keel"], r["unit"]),
         fmt_ratio(r["ratio"]), r["target"], "" if r["met"] is None else ("yes" if r["met"] else "NO")]
        for r in rows
    ]  # fmt: skip
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    print("  ".join(f"{h:<{w}}" for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in table:
        print("  ".join(f"{c:<{w}}" for c, w in zip(row, widths, strict=True)).rstrip())
    print("ratio = how many times better keel is (rates: keel/MLflow; ms: MLflow/keel)")
    print()
    print("details (every write counted back through the server's API):")
    for (tool, workers, batch), r in sorted(loads.items()):
        if r is None:
            print(f"  {tool:<6} w{workers} b{batch:<6} FAILED")
            continue
        check = "all stored" if r["stored"] == r["sent"] else "MISMATCH"
        print(
            f"  {tool:<6} w{workers} b{batch:<6} {r['requests']:,} writes + {r['reads']:,} reads in"
            f" {r['seconds']:.1f} s; sent {r['sent']:,} metrics, stored {r['stored']:,} ({check})"
            + (f"; errors: {r['errors']}" if r["errors"] else "")
        )
    if "keel_populate_s" in listing:
        print(f"  listing: keel populated {n:,} runs in {listing['keel_populate_s']:.1f} s;"
              f" API page {keel_api.get('bytes', 0):,} bytes")  # fmt: skip
    if "mlflow_populate_s" in listing:
        print(f"  listing: MLflow populated {n:,} runs in {listing['mlflow_populate_s']:.1f} s;"
              f" search returned {mlflow_api.get('count')} runs")  # fmt: skip
    if download.get("artifact"):
        mib = download["mib"]
        print(f"  download: {mib:,} MiB uploaded in {download['upload_s']:.1f} s; downloads at"
              f" {mib / (download['artifact']['total_ms'] / 1000):,.0f} MiB/s (artifact route),"
              f" {download['artifact']['bytes']:,} bytes each;"
              f" objects {'from --download-objects' if args.download_objects else 'in a local folder'}")  # fmt: skip
    if listing.get("keel_ui") is None:
        print(f"  keel web UI runs table ({args.ui_path}): not served by this server")
    return rows


def main() -> int:
    args = parse_args()
    tools = ["mlflow", "keel"] if args.mlflow_python else ["keel"]
    tmp = Path(tempfile.mkdtemp(prefix="keel-bench-server-", dir=args.tmpdir))
    started = time.perf_counter()
    loads: dict[tuple[str, int, int], dict[str, Any] | None] = {}
    listing: dict[str, Any] = {}
    download: dict[str, Any] = {}
    try:
        for workers in args.workers:
            for tool in tools:
                loads[(tool, workers, args.batch)] = measure_load(tool, args, tmp, workers, args.batch)
            if args.keel_batch:
                loads[("keel", workers, args.keel_batch)] = measure_load("keel", args, tmp, workers, args.keel_batch)
        listing = measure_listing(args, tmp)
        if args.download_mib:
            download = measure_download(args, tmp)
    finally:
        total = time.perf_counter() - started
        if args.keep:
            print(f"kept the stores in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    rows = report(loads, listing, args, tmp, total, download)
    if args.json:
        payload = {"rows": rows, "loads": {f"{t}-w{w}-b{b}": r for (t, w, b), r in loads.items()},
                   "listing": listing, "download": download, "seconds": total}  # fmt: skip
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
