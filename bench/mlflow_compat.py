"""The same MLflow client code against an MLflow server and a keel server, side by side.

    .venv/bin/python bench/mlflow_compat.py --mlflow-python bench/.venv-mlflow/bin/python
    .venv/bin/python bench/mlflow_compat.py --quick          # smaller sizes

Both servers are real processes on 127.0.0.1 with a fresh SQLite store each
(``mlflow server`` from MLflow's venv, ``python -m keel.server``), one worker
process each. This process is the client: the real ``mlflow`` package
(``MlflowClient``), pointed at one server, then the other
(``MLFLOW_TRACKING_TOKEN`` is a keel API token for keel). Workloads:

- ``log_batch``: 100,000 metrics (10 keys x 10,000 steps) into one run with
  ``MlflowClient.log_batch``, in chunks of 1,000 (MLflow's per-request limit).
- ``runs``: 1,000 x (``create_run``, ``log_batch`` of 10 params + 10 metrics,
  ``set_terminated``).
- ``search``: ``search_runs`` over those runs, ``metrics.m0 > 0.5`` ordered by
  ``metrics.m1 ASC``, every match (up to 1,000); median of ``--reps`` after a warm-up.

Every figure includes the client's own work (building and parsing MLflow's
JSON), which is the same for both servers. Benchmarks assert nothing: they
print. Machines are noisy: compare ratios taken in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from tracking import DEFAULT_MLFLOW_PYTHON, fmt_ratio  # noqa: E402

from server import Server, keel_token, start_keel, start_mlflow  # noqa: E402

FULL = {"log_batch": 100_000, "runs": 1_000}
QUICK = {"log_batch": 20_000, "runs": 200}
KEYS = [f"m{k}" for k in range(10)]
FILTER = "metrics.m0 > 0.5"
ORDER = ["metrics.m1 ASC"]
BASE_TS = 1_700_000_000_000


def workload(label: str, sizes: dict[str, int], reps: int) -> dict[str, float]:
    """Run the three workloads through ``mlflow`` against the current tracking URI."""
    import mlflow
    from mlflow.entities import Metric, Param

    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment(f"bench-{label}")
    rng = random.Random(7)
    out: dict[str, float] = {}

    n = sizes["log_batch"]
    steps = n // len(KEYS)
    metrics = [Metric(key, rng.random(), BASE_TS + step, step) for step in range(steps) for key in KEYS]
    run_id = client.create_run(client.create_experiment(f"batch-{label}")).info.run_id
    t0 = time.perf_counter()
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    out["log_batch"] = time.perf_counter() - t0
    client.set_terminated(run_id)
    stored = len(client.get_metric_history(run_id, KEYS[0]))
    if stored != steps:
        raise RuntimeError(f"{label}: stored {stored} values of {KEYS[0]}, sent {steps}")

    runs = sizes["runs"]
    payloads = [
        (
            [Param(f"p{k}", f"value-{i % 7}-{k}") for k in range(10)],
            [Metric(key, rng.random(), BASE_TS, 0) for key in KEYS],
        )
        for i in range(runs)
    ]
    t0 = time.perf_counter()
    for i, (params, values) in enumerate(payloads):
        run = client.create_run(experiment_id, run_name=f"run-{i}")
        client.log_batch(run.info.run_id, metrics=values, params=params)
        client.set_terminated(run.info.run_id)
    out["runs"] = time.perf_counter() - t0

    def search() -> list[Any]:
        return list(client.search_runs([experiment_id], FILTER, order_by=ORDER, max_results=1000))

    expected = sum(1 for _params, values in payloads if values[0].value > 0.5)
    found = search()
    if len(found) != expected:
        raise RuntimeError(f"{label}: search found {len(found)} runs, expected {expected}")
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        search()
        times.append(time.perf_counter() - t0)
    out["search"] = statistics.median(times)
    out["search_hits"] = float(expected)
    return out


def raw_workload(server: Server, token: str | None, label: str, sizes: dict[str, int], reps: int) -> dict[str, float]:
    """The same requests as :func:`workload` (same bodies, MLflow's REST API), sent with a bare
    keep-alive ``http.client`` connection: what is left is (almost) only the server's own time."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"

    def post(path: str, body: Any) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request("POST", f"/api/2.0/mlflow/{path}", body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        if response.status != 200:
            raise RuntimeError(f"{label}: {path} -> {response.status} {raw[:300]!r}")
        return json.loads(raw) if raw else {}

    rng = random.Random(11)
    out: dict[str, float] = {}
    experiment_id = post("experiments/create", {"name": f"raw-{label}"})["experiment_id"]
    batch_experiment = post("experiments/create", {"name": f"raw-batch-{label}"})["experiment_id"]
    run_id = post("runs/create", {"experiment_id": batch_experiment, "start_time": BASE_TS})["run"]["info"]["run_id"]
    steps = sizes["log_batch"] // len(KEYS)
    metrics = [
        {"key": key, "value": rng.random(), "timestamp": BASE_TS + step, "step": step}
        for step in range(steps)
        for key in KEYS
    ]
    bodies = [
        json.dumps({"run_id": run_id, "metrics": metrics[i : i + 1000]}).encode() for i in range(0, len(metrics), 1000)
    ]
    t0 = time.perf_counter()
    for body in bodies:
        post("runs/log-batch", body)
    out["log_batch"] = time.perf_counter() - t0

    payloads = [
        (
            [{"key": f"p{k}", "value": f"value-{i % 7}-{k}"} for k in range(10)],
            [{"key": key, "value": rng.random(), "timestamp": BASE_TS, "step": 0} for key in KEYS],
        )
        for i in range(sizes["runs"])
    ]
    t0 = time.perf_counter()
    for i, (params, values) in enumerate(payloads):
        run = post("runs/create", {"experiment_id": experiment_id, "run_name": f"run-{i}", "start_time": BASE_TS})
        new_id = run["run"]["info"]["run_id"]
        post("runs/log-batch", {"run_id": new_id, "metrics": values, "params": params})
        post("runs/update", {"run_id": new_id, "status": "FINISHED", "end_time": BASE_TS + 1})
    out["runs"] = time.perf_counter() - t0

    query = {"experiment_ids": [experiment_id], "filter": FILTER, "order_by": ORDER, "max_results": 1000}
    expected = sum(1 for _params, values in payloads if values[0]["value"] > 0.5)
    found = len(post("runs/search", query).get("runs", []))
    if found != expected:
        raise RuntimeError(f"{label}: raw search found {found} runs, expected {expected}")
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        post("runs/search", query)
        times.append(time.perf_counter() - t0)
    out["search"] = statistics.median(times)
    out["search_hits"] = float(expected)
    conn.close()
    return out


def measure(server: Server, token: str | None, label: str, sizes: dict[str, int], reps: int) -> dict[str, float]:
    """Point the MLflow client at ``server`` and run the workloads."""
    import mlflow

    os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    if token:
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
    mlflow.set_tracking_uri(f"http://127.0.0.1:{server.port}")
    print(f"  .. {label}: MLflow client", file=sys.stderr, flush=True)
    with contextlib.redirect_stdout(io.StringIO()):  # the client prints a "View run" link per run
        results = {f"client_{k}": v for k, v in workload(label, sizes, reps).items()}
    print(f"  .. {label}: raw HTTP", file=sys.stderr, flush=True)
    results.update({f"raw_{k}": v for k, v in raw_workload(server, token, label, sizes, reps).items()})
    return results


def with_server(start: Callable[[], Server], body: Callable[[Server], dict[str, float]]) -> dict[str, float]:
    server = start()
    try:
        return body(server)
    finally:
        server.stop()


def report(results: dict[str, dict[str, float]], sizes: dict[str, int]) -> None:
    keel, peer = results["keel"], results["mlflow"]
    rows = [
        ("log_batch", f"log_batch {sizes['log_batch']:,} metrics (1,000 per call)", sizes["log_batch"], "metrics/s"),
        ("runs", f"{sizes['runs']:,} runs (create, log_batch 10+10, terminate)", sizes["runs"], "runs/s"),
        ("search", f"search_runs {FILTER!r} by {ORDER[0]!r}", 0, "ms"),
    ]
    for prefix, title in (
        ("client_", "The MLflow client (mlflow-skinny, MlflowClient), end to end"),
        ("raw_", "The same requests on a bare keep-alive HTTP connection (the servers' own time)"),
    ):
        print()
        print(title)
        print(f"  {'workload':<60} {'MLflow server':>16} {'keel server':>16} {'keel faster':>12}  target >= 10x")
        for key, text, count, unit in rows:
            a_s, b_s = peer[prefix + key], keel[prefix + key]
            if unit == "ms":
                hits = int(keel[prefix + "search_hits"])
                text = f"{text} ({hits} hits)"
                a, b = f"{a_s * 1000:.1f} ms", f"{b_s * 1000:.1f} ms"
            else:
                a, b = f"{count / a_s:,.0f} {unit}", f"{count / b_s:,.0f} {unit}"
            ratio = a_s / b_s
            print(f"  {text:<60} {a:>16} {b:>16} {fmt_ratio(ratio):>12}  {'met' if ratio >= 10 else 'NOT met'}")
    print()
    print("One server process each, fresh SQLite stores, 127.0.0.1, measured one after the other in this run.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlflow-python", default=str(DEFAULT_MLFLOW_PYTHON), help="python of MLflow's venv")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--reps", type=int, default=5, help="timed searches (median)")
    args = parser.parse_args()
    if not Path(args.mlflow_python).exists():
        print(f"no MLflow venv at {args.mlflow_python}: make bench/.venv-mlflow/.installed", file=sys.stderr)
        return 2
    args.mlflow_python = os.path.abspath(args.mlflow_python)  # the servers run in their own folders
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    sizes = QUICK if args.quick else FULL
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="keel-bench-mlflow-") as tmp:
        folder = Path(tmp)
        (folder / "mlflow").mkdir()
        (folder / "keel").mkdir()
        results["mlflow"] = with_server(
            lambda: start_mlflow(args.mlflow_python, folder / "mlflow", 1),
            lambda server: measure(server, None, "mlflow", sizes, args.reps),
        )
        token = keel_token(sys.executable, f"sqlite:///{folder / 'keel' / 'keel.db'}")
        results["keel"] = with_server(
            lambda: start_keel(sys.executable, folder / "keel", 1, token),
            lambda server: measure(server, token, "keel", sizes, args.reps),
        )
    report(results, sizes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
