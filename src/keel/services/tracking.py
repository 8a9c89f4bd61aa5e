"""Experiment tracking use cases over one :class:`~keel.services.workspace.Store`.

Everything here is synchronous and validated; buffering lives in the SDK,
which hands :class:`WriteBatch` objects to :meth:`TrackingService.write_batch`.
"""

from __future__ import annotations

import base64
import json
import os
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from keel.core.auth import WORKSPACE, Principal
from keel.core.batch import MAX_ARTIFACT_PATH_LENGTH, WriteBatch, check_batch_id, check_ref
from keel.core.downsample import MIN_POINTS, bucket_extremes
from keel.core.entities import (
    Artifact,
    EntityRef,
    LineageEdge,
    Metric,
    MetricSummary,
    Project,
    RunRecord,
    new_run_id,
    now_ms,
    run_not_found,
)
from keel.core.erasure import ErasureReport
from keel.core.filters import Node, OrderBy, check_query, parse_filter, parse_order_by
from keel.core.limits import MAX_PAGE_OFFSET, MAX_PAGE_TOKEN_LENGTH
from keel.core.names import check_artifact_path, check_key, check_name
from keel.core.table import Table
from keel.errors import Conflict, InvalidInput, NotFound
from keel.meta.projects import rename_project
from keel.services.audit import who as audit_who
from keel.services.auth import require
from keel.services.context import context_json
from keel.services.contract import (
    READABLE,
    authorize_run,
    batch_scope,
    operation,
    project_scope,
    projects_scope,
    run_scope,
    runs_scope,
    service,
)
from keel.services.destination import contained_target
from keel.services.redaction import redact_batch, use_workspace_keys
from keel.services.workspace import Store

__all__ = ["DEFAULT_PROJECT", "MAX_PAGE", "TrackingService", "random_run_name"]

DEFAULT_PROJECT = "default"
_PURGE_CALL_RUNS = 200  # runs whose recorded calls one erasure takes (a filter of ~7,400 characters)
MAX_PAGE = 50_000
MAX_USES = 10_000  # edges one runs_using call returns

_ADJECTIVES = (
    "amber",
    "bold",
    "brisk",
    "calm",
    "clever",
    "crisp",
    "daring",
    "eager",
    "fair",
    "gentle",
    "glad",
    "keen",
    "lively",
    "lucid",
    "merry",
    "nimble",
    "polite",
    "quick",
    "quiet",
    "rapid",
    "serene",
    "sharp",
    "steady",
    "swift",
    "tidy",
    "vivid",
    "warm",
    "wise",
    "witty",
    "zesty",
)
_NOUNS = (
    "otter",
    "falcon",
    "lynx",
    "heron",
    "badger",
    "comet",
    "maple",
    "river",
    "harbor",
    "cedar",
    "meadow",
    "summit",
    "ember",
    "willow",
    "pebble",
    "fjord",
    "aurora",
    "canyon",
    "delta",
    "prairie",
)


def random_run_name() -> str:
    """A readable default run name like ``swift-otter-42``."""
    return f"{random.choice(_ADJECTIVES)}-{random.choice(_NOUNS)}-{random.randint(1, 999)}"


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _decode_token(token: Any) -> int:
    """The offset in a page token (bounded: any other value is InvalidInput)."""
    if token is None or token == "":
        return 0
    bad = InvalidInput(f"invalid page token {str(token)[:60]!r}", "pass the next_page_token of a previous page")
    if not isinstance(token, str) or len(token) > MAX_PAGE_TOKEN_LENGTH:
        raise bad
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))["offset"]
    except (ValueError, KeyError, TypeError, IndexError, UnicodeError, RecursionError) as exc:
        raise bad from exc
    if type(offset) is not int or not 0 <= offset <= MAX_PAGE_OFFSET:
        raise bad
    return offset


def readable_projects(_services: Any, caller: Principal, result: list[tuple[Project, int]]) -> Any:
    """``list_projects`` narrowed to the projects ``caller`` may read."""
    readable = caller.readable()
    if readable is None:
        return result
    allowed = set(readable)
    return [pair for pair in result if pair[0].name in allowed]


