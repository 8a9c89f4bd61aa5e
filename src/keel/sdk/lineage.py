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

A run that reached a version through an alias (``keel.prompts.load("chat@production")``, or
``run.use(entity, ref="production")``) records the alias on its edge (``edge.ref``), so
:func:`runs_using` answers "the runs that used ``production`` at the time", each with the
version it got, after the alias has moved on::

    for edge in keel.lineage.runs_using("prompt:chat@production"):
        print(edge.run_id, edge.entity.version, edge.ref)     # 3f2a... 1.3.0 production
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.core.entities import EntityRef, LineageEdge
from keel.core.refnames import looks_like_version
from keel.errors import InvalidInput

if TYPE_CHECKING:
    from keel.sdk.client import Client

__all__ = [
    "TRACE_KINDS",
    "EntityRef",
    "LineageEdge",
    "TraceUse",
    "UsedBy",
    "inputs",
    "of",
    "outputs",
    "parse_use",
    "produced_by",
    "runs_using",
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


def parse_use(entity: str | EntityRef) -> tuple[str, str, str | None, str | None]:
    """``kind:name[@selector]`` as ``(kind, name, ref, version)`` for :func:`runs_using`: no
    selector: every use (both None); a version (``1.3.0``, ``3``, ``v2``, or text that cannot be
    an alias name, e.g. a hash starting with a digit): that version; an alias name
    (``production``): ``ref`` and ``version`` both that text, which :func:`runs_using` reads
    as "resolved through that alias, or that version" (a hash such as ``ab12cd34`` is
    alias-shaped; aliases may not look like versions, so one of the two matches nothing)."""
    ref_ = EntityRef.parse(entity)
    if not ref_.id:
        raise InvalidInput(f"invalid entity reference {str(entity)!r}", "write kind:name[@alias|@version]")
    selector = ref_.version
    if not selector:
        return ref_.kind, ref_.id, None, None
    from keel.core.batch import check_ref

    try:
        check_ref(selector)
    except InvalidInput:
        return ref_.kind, ref_.id, None, selector
    if looks_like_version(selector):
        return ref_.kind, ref_.id, None, selector
    return ref_.kind, ref_.id, selector, selector


def runs_using(
    entity: str | EntityRef,
    ref: str | None = None,
    version: str | None = None,
    limit: int = 1000,
    *,
    client: Client | None = None,
) -> list[LineageEdge]:
    """The runs that used ``entity``, as their input edges (``edge.run_id``, the version each
    got as ``edge.entity.version``, the alias it resolved as ``edge.ref``), newest use first.

    ``entity`` is ``kind:name`` with an optional selector: ``prompt:chat@production`` keeps
    the uses resolved through the alias ``production`` (any case), whatever it points at now,
    ``prompt:chat@1.3.0`` the uses of that version (see :func:`parse_use`). Or pass
    ``ref=``/``version=`` with a bare ``kind:name`` (both: uses of that version through that
    alias; ``ref=""``: uses that named the version). At most ``limit`` edges; on a keel server,
    the runs of the projects you may read. Rows logged so far in this process are delivered first.
    """
    kind, name, found_ref, found_version = parse_use(entity)
    if (ref is not None or version is not None) and (found_ref is not None or found_version is not None):
        raise InvalidInput(
            f"{str(entity)!r} names a version or alias and ref=/version= name another",
            "pass kind:name with ref=/version=, or kind:name@selector alone",
        )
    service = (client or _client())._flushed()
    if ref is not None or version is not None:
        return list(service.runs_using(kind, name, ref, version, limit))
    if found_ref is not None and found_version is not None:  # an alias name, or a hash shaped like one
        edges = service.runs_using(kind, name, found_ref, None, limit)
        edges += service.runs_using(kind, name, None, found_version, limit)
        edges = sorted(dict.fromkeys(edges), key=lambda e: e.created_at, reverse=True)
        return edges[:limit]
    return list(service.runs_using(kind, name, found_ref, found_version, limit))
