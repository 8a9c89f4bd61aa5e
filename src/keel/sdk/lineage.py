"""``keel.lineage``: walk between runs and the versions they used or made.

Entities are written ``kind:id[@version]``: ``run:<id>``, ``artifact:<oid>``,
and, as later registries land, ``prompt:chat@1.3.0``, ``model:assistant@3``,
``dataset:<oid>``... A version-less reference matches every version.
"""

from __future__ import annotations

from keel.core.entities import EntityRef, LineageEdge

__all__ = ["EntityRef", "LineageEdge", "inputs", "of", "outputs", "produced_by", "used_by"]


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


def used_by(entity: str | EntityRef) -> list[str]:
    """Ids of the runs that used ``entity``."""
    return _client().used_by(entity)


def produced_by(entity: str | EntityRef) -> list[str]:
    """Ids of the runs that produced ``entity``."""
    return _client().produced_by(entity)
