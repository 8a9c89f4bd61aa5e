"""keel vs MLflow (SQLite store), side by side in one run.

    .venv/bin/python bench/tracking.py --mlflow-python bench/.venv-mlflow/bin/python
    make bench                                  # the same, creating both venvs

Every workload runs in a fresh subprocess per tool (``bench/_keel_worker.py``
with this interpreter, ``bench/_mlflow_worker.py`` with MLflow's), so imports
never interfere and peak memory (``ru_maxrss``) is per tool. Each tool gets
its own temporary store, created beforehand by another process (schema
migrations are in no figure, and not in peak memory); both log the same values.

Workloads (sizes from the issue; ``--quick`` shrinks them):

- ``log_metric``: N individual ``log_metric`` calls in one run, timed from the
  first call until the data is durable (keel: ``finish()``, MLflow: ``end_run()``).
- ``log_batch``: 100k metrics (10 keys x 10k steps). MLflow: ``MlflowClient.log_batch``
  in chunks of its per-call limit (1,000); keel: ``run.log_metric`` calls (the
  background writer batches them), until durable. This process's peak RSS is
  the memory figure.
- ``runs``: 1,000 x (start run, 10 params, 10 metrics, end run), fluent API.
- ``search``: the runs above, ``metrics.m0 > 0.5`` ordered by ``metrics.m1 ASC``,
  every match returned; median of ``--reps`` after one warm-up.
- ``search 100k``: keel only; 100,000 runs populated through
  ``TrackingService.start_run`` + ``write_batch``, same query with limit 100.

Benchmarks assert nothing: they print. Machines are noisy: compare ratios
taken in the same run, and use ``--rounds 3`` for medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
KEEL_WORKER = HERE / "_keel_worker.py"
MLFLOW_WORKER = HERE / "_mlflow_worker.py"
RESULT_PREFIX = "@@RESULT "
DEFAULT_MLFLOW_PYTHON = HERE / ".venv-mlflow" / "bin" / "python"

FULL = {"log_metric": 2_000, "log_batch": 100_000, "runs": 1_000, "big": 100_000}
QUICK = {"log_metric": 500, "log_batch": 20_000, "runs": 200, "big": 5_000}

# (workload, unit, higher is better, target, target text)
TARGETS = {
    "log_metric": (200_000, ">= 200k/s"),
    "log_batch": (300_000, ">= 300k/s"),
    "runs": (2_000, ">= 2,000/s"),
    "search": (10.0, "<= 10 ms"),
    "search_big": (100.0, "<= 100 ms"),
    "memory": (80.0, "<= 80 MB"),
}
MLFLOW_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_ALLOW_FILE_STORE": "true",
}


# -- running workers ------------------------------------------------------------
class Runner:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.failures: list[tuple[str, str, str]] = []
        self.raw: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def command(self, tool: str) -> list[str]:
        if tool == "keel":
            return [self.args.keel_python, str(KEEL_WORKER)]
        return [self.args.mlflow_python, str(MLFLOW_WORKER)]

    def env(self, tool: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "MLFLOW_TRACKING"))}
        if tool == "mlflow":
            env.update(MLFLOW_ENV)
            env.pop("PYTHONPATH", None)  # a PYTHONPATH meant for keel stays out of MLflow's venv
        env["PYTHONHASHSEED"] = "0"
        return env

    def run(
        self,
        tool: str,
        workload: str,
        folder: Path | None = None,
        label: str | None = None,
        **options: Any,
    ) -> dict[str, Any] | None:
        """Run one workload in a fresh process; its result dict, or None on failure."""
        label = label or workload
        cmd = self.command(tool) + [workload, "--dir", str(folder or self.tmp / f"{tool}-info")]
        for key, value in options.items():
            if value is not None and value != "":
                cmd += [f"--{key}", str(value)]
        if not self.args.quiet:
            print(f"  .. {tool:<6} {label}", end="", flush=True, file=sys.stderr)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                env=self.env(tool),
                timeout=self.args.timeout,
                cwd=self.tmp,
            )
        except subprocess.TimeoutExpired:
            self._fail(tool, label, f"timed out after {self.args.timeout} s")
            return None
        wall = time.perf_counter() - t0
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
        if proc.returncode != 0 or not lines:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            self._fail(tool, label, f"exit {proc.returncode}\n{tail}")
            return None
        result = json.loads(lines[-1][len(RESULT_PREFIX) :])
        result["process_seconds"] = wall
        if not self.args.quiet:
            print(f"  ({wall:.1f} s)", file=sys.stderr)
        self.raw.setdefault(label, {}).setdefault(tool, []).append(result)
        return result

    def _fail(self, tool: str, label: str, message: str) -> None:
        if not self.args.quiet:
            print("  FAILED", file=sys.stderr)
        self.failures.append((tool, label, message))


# -- formatting ------------------------------------------------------------------
def fmt_rate(value: float | None) -> str:
    if value is None:
        return "error"
    if value >= 100:
        return f"{value:,.0f}/s"
    return f"{value:,.1f}/s"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "error"
    return f"{value:,.1f} ms" if value >= 100 else f"{value:,.2f} ms"


def fmt_mb(value: float | None) -> str:
    return "error" if value is None else f"{value:,.0f} MB"


def num(value: Any) -> str:
    return "?" if value is None else f"{value:,}"


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "n/a"
    return f"{ratio:,.0f}x" if ratio >= 100 else f"{ratio:,.1f}x"


def median_of(results: list[dict[str, Any]] | None, key: str) -> float | None:
    values = [r[key] for r in results or [] if r.get(key) is not None]
    return statistics.median(values) if values else None


def machine_lines(info: dict[str, dict[str, Any] | None], tmp: Path) -> list[str]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 0
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    lines = [
        f"machine: {platform.node()} | {platform.platform(terse=True)} | {os.cpu_count()} cores"
        f" ({usable} usable) {cpu} | load avg {load}",
        f"temp stores under: {tmp}",
    ]
    for tool in ("keel", "mlflow"):
        data = info.get(tool)
        if data:
            extra = f", import {data['import_seconds']:.2f} s" if "import_seconds" in data else ""
            lines.append(
                f"{tool:<6} {data.get('version', '?'):<8} python {data['python']},"
                f" sqlite {data['sqlite']}{extra}  ({data['executable']})"
                + (f"\n       keel code: {data['module']}" if "module" in data else "")
            )
        elif tool == "mlflow":
            lines.append("mlflow  not measured (no --mlflow-python)")
    return lines


# -- main ------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--mlflow-python",
        default=str(DEFAULT_MLFLOW_PYTHON) if DEFAULT_MLFLOW_PYTHON.exists() else "",
        help="python of a venv with mlflow installed (default bench/.venv-mlflow)",
    )
    parser.add_argument("--keel-python", default=sys.executable, help="python with keel (default: this one)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--skip-100k", action="store_true", help="skip the 100,000-run search")
    parser.add_argument("--skip-mlflow", action="store_true", help="measure keel only")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat each logging workload in fresh processes; report medians",
    )
    parser.add_argument("--reps", type=int, default=0, help="timed search repetitions (default 7, quick 3)")
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    parser.add_argument("--profile", metavar="DIR", help="write cProfile files of keel's timed parts (main thread)")
    parser.add_argument("--tmpdir", help="where the temporary stores go (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary stores")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per worker process")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args()
    if args.skip_mlflow:
        args.mlflow_python = ""
    args.reps = args.reps or (3 if args.quick else 7)
    # Absolute, not resolved: a venv's python is a symlink that must stay in its venv.
    args.keel_python = os.path.abspath(args.keel_python)
    if args.mlflow_python:
        args.mlflow_python = os.path.abspath(args.mlflow_python)
    return args


def main() -> int:
    args = parse_args()
    sizes = QUICK if args.quick else FULL
    tools = ["mlflow", "keel"] if args.mlflow_python else ["keel"]
    profile_dir = Path(args.profile).resolve() if args.profile else None
    if profile_dir:
        profile_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="keel-bench-", dir=args.tmpdir))
    runner = Runner(args, tmp)

    def prof(name: str, tool: str) -> str:
        return str(profile_dir / f"{name}.prof") if profile_dir and tool == "keel" else ""

    started = time.perf_counter()
    try:
        info = {tool: runner.run(tool, "info") for tool in tools}
        runs_dirs: dict[str, Path] = {}
        for rnd in range(args.rounds):
            for name in ("log_metric", "log_batch", "runs"):
                for tool in tools:
                    folder = tmp / f"{tool}-{name}-{rnd}"
                    # The store is created (and migrated) by another process, as for a
                    # script logging to an existing project: the measured process only opens it.
                    runner.run(tool, "init", folder, label=f"init {name}")
                    runner.run(tool, name, folder, n=sizes[name], profile=prof(f"{name}-{rnd}", tool))
                    if name == "runs":
                        runs_dirs[tool] = folder
        for tool in tools:
            if tool in runs_dirs:
                runner.run(
                    tool,
                    "search",
                    runs_dirs[tool],
                    reps=args.reps,
                    limit=sizes["runs"],
                    profile=prof("search", tool),
                )
        if not args.skip_100k:
            big = tmp / "keel-big"
            runner.run("keel", "init", big, label="init populate")
            populated = runner.run("keel", "populate", big, label="populate", n=sizes["big"])
            if populated:
                runner.run(
                    "keel",
                    "search",
                    big,
                    label="search_big",
                    reps=args.reps,
                    limit=100,
                    profile=prof("search_big", "keel"),
                )
    finally:
        total = time.perf_counter() - started
        if args.keep:
            print(f"kept the stores in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = build_rows(runner, sizes, args)
    print_report(rows, runner, info, tmp, args, sizes, total)
    if args.json:
        payload = {
            "machine": {
                "cores": os.cpu_count(),
                "platform": platform.platform(),
                "node": platform.node(),
            },
            "tools": info,
            "sizes": sizes,
            "quick": args.quick,
            "rounds": args.rounds,
            "reps": args.reps,
            "rows": rows,
            "raw": runner.raw,
            "failures": [{"tool": t, "workload": w, "error": e} for t, w, e in runner.failures],
            "seconds": total,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def build_rows(runner: Runner, sizes: dict[str, int], args: argparse.Namespace) -> list[dict[str, Any]]:
    raw = runner.raw
    measured_mlflow = bool(args.mlflow_python)
    rows: list[dict[str, Any]] = []

    def add(
        key: str,
        label: str,
        mlflow: float | None,
        keel: float | None,
        higher_better: bool,
        fmt: Any,
        mlflow_na: bool = False,
    ) -> None:
        target, target_text = TARGETS[key]
        ratio = None
        if mlflow and keel:
            ratio = keel / mlflow if higher_better else mlflow / keel
        met = None if keel is None else (keel >= target if higher_better else keel <= target)
        rows.append(
            {
                "key": key,
                "workload": label,
                "mlflow": mlflow,
                "keel": keel,
                "speedup": ratio,
                "target": target_text,
                "met": met,
                "mlflow_text": "n/a" if (mlflow_na or not measured_mlflow) else fmt(mlflow),
                "keel_text": fmt(keel),
            }
        )

    def both(label: str, key: str) -> tuple[float | None, float | None]:
        entry = raw.get(label, {})
        return median_of(entry.get("mlflow"), key), median_of(entry.get("keel"), key)

    m, k = both("log_metric", "rate")
    add(
        "log_metric",
        f"{sizes['log_metric']:,} log_metric calls, 1 run (metrics/s)",
        m,
        k,
        True,
        fmt_rate,
    )
    m, k = both("log_batch", "rate")
    add(
        "log_batch",
        f"log_batch of {sizes['log_batch']:,} metrics (metrics/s)",
        m,
        k,
        True,
        fmt_rate,
    )
    m, k = both("runs", "rate")
    add("runs", f"{sizes['runs']:,} runs x (10 params + 10 metrics) (runs/s)", m, k, True, fmt_rate)
    m, k = both("search", "ms")
    add("search", f"search_runs over {sizes['runs']:,} runs, filter+order (ms)", m, k, False, fmt_ms)
    if not args.skip_100k:
        _, k = both("search_big", "ms")
        add(
            "search_big",
            f"search over {sizes['big']:,} runs, limit 100 (ms)",
            None,
            k,
            False,
            fmt_ms,
            mlflow_na=True,
        )
    m, k = both("log_batch", "peak_rss_mb")
    add("memory", f"peak memory, {sizes['log_batch']:,}-metric process (MB)", m, k, False, fmt_mb)
    return rows


def print_comparison(rows: list[dict[str, Any]], info: dict[str, Any], tmp: Path, settings: str, quick: bool) -> None:
    """The machine, the run's settings and the side-by-side table (shared by every bench)."""
    mlflow_name = f"MLflow {info['mlflow']['version']}" if info.get("mlflow") else "MLflow"
    keel_name = f"keel {info['keel']['version']}" if info.get("keel") else "keel"
    print()
    for text in machine_lines(info, tmp):
        print(text)
    mode = "QUICK sizes (targets are for the full sizes)" if quick else "full sizes"
    print(f"{mode}; {settings}")
    print()
    headers = ["workload", mlflow_name, keel_name, "speed-up", "target", "keel meets?"]
    table = [
        [
            r["workload"],
            r["mlflow_text"],
            r["keel_text"],
            fmt_ratio(r["speedup"]),
            r["target"],
            "n/a" if r["met"] is None else ("yes" if r["met"] else "NO"),
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    align = ["<", ">", ">", ">", "<", "<"]

    def line(cells: list[str]) -> str:
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths, strict=True)).rstrip()

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in table:
        print(line(row))


