"""Evaluating 1,000 samples in replay mode: keel.evaluate end to end, no network.

    .venv/bin/python bench/eval.py [--samples 1000] [--rounds 3]

Setup (untimed): a fresh workspace, a registered chat prompt, a 1,000-row
JSONL dataset, and one recording pass of ``keel.evaluate`` against keel's
stand-in server (in its own process). Then the server is stopped and the same
evaluation runs with ``mode="replay"``: timed from the call to the returned
result, which includes creating the run, rendering every prompt, replaying
every call, two scorers, the bootstrap intervals, and writing the per-sample
table and metrics durably. Also timed: ``keel.reproduce`` of the recorded run
(the same work plus loading the spec and comparing every sample).
Target: < 2 s for 1,000 samples. Benchmarks assert nothing; they print.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="200 samples, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.rounds = 200, 1
    folder = Path(tempfile.mkdtemp(prefix="keel-bench-eval-"))
    os.chdir(folder)
    os.environ.pop("KEEL_URI", None)

    import openai

    import keel

    keel.init(project="bench-eval")
    keel.finish()
    rows = [
        {"id": f"q{i}", "question": f"What is {i} + {i + 7}?", "answer": str(2 * i + 7)} for i in range(args.samples)
    ]
    Path("eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    chat = [
        {"role": "system", "content": "Answer with the number only."},
        {"role": "user", "content": "{{ question }}"},
    ]
    keel.prompts.register("calc", template=chat, changelog="bench")
    scorers = [keel.scorers.exact_match("answer"), keel.scorers.token_f1("answer")]
    model = {"name": "gpt-4o-mini", "temperature": 0.2}

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "keel.cli.main", "llm", "standin", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="standin", max_retries=5)
        for _ in range(100):  # wait for the server
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                time.sleep(0.05)
        started = time.perf_counter()
        recorded = keel.evaluate("eval.jsonl", "calc@1.0.0", model, client, scorers, run_name="record", mode="record")
        record_s = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait()

    offline = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="replay", max_retries=0)
    replay_times, reproduce_times = [], []
    for i in range(args.rounds):
        started = time.perf_counter()
        result = keel.evaluate(
            "eval.jsonl", "calc@1.0.0", model, offline, scorers, run_name=f"replay-{i}", mode="replay"
        )
        replay_times.append(time.perf_counter() - started)
        assert result.failed == 0, result.samples.to_dicts()[0]
        started = time.perf_counter()
        report = keel.reproduce(recorded.run_id)
        reproduce_times.append(time.perf_counter() - started)
    replay_s = statistics.median(replay_times)
    reproduce_s = statistics.median(reproduce_times)
    print(
        f"keel.evaluate, {args.samples} samples, 2 scorers; median of {args.rounds} (first recording pass shown once)"
    )
    print(f"{'workload':48} {'time':>9} {'samples/s':>11}  target")
    print(f"{'record (live, stand-in server, concurrency 8)':48} {record_s:8.2f}s {args.samples / record_s:11,.0f}")
    print(f"{'replay (no network)':48} {replay_s:8.2f}s {args.samples / replay_s:11,.0f}  < 2 s: "
          f"{'met' if replay_s < 2 else 'missed'}")  # fmt: skip
    print(f"{'keel.reproduce (replay + compare every sample)':48} {reproduce_s:8.2f}s "
          f"{args.samples / reproduce_s:11,.0f}  identical: {report.identical}")  # fmt: skip


if __name__ == "__main__":
    main()