def readable_runs(services: Any, caller: Principal, result: list[str]) -> list[str]:
    """Run ids narrowed to the runs in projects ``caller`` may read."""
    readable = caller.readable()
    if readable is None or not result:
        return result
    allowed = set(readable)
    return [r.run_id for r in services.tracking.repo.get_runs(result) if r.project in allowed]


def readable_edges(services: Any, caller: Principal, result: list[LineageEdge]) -> list[LineageEdge]:
    """Lineage edges narrowed to the runs in projects ``caller`` may read."""
    readable = caller.readable()
    if readable is None or not result:
        return result
    allowed = set(readable)
    runs = services.tracking.repo.get_runs(list(dict.fromkeys(e.run_id for e in result)))
    shown = {r.run_id for r in runs if r.project in allowed}
    return [e for e in result if e.run_id in shown]


def purge_scope(services: Any, caller: Principal, arguments: dict[str, Any]) -> None:
    """Who may purge: the writer role on the stored project of every run named (a run the
    caller cannot see is NotFound, as an unknown one), on ``project`` when given, and on every
    project (``*``) for a purge of all projects."""
    run_ids = arguments.get("run_ids")
    if run_ids:
        arguments["run_ids"] = [authorize_run(services, caller, run_id, "writer") for run_id in run_ids]
    project = arguments.get("project")
    if project is not None:
        if not isinstance(project, str):
            raise InvalidInput("project must be a project name", "pass a string")
        require(caller, project, "writer")
    elif not arguments.get("run_ids"):
        require(caller, WORKSPACE, "writer")


def authorize_batch(tracking: TrackingService, caller: Principal, batch: Any, role: str) -> None:
    """Check ``caller`` may write every run ``batch`` creates or touches, by the runs' **stored** projects.

    A new run names its project (the caller needs ``role`` there); a new-run row whose
    id is already stored is a retry only if it names the run's own project, otherwise
    it is refused (a batch cannot move or annotate another project's run by naming
    it as new). Rows for existing runs need ``role`` on each run's stored project; a
    parent needs the reader role. A run the caller may not read is NotFound, exactly
    as an unknown id. Only ids are read here: a refused batch has written nothing.
    """
    if not isinstance(batch, WriteBatch):
        raise InvalidInput("write_batch takes a WriteBatch", "send the sdk's batch")
    named = {row[0]: row[1] for row in batch.new_runs}
    parents = {row[4] for row in batch.new_runs if row[4] is not None}
    wanted = sorted(batch.run_ids() | set(named) | parents)
    stored = {r.run_id: r.project for r in tracking.repo.get_runs(wanted)} if wanted else {}
    for run_id, project in named.items():
        require(caller, project, role)
        if run_id in stored and stored[run_id] != project:
            raise Conflict(f"run id {run_id!r} is already used by another run", "start runs with new ids (keel does)")
    for parent in parents:
        if parent not in named:
            if parent not in stored or caller.rank(stored[parent]) == 0:
                raise run_not_found(parent)
            require(caller, stored[parent], "reader")
    for run_id in wanted:
        if run_id in named or run_id in parents and run_id not in batch.run_ids():
            continue
        owner = stored.get(run_id)
        if owner is None or caller.rank(owner) == 0:
            raise run_not_found(run_id)
        require(caller, owner, role)


