"""``/svc/{service}/{method}``: the service methods the remote sdk calls, one route each.

The remote sdk (:mod:`keel.sdk.remote`) runs the same code as a local one; where
that code reaches a service, the call travels here as
``POST /api/v1/svc/{service}/{method}`` with ``{"args": [...], "kwargs": {...}}``
(values in the :mod:`keel.core.wire` encoding) and comes back as ``{"result": ...}``.

Only the methods in :data:`TABLE` are callable. Each entry says which role it
needs and on what scope: the project of a run id argument, of a new run, of
each run a :class:`~keel.core.batch.WriteBatch` touches, or ``@registries`` for
the workspace-wide registries (prompts, models, KBs, conversations, LLM calls,
config, flags, A/B tests). Methods that read or write files (exports, imports,
directory scans) are not in the table: against a server the sdk runs them on the
client. Arguments decode only into the types the codec knows, and a caller's
``who``/``author`` is always the authenticated user.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Body
from pydantic import BaseModel, ConfigDict, Field

from keel.core.batch import WriteBatch
from keel.errors import InvalidInput, NotFound
from keel.sdk.remote import wire_codec
from keel.server.auth import Caller, Context, require
from keel.server.context import ServerContext
from keel.server.routers import Router
from keel.services.auth import REGISTRIES, Principal

__all__ = ["TABLE", "Entry", "router"]

router = Router(tags=["service API"])


@dataclass(frozen=True)
class Entry:
    """One callable service method.

    ``scope`` says what the call acts on:

    - ``registries``: the workspace-wide registries (``@registries``)
    - ``run:<param>``: the project of the run id in argument ``param``
    - ``runs:<param>``: the projects of every run id in argument ``param``
    - ``project:<param>``: the project named by argument ``param`` (default project if None)
    - ``projects:<param>``: the projects named (None: every project the caller may read)
    - ``batch:<param>``: every project a WriteBatch touches
    - ``readable``: any caller; the result is filtered to what the caller may read
    """

    service: str
    method: str
    role: str
    scope: str = "registries"


def _entries(service: str, role: str, names: str, scope: str = "registries") -> list[Entry]:
    return [Entry(service, name, role, scope) for name in names.split()]


TABLE: tuple[Entry, ...] = (
    # tracking: runs and their rows. Files are stored through /objects by the client.
    Entry("tracking", "create_project", "writer", "project:name"),
    Entry("tracking", "list_projects", "reader", "readable"),
    Entry("tracking", "write_batch", "writer", "batch:batch"),
    Entry("tracking", "resume_run", "writer", "run:run_id"),
    Entry("tracking", "delete_run", "writer", "run:run_id"),
    Entry("tracking", "restore_run", "writer", "run:run_id"),
    *_entries("tracking", "reader", "resolve_run_id get_run children metric_history metric_summaries", "run:run_id"),
    *_entries("tracking", "reader", "list_artifacts artifact lineage", "run:run_id"),
    Entry("tracking", "get_runs", "reader", "runs:run_ids"),
    Entry("tracking", "search_runs", "reader", "projects:projects"),
    Entry("tracking", "used_by", "reader", "readable"),
    Entry("tracking", "produced_by", "reader", "readable"),
    # the registries
    *_entries("prompts", "writer", "register set_alias delete_alias rollback"),
    *_entries("prompts", "reader", "resolve get versions list_prompts diff history"),
    *_entries(
        "models",
        "writer",
        "create_model update_model delete_model_tag register update_version delete_version_tag transition_stage "
        "set_alias delete_alias delete_version delete_model",
    ),
    *_entries(
        "models",
        "reader",
        "get_model list_models get versions_in_stage versions versions_of_run history card_text lineage compare",
    ),
    *_entries("kb", "writer", "create configure add_documents remove_documents commit"),
    *_entries("kb", "reader", "get list_kbs version log manifest diff status search"),
    *_entries("conversations", "writer", "write_batch"),
    *_entries("conversations", "reader", "search count resolve get stats examples"),
    *_entries("llm", "writer", "write_batch"),
    *_entries("llm", "reader", "calls get latest closest cassettes scope_rows resolve_scope pack"),
    *_entries("config", "writer", "record"),
    *_entries("config", "reader", "is_recorded history get"),
    *_entries("flags", "writer", "set rollout kill delete"),
    *_entries("flags", "reader", "stored store_version history environments"),
    *_entries("datasets", "writer", "register"),
    *_entries("datasets", "reader", "versions"),
    *_entries("abtests", "writer", "create start stop write_batch"),
    *_entries("abtests", "reader", "get list_experiments history resolve exposure counts outcomes analyze"),
)

# Arguments naming files or folders: on a server they would be the server's. The remote sdk
# reads local files itself and sends their content (see keel.sdk.remote).
_NO_FILES: dict[tuple[str, str], tuple[str, ...]] = {
    ("kb", "add_documents"): ("base",),
    ("flags", "set"): ("path",),
}

_SERVICES = (
    "tracking", "prompts", "models", "kb", "conversations", "llm", "config", "flags", "abtests", "datasets",
)
_WHO = ("who", "author")  # arguments that name the person acting: always the caller


def _nothing(_result: Any) -> tuple[list[Any], None]:
    """The empty search page, for a caller who may read no project (the search does not run)."""
    return [], None


class RpcRequest(BaseModel):
    """The arguments of one call, in the :mod:`keel.core.wire` encoding."""

    model_config = ConfigDict(extra="forbid")
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)


def _service(context: ServerContext, name: str) -> Any:
    return getattr(context, name)


def _bind(function: Callable[..., Any], entry: Entry, args: list[Any], kwargs: dict[str, Any]) -> Any:
    try:
        return inspect.signature(function).bind(*args, **kwargs)
    except TypeError as exc:
        raise InvalidInput(f"{entry.service}.{entry.method}: {exc}", "check the arguments") from None


def _check_no_files(entry: Entry, arguments: dict[str, Any]) -> None:
    """Refuse file paths a call would read on the server (only document content may travel)."""
    for name in _NO_FILES.get((entry.service, entry.method), ()):
        if arguments.get(name) is not None:
            raise InvalidInput(
                f"{entry.service}.{entry.method} cannot take {name}= on a keel server (it names a local file)",
                "the keel sdk reads the file on your machine and sends its content",
            )
    if (entry.service, entry.method) == ("kb", "add_documents"):
        items = arguments.get("items")
        documents = items if isinstance(items, list | tuple) else [items]
        if not all(isinstance(item, dict) for item in documents):
            raise InvalidInput(
                "kb.add_documents on a keel server takes {'text', 'metadata', 'source'} dicts, not file paths",
                "the keel sdk reads files on your machine and sends their text",
            )


def _check_linked_run(context: ServerContext, caller: Principal, entry: Entry, arguments: dict[str, Any]) -> None:
    """A model version linked to a run, or looked up by run, needs the reader role on the run's project too."""
    if entry.service != "models" or entry.method not in ("register", "versions_of_run"):
        return
    run_id = arguments.get("run_id")
    source = arguments.get("source")
    if run_id is None and isinstance(source, str) and source.startswith("runs:/"):
        run_id = source[len("runs:/") :].strip("/").partition("/")[0]
    if isinstance(run_id, str) and run_id:
        require(caller, context.tracking.get_run(run_id).project, "reader")


