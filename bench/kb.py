"""Knowledge-base benchmark: commit, incremental re-commit, exact top-k search.

    .venv/bin/python bench/kb.py            # full sizes (targets apply to these)
    .venv/bin/python bench/kb.py --quick    # small sizes, a smoke run

Workloads (hashing-384 embedder, SQLite + local object store in a temp workspace):

1. stage and commit 10,000 documents (~1.5 KB each);
2. edit 10 of them and commit again: only their chunks are re-embedded (counted);
3. exact cosine top-5 search over 100,000 chunks x 384 dims (memory-mapped index):
   median and p95 latency over many queries, after one warm-up (target <= 50 ms).

No peer tool versions a knowledge base, so the figures are printed on their own.
Benchmarks assert nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

SEED = 20240601
SEARCH_TARGET_MS = 50.0


def _words(rng: random.Random, vocabulary: list[str], n: int) -> str:
    return " ".join(rng.choice(vocabulary) for _ in range(n)) + "."


def _documents(n: int, words_per_doc: int, seed: int = SEED) -> list[dict[str, object]]:
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(20_000)] + ["refund", "shipping", "invoice", "account", "password"]
    return [
        {"text": _words(rng, vocabulary, words_per_doc), "source": f"doc-{i:06d}.md", "metadata": {"i": i}}
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes")
    args = parser.parse_args()
    n_docs = 1_000 if args.quick else 10_000
    n_chunks = 10_000 if args.quick else 100_000
    n_queries = 30 if args.quick else 100

    tmp = Path(tempfile.mkdtemp(prefix="keel-bench-kb-"))
    os.chdir(tmp)
    from keel.sdk.kb import create
    from keel.sdk.session import get_session
    from keel.sdk.workspace import init_workspace

    init_workspace(tmp)
    service = get_session().kb
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}; folder {tmp}")
    print(f"sizes: {'QUICK (targets are for the full sizes)' if args.quick else 'full'}")
    print()

    # 1. commit N documents (~1.5 KB: 2 chunks of 1,000 characters with 100 overlap)
    docs = _documents(n_docs, 220)
    kb = create("bench-docs", chunk_size=1000, chunk_overlap=100)
    t0 = time.perf_counter()
    kb.add_documents(docs)
    t_add = time.perf_counter() - t0
    t0 = time.perf_counter()
    v1 = kb.commit("import")
    t_commit = time.perf_counter() - t0
    print(f"stage {n_docs:,} documents            {t_add:8.2f} s")
    print(f"commit {n_docs:,} documents           {t_commit:8.2f} s   ({v1.chunk_count:,} chunks embedded)")

    # 2. edit 10 documents, commit again
    rng = random.Random(SEED + 1)
    for i in rng.sample(range(n_docs), 10):
        docs[i] = {**docs[i], "text": str(docs[i]["text"]) + " edited refund policy"}
    t0 = time.perf_counter()
    report = kb.add_documents(docs)
    t_restage = time.perf_counter() - t0
    t0 = time.perf_counter()
    v2 = kb.commit("edit 10 documents")
    t_recommit = time.perf_counter() - t0
    print(
        f"re-stage all {n_docs:,} (10 edited)       {t_restage:8.2f} s   "
        f"({report.staged} staged, {len(report.unchanged):,} unchanged)"
    )
    print(
        f"re-commit after editing 10 documents {t_recommit:8.2f} s   "
        f"({v2.embedded_chunks} chunks re-embedded, {v2.reused_chunks:,} reused)"
    )

    # 3. search 100k chunks x 384 dims: one chunk per document (chunk_size >= document)
    big = create("bench-search", chunk_size=2000, chunk_overlap=0)
    t0 = time.perf_counter()
    big.add_documents(_documents(n_chunks, 60, SEED + 2))
    print(f"stage {n_chunks:,} one-chunk documents  {time.perf_counter() - t0:7.2f} s")
    t0 = time.perf_counter()
    version = big.commit("search corpus")
    t_big = time.perf_counter() - t0
    print(
        f"commit {n_chunks:,} one-chunk documents {t_big:7.2f} s   "
        f"({version.chunk_count:,} chunks x {version.dimension})"
    )
    queries = [_words(random.Random(SEED + 3 + q), [f"w{i}" for i in range(20_000)], 8) for q in range(n_queries)]
    t0 = time.perf_counter()
    service.search("bench-search", queries[0], 5, version.number)  # loads and memory-maps the index
    t_first = time.perf_counter() - t0
    latencies = []
    for query in queries:
        t0 = time.perf_counter()
        service.search("bench-search", query, 5, version.number)
        latencies.append((time.perf_counter() - t0) * 1000)
    latencies.sort()
    median = statistics.median(latencies)
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    met = "yes" if p95 <= SEARCH_TARGET_MS else "NO"
    print(f"first search (load + memory-map)     {t_first * 1000:8.1f} ms")
    print(
        f"search top-5 over {version.chunk_count:,} x {version.dimension}   median {median:6.1f} ms   "
        f"p95 {p95:6.1f} ms   (target <= {SEARCH_TARGET_MS:.0f} ms: {met})"
    )


if __name__ == "__main__":
    sys.exit(main())
