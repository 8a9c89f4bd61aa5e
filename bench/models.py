"""keel's model registry vs MLflow's (SQLite store), side by side in one run.

    .venv/bin/python bench/models.py --mlflow-python bench/.venv-mlflow/bin/python

Same harness as ``bench/tracking.py`` and ``bench/prompts.py``: every workload
runs in a fresh subprocess per tool (``bench/_keel_models_worker.py`` with this
interpreter, ``bench/_mlflow_models_worker.py`` with MLflow's), each tool in its
own temporary store created beforehand by another process (``init``). Another
process (``setup``, untimed) then logs one run with the artifact folder
``model/`` (``config.yaml`` and an ``MLmodel`` file, through ``log_artifact(path,
artifact_path="model")``); every version is registered from
``runs:/<run_id>/model``. The workloads then run in order on that store:

- ``register``: N versions of ``chat-assistant``, one pass, timed until the last
  call returns (both are synchronous: committed). keel:
  ``keel.register_model("runs:/<run>/model", "chat-assistant")`` (the artifact is
  checked to exist on each call). MLflow is timed two ways, each in a fresh
  process: ``mlflow.register_model("runs:/<run>/model", "chat-assistant")`` on
  this store, and ``MlflowClient().create_model_version(name,
  source="runs:/<run>/model", run_id=run_id)`` on a second fresh store (same
  setup; the model created untimed first). MLflow 3.17's ``register_model`` is
  several times slower than ``create_model_version`` (each call tries
  ``create_registered_model`` and handles the AlreadyExists error, then lists
  the run's artifacts to look for ``MLmodel``), so the headline ratio is taken
  against the faster of the two -- ``create_model_version`` on this machine; the
  table says which -- and the row below it compares with ``register_model``.
  The ``MLmodel`` file is there because MLflow 3's ``register_model`` refuses a
  ``runs:/`` folder without one (or without a logged model of that name); keel
  logs the same two files.
- ``alias``: ``set alias champion`` N times, the version cycling 1..5 (every
  call moves it). MLflow ``MlflowClient().set_registered_model_alias(name,
  "champion", v)``; keel ``keel.models.set_alias(name, "champion", v)`` (which
  also appends each move to the reflog).
- ``stage``: N stage transitions with archive-existing, ``(version, stage)``
  cycling (1, Staging), (2, Production), (3, Staging), ... over versions 1..5, so
  every call moves one version and archives the one it replaces. MLflow
  ``client.transition_model_version_stage(name, v, stage,
  archive_existing_versions=True)`` (deprecated since 2.9, still working in
  3.17; its FutureWarning is silenced); keel
  ``keel.models.transition_stage(name, v, stage, archive_existing=True)``.
- ``get``: the version behind an alias (set to version 2 untimed first). MLflow
  ``client.get_model_version_by_alias(name, "champion")``; keel
  ``keel.models.get(name, alias="champion")``.

alias, stage and get: one warm-up call, then ``--reps`` loops of N calls; the
median loop gives the rate. N differs per tool (MLflow's calls take ms each,
keel's tens of us; each loop should last ~0.5-5 s): see FULL/QUICK below and
the details printed under the table. Rates are calls per second, so they
compare across N; keel's store then holds more versions than MLflow's (keel
registered more), which if anything counts against keel.

Benchmarks assert nothing: they print. Machines are noisy: compare ratios
taken in the same run, and use ``--rounds 3`` for medians.
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

KEEL_WORKER = HERE / "_keel_models_worker.py"
MLFLOW_WORKER = HERE / "_mlflow_models_worker.py"

# Calls per timed pass or loop, per tool: each should last ~0.5-5 s.
FULL = {
    "register": {"mlflow": 300, "keel": 5_000},
    "alias": {"mlflow": 300, "keel": 10_000},
    "stage": {"mlflow": 300, "keel": 10_000},
    "get": {"mlflow": 300, "keel": 10_000},
}
QUICK = {
    "register": {"mlflow": 50, "keel": 500},
    "alias": {"mlflow": 50, "keel": 1_000},
    "stage": {"mlflow": 50, "keel": 1_000},
    "get": {"mlflow": 50, "keel": 1_000},
}

# key: (target, target text) -- keel's targets; MLflow measured ~63 versions/s, alias
# ~140/s, stages ~90-100/s and get by alias ~240-440/s on the reference machine.
TARGET = (2_000, ">= 2,000/s")
MLFLOW_REGISTER = {"register": "mlflow.register_model", "create_version": "create_model_version"}


class ModelRunner(Runner):
    def command(self, tool: str) -> list[str]:
        if tool == "keel":
            return [self.args.keel_python, str(KEEL_WORKER)]
        return [self.args.mlflow_python, str(MLFLOW_WORKER)]


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
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat every workload in fresh processes; report medians"
    )
    parser.add_argument(
        "--reps", type=int, default=0, help="timed loops per alias/stage/get workload (default 5, quick 3)"
    )
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
    sizes = QUICK if args.quick else FULL
    tools = ["mlflow", "keel"] if args.mlflow_python else ["keel"]
    profile_dir = Path(args.profile).resolve() if args.profile else None
    if profile_dir:
        profile_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="keel-bench-models-", dir=args.tmpdir))
    runner = ModelRunner(args, tmp)

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
                if not runner.run(tool, "setup", folder, label="setup"):
                    continue
                registered = runner.run(
                    tool, "register", folder, n=sizes["register"][tool], profile=prof(f"register-{rnd}", tool)
                )
                if tool == "mlflow":
                    # The registry call alone, on a store of its own (same setup, same size).
                    other = tmp / f"mlflow-create-version-{rnd}"
                    runner.run(tool, "init", other, label="init create_version")
                    if runner.run(tool, "setup", other, label="setup create_version"):
                        runner.run(tool, "create_version", other, n=sizes["register"][tool])
                if not registered:
                    continue
                for name in ("alias", "stage", "get"):
                    runner.run(
                        tool, name, folder, n=sizes[name][tool], reps=args.reps, profile=prof(f"{name}-{rnd}", tool)
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


def fastest_mlflow_register(raw: dict[str, Any]) -> tuple[str | None, float | None, str | None, float | None]:
    """(faster MLflow label, its median rate, the other label, its median rate)."""
    rates = {label: median_of(raw.get(label, {}).get("mlflow"), "rate") for label in MLFLOW_REGISTER}
    measured = sorted((r, label) for label, r in rates.items() if r is not None)
    if not measured:
        return None, None, None, None
    best_rate, best = measured[-1]
    others = [label for label in MLFLOW_REGISTER if label != best]
    return best, best_rate, others[0], rates[others[0]]


def build_rows(runner: Runner, sizes: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    raw = runner.raw
    measured_mlflow = bool(args.mlflow_python)
    rows: list[dict[str, Any]] = []

    def add(
        key: str,
        label: str,
        mlflow: float | None,
        keel: float | None,
        keel_text: str | None = None,
        target: bool = True,
    ) -> None:
        target_value, target_text = TARGET
        ratio = keel / mlflow if mlflow and keel else None
        met = None if (keel is None or not target) else keel >= target_value
        rows.append(
            {
                "key": key,
                "workload": label,
                "mlflow": mlflow,
                "keel": keel,
                "speedup": ratio,
                "target": target_text if target else "",
                "met": met,
                "mlflow_text": fmt_rate(mlflow) if measured_mlflow else "n/a",
                "keel_text": keel_text or fmt_rate(keel),
            }
        )

    def keel_rate(label: str) -> float | None:
        return median_of(raw.get(label, {}).get("keel"), "rate")

    def both(label: str) -> tuple[float | None, float | None]:
        return median_of(raw.get(label, {}).get("mlflow"), "rate"), keel_rate(label)

    keel_register = keel_rate("register")
    best, best_rate, other, other_rate = fastest_mlflow_register(raw)
    which = f"; MLflow: {MLFLOW_REGISTER[best]}" if best else ""
    add("register", f"register a version from runs:/ artifact (versions/s{which})", best_rate, keel_register)
    if measured_mlflow and other:
        add(
            "register_other",
            f"  the same, MLflow through {MLFLOW_REGISTER[other]} (versions/s)",
            other_rate,
            keel_register,
            keel_text="(as above)",
            target=False,
        )
    m, k = both("alias")
    add("alias", "set alias 'champion', moving over 5 versions (calls/s)", m, k)
    m, k = both("stage")
    add("stage", "stage transition, archive existing (calls/s)", m, k)
    m, k = both("get")
    add("get", "get version by alias (calls/s)", m, k)
    return rows


def size_text(sizes: dict[str, Any], tools: list[str]) -> str:
    parts = []
    for name, per_tool in sizes.items():
        parts.append(f"{name} " + "/".join(f"{per_tool[t]:,}" for t in tools))
    return f"N per call loop ({'/'.join(tools)}): " + ", ".join(parts)


def print_report(
    rows: list[dict[str, Any]],
    runner: Runner,
    info: dict[str, Any],
    tmp: Path,
    args: argparse.Namespace,
    sizes: dict[str, Any],
    total: float,
) -> None:
    tools = ["mlflow", "keel"] if args.mlflow_python else ["keel"]
    print_comparison(
        rows,
        info,
        tmp,
        f"rounds={args.rounds}, reps={args.reps} (alias/stage/get: median loop after 1 warm-up call;"
        f" register: one pass); {size_text(sizes, tools)}; total {total:.0f} s",
        args.quick,
    )
    print("speed-up = how many times faster keel is (keel/MLflow calls per second)")
    print()
    print_details(runner)
    for tool, label, message in runner.failures:
        print(f"\nFAILED: {tool} {label}: {message}")


def print_details(runner: Runner) -> None:
    raw = runner.raw
    print("details:")
    for tool, results in raw.get("setup", {}).items():
        r = results[-1]
        print(f"  setup          {tool:<6} run {r['run_id']} with artifacts {', '.join(r['artifacts'])}")
    for label in ("register", "create_version"):
        for tool, results in raw.get(label, {}).items():
            r = results[-1]
            secs = ", ".join(f"{x['seconds']:.3f}" for x in results)
            rates = ", ".join(fmt_rate(x["rate"]) for x in results)
            print(
                f"  {label:<14} {tool:<6} timed {secs} s ({rates}); stored {num(r.get('stored'))} versions"
                f" ({r.get('first_version')} .. {r.get('last_version')}); peak RSS {r['peak_rss_mb']:.0f} MB"
            )
            print(f"  {'':<14} {'':<6} {r['method']}; source stored: {r.get('source')}")
    for label in ("alias", "stage", "get"):
        for tool, results in raw.get(label, {}).items():
            r = results[-1]
            loops = ", ".join(f"{t:.3f}" for t in r["times"])
            rates = ", ".join(fmt_rate(x["rate"]) for x in results)
            if label == "alias":
                logged = "no history kept" if r.get("logged") is None else f"{r['logged']:,} moves in the reflog"
                state = f"alias at {r['now']} (expected {r['expected']}), {logged}"
            elif label == "stage":
                state = "stages at the end: " + ", ".join(f"v{v} {s}" for v, s in r["stages"].items())
            else:
                state = f"served version {r['served']} (expected {r['expected']})"
            print(f"  {label:<14} {tool:<6} {r['calls']:,} calls/loop, loops s: {loops}; rounds: {rates}; {state}")
            print(f"  {'':<14} {'':<6} {r['method']}")


if __name__ == "__main__":
    sys.exit(main())
