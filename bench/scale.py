"""keel on a PostgreSQL store of 1,000,000 runs and 100,000,000 metric points: where it bends.

    .venv/bin/python bench/scale.py                  # generate once (a few minutes), then measure
    .venv/bin/python bench/scale.py --rebuild        # generate the store again
    .venv/bin/python bench/scale.py --quick          # a small store in its own folder: a smoke run

The bench starts its own PostgreSQL 15 (``tests/servers.py``'s helper, with a folder
kept between runs: ``--data``, default /tmp/keel-scale) and, when the folder holds no
store of the asked size, migrates a keel store in it and fills it
(``bench/_scale_data.py``): 1,000,000 runs over 4 projects, each with 5 params, 2 tags
and 3 one-point metrics, and 1,000 of them with a 100,000-point ``train_loss`` series
(100,000,000 points), in keel's exact storage format. Then it measures, against the
targets of issue 20:

- search with a filter and an order (``metrics.acc > 0.9 and params.model = 'vit-b'``
  by ``metrics.acc``, and other shapes), first page of 50 runs, through
  ``TrackingService.search_runs`` in process: p50/p95 of ``--reps`` (target p95 <= 100 ms);
- the metric history of a 100,000-point series downsampled for a chart
  (``metric_history(..., max_points=600)``), in process (target <= 100 ms);
- the real server (``python -m keel.server`` on the store, 1 worker) serving the web
  UI's pages: the runs table of a project of 250,000 runs, a run's page (with its
  100,000-point chart), the compare page of 2 runs; and the REST calls behind them;
  server time (``Server-Timing``) medians (target <= 300 ms);
- ingest: ``bench/server.py``'s load (8 clients, batches of 1,000 metrics, a read after
  each) against the server on this PostgreSQL with 1, 2 and 4 workers; the server's and
  the database's CPU seconds per million metrics, read from /proc, which is what
  docs/scale.md sizes deployments from.

Benchmarks assert nothing: they print a table (figure, target, met?).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _scale_data import LONG_KEY, KeptPostgres, generate, human, points_total, tree_cpu  # noqa: E402

DATABASE = "keel_scale"
MARKER = "generated.json"


def run_id_of(i: int) -> str:
    """The run id of generated run ``i`` (see ``_scale_data._stage_sql``)."""
    return hashlib.md5(f"keel-scale-{i}".encode()).hexdigest()  # noqa: S324 - an id, not a secret


def long_run(i: int, runs: int, long_runs: int) -> int:
    """The index of the ``i``-th run with a long series."""
    return 1 + i * max(1, runs // long_runs)


def ensure_store(pg: KeptPostgres, args: argparse.Namespace) -> dict[str, Any]:
    """The generated store of the asked size: reused when the marker matches, else made."""
    wanted = {"runs": args.runs, "long_runs": args.long_runs, "long_points": args.long_points, "version": 1}
    marker = Path(args.data) / MARKER
    if not args.rebuild and marker.exists() and pg.database_exists(DATABASE):
        found = json.loads(marker.read_text())
        if {k: found.get(k) for k in wanted} == wanted:
            print(f"reusing the generated store in {args.data} (--rebuild to make it again)", file=sys.stderr)
            return dict(found)
    marker.unlink(missing_ok=True)
    print(
        f"generating {human(args.runs)} runs and {human(points_total(args.runs, args.long_runs, args.long_points))}"
        f" metric points in {args.data} ...",
        file=sys.stderr,
        flush=True,
    )
    from keel.meta.engine import open_database
    from keel.meta.migrate import ensure_schema

    t0 = time.perf_counter()
    pg.create(DATABASE)
    db = open_database(pg.url_of(DATABASE))
    try:
        ensure_schema(db)
    finally:
        db.close()
    timings = generate(pg, DATABASE, args.runs, args.long_runs, args.long_points,
                       log=lambda line: print(line, file=sys.stderr, flush=True))  # fmt: skip
    info = {**wanted, "seconds": time.perf_counter() - t0, "parts": timings}
    with pg.connect(DATABASE) as conn:
        info["database_bytes"] = int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])
    marker.write_text(json.dumps(info, indent=1))
    print(f"generated in {info['seconds']:.0f} s, {info['database_bytes'] / 1e9:.1f} GB", file=sys.stderr)
    return info


# -- timing helpers ----------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(fn: Any, reps: int) -> dict[str, Any]:
    """One warm-up call, then ``reps`` timed calls: p50/p95/max in ms and the last result."""
    result = fn(0)
    times = []
    for i in range(reps):
        t0 = time.perf_counter()
        result = fn(i + 1)
        times.append((time.perf_counter() - t0) * 1000)
    return {"p50": statistics.median(times), "p95": percentile(times, 0.95), "max": max(times), "result": result}


SEARCHES = [
    # (label, projects, filter, order): the first one is the figure
    ("filter+order, one project", ["vision"], "metrics.acc > 0.9 and params.model = 'vit-b'", ["metrics.acc desc"]),
    ("filter+order, all projects", None, "metrics.acc > 0.9 and params.model = 'vit-b'", ["metrics.acc desc"]),
    ("param+tag filter, metric order", ["nlp"], "params.optimizer = 'adam' and tags.team = 'c'", ["metrics.f1 desc"]),
    ("rare filter, metric order", None, "metrics.loss < 0.001 and params.batch_size = 64", ["metrics.loss asc"]),
    ("runs table default (newest)", ["vision"], None, ["start_time desc"]),
    ("runs table by a metric", ["vision"], None, ["metrics.acc desc", "start_time desc"]),
    ("runs table by a param", ["vision"], None, ["params.lr asc", "start_time desc"]),
]


def measure_in_process(url: str, objects: str, args: argparse.Namespace) -> dict[str, Any]:
    """The service calls, in this process, against the store."""
    from keel.services.tracking import TrackingService
    from keel.services.workspace import open_store

    store = open_store(url, objects, cached=False)
    out: dict[str, Any] = {"search": {}, "calls": {}}
    try:
        service = TrackingService(store)
        for label, projects, flt, order in SEARCHES:
            print(f"  .. search: {label}", file=sys.stderr, flush=True)
            figure = timed(lambda _i, p=projects, f=flt, o=order: service.search_runs(p, f, o, 50), args.reps)
            records, token = figure.pop("result")
            out["search"][label] = {**figure, "rows": len(records), "more": token is not None,
                                    "filter": flt, "order": order, "projects": projects}  # fmt: skip
        long_ids = [run_id_of(long_run(i, args.runs, args.long_runs)) for i in range(args.long_runs)]
        # A different long run each time: the 100,000 points are read from the database every call.
        pick = [long_ids[(i * 7) % len(long_ids)] for i in range(args.reps + 1)]
        print("  .. metric history", file=sys.stderr, flush=True)
        figure = timed(lambda i: service.metric_history(pick[i], LONG_KEY, args.max_points), args.reps)
        out["calls"]["history downsampled"] = {**figure, "points": len(figure.pop("result"))}
        series = timed(lambda i: store_series(service, pick[i]), args.reps)
        out["calls"]["history arrays (read+sort)"] = {**series, "points": len(series.pop("result")[0])}
        full = timed(lambda i: service.metric_history(pick[i], LONG_KEY), max(3, args.reps // 3))
        out["calls"]["history, every point"] = {**full, "points": len(full.pop("result"))}
        one = pick[0]
        calls = {
            "get_run": lambda _i: service.get_run(one),
            "metric_summaries": lambda _i: service.metric_summaries(one),
            "list_artifacts": lambda _i: service.list_artifacts(one),
            "lineage": lambda _i: service.lineage(one),
            "children": lambda _i: service.children(one),
            "list_projects (run counts)": lambda _i: service.list_projects(),
            "get_runs (12, compare)": lambda _i: service.get_runs(long_ids[:12]),
        }
        for label, fn in calls.items():
            figure = timed(fn, args.reps)
            figure.pop("result")
            out["calls"][label] = figure
        out["long_ids"] = long_ids[:4]
    finally:
        store.close()
    return out


def store_series(service: Any, run_id: str) -> tuple[list[int], list[int], list[float]]:
    return service.repo.metric_series(run_id, LONG_KEY)


# -- the server ----------------------------------------------------------------------------
def credentials(url: str, objects: str) -> tuple[str, str]:
    """An admin's API token and a web UI session (user ``scale-bench``, made once)."""
    from keel.errors import AlreadyExists
    from keel.services.auth import AuthStore
    from keel.services.workspace import open_store

    store = open_store(url, objects, cached=False)
    try:
        auth = AuthStore(store.db)
        try:
            auth.create_user("scale-bench", is_admin=True)
        except AlreadyExists:
            pass
        token, _info = auth.create_token("scale-bench", f"bench {time.time():.0f}")
        session = auth.create_session("scale-bench", "password", 3600)
    finally:
        store.close()
    return token, session


