"""What an erasure did: the report every delete operation returns.

Conversations, recorded LLM calls, traces and purged runs are erased through one shape of
answer, so the CLI, the Python API, the REST routes and retention print and audit them the
same way. A report never carries the erased content, nor the erased ids: only counts, and
the immutable versions (datasets, knowledge-base versions, ...) that lineage says were made
from erased records. Those are not rewritten (versions are immutable); they are listed so
the operator can decide what to do with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["KINDS", "REASONS", "ErasureEntry", "ErasureReport", "quoted", "user_filters"]

#: The kinds of records an erasure removes.
KINDS = ("conversations", "llm_calls", "traces", "runs")
#: Why an erasure happened: a person asked, the retention period ran out, deleted runs were purged.
REASONS = ("request", "retention", "purge")


@dataclass
class ErasureReport:
    """The outcome of one erasure (or of a dry run: ``deleted`` is 0 and nothing changed).

    ``derived`` lists immutable versions that include erased records, each as
    ``{"kind": "dataset"|"kb"|..., "id": ..., "version": ..., "why": ...}``; ``audit_id``
    is the row of the ``erasures`` audit table written for it (None for a dry run).
    """

    kind: str
    matched: int
    deleted: int
    objects_removed: int = 0
    bytes_freed: int = 0
    dry_run: bool = False
    derived: list[dict[str, str]] = field(default_factory=list)
    audit_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "matched": self.matched,
            "deleted": self.deleted,
            "objects_removed": self.objects_removed,
            "bytes_freed": self.bytes_freed,
            "dry_run": self.dry_run,
            "derived": [dict(d) for d in self.derived],
            "audit_id": self.audit_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErasureReport:
        """The report :meth:`to_dict` made (the remote sdk rebuilds it from the server's answer)."""
        return cls(
            kind=str(data["kind"]),
            matched=int(data["matched"]),
            deleted=int(data["deleted"]),
            objects_removed=int(data.get("objects_removed", 0)),
            bytes_freed=int(data.get("bytes_freed", 0)),
            dry_run=bool(data.get("dry_run", False)),
            derived=[{str(k): str(v) for k, v in d.items()} for d in data.get("derived", [])],
            audit_id=None if data.get("audit_id") is None else int(data["audit_id"]),
        )


@dataclass(frozen=True)
class ErasureEntry:
    """One row of the erasure audit (``keel erasures list``): who erased how many records of
    which kind, when, with which filter (or how many ids), and why. Never the content."""

    id: int
    at: int  # epoch ms
    actor: str
    kind: str
    scope: str  # the project, "" for workspace-wide kinds (conversations)
    filter: str  # the filter text as given, "" when ids were given
    ids: int  # how many ids were given
    matched: int
    deleted: int
    objects_removed: int
    bytes_freed: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def quoted(text: str) -> str:
    """``text`` as a string literal of keel's filter language (:mod:`keel.core.filters`):
    single quotes, with backslashes and quotes escaped, so any user id stays one value."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def user_filters(user_id: str) -> dict[str, str]:
    """The filter that selects one end user's records, per kind (``keel erase --user``):
    conversations and recorded calls by ``metadata.user_id``, traces by their ``user_id``
    (``keel.user_id``, ``user.id``, ``enduser.id`` attributes of a span)."""
    literal = quoted(user_id)
    return {
        "conversations": f"metadata.user_id = {literal}",
        "traces": f"user_id = {literal}",
        "llm_calls": f"metadata.user_id = {literal}",
    }
