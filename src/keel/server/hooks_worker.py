"""The webhook worker of a server process: a background thread that works the delivery queue.

Started with the app (:func:`keel.server.app.create_app`'s lifespan) in every server
process, and in ``keel ui``: no second service to run. Each thread fans out recorded events
and sends due deliveries (:class:`keel.services.hooks_delivery.Dispatcher`); several
processes on one database share the work through leases (:mod:`keel.meta.hooks`), so each
delivery is sent by one of them. When idle it polls with one cheap read every
``KEEL_HOOKS_POLL`` seconds (1), and sleeps no longer than until the next retry is due.
``KEEL_HOOKS_WORKER=0`` leaves the worker out of a process (another process must work the
queue then: ``keel hooks deliver`` or a server).
"""

from __future__ import annotations

import logging
import os
import threading

from keel.meta.engine import Database
from keel.services.hooks_delivery import Dispatcher, HookSettings, wait_seconds

__all__ = ["ENV_WORKER", "HooksWorker", "start_worker"]

ENV_WORKER = "KEEL_HOOKS_WORKER"
log = logging.getLogger("keel.server.hooks")


class HooksWorker:
    """One thread working the queue of ``db`` until :meth:`stop`."""

    def __init__(self, db: Database, settings: HookSettings | None = None) -> None:
        self.settings = settings or HookSettings.from_env()
        self.dispatcher = Dispatcher(db, self.settings)
        self.db = db
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keel-hooks-worker", daemon=True)

    def start(self) -> HooksWorker:
        """Start the thread."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to end after its current round, and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.dispatcher.close()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if self.dispatcher.has_work():
                    done = self.dispatcher.work()
                    failures = 0
                    if done.attempts or done.events:
                        continue  # more may be waiting: go on at once
                wait = wait_seconds(self.db, self.settings)
                failures = 0
            except Exception as exc:  # the database away, a bug: log, back off, go on
                failures += 1
                wait = min(30.0, self.settings.poll * (2 ** min(failures, 5)))
                log.warning("webhook worker: %s (retrying in %.0f s)", exc, wait)
            self._stop.wait(max(wait, 0.01))


def start_worker(db: Database) -> HooksWorker | None:
    """A started worker for ``db``, or None when ``KEEL_HOOKS_WORKER=0``."""
    if os.environ.get(ENV_WORKER, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    return HooksWorker(db).start()
