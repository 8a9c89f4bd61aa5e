"""The erasure audit as a service: ``keel erasures list`` and ``keel.erasures.entries()``.

Each erasure (conversations, recorded LLM calls, traces, purged runs; on request, by
retention or a purge) wrote one row of :mod:`keel.meta.erasures`: who, when, the kind, the
project, the filter as given or how many ids, the counts. Never the content.

Who may read it: the role that may erase. An entry of a workspace-wide kind (conversations,
recorded calls; scope ``""``) is shown to writers on the registries, an entry of a project's
traces or runs to writers on that project: the filter text can name the person whose
records were erased (``metadata.user_id = 'u-42'``), so readers do not see it.
"""

from __future__ import annotations

from typing import Any

from keel.core.auth import RANK, REGISTRIES
from keel.core.erasure import KINDS, ErasureEntry
from keel.core.limits import MAX_PAGE_SIZE
from keel.errors import InvalidInput
from keel.meta import erasures
from keel.services.contract import READABLE, operation, service
from keel.services.workspace import Store

__all__ = ["ErasureService", "visible_entries"]


def visible_entries(services: Any, caller: Any, entries: list[ErasureEntry]) -> list[ErasureEntry]:
    """The contract's filter of :meth:`ErasureService.entries`: those the caller could have made."""
    writer = RANK["writer"]
    return [e for e in entries if caller.rank(e.scope or REGISTRIES) >= writer]


@service("erasures")
class ErasureService:
    """The erasure audit of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @operation("reader", READABLE, filter=visible_entries)
    def entries(self, limit: int = 100, kind: str | None = None, project: str | None = None) -> list[ErasureEntry]:
        """The newest audit entries first (of one kind, one project when given)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidInput(f"invalid limit {limit!r}", f"give a whole number in 1..{MAX_PAGE_SIZE:,}")
        if kind is not None and kind not in KINDS:
            raise InvalidInput(f"unknown kind {kind!r}", f"use one of {', '.join(KINDS)}")
        with self.store.db.read() as conn:
            return erasures.listing(conn, limit, kind=kind, scope=project)
