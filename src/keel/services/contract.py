"""Every service operation declared once: its parameters, limits and who may call it.

A service method becomes an *operation* with :func:`operation`::

    @operation("reader", run_scope("run_id"))
    def get_run(self, run_id: str) -> RunRecord: ...

and its class is named with :func:`service`. From these declarations come,
with nothing written a second time:

- the service RPC of the team server (``POST /api/v1/svc/{service}/{name}``,
  :mod:`keel.server.routers.rpc`): one route per operation, its authorization
  check, its argument checks;
- the typed remote proxy the sdk uses against a server
  (:func:`keel.sdk.remote.remote`): a subclass of the service whose operations
  travel over HTTP, so mypy checks the sdk against the services themselves;
- the security tests (``tests/server/test_contract_security.py``), generated
  from :func:`operations`, so a new operation is covered without anyone
  remembering to.

:func:`invoke` is the one door: it binds the arguments to the signature,
checks their types and sizes (:mod:`keel.core.arguments`), replaces the acting
user's name with the caller's, resolves the scope **from the stored object**
(the run's own project, never one the caller names), checks the role, and only
then calls the method. A refused call has written nothing.

Scopes (what a role is checked on):

==================  =============================================================
``REGISTRIES``      the workspace-wide registries (``@registries``)
``run_scope(p)``    the stored project of the run id in argument ``p``
``runs_scope(p)``   the stored projects of every run id in argument ``p``
``project_scope``   the project named by argument ``p`` (a new or existing name)
``projects_scope``  the projects named; none: every project the caller may read
``batch_scope(p)``  every run a tracking ``WriteBatch`` touches, new or stored
``READABLE``        any caller; the result is filtered to what it may read
==================  =============================================================

"Exists but hidden" and "does not exist" are the same answer: a run in a
project the caller cannot read raises exactly the NotFound of an unknown id.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from keel.core.arguments import check_value
from keel.core.auth import REGISTRIES as REGISTRIES_SCOPE
from keel.core.auth import Principal
from keel.core.entities import RunRecord, run_not_found
from keel.errors import InvalidInput

__all__ = [
    "READABLE",
    "REGISTRIES",
    "SERVICES",
    "Limits",
    "Operation",
    "Scope",
    "authorize_run",
    "authorized_run",
    "batch_scope",
    "invoke",
    "operation",
    "find",
    "operations",
    "project_scope",
    "projects_scope",
    "run_scope",
    "runs_scope",
    "service",
    "service_operations",
]

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)

# The services a server offers, by RPC name: "module:Class". Importing them registers their operations.
SERVICES: dict[str, str] = {
    "tracking": "keel.services.tracking:TrackingService",
    "prompts": "keel.services.prompts:PromptService",
    "models": "keel.services.models:ModelService",
    "kb": "keel.services.kb:KBService",
    "conversations": "keel.services.conversations:ConversationService",
    "llm": "keel.services.llm:LlmService",
    "config": "keel.services.config:ConfigService",
    "flags": "keel.services.flags:FlagService",
    "abtests": "keel.services.abtests:ABService",
    "datasets": "keel.services.data_versions:DatasetVersionService",
    "traces": "keel.services.traces:TraceService",
    "hooks": "keel.services.hooks:HookService",
    "reviews": "keel.services.reviews:ReviewService",
    "directions": "keel.services.directions:DirectionService",
    "erasures": "keel.services.erasures:ErasureService",
    "retention": "keel.services.retention:RetentionService",
}

# Arguments that name the person acting: on a server always the authenticated caller.
ACTOR_PARAMS = ("who", "author")


@dataclass(frozen=True)
class Scope:
    """What an operation's role is checked on (see the module docstring)."""

    kind: str
    param: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.param}" if self.param else self.kind


REGISTRIES = Scope("registries")
READABLE = Scope("readable")


def run_scope(param: str = "run_id") -> Scope:
    """The stored project of the run id (or unique prefix) in argument ``param``."""
    return Scope("run", param)


def runs_scope(param: str = "run_ids") -> Scope:
    """The stored projects of every run id in argument ``param``."""
    return Scope("runs", param)


def project_scope(param: str = "project") -> Scope:
    """The project named by argument ``param`` (``default`` when None)."""
    return Scope("project", param)


def projects_scope(param: str = "projects") -> Scope:
    """The projects named by argument ``param``; None: every project the caller may read."""
    return Scope("projects", param)


def batch_scope(param: str = "batch") -> Scope:
    """Every run a tracking write batch creates or touches (see :func:`keel.services.tracking.authorize_batch`)."""
    return Scope("batch", param)


