"""The tracking domain's value objects (plain, immutable dataclasses).

These are what every layer passes around and what the SDK returns: the
services build them from database rows; the CLI and server render them.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from keel.errors import InvalidInput, NotFound

__all__ = [
    "RUN_ID_LENGTH",
    "RUN_STATUSES",
    "Artifact",
    "EntityRef",
    "LineageEdge",
    "Metric",
    "MetricSummary",
    "Project",
    "RunRecord",
    "format_time",
    "new_run_id",
    "now_ms",
    "project_not_found",
    "run_not_found",
]

RUN_STATUSES = ("running", "finished", "failed", "killed")


def now_ms() -> int:
    """Milliseconds since the epoch (the unit of every stored timestamp)."""
    return time.time_ns() // 1_000_000


def new_run_id() -> str:
    """A new run id: 32 lowercase hex digits (random, so ids never collide)."""
    return uuid.uuid4().hex


RUN_ID_LENGTH = 32


def run_not_found(run_id: object) -> NotFound:
    """The one answer for a run id that is unknown *or* in a project the caller may not read."""
    return NotFound(f"no run with id {str(run_id)[:80]!r}", "list runs with 'keel runs list'")


def project_not_found(project: object) -> NotFound:
    """The one answer for a project that does not exist *or* that the caller may not read."""
    return NotFound(f"no project {str(project)[:80]!r}", "list the projects you can see: keel projects list")


def format_time(ms: int | None) -> str:
    """A millisecond timestamp to the minute, in UTC and saying so (``2026-12-07 10:00Z``), for
    tables; '' for None. Exact times (history, ``--at``) use :func:`keel.core.times.format_at`."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%d %H:%MZ")


@dataclass(frozen=True)
class Project:
    """A named group of runs (MLflow: experiment; W&B: project)."""

    name: str
    id: int
    created_at: int
    description: str = ""


@dataclass(frozen=True)
class Metric:
    """One logged value of a metric."""

    key: str
    value: float
    step: int
    timestamp: int


@dataclass(frozen=True)
class MetricSummary:
    """Latest, min and max of a metric in one run (latest = highest step, then time)."""

    key: str
    latest: float
    step: int
    timestamp: int
    min: float
    max: float
    count: int


@dataclass(frozen=True)
class Artifact:
    """A stored file of a run: its path in the run, content id and size."""

    path: str
    oid: str
    size: int
    kind: str = "file"  # file | table | text | html


@dataclass(frozen=True)
class EntityRef:
    """A versioned thing a run used or produced.

    ``kind`` names the registry (``run``, ``artifact``, later ``prompt``,
    ``model``, ``dataset``, ``kb``, ``config``, ``recording``); ``id`` is its
    identity there (a run id, an object id, a prompt name); ``version`` pins a
    version where the kind has them. Text form: ``kind:id[@version]``.
    """

    kind: str
    id: str
    version: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}@{self.version}" if self.version else f"{self.kind}:{self.id}"

    @classmethod
    def parse(cls, text: str | EntityRef) -> EntityRef:
        """Parse ``kind:id[@version]``; raise InvalidInput otherwise."""
        if isinstance(text, EntityRef):
            return text
        kind, sep, rest = str(text).partition(":")
        if not sep or not kind or not rest:
            raise InvalidInput(
                f"invalid entity reference {text!r}",
                "write kind:id[@version], e.g. run:3f2a..., artifact:<oid>, prompt:chat@1.3.0",
            )
        ident, _, version = rest.partition("@")
        return cls(kind, ident, version)


@dataclass(frozen=True)
class LineageEdge:
    """``run`` used (direction ``input``) or produced (``output``) ``entity``; ``ref`` is the
    alias the run resolved to reach that version (``production`` for ``prompt:chat@production``
    -> 1.3.0), '' when it named the version."""

    run_id: str
    direction: str  # input | output
    entity: EntityRef
    role: str = ""
    created_at: int = 0
    ref: str = ""


@dataclass  # not frozen: a frozen __init__ costs 3x, and search builds thousands
class RunRecord:
    """A run as stored: identity, status, times, context, params, metrics, tags.

    A snapshot: changing it changes nothing in the store.
    """

    run_id: str
    project: str
    name: str
    status: str
    start_time: int
    end_time: int | None = None
    parent_id: str | None = None
    deleted: bool = False
    error: str | None = None
    context_json: str = "{}"
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @functools.cached_property
    def context(self) -> dict[str, Any]:
        """Where the run ran: git, host, versions (parsed on first access)."""
        return dict(json.loads(self.context_json))

    @property
    def duration_s(self) -> float | None:
        """Run time in seconds, or None while running."""
        return None if self.end_time is None else (self.end_time - self.start_time) / 1000

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (used by ``--json`` and the server)."""
        return {
            "run_id": self.run_id,
            "project": self.project,
            "name": self.name,
            "status": self.status,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "parent_id": self.parent_id,
            "deleted": self.deleted,
            "error": self.error,
            "context": self.context,
            "params": self.params,
            "metrics": self.metrics,
            "tags": self.tags,
        }
