"""``/svc/{service}/{name}``: the declared service operations, one route each.

The remote sdk (:mod:`keel.sdk.remote`) runs the same code as a local one; where
that code reaches a service operation, the call travels here as
``POST /api/v1/svc/{service}/{name}`` with ``{"args": [...], "kwargs": {...}}``
(values in the :mod:`keel.core.wire` encoding) and comes back as ``{"result": ...}``.

The routes are derived from the declarations in the service layer
(:func:`keel.services.contract.operations`): nothing here says who may call
what. :func:`keel.services.contract.invoke` checks the arguments, resolves the
scope from the stored objects and the caller's role, then calls the method.
Methods that are not declared (file exports, imports, directory scans) are not
callable: against a server the sdk runs them on the client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Body
from pydantic import BaseModel, ConfigDict, Field

from keel.errors import InvalidInput, KeelError
from keel.sdk.remote import wire_codec
from keel.server.auth import Caller, Context
from keel.server.routers import Router
from keel.services.contract import SERVICES, Operation, describe, invoke, operations

__all__ = ["router"]

router = Router(tags=["service API"])


class RpcRequest(BaseModel):
    """The arguments of one call, in the :mod:`keel.core.wire` encoding."""

    model_config = ConfigDict(extra="forbid")
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)


def _decode(codec: Any, value: Any) -> Any:
    try:
        return codec.decode(value)
    except KeelError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError, OverflowError) as exc:
        problem = type(exc).__name__
        raise InvalidInput(f"arguments that cannot be decoded ({problem})", "send the sdk's encoding") from None


def _endpoint(op: Operation) -> Callable[..., dict[str, Any]]:
    codec = wire_codec()

    def call(body: RpcRequest, caller: Caller, context: Context) -> dict[str, Any]:
        args = _decode(codec, body.args)
        kwargs = _decode(codec, body.kwargs)
        if not isinstance(args, list) or not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise InvalidInput("args must be a list and kwargs an object", "send the sdk's encoding")
        result = invoke(op, context, caller, args, kwargs)
        return {"result": codec.encode(result)}

    call.__name__ = f"svc_{op.service}_{op.name}"
    call.__doc__ = f"Call ``{op.qualname}`` ({describe(op)})."
    return call


for _op in operations():
    router.add_api_route(
        f"/svc/{_op.service}/{_op.name}",
        _endpoint(_op),
        methods=["POST"],
        summary=f"{_op.qualname} ({_op.role})",
        name=f"svc.{_op.qualname}",
    )


@router.post("/svc/{service}/{method}", summary="Any other method: refused", include_in_schema=False)
def not_callable(service: str, method: str, caller: Caller, _body: Any = Body(default=None)) -> None:  # noqa: B008
    known = service in SERVICES
    raise InvalidInput(
        f"{service[:40]}.{method[:80]} cannot be called on a keel server"
        if known
        else f"no service {service[:40]!r} on this keel server",
        "run it against a local workspace, or see the service API at /api/v1/docs",
    )