@dataclass(frozen=True)
class Limits:
    """Bounds on an operation's arguments, checked before anything runs.

    Args:
        text: longest string anywhere in the arguments (characters).
        items: most items in any one list, tuple or dict.
        depth: deepest nesting of lists/dicts/dataclasses.
        total: most values in all arguments together.
    """

    text: int = 1 << 20
    items: int = 100_000
    depth: int = 32
    total: int = 2_000_000


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Operation:
    """One declared service operation.

    Attributes:
        service: the RPC name of its service (``tracking``, ``prompts``, ...).
        name: the method name.
        role: ``reader``, ``writer`` or ``admin``.
        scope: what the role is checked on.
        limits: bounds on the arguments.
        local_only: arguments that name files on the caller's machine; refused on a server
            (the remote sdk reads the file and sends its content).
        check: extra authorization on the stored objects an argument links to
            (``check(services, caller, arguments)``), e.g. the run a model version comes from.
        filter: narrows a result to what the caller may read (``filter(services, caller, result)``).
        function: the method itself.
    """

    service: str
    name: str
    role: str
    scope: Scope
    limits: Limits = DEFAULT_LIMITS
    local_only: tuple[str, ...] = ()
    check: Callable[[Any, Principal, dict[str, Any]], None] | None = None
    filter: Callable[[Any, Principal, Any], Any] | None = None
    function: Callable[..., Any] = field(default=lambda: None, compare=False, repr=False)

    @property
    def qualname(self) -> str:
        """``service.name``, as the RPC names it."""
        return f"{self.service}.{self.name}"

    @functools.cached_property
    def signature(self) -> inspect.Signature:
        """The method's signature (with ``self``)."""
        return inspect.signature(self.function)

    @functools.cached_property
    def hints(self) -> dict[str, Any]:
        """The parameters' resolved type hints (those that resolve at run time)."""
        try:
            return typing.get_type_hints(self.function)
        except Exception:  # noqa: BLE001 - a hint naming a TYPE_CHECKING-only type: check sizes only
            return {}


_PENDING = "__keel_operation__"


def operation(
    role: str,
    scope: Scope = REGISTRIES,
    *,
    limits: Limits = DEFAULT_LIMITS,
    local_only: tuple[str, ...] = (),
    check: Callable[[Any, Principal, dict[str, Any]], None] | None = None,
    filter: Callable[[Any, Principal, Any], Any] | None = None,  # noqa: A002 - the declaration's word
) -> Callable[[F], F]:
    """Declare a service method as an operation (see the module docstring). The method is unchanged."""
    if role not in ("reader", "writer", "admin"):
        raise ValueError(f"unknown role {role!r}")

    def mark(function: F) -> F:
        setattr(function, _PENDING, (role, scope, limits, local_only, check, filter))
        return function

    return mark


_BY_SERVICE: dict[str, dict[str, Operation]] = {}


def service(name: str) -> Callable[[C], C]:
    """Name a service class for the RPC and collect its declared operations (inherited ones too)."""

    def collect(cls: C) -> C:
        found: dict[str, Operation] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                pending = getattr(value, _PENDING, None)
                if pending is None:
                    continue
                role, scope, limits, local_only, check, result_filter = pending
                op = Operation(name, attr, role, scope, limits, local_only, check, result_filter, value)
                if scope.param and scope.param not in op.signature.parameters:
                    raise TypeError(f"{op.qualname}: scope names unknown parameter {scope.param!r}")
                found[attr] = op
        cls.__keel_service__ = name  # type: ignore[attr-defined]
        cls.__keel_operations__ = found  # type: ignore[attr-defined]
        _BY_SERVICE[name] = found
        return cls

    return collect


def service_operations(cls: type) -> dict[str, Operation]:
    """The operations declared on a service class (empty for an undeclared class)."""
    found: dict[str, Operation] = getattr(cls, "__keel_operations__", {})
    return found


@functools.cache
def _load_services() -> None:
    for target in SERVICES.values():
        module, _, _name = target.partition(":")
        importlib.import_module(module)


def operations() -> list[Operation]:
    """Every declared operation of every service in :data:`SERVICES`, in a stable order."""
    _load_services()
    return [op for name in SERVICES for op in _BY_SERVICE.get(name, {}).values()]


def find(service_name: str, name: str) -> Operation:
    """The declared operation ``service_name.name`` (LookupError if there is none: a programming error)."""
    _load_services()
    found = _BY_SERVICE.get(service_name, {}).get(name)
    if found is None:
        raise LookupError(f"{service_name}.{name} is not a declared operation")
    return found


