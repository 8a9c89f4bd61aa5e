"""Conversation logging throughput: ``keel.conversations.log`` from one process.

    .venv/bin/python bench/conversations.py [--n 200000] [--rounds 3] [--database URL --objects URL]

Each round runs in a fresh subprocess against a fresh store (a new ``.keel/``
workspace: SQLite + local objects, unless ``--database``/``--objects`` name
another, e.g. PostgreSQL + S3). The process logs N records in the
reference's format (2-4 messages of realistic length, model, prompt version,
tokens, latency, metadata with user id / session / environment / variant;
one in ten with inline thumbs feedback), then one late ``feedback()`` per
hundred records, then calls ``flush()``. The rate is records / (time from the
first ``log`` call until ``flush()`` returns, i.e. everything committed).
"calls" is the time the app spent inside ``log()`` alone (validation,
encoding, queueing; the background thread writes meanwhile). A second
workload does the same with the built-in redaction on (e-mails, phone
numbers, API keys scanned in every message and metadata string).

There is no comparable peer to run side by side (MLflow's tracing records
spans, not conversation records with feedback), so keel's figures are
printed against the target from issue 6: >= 20,000 records/s sustained.
Benchmarks assert nothing: they print. Machines are noisy: use --rounds 3.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

TARGET = 20_000
RESULT = "@@RESULT "

_WORKER = r"""
import json, os, random, sys, time
import keel
from keel.sdk import conversations

n, redact = int(sys.argv[1]), sys.argv[2] == "1"
rng = random.Random(7)
words = ("refund order shipping invoice account password delivery warranty tracking address "
         "payment subscription cancel upgrade support agent policy return label damaged").split()

def sentence(k):
    return " ".join(rng.choice(words) for _ in range(k)).capitalize() + "."

pool = []
for i in range(500):
    turns = rng.choice((1, 1, 2))
    messages = [{"role": "system", "content": "You are a helpful support assistant for ACME."}]
    for _ in range(turns):
        question = sentence(rng.randint(8, 25)) + (" mail me at jo@example.com" if i % 7 == 0 else "")
        answer = " ".join(sentence(rng.randint(8, 20)) for _ in range(rng.randint(1, 4)))
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    pool.append(messages)
models = ("gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet-20241022")
prompts = ("support-bot@1.2.0", "support-bot@1.3.0", "support-bot@1.3.1")
records = []
for i in range(n):
    records.append({
        "conversation_id": f"c-{i:08d}",
        "messages": pool[i % len(pool)],
        "model": models[i % 3],
        "prompt_version": prompts[(i // 3) % 3],
        "user_feedback": {"thumb": "up" if i % 20 else "down"} if i % 10 == 0 else None,
        "tokens_used": {"prompt": 300 + i % 500, "completion": 40 + i % 200},
        "latency_ms": 200.0 + (i * 37) % 3000,
        "metadata": {"user_id": f"u{i % 5000}", "session": f"s{i // 4}", "environment": "prod",
                     "variant": "AB"[i % 2]},
    })
if redact:
    conversations.set_redactor("builtin")
size = sum(len(json.dumps(r)) for r in records[:1000]) / 1000
conversations.log(records[0] | {"conversation_id": "warm-up"})
conversations.flush()
before = conversations.count()

in_calls = 0.0
cpu0 = time.process_time()
t0 = time.perf_counter()
log = conversations.log
for start in range(0, n, 1000):
    c0 = time.perf_counter()
    for record in records[start:start + 1000]:
        log(record)
    in_calls += time.perf_counter() - c0
for i in range(0, n, 100):
    conversations.feedback(f"c-{i:08d}", thumb="up", comment="thanks")
conversations.flush()
elapsed = time.perf_counter() - t0
cpu = time.process_time() - cpu0
counts = conversations.counters()
assert counts["written"] >= n and not counts["failed"] and not counts["invalid"], counts
assert conversations.count() == before + n
print("@@RESULT " + json.dumps({"n": n, "elapsed": elapsed, "in_calls": in_calls, "cpu": cpu, "record_bytes": size}))
"""


def run_round(n: int, redact: bool, database: str | None, objects: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="keel-bench-conv-") as folder:
        env = {k: v for k, v in os.environ.items() if k not in ("KEEL_URI", "KEEL_OBJECTS")}
        if database:
            env["KEEL_URI"] = database
            if objects:
                env["KEEL_OBJECTS"] = objects
        else:
            subprocess.run(
                [sys.executable, "-c", "from keel.sdk.workspace import init_workspace; init_workspace('.')"],
                cwd=folder,
                check=True,
                env=env,
            )
        out = subprocess.run(
            [sys.executable, "-c", _WORKER, str(n), "1" if redact else "0"],
            cwd=folder,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if out.returncode != 0:
            raise SystemExit(f"worker failed:\n{out.stderr}")
        line = next(x for x in out.stdout.splitlines() if x.startswith(RESULT))
        return json.loads(line[len(RESULT) :])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="records per round")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--database", help="a database URL instead of a fresh .keel/ workspace")
    parser.add_argument("--objects", help="the object store URL that goes with --database")
    args = parser.parse_args()

    where = args.database.split("@")[-1] if args.database else "SQLite (.keel/keel.db, WAL)"
    print(f"keel.conversations.log: {args.n:,} records per round, {args.rounds} round(s), store: {where}")
    print(f"{'workload':<22}{'records/s':>12}{'vs target':>11}{'us/call in app':>16}{'elapsed s':>11}")
    for label, redact in (("log + flush", False), ("log + flush, redacted", True)):
        results = [run_round(args.n, redact, args.database, args.objects) for _ in range(args.rounds)]
        elapsed = statistics.median(r["elapsed"] for r in results)
        in_calls = statistics.median(r["in_calls"] for r in results)
        rate = args.n / elapsed
        print(f"{label:<22}{rate:>12,.0f}{rate / TARGET:>10.2f}x{in_calls / args.n * 1e6:>16.1f}{elapsed:>11.2f}")
    print(
        f"target: >= {TARGET:,} records/s sustained (issue 6); mean record ~{results[0]['record_bytes']:.0f} bytes "
        "of JSON; a late feedback() per 100 records is included in the time."
    )
    sys.stdout.flush()
    time.sleep(0)


if __name__ == "__main__":
    main()
