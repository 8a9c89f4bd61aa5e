"""``keel gate`` on two 1,000-sample evaluation runs, end to end as a process.

    .venv/bin/python bench/gate.py [--samples 1000] [--rounds 5]

Setup (untimed): a fresh workspace, prompt ``calc`` 1.0.0 (``production``), 1.0.1 (the
same question reworded) and 1.0.2 (a rewording keel's stand-in model no longer reads
as a sum), and one ``keel.evaluate`` of each on the same 1,000 samples against the
stand-in server (in this process). Timed, as a CI job runs it: the ``keel gate``
command in a new process (interpreter start, finding the baseline through lineage,
reading both runs' samples tables, the paired test, both bootstrap intervals, the
Markdown), for a candidate that passes and one that fails; ``keel.gate`` in-process
(warm); and, beside them, ``keel runs compare BASE CAND --markdown`` (keel's general
comparison, also a process) and ``keel --version`` (the interpreter and CLI start
alone). Target: ``keel gate`` < 1 s end to end. Benchmarks assert nothing; they print.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE = "Answer with the number only. What is {{ question }}?"
SAME = "Reply with just the number. What is {{ question }}?"
WORSE = "Answer with the number only. What do you get when you add {{ question | replace(' + ', ' and ') }}?"


def _process(args: list[str], rounds: int) -> tuple[float, list[float], int]:
    keel_bin = str(Path(sys.executable).parent / "keel")
    times, code = [], 0
    for _ in range(rounds):
        start = time.perf_counter()
        done = subprocess.run([keel_bin, *args], capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        code = done.returncode
        if code not in (0, 1):
            raise SystemExit(f"keel {' '.join(args)} failed ({code}): {done.stderr}")
    return statistics.median(times), times, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="200 samples, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.rounds = 200, 2
    folder = Path(tempfile.mkdtemp(prefix="keel-bench-gate-"))
    os.chdir(folder)
    os.environ.pop("KEEL_URI", None)
    os.environ.pop("KEEL_OBJECTS", None)

    import openai

    import keel
    from keel.integrations.standin import StandInServer

    keel.init(project="bench-gate")
    keel.finish()
    rows = [{"id": f"q{i}", "question": f"{i % 97} + {(7 * i) % 89}", "answer": str(i % 97 + (7 * i) % 89)}
            for i in range(args.samples)]  # fmt: skip
    for version, text in (("1.0.0", BASE), ("1.0.1", SAME), ("1.0.2", WORSE)):
        keel.prompts.register("calc", text, version=version, changelog=f"version {version}")
    keel.prompts.set_alias("calc", "production", "1.0.0")
    runs = {}
    setup = time.perf_counter()
    with StandInServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="none")
        for version in ("1.0.0", "1.0.1", "1.0.2"):
            result = keel.evaluate(
                rows, f"calc@{version}", {"name": "gpt-4", "temperature": 0}, client,
                [keel.scorers.exact_match("answer")], project="bench-gate", concurrency=16,
            )  # fmt: skip
            runs[version] = result.run_id
    keel.flush()
    print(f"setup: 3 evaluations of {args.samples} samples in {time.perf_counter() - setup:.1f} s ({folder})")

    rows_out = []
    for label, version in (("passes (A/A rewording)", "1.0.1"), ("fails (planted regression)", "1.0.2")):
        gate_args = ["gate", runs[version], "--baseline", "production", "--metric", "exact_match", "--max-drop", "0.02"]
        median, times, code = _process(gate_args, args.rounds)
        rows_out.append((f"`keel gate` as a process, {label}", median, times, f"exit {code}"))
    keel.gate(runs["1.0.2"], metric="exact_match")  # warm-up
    warm = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        keel.gate(runs["1.0.1"], metric="exact_match")
        warm.append(time.perf_counter() - start)
    rows_out.append(("`keel.gate` in-process, warm", statistics.median(warm), warm, ""))
    median, times, _code = _process(["runs", "compare", runs["1.0.0"], runs["1.0.2"], "--markdown"], args.rounds)
    rows_out.append(("`keel runs compare A B --markdown` as a process", median, times, ""))
    median, times, _code = _process(["--version"], args.rounds)
    rows_out.append(("`keel --version` (start-up alone)", median, times, ""))

    print(f"\n{args.samples} samples per run, medians of {args.rounds}; target: keel gate < 1 s end to end\n")
    print("| workload | median | all | |")
    print("|---|---|---|---|")
    for label, median, times, note in rows_out:
        print(f"| {label} | {median:.3f} s | {', '.join(f'{t:.2f}' for t in times)} | {note} |")


if __name__ == "__main__":
    main()