# -- the one door ---------------------------------------------------------------------------------
def bind(op: Operation, args: list[Any], kwargs: dict[str, Any]) -> inspect.BoundArguments:
    """Bind caller arguments to the method's signature (without ``self``); check types and sizes."""
    parameters = list(op.signature.parameters.values())[1:]
    try:
        bound = op.signature.replace(parameters=parameters).bind(*args, **kwargs)
    except TypeError as exc:
        raise InvalidInput(f"{op.qualname}: {exc}", "check the arguments against the service API") from None
    budget = [op.limits.total]
    hints = op.hints
    for name, value in bound.arguments.items():
        check_value(
            value,
            hints.get(name, Any),
            f"{op.qualname}({name}=...)",
            text=op.limits.text,
            items=op.limits.items,
            depth=op.limits.depth,
            budget=budget,
        )
    return bound


def invoke(op: Operation, services: Any, caller: Principal, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Call ``op`` for ``caller``: bind and check the arguments, authorize, then run.

    ``services`` has one attribute per service name (``services.tracking``, ...), as the
    server's context does. Raises the KeelError of the first failed check; nothing is
    written before every check has passed.
    """
    bound = bind(op, args, kwargs)
    arguments = bound.arguments
    for name in ACTOR_PARAMS:
        if name in op.signature.parameters:
            arguments[name] = caller.name
    for name in op.local_only:
        if arguments.get(name) is not None:
            raise InvalidInput(
                f"{op.qualname} cannot take {name}= on a keel server (it names a file on your machine)",
                "the keel sdk reads the file on your machine and sends its content",
            )
    empty = authorize(op, services, caller, arguments)
    if op.check is not None:
        op.check(services, caller, arguments)
    if empty:
        result: Any = [] if op.name != "search_runs" else ([], None)
    else:
        target = getattr(services, op.service)
        result = getattr(target, op.name)(*bound.args, **bound.kwargs)
    if op.filter is not None:
        result = op.filter(services, caller, result)
    return result


def authorize(op: Operation, services: Any, caller: Principal, arguments: dict[str, Any]) -> bool:
    """Check ``caller``'s role on what ``op`` acts on, resolved from stored objects.

    Run ids are replaced by the full ids they resolved to, within the projects the
    caller may read, so the call itself never looks beyond them. True when the
    caller may read nothing the call could return (the call is skipped).
    """
    from keel.services.auth import require

    kind, param = op.scope.kind, op.scope.param
    value = arguments.get(param) if param else None
    if kind == "registries":
        require(caller, REGISTRIES_SCOPE, op.role)
    elif kind == "run":
        arguments[param] = authorize_run(services, caller, value, op.role)
    elif kind == "runs":
        ids = [value] if isinstance(value, str) else list(value or [])
        arguments[param] = [authorize_run(services, caller, run_id, op.role) for run_id in ids]
    elif kind == "project":
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"{op.qualname}: {param} must be a project name", "pass a string")
        require(caller, value or "default", op.role)
    elif kind == "projects":
        names = [value] if isinstance(value, str) else value
        if names:
            for name in names:
                if not isinstance(name, str):
                    raise InvalidInput(f"{op.qualname}: {param} must be project names", "pass strings")
                require(caller, name, op.role)
        else:
            readable = caller.readable()
            if readable is not None:
                existing = {p.name for p, _count in services.tracking.list_projects()}
                names = [n for n in readable if n in existing]
                if not names:
                    return True
                arguments[param] = names
    elif kind == "batch":
        from keel.services.tracking import authorize_batch

        authorize_batch(services.tracking, caller, value, op.role)
    elif kind == "readable":
        pass
    else:  # pragma: no cover - scopes come from the constructors above
        raise AssertionError(op.scope)
    return False


def authorize_run(services: Any, caller: Principal, run_id: Any, role: str) -> str:
    """The full id of ``run_id`` if ``caller`` may act on it with ``role``; hidden runs are NotFound."""
    return authorized_run(services, caller, run_id, role).run_id


def authorized_run(services: Any, caller: Principal, run_id: Any, role: str) -> RunRecord:
    """The run ``run_id`` (id or unique prefix) if ``caller`` may act on it with ``role``.

    A prefix resolves only among the projects the caller may read, and a run in a
    project it cannot read raises exactly the NotFound of an unknown id.
    """
    from keel.services.auth import require

    if not isinstance(run_id, str):
        raise InvalidInput("a run id must be a string", "pass the run id (or a unique prefix) as text")
    repo = services.tracking.repo
    record: RunRecord = repo.get_run(repo.resolve_run_id(run_id, within=caller.readable()))
    if caller.rank(record.project) == 0:
        raise run_not_found(run_id)
    require(caller, record.project, role)
    return record


def describe(op: Operation) -> str:
    """One line for the API reference: ``role on scope``."""
    return f"{op.role} on {op.scope}"
