"""The same MLflow client code against an MLflow server and a keel server, side by side.

    .venv/bin/python bench/mlflow_compat.py --mlflow-python bench/.venv-mlflow/bin/python
    .venv/bin/python bench/mlflow_compat.py --quick          # smaller sizes

Both servers are real processes on 127.0.0.1 with a fresh SQLite store each
(``mlflow server`` from MLflow's venv, with its default proxied artifacts, and
``python -m keel.server``), one worker process each. This process is the client:
the real ``mlflow`` package (``MlflowClient``), pointed at one server, then the
other (``MLFLOW_TRACKING_TOKEN`` is a keel API token for keel). Workloads:

- ``log_batch``: 100,000 metrics (10 keys x 10,000 steps) into one run with
  ``MlflowClient.log_batch``, in chunks of 1,000 (MLflow's per-request limit).
- ``runs``: 1,000 x (``create_run``, ``log_batch`` of 10 params + 10 metrics,
  ``set_terminated``).
- ``search``: ``search_runs`` over those runs, ``metrics.m0 > 0.5`` ordered by
  ``metrics.m1 ASC``, every match (up to 1,000); median of ``--reps`` after a warm-up.
- ``models``: 200 logged models of one run, each with the calls
  ``mlflow.<flavor>.log_model(..., registered_model_name=...)`` makes (``Model.log``
  itself needs pandas, which mlflow-skinny lacks): ``create_logged_model`` with params,
  ``log_outputs``, ``log_model_params``, ``log_batch`` of 2 metrics with the model's id,
  ``log_model_artifacts`` (an ``MLmodel`` and a config file, through the artifact proxy),
  ``finalize_logged_model``, ``register_model("models:/m-<id>")``. On bare HTTP: the 8
  writes of each (through the client it is 14 requests a model: it reads the model back
  and tries to create the registered model each time).
- ``traces``: 300 traces of 5 spans (``@mlflow.trace`` functions and ``mlflow.start_span``
  blocks), then ``mlflow.search_traces`` until it returns them all with their spans: once
  exported as each trace ends (``MLFLOW_ENABLE_ASYNC_TRACE_LOGGING=false``), once by the
  client's default background export (its task queue made large enough to keep every task;
  its span queue keeps 2,048 spans and drops the rest, hence 300 traces). The client
  talks to each server by the version it reports: to MLflow 3.17 it sends each span over
  OTLP (``/v1/traces``) and the trace's info; to keel (3.3.0) the info and one
  ``traces.json``. So there is no bare-HTTP row for traces.

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
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from tracking import DEFAULT_MLFLOW_PYTHON, fmt_ratio  # noqa: E402

from server import Server, free_port, keel_token, mlflow_env, start_keel, wait_ready  # noqa: E402

FULL = {"log_batch": 100_000, "runs": 1_000, "models": 200, "traces": 300}
QUICK = {"log_batch": 20_000, "runs": 200, "models": 40, "traces": 100}
KEYS = [f"m{k}" for k in range(10)]
FILTER = "metrics.m0 > 0.5"
ORDER = ["metrics.m1 ASC"]
BASE_TS = 1_700_000_000_000
REGISTERED = "bench-logged-model"
SPANS_PER_TRACE = 5
MLMODEL = """flavors:
  tinyflavor:
    config_file: config.json
