"""Webhooks: what an event adds to the request that causes it, and delivery throughput.

    .venv/bin/python bench/hooks.py [--events 3000] [--postgres URL]

1. **Fan-out cost per request.** An alias move (``PromptService.set_alias``: lock, reflog row,
   ref row) timed with and without its ``record_event`` (the outbox row), with 0 and with 20
   subscriptions: the request only inserts one row, so subscriptions cost it nothing. Also the
   ``record_event`` call alone (the INSERT inside an open transaction). Target: <= 1 ms.
2. **Delivery throughput.** ``--events`` events, one subscription to a receiver on 127.0.0.1
   (a threading ``http.server`` with keep-alive that verifies each signature, in another
   process so it does not share this interpreter's lock), worked by one
   :class:`~keel.services.hooks_delivery.Dispatcher` (as a server's worker thread does):
   fan-out, claims, signed POSTs, attempts recorded. Target: >= 500 deliveries/s.

SQLite by default; ``--postgres URL`` runs the same on an empty PostgreSQL database.
Benchmarks assert nothing; they print.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

RECEIVER = textwrap.dedent(
    """
    import hashlib, hmac, http.server, sys
    secret = sys.argv[1].encode()
    count = [0, 0]
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            ts = self.headers["X-Keel-Timestamp"]
            good = hmac.compare_digest(
                "v1=" + hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest(),
                self.headers["X-Keel-Signature"])
            count[0 if good else 1] += 1
            self.send_response(200 if good else 400)
            self.send_header("Content-Length", "0")
            self.end_headers()
        def do_GET(self):
            text = f"{count[0]} {count[1]}".encode()
            self.send_response(200); self.send_header("Content-Length", str(len(text))); self.end_headers()
            self.wfile.write(text)
        def log_message(self, *a): pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """
)


def _median_ms(fn: Any, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def fan_out_cost(store: Any, rounds: int) -> dict[str, float]:
    """Median ms of an alias move with and without its event, and of record_event alone."""
    import keel.meta.refs as refs_module
    from keel.meta.events import record_event
    from keel.services.hooks import HookService
    from keel.services.hooks_delivery import HookSettings
    from keel.services.prompts import PromptService

    prompts = PromptService(store)
    prompts.register("bench", "v1 {{x}}", changelog="one")
    prompts.register("bench", "v2 {{x}}", changelog="two")
    targets = ["1.0.0", "1.0.1"]
    state = {"i": 0}

    def move() -> None:
        state["i"] += 1
        prompts.set_alias("bench", "production", targets[state["i"] % 2])

    out: dict[str, float] = {}
    _median_ms(move, 50)  # warm
    out["alias move, with its event (0 subscriptions)"] = _median_ms(move, rounds)
    real = refs_module.record_event
    refs_module.record_event = lambda *a, **k: None  # type: ignore[assignment]
    try:
        out["alias move, event left out"] = _median_ms(move, rounds)
    finally:
        refs_module.record_event = real
    hooks = HookService(store, HookSettings(allow_private=True))
    for i in range(20):
        hooks.add(f"http://127.0.0.1:9/{i}", "*")
    out["alias move, with its event (20 subscriptions)"] = _median_ms(move, rounds)

    def insert_only() -> None:
        with store.db.write() as conn:
            start = time.perf_counter()
            for _ in range(100):
                record_event(conn, "alias.moved", project=None, subject={"kind": "prompt", "name": "bench", "ref": "p"},
                             data={"old": "1.0.0", "new": "1.0.1", "who": "bench", "reason": ""})  # fmt: skip
            timings.append((time.perf_counter() - start) / 100)

    timings: list[float] = []
    for _ in range(20):
        insert_only()
    out["record_event alone (in an open transaction)"] = statistics.median(timings) * 1000
    return out


def throughput(store: Any, events: int, concurrency: int) -> tuple[float, float, int, int]:
    """(fan-out s, total s, delivered, signature failures) for ``events`` events to one receiver."""
    import httpx

    from keel.meta.events import record_event
    from keel.meta.hooks import HookStore
    from keel.services.hooks import HookService
    from keel.services.hooks_delivery import Dispatcher, HookSettings

    settings = HookSettings(allow_private=True, concurrency=concurrency, batch=256, backoff=1)
    hooks = HookService(store, settings)
    for old in hooks.subscriptions():
        hooks.remove(old.id)
    Dispatcher(store.db, settings).fan_out()  # events of earlier steps: no subscription wants them
    secret = "whsec_bench"
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, secret], stdout=subprocess.PIPE, text=True)
    try:
        port = int(receiver.stdout.readline())  # type: ignore[union-attr]
        with store.db.write() as conn:
            HookStore.add(conn, "*", ["*"], None, None, f"http://127.0.0.1:{port}/hook", secret, "", "bench")
        with store.db.write() as conn:
            for i in range(events):
                record_event(
                    conn, "version.created", project=None, subject={"kind": "model", "name": "m", "version": i}
                )
        dispatcher = Dispatcher(store.db, settings)
        start = time.perf_counter()
        fanned = dispatcher.fan_out()
        fan_s = time.perf_counter() - start
        done = dispatcher.drain()
        total = time.perf_counter() - start
        dispatcher.close()
        good, bad = (int(x) for x in httpx.get(f"http://127.0.0.1:{port}/").text.split())
        assert fanned[1] == events and done.delivered == events, (fanned, done)
        return fan_s, total, good, bad
    finally:
        receiver.kill()
        receiver.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--postgres", help="an empty PostgreSQL database URL (default: SQLite only)")
    args = parser.parse_args()
    os.environ.setdefault("KEEL_USER", "bench")
    from keel.services.workspace import open_store

    with tempfile.TemporaryDirectory() as tmp:
        urls = [("SQLite", f"sqlite:///{Path(tmp) / 'keel.db'}")]
        if args.postgres:
            urls.append(("PostgreSQL", args.postgres))
        for label, url in urls:
            store = open_store(url, str(Path(tmp) / "objects"), cached=False)
            try:
                print(f"== {label}")
                for what, ms in fan_out_cost(store, args.rounds).items():
                    print(f"  {what:48s} {ms:8.3f} ms")
                for concurrency in (1, 16):
                    fan_s, total, good, bad = throughput(store, args.events, concurrency)
                    print(
                        f"  {args.events} deliveries, concurrency {concurrency:2d}: {args.events / total:7.0f}/s "
                        f"(fan-out {fan_s * 1000:.0f} ms; signatures verified {good}, bad {bad})"
                    )
            finally:
                store.close()


if __name__ == "__main__":
    main()