@service("tracking")
class TrackingService:
    """Projects, runs, logging, search, artifacts, tables and lineage."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.repo = store.tracking
        self.objects = store.objects
        use_workspace_keys(store.root)  # the workspace's [redaction] keys, for every path

    # -- projects -----------------------------------------------------------
    @operation("writer", project_scope("name"))
    def create_project(self, name: str, description: str = "") -> Project:
        """Create a project (raises AlreadyExists)."""
        return self.repo.create_project(check_name(name, "project name"), description)

    @operation("admin", project_scope("name"))
    def rename_project(self, name: str, new_name: str, who: str | None = None) -> Project:
        """Rename project ``name`` to ``new_name`` (MLflow: ``rename_experiment``).

        Runs, traces and the MLflow experiment refer to a project by its id, so they follow
        (the experiment id stays); the roles granted on ``name`` move to ``new_name``; the
        audit log keeps the old name (``keel server audit``: ``project.rename``, who and when).
        ``default`` keeps its name, and no project takes it: it is MLflow's experiment ``0``.

        Raises:
            NotFound: no project ``name`` (or one the caller may not see).
            AlreadyExists: a project ``new_name`` exists.
            Conflict: roles are granted on ``new_name`` already (revoke them first).
        """
        name = check_name(name, "project name")
        new_name = check_name(new_name, "project name")
        if DEFAULT_PROJECT in (name, new_name) and name != new_name:
            raise InvalidInput(
                f"project {DEFAULT_PROJECT!r} keeps its name: it is MLflow's experiment 0",
                "rename other projects; create a new project for a new name",
            )
        return rename_project(self.store.db, name, new_name, audit_who(who))

    @operation("reader", READABLE, filter=readable_projects)
    def list_projects(self) -> list[tuple[Project, int]]:
        """Projects with their run counts."""
        return self.repo.list_projects()

    # -- runs -----------------------------------------------------------------
    def new_run(
        self,
        project: str | None = None,
        name: str | None = None,
        tags: dict[str, Any] | None = None,
        parent_id: str | None = None,
        run_id: str | None = None,
        cwd: str | None = None,
        parent_known: bool = False,
    ) -> tuple[RunRecord, WriteBatch]:
        """Validate a new run and capture its context: the record, and the batch that
        creates it (with its tags and parent edge). Nothing is written yet.

        ``parent_known`` skips the parent lookup (the caller knows it exists,
        e.g. it is a live run of the same process not yet flushed).
        """
        project = check_name(project or DEFAULT_PROJECT, "project name")
        name = check_name(name, "run name") if name else random_run_name()
        tag_rows = [(check_key(k, "tag key"), str(v)) for k, v in (tags or {}).items()]
        if parent_id is not None and not parent_known:
            parent_id = self.resolve_run_id(parent_id)
        run_id = run_id or new_run_id()
        start = now_ms()
        context = context_json(os.path.abspath(cwd or os.getcwd()))
        record = RunRecord(
            run_id=run_id,
            project=project,
            name=name,
            status="running",
            start_time=start,
            parent_id=parent_id,
            context_json=context,
            tags=dict(tag_rows),
        )
        batch = WriteBatch(
            new_runs=[(run_id, project, name, start, parent_id, context)],
            tags=[(run_id, k, v) for k, v in tag_rows],
            lineage=[(run_id, "input", "run", parent_id, "", "parent", start)] if parent_id else [],
        )
        batch.validate()  # e.g. a given run id, a tag value too long: refused here, not by the writer
        return record, batch

    def start_run(
        self,
        project: str | None = None,
        name: str | None = None,
        tags: dict[str, Any] | None = None,
        parent_id: str | None = None,
        run_id: str | None = None,
        cwd: str | None = None,
    ) -> RunRecord:
        """Create a running run now (one transaction) and return it."""
        record, batch = self.new_run(project, name, tags, parent_id, run_id, cwd)
        self.repo.write_batch(batch)  # new_run validated it
        return record

    @operation("writer", run_scope())
    def resume_run(self, run_id: str) -> tuple[RunRecord, dict[str, tuple[str, str]]]:
        """Reopen a finished run for more logging; returns it and its stored params."""
        record = self.get_run(run_id)
        if record.status != "running":
            self.repo.set_status(record.run_id, "running", None)
        return record, self.repo.params_of(record.run_id)

    @operation("writer", batch_scope("batch"))
    def write_batch(self, batch: WriteBatch, batch_id: str | None = None) -> None:
        """Durably write a batch of logged rows (one transaction).

        Every row is checked first (:meth:`WriteBatch.validate`): one bad row refuses the
        whole batch with InvalidInput, before anything is written. ``batch_id`` (made by
        the SDK) makes the write idempotent: a batch already written is not written again
        (see :mod:`keel.meta.delivered`).
        """
        if not isinstance(batch, WriteBatch):
            raise InvalidInput("write_batch takes a WriteBatch", "send the batch as the sdk builds it")
        batch_id = check_batch_id(batch_id)
        redact_batch(batch)  # whoever built it: no secret in a param, tag or run error is stored
        batch.validate()
        self.repo.write_batch(batch, batch_id)

    def maintain(self) -> None:
        """Background upkeep of the store (SQLite: a passive WAL checkpoint)."""
        self.store.db.checkpoint()

    @operation("reader", run_scope())
    def resolve_run_id(self, run_id: str) -> str:
        """The full id for a run id or unique prefix."""
        return self.repo.resolve_run_id(run_id)

    @operation("reader", run_scope())
    def get_run(self, run_id: str) -> RunRecord:
        """A run by id or unique prefix."""
        return self.repo.get_run(self.resolve_run_id(run_id))

    @operation("reader", runs_scope("run_ids"))
    def get_runs(self, run_ids: Iterable[str]) -> list[RunRecord]:
        """Several runs by id or prefix, in the given order."""
        return self.repo.get_runs([self.resolve_run_id(r) for r in run_ids])

    @operation("reader", run_scope())
    def children(self, run_id: str) -> list[str]:
        """Ids of a run's child runs."""
        return self.repo.children(self.resolve_run_id(run_id))

    @operation("writer", run_scope())
    def delete_run(self, run_id: str) -> str:
        """Soft-delete a run (hidden from search; restorable)."""
        full = self.resolve_run_id(run_id)
        self.repo.set_deleted(full, True)
        return full

    @operation("writer", run_scope())
    def restore_run(self, run_id: str) -> str:
        """Undo :meth:`delete_run`."""
        full = self.resolve_run_id(run_id)
        self.repo.set_deleted(full, False)
        return full

    @operation("writer", READABLE, check=purge_scope)
    def purge_runs(
        self,
        project: str | None = None,
        older_than: str | None = None,
        run_ids: list[str] | None = None,
        *,
        dry_run: bool = False,
        who: str = "",
    ) -> ErasureReport:
        """Permanently remove soft-deleted runs: the runs named by ``run_ids`` (each must be
        deleted), or every deleted run (of ``project``; deleted before ``older_than``: ``30d``,
        a date), with their params, metrics, tags, artifact rows and lineage, their recorded
        LLM calls, and the artifacts' objects nothing else references.

        Runs only: a deleted run's child runs are not purged with it (as ``mlflow gc``, only
        the deleted runs go; a child keeps its ``parent_id``). A run that a model version was
        registered from is refused, naming the version (the version points at its files).
        Nothing is removed when any check fails. One ``erasures`` audit row (reason
        ``purge``) counts the runs; their recorded calls are erased first through
        :meth:`keel.services.llm.LlmService.delete_calls`, 200 runs at a time (audit rows of
        their own).

        Objects: an artifact's object goes once no remaining record references it
        (:func:`keel.services.gc.referenced`), unless it was written or freshened after the
        purged run logged it (another writer stored the same content since, and may be about to
        reference it: it is left for ``keel gc``).
        """
        from keel.core.conversations import parse_time

        ids = [self.resolve_run_id(r) for r in run_ids] if run_ids else None
        name = check_name(project, "project name") if project else None
        project_ids = self.repo.project_ids([name]) if name else None
        before = parse_time(older_than) if older_than else None
        chosen = self.repo.purge_candidates(ids, project_ids, before)
        if ids is not None:
            for candidate in chosen:
                if not candidate.deleted:
                    raise Conflict(
                        f"run {candidate.run_id} is not deleted; only deleted runs are purged",
                        f"delete it first ('keel runs delete {candidate.run_id}'), or in one step: "
                        f"keel runs delete --purge {candidate.run_id}",
                    )
                if name is not None and candidate.project != name:
                    raise InvalidInput(
                        f"run {candidate.run_id} is not in project {name!r}", "leave out --project, or the run id"
                    )
        registered = self.repo.versions_from_runs([c.run_id for c in chosen])
        if registered:
            model, version, run = registered[0]
            more = f" (and {len(registered) - 1} more)" if len(registered) > 1 else ""
            raise Conflict(
                f"run {run} is the source of model version {model} v{version}{more}: purging it would delete the "
                "version's files",
                f"keep the run (keel runs restore {run}), or delete the model version first; purge other runs by id",
            )
        what = ", ".join(f for f in (name and f"project {name}", older_than and f"older than {older_than}") if f)
        report = ErasureReport("runs", len(chosen), 0, dry_run=dry_run)
        if dry_run or not chosen:
            return report
        actor = audit_who(who)
        recorded = self.repo.runs_with_calls([c.run_id for c in chosen])
        if recorded:
            from keel.services.llm import LlmService

            llm = LlmService(self.store, self)
            for start in range(0, len(recorded), _PURGE_CALL_RUNS):  # an erasure (and a scrub) per 200 runs
                names = ", ".join(f"'{run_id}'" for run_id in recorded[start : start + _PURGE_CALL_RUNS])
                # all=True: they may be every recorded call there is
                llm.delete_calls(filter=f"run_id in ({names})", all=True, who=actor, reason="purge")
        audit = {"actor": actor, "scope": name or "", "filter": what, "ids": len(ids or ()), "reason": "purge"}
        done = self.repo.purge([c.pk for c in chosen], audit)
        report.deleted = len(done.run_ids)
        report.audit_id = done.audit_id
        report.derived = [
            {"kind": kind, "id": entity, "version": version, "why": "made by a purged run (versions are immutable)"}
            for kind, entity, version in done.outputs
            if kind != "artifact"  # its own files (lineage edges of kind artifact): gone with it
        ]
        report.objects_removed, report.bytes_freed = self._drop_objects(done.artifacts)
        if done.audit_id is not None and report.objects_removed:
            self.repo.note_objects(done.audit_id, report.objects_removed, report.bytes_freed)
        self.store.db.scrub()
        return report

    def _drop_objects(self, artifacts: list[tuple[str, int, int]]) -> tuple[int, int]:
        """Delete the objects of purged artifact rows that nothing references any more;
        ``(objects, bytes)`` removed. Each is checked against the time its purged row was
        logged: one written or freshened since (another writer stored the same bytes) stays."""
        from keel.objects.base import ObjectInfo
        from keel.services.gc import referenced

        logged: dict[str, tuple[int, int]] = {}
        for oid, size, created_at in artifacts:
            _size, last = logged.get(oid, (size, 0))
            logged[oid] = (size, max(last, created_at))
        if not logged:
            return 0, 0
        orphans = set(logged) - referenced(self.store, set(logged))
        by_time: dict[int, list[ObjectInfo]] = {}
        for oid in sorted(orphans):
            size, last = logged[oid]
            by_time.setdefault(last, []).append(ObjectInfo(oid, size, 0.0))
        # a row's time is in whole milliseconds, cut down: its object may carry the same millisecond and more
        removed = [info for last, infos in by_time.items() for info in self.objects.prune(infos, (last + 1) / 1000)]
        return len(removed), sum(info.size for info in removed)

    @operation("reader", projects_scope("projects"))
    def search_runs(
        self,
        projects: str | Sequence[str] | None = None,
        filter: str | None = None,  # noqa: A002 - the public keyword users know from MLflow
        order_by: str | Sequence[str] | None = None,
        limit: int = 1000,
        page_token: str | None = None,
        include_deleted: bool = False,
        only_deleted: bool = False,
    ) -> tuple[list[RunRecord], str | None]:
        """Runs matching ``filter`` in ``order_by`` order: one page and the next token."""
        if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"invalid limit {limit!r}", f"use 1..{MAX_PAGE} and page_token for more")
        if isinstance(projects, str):
            projects = [projects]
        blank = filter is None or isinstance(filter, str) and not filter.strip()
        node = None if blank else parse_filter(filter)  # type: ignore[arg-type]
        order = parse_order_by(order_by)
        return self.search_parsed(projects, node, order, limit, page_token, include_deleted, only_deleted)

    def search_parsed(
        self,
        projects: Sequence[str] | None,
        node: Node | None,
        order: list[OrderBy],
        limit: int = 1000,
        page_token: str | None = None,
        include_deleted: bool = False,
        only_deleted: bool = False,
    ) -> tuple[list[RunRecord], str | None]:
        """:meth:`search_runs` with a filter and order already parsed (e.g. translated from
        another tool's grammar by :mod:`keel.integrations.mlflow_rest`).

        Every bound of the query (:func:`keel.core.filters.check_query`) and the page is
        checked before any SQL runs."""
        if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"invalid limit {limit!r}", f"use 1..{MAX_PAGE} and page_token for more")
        check_query(node, order)
        offset = _decode_token(page_token)
        project_ids = self.repo.project_ids(projects) if projects else None
        records, more = self.repo.search(project_ids, node, order, limit, offset, include_deleted, only_deleted)
        return records, (_encode_token(offset + limit) if more else None)

    # -- metrics --------------------------------------------------------------
    @operation("reader", run_scope())
    def metric_history(self, run_id: str, key: str, max_points: int | None = None) -> list[Metric]:
        """All values of a metric, by step; with ``max_points``, at most that many, for a chart:
        the first and the last point and each bucket's lowest and highest value, so spikes
        and dips stay visible (:func:`keel.core.downsample.bucket_extremes`)."""
        if max_points is not None and (
            isinstance(max_points, bool) or not isinstance(max_points, int) or not MIN_POINTS <= max_points <= MAX_PAGE
        ):
            raise InvalidInput(
                f"invalid max_points {max_points!r}",
                f"use max_points={MIN_POINTS}..{MAX_PAGE} (e.g. 600 for a chart), or leave it out for every point",
            )
        full = self.resolve_run_id(run_id)
        if max_points is None:
            return self.repo.metric_history(full, key)
        steps, stamps, values = self.repo.metric_series(full, key)
        return [Metric(key, values[i], steps[i], stamps[i]) for i in bucket_extremes(values, max_points)]

    @operation("reader", run_scope())
    def metric_summaries(self, run_id: str) -> list[MetricSummary]:
        """Latest/min/max/count of each metric."""
        return self.repo.metric_summaries(self.resolve_run_id(run_id))

    # -- content: artifacts, tables, text ---------------------------------------
    def store_file(self, path: str | os.PathLike[str]) -> tuple[str, int]:
        """Put one file in the object store; ``(oid, size)``."""
        source = Path(path)
        if not source.is_file():
            raise NotFound(f"no file at {source}", "check the path (directories: log_artifacts)")
        return self.objects.put_file(source)

    def store_bytes(self, data: bytes) -> str:
        """Put bytes in the object store; their oid."""
        return self.objects.put_bytes(data)

    def collect_artifacts(
        self,
        path: str | os.PathLike[str],
        artifact_path: str | None = None,
        named: bool = False,
        links_out: bool = False,
    ) -> list[tuple[str, str, int]]:
        """Store a file or a folder tree; ``[(artifact_path, oid, size)]``, in path order.

        A file is stored as ``<artifact_path>/<its name>``. A folder's files are stored
        under ``artifact_path`` (the root without it), with their paths relative to the
        folder, as MLflow's ``log_artifacts`` does; with ``named`` the folder keeps its own
        name, ``<artifact_path>/<folder name>/...`` (``cp -r``, MLflow's ``log_artifact``).

        Symbolic links inside a folder are followed only within it: a link to a file or
        folder inside is stored as what it points to, under the link's path; a link that
        points outside the folder, dangles, or loops back to a folder above it refuses
        the whole call with InvalidInput, before anything is stored (so logging a folder
        never uploads files from elsewhere on the disk). ``links_out`` is for a folder
        another tool made with links out of it on purpose (W&B's ``files/`` links to what
        ``wandb.save`` named): its links are followed wherever they point, and dangling
        ones skipped. Other special files (sockets, FIFOs) are skipped.
        """
        source = Path(path)
        if source.is_file():
            target = check_artifact_path(f"{artifact_path}/{source.name}" if artifact_path else source.name)
            oid, size = self.store_file(source)
            return [(target, oid, size)]
        if not source.is_dir():
            raise NotFound(f"no file or directory at {source}", "check the path")
        prefix = artifact_path or ""
        if named:
            name = Path(os.path.abspath(source)).name
            prefix = f"{prefix}/{name}" if prefix else name
        files = [
            (check_artifact_path(f"{prefix}/{relative}" if prefix else relative), file)
            for relative, file in _folder_files(source, links_out)
        ]
        out = []
        for target, file in files:
            oid, size = self.objects.put_file(file)
            out.append((target, oid, size))
        return out

    @operation("reader", run_scope())
    def list_artifacts(self, run_id: str, prefix: str = "") -> list[Artifact]:
        """A run's artifacts (all, or under a folder path)."""
        prefix = check_artifact_path(prefix) if prefix else ""
        return self.repo.list_artifacts(self.resolve_run_id(run_id), prefix)

    @operation("reader", run_scope())
    def artifact(self, run_id: str, path: str) -> Artifact:
        """One artifact by exact path."""
        path = check_artifact_path(path)
        for item in self.repo.list_artifacts(self.resolve_run_id(run_id), path):
            if item.path == path:
                return item
        raise NotFound(f"run {run_id[:8]} has no artifact {path!r}", "list them with 'keel artifacts list RUN'")

    def read_artifact(self, run_id: str, path: str) -> bytes:
        """The (hash-verified) content of one artifact."""
        return self.objects.get_bytes(self.artifact(run_id, path).oid)

    def download_artifacts(self, run_id: str, path: str, dest: str | os.PathLike[str]) -> list[Path]:
        """Write one artifact, or every artifact under a folder path, into ``dest``.

        A file lands as ``dest/<its name>``; a folder's files keep their paths
        relative to that folder. Raises InvalidInput, having written nothing, if a
        stored path would land outside ``dest`` or be written through a symlink.
        """
        path = check_artifact_path(path) if path else ""
        items = self.list_artifacts(run_id, path)
        if not items:
            raise NotFound(
                f"run {run_id[:8]} has no artifact at {path or '/'!r}", "list them with 'keel artifacts list RUN'"
            )
        exact = [item for item in items if item.path == path]
        if exact:
            items, names = exact[:1], [path.rsplit("/", 1)[-1]]
        else:
            names = [item.path[len(path) + 1 :] if path else item.path for item in items]
        # Every target is checked before the first write: a stored path that would land
        # outside ``dest`` (or go through a symlink in it) refuses the whole download.
        targets = [contained_target(dest, name, "artifact path", MAX_ARTIFACT_PATH_LENGTH) for name in names]
        for item, target in zip(items, targets, strict=True):
            self.objects.get_file(item.oid, target)
        return targets

    def read_table(self, run_id: str, name: str) -> Table:
        """A logged table by name."""
        return Table.from_bytes(self.read_artifact(run_id, table_path(name)))

    # -- lineage --------------------------------------------------------------
    @operation("reader", run_scope())
    def lineage(self, run_id: str) -> list[LineageEdge]:
        """A run's input and output edges."""
        return self.repo.edges(self.resolve_run_id(run_id))

    @operation("reader", READABLE, filter=readable_runs)
    def used_by(self, entity: str | EntityRef) -> list[str]:
        """Ids of runs that used ``entity`` as an input."""
        return self.repo.runs_with_entity(EntityRef.parse(entity), "input")

    @operation("reader", READABLE, filter=readable_runs)
    def produced_by(self, entity: str | EntityRef) -> list[str]:
        """Ids of runs that produced ``entity`` as an output."""
        return self.repo.runs_with_entity(EntityRef.parse(entity), "output")

    @operation("reader", READABLE, filter=readable_edges)
    def runs_using(
        self,
        kind: str,
        name: str,
        ref: str | None = None,
        version: str | None = None,
        limit: int = 1000,
    ) -> list[LineageEdge]:
        """The runs that used ``kind:name``, as their input edges, newest use first: each names
        the run, the version it got and the alias it resolved (``edge.ref``). ``ref`` keeps the
        uses resolved through that alias (any case: aliases ignore it), whatever the alias
        points at now: "the runs that used production at the time"; ``ref=""`` the uses that
        named the version; ``version`` the uses of that version. At most ``limit`` (1-10,000)."""
        if not isinstance(kind, str) or not isinstance(name, str) or not kind or not name:
            raise InvalidInput(
                f"runs_using needs an entity kind and name, got {kind!r}:{name!r}", "e.g. runs_using('prompt', 'chat')"
            )
        if ref is not None:
            check_ref(ref)
        if version is not None and not isinstance(version, str):
            raise InvalidInput(f"invalid version {version!r}", "pass the version as text, e.g. '1.3.0'")
        if type(limit) is not int or not 1 <= limit <= MAX_USES:
            raise InvalidInput(f"invalid limit {limit!r}", f"use 1..{MAX_USES}")
        return self.repo.uses(kind, name, ref, version, limit)


