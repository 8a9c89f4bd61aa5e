"""Recording and replaying LLM calls: keel.llm.wrap vs the unwrapped openai client.

    .venv/bin/python bench/llm.py [--quick] [--calls N]

The stand-in model server (``keel.integrations.standin``) runs in its own
process on 127.0.0.1, so it does not compete with the client for the GIL.
Figures (all in this run, same machine, same server):

- ``recording overhead``: mean time per ``chat.completions.create`` through
  ``keel.llm.wrap(client)`` (mode record, inside a run) minus the same call
  on the unwrapped client. Blocks of calls alternate between the two clients
  to cancel drift; the wrapped total includes the final flush (every
  recording durable), so background writing is paid for. Target <= 200 us.
- ``replay``: the same requests through ``wrap(client, mode="replay")`` with
  the server stopped: a cold pass (each recording looked up in the store and
  parsed once), a warm pass (the in-process cache), and a pass scoped to the
  recording run (``replay_from=RUN``: its index preloaded in one query).
  Target >= 20,000 calls/s.

Benchmarks assert nothing; they print.
"""

from __future__ import annotations

import argparse
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


def _start_server(port: int) -> subprocess.Popen[bytes]:
    code = f"from keel.integrations.standin import StandInServer; StandInServer(port={port}).serve_forever()"
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the stand-in server did not start")


def _messages(i: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You are a careful assistant. Think step by step."},
        {"role": "user", "content": f"What is {i} + {i * 7 % 97}?"},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--calls", type=int, default=None, help="calls per client (default 2000, quick 300)")
    args = parser.parse_args()
    n = args.calls or (300 if args.quick else 2000)
    block = 50

    import openai

    import keel
    from keel.sdk import llm
    from keel.sdk.workspace import init_workspace

    tmp = Path(tempfile.mkdtemp(prefix="keel-bench-llm-"))
    os.chdir(tmp)
    init_workspace(tmp)
    port = _free_port()
    server = _start_server(port)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        raw = openai.OpenAI(base_url=base_url, api_key="standin", max_retries=0)
        wrapped = llm.wrap(openai.OpenAI(base_url=base_url, api_key="standin", max_retries=0))
        for i in range(20):  # warm both connections and the import paths
            raw.chat.completions.create(model="gpt-4", messages=_messages(-i - 1), temperature=0)
            wrapped.chat.completions.create(model="gpt-4", messages=_messages(-i - 1), temperature=0.1)
        llm.flush()

        plain_blocks: list[float] = []
        wrapped_blocks: list[float] = []
        with keel.start_run(project="bench-llm", name="record") as run:
            started_wrapped = 0.0
            for number, start in enumerate(range(0, n, block)):
                stop = min(n, start + block)
                # Alternate which client goes first in a block: no order bias.
                for which in (("raw", "keel") if number % 2 == 0 else ("keel", "raw")):
                    client = raw if which == "raw" else wrapped
                    t0 = time.perf_counter()
                    for i in range(start, stop):
                        client.chat.completions.create(model="gpt-4", messages=_messages(i), temperature=0)
                    elapsed = time.perf_counter() - t0
                    (plain_blocks if which == "raw" else wrapped_blocks).append(elapsed / (stop - start))
                    if which == "keel":
                        started_wrapped += elapsed
            t3 = time.perf_counter()
            llm.flush()
            flush_time = time.perf_counter() - t3
        plain = statistics.fmean(plain_blocks)
        wrapped_mean = (started_wrapped + flush_time) / n
        overhead_us = (wrapped_mean - plain) * 1e6
        median_us = statistics.median(w - p for w, p in zip(wrapped_blocks, plain_blocks, strict=True)) * 1e6
        stats = llm.stats()
    finally:
        server.terminate()
        server.wait(timeout=10)

    # -- replay, the server stopped ------------------------------------------------------------
    def replay_pass(client: object) -> float:
        t0 = time.perf_counter()
        for i in range(n):
            client.chat.completions.create(model="gpt-4", messages=_messages(i), temperature=0)  # type: ignore[attr-defined]
        return n / (time.perf_counter() - t0)

    def offline(scope: str | None = None) -> object:
        # A new client for each pass: a client's second identical call replays the request's
        # second recording; the in-process cache is the store's, so a new client finds it warm.
        client = openai.OpenAI(base_url=base_url, api_key="standin", max_retries=0)
        return llm.wrap(client, mode="replay", replay_from=scope)

    cold = replay_pass(offline())
    warm = replay_pass(offline())
    scoped_cold = replay_pass(offline(run.id))
    scoped_warm = replay_pass(offline(run.id))

    print()
    python = sys.version.split()[0]
    print(f"keel {keel.__version__}, openai {openai.__version__}, Python {python}, {os.cpu_count()} CPUs")
    print(f"{n} chat.completions calls per client against the stand-in server in another process (127.0.0.1)")
    print(f"recorded {stats.recorded} calls, {stats.failures} recording failures, store {tmp}")
    print()
    rows = [
        ("unwrapped openai client, per call", f"{plain * 1e6:,.0f} us", ""),
        ("keel.llm.wrap (record), per call", f"{wrapped_mean * 1e6:,.0f} us", ""),
        ("recording overhead (mean, incl. final flush)", f"{overhead_us:,.0f} us", "<= 200 us"),
        ("recording overhead (median of block differences)", f"{median_us:,.0f} us", "<= 200 us"),
        ("replay, cold (store lookup + parse once)", f"{cold:,.0f} calls/s", ""),
        ("replay, warm (in-process cache)", f"{warm:,.0f} calls/s", ">= 20,000 calls/s"),
        ("replay from the run, cold (index preloaded)", f"{scoped_cold:,.0f} calls/s", ""),
        ("replay from the run, warm", f"{scoped_warm:,.0f} calls/s", ">= 20,000 calls/s"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"{'workload':{widths[0]}}  {'keel':>{widths[1]}}  target")
    print(f"{'-' * widths[0]}  {'-' * widths[1]}  {'-' * widths[2]}")
    for name, value, target in rows:
        print(f"{name:{widths[0]}}  {value:>{widths[1]}}  {target}".rstrip())


if __name__ == "__main__":
    main()
