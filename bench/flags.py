"""Feature-flag evaluation, A/B assignment and cached prompt loads: throughput and latency, single process.

    .venv/bin/python bench/flags.py [--quick] [--n N]

Figures (one process, one thread, a fresh workspace in a temporary folder;
median of 3 passes over ``n`` distinct user ids, each id evaluated 5 times):

- ``is_enabled (rollout)``: ``client.is_enabled("flag", user_id=uid)`` for a
  boolean flag with a 25% rollout. Target >= 1,000,000 evaluations/s. New flags
  bucket by BLAKE2b-64 (``bucketing: blake2b``, see :mod:`keel.core.bucketing`);
  ``is_enabled (rollout, crc32 flag)`` is the same flag on the crc32 scheme that
  flags stored before schemes were recorded keep (the hash's cost, side by side).
- ``is_enabled (rules + rollout)``: the same flag with two targeting rules
  (an ``in`` and a ``semver_gte``) in front of the rollout.
- ``is_enabled (regex rule + rollout)``: a flag whose rule matches an ``email``
  attribute against a regex (run on RE2, linear time) before the rollout.
- ``variant (distribution)``: ``client.variant("reranker", user_id=uid)``
  for a three-way distribution.
- ``is_enabled, log_exposures``: ``is_enabled`` inside an active run with
  exposures on (recorded once per run; the check per call remains).
- ``ab.assign``: ``keel.ab.assign("exp", user_id=uid)`` for a running 50/50
  experiment, exposures queued (first exposure of each unit) and written in the
  background. Target >= 1,000,000 assignments/s.
- ``prompts.load (alias, cached)`` / ``prompts.get (alias, cached)``:
  ``keel.prompts.load("chat@production")`` and ``keel.prompts.get(...)``, served from
  the in-process cache the refresher keeps current (:mod:`keel.sdk.live`).
- **With the store locked**: another process holds SQLite's write lock
  (``BEGIN EXCLUSIVE``) for ``--lock-seconds`` (5); meanwhile ``prompts.get``,
  ``prompts.load``, ``is_enabled`` and ``ab.assign`` (a unit seen before; and a new
  unit each call, up to 50,000, which queues an exposure for the background writer:
  how that queue behaves when it fills is ``bench/delivery.py``'s subject) are called
  in a loop and each call is timed: p50, p99 and max. Target: max <= 50 ms (none of
  them may wait on the store).

Benchmarks assert nothing; they print.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

TARGET = 1_000_000


def _rate(fn: Callable[[str], Any], ids: list[str], repeat: int = 5, passes: int = 3) -> float:
    """Median calls/s over ``passes`` passes of ``repeat`` x ``ids``."""
    work = ids * repeat
    rates = []
    for _ in range(passes):
        start = time.perf_counter()
        for uid in work:
            fn(uid)
        rates.append(len(work) / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer ids")
    parser.add_argument("--n", type=int, default=200_000, help="distinct user ids")
    parser.add_argument("--lock-seconds", type=float, default=5.0, help="how long the store is locked")
    args = parser.parse_args()
    n = 20_000 if args.quick else args.n

    folder = tempfile.mkdtemp(prefix="keel-bench-flags-")
    os.chdir(folder)
    import keel
    from keel.sdk import ab, flags
    from keel.sdk.workspace import init_workspace

    init_workspace(folder)
    flags.set("new_prompt", rollout=25, reason="bench")
    flags.set("new_prompt_crc32", rollout=25, bucketing="crc32", reason="bench: the scheme of flags from before")
    flags.set(
        "new_prompt_rules",
        {
            "rollout": 25,
            "rules": [
                {"if": {"country": {"in": ["DE", "FR"]}}, "serve": True},
                {"if": {"app_version": {"semver_gte": "9.0.0"}}, "serve": False},
            ],
        },
    )
    flags.set(
        "new_prompt_regex",
        {"rollout": 25, "rules": [{"if": {"email": {"regex": r"@(corp|staff)\\.example\\.com$"}}, "serve": True}]},
    )
    flags.set(
        "reranker", {"variants": {"off": None, "a": "a", "b": "b"}, "distribution": {"off": 50, "a": 25, "b": 25}}
    )
    ab.create("exp", [{"name": "control"}, {"name": "treatment"}], weights={"control": 0.5, "treatment": 0.5})
    ab.start("exp")
    keel.prompts.register("chat", template="Answer: {{ q }}", changelog="bench")
    keel.prompts.set_alias("chat", "production", "1.0.0")

    client = flags.client("production", refresh_seconds=30)
    logged = flags.client("production", refresh_seconds=30, log_exposures=True)
    ids = [f"user-{i}" for i in range(n)]
    is_enabled, variant, assign = client.is_enabled, client.variant, ab.assign

    rows = [
        ("is_enabled (rollout)", _rate(lambda u: is_enabled("new_prompt", user_id=u), ids)),
        ("is_enabled (rollout, crc32 flag)", _rate(lambda u: is_enabled("new_prompt_crc32", user_id=u), ids)),
        ("is_enabled (rules + rollout)", _rate(lambda u: is_enabled("new_prompt_rules", user_id=u), ids)),
        (
            "is_enabled (regex rule + rollout)",
            _rate(lambda u: is_enabled("new_prompt_regex", user_id=u, email=u + "@mail.example.org"), ids),
        ),
        ("variant (distribution)", _rate(lambda u: variant("reranker", user_id=u), ids)),
    ]
    with keel.start_run(project="bench"):
        rows.append(("is_enabled, log_exposures", _rate(lambda u: logged.is_enabled("new_prompt", user_id=u), ids)))
    rows.append(("ab.assign", _rate(lambda u: assign("exp", user_id=u), ids)))
    load, get = keel.prompts.load, keel.prompts.get
    load("chat@production")
    rows.append(("prompts.load (alias, cached)", _rate(lambda u: load("chat@production"), ids)))
    rows.append(("prompts.get (alias, cached)", _rate(lambda u: get("chat@production"), ids)))
    ab.flush()
    exposed = sum(ab.status("exp")["exposures"].values())
    locked = _with_store_locked(folder, args.lock_seconds, client)

    print(f"keel flags bench: {n:,} user ids x 5, Python {sys.version.split()[0]}")
    print(f"{'operation':32} {'per second':>14} {'vs 1M/s target':>16}")
    for name, rate in rows:
        mark = "ok" if rate >= TARGET else "BELOW"
        print(f"{name:32} {rate:14,.0f} {rate / TARGET:15.2f}x {mark}")
    print(f"exposures written: {exposed:,} (one per unit)")
    print()
    print(f"with the store write-locked by another process for {args.lock_seconds:g} s (each call timed):")
    print(f"{'call':32} {'calls':>9} {'p50 us':>9} {'p99 us':>9} {'max ms':>9}")
    for name, times in locked.items():
        times.sort()
        p50, p99 = times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.99))]
        mark = "ok" if times[-1] <= 0.05 else "ABOVE 50 ms"
        print(f"{name:32} {len(times):9,} {p50 * 1e6:9.1f} {p99 * 1e6:9.1f} {times[-1] * 1e3:9.2f} {mark}")
    client.close()
    logged.close()


LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


def _with_store_locked(folder: str, seconds: float, client: Any) -> dict[str, list[float]]:
    """Per call, the seconds each call took while another process held the write lock."""
    import subprocess

    import keel
    from keel.sdk import ab

    keel.prompts.get("chat@production")
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, os.path.join(folder, ".keel", "keel.db"), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
    calls: dict[str, Callable[[int], Any]] = {
        "prompts.get": lambda i: keel.prompts.get("chat@production"),
        "prompts.load": lambda i: keel.prompts.load("chat@production"),
        "is_enabled": lambda i: client.is_enabled("new_prompt", user_id=f"locked-{i}"),
        "ab.assign (a unit seen before)": lambda i: ab.assign("exp", user_id=f"user-{i % 1000}"),
        "ab.assign (a new unit)": lambda i: ab.assign("exp", user_id=f"locked-{i % 50_000}"),
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    end = time.monotonic() + seconds - 0.2
    i = 0
    clock = time.perf_counter
    while time.monotonic() < end:
        for name, call in calls.items():
            started = clock()
            call(i)
            times[name].append(clock() - started)
        i += 1
        if i % 100 == 0:
            time.sleep(0.001)  # let the background threads run, as an app's idle moments do
    locker.communicate(timeout=seconds + 30)
    return times


if __name__ == "__main__":
    main()
