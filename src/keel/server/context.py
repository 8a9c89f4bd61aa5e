"""What every request handler reaches: the store, the services over it, and auth.

One :class:`ServerContext` per process, built by :func:`keel.server.app.create_app`.
It holds only connections (a pool per database, one object-store client); every
fact lives in the database or the bucket, so any process can answer any request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from fastapi import Request

from keel.core.batch import WriteBatch
from keel.server.metrics import count_ingest
from keel.server.request_context import note_user
from keel.services.auth import AuthStore, Principal
from keel.services.embedders import EndpointPolicy
from keel.services.models import ModelService
from keel.services.prompts import PromptService
from keel.services.tracking import TrackingService
from keel.services.workspace import Store

__all__ = ["DEFAULT_MAX_UPLOAD", "ServerContext", "server_context"]

DEFAULT_MAX_UPLOAD = 5 << 30  # bytes in one artifact upload (5 GiB); larger: 413


class _ServerAuth(AuthStore):
    """The auth store, noting who each request authenticated as (for the access log)."""

    def authenticate(self, secret: str) -> Principal:
        principal = super().authenticate(secret)
        note_user(principal.name)
        return principal

    def session_principal(self, secret: str) -> Principal:
        principal = super().session_principal(secret)
        note_user(principal.name)
        return principal


class _ServerTracking(TrackingService):
    """The tracking service, counting the rows the server writes for clients (Prometheus)."""

    def write_batch(self, batch: WriteBatch, batch_id: str | None = None) -> None:
        super().write_batch(batch, batch_id)
        count_ingest(batch)


@dataclass
class ServerContext:
    """The services of one open store, shared by the handlers of one process.

    ``endpoints`` is the server's :class:`~keel.services.embedders.EndpointPolicy`: work
    done here for a caller (embedding a knowledge base) calls only the model-provider
    endpoints configured on the server (``OPENAI_BASE_URL``, ``KEEL_SERVER_EMBEDDER_URLS``,
    read when the context is built), never one a caller names, and never with a caller's key.
    """

    store: Store
    tmp_dir: Path
    max_upload: int = DEFAULT_MAX_UPLOAD
    endpoints: EndpointPolicy = field(default_factory=EndpointPolicy.server)
    tracking: TrackingService = field(init=False)
    prompts: PromptService = field(init=False)
    models: ModelService = field(init=False)
    auth: AuthStore = field(init=False)

    def __post_init__(self) -> None:
        self.tracking = _ServerTracking(self.store)
        self.prompts = PromptService(self.store)
        self.models = ModelService(self.store, self.tracking)
        self.auth = _ServerAuth(self.store.db)

    @cached_property
    def spool_dir(self) -> Path:
        """Where request bodies are spooled: this OS user's ``keel-server-<uid>/`` under
        ``tmp_dir`` (see :mod:`keel.services.leftovers`)."""
        from keel.services.leftovers import spool_dir

        return spool_dir(self.tmp_dir)

    # The other services are built on first use (the service API's routes reach them).
    @cached_property
    def kb(self) -> Any:
        """The knowledge-base service."""
        from keel.services.kb import KBService

        return KBService(self.store, self.endpoints)

    @cached_property
    def conversations(self) -> Any:
        """The conversation service."""
        from keel.services.conversations import ConversationService

        return ConversationService(self.store)

    @cached_property
    def llm(self) -> Any:
        """The recorded-LLM-call service."""
        from keel.services.llm import LlmService

        return LlmService(self.store, self.tracking)

    @cached_property
    def config(self) -> Any:
        """The config-snapshot service."""
        from keel.services.config import ConfigService

        return ConfigService(self.store)

    @cached_property
    def flags(self) -> Any:
        """The feature-flag service."""
        from keel.services.flags import FlagService

        return FlagService(self.store, self.prompts)

    @cached_property
    def datasets(self) -> Any:
        """Registered dataset versions (``keel data``)."""
        from keel.services.data_versions import DatasetVersionService

        return DatasetVersionService(self.store)

    @cached_property
    def abtests(self) -> Any:
        """The A/B test service."""
        from keel.services.abtests import ABService

        return ABService(self.store, self.prompts, self.models)

    @cached_property
    def reviews(self) -> Any:
        """Protected refs and change requests."""
        from keel.services.reviews import ReviewService

        return ReviewService(self.store, self.tracking, self.abtests)

    @cached_property
    def hooks(self) -> Any:
        """Webhook subscriptions and deliveries."""
        from keel.services.hooks import HookService

        return HookService(self.store)

    @cached_property
    def retention(self) -> Any:
        """Retention policies and applying them (keel.services.retention)."""
        from keel.services.retention import RetentionService

        return RetentionService(self.store, self.tracking)

    @cached_property
    def directions(self) -> Any:
        """Metric directions declared on projects (keel.services.directions)."""
        from keel.services.directions import DirectionService

        return DirectionService(self.store)

    @cached_property
    def erasures(self) -> Any:
        """The erasure audit (keel.services.erasures)."""
        from keel.services.erasures import ErasureService

        return ErasureService(self.store)

    @cached_property
    def traces(self) -> Any:
        """Traces and spans (the SDK's delivery path, OTLP and MLflow tracing)."""
        from keel.services.traces import TraceService

        return TraceService(self.store)


async def server_context(request: Request) -> ServerContext:
    """FastAPI dependency: the process's :class:`ServerContext` (async: a plain attribute read
    needs no trip to the thread pool, which every request would otherwise pay)."""
    context: ServerContext = request.app.state.keel
    return context
