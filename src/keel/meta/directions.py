"""Metric directions declared on a project: ``metric -> higher | lower`` per project
(table ``metric_directions``, migration 0029). What they mean, and the order in which a
comparison consults them, is :mod:`keel.core.directions`."""

from __future__ import annotations

from collections.abc import Iterable

from keel.meta.dbapi import Connection, ConstraintViolation

__all__ = ["declared", "set_direction", "unset_direction"]

_UPDATE = (
    "UPDATE metric_directions SET direction = ?, updated_by = ?, updated_at = ? WHERE project_id = ? AND metric = ?"
)


def declared(conn: Connection, project_ids: Iterable[int]) -> dict[int, dict[str, str]]:
    """``{project id: {metric: direction}}`` for the given projects (those without any: absent)."""
    ids = sorted(set(project_ids))
    if not ids:
        return {}
    marks = ", ".join("?" * len(ids))
    rows = conn.execute(
        f"SELECT project_id, metric, direction FROM metric_directions WHERE project_id IN ({marks})",  # noqa: S608 - placeholders
        tuple(ids),
    ).all()
    out: dict[int, dict[str, str]] = {}
    for project_id, metric, direction in rows:
        out.setdefault(int(project_id), {})[str(metric)] = str(direction)
    return out


def set_direction(conn: Connection, project_id: int, metric: str, direction: str, who: str, now: int) -> None:
    """Declare (or change) ``metric``'s direction on a project."""
    changed = conn.execute(_UPDATE, (direction, who, now, project_id, metric)).rowcount
    if changed:
        return
    try:
        with conn.savepoint():
            conn.execute(
                "INSERT INTO metric_directions (project_id, metric, direction, updated_by, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (project_id, metric, direction, who, now),
            )
    except ConstraintViolation:  # declared by another process meanwhile: this one's word is the latest
        conn.execute(_UPDATE, (direction, who, now, project_id, metric))


def unset_direction(conn: Connection, project_id: int, metric: str) -> bool:
    """Remove a declaration; False if there was none."""
    gone = conn.execute(
        "DELETE FROM metric_directions WHERE project_id = ? AND metric = ?", (project_id, metric)
    ).rowcount
    return bool(gone)
