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


def declared(conn: Connection, projects: Iterable[str]) -> dict[str, dict[str, str]]:
    """``{project name: {metric: direction}}`` for the named projects (those declaring none,
    or that do not exist: absent)."""
    names = sorted(set(projects))
    if not names:
        return {}
    marks = ", ".join("?" * len(names))
    rows = conn.execute(
        "SELECT projects.name, metric_directions.metric, metric_directions.direction FROM metric_directions"
        f" JOIN projects ON projects.id = metric_directions.project_id WHERE projects.name IN ({marks})",  # noqa: S608 - placeholders
        tuple(names),
    ).all()
    out: dict[str, dict[str, str]] = {}
    for name, metric, direction in rows:
        out.setdefault(str(name), {})[str(metric)] = str(direction)
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
