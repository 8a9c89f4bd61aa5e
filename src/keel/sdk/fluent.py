"""The module-level API: ``keel.start_run``, ``keel.log_metrics``, ``keel.init``...

The *active run* belongs to the task that started it, not to the process: it
lives in a :class:`contextvars.ContextVar` holding this context's stack of runs
(an immutable tuple). ``start_run``/``init`` push, ``finish`` or leaving the
``with`` block pops, and starting a run while another is active in the same
context makes the new one its child (a nested run). So:

- two threads, or two asyncio tasks, each in their own ``start_run``, each log
  into their own run (an async web app: one run per request);
- an asyncio task created inside a run (``asyncio.create_task``,
  ``asyncio.gather``, ``asyncio.to_thread``) copies the context when it is
  created, so it logs into that run;
- a plain new thread (``threading.Thread``, a ``ThreadPoolExecutor`` worker)
  starts with an empty context: it does *not* see the run unless it is handed
  over, e.g. ``threading.Thread(target=contextvars.copy_context().run,
  args=(work,))``, or by passing the run itself (``run.log_metric``).

``keel.active_run()`` is the one way to read it (the sdk modules that attribute
LLM calls, prompt loads, flag exposures... use it too). Runs left open are
still finished by the session at interpreter exit, from whatever context.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Mapping, Sequence
from typing import Any

from keel.core.entities import EntityRef
from keel.core.table import Table
from keel.errors import InvalidInput
from keel.sdk.results import RunList
from keel.sdk.run import Run
from keel.sdk.session import get_session

__all__ = [
    "active_run",
    "finish",
    "flush",
    "init",
    "log",
    "log_artifact",
    "log_artifacts",
    "log_html",
    "log_input",
    "log_metric",
    "log_metrics",
    "log_output",
    "log_param",
    "log_params",
    "log_table",
    "log_text",
    "search_runs",
    "set_tag",
    "set_tags",
    "start_run",
]

# This context's active runs, innermost last; a tuple, so a copied context never shares a list.
_runs: contextvars.ContextVar[tuple[Run, ...]] = contextvars.ContextVar("keel_active_runs", default=())


def start_run(
    project: str | None = None,
    name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    parent: str | Run | None = None,
    run_id: str | None = None,
    nested: bool | None = None,
) -> Run:
    """Start (or with ``run_id`` resume) a run and make it the active run.

    Args:
        project: the project (created on first use); default ``default``.
        name: a readable run name; default a generated one.
        tags: string labels, e.g. ``{"team": "search"}``.
        parent: the parent run (id or Run); default the active run, if any.
        run_id: resume this existing run instead of creating one.
        nested: False to refuse starting while another run is active.
    """
    session = get_session()
    active = active_run()
    if active is not None and nested is False:
        raise InvalidInput(
            f"run {active.id[:8]} is still active", "finish it first, or start a nested run (nested=True)"
        )
    if run_id is not None:
        run = session.resume_run(run_id)
    else:
        parent_id = parent.id if isinstance(parent, Run) else parent
        if parent_id is None and active is not None:
            parent_id = active.id
        project = project or (active.project if active else None) or os.environ.get("KEEL_PROJECT")
        run = session.start_run(project, name, dict(tags or {}), parent_id)
    _runs.set((*_runs.get(), run))
    return run


def init(
    project: str | None = None,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Run:
    """W&B style: start the active run; ``config`` (its hyperparameters) is logged as
    params, nested dicts flattened with dots (``{"rag": {"top_k": 5}}`` -> ``rag.top_k``).

    Example::

        keel.init(project="chat", config={"model": "gpt-4o", "temperature": 0.7})
        keel.log({"accuracy": 0.91})  # numbers logged with keel.log are metrics
        keel.finish()
    """
    run = start_run(project=project, name=name, tags=tags)
    if config:
        run.log_params(config)
    return run


def active_run() -> Run | None:
    """The innermost run started in this thread or asyncio task and still running, or None.

    Each thread and asyncio task has its own active run (see the module doc): a task
    created inside a run sees it, a plain new thread does not.
    """
    runs = _runs.get()
    if runs:
        run = runs[-1]
        if run.status == "running":
            return run
        while runs and runs[-1].status != "running":  # finished runs leave this context's stack
            runs = runs[:-1]
        _runs.set(runs)
        return runs[-1] if runs else None
    return None


def _run() -> Run:
    run = active_run()
    if run is None:
        raise InvalidInput("no active run", "call keel.start_run() or keel.init() first")
    return run


def finish(status: str = "finished") -> None:
    """End the active run (W&B style)."""
    _run().finish(status)


def flush() -> None:
    """Make everything logged so far to the active run durable; raise WriteFailed if some of
    its rows could not be written (see ``Run.flush``)."""
    run = active_run()
    if run is not None:
        run.flush()


def log(values: Mapping[str, Any], step: int | None = None) -> None:
    """Log to the active run: numbers are metrics, other values params."""
    _run().log(values, step)


def log_param(key: str, value: Any, overwrite: bool = False) -> None:
    """Log one param to the active run."""
    _run().log_param(key, value, overwrite)


def log_params(params: Mapping[str, Any], overwrite: bool = False) -> None:
    """Log params to the active run."""
    _run().log_params(params, overwrite)


def log_metric(key: str, value: float, step: int | None = None) -> None:
    """Log one metric value to the active run."""
    _run().log_metric(key, value, step)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log metrics to the active run."""
    _run().log_metrics(metrics, step)