def _folder_files(folder: str | os.PathLike[str], links_out: bool = False) -> list[tuple[str, Path]]:
    """Every file under ``folder``: ``(path relative to it, the file to read)``, sorted by path.

    Symbolic links are followed only inside ``folder`` unless ``links_out`` (see
    :meth:`TrackingService.collect_artifacts`); a link out of it, a dangling link or a
    link to a folder above it raises InvalidInput naming the link.
    """
    root = Path(folder).resolve()
    found: list[tuple[tuple[str, ...], Path]] = []

    def walk(directory: Path, parts: tuple[str, ...], above: tuple[Path, ...]) -> None:
        with os.scandir(directory) as entries:
            listed = sorted(entries, key=lambda entry: entry.name)
        for entry in listed:
            here, path = (*parts, entry.name), Path(entry.path)
            if entry.is_symlink():
                real = _link_target(path, root, above, links_out)
                if real is None:
                    continue
                if real.is_dir():
                    walk(path, here, (*above, real))
                elif real.is_file():
                    found.append((here, real))
            elif entry.is_dir(follow_symlinks=False):
                walk(path, here, (*above, path.resolve()))
            elif entry.is_file(follow_symlinks=False):
                found.append((here, path))

    walk(root, (), (root,))
    found.sort()
    return [("/".join(parts), file) for parts, file in found]


def _link_target(link: Path, root: Path, above: tuple[Path, ...], links_out: bool) -> Path | None:
    """Where ``link`` (inside the folder ``root``) points, if it may be followed; None to skip
    it (dangling, with ``links_out``); else InvalidInput."""
    target = Path(os.path.realpath(link))
    if not target.exists():
        if links_out:
            return None
        raise InvalidInput(
            f"{link} is a symbolic link to {target}, which does not exist",
            f"remove the link or restore its target, then log {root} again",
        )
    if not links_out and not target.is_relative_to(root):
        raise InvalidInput(
            f"{link} is a symbolic link to {target}, outside the folder being logged ({root}); "
            "keel does not follow links out of a logged folder",
            f"copy {target} into {root}, or log it on its own: log_artifact({str(target)!r})",
        )
    if target in above:
        raise InvalidInput(
            f"{link} is a symbolic link to {target}, a folder that contains it (a loop)",
            f"remove the link, then log {root} again",
        )
    return target


def table_path(name: str) -> str:
    """The artifact path under which table ``name`` is stored."""
    check_key(name, "table name")
    return f"tables/{name}.json"
