"""``keel.lineage``: walk between runs and traces and the versions they used or made.

Entities are written ``kind:id[@version]``: ``run:<id>``, ``artifact:<oid>``,
``prompt:chat@1.3.0``, ``model:assistant@3``, ``kb:docs@v2``, ``config:production``,
``flag:new-ui@on``, ``experiment:prompt-v2@treatment``, ``dataset:<oid>``... A
version-less reference matches every version.

:func:`used_by` returns the ids of the runs that used a version, as a list (as it
always has), and also the traces whose spans used it, as ``.traces``::

    users = keel.lineage.used_by("prompt:chat@1.3.0")
    users                 # ['3f2a...', ...]: run ids
    users.traces          # [TraceUse(kind='trace', project='bot', trace_id='4bf9...', start_ns=...)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keel.core.entities import EntityRef, LineageEdge

__all__ = [
    "TRACE_KINDS",
    "EntityRef",
    "LineageEdge",
    "TraceUse",
    "UsedBy",
    "inputs",
    "of",
    "outputs",
    "produced_by",
    "used_by",
]

#: Entity kinds a trace's spans can use (see ``keel.core.traces.LINK_ATTRIBUTES``).
TRACE_KINDS = frozenset({"prompt", "model", "kb", "config", "flag", "experiment"})
_TRACE_LIMIT = 1000


@dataclass(frozen=True)
class TraceUse:
    """A trace whose spans used a version: ``kind`` is always ``"trace"``."""

    project: str
    trace_id: str
    start_ns: int
    kind: str = "trace"

    def __str__(self) -> str:
        return f"trace:{self.trace_id}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"kind": self.kind, "project": self.project, "trace_id": self.trace_id, "start_ns": self.start_ns}


class UsedBy(list[str]):
    """The ids of the runs that used an entity (a list, as before), with :attr:`traces`:
    the traces whose spans used it, newest first (at most 1,000; on a keel server, those
    of the projects you may read)."""

    def __init__(self, runs: list[str], traces: list[TraceUse]) -> None:
        super().__init__(runs)
        self.traces = traces

    @property
    def runs(self) -> list[str]:
        """The run ids (the list itself, as a plain list)."""
        return list(self)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"runs": [...], "traces": [{"kind": "trace", ...}]}``."""
        return {"runs": list(self), "traces": [t.to_dict() for t in self.traces]}


def _client():  # type: ignore[no-untyped-def]
    from keel.sdk.client import Client

    return Client(create=True)


def of(run_id: str) -> list[LineageEdge]:
    """Every input and output edge of a run."""
    return _client().lineage(run_id)


def inputs(run_id: str) -> list[EntityRef]:
    """What a run used."""
    return [e.entity for e in of(run_id) if e.direction == "input"]


def outputs(run_id: str) -> list[EntityRef]:
    """What a run produced."""
    return [e.entity for e in of(run_id) if e.direction == "output"]


def used_by(entity: str | EntityRef) -> UsedBy:
    """The runs that used ``entity`` (a list of run ids) and, as ``.traces``, the traces whose
    spans used it (prompts, model versions, KBs, configs, flags and A/B arms: see
    docs/traces.md). The spans recorded so far in this process are delivered first."""
    from keel.sdk.session import get_session

    ref = EntityRef.parse(entity)
    runs = _client().used_by(ref)
    traces: list[TraceUse] = []
    if ref.kind in TRACE_KINDS:
        session = get_session()  # the client's
        for writer in session.writers():  # the spans this process recorded, stored first
            writer.flush()
        found = session.traces.used_by(ref.kind, ref.id, ref.version or None, _TRACE_LIMIT)
        traces = [TraceUse(str(t["project"]), str(t["trace_id"]), int(t["start_ns"])) for t in found]
    return UsedBy(runs, traces)


def produced_by(entity: str | EntityRef) -> list[str]:
    """Ids of the runs that produced ``entity``."""
    return _client().produced_by(entity)
