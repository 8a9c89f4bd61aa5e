"""Erasure of recorded LLM calls: keel erasing 100,000 calls of one end user by filter.

    .venv/bin/python bench/erase_llm.py                         # SQLite + a local folder
    .venv/bin/python bench/erase_llm.py --n 10000               # a smoke run
    .venv/bin/python bench/erase_llm.py --postgres URL --objects s3://bucket/prefix?endpoint_url=...

A fresh store gets ``2 * --n`` recorded calls written as the SDK's background writer hands
them over (batches of 50, one pack object each), every other call of user ``u-42``
(``metadata.user_id``), so every pack holds calls of both: the worst case, where erasing one
user rewrites every pack. Then ``keel.llm.delete_calls(filter="metadata.user_id = 'u-42'")``
is timed as a whole: matching, reading the old packs and writing the kept calls into new
ones, the transaction (rows deleted, the rest moved, the audit row), deleting the old pack
objects and the scrub (SQLite's truncating WAL checkpoint). The dry run (count only) is timed
too, and afterwards the store's files are searched for the erased text.

No peer keeps recorded LLM calls in a store of its own to erase from (MLflow's and
Langfuse's nearest are traces: see bench/erase.py), so keel's figures are printed alone.
Benchmarks assert nothing: they print. Machines are noisy: wall and CPU time are both shown.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

BATCH = 50  # calls per pack, as the SDK's writer batches them


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="calls erased (as many are kept)")
    parser.add_argument("--postgres", help="a database URL (default: a SQLite workspace)")
    parser.add_argument("--objects", help="an object store URL (default: the workspace's folder)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="keel-erase-llm-"))
    os.chdir(folder)
    if args.postgres:
        os.environ["KEEL_URI"] = args.postgres
    if args.objects:
        os.environ["KEEL_OBJECTS"] = args.objects

    from keel.core.entities import now_ms
    from keel.sdk import llm
    from keel.sdk import session as sessions
    from keel.sdk.workspace import init_workspace
    from keel.services.llm import PendingCall

    if not args.postgres:
        init_workspace(folder)
    service = sessions.get_session().llm
    marker = "ERASEDMARKER"
    started = time.perf_counter()
    for first in range(0, 2 * args.n, BATCH):
        batch = []
        for i in range(first, first + BATCH):
            gone = i % 2 == 1
            user = "u-42" if gone else f"v-{i % 997}"
            text = f"{marker} my card ends in {i % 10000:04d}" if gone else f"What is {i % 90} + {i % 7}?"
            batch.append(
                PendingCall(
                    "chat.completions",
                    {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], "temperature": 0},
                    {
                        "id": f"chatcmpl-{i}",
                        "object": "chat.completion",
                        "model": "gpt-4o",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"You said: {text}"}}],
                        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
                    },
                    180.0 + i % 400,
                    now_ms(),
                    context={"metadata": {"user_id": user, "environment": "prod"}},
                )
            )
        service.write(batch)
    written = time.perf_counter() - started
    print(f"store: {service.store.db.display_url}, objects {service.objects.url}")
    print(f"setup: {2 * args.n:,} calls in {2 * args.n // BATCH:,} packs written in {written:.1f} s")

    where = "metadata.user_id = 'u-42'"
    t0 = time.perf_counter()
    dry = llm.delete_calls(filter=where, dry_run=True)
    dry_s = time.perf_counter() - t0
    print(f"dry run (count): {dry.matched:,} calls match in {dry_s:.2f} s")

    c0, t0 = _cpu(), time.perf_counter()
    report = llm.delete_calls(filter=where)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    print(
        f"erase by filter: {report.deleted:,} calls in {wall:.2f} s wall, {cpu:.2f} s CPU "
        f"({report.deleted / wall:,.0f} calls/s); {report.objects_removed:,} old packs removed "
        f"({report.bytes_freed / 1e6:.1f} MB), the kept {2 * args.n - report.deleted:,} calls moved to new packs"
    )
    left = llm.calls(limit=None)
    print(f"left: {len(left):,} calls in {len({r.oid for r in left}):,} packs")
    if not args.postgres and not args.objects:
        found = [p for p in (folder / ".keel").rglob("*") if p.is_file() and marker.encode() in p.read_bytes()]
        print(f"files of .keel/ holding the erased text afterwards: {len(found)}")
    sessions.reset()


if __name__ == "__main__":
    sys.exit(main())
