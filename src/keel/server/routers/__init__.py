"""One router per domain, each mounted under ``/api/v1``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.datastructures import DefaultPlaceholder

__all__ = ["Router", "operate"]


class Router(APIRouter):
    """An APIRouter whose routes do not turn their return annotation into a response model.

    Handlers return plain dicts and lists built by the services' ``to_dict``; validating
    them again would cost time on every large page, and pydantic would write NaN and
    infinite metric values as ``null``. The response class (``KeelJSONResponse``) keeps them.
    """

    def add_api_route(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if isinstance(kwargs.get("response_model"), DefaultPlaceholder):
            kwargs["response_model"] = None
        super().add_api_route(path, endpoint, **kwargs)


def operate(context: Any, caller: Any, service: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call the declared operation ``service.name`` for ``caller``: a REST route that mirrors an
    operation goes through its declaration (checks, authorization) like the service RPC does."""
    from keel.services.contract import find, invoke

    return invoke(find(service, name), context, caller, list(args), kwargs)