def set_tag(key: str, value: Any) -> None:
    """Set a tag on the active run."""
    _run().set_tag(key, value)


def set_tags(tags: Mapping[str, Any]) -> None:
    """Set tags on the active run."""
    _run().set_tags(tags)


def log_artifact(path: str | os.PathLike[str], artifact_path: str | None = None) -> str:
    """Store a file, or a folder under its own name (``model/...``), on the active run; see
    :meth:`keel.Run.log_artifact`."""
    return _run().log_artifact(path, artifact_path)


def log_artifacts(directory: str | os.PathLike[str], artifact_path: str | None = None) -> None:
    """Store the files of a directory at the artifact root (or ``artifact_path``) of the
    active run; see :meth:`keel.Run.log_artifacts`."""
    _run().log_artifacts(directory, artifact_path)


def log_table(name: str, columns: Sequence[str] | None = None, rows: Sequence[Any] = ()) -> Table:
    """Store a table on the active run."""
    return _run().log_table(name, columns, rows)


def log_text(name: str, text: str) -> str:
    """Store a text value on the active run."""
    return _run().log_text(name, text)


def log_html(name: str, html: str) -> str:
    """Store an HTML document on the active run."""
    return _run().log_html(name, html)


def log_input(entity: str | EntityRef, role: str = "", ref: str = "") -> None:
    """Record an input of the active run (lineage); ``ref``: the alias that led to the version."""
    _run().log_input(entity, role, ref)


def log_output(entity: str | EntityRef, role: str = "") -> None:
    """Record an output of the active run (lineage)."""
    _run().log_output(entity, role)


def search_runs(
    project: str | Sequence[str] | None = None,
    filter: str | None = None,  # noqa: A002 - MLflow's keyword
    order_by: str | Sequence[str] | None = None,
    limit: int = 1000,
    page_token: str | None = None,
    include_deleted: bool = False,
) -> RunList:
    """Search runs in SQL; see :meth:`keel.Client.search_runs`."""
    from keel.sdk.client import Client

    return Client(create=True).search_runs(project, filter, order_by, limit, page_token, include_deleted)


def _clear_stack() -> None:
    """Forget the active runs of this context (used by ``keel.sdk.session.reset``; other
    contexts' runs are finished by it, so they leave their stacks on the next look)."""
    _runs.set(())