def print_report(
    rows: list[dict[str, Any]],
    runner: Runner,
    info: dict[str, Any],
    tmp: Path,
    args: argparse.Namespace,
    sizes: dict[str, int],
    total: float,
) -> None:
    print_comparison(
        rows,
        info,
        tmp,
        f"rounds={args.rounds}, search reps={args.reps} (median after 1 warm-up); total {total:.0f} s",
        args.quick,
    )
    print("speed-up = how many times better keel is (rates: keel/MLflow; ms and MB: MLflow/keel)")
    print()
    print_details(runner)
    for tool, label, message in runner.failures:
        print(f"\nFAILED: {tool} {label}: {message}")


def print_details(runner: Runner) -> None:
    raw = runner.raw
    print("details:")
    for label in ("log_metric", "log_batch", "runs"):
        for tool, results in raw.get(label, {}).items():
            last = results[-1]
            secs = ", ".join(f"{r['seconds']:.3f}" for r in results)
            extra = ""
            if label == "runs":
                extra = f", params {num(last.get('stored_params'))}, latest metrics {num(last.get('stored_metrics'))}"
            print(
                f"  {label:<10} {tool:<6} timed {secs} s, stored {num(last.get('stored'))}{extra},"
                f" peak RSS {last['peak_rss_mb']:.0f} MB"
            )
    for label in ("search", "search_big"):
        for tool, results in raw.get(label, {}).items():
            r = results[-1]
            times = ", ".join(f"{t:.1f}" for t in r["times_ms"])
            print(
                f"  {label:<10} {tool:<6} {r['count']:,} runs returned of {num(r.get('total_runs'))}"
                f" (more pages: {r['more']}); times ms: {times}; first m1 {r['first_m1'][:1]}"
            )
    counts = {tool: rs[-1]["count"] for tool, rs in raw.get("search", {}).items()}
    if len(counts) == 2:
        same = len(set(counts.values())) == 1
        print(f"  search result counts {'match' if same else 'DIFFER'}: {counts}")
    for r in raw.get("populate", {}).get("keel", []):
        print(
            f"  populate   keel   {num(r.get('total_runs'))} runs in {r['seconds']:.1f} s"
            f" ({r['rate']:,.0f} runs/s; start_run {r['start_run_seconds']:.1f} s,"
            f" write_batch {r['write_seconds']:.1f} s)"
        )


if __name__ == "__main__":
    sys.exit(main())
