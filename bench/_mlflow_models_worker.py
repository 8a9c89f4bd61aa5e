"""One MLflow model-registry workload in a fresh process (run by bench/models.py with MLflow's venv).

SQLite tracking (and so registry) store in ``--dir``, created beforehand by
another process (``init``); ``setup`` (also its own process) logs the run
every version is registered from. Prints one ``@@RESULT {json}`` line.
MLflow's registry calls are synchronous: each returns once committed.

Workloads:

- ``setup``: one finished run with the artifact folder ``model/``
  (``config.yaml`` and ``MLmodel``, through ``mlflow.log_artifact(path,
  artifact_path="model")``); its id is left in the store folder. MLflow 3's
  ``register_model`` accepts a ``runs:/`` folder only if it holds an
  ``MLmodel`` file (otherwise it looks for a logged model of that name and
  fails: "Unable to find a logged_model with artifact_path model").
- ``register``: ``--n`` calls of ``mlflow.register_model("runs:/<run>/model",
  "chat-assistant")``. Each call first tries ``create_registered_model`` (an
  AlreadyExists error after the first), lists the run's artifacts to find
  ``MLmodel``, then creates the version.
- ``create_version``: ``--n`` calls of ``MlflowClient().create_model_version(name,
  source="runs:/<run>/model", run_id=run_id)`` (the registry call alone; the model
  is created untimed first). Run on its own fresh store.
- ``alias``: ``MlflowClient().set_registered_model_alias(name, "champion", v)``,
  ``v`` cycling through versions 1..5 -- ``--n`` calls per loop, median of ``--reps``.
- ``stage``: ``client.transition_model_version_stage(name, v, stage,
  archive_existing_versions=True)`` with ``(v, stage)`` cycling so that every call
  archives one other version. Deprecated since MLflow 2.9 (a FutureWarning per
  call, silenced here) but still working in 3.17.
- ``get``: ``client.get_model_version_by_alias(name, "champion")`` (the alias set
  to version 2 first, untimed).
"""

from __future__ import annotations

import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    CYCLE_VERSIONS,
    GET_ALIAS_VERSION,
    MODEL_ALIAS,
    MODEL_ARTIFACT_PATH,
    MODEL_NAME,
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
    sqlite_scalar,
    write_model_files,
)
from _mlflow_worker import open_store  # noqa: E402  (also sets MLflow's no-telemetry env vars)

# The script's folder is already sys.path[0]; drop the duplicates the imports above added
# (MLflow looks for pyspark on every registry call: each extra path entry costs it time).
sys.path[:] = list(dict.fromkeys(sys.path))

WORKLOADS = ["info", "init", "setup", "register", "create_version", "alias", "stage", "get"]


def init(args, db: str) -> dict:
    """Create the store (schema migration) in its own process, before the measured one."""
    return {"peak_rss_mb": peak_rss_mb()}


def setup(args, db: str) -> dict:
    """The run that every version comes from (untimed)."""
    import mlflow

    paths = write_model_files(os.path.join(args.dir, "model-files"))
    with mlflow.start_run(run_name="train") as run:
        for path in paths:
            mlflow.log_artifact(path, artifact_path=MODEL_ARTIFACT_PATH)
    run_id = run.info.run_id
    save_run_id(args.dir, run_id)
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run_id, MODEL_ARTIFACT_PATH)]
    return {"run_id": run_id, "artifacts": artifacts, "peak_rss_mb": peak_rss_mb()}


def stored_versions(db: str) -> int | None:
    try:
        return sqlite_scalar(db, "SELECT COUNT(*) FROM model_versions WHERE name = ?", (MODEL_NAME,))
    except Exception:  # noqa: BLE001 - a figure for the report only
        return None


def register(args, db: str) -> dict:
    import mlflow

    source = f"runs:/{load_run_id(args.dir)}/{MODEL_ARTIFACT_PATH}"
    register_model = mlflow.register_model
    mlflow.MlflowClient().search_registered_models(max_results=1)  # open the registry store outside the timing
    versions = []
    with Profiler(args.profile):
        t0 = time.perf_counter()
        for _ in range(args.n):
            versions.append(int(register_model(source, MODEL_NAME).version))
        elapsed = time.perf_counter() - t0
    rss = peak_rss_mb()
    latest = mlflow.MlflowClient().get_model_version(MODEL_NAME, str(versions[-1])) if versions else None
    return {
        "seconds": elapsed,
        "rate": args.n / elapsed,
        "peak_rss_mb": rss,
        "stored": stored_versions(db),
        "first_version": versions[0] if versions else None,
        "last_version": versions[-1] if versions else None,
        "source": latest.source if latest else None,
        "method": f'mlflow.register_model("{source}", "{MODEL_NAME}")',
    }