def _check_scope(
    context: ServerContext, caller: Principal, entry: Entry, arguments: dict[str, Any]
) -> Callable[[Any], Any] | None:
    """Check the caller's role on what the call acts on; a filter for the result, if it needs one.

    Only ids are read here: a refused call has written nothing.
    """
    kind, _, param = entry.scope.partition(":")
    value = arguments.get(param) if param else None
    if kind == "registries":
        require(caller, REGISTRIES, entry.role)
    elif kind == "run":
        if not isinstance(value, str):
            raise InvalidInput(f"{entry.method} needs a run id", "pass the run id as a string")
        require(caller, context.tracking.get_run(value).project, entry.role)
    elif kind == "runs":
        ids = [value] if isinstance(value, str) else list(value or [])
        for run_id in ids:
            if not isinstance(run_id, str):
                raise InvalidInput(f"{entry.method} takes run ids", "pass strings")
            require(caller, context.tracking.get_run(run_id).project, entry.role)
    elif kind == "project":
        require(caller, value if isinstance(value, str) and value else "default", entry.role)
    elif kind == "projects":
        names = [value] if isinstance(value, str) else value
        if names:
            for name in names:
                require(caller, str(name), entry.role)
        else:
            readable = caller.readable()
            if readable is not None:
                existing = {p.name for p, _count in context.tracking.list_projects()}
                names = [n for n in readable if n in existing]
                if not names:
                    return _nothing
                arguments[param] = names
    elif kind == "batch":
        _check_batch(context, caller, entry, value)
    elif kind == "readable":
        return _readable_filter(context, caller)
    else:  # pragma: no cover - the table is fixed
        raise AssertionError(entry.scope)
    return None


