"""What every request handler reaches: the store, the services over it, and auth.

One :class:`ServerContext` per process, built by :func:`keel.server.app.create_app`.
It holds only connections (a pool per database, one object-store client); every
fact lives in the database or the bucket, so any process can answer any request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request

from keel.server.auth_store import AuthStore
from keel.services.models import ModelService
from keel.services.prompts import PromptService
from keel.services.tracking import TrackingService
from keel.services.workspace import Store

__all__ = ["DEFAULT_MAX_UPLOAD", "ServerContext", "server_context"]

DEFAULT_MAX_UPLOAD = 5 << 30  # bytes in one artifact upload (5 GiB); larger: 413


@dataclass
class ServerContext:
    """The services of one open store, shared by the handlers of one process."""

    store: Store
    tmp_dir: Path
    max_upload: int = DEFAULT_MAX_UPLOAD
    tracking: TrackingService = field(init=False)
    prompts: PromptService = field(init=False)
    models: ModelService = field(init=False)
    auth: AuthStore = field(init=False)

    def __post_init__(self) -> None:
        self.tracking = TrackingService(self.store)
        self.prompts = PromptService(self.store)
        self.models = ModelService(self.store, self.tracking)
        self.auth = AuthStore(self.store.db)


def server_context(request: Request) -> ServerContext:
    """FastAPI dependency: the process's :class:`ServerContext`."""
    context: ServerContext = request.app.state.keel
    return context
