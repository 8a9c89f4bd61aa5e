"""Secret redaction on the logging paths: what it costs per call.

    .venv/bin/python bench/redaction.py [--quick] [--calls N]

Figures (same machine, in this process; one run in a fresh workspace):

- ``log_param``: ``run.log_param(key, value)`` with typical values (a model name,
  a float, a short prompt name, a 200-character prompt text, a URL without
  credentials) over 1,000 keys, until queued (the caller's cost).
- ``set_tag``: ``run.set_tag(key, value)`` with the same kinds of values.
- ``redact_value``: the bare scan of those strings (clean, so nothing changes),
  and of a string holding a secret (the replacement path).
- ``redact_mapping``: a 40-leaf config-like mapping.

Each figure is the best of 7 rounds, as wall-clock time and as CPU time of the
calling thread (steady on a loaded machine). Run it before and after a change to
the redaction rules: the logging figures must not move by more than the noise.
Benchmarks assert nothing; they print.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

VALUES: list[Any] = [
    "gpt-4o-mini",
    0.2,
    "chat-v2",
    "You are a helpful assistant. Answer the question using only the context below; "
    "if the answer is not in the context, say you do not know. Cite the document ids you used, "
    "in brackets, after each sentence.",
    "https://api.example.com/v1/chat/completions",
]


def _per_call(fn: Callable[[int], None], n: int, rounds: int = 7) -> tuple[float, float]:
    """The best over ``rounds`` of the mean seconds per call of ``fn(i)``: wall-clock, and CPU
    time of this thread (what the caller pays, whatever else the machine and the background
    writer do; the machine's noise only ever adds time, so the minimum is the steadiest figure)."""
    walls, cpus = [], []
    for r in range(rounds):
        start, cpu = time.perf_counter(), time.thread_time()
        for i in range(r * n, (r + 1) * n):
            fn(i)
        cpus.append((time.thread_time() - cpu) / n)
        walls.append((time.perf_counter() - start) / n)
    return min(walls), min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls")
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    n = 2_000 if args.quick else args.calls

    import keel

    rows: list[tuple[str, tuple[float, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        from keel.services.workspace import init_workspace

        for name in ("KEEL_URI", "KEEL_OBJECTS", "KEEL_PROJECT"):
            os.environ.pop(name, None)
        os.chdir(tmp)
        init_workspace(tmp)
        with keel.start_run(project="bench") as run:
            values = VALUES
            rows.append(
                (
                    "log_param (5 kinds of value)",
                    _per_call(lambda i: run.log_param(f"p{i % 1000}", values[i % 1000 % 5]), n),
                )
            )
            rows.append(
                ("set_tag (5 kinds of value)", _per_call(lambda i: run.set_tag(f"t{i % 50}", values[i % 5]), n))
            )
    try:
        from keel.core.redaction import redact_mapping, redact_value
    except ImportError:
        redact_value = redact_mapping = None  # type: ignore[assignment]
    if redact_value is not None:
        texts = [v for v in VALUES if isinstance(v, str)]
        rows.append(("redact_value, clean strings", _per_call(lambda i: redact_value(texts[i % 4]), n)))
        secret = "postgresql://app:s3cr3t-Passw0rd@db.internal:5432/prod"
        rows.append(("redact_value, a URL with a password", _per_call(lambda i: redact_value(secret), n)))
        config = {f"section{s}": {f"key{k}": (VALUES[k % 5] if k % 5 != 1 else k) for k in range(8)} for s in range(5)}
        rows.append(("redact_mapping, 40 leaves", _per_call(lambda i: redact_mapping(config), max(n // 10, 100))))
    width = max(len(name) for name, _ in rows)
    print(f"{'':<{width}}  {'wall us/call':>12}  {'cpu us/call':>12}")
    for name, (wall, cpu) in rows:
        print(f"{name:<{width}}  {wall * 1e6:12.2f}  {cpu * 1e6:12.2f}")


if __name__ == "__main__":
    main()