def _check_batch(context: ServerContext, caller: Principal, entry: Entry, batch: Any) -> None:
    if not isinstance(batch, WriteBatch):
        raise InvalidInput("write_batch takes a WriteBatch", "send the sdk's batch")
    created = set()
    for row in batch.new_runs:
        require(caller, str(row[1]), entry.role)
        created.add(row[0])
        if row[4] is not None and row[4] not in created:
            require(caller, context.tracking.get_run(str(row[4])).project, "reader")
    existing = sorted(batch.run_ids() - created)
    if existing:
        found = {r.run_id: r.project for r in context.tracking.repo.get_runs(existing)}
        for run_id in existing:
            project = found.get(run_id)
            if project is None:
                raise NotFound(f"no run {run_id!r}", "start the run first")
            require(caller, project, entry.role)


def _readable_filter(context: ServerContext, caller: Principal) -> Callable[[Any], Any] | None:
    readable = caller.readable()
    if readable is None:
        return None
    allowed = set(readable)

    def keep(result: Any) -> Any:
        if isinstance(result, list) and result and isinstance(result[0], str):  # run ids
            records = context.tracking.repo.get_runs(result)
            return [r.run_id for r in records if r.project in allowed]
        return [item for item in result if item[0].name in allowed]  # (Project, count) pairs

    return keep


def _endpoint(entry: Entry) -> Callable[..., dict[str, Any]]:
    codec = wire_codec()

    def call(body: RpcRequest, caller: Caller, context: Context) -> dict[str, Any]:
        function = getattr(_service(context, entry.service), entry.method)
        args = codec.decode(body.args)
        kwargs = codec.decode(body.kwargs)
        bound = _bind(function, entry, args, kwargs)
        for name in _WHO:
            if name in bound.signature.parameters:
                bound.arguments[name] = caller.name
        _check_no_files(entry, bound.arguments)
        keep = _check_scope(context, caller, entry, bound.arguments)
        _check_linked_run(context, caller, entry, bound.arguments)
        result = None if keep is _nothing else function(*bound.args, **bound.kwargs)
        if keep is not None:
            result = keep(result)
        return {"result": codec.encode(result)}

    call.__name__ = f"svc_{entry.service}_{entry.method}"
    call.__doc__ = f"Call ``{entry.service}.{entry.method}`` (role: {entry.role} on {entry.scope})."
    return call


for _entry in TABLE:
    router.add_api_route(
        f"/svc/{_entry.service}/{_entry.method}",
        _endpoint(_entry),
        methods=["POST"],
        summary=f"{_entry.service}.{_entry.method} ({_entry.role})",
        name=f"svc.{_entry.service}.{_entry.method}",
    )


@router.post("/svc/{service}/{method}", summary="Any other method: refused", include_in_schema=False)
def not_callable(service: str, method: str, caller: Caller, _body: Any = Body(default=None)) -> None:  # noqa: B008
    known = service in _SERVICES
    raise InvalidInput(
        f"{service}.{method} cannot be called on a keel server"
        if known
        else f"no service {service!r} on this keel server",
        "run it against a local workspace, or see the service API at /api/v1/docs",
    )
