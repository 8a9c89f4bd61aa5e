"""Delivery under a locked store: caller latency, spool throughput, catch-up (issue 25).

    .venv/bin/python bench/delivery.py                          # this checkout only
    .venv/bin/python bench/delivery.py --before-src ../old/src  # side by side with an older keel
    .venv/bin/python bench/delivery.py --before-rev HEAD~1      # the same, from a git worktree

Workloads, each in a fresh subprocess with a fresh workspace (SQLite + local objects):

- ``locked``: an app thread logs at a steady pace (``--metric-rate`` ``log_metric`` and
  ``--conversation-rate`` ``conversations.log`` calls per second) while another process
  holds the database's write lock (``BEGIN EXCLUSIVE``) for ``--lock`` seconds (20), and
  for 2 s after. Every call is timed: p50 / p99 / max per call type (targets: max <= 50 ms,
  p99 <= 1 ms). Then the catch-up: seconds from the lock's release until everything logged
  and waiting at the release is in the store (the writers' own counters, which an older
  keel has too), and whether what is stored is what was logged.
- ``spool``: the spool's write rate alone (encode + checksum + append + one fsync at the
  end), for metric rows (batches of 50,000) and conversation rows (batches of 1,000);
  target >= 200,000 rows/s. Keel only (an older keel has no spool).

``--before-src`` runs the ``locked`` workload with another keel's source folder first on
``PYTHONPATH`` (its own interpreter: this one), so the previous behaviour is measured on the
same machine in the same run. Benchmarks assert nothing: they print.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULT = "@@RESULT "
T = 1_700_000_000_000

LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
print("released", flush=True)
"""


