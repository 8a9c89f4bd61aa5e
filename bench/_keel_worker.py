"""One keel workload in a fresh process (run by bench/tracking.py with keel's venv).

Prints one ``@@RESULT {json}`` line. Every timing runs from the first call
to the moment the data is durable (``finish()`` waits for the commit).
"""

from __future__ import annotations

import os
import random
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    BATCH_KEYS,
    PROJECT,
    SEARCH_FILTER,
    SEARCH_ORDER,
    SEED,
    Profiler,
    base_info,
    emit,
    parse_args,
    peak_rss_mb,
    run_payload,
    run_payloads,
    sqlite_scalar,
    timed_median,
    values,
)

WORKLOADS = ["info", "init", "log_metric", "log_batch", "runs", "search", "populate"]


def open_workspace(folder: str) -> str:
    """Use (creating if needed) the workspace in ``folder``; return its database path."""
    from keel.services.workspace import find_workspace, init_workspace

    for name in ("KEEL_URI", "KEEL_OBJECTS", "KEEL_PROJECT"):
        os.environ.pop(name, None)
    Path(folder).mkdir(parents=True, exist_ok=True)
    if find_workspace(folder) != Path(folder).resolve():
        init_workspace(folder)
    os.chdir(folder)
    return str(Path(folder, ".keel", "keel.db"))


def stored_metrics(db: str, run_id: str) -> int:
    """Metric values stored for a run, read back through keel's public API (after timing)."""
    import keel

    client = keel.Client()
    return sum(summary.count for summary in client.metric_summaries(run_id))


def count_runs(db: str) -> int | None:
    """All runs in the store (a plain count; None if the schema has no ``runs`` table)."""
    try:
        return sqlite_scalar(db, "SELECT COUNT(*) FROM runs")
    except sqlite3.Error:
        return None


def init(args, db: str) -> dict:
    """Create the store (schema migration) in its own process, before the measured one."""
    return {"peak_rss_mb": peak_rss_mb()}


def log_metric(args, db: str) -> dict:
    import keel

    vals = values(args.n)
    run = keel.start_run(project=PROJECT, name="log-metric")
    with Profiler(args.profile):
        t0 = time.perf_counter()
        for i, v in enumerate(vals):
            run.log_metric("loss", v, step=i)
        run.finish()
        elapsed = time.perf_counter() - t0
    rss = peak_rss_mb()
    return {
        "seconds": elapsed,
        "rate": args.n / elapsed,
        "peak_rss_mb": rss,
        "stored": stored_metrics(db, run.id),
    }


def log_batch(args, db: str) -> dict:
    import keel

    vals = values(args.n)
    keys = BATCH_KEYS
    nkeys = len(keys)
    run = keel.start_run(project=PROJECT, name="log-batch")
    with Profiler(args.profile):
        t0 = time.perf_counter()
        for i, v in enumerate(vals):
            run.log_metric(keys[i % nkeys], v, step=i // nkeys)
        run.finish()
        elapsed = time.perf_counter() - t0
    rss = peak_rss_mb()
    return {
        "seconds": elapsed,
        "rate": args.n / elapsed,
        "peak_rss_mb": rss,
        "stored": stored_metrics(db, run.id),
    }


def runs(args, db: str) -> dict:
    import keel

    payloads = run_payloads(args.n)
    keel.Client()  # open (and migrate) the store outside the timing, like set_experiment
    with Profiler(args.profile):
        t0 = time.perf_counter()
        for i, (params, metrics) in enumerate(payloads):
            with keel.start_run(project=PROJECT, name=f"run-{i}"):
                keel.log_params(params)
                keel.log_metrics(metrics)
        elapsed = time.perf_counter() - t0
    rss = peak_rss_mb()
    return {
        "seconds": elapsed,
        "rate": args.n / elapsed,
        "peak_rss_mb": rss,
        **stored_runs(args.n),
    }


def stored_runs(n: int) -> dict:
    """Finished runs, params and latest metrics read back through the public API."""
    import keel

    found = keel.Client().search_runs(PROJECT, limit=max(1, n))
    return {
        "stored": sum(1 for r in found if r.status == "finished"),
        "stored_params": sum(len(r.params) for r in found),
        "stored_metrics": sum(len(r.metrics) for r in found),
    }


def search(args, db: str) -> dict:
    import keel

    client = keel.Client()

    def query():
        return client.search_runs(PROJECT, filter=SEARCH_FILTER, order_by=[SEARCH_ORDER], limit=args.limit)

    with Profiler(args.profile):
        median, times, result = timed_median(query, args.reps)
    return {
        "ms": median * 1000,
        "times_ms": [t * 1000 for t in times],
        "count": len(result),
        "more": result.next_page_token is not None,
        "first_m1": [r.metrics.get("m1") for r in result[:3]],
        "total_runs": count_runs(db),
        "peak_rss_mb": peak_rss_mb(),
    }


def populate(args, db: str) -> dict:
    """``n`` finished runs of 10 params + 10 metrics, through TrackingService.

    One ``start_run`` per run (as the SDK does), then the logged rows of a
    few thousand runs per ``write_batch`` (what the background writer hands it).
    """
    from keel.core.batch import WriteBatch
    from keel.core.entities import now_ms
    from keel.core.values import encode_param
    from keel.services.tracking import TrackingService
    from keel.services.workspace import open_store

    service = TrackingService(open_store())
    rng = random.Random(SEED)
    chunk = 5000
    t0 = time.perf_counter()
    started = 0.0
    for first in range(0, args.n, chunk):
        batch = WriteBatch()
        ts = now_ms()
        t1 = time.perf_counter()
        for i in range(first, min(args.n, first + chunk)):
            params, metrics = run_payload(rng, i)
            run_id = service.start_run(PROJECT, f"run-{i}").run_id
            batch.params.extend((run_id, k, *encode_param(k, v), False) for k, v in params.items())
            batch.metrics.extend((run_id, k, v, 0, ts) for k, v in metrics.items())
            batch.run_ends.append((run_id, "finished", ts, None))
        started += time.perf_counter() - t1
        service.write_batch(batch)
    elapsed = time.perf_counter() - t0
    return {
        "seconds": elapsed,
        "start_run_seconds": started,
        "write_seconds": elapsed - started,
        "rate": args.n / elapsed,
        "total_runs": count_runs(db),
    }


def main() -> None:
    args = parse_args(WORKLOADS)
    info = base_info()
    if args.workload == "info":
        import keel

        emit({**info, "version": keel.__version__, "module": os.path.dirname(keel.__file__)})
        return
    db = open_workspace(args.dir)
    result = globals()[args.workload](args, db)
    emit({**info, **result})


if __name__ == "__main__":
    main()
