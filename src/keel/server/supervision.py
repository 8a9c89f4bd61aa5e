"""The server's processes: workers that die with their main process, and metrics across them.

``python -m keel.server --workers N`` (N > 1) runs uvicorn's supervisor in the main
process and N worker processes. Here:

- :func:`worker_app` is the app factory uvicorn calls in each worker. When the
  launcher named itself in ``KEEL_SERVER_SUPERVISOR_PID``, the worker watches it
  (:func:`watch_parent`): once its parent is gone (``kill -9`` of the main process:
  nothing would stop or restart the workers, and they would keep the port), the
  worker stops itself as SIGTERM would (in-flight requests may finish) and exits at
  the latest :data:`ORPHAN_GRACE_SECONDS` later.
- :func:`multiprocess_metrics` gives the workers one fresh directory for
  ``prometheus-client``'s multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), removed
  when the server stops; directories left by a main process that was killed are
  removed at the next start.
- :func:`serve_metrics` serves the metrics of every worker on 127.0.0.1:PORT
  without a token (``--metrics-port``), from the main process.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from keel.fileio import pid_alive

__all__ = [
    "ENV_SUPERVISOR",
    "ORPHAN_GRACE_SECONDS",
    "multiprocess_metrics",
    "serve_metrics",
    "watch_parent",
    "worker_app",
]

ENV_SUPERVISOR = "KEEL_SERVER_SUPERVISOR_PID"
ORPHAN_GRACE_SECONDS = 10.0  # an orphaned worker's in-flight requests get this long to finish
WATCH_INTERVAL_SECONDS = 0.5
_METRICS_DIR_PREFIX = "keel-metrics-"

log = logging.getLogger("keel.server")
_watching = threading.Event()


def worker_app() -> Any:
    """The app factory of every uvicorn worker: :func:`keel.server.app.app_from_env`, plus
    :func:`watch_parent` when the launcher runs several workers."""
    from keel.server.app import app_from_env

    watch_parent()
    app = app_from_env()
    # What importing and building the app made lives as long as the worker: the garbage
    # collector need not scan it in every full collection (~10% of an OTLP request's CPU).
    gc.freeze()
    return app


def watch_parent(interval: float = WATCH_INTERVAL_SECONDS, grace: float = ORPHAN_GRACE_SECONDS) -> bool:
    """In a worker of a launcher named in ``KEEL_SERVER_SUPERVISOR_PID``: stop this process when
    that launcher dies (a background thread checks ``os.getppid()``). Returns whether it watches."""
    supervisor = os.environ.get(ENV_SUPERVISOR, "")
    if not supervisor.isdigit() or int(supervisor) == os.getpid() or _watching.is_set():
        return False
    _watching.set()
    threading.Thread(
        target=_watch, args=(int(supervisor), interval, grace), name="keel-parent-watch", daemon=True
    ).start()
    return True


def _watch(parent: int, interval: float, grace: float) -> None:
    while os.getppid() == parent:
        time.sleep(interval)
    log.warning("the main server process %d is gone: this worker (pid %d) stops", parent, os.getpid())
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful stop: no new connections, in-flight ones finish
    time.sleep(grace)
    log.error("this orphaned worker (pid %d) did not stop within %.0f s: exiting", os.getpid(), grace)
    logging.shutdown()
    os._exit(1)


@contextlib.contextmanager
def multiprocess_metrics(workers: int) -> Iterator[str | None]:
    """With several workers, a fresh ``PROMETHEUS_MULTIPROC_DIR`` for them (set in the
    environment they inherit, removed on exit); yields the directory, or None with one
    worker (its metrics live in its memory). An operator's own ``PROMETHEUS_MULTIPROC_DIR``
    is used as it is and left in place."""
    from keel.server.metrics import ENV_MULTIPROC_DIR

    given = os.environ.get(ENV_MULTIPROC_DIR)
    if given or workers <= 1:
        yield given or None
        return
    _remove_orphaned_dirs()
    directory = tempfile.mkdtemp(prefix=f"{_METRICS_DIR_PREFIX}{os.getpid()}-")
    os.environ[ENV_MULTIPROC_DIR] = directory
    try:
        yield directory
    finally:
        os.environ.pop(ENV_MULTIPROC_DIR, None)
        shutil.rmtree(directory, ignore_errors=True)


def _remove_orphaned_dirs() -> None:
    """Remove the metrics directories of main processes that no longer run."""
    root = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for path in root.glob(f"{_METRICS_DIR_PREFIX}*"):
            pid = path.name[len(_METRICS_DIR_PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)) and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)


def serve_metrics(port: int) -> Any:
    """Serve the metrics on ``127.0.0.1:port`` (no token) from a background thread; returns
    the HTTP server (``shutdown()`` stops it). In multiprocess mode: every worker's metrics."""
    from prometheus_client import start_http_server

    from keel.server.metrics import registry

    server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry())
    return server