def create_version(args, db: str) -> dict:
    import mlflow

    run_id = load_run_id(args.dir)
    source = f"runs:/{run_id}/{MODEL_ARTIFACT_PATH}"
    client = mlflow.MlflowClient()
    client.create_registered_model(MODEL_NAME)  # untimed: this workload times the version calls alone
    create = client.create_model_version
    versions = []
    with Profiler(args.profile):
        t0 = time.perf_counter()
        for _ in range(args.n):
            versions.append(int(create(MODEL_NAME, source=source, run_id=run_id).version))
        elapsed = time.perf_counter() - t0
    rss = peak_rss_mb()
    latest = client.get_model_version(MODEL_NAME, str(versions[-1])) if versions else None
    return {
        "seconds": elapsed,
        "rate": args.n / elapsed,
        "peak_rss_mb": rss,
        "stored": stored_versions(db),
        "first_version": versions[0] if versions else None,
        "last_version": versions[-1] if versions else None,
        "source": latest.source if latest else None,
        "method": f'MlflowClient().create_model_version("{MODEL_NAME}", source="{source}", run_id=...)',
    }


def alias(args, db: str) -> dict:
    import mlflow

    client = mlflow.MlflowClient()
    set_alias = client.set_registered_model_alias
    targets = list(range(1, CYCLE_VERSIONS + 1))
    call = cycle_calls(lambda v: set_alias(MODEL_NAME, MODEL_ALIAS, v), targets)
    with Profiler(args.profile):
        result = rate_reps(call, args.n, args.reps)
    calls = 1 + args.n * max(1, args.reps)
    return {
        "rate": result["rate"],
        "times": result["times"],
        "calls": args.n,
        "now": int(client.get_model_version_by_alias(MODEL_NAME, MODEL_ALIAS).version),
        "expected": targets[(calls - 1) % len(targets)],
        "logged": None,  # MLflow keeps no history of alias moves
        "method": f'MlflowClient().set_registered_model_alias("{MODEL_NAME}", "{MODEL_ALIAS}", v),'
        f" v = 1..{CYCLE_VERSIONS} in turn",
        "peak_rss_mb": peak_rss_mb(),
    }


def stage(args, db: str) -> dict:
    import mlflow

    warnings.filterwarnings("ignore", category=FutureWarning)  # the stage API's deprecation warning
    client = mlflow.MlflowClient()
    transition = client.transition_model_version_stage
    call = cycle_calls(lambda vs: transition(MODEL_NAME, vs[0], vs[1], archive_existing_versions=True), STAGE_CYCLE)
    with Profiler(args.profile):
        result = rate_reps(call, args.n, args.reps)
    stages = {}
    for mv in client.search_model_versions(f"name = '{MODEL_NAME}'", max_results=10_000):
        if mv.current_stage != "None":
            stages[str(mv.version)] = mv.current_stage
    return {
        "rate": result["rate"],
        "times": result["times"],
        "calls": args.n,
        "stages": dict(sorted(stages.items(), key=lambda kv: -int(kv[0]))),
        "method": f'MlflowClient().transition_model_version_stage("{MODEL_NAME}", v, "Staging"|"Production",'
        " archive_existing_versions=True)",
        "peak_rss_mb": peak_rss_mb(),
    }


def get(args, db: str) -> dict:
    import mlflow

    client = mlflow.MlflowClient()
    client.set_registered_model_alias(MODEL_NAME, MODEL_ALIAS, GET_ALIAS_VERSION)
    fetch = client.get_model_version_by_alias
    with Profiler(args.profile):
        result = rate_reps(lambda: fetch(MODEL_NAME, MODEL_ALIAS), args.n, args.reps)
    return {
        "rate": result["rate"],
        "times": result["times"],
        "calls": args.n,
        "served": int(result["result"].version),
        "expected": GET_ALIAS_VERSION,
        "method": f'MlflowClient().get_model_version_by_alias("{MODEL_NAME}", "{MODEL_ALIAS}")',
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