mlflow_version: 3.17.2
"""


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
    out.update(logged_models(label, sizes["models"]))
    out.update(traces(label, sizes["traces"], background=False))
    out.update(traces(label, sizes["traces"], background=True))
    return out


def logged_models(label: str, n: int) -> dict[str, float]:
    """``n`` x the calls ``mlflow.<flavor>.log_model(..., registered_model_name=...)`` makes for a
    run's model (``Model.log`` itself needs pandas with mlflow-skinny): create the logged model
    with its params, record it as the run's output, log its metrics, upload its files (an
    ``MLmodel`` and a config), finalize it, ``register_model("models:/m-<id>")``."""
    import mlflow
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric, Param

    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment(f"models-{label}")
    run_id = client.create_run(experiment_id, run_name="train").info.run_id
    client.log_batch(run_id, params=[Param("lr", "0.01"), Param("layers", "4")])
    with tempfile.TemporaryDirectory(prefix="keel-bench-model-") as tmp:
        files = Path(tmp) / "model"
        files.mkdir()
        (files / "MLmodel").write_text(MLMODEL)
        (files / "config.json").write_text(json.dumps({"layers": 4, "weights": [0.1] * 64}))
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):  # register_model prints two lines per version
            for i in range(n):
                model = client.create_logged_model(
                    experiment_id, name=f"model-{i}", source_run_id=run_id, params={"lr": "0.01", "layers": "4"}
                )
                client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=i)])
                client.log_model_params(model.model_id, {"candidate": str(i)})
                metrics = [Metric(k, 0.5 + i / (4 * n), BASE_TS + i, i, model_id=model.model_id) for k in ("acc", "f1")]
                client.log_batch(run_id, metrics=metrics)
                client.log_model_artifacts(model.model_id, str(files))
                client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
                version = mlflow.register_model(f"models:/{model.model_id}", REGISTERED)
        seconds = time.perf_counter() - t0
        if version.version not in (n, str(n)) or version.source != f"models:/{model.model_id}":
            raise RuntimeError(f"{label}: the last registration is {REGISTERED} v{version.version} of {version.source}")
        found = client.search_logged_models(experiment_ids=[experiment_id], max_results=n + 10)
        if len(found) != n or any(m.status != LoggedModelStatus.READY for m in found):
            raise RuntimeError(f"{label}: {len(found)} logged models found, {n} made")
        local = mlflow.artifacts.download_artifacts(f"models:/{REGISTERED}/{n}", dst_path=str(Path(tmp) / "back"))
        if (Path(local) / "config.json").read_bytes() != (files / "config.json").read_bytes():
            raise RuntimeError(f"{label}: models:/{REGISTERED}/{n} does not read back the files uploaded")
    client.set_terminated(run_id)
    return {"models": seconds}


def traces(label: str, n: int, background: bool) -> dict[str, float]:
    """``n`` traces of :data:`SPANS_PER_TRACE` spans (``@mlflow.trace`` functions calling each
    other, ``mlflow.start_span`` blocks), then ``mlflow.search_traces`` until it returns them
    all with all their spans; seconds from the first call to that answer, and to the last call's
    return. Exported as each trace ends (``MLFLOW_ENABLE_ASYNC_TRACE_LOGGING=false``), or with
    ``background`` by MLflow's default queue of export tasks (10 threads), made large enough to
    keep every task (by default it drops tasks past 1,000), and polled for. The background
    export's span queue (OpenTelemetry's batch processor) drops spans past 2,048: keep
    ``n * SPANS_PER_TRACE`` below that."""
    if background and n * SPANS_PER_TRACE > 2048:
        raise ValueError(f"{n} traces of {SPANS_PER_TRACE} spans overflow the client's span queue (2,048)")
    import mlflow
    from mlflow.entities import SpanType

    os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "true" if background else "false"
    os.environ["MLFLOW_ASYNC_TRACE_LOGGING_MAX_QUEUE_SIZE"] = str(2 * (SPANS_PER_TRACE + 1) * n)
    mlflow.tracing.reset()  # a new exporter for this server and these settings
    mode = "background" if background else "sync"
    experiment_id = mlflow.MlflowClient().create_experiment(f"traces-{mode}-{label}")
    mlflow.set_experiment(experiment_id=experiment_id)

    @mlflow.trace(span_type=SpanType.RETRIEVER)
    def retrieve(question: str) -> list[str]:
        return [f"doc-{len(question) % 7}-{k}" for k in range(3)]

    @mlflow.trace(span_type=SpanType.LLM)
    def generate(question: str, docs: list[str]) -> str:
        with mlflow.start_span("prompt", span_type=SpanType.PARSER) as span:
            span.set_inputs({"question": question, "docs": docs})
            span.set_attributes({"template": "qa-v2", "top_k": len(docs)})
            span.set_outputs(f"Answer {question} from {', '.join(docs)}")
        return f"{len(docs)} docs for {question}"

    @mlflow.trace(name="answer", span_type=SpanType.CHAIN)
    def answer(question: str) -> str:
        docs = retrieve(question)
        with mlflow.start_span("rerank", span_type=SpanType.RERANKER) as span:
            span.set_inputs(docs)
            docs = sorted(docs, reverse=True)
            span.set_outputs(docs)
        return generate(question, docs)

    t0 = time.perf_counter()
    for i in range(n):
        answer(f"question {i}?")
    logged = time.perf_counter() - t0
    deadline = time.monotonic() + 300
    found: list[Any] = []
    while time.monotonic() < deadline:
        # the cheap listing first; the spans once every trace is listed
        if len(mlflow.search_traces(locations=[experiment_id], include_spans=False, return_type="list")) >= n:
            found = mlflow.search_traces(locations=[experiment_id], return_type="list")
            if all(len(t.data.spans) == SPANS_PER_TRACE for t in found):
                break
        time.sleep(0.05)
    seconds = time.perf_counter() - t0
    if background:
        mlflow.flush_trace_async_logging(terminate=True)
    spans = sorted({len(t.data.spans) for t in found})
    if len(found) != n or spans != [SPANS_PER_TRACE]:
        raise RuntimeError(f"{label}: search_traces returned {len(found)} traces of {spans} spans, logged {n}")
    return {f"traces_{mode}": seconds, f"traces_{mode}_calls": logged}


def raw_workload(server: Server, token: str | None, label: str, sizes: dict[str, int], reps: int) -> dict[str, float]:
    """The same requests as :func:`workload` (same bodies, MLflow's REST API), sent with a bare
    keep-alive ``http.client`` connection: what is left is (almost) only the server's own time."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"

    def send(method: str, path: str, body: Any, content_type: str = "application/json") -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={**headers, "Content-Type": content_type})
        response = conn.getresponse()
        raw = response.read()
        if response.status != 200:
            raise RuntimeError(f"{label}: {method} {path} -> {response.status} {raw[:300]!r}")
        return json.loads(raw) if raw else {}

    def post(path: str, body: Any) -> Any:
        return send("POST", f"/api/2.0/mlflow/{path}", body)

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

    # logged models: the requests of :func:`logged_models` (the registered model made once)
    n = sizes["models"]
    experiment_id = post("experiments/create", {"name": f"raw-models-{label}"})["experiment_id"]
    run_id = post("runs/create", {"experiment_id": experiment_id, "start_time": BASE_TS})["run"]["info"]["run_id"]
    files = {"MLmodel": MLMODEL.encode(), "config.json": json.dumps({"layers": 4, "weights": [0.1] * 64}).encode()}
    registered = f"{REGISTERED}-raw"
    post("registered-models/create", {"name": registered})
    model_params = [{"key": "lr", "value": "0.01"}, {"key": "layers", "value": "4"}]
    t0 = time.perf_counter()
    for i in range(n):
        create = {"experiment_id": experiment_id, "name": f"model-{i}", "source_run_id": run_id, "params": model_params}
        info = post("logged-models", create)["model"]["info"]
        model_id = info["model_id"]
        post("runs/outputs", {"run_id": run_id, "models": [{"model_id": model_id, "step": i}]})
        post(
            f"logged-models/{model_id}/params",
            {"model_id": model_id, "params": [{"key": "candidate", "value": str(i)}]},
        )
        metrics = [
            {"key": k, "value": 0.5 + i / (4 * n), "timestamp": BASE_TS + i, "step": i, "model_id": model_id}
            for k in ("acc", "f1")
        ]
        post("runs/log-batch", {"run_id": run_id, "metrics": metrics})
        root = info["artifact_uri"].removeprefix("mlflow-artifacts:")
        for name, data in files.items():
            send("PUT", f"/api/2.0/mlflow-artifacts/artifacts{root}/{name}", data, "application/octet-stream")
        send(
            "PATCH", f"/api/2.0/mlflow/logged-models/{model_id}", {"model_id": model_id, "status": "LOGGED_MODEL_READY"}
        )
        version = post(
            "model-versions/create",
            {"name": registered, "source": f"models:/{model_id}", "run_id": run_id, "model_id": model_id},
        )["model_version"]
    out["models"] = time.perf_counter() - t0
    if str(version["version"]) != str(n):
        raise RuntimeError(f"{label}: raw registration made {registered} v{version['version']}, expected v{n}")
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


