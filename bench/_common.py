"""Shared by the bench workers (imported under either venv): data, timing, output.

Both tools get exactly the same values (same seeds), so searches over their
stores must return the same runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import resource
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SEED = 20240601
N_PARAMS = 10
N_METRICS = 10
BATCH_KEYS = [f"m{k}" for k in range(10)]  # the 100k-metric workload: 10 keys x n/10 steps
SEARCH_FILTER = "metrics.m0 > 0.5"
SEARCH_ORDER = "metrics.m1 ASC"
PROJECT = "bench"
RESULT_PREFIX = "@@RESULT "


def values(n: int, seed: int = SEED) -> list[float]:
    """``n`` deterministic floats in [0, 1)."""
    rng = random.Random(seed)
    return [rng.random() for _ in range(n)]


def run_payload(rng: random.Random, i: int) -> tuple[dict[str, Any], dict[str, float]]:
    """The params and metrics of run ``i`` (10 + 10)."""
    params: dict[str, Any] = {f"p{k}": (f"value-{i % 7}-{k}" if k % 2 else i * 10 + k) for k in range(N_PARAMS)}
    metrics = {f"m{k}": rng.random() for k in range(N_METRICS)}
    return params, metrics


def run_payloads(n: int, seed: int = SEED) -> list[tuple[dict[str, Any], dict[str, float]]]:
    rng = random.Random(seed)
    return [run_payload(rng, i) for i in range(n)]


def peak_rss_mb() -> float:
    """Peak resident set of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_median(fn: Callable[[], Any], reps: int) -> tuple[float, list[float], Any]:
    """One warm-up call, then ``reps`` timed calls: (median s, all times, last result)."""
    result = fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, result


def sqlite_scalar(path: str, sql: str, args: tuple[Any, ...] = ()) -> Any:
    """One value read through a fresh connection (checks what is committed)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, args).fetchone()[0]
    finally:
        conn.close()


def base_info() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "executable": sys.executable,
    }


def parse_args(workloads: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("workload", choices=workloads)
    parser.add_argument("--dir", required=True, help="the store folder of this tool")
    parser.add_argument("--n", type=int, default=0, help="size of the workload")
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions (searches)")
    parser.add_argument("--limit", type=int, default=1000, help="search page size")
    parser.add_argument("--profile", default="", help="write a cProfile of the timed part here")
    return parser.parse_args()


class Profiler:
    """Optional cProfile around the timed part only."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.prof: Any = None

    def __enter__(self) -> Profiler:
        if self.path:
            import cProfile

            self.prof = cProfile.Profile()
            self.prof.enable()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.prof is not None:
            self.prof.disable()
            self.prof.dump_stats(self.path)


def emit(result: dict[str, Any]) -> None:
    """Hand the result to bench/tracking.py (the last such line of stdout wins)."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


# -- the prompt registry benchmark (bench/prompts.py) ------------------------------
PROMPT_NAME = "bench-chat"
PROMPT_ALIAS = "production"
PINNED_INDEX = 3  # the 4th registered version: MLflow version 4, keel 1.0.3 (same template text)
KEEL_PINNED = f"1.0.{PINNED_INDEX}"  # keel starts at 1.0.0; each new wording is a patch bump
MLFLOW_PINNED = PINNED_INDEX + 1  # MLflow numbers versions 1, 2, 3, ...


def prompt_template(i: int) -> str:
    """Version ``i`` of the benchmark prompt: new wording every time, same variables."""
    return (
        f"You are support assistant revision {i} for an online shop. Answer the customer's "
        "question politely and in at most three sentences. If you do not know the answer, say so "
        f"and offer to open ticket class {i % 17}.\n\nQuestion: {{{{ question }}}}\nAnswer:"
    )


def prompt_templates(n: int) -> list[str]:
    return [prompt_template(i) for i in range(n)]


def rate_reps(fn: Callable[[], Any], n: int, reps: int) -> dict[str, Any]:
    """One warm-up call of ``fn``, then ``reps`` timed loops of ``n`` calls.

    Returns the median rate (calls/s), every loop's seconds and the last result.
    """
    result = fn()
    times = []
    for _ in range(max(1, reps)):
        t0 = time.perf_counter()
        for _ in range(n):
            result = fn()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {"rate": n / median, "seconds": median, "times": times, "calls": n, "result": result}


# -- the model registry benchmark (bench/models.py) --------------------------------
MODEL_NAME = "chat-assistant"
MODEL_ALIAS = "champion"
MODEL_ARTIFACT_PATH = "model"  # the run's artifact folder that every version is registered from
CYCLE_VERSIONS = 5  # alias moves and stage transitions cycle through versions 1..5
GET_ALIAS_VERSION = 2  # the get-by-alias workload reads the alias pointed here
# Stage transitions: (version, stage) in turn. With an odd number of versions, every
# version alternates between Staging and Production, and each promotion (archive
# existing) moves exactly one other version out of the stage once the cycle runs.
STAGE_CYCLE = [(1 + i % CYCLE_VERSIONS, ("Staging", "Production")[i % 2]) for i in range(2 * CYCLE_VERSIONS)]
MODEL_FILES = {
    # An MLflow model folder: MLflow 3's register_model accepts a runs:/ folder only if it
    # holds an MLmodel file (or the run has a logged model of that name); keel logs the same.
    "config.yaml": "model: gpt-4o-mini\ntemperature: 0.2\nmax_tokens: 512\nsystem_prompt: prompts/support.txt\n",
    "MLmodel": "artifact_path: model\nflavors: {}\nmodel_uuid: 00000000000000000000000000000000\n",
}
RUN_ID_FILE = "bench_run_id.txt"  # the setup process leaves the run id here for the others


def write_model_files(folder: str) -> list[str]:
    """The files of the logged model folder, written under ``folder``; their paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in MODEL_FILES.items():
        (out / name).write_text(text)
        paths.append(str(out / name))
    return paths


def save_run_id(folder: str, run_id: str) -> None:
    Path(folder, RUN_ID_FILE).write_text(run_id)


def load_run_id(folder: str) -> str:
    return Path(folder, RUN_ID_FILE).read_text().strip()


def cycle_calls(fn: Callable[[Any], Any], items: list[Any]) -> Callable[[], Any]:
    """A no-argument call of ``fn`` on the next item of ``items`` (round robin)."""
    it = itertools.cycle(items)
    return lambda: fn(next(it))
