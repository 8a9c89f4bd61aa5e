"""keel's prompt registry vs MLflow's (SQLite store), side by side in one run.

    .venv/bin/python bench/prompts.py --mlflow-python bench/.venv-mlflow/bin/python

Same harness as ``bench/tracking.py``: every workload runs in a fresh
subprocess per tool (``bench/_keel_prompts_worker.py`` with this interpreter,
``bench/_mlflow_prompts_worker.py`` with MLflow's), each tool in its own
temporary store created beforehand by another process; both register the same
template texts and load the same version.

Workloads (``--quick`` shrinks them):

- ``register``: N versions of one prompt, each with new template text.
  MLflow: ``mlflow.genai.register_prompt(name, template, commit_message=...)``;
  keel: ``keel.prompts.register(name, template=..., changelog=...)`` (a patch
  bump each). Both are synchronous: the timing ends with the last commit.
- ``uncached load``: the 4th version (MLflow version 4, keel 1.0.3), the cache
  bypassed. MLflow: ``load_prompt("prompts:/NAME/4", cache_ttl_seconds=0)``
  (in 3.17 a TTL of 0 skips ``PromptCache`` entirely); keel:
  ``keel.prompts.get("NAME@1.0.3", ttl=0)`` (the uncached registry read;
  without ``ttl=0``, ``get`` and ``load`` are served from the cache).
- ``uncached alias load``: the same version through an alias ``production``
  with the cache off. MLflow: ``load_prompt("prompts:/NAME@production",
  cache_ttl_seconds=0)``; keel: ``keel.prompts.load("NAME@production", ttl=0)``.
- ``cached load``: MLflow ``load_prompt("prompts:/NAME/4")`` (default cache:
  a version is cached without TTL) vs ``keel.prompts.load("NAME@1.0.3")``.
- ``keel prompts check``: keel only. A ``prompts/`` folder with
  ``prompt_config.yaml`` of 200 prompts (a ``system_prompt.txt`` and a
  ``CHANGELOG.md`` each), synced beforehand with ``keel prompts sync``; the
  command ``keel prompts check --dir prompts`` is timed end to end as a
  subprocess (start-up included).

Loads: one warm-up call, then ``--reps`` loops of N calls; the median loop
gives the rate. Benchmarks assert nothing: they print. Machines are noisy:
compare ratios taken in the same run, and use ``--rounds 3`` for medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from tracking import (  # noqa: E402
    DEFAULT_MLFLOW_PYTHON,
    Runner,
    fmt_rate,
    median_of,
    num,
    print_comparison,
)

KEEL_WORKER = HERE / "_keel_prompts_worker.py"
MLFLOW_WORKER = HERE / "_mlflow_prompts_worker.py"

# Calls per timed loop differ per tool: each loop should last ~0.5-5 s.
FULL = {
    "register": 500,
    "uncached": {"mlflow": 200, "keel": 5_000},
    "cached": {"mlflow": 20_000, "keel": 500_000},
    "check": 200,
}
QUICK = {
    "register": 100,
    "uncached": {"mlflow": 30, "keel": 1_000},
    "cached": {"mlflow": 2_000, "keel": 50_000},
    "check": 200,
}

# key: (target, target text)
TARGETS = {
    "register": (2_000, ">= 2,000/s"),
    "uncached": (5_000, ">= 5,000/s"),
    "uncached_alias": (5_000, ">= 5,000/s"),
    "cached": (500_000, ">= 500,000/s"),
    "check": (1.0, "< 1 s"),
}
MISSING = "n/a (command missing)"


class PromptRunner(Runner):
    def command(self, tool: str) -> list[str]:
        if tool == "keel":
            return [self.args.keel_python, str(KEEL_WORKER)]
        return [self.args.mlflow_python, str(MLFLOW_WORKER)]


def fmt_s(value: float | None) -> str:
    if value is None:
        return "error"
    return f"{value:,.2f} s" if value >= 1 else f"{value * 1000:,.0f} ms"


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
    parser.add_argument("--skip-mlflow", action="store_true", help="measure keel only")
    parser.add_argument("--skip-check", action="store_true", help="skip `keel prompts check`")
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat every workload in fresh processes; report medians"
    )
    parser.add_argument(
        "--reps", type=int, default=0, help="timed loops per load workload and check (default 5, quick 3)"
    )
    parser.add_argument("--check-prompts", type=int, default=0, help="prompts in the checked folder (default 200)")
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    parser.add_argument("--profile", metavar="DIR", help="write cProfile files of keel's timed parts")
    parser.add_argument("--tmpdir", help="where the temporary stores go (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary stores")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per worker process")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args()
    if args.skip_mlflow:
        args.mlflow_python = ""
    args.reps = args.reps or (3 if args.quick else 5)
    args.keel_python = os.path.abspath(args.keel_python)
    if args.mlflow_python:
        args.mlflow_python = os.path.abspath(args.mlflow_python)
    return args


def main() -> int:
    args = parse_args()
    sizes = dict(QUICK if args.quick else FULL)
    if args.check_prompts:
        sizes["check"] = args.check_prompts
    tools = ["mlflow", "keel"] if args.mlflow_python else ["keel"]
    profile_dir = Path(args.profile).resolve() if args.profile else None
    if profile_dir:
        profile_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="keel-bench-prompts-", dir=args.tmpdir))
    runner = PromptRunner(args, tmp)

    def prof(name: str, tool: str) -> str:
        return str(profile_dir / f"{name}.prof") if profile_dir and tool == "keel" else ""

    started = time.perf_counter()
    info: dict[str, Any] = {}
    try:
        info = {tool: runner.run(tool, "info") for tool in tools}
        for rnd in range(args.rounds):
            for tool in tools:
                folder = tmp / f"{tool}-registry-{rnd}"
                runner.run(tool, "init", folder, label="init")
                registered = runner.run(
                    tool, "register", folder, n=sizes["register"], profile=prof(f"register-{rnd}", tool)
                )
                if not registered:
                    continue
                runner.run(
                    tool,
                    "load_uncached",
                    folder,
                    n=sizes["uncached"][tool],
                    reps=args.reps,
                    profile=prof(f"load_uncached-{rnd}", tool),
                )
                runner.run(
                    tool,
                    "load_cached",
                    folder,
                    n=sizes["cached"][tool],
                    reps=args.reps,
                    profile=prof(f"load_cached-{rnd}", tool),
                )
            if not args.skip_check:
                folder = tmp / f"keel-check-{rnd}"
                runner.run("keel", "init", folder, label="init check")
                runner.run("keel", "check", folder, n=sizes["check"], reps=args.reps)
    finally:
        total = time.perf_counter() - started
        if args.keep:
            print(f"kept the stores in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = build_rows(runner, sizes, args)
    print_report(rows, runner, info, tmp, args, total)
    if args.json:
        payload = {
            "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "node": platform.node()},
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


def build_rows(runner: Runner, sizes: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
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
        keel_text: str | None = None,
    ) -> None:
        target, target_text = TARGETS[key]
        ratio = None
        if mlflow and keel:
            ratio = keel / mlflow if higher_better else mlflow / keel
        met = None if keel is None else (keel >= target if higher_better else keel < target)
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
                "keel_text": keel_text or fmt(keel),
            }
        )

    def both(label: str, key: str) -> tuple[float | None, float | None]:
        entry = raw.get(label, {})
        return median_of(entry.get("mlflow"), key), median_of(entry.get("keel"), key)

    m, k = both("register", "rate")
    add("register", f"register {sizes['register']:,} versions of one prompt (versions/s)", m, k, True, fmt_rate)
    m, k = both("load_uncached", "rate")
    add("uncached", "uncached load, pinned version (loads/s)", m, k, True, fmt_rate)
    m, k = both("load_uncached", "alias_rate")
    add("uncached_alias", "uncached load by alias, TTL 0 (loads/s)", m, k, True, fmt_rate)
    m, k = both("load_cached", "rate")
    add("cached", "cached load, pinned version (loads/s)", m, k, True, fmt_rate)
    if not args.skip_check:
        checks = raw.get("check", {}).get("keel", [])
        missing = bool(checks) and all(r.get("missing") for r in checks)
        _, k = both("check", "seconds")
        add(
            "check",
            f"keel prompts check, {sizes['check']} prompts, end to end (s)",
            None,
            None if missing else k,
            False,
            fmt_s,
            mlflow_na=True,
            keel_text=MISSING if missing else None,
        )
    return rows


def print_report(
    rows: list[dict[str, Any]],
    runner: Runner,
    info: dict[str, Any],
    tmp: Path,
    args: argparse.Namespace,
    total: float,
) -> None:
    print_comparison(
        rows,
        info,
        tmp,
        f"rounds={args.rounds}, reps={args.reps} (median loop after 1 warm-up call); total {total:.0f} s",
        args.quick,
    )
    print("speed-up = how many times faster keel is (keel/MLflow loads or versions per second)")
    print()
    print_details(runner)
    for tool, label, message in runner.failures:
        print(f"\nFAILED: {tool} {label}: {message}")


def print_details(runner: Runner) -> None:
    raw = runner.raw
    print("details:")
    for tool, results in raw.get("register", {}).items():
        r = results[-1]
        secs = ", ".join(f"{x['seconds']:.3f}" for x in results)
        threads = (
            f", {r['threads']} background thread(s) still running at the end, joined in {r['drain_seconds']:.3f} s"
            if r.get("threads")
            else ""
        )
        print(
            f"  register      {tool:<6} timed {secs} s; stored {num(r.get('stored'))} versions"
            f" ({r.get('first_version')} .. {r.get('last_version')}; 4th = {r.get('pinned_version')})"
            f"{threads}; peak RSS {r['peak_rss_mb']:.0f} MB"
        )
    for label in ("load_uncached", "load_cached"):
        for tool, results in raw.get(label, {}).items():
            r = results[-1]
            loops = ", ".join(f"{t:.3f}" for t in r["times"])
            alias = ""
            if "alias_times" in r:
                alias = f"; alias loops s: {', '.join(f'{t:.3f}' for t in r['alias_times'])} ({r['alias_served']})"
            threads = ""
            if r.get("threads"):
                threads = (
                    f"; {r['threads']} link thread(s) still running at the end, joined in {r['drain_seconds']:.2f} s"
                )
            print(
                f"  {label:<13} {tool:<6} {r['calls']:,} calls/loop, loops s: {loops} ({r['served']},"
                f" template {'ok' if r['template_ok'] else 'WRONG'}){alias}{threads}"
            )
            print(f"  {'':<13} {'':<6} {r['method']}")
    for r in raw.get("check", {}).get("keel", []):
        if r.get("missing"):
            print("  check         keel   `keel prompts check` does not exist yet (typer: No such command)")
            continue
        times = ", ".join(f"{t:.3f}" for t in r["times"])
        sync = r.get("sync")
        sync_text = (
            f"synced first in {sync['seconds']:.2f} s (exit {sync['exit']})"
            if sync
            else "no `keel prompts sync` command"
        )
        print(
            f"  check         keel   {r['prompts']} prompts ({r['registered']} registered; {sync_text});"
            f" runs s: {times}; exit codes {r['exit_codes']}"
        )
        if sync and sync["exit"] != 0:
            print("                       sync output: " + sync["output"].replace("\n", "\n" + " " * 36))
        out = r.get("output", "")
        if out:
            print("                       check output: " + out.replace("\n", "\n" + " " * 37))


if __name__ == "__main__":
    sys.exit(main())