def start_mlflow(python: str, folder: Path) -> Server:
    """``mlflow server`` as it starts by default: artifacts proxied through the server
    (``mlflow-artifacts:/``, kept in ``--artifacts-destination``), as keel serves them, so the
    model files and trace data go over HTTP to both servers. One worker."""
    port = free_port()
    log = folder / f"mlflow-{port}.log"
    cmd = [str(Path(python).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    cmd += ["--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", "1"]
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=mlflow_env(), cwd=folder)
    return wait_ready(Server("mlflow", port, process, log), "/health", timeout=180)


def with_server(start: Callable[[], Server], body: Callable[[Server], dict[str, float]]) -> dict[str, float]:
    server = start()
    try:
        return body(server)
    finally:
        server.stop()


def report(results: dict[str, dict[str, float]], sizes: dict[str, int], load_before: tuple[float, ...]) -> None:
    keel, peer = results["keel"], results["mlflow"]
    rows = [
        ("log_batch", f"log_batch {sizes['log_batch']:,} metrics (1,000 per call)", sizes["log_batch"], "metrics/s"),
        ("runs", f"{sizes['runs']:,} runs (create, log_batch 10+10, terminate)", sizes["runs"], "runs/s"),
        ("search", f"search_runs {FILTER!r} by {ORDER[0]!r}", 0, "ms"),
        ("models", f"{sizes['models']:,} logged models (create, params, metrics, 2 files, finalize, register)",
         sizes["models"], "models/s"),
        ("traces_sync", f"{sizes['traces']:,} traces x {SPANS_PER_TRACE} spans, sync export, until search_traces"
         " has all", sizes["traces"], "traces/s"),
        ("traces_background", f"{sizes['traces']:,} traces x {SPANS_PER_TRACE} spans, background export, until"
         " search_traces has all", sizes["traces"], "traces/s"),
    ]  # fmt: skip
    width = max(len(text) for _key, text, _count, _unit in rows) + 12  # room for the search's hits
    for prefix, title in (
        ("client_", "The MLflow client (mlflow-skinny, MlflowClient), end to end"),
        ("raw_", "The same requests on a bare keep-alive HTTP connection (the servers' own time)"),
    ):
        print()
        print(title)
        print(f"  {'workload':<{width}} {'MLflow server':>16} {'keel server':>16} {'keel faster':>12}  target >= 10x")
        for key, text, count, unit in rows:
            if prefix + key not in keel:
                continue
            a_s, b_s = peer[prefix + key], keel[prefix + key]
            if unit == "ms":
                hits = int(keel[prefix + "search_hits"])
                text = f"{text} ({hits} hits)"
                a, b = f"{a_s * 1000:.1f} ms", f"{b_s * 1000:.1f} ms"
            else:
                a, b = f"{count / a_s:,.0f} {unit}", f"{count / b_s:,.0f} {unit}"
            ratio = a_s / b_s
            print(f"  {text:<{width}} {a:>16} {b:>16} {fmt_ratio(ratio):>12}  {'met' if ratio >= 10 else 'NOT met'}")
    print()
    n = sizes["traces"]
    for label, r in (("MLflow", peer), ("keel", keel)):
        for mode, how in (("sync", "exported as each ends"), ("background", "background export")):
            calls, total = r[f"client_traces_{mode}_calls"], r[f"client_traces_{mode}"]
            print(f"  traces ({how}), {label} server: the {n:,} calls returned after {calls:.2f} s"
                  f" ({calls / n * 1000:.1f} ms each), search_traces had them all after {total:.2f} s")  # fmt: skip
    print("  (no bare-HTTP trace row: the client sends other requests to each server, by the version it reports)")
    print()
    print("One server process each, fresh SQLite stores, 127.0.0.1, measured one after the other in this run.")
    loads = [" ".join(f"{x:.2f}" for x in load) for load in (load_before, os.getloadavg())]
    print(f"Load average (1, 5, 15 min) at the start: {loads[0]}; at the end: {loads[1]} (2 cores shared)")


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
    load_before = os.getloadavg()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="keel-bench-mlflow-") as tmp:
        folder = Path(tmp)
        (folder / "mlflow").mkdir()
        (folder / "keel").mkdir()
        results["mlflow"] = with_server(
            lambda: start_mlflow(args.mlflow_python, folder / "mlflow"),
            lambda server: measure(server, None, "mlflow", sizes, args.reps),
        )
        token = keel_token(sys.executable, f"sqlite:///{folder / 'keel' / 'keel.db'}")
        results["keel"] = with_server(
            lambda: start_keel(sys.executable, folder / "keel", 1, token),
            lambda server: measure(server, token, "keel", sizes, args.reps),
        )
    report(results, sizes, load_before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