# -- workers (run in a subprocess) -----------------------------------------------------------------
def _percentiles(values: Any) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    return {
        "n": len(ordered),
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


def worker_locked(args: argparse.Namespace) -> dict[str, Any]:
    import resource
    import threading

    import keel
    from keel.sdk import session as sessions
    from keel.sdk.workspace import init_workspace

    folder = Path(args.dir)
    init_workspace(folder)
    run = keel.start_run(project="bench", name="locked")
    run.log_metric("m", 0.0, step=0)
    keel.conversations.log(conversation_id="warm", messages=[{"role": "user", "content": "warm up"}])
    run.flush()
    keel.conversations.flush()
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(folder / ".keel" / "keel.db"), str(args.lock)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
    released: list[float] = []
    caught: list[float] = []
    session = sessions.get_session()

    def totals() -> tuple[int, int]:
        """Rows delivered so far and rows waiting, both streams (the writers' own counters,
        which an older keel has too)."""
        writers = [session.writer, session.conversation_writer]
        return sum(w.written for w in writers), sum(w.pending for w in writers)

    def watch() -> None:
        assert locker.stdout is not None
        locker.stdout.readline()
        released.append(time.monotonic())
        delivered, waiting = totals()
        target = delivered + waiting  # the backlog at the release: caught up once it is delivered
        while time.monotonic() - released[0] < 300:
            if totals()[0] >= target:
                caught.append(time.monotonic())
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    metric_lat = array("d")  # 8 bytes a call: the measurement stays out of the memory figure
    conv_lat = array("d")
    message = [
        {"role": "user", "content": "Where is my order? It was due on Monday."},
        {"role": "assistant", "content": "Let me check the tracking for you: it left the warehouse today."},
    ]
    tick = 0.01
    metrics_per_tick = max(1, int(args.metric_rate * tick))
    convs_per_tick = max(1, int(args.conversation_rate * tick))
    step = 1
    conv = 0
    started = time.monotonic()
    end = started + args.lock + 2.0
    next_tick = started
    while time.monotonic() < end:
        for _ in range(metrics_per_tick):
            begin = time.perf_counter()
            run.log_metric("m", float(step), step=step)
            metric_lat.append(time.perf_counter() - begin)
            step += 1
        for _ in range(convs_per_tick):
            begin = time.perf_counter()
            keel.conversations.log(conversation_id=f"c{conv}", messages=message, model="gpt-4o")
            conv_lat.append(time.perf_counter() - begin)
            conv += 1
        next_tick += tick
        pause = next_tick - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    logging_ended = time.monotonic()
    delivery = getattr(keel, "delivery", None) if "delivery" in getattr(keel, "__all__", ()) else None
    during: dict[str, Any] = {}
    if delivery is not None:
        during = {k: v.to_dict() for k, v in delivery.status().items() if k in ("runs", "conversations")}
    watcher.join(timeout=300)
    run.finish()
    keel.conversations.flush()
    release = released[0] if released else logging_ended
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the read-back below
    stored_metrics = len(keel.Client().metric_history(run.id, "m"))
    stored_convs = keel.conversations.count() - 1
    locker.wait()
    return {
        "log_metric": _percentiles(metric_lat),
        "conversations.log": _percentiles(conv_lat),
        "logged_metrics": step,
        "stored_metrics": stored_metrics,
        "logged_conversations": conv,
        "stored_conversations": stored_convs,
        "catch_up_s": max(0.0, caught[0] - release) if caught else None,
        "waiting_at_release": during,
        "peak_rss_mb": peak,
    }


def worker_spool(args: argparse.Namespace) -> dict[str, Any]:
    from keel.core.batch import WriteBatch
    from keel.core.conversations import ConversationBatch
    from keel.sdk.spool import StreamSpool, encode_batch
    from keel.services.conversations import ConversationService

    folder = Path(args.dir)
    out: dict[str, Any] = {}
    run_id = "a" * 32
    metric_batches = [
        WriteBatch(
            metrics=[(run_id, f"k{i % 10}", float(i), b * 50_000 + i, 1_700_000_000_000 + i) for i in range(50_000)]
        )
        for b in range(args.spool_batches)
    ]
    spool = StreamSpool(folder / "d" / "runs")
    begin = time.perf_counter()
    for seq, batch in enumerate(metric_batches, 1):
        payload = encode_batch(f"b-{seq}", batch, 0)
        spool.append([(seq, f"b-{seq}", len(batch), 0, payload)])
    spool.sync()
    elapsed = time.perf_counter() - begin
    rows = sum(len(b) for b in metric_batches)
    out["metrics"] = {
        "rows": rows,
        "seconds": elapsed,
        "rows_per_s": rows / elapsed,
        "bytes": spool_bytes(folder / "d" / "runs"),
    }
    spool.close()

    from keel.core.conversations import normalize_record, to_row

    record = normalize_record(
        {
            "conversation_id": "c",
            "messages": [
                {"role": "user", "content": "Where is my order? It was due on Monday."},
                {"role": "assistant", "content": "Let me check the tracking for you: it left the warehouse today."},
            ],
            "model": "gpt-4o",
        }
    )
    del ConversationService
    row = to_row(record, None)
    conv_batches = [ConversationBatch(conversations=[row] * 1000) for _ in range(args.spool_batches * 20)]
    spool = StreamSpool(folder / "d" / "conversations")
    begin = time.perf_counter()
    for seq, batch in enumerate(conv_batches, 1):
        payload = encode_batch(f"c-{seq}", batch, 0)
        spool.append([(seq, f"c-{seq}", len(batch), 0, payload)])
    spool.sync()
    elapsed = time.perf_counter() - begin
    rows = sum(len(b) for b in conv_batches)
    out["conversations"] = {
        "rows": rows,
        "seconds": elapsed,
        "rows_per_s": rows / elapsed,
        "bytes": spool_bytes(folder / "d" / "conversations"),
    }
    spool.close()
    return out


def spool_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.seg"))


# -- the driver ------------------------------------------------------------------------------------
def run_worker(workload: str, args: argparse.Namespace, src: str | None) -> dict[str, Any] | None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    if src:
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryDirectory(prefix="keel-bench-delivery-", dir=args.tmpdir) as folder:
        command = [sys.executable, __file__, "--worker", workload, "--dir", folder, *worker_options(args)]
        try:
            out = subprocess.run(
                command, cwd=folder, env=env, capture_output=True, text=True, timeout=args.lock * 10 + 300
            )
        except subprocess.TimeoutExpired:
            print(f"  {workload}: timed out", file=sys.stderr)
            return None
    for line in out.stdout.splitlines():
        if line.startswith(RESULT):
            return dict(json.loads(line[len(RESULT) :]))
    print(f"  {workload} failed (exit {out.returncode}):\n{out.stderr[-3000:]}", file=sys.stderr)
    return None


def worker_options(args: argparse.Namespace) -> list[str]:
    return [
        "--lock",
        str(args.lock),
        "--metric-rate",
        str(args.metric_rate),
        "--conversation-rate",
        str(args.conversation_rate),
        "--spool-batches",
        str(args.spool_batches),
    ]


def code_of(src: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    if src:
        env["PYTHONPATH"] = src
    out = subprocess.run(
        [sys.executable, "-c", "import keel, os; print(keel.__version__, os.path.dirname(keel.__file__))"],
        env=env,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def worktree(rev: str, tmp: Path) -> str:
    folder = tmp / "before"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(folder), rev], cwd=HERE.parent, check=True, capture_output=True
    )
    return str(folder / "src")


TARGETS = (("p50_ms", "p50 ms", ""), ("p99_ms", "p99 ms", "<= 1 ms"), ("max_ms", "max ms", "<= 50 ms"))


def fmt_ms(value: float) -> str:
    return f"{value:,.3f}" if value < 10 else f"{value:,.0f}"


def print_locked(results: dict[str, dict[str, Any] | None], args: argparse.Namespace) -> None:
    print(
        f"\nstore write-locked by another process for {args.lock:g} s; the app logs {args.metric_rate:,} "
        f"log_metric + {args.conversation_rate:,} conversations.log calls/s (and 2 s after the release)"
    )
    sides = [s for s in results if results[s] is not None]
    header = f"{'':34}" + "".join(f"{side:>22}" for side in sides)
    print(header)
    print("-" * len(header))
    for call in ("log_metric", "conversations.log"):
        for key, label, target in (
            ("p50_ms", "p50 ms", ""),
            ("p99_ms", "p99 ms", "<= 1 ms"),
            ("max_ms", "max ms", "<= 50 ms"),
        ):
            cells = "".join(f"{fmt_ms(results[s][call][key]):>22}" for s in sides)  # type: ignore[index]
            print(f"{call + ' ' + label:34}{cells}   {target}")
    rows = (
        ("logged / stored metrics", lambda r: f"{r['logged_metrics']:,} / {r['stored_metrics']:,}"),
        ("logged / stored conversations", lambda r: f"{r['logged_conversations']:,} / {r['stored_conversations']:,}"),
        ("catch-up after release (s)", lambda r: "-" if r["catch_up_s"] is None else f"{r['catch_up_s']:.2f}"),
        ("peak RSS until caught up (MB)", lambda r: f"{r['peak_rss_mb']:.0f}"),
    )
    for label, cell in rows:
        print(f"{label:34}" + "".join(f"{cell(results[s]):>22}" for s in sides))  # type: ignore[arg-type]
    after = results.get("keel (this)")
    if after and after.get("waiting_at_release"):
        waiting = after["waiting_at_release"]
        print(
            "waiting when logging ended (this keel): "
            + ", ".join(f"{k}: {v['queued']:,} queued, {v['spooled']:,} spooled" for k, v in waiting.items())
        )


def print_spool(result: dict[str, Any] | None) -> None:
    if result is None:
        return
    print("\nspool write rate (encode + CRC + append, one fsync at the end)       target >= 200,000 rows/s")
    for kind in ("metrics", "conversations"):
        r = result[kind]
        print(
            f"  {kind:14} {r['rows_per_s']:>12,.0f} rows/s   ({r['rows']:,} rows in {r['seconds']:.2f} s, "
            f"{r['bytes'] / r['rows']:.0f} bytes/row on disk)"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before-src", help="another keel's src folder, measured side by side")
    parser.add_argument("--before-rev", help="a git revision of this repository, checked out as --before-src")
    parser.add_argument("--lock", type=float, default=20.0, help="seconds the store stays locked (default 20)")
    parser.add_argument("--metric-rate", type=int, default=20_000, help="log_metric calls per second")
    parser.add_argument("--conversation-rate", type=int, default=5_000, help="conversations.log calls per second")
    parser.add_argument("--spool-batches", type=int, default=20, help="metric batches of 50,000 rows to spool")
    parser.add_argument("--quick", action="store_true", help="a 5 s lock and smaller spool runs")
    parser.add_argument("--tmpdir", help="where the temporary workspaces go")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.lock = min(args.lock, 5.0)
        args.spool_batches = min(args.spool_batches, 4)
    return args


def main() -> int:
    args = parse_args()
    if args.worker:
        result = worker_locked(args) if args.worker == "locked" else worker_spool(args)
        print(RESULT + json.dumps(result), flush=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="keel-bench-delivery-") as tmp:
        before = args.before_src or (worktree(args.before_rev, Path(tmp)) if args.before_rev else None)
        try:
            print(f"this keel:   {code_of(None)}")
            if before:
                print(f"before:      {code_of(before)}")
            results: dict[str, dict[str, Any] | None] = {}
            if before:
                print("  .. locked (before)", file=sys.stderr)
                results["keel (before)"] = run_worker("locked", args, before)
            print("  .. locked (this)", file=sys.stderr)
            results["keel (this)"] = run_worker("locked", args, None)
            print_locked(results, args)
            print("  .. spool", file=sys.stderr)
            print_spool(run_worker("spool", args, None))
        finally:
            if args.before_rev and not args.before_src:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(Path(tmp) / "before")],
                    cwd=HERE.parent,
                    capture_output=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
