"""Purge and retention through a keel server's service API, as the remote sdk calls them (the real
ASGI app in process): the reports come back whole, roles are checked on the server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from keel.core.batch import WriteBatch
from keel.core.entities import now_ms
from keel.core.erasure import ErasureReport
from keel.errors import Forbidden, NotFound
from keel.objects.http import HttpObjectStore
from keel.sdk.remote import RemoteStore, remote
from keel.server import create_app
from keel.services.auth import AuthStore
from keel.services.retention import RetentionService
from keel.services.tracking import TrackingService
from keel.transport import HttpClient
from keel.transport.asgi import ASGIAppTransport

URL = "http://testserver"


@dataclass
class Site:
    transport: ASGIAppTransport
    tokens: dict[str, str]
    local: TrackingService

    def services(self, user: str) -> tuple[TrackingService, RetentionService]:
        client = HttpClient(URL, self.tokens[user], transport=self.transport)
        store = RemoteStore(client, HttpObjectStore(URL, transport=client))
        return remote(TrackingService, store), remote(RetentionService, store)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    app = create_app(f"sqlite:///{tmp_path / 'keel.db'}", str(tmp_path / "objects"))
    auth = AuthStore(app.state.keel.store.db)
    tokens = {}
    for name, admin in (("root", True), ("writer", False)):
        auth.create_user(name, is_admin=admin)
        tokens[name], _ = auth.create_token(name, "test")
    auth.grant("writer", "alpha", "writer", "root")
    with ASGIAppTransport(app) as transport:
        yield Site(transport, tokens, app.state.keel.tracking)


def _deleted_run(tracking: TrackingService, project: str) -> str:
    run_id = tracking.start_run(project=project).run_id
    oid = tracking.store_bytes(f"artifact of {run_id}".encode())
    tracking.write_batch(
        WriteBatch(
            artifacts=[(run_id, "a.txt", oid, 10, "file", now_ms())], run_ends=[(run_id, "finished", now_ms(), None)]
        )
    )
    tracking.delete_run(run_id)
    return run_id


def test_purge_and_retention_over_the_service_api(site: Site) -> None:
    alpha, beta = _deleted_run(site.local, "alpha"), _deleted_run(site.local, "beta")
    tracking, retention = site.services("writer")

    with pytest.raises(NotFound):  # beta is hidden from this writer: as an unknown run
        tracking.purge_runs(run_ids=[beta])
    with pytest.raises(Forbidden):  # every project
        tracking.purge_runs()
    report = tracking.purge_runs(run_ids=[alpha[:8]])
    assert isinstance(report, ErasureReport) and (report.matched, report.deleted, report.objects_removed) == (1, 1, 1)
    with pytest.raises(Forbidden):
        retention.set(None, "conversations", "30d")
    with pytest.raises(Forbidden):
        retention.apply()

    root_tracking, root_retention = site.services("root")
    assert root_retention.set(None, "conversations", "30d")["max_age"] == "30d"  # type: ignore[index]
    assert [p["kind"] for p in root_retention.show()] == ["conversations"]
    assert retention.show() == []  # the writer may not read @registries
    applied = root_retention.apply(dry_run=True)
    assert [(r.kind, r.matched, r.dry_run) for r in applied] == [("conversations", 0, True)]
    everything = root_tracking.purge_runs()
    assert (everything.matched, everything.deleted) == (1, 1)
    with pytest.raises(NotFound):
        site.local.get_run(beta)
