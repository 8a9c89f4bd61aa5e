"""Loading configuration: keel.config.load of the seed's production.yaml, with interpolation.

    .venv/bin/python bench/config.py [--quick] [--loads N]

Figures (same machine, same files, in this process):

- ``load``: ``keel.config.load(env="production")`` of the seed's
  ``config/production.yaml`` with two ``${VAR:-default}`` interpolations and a
  ``KEEL_CONFIG__`` override, no run active (the file read, YAML parse with line
  numbers, merge, interpolation and override). Target < 5 ms.
- ``load + base``: the same with a ``config/base.yaml`` underneath (two files).
- ``snapshot hash``: redacting and hashing the resolved config (canonical JSON,
  BLAKE3), computed on first use of ``cfg.snapshot_hash``.
- ``yaml.safe_load``: the bare parse of the same text, for scale.
- ``load in a run``: ``load`` inside ``keel.start_run`` when the snapshot is already
  recorded (the common case: one snapshot per process, many loads).

Benchmarks assert nothing; they print.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

SEED = Path(__file__).parents[1] / "tests" / "fixtures" / "config" / "production.yaml"


def _time(fn, n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Median and p95 seconds per call over ``n`` calls (after 20 warm-up calls)."""
    for _ in range(20):
        fn()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer loads")
    parser.add_argument("--loads", type=int, default=2000)
    args = parser.parse_args()
    n = 200 if args.quick else args.loads

    import yaml

    from keel.sdk import config

    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        folder = Path(tmp) / "config"
        folder.mkdir()
        text = SEED.read_text().replace("model: gpt-4", "model: ${LLM_MODEL:-gpt-4}")
        text = text.replace("timeout: 30", "timeout: ${LLM_TIMEOUT:-30}")
        (folder / "production.yaml").write_text(text)
        os.environ["KEEL_CONFIG__monitoring__log_level"] = "DEBUG"
        cfg = config.load(env="production")
        assert cfg.llm.model == "gpt-4" and cfg.llm.timeout == 30 and cfg.monitoring.log_level == "DEBUG"
        db_loaded = "sqlalchemy" in sys.modules

        rows = []
        med, p95 = _time(lambda: config.load(env="production"), n)
        rows.append(("load (production.yaml, interpolation)", med, p95, "target < 5 ms"))
        med, p95 = _time(lambda: config.load(env="production").snapshot_hash, n)
        rows.append(("load + snapshot hash", med, p95, ""))
        med, p95 = _time(lambda: yaml.safe_load(text), n)
        rows.append(("yaml.safe_load (pure-Python parser), same text", med, p95, "for scale"))
        (folder / "base.yaml").write_text(
            "llm:\n  provider: openai\n  api_key: ${OPENAI_API_KEY:-sk-dev}\n  retries: 3\nrag:\n  top_k: 3\n"
        )
        med, p95 = _time(lambda: config.load(env="production"), n)
        rows.append(("load (base.yaml + production.yaml)", med, p95, ""))

        import keel

        keel.init()
        with keel.start_run(project="bench-config"):
            config.load(env="production")
            med, p95 = _time(lambda: config.load(env="production"), n)
        rows.append(("load in a run (snapshot recorded)", med, p95, ""))
        os.chdir("/")

    print(f"keel.config.load, {n} loads each; SQLAlchemy imported by a load without a run: {db_loaded}")
    print(f"{'':48} {'median':>10} {'p95':>10}")
    for name, med, p95, note in rows:
        print(f"{name:48} {med * 1000:8.3f} ms {p95 * 1000:8.3f} ms  {note}")


if __name__ == "__main__":
    main()