def start_server(url: str, objects: str, workers: int, token: str, folder: Path) -> Any:
    from server import Server, free_port, keel_env, wait_ready

    port = free_port()
    log = folder / f"keel-{port}.log"
    cmd = [sys.executable, "-m", "keel.server", "--store", url, "--objects", objects, "--port", str(port),
           "--workers", str(workers), "--log-level", "warning"]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=keel_env(), cwd=folder)
    return wait_ready(Server("keel", port, process, log, {"Authorization": f"Bearer {token}"}), "/api/v1/health")


def measure_pages(pg: KeptPostgres, url: str, objects: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The web UI's pages and the REST calls behind them, timed by the server (Server-Timing)."""
    from urllib.parse import quote

    from server import time_get

    token, session = credentials(url, objects)
    server = start_server(url, objects, 1, token, folder)
    a, b = (run_id_of(long_run(i, args.runs, args.long_runs)) for i in (0, 1))
    flt = quote("metrics.acc > 0.9 and params.model = 'vit-b'")
    order = quote("metrics.acc desc")
    history = f"/api/v1/runs/{a}/metric-history?key={LONG_KEY}"
    pages = {
        f"UI runs table ({human(args.runs // 4)} runs, newest first)": "/ui/projects/vision/runs",
        "UI runs table, filter + metric sort": f"/ui/projects/vision/runs?filter={flt}&sort=metrics.acc&desc=1",
        "UI runs table, 500 rows": "/ui/projects/vision/runs?size=500",
        "UI run page (100k-point chart)": f"/ui/runs/{a}",
        "UI compare page (2 runs, 100k points each)": f"/ui/compare?run={a}&run={b}",
        "UI projects page": "/ui/projects",
        "REST search, filter + order": f"/api/v1/runs?project=vision&filter={flt}&order_by={order}&limit=50",
        "REST get run": f"/api/v1/runs/{a}",
        f"REST metric history, max_points={args.max_points}": f"{history}&max_points={args.max_points}",
        "REST metric history, every point": history,
    }
    out: dict[str, Any] = {}
    try:
        for label, path in pages.items():
            print(f"  .. {label}", file=sys.stderr, flush=True)
            headers = {"Cookie": f"keel_session={session}"} if path.startswith("/ui/") else None
            reps = args.reps if "every point" not in label else max(3, args.reps // 5)
            server_cpu0, db_cpu0 = tree_cpu(server.process.pid), pg.backend_cpu_seconds()
            timing = time_get(server, path, reps, headers)
            server_cpu, db_cpu = tree_cpu(server.process.pid) - server_cpu0, pg.backend_cpu_seconds() - db_cpu0
            # CPU per request (the warm-up request included: reps + 1 of them)
            out[label] = {**timing, "path": path, "server_cpu_ms": server_cpu / (reps + 1) * 1000,
                          "db_cpu_ms": db_cpu / (reps + 1) * 1000}  # fmt: skip
    finally:
        server.stop()
    return out


# -- ingest --------------------------------------------------------------------------------
def measure_ingest(pg: KeptPostgres, url: str, objects: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """bench/server.py's load against the server on this PostgreSQL, with CPU read from /proc."""
    from server import LOAD_PROJECT, KeelApi, run_load

    token, _session = credentials(url, objects)
    load_args = argparse.Namespace(
        clients=args.clients, metrics_per_client=args.metrics_per_client, duration=args.duration
    )
    out: dict[str, Any] = {}

    def drop_load_project() -> None:  # the load's runs go: the store stays as generated
        with pg.connect(DATABASE) as conn:
            conn.execute(
                "DELETE FROM runs WHERE project_id IN (SELECT id FROM projects WHERE name = %s)", (LOAD_PROJECT,)
            )
            conn.execute("DELETE FROM projects WHERE name = %s", (LOAD_PROJECT,))

    for workers in args.workers:
        print(f"  .. ingest, {workers} worker(s)", file=sys.stderr, flush=True)
        drop_load_project()
        server = start_server(url, objects, workers, token, folder)
        try:
            api = KeelApi(server)
            server_cpu0, db_cpu0 = tree_cpu(server.process.pid), pg.backend_cpu_seconds()
            t0 = time.perf_counter()
            result = run_load(api, load_args, 1000)
            wall = time.perf_counter() - t0
            server_cpu, db_cpu = tree_cpu(server.process.pid) - server_cpu0, pg.backend_cpu_seconds() - db_cpu0
        finally:
            server.stop()
        sent = result["sent"]
        result.update(
            wall=wall,
            server_cpu_s=server_cpu,
            db_cpu_s=db_cpu,
            server_cpu_us_per_request=server_cpu / max(1, result["requests"] * 2) * 1e6,  # a write and a read each
            db_cpu_us_per_request=db_cpu / max(1, result["requests"] * 2) * 1e6,
            metrics_per_server_core_s=sent / server_cpu if server_cpu else None,
            metrics_per_db_core_s=sent / db_cpu if db_cpu else None,
        )
        out[str(workers)] = result
        drop_load_project()
    return out


def measure(pg: KeptPostgres, args: argparse.Namespace, info: dict[str, Any]) -> dict[str, Any]:
    url = pg.url_of(DATABASE)
    objects = str(Path(args.data) / "objects")
    folder = Path(tempfile.mkdtemp(prefix="keel-scale-"))
    results: dict[str, Any] = {"store": info}
    parts = set(args.only or ["service", "pages", "ingest"])
    if args.skip_server:
        parts -= {"pages", "ingest"}
    if args.skip_ingest:
        parts.discard("ingest")
    if "service" in parts:
        print("measuring in process ...", file=sys.stderr, flush=True)
        results["in_process"] = measure_in_process(url, objects, args)
    if "pages" in parts:
        print("measuring the server's pages ...", file=sys.stderr, flush=True)
        results["pages"] = measure_pages(pg, url, objects, args, folder)
    if "ingest" in parts:
        print("measuring ingest ...", file=sys.stderr, flush=True)
        results["ingest"] = measure_ingest(pg, url, objects, args, folder)
    shutil.rmtree(folder, ignore_errors=True)  # the servers' logs (kept when a part failed: it raised)
    with pg.connect(DATABASE) as conn:
        rows = conn.execute(
            "SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relkind = 'r' AND relnamespace = "
            "'public'::regnamespace ORDER BY 2 DESC LIMIT 6"
        ).fetchall()
        results["sizes"] = {name: int(size) for name, size in rows}
        results["database_bytes"] = int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])
    return results


# -- report --------------------------------------------------------------------------------
def _ms(value: float | None) -> str:
    return "-" if value is None else (f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms")


def _row(figure: str, value: str, target: str, met: bool | None) -> str:
    mark = "" if met is None else ("yes" if met else "NO")
    return f"| {figure} | {value} | {target} | {mark} |"


def report(results: dict[str, Any], args: argparse.Namespace, info: dict[str, Any]) -> None:
    machine = f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end (other work on the machine)"
    lines = [
        f"keel scale bench: PostgreSQL 15, {human(info['runs'])} runs, "
        f"{human(points_total(info['runs'], info['long_runs'], info['long_points']))} metric points "
        f"({results['database_bytes'] / 1e9:.1f} GB), {machine}; p50/p95 of {args.reps}",
        "",
        "| figure | measured | target | met? |",
        "|---|---|---|---|",
    ]
    search = results.get("in_process", {}).get("search", {})
    for label, fig in search.items():
        target, bound = ("p95 <= 100 ms", 100.0)
        lines.append(_row(f"search: {label} ({fig['rows']} rows)", f"{_ms(fig['p50'])} / {_ms(fig['p95'])}",
                          target, fig["p95"] <= bound))  # fmt: skip
    calls = results.get("in_process", {}).get("calls", {})
    for label, fig in calls.items():
        target, met = "", None
        if label == "history downsampled":
            target, met = "<= 100 ms", fig["p95"] <= 100
        shown = f"{_ms(fig['p50'])} / {_ms(fig['p95'])}" + (f" ({fig['points']:,} points)" if "points" in fig else "")
        lines.append(_row(f"service: {label}", shown, target, met))
    for label, fig in results.get("pages", {}).items():
        server_ms = fig.get("server_ms")
        ok = fig["status"] == 200
        target = "<= 300 ms server" if label.startswith("UI") else ("<= 100 ms" if "max_points" in label else "")
        bound = 300.0 if label.startswith("UI") else (100.0 if "max_points" in label else None)
        met = None if bound is None or server_ms is None else (ok and server_ms <= bound)
        shown = (
            f"{_ms(server_ms)} server, {_ms(fig.get('client_ms'))} client, {fig['bytes'] / 1024:.0f} KiB; "
            f"CPU {fig.get('server_cpu_ms', 0):.0f} ms server + {fig.get('db_cpu_ms', 0):.0f} ms database"
        )
        lines.append(_row(label + ("" if ok else f" (HTTP {fig['status']})"), shown, target, met))
    ingest = results.get("ingest", {})
    if ingest:
        lines += ["", "| ingest (8 clients, 1,000 metrics/request + a read) | metrics/s | write p50/p95 | "
                  "server CPU us/request | DB CPU us/request | metrics/s per server core | per DB core | stored |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for workers, fig in ingest.items():
            stored = "all" if fig["stored"] == fig["sent"] else f"{fig['stored']:,} of {fig['sent']:,}"
            lines.append(
                f"| {workers} worker(s) | {fig['rate']:,.0f} | {_ms(fig['write_p50'])} / {_ms(fig['write_p95'])} | "
                f"{fig['server_cpu_us_per_request']:,.0f} | {fig['db_cpu_us_per_request']:,.0f} | "
                f"{(fig['metrics_per_server_core_s'] or 0):,.0f} | {(fig['metrics_per_db_core_s'] or 0):,.0f} | "
                f"{stored} |"
            )
    sizes = ", ".join(f"{name} {size / 1e9:.2f} GB" for name, size in results["sizes"].items())
    lines += ["", f"largest tables: {sizes}"]
    print("\n".join(lines))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="", help="folder of the kept PostgreSQL cluster (/tmp/keel-scale)")
    parser.add_argument("--rebuild", action="store_true", help="generate the store again")
    parser.add_argument("--generate-only", action="store_true", help="make sure the store exists, measure nothing")
    parser.add_argument("--quick", action="store_true", help="20,000 runs and 2M points in their own folder")
    parser.add_argument("--runs", type=int, default=0, help="runs (1,000,000)")
    parser.add_argument("--long-runs", type=int, default=0, help="runs with a long series (1,000)")
    parser.add_argument("--long-points", type=int, default=100_000, help="points of each long series (100,000)")
    parser.add_argument("--reps", type=int, default=30, help="timed repetitions per figure")
    parser.add_argument("--max-points", type=int, default=600, help="points of a downsampled chart series")
    parser.add_argument("--workers", type=int, action="append", help="server workers for ingest; repeatable (1 2 4)")
    parser.add_argument("--skip-ingest", action="store_true", help="no ingest load")
    parser.add_argument("--skip-server", action="store_true", help="no server: in-process figures only")
    parser.add_argument("--only", action="append", choices=["service", "pages", "ingest"],
                        help="measure only this part; repeatable")  # fmt: skip
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per ingest load (20)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent ingest clients (8)")
    parser.add_argument("--metrics-per-client", type=int, default=500_000, help="most metrics a client sends (500,000)")
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    args = parser.parse_args()
    if args.quick:
        args.runs = args.runs or 20_000
        args.long_runs = args.long_runs or 20
        args.data = args.data or "/tmp/keel-scale-quick"
        args.reps = min(args.reps, 10)
        args.duration = min(args.duration, 5.0)
    args.runs = args.runs or 1_000_000
    args.long_runs = args.long_runs or 1_000
    args.data = os.path.abspath(args.data or "/tmp/keel-scale")
    args.workers = args.workers or [1, 2, 4]
    return args


def main() -> int:
    args = parse_args()
    pg = KeptPostgres(Path(args.data)).start()
    try:
        info = ensure_store(pg, args)
        if args.generate_only:
            return 0
        results = measure(pg, args, info)
        report(results, args, info)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    finally:
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
