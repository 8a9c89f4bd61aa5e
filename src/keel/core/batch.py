"""The unit of buffered writing: everything logged between two flushes.

The SDK appends to a batch from user code (cheap tuple appends); a writer
hands the whole batch to the store, which writes it in one transaction. The
same shape travels over HTTP to a server's batch endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["WriteBatch"]


@dataclass
class WriteBatch:
    """Rows to write, each a tuple; ``run_id`` is always the public id.

    - ``new_runs``: ``(run_id, project, name, start_time, parent_id, context_json)``,
      written first, so the other rows of the batch may refer to them
    - ``metrics``: ``(run_id, key, value, step, timestamp)``
    - ``params``: ``(run_id, key, vtype, text, overwrite)``
    - ``tags``: ``(run_id, key, value)``
    - ``artifacts``: ``(run_id, path, oid, size, kind, created_at)``
    - ``lineage``: ``(run_id, direction, kind, id, version, role, created_at)``
    - ``run_ends``: ``(run_id, status, end_time, error)``
    """

    new_runs: list[tuple[str, str, str, int, str | None, str]] = field(default_factory=list)
    metrics: list[tuple[str, str, float, int, int]] = field(default_factory=list)
    params: list[tuple[str, str, str, str, bool]] = field(default_factory=list)
    tags: list[tuple[str, str, str]] = field(default_factory=list)
    artifacts: list[tuple[str, str, str, int, str, int]] = field(default_factory=list)
    lineage: list[tuple[str, str, str, str, str, str, int]] = field(default_factory=list)
    run_ends: list[tuple[str, str, int, str | None]] = field(default_factory=list)

    def __len__(self) -> int:
        return (
            len(self.new_runs)
            + len(self.metrics)
            + len(self.params)
            + len(self.tags)
            + len(self.artifacts)
            + len(self.lineage)
            + len(self.run_ends)
        )

    def run_ids(self) -> set[str]:
        """Every run the batch touches."""
        ids: set[str] = set()
        for rows in (self.params, self.tags, self.artifacts, self.lineage, self.run_ends):
            ids.update(row[0] for row in rows)
        ids.update({row[0] for row in self.metrics})
        return ids
