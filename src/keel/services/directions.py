"""Metric directions declared on a project: which way is better for a metric of that
project's runs (``keel runs direction accuracy higher --project chatbot``).

A comparison consults, in order: the call's own ``directions``, the runs' ``keel.direction.*``
tags, these project declarations, then the defaults for exact known names (see
:mod:`keel.core.directions`). Declaring needs the writer role on the project; reading, the
reader role.
"""

from __future__ import annotations

from collections.abc import Sequence

from keel.core.directions import parse_direction
from keel.core.entities import now_ms
from keel.core.names import check_key, check_name
from keel.errors import InvalidInput
from keel.meta import directions as rows
from keel.services.contract import operation, project_scope, projects_scope, service
from keel.services.workspace import Store

__all__ = ["DirectionService"]

_DEFAULT_PROJECT = "default"


@service("directions")
class DirectionService:
    """Metric directions per project, in one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _project_id(self, project: str | None) -> int:
        """The id of ``project`` (NotFound, as for a hidden one, when it does not exist)."""
        return self.store.tracking.project_ids([check_name(project or _DEFAULT_PROJECT, "project")])[0]

    @operation("writer", project_scope())
    def set(self, metric: str, direction: str, project: str | None = None, who: str = "") -> dict[str, str]:  # noqa: A003
        """Declare that ``higher`` (or ``lower``) is better for ``metric`` in ``project``."""
        check_key(metric)
        way = parse_direction(direction, metric)
        pk = self._project_id(project)
        with self.store.db.write() as conn:
            rows.set_direction(conn, pk, metric, way, who or "", now_ms())
        return {"project": project or _DEFAULT_PROJECT, "metric": metric, "direction": way}

    @operation("writer", project_scope())
    def unset(self, metric: str, project: str | None = None) -> None:
        """Remove a declaration (refused when ``metric`` has none in ``project``)."""
        check_key(metric)
        pk = self._project_id(project)
        with self.store.db.write() as conn:
            if not rows.unset_direction(conn, pk, metric):
                raise InvalidInput(
                    f"project {project or _DEFAULT_PROJECT!r} declares no direction for {metric!r}",
                    "list the declarations with: keel runs directions",
                )

    @operation("reader", projects_scope())
    def declared(self, projects: str | Sequence[str] | None = None) -> dict[str, dict[str, str]]:
        """``{project: {metric: direction}}`` for the named projects (None: the default project)."""
        names = [projects] if isinstance(projects, str) else list(projects or [_DEFAULT_PROJECT])
        with self.store.db.read() as conn:
            return rows.declared(conn, names)
