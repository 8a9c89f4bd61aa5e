"""One keel model-registry workload in a fresh process (run by bench/models.py with keel's venv).

Prints one ``@@RESULT {json}`` line. The store is a keel workspace in
``--dir``, created beforehand by another process (``init``); ``setup`` (also
its own process) logs the run every version is registered from.

Workloads:

- ``setup``: one finished run with the artifact folder ``model/``
  (``config.yaml`` and ``MLmodel``, through ``keel.log_artifact(path,
  artifact_path="model")``); its id is left in the store folder.
- ``register``: ``--n`` calls of ``keel.register_model("runs:/<run>/model",
  "chat-assistant")`` (the artifact is checked to exist each time; synchronous,
  so the timing ends with the last version committed).
- ``alias``: ``keel.models.set_alias(name, "champion", v)``, ``v`` cycling
  through versions 1..5 -- ``--n`` calls per loop, median of ``--reps``.
- ``stage``: ``keel.models.transition_stage(name, v, stage, archive_existing=True)``
  with ``(v, stage)`` cycling so that every call archives one other version.
- ``get``: ``keel.models.get(name, alias="champion")`` (the alias set to
  version 2 first, untimed).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    CYCLE_VERSIONS,
    GET_ALIAS_VERSION,
    MODEL_ALIAS,
    MODEL_ARTIFACT_PATH,
    MODEL_NAME,
    PROJECT,
    STAGE_CYCLE,
    Profiler,
    base_info,
    cycle_calls,
    emit,
    load_run_id,
    parse_args,
    peak_rss_mb,
    rate_reps,
    save_run_id,
    write_model_files,
)
from _keel_worker import open_workspace  # noqa: E402

# The script's folder is already sys.path[0]; drop the duplicates the imports above added
# (as in the MLflow worker, so both tools run with a plain script's sys.path).
sys.path[:] = list(dict.fromkeys(sys.path))

WORKLOADS = ["info", "init", "setup", "register", "alias", "stage", "get"]


def init(args, db: str) -> dict:
    """Create the store (schema migration) in its own process, before the measured one."""
    return {"peak_rss_mb": peak_rss_mb()}


def setup(args, db: str) -> dict:
    """The run that every version comes from (untimed)."""
    import keel

    paths = write_model_files(os.path.join(args.dir, "model-files"))
    with keel.start_run(project=PROJECT, name="train") as run:
        for path in paths:
            keel.log_artifact(path, artifact_path=MODEL_ARTIFACT_PATH)
    save_run_id(args.dir, run.id)
    artifacts = [a.path for a in keel.Client().list_artifacts(run.id)]
    return {"run_id": run.id, "artifacts": artifacts, "peak_rss_mb": peak_rss_mb()}


def register(args, db: str) -> dict:
    import keel

    source = f"runs:/{load_run_id(args.dir)}/{MODEL_ARTIFACT_PATH}"
    register_model = keel.register_model
    keel.models.list_models()  # open (and check) the store outside the timing
    versions = []
    with Profiler(args.profile):
        t0 = time.perf_counter()
        for _ in range(args.n):
            versions.append(register_model(source, MODEL_NAME).version)
        elapsed = time.perf_counter() - t0
    rss = peak_rss_mb()
    stored = keel.models.versions(MODEL_NAME)
    return {
        "seconds": elapsed,
        "rate": args.n / elapsed,
        "peak_rss_mb": rss,
        "stored": len(stored),
        "first_version": versions[0] if versions else None,
        "last_version": versions[-1] if versions else None,
        "source": stored[0].source if stored else None,
        "method": f'keel.register_model("{source}", "{MODEL_NAME}")',
    }


def alias(args, db: str) -> dict:
    import keel

    set_alias = keel.models.set_alias
    targets = list(range(1, CYCLE_VERSIONS + 1))
    call = cycle_calls(lambda v: set_alias(MODEL_NAME, MODEL_ALIAS, v), targets)
    with Profiler(args.profile):
        result = rate_reps(call, args.n, args.reps)
    calls = 1 + args.n * max(1, args.reps)
    return {
        "rate": result["rate"],
        "times": result["times"],
        "calls": args.n,
        "now": keel.models.get(MODEL_NAME, alias=MODEL_ALIAS).version,
        "expected": targets[(calls - 1) % len(targets)],
        "logged": sum(1 for move in keel.models.history(MODEL_NAME) if move.ref == MODEL_ALIAS),
        "method": f'keel.models.set_alias("{MODEL_NAME}", "{MODEL_ALIAS}", v), v = 1..{CYCLE_VERSIONS} in turn',
        "peak_rss_mb": peak_rss_mb(),
    }


def stage(args, db: str) -> dict:
    import keel

    transition = keel.models.transition_stage
    call = cycle_calls(lambda vs: transition(MODEL_NAME, vs[0], vs[1], archive_existing=True), STAGE_CYCLE)
    with Profiler(args.profile):
        result = rate_reps(call, args.n, args.reps)
    return {
        "rate": result["rate"],
        "times": result["times"],
        "calls": args.n,
        "stages": {str(mv.version): mv.stage for mv in keel.models.versions(MODEL_NAME) if mv.stage != "None"},
        "method": f'keel.models.transition_stage("{MODEL_NAME}", v, "Staging"|"Production", archive_existing=True)',
        "peak_rss_mb": peak_rss_mb(),
    }


def get(args, db: str) -> dict:
    import keel

    keel.models.set_alias(MODEL_NAME, MODEL_ALIAS, GET_ALIAS_VERSION)
    fetch = keel.models.get
    with Profiler(args.profile):
        result = rate_reps(lambda: fetch(MODEL_NAME, alias=MODEL_ALIAS), args.n, args.reps)
    return {
        "rate": result["rate"],
        "times": result["times"],
        "calls": args.n,
        "served": result["result"].version,
        "expected": GET_ALIAS_VERSION,
        "method": f'keel.models.get("{MODEL_NAME}", alias="{MODEL_ALIAS}")',
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    args = parse_args(WORKLOADS)
    info = base_info()
    if args.workload == "info":
        t0 = time.perf_counter()
        import keel

        seconds = time.perf_counter() - t0
        emit({**info, "version": keel.__version__, "module": os.path.dirname(keel.__file__), "import_seconds": seconds})
        return
    db = open_workspace(args.dir)
    result = globals()[args.workload](args, db)
    emit({**info, **result})


if __name__ == "__main__":
    main()
