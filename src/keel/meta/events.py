"""The event outbox: what happened, recorded in the transaction that made it happen.

A request that changes something webhooks care about calls :func:`record_event` inside its
own write transaction: one ``INSERT`` into ``events`` and nothing else (no subscription
lookup, no network), so it adds well under a millisecond and the event exists exactly when
the change does (a rolled-back change leaves no event). The server's hooks worker
(:mod:`keel.server.hooks_worker`, through :mod:`keel.meta.hooks`) later fans each event out
to the matching subscriptions and delivers them.

Event kinds (:data:`KINDS`) and their ``subject``:

- ``version.created``: ``{"kind": "prompt|model|dataset|kb", "name", "version"}``;
- ``alias.moved``: ``{"kind", "name", "ref"}``, data ``{"old", "new", "who", "reason"}``;
- ``review.opened|approved|rejected|applied``: the change request;
- ``eval.finished``, ``regression.detected``, ``flag.killed``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["KINDS", "Event", "event_from_row", "record_event"]

#: The event kinds keel records (a subscription names some of them, or patterns: ``review.*``).
KINDS: tuple[str, ...] = (
    "version.created",
    "alias.moved",
    "review.opened",
    "review.approved",
    "review.rejected",
    "review.applied",
    "eval.finished",
    "regression.detected",
    "flag.killed",
)

_INSERT = "INSERT INTO events (kind, project, subject, data, created_at, dispatched) VALUES (?, ?, ?, ?, ?, 0)"
_INSERT_PG = _INSERT.replace("?", "%s")


@dataclass(frozen=True)
class Event:
    """One recorded event."""

    id: int
    kind: str
    project: str | None
    subject: dict[str, Any]
    data: dict[str, Any] | None
    created_at: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready event, as a webhook's body carries it."""
        return {
            "id": self.id,
            "kind": self.kind,
            "project": self.project,
            "subject": self.subject,
            "data": self.data,
            "created_at": self.created_at,
        }


def event_from_row(row: Any) -> Event:
    """An :class:`Event` from an ``events`` row (id, kind, project, subject, data, created_at)."""
    return Event(
        int(row.id),
        row.kind,
        row.project,
        json.loads(row.subject),
        None if row.data is None else json.loads(row.data),
        int(row.created_at),
    )


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def record_event(
    conn: Any,
    kind: str,
    *,
    project: str | None,
    subject: dict[str, Any],
    data: dict[str, Any] | None = None,
) -> None:
    """Insert one outbox row for ``kind`` inside the caller's write transaction.

    ``conn`` is a :class:`keel.meta.dbapi.Connection` (``db.write()``), or a DBAPI cursor of
    a hot write path (``db.raw_write()``; its placeholders are chosen from the driver).
    ``kind`` is one of :data:`KINDS`; ``subject`` names what the event is about and ``data``
    carries the details (both JSON). Nothing is sent here: the server's hooks worker does.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r}: one of {', '.join(KINDS)}")
    params = (
        kind,
        project,
        _json(subject),
        None if data is None else _json(data),
        int(time.time() * 1000),
    )
    if hasattr(conn, "dialect"):  # keel.meta.dbapi.Connection
        conn.execute(_INSERT, params)
    elif type(conn).__module__.startswith("sqlite3"):  # a raw sqlite3 cursor
        conn.execute(_INSERT, params)
    else:  # a raw psycopg cursor
        conn.execute(_INSERT_PG, params)
