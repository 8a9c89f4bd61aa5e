"""One MLflow workload in a fresh process (run by bench/tracking.py with the MLflow venv).

SQLite tracking store in ``--dir``. Prints one ``@@RESULT {json}`` line.
MLflow's calls are synchronous: each returns once its data is committed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    BATCH_KEYS,
    PROJECT,
    SEARCH_FILTER,
    SEARCH_ORDER,
    Profiler,
    base_info,
    emit,
    parse_args,
    peak_rss_mb,
    run_payloads,
    sqlite_scalar,
    timed_median,
    values,
)

WORKLOADS = ["info", "init", "log_metric", "log_batch", "runs", "search"]

for _name, _value in {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_ALLOW_FILE_STORE": "true",
}.items():
    os.environ.setdefault(_name, _value)


def open_store(folder: str) -> str:
    """Point MLflow at ``folder``/mlflow.db (created and migrated here); return its path."""
    import mlflow

    Path(folder).mkdir(parents=True, exist_ok=True)
    os.chdir(folder)  # the default artifact root (./mlruns) lands here too
    db = str(Path(folder, "mlflow.db").resolve())
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    mlflow.set_experiment(PROJECT)
    return db


def stored_metrics(db: str, run_id: str) -> int:
    return sqlite_scalar(db, "SELECT COUNT(*) FROM metrics WHERE run_uuid = ?", (run_id,))


def init(args, db: str) -> dict:
    """Create the store (schema migration) in its own process, before the measured one."""
    return {"peak_rss_mb": peak_rss_mb()}


def log_metric(args, db: str) -> dict:
    import mlflow

    vals = values(args.n)
    run = mlflow.start_run(run_name="log-metric")
    with Profiler(args.profile):
        t0 = time.perf_counter()
        for i, v in enumerate(vals):
            mlflow.log_metric("loss", v, step=i)
        mlflow.end_run()
        elapsed = time.perf_counter() - t0
    rss = peak_rss_mb()
    return {
        "seconds": elapsed,
        "rate": args.n / elapsed,
        "peak_rss_mb": rss,
        "stored": stored_metrics(db, run.info.run_id),
    }


def log_batch(args, db: str) -> dict:
    import mlflow
    from mlflow.entities import Metric
    from mlflow.utils.validation import MAX_METRICS_PER_BATCH

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(PROJECT)
    vals = values(args.n)
    keys = BATCH_KEYS
    nkeys = len(keys)
    run_id = client.create_run(experiment.experiment_id, run_name="log-batch").info.run_id
    chunk = MAX_METRICS_PER_BATCH  # MLflow refuses more metrics per log_batch call
    with Profiler(args.profile):
        t0 = time.perf_counter()
        for first in range(0, args.n, chunk):
            ts = int(time.time() * 1000)
            batch = [Metric(keys[i % nkeys], vals[i], ts, i // nkeys) for i in range(first, min(args.n, first + chunk))]
            client.log_batch(run_id, metrics=batch)
        client.set_terminated(run_id)
        elapsed = time.perf_counter() - t0
    rss = peak_rss_mb()
    return {
        "seconds": elapsed,
        "rate": args.n / elapsed,
        "peak_rss_mb": rss,
        "chunk": chunk,
        "stored": stored_metrics(db, run_id),
    }


def runs(args, db: str) -> dict:
    import mlflow

    payloads = run_payloads(args.n)
    with Profiler(args.profile):
        t0 = time.perf_counter()
        for i, (params, metrics) in enumerate(payloads):
            with mlflow.start_run(run_name=f"run-{i}"):
                mlflow.log_params(params)
                mlflow.log_metrics(metrics)
        elapsed = time.perf_counter() - t0
    rss = peak_rss_mb()
    return {
        "seconds": elapsed,
        "rate": args.n / elapsed,
        "peak_rss_mb": rss,
        "stored": sqlite_scalar(db, "SELECT COUNT(*) FROM runs WHERE status = 'FINISHED'"),
        "stored_params": sqlite_scalar(db, "SELECT COUNT(*) FROM params"),
        "stored_metrics": sqlite_scalar(db, "SELECT COUNT(*) FROM latest_metrics"),
    }


def search(args, db: str) -> dict:
    import mlflow

    client = mlflow.MlflowClient()
    experiment_id = client.get_experiment_by_name(PROJECT).experiment_id

    def query():
        return client.search_runs(
            [experiment_id],
            filter_string=SEARCH_FILTER,
            order_by=[SEARCH_ORDER],
            max_results=args.limit,
        )

    with Profiler(args.profile):
        median, times, result = timed_median(query, args.reps)
    return {
        "ms": median * 1000,
        "times_ms": [t * 1000 for t in times],
        "count": len(result),
        "more": bool(result.token),
        "first_m1": [r.data.metrics.get("m1") for r in result[:3]],
        "total_runs": sqlite_scalar(db, "SELECT COUNT(*) FROM runs"),
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    args = parse_args(WORKLOADS)
    info = base_info()
    if args.workload == "info":
        t0 = time.perf_counter()
        import mlflow

        emit({**info, "version": mlflow.__version__, "import_seconds": time.perf_counter() - t0})
        return
    db = open_store(args.dir)
    result = globals()[args.workload](args, db)
    emit({**info, **result})


if __name__ == "__main__":
    main()
