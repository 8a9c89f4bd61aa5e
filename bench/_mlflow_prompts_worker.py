"""One MLflow prompt-registry workload in a fresh process (run by bench/prompts.py with MLflow's venv).

SQLite tracking (and so registry) store in ``--dir``, created beforehand by
another process (``init``). Prints one ``@@RESULT {json}`` line.

Workloads:

- ``register``: ``--n`` versions of one prompt through
  ``mlflow.genai.register_prompt(name, template, commit_message=...)``
  (synchronous: each call returns once committed).
- ``load_uncached``: ``mlflow.genai.load_prompt("prompts:/NAME/4", cache_ttl_seconds=0)``
  and ``load_prompt("prompts:/NAME@production", cache_ttl_seconds=0)``. In
  MLflow 3.17 ``MlflowClient.load_prompt`` only consults its ``PromptCache``
  when ``cache_ttl_seconds > 0``; 0 fetches from the store every time. (The env
  vars ``MLFLOW_VERSION_PROMPT_CACHE_TTL_SECONDS`` / ``MLFLOW_ALIAS_PROMPT_CACHE_TTL_SECONDS``
  only supply the default when the argument is None.)
- ``load_cached``: ``mlflow.genai.load_prompt("prompts:/NAME/4")`` with the
  default cache (a version's TTL defaults to infinity).

Every store fetch in ``load_prompt`` also starts a background thread that tags
the prompt with the current experiment id (``_link_prompt_to_experiment``);
that is MLflow's default behaviour and runs during the timing. The timing
ends when the calls return; the threads still running are then joined
(untimed) and how long that took is reported (``drain_seconds``).
"""

from __future__ import annotations

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    MLFLOW_PINNED,
    PINNED_INDEX,
    PROMPT_ALIAS,
    PROMPT_NAME,
    Profiler,
    base_info,
    emit,
    parse_args,
    peak_rss_mb,
    prompt_template,
    prompt_templates,
    rate_reps,
    sqlite_scalar,
)
from _mlflow_worker import open_store  # noqa: E402  (also sets MLflow's no-telemetry env vars)

# The script's folder is already sys.path[0]; drop the duplicates the imports above added
# (MLflow looks for pyspark on every registry call: each extra path entry costs it time).
sys.path[:] = list(dict.fromkeys(sys.path))

WORKLOADS = ["info", "init", "register", "load_uncached", "load_cached"]


def init(args, db: str) -> dict:
    """Create the store (schema migration) in its own process, before the measured one."""
    return {"peak_rss_mb": peak_rss_mb()}


def drain_threads() -> tuple[int, float]:
    """Join MLflow's background link threads (untimed): (how many, seconds)."""
    t0 = time.perf_counter()
    others = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    for t in others:
        t.join()
    return len(others), time.perf_counter() - t0


def stored_versions(db: str) -> int | None:
    try:
        return sqlite_scalar(db, "SELECT COUNT(*) FROM model_versions WHERE name = ?", (PROMPT_NAME,))
    except Exception:  # noqa: BLE001 - a figure for the report only
        return None


def register(args, db: str) -> dict:
    import mlflow

    templates = prompt_templates(args.n)
    versions = []
    with Profiler(args.profile):
        t0 = time.perf_counter()
        for i, text in enumerate(templates):
            versions.append(mlflow.genai.register_prompt(PROMPT_NAME, text, commit_message=f"Wording pass {i}").version)
        elapsed = time.perf_counter() - t0
    threads, drain = drain_threads()
    rss = peak_rss_mb()
    return {
        "seconds": elapsed,
        "rate": args.n / elapsed,
        "peak_rss_mb": rss,
        "stored": stored_versions(db),
        "first_version": versions[0] if versions else None,
        "last_version": versions[-1] if versions else None,
        "pinned_version": versions[PINNED_INDEX] if len(versions) > PINNED_INDEX else None,
        "threads": threads,
        "drain_seconds": drain,
    }


def load_uncached(args, db: str) -> dict:
    import mlflow

    uri = f"prompts:/{PROMPT_NAME}/{MLFLOW_PINNED}"
    alias_uri = f"prompts:/{PROMPT_NAME}@{PROMPT_ALIAS}"
    mlflow.genai.set_prompt_alias(PROMPT_NAME, alias=PROMPT_ALIAS, version=MLFLOW_PINNED)
    load = mlflow.genai.load_prompt
    with Profiler(args.profile):
        pinned = rate_reps(lambda: load(uri, cache_ttl_seconds=0), args.n, args.reps)
        threads, drain = drain_threads()
        alias = rate_reps(lambda: load(alias_uri, cache_ttl_seconds=0), args.n, args.reps)
        alias_threads, alias_drain = drain_threads()
    expected = prompt_template(PINNED_INDEX)
    return {
        "rate": pinned["rate"],
        "times": pinned["times"],
        "calls": args.n,
        "alias_rate": alias["rate"],
        "alias_times": alias["times"],
        "served": f"{pinned['result'].name}/{pinned['result'].version}",
        "alias_served": f"{alias['result'].name}/{alias['result'].version}",
        "template_ok": pinned["result"].template == expected and alias["result"].template == expected,
        "method": f'mlflow.genai.load_prompt("{uri}", cache_ttl_seconds=0); alias: "{alias_uri}"',
        "threads": threads + alias_threads,
        "drain_seconds": drain + alias_drain,
        "peak_rss_mb": peak_rss_mb(),
    }


def load_cached(args, db: str) -> dict:
    import mlflow

    uri = f"prompts:/{PROMPT_NAME}/{MLFLOW_PINNED}"
    load = mlflow.genai.load_prompt
    with Profiler(args.profile):
        result = rate_reps(lambda: load(uri), args.n, args.reps)
    threads, drain = drain_threads()
    return {
        "rate": result["rate"],
        "times": result["times"],
        "calls": args.n,
        "served": f"{result['result'].name}/{result['result'].version}",
        "template_ok": result["result"].template == prompt_template(PINNED_INDEX),
        "method": f'mlflow.genai.load_prompt("{uri}") (default cache)',
        "threads": threads,
        "drain_seconds": drain,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    args = parse_args(WORKLOADS)
    info = base_info()
    if args.workload == "info":
        t0 = time.perf_counter()
        import mlflow

        emit({**info, "version": mlflow.__version__, "import_seconds": time.perf_counter() - t0})
        return
    db = open_store(args.dir)
    result = globals()[args.workload](args, db)
    emit({**info, **result})


if __name__ == "__main__":
    main()
