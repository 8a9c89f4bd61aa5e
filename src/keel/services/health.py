"""Whether a store's dependencies answer now: the team server's health check.

:func:`check_health` pings the metadata database (a trivial query) and the object
store (a cheap call: a one-key listing on S3, the folder on disk) at the same
time, each bounded by ``timeout`` seconds, and names the ones that failed.

:func:`known_error` turns a database driver error that escaped a service into the
:class:`~keel.errors.KeelError` it stands for (an outage is ``Unavailable``, a
constraint race a ``Conflict``), so the server answers 503 or 409, not 500.
"""

from __future__ import annotations

import concurrent.futures
import logging
from dataclasses import dataclass, field
from typing import Any

from keel.core.urls import mask_urls_in
from keel.errors import KeelError, Unavailable
from keel.meta.engine import database_error, driver_errors

__all__ = ["DEPENDENCIES", "DRIVER_ERRORS", "Health", "check_health", "known_error"]

DEPENDENCIES = ("database", "objects")
# The exception types of the database layer that may escape a service (the drivers' own, a
# constraint violation, a pool timeout); known_error() says what each stands for.
DRIVER_ERRORS: tuple[type[Exception], ...] = driver_errors()
DEFAULT_TIMEOUT_S = 2.0

log = logging.getLogger("keel.server")

# A few threads shared by every check: a ping that hangs (a host dropping packets) holds
# one until its own timeout, and the checks after it still answer in time (as failing).
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="keel-health")


@dataclass
class Health:
    """The result of :func:`check_health`.

    Attributes:
        failing: the dependencies that did not answer (``"database"``, ``"objects"``), in that order.
        problems: dependency -> what went wrong (for the server log; never sent to clients,
            as it may name hosts).
        retry_after: seconds a client should wait before asking again (when something fails).
    """

    failing: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)
    retry_after: int = 0

    @property
    def ok(self) -> bool:
        """True when every dependency answered."""
        return not self.failing

    def checks(self) -> dict[str, str]:
        """``{"database": "ok" | "unavailable", "objects": ...}``."""
        return {name: "unavailable" if name in self.failing else "ok" for name in DEPENDENCIES}


def check_health(store: Any, timeout: float = DEFAULT_TIMEOUT_S) -> Health:
    """Ping ``store.db`` and ``store.objects`` concurrently; what failed, within about ``timeout`` s."""
    pings = {
        "database": _POOL.submit(store.db.ping, timeout),
        "objects": _POOL.submit(store.objects.ping, timeout),
    }
    health = Health()
    for name, future in pings.items():
        try:
            future.result(timeout=timeout + 0.5)
            continue
        except concurrent.futures.TimeoutError:
            problem, retry_after = f"no answer within {timeout:g} s", 5
        except Unavailable as exc:
            problem, retry_after = exc.message, exc.retry_after
        except Exception as exc:  # noqa: BLE001 - a health check reports, it does not raise
            problem, retry_after = f"{type(exc).__name__}: {exc}", 5
        health.failing.append(name)
        health.problems[name] = mask_urls_in(problem)
        health.retry_after = max(health.retry_after, int(retry_after) or 1)
    return health


def known_error(exc: BaseException) -> KeelError | None:
    """The KeelError a database driver error that escaped a service stands for: ``Unavailable``
    (an outage, or a serialization failure or deadlock) or ``Conflict`` (a constraint
    violation, e.g. two concurrent writes of one unique row); None for anything else."""
    return database_error(exc, other=False)
