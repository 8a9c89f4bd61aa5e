"""``keel.Client``: explicit access to a store, for queries and scripts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keel.core.entities import (
    Artifact,
    EntityRef,
    LineageEdge,
    Metric,
    MetricSummary,
    Project,
    RunRecord,
)
from keel.core.table import Table
from keel.sdk.results import RunList
from keel.sdk.run import Run, text_path
from keel.sdk.session import Session, get_session

__all__ = ["Client"]


class Client:
    """Read and manage runs of one store.

    Args:
        database: a database URL; default: ``KEEL_URI`` or the nearest ``.keel/``.
        objects: an object-store URL (default: beside the database / from config).
        create: create a workspace in the current folder when none is found
            (the default, as for ``keel.start_run``; the CLI passes False).
    """

    def __init__(self, database: str | None = None, objects: str | None = None, create: bool = True) -> None:
        self._session: Session = get_session(database, objects, create=create)
        self._service = self._session.service

    def _flushed(self) -> Any:
        self._session.writer.flush()
        return self._service

    # -- runs -------------------------------------------------------------------
    def start_run(
        self,
        project: str | None = None,
        name: str | None = None,
        tags: dict[str, Any] | None = None,
        parent_id: str | None = None,
    ) -> Run:
        """Start a run that is not made the active run."""
        return self._session.start_run(project, name, tags, parent_id)

    def resume_run(self, run_id: str) -> Run:
        """Reopen a run to log more to it."""
        return self._session.resume_run(run_id)

    def get_run(self, run_id: str) -> RunRecord:
        """A run by id or unique prefix."""
        return self._flushed().get_run(run_id)

    def get_runs(self, run_ids: Sequence[str]) -> list[RunRecord]:
        """Several runs by id or prefix, in order."""
        return self._flushed().get_runs(run_ids)

    def search_runs(
        self,
        project: str | Sequence[str] | None = None,
        filter: str | None = None,  # noqa: A002 - MLflow's keyword
        order_by: str | Sequence[str] | None = None,
        limit: int = 1000,
        page_token: str | None = None,
        include_deleted: bool = False,
        only_deleted: bool = False,
    ) -> RunList:
        """Runs matching a filter such as
        ``"metrics.accuracy > 0.8 and params.model = 'gpt-4' and tags.team = 'search'"``,
        ordered by e.g. ``["metrics.cost_per_query asc"]``; the database does the work.
        """
        runs, token = self._flushed().search_runs(
            project, filter, order_by, limit, page_token, include_deleted, only_deleted
        )
        return RunList(runs, token)

    def delete_run(self, run_id: str) -> str:
        """Soft-delete a run; returns its full id."""
        return self._flushed().delete_run(run_id)

    def restore_run(self, run_id: str) -> str:
        """Restore a deleted run; returns its full id."""
        return self._flushed().restore_run(run_id)

    def children(self, run_id: str) -> list[str]:
        """Ids of a run's nested runs."""
        return self._flushed().children(run_id)

    # -- projects -----------------------------------------------------------------
    def create_project(self, name: str, description: str = "") -> Project:
        """Create a project (runs create theirs automatically)."""
        return self._service.create_project(name, description)

    def list_projects(self) -> list[tuple[Project, int]]:
        """Projects with their run counts."""
        return self._flushed().list_projects()

    def rename_project(self, name: str, new_name: str) -> Project:
        """Rename a project: its runs and traces follow, the roles granted on it move, the
        audit log keeps the old name (``keel server audit``)."""
        return self._flushed().rename_project(name, new_name)

    # -- metrics ------------------------------------------------------------------
    def metric_history(self, run_id: str, key: str, max_points: int | None = None) -> list[Metric]:
        """Every value of a metric; with ``max_points``, at most that many for a chart (the first
        and last point, and each bucket's lowest and highest value: spikes stay visible)."""
        return self._flushed().metric_history(run_id, key, max_points)

    def metric_summaries(self, run_id: str) -> list[MetricSummary]:
        """Latest/min/max/count per metric."""
        return self._flushed().metric_summaries(run_id)

    # -- artifacts ------------------------------------------------------------------
    def list_artifacts(self, run_id: str, path: str = "") -> list[Artifact]:
        """A run's artifacts, optionally under a folder path."""
        return self._flushed().list_artifacts(run_id, path)

    def read_artifact(self, run_id: str, path: str) -> bytes:
        """One artifact's bytes (hash-verified)."""
        return self._flushed().read_artifact(run_id, path)

    def download_artifacts(self, run_id: str, path: str = "", dest: str | os.PathLike[str] = ".") -> list[Path]:
        """Write artifacts to ``dest``; returns the files written."""
        return self._flushed().download_artifacts(run_id, path, dest)

    def table(self, run_id: str, name: str) -> Table:
        """A table a run logged."""
        return self._flushed().read_table(run_id, name)

    def text(self, run_id: str, name: str, kind: str = "text") -> str:
        """A text value a run logged."""
        return self._flushed().read_artifact(run_id, text_path(name, kind)).decode("utf-8")

    # -- lineage ------------------------------------------------------------------
    def lineage(self, run_id: str) -> list[LineageEdge]:
        """A run's inputs and outputs."""
        return self._flushed().lineage(run_id)

    def used_by(self, entity: str | EntityRef) -> list[str]:
        """Runs that used ``entity``."""
        return self._flushed().used_by(entity)

    def produced_by(self, entity: str | EntityRef) -> list[str]:
        """Runs that produced ``entity``."""
        return self._flushed().produced_by(entity)

    # -- the store ------------------------------------------------------------------
    def verify(self, *, quick: bool = False, seal: bool = False, progress: Any = None) -> Any:
        """Check the store (a :class:`keel.services.verify.VerifyReport`): re-hash every
        object, report corrupt and missing ones; check the database file (SQLite's
        ``integrity_check``, or ``quick_check`` with ``quick``) and every record digest.
        ``seal`` gives finished records without a digest one; ``progress(stage, done,
        total)`` is called as records are checked."""
        from keel.services.verify import verify_store

        store = self._session.local_store("verifying the store")
        return verify_store(store, quick=quick, seal=seal, progress=progress)

    def describe(self) -> dict[str, Any]:
        """Where the store lives."""
        return self._session.describe()

    def flush(self) -> None:
        """Make everything logged so far durable."""
        self._session.writer.flush()
