"""Retention on SQLite and PostgreSQL: policies and their scopes, the lease one server process
applies them under, expiring through the erasure operations (only what is older than the
policy goes; runs, versions and newer records stay; the audit adds up), webhook pruning."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from keel.core.entities import now_ms
from keel.errors import Forbidden, InvalidInput, NotFound
from keel.meta import retention as rows
from keel.meta.auth import AuthStore
from keel.services.contract import find, invoke
from keel.services.retention import RetentionService, apply_retention, apply_with_lease
from keel.services.tracking import TrackingService
from keel.services.workspace import Store, open_store
from retention_seed import APP, OTHER, counts, keepers, retention_audit, seed

DAY_MS = 86_400_000


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Iterator[Store]:
    opened = open_store(database_url, str(tmp_path / "objects"), cached=False)
    yield opened
    opened.close()


@pytest.fixture
def service(store: Store) -> RetentionService:
    return RetentionService(store)


def test_policies_have_a_scope_per_kind(store: Store, service: RetentionService) -> None:
    TrackingService(store).create_project("chatbot")
    assert service.set(None, "conversations", "30d", who="ops")["project"] == "@registries"
    service.set("@registries", "llm_calls", "12w")
    assert service.set("chatbot", "traces", "14d")["max_age_ms"] == 14 * DAY_MS

    shown = {(p["project"], p["kind"]): p["max_age"] for p in service.show()}
    assert shown == {("@registries", "conversations"): "30d", ("@registries", "llm_calls"): "12w",
                     ("chatbot", "traces"): "2w"}  # fmt: skip
    service.set(None, "conversations", "7d")  # a change replaces the period
    assert {p["kind"]: p["max_age"] for p in service.show()}["conversations"] == "1w"

    with pytest.raises(InvalidInput, match="workspace-wide"):
        service.set("chatbot", "conversations", "30d")
    with pytest.raises(InvalidInput, match="never expire"):
        service.set("chatbot", "runs", "30d")
    with pytest.raises(InvalidInput):
        service.set("chatbot", "traces", "soon")
    with pytest.raises(NotFound):
        service.set("no-such-project", "traces", "30d")

    TrackingService(store).rename_project("chatbot", "helpdesk")  # the policy follows the project
    assert ("helpdesk", "traces") in {(p["project"], p["kind"]) for p in service.show()}
    service.set("helpdesk", "traces", None)
    with pytest.raises(NotFound):
        service.set("helpdesk", "traces", None)
    assert len(service.show()) == 2


def test_roles_on_policies(store: Store, service: RetentionService) -> None:
    TrackingService(store).create_project("chatbot")
    auth = AuthStore(store.db)
    callers = {}
    for name, scope, role in (("project_admin", "chatbot", "admin"), ("reader", "chatbot", "reader")):
        auth.create_user(name)
        auth.grant(name, scope, role, "test")
        callers[name] = auth.authenticate(auth.create_token(name, "t")[0])
    services = SimpleNamespace(retention=service)

    invoke(find("retention", "set"), services, callers["project_admin"], ["chatbot", "traces", "30d"], {})
    with pytest.raises(Forbidden):  # conversations are workspace-wide: admin on @registries
        invoke(find("retention", "set"), services, callers["project_admin"], [None, "conversations", "30d"], {})
    with pytest.raises(Forbidden):
        invoke(find("retention", "set"), services, callers["reader"], ["chatbot", "traces", "1d"], {})
    with pytest.raises(Forbidden):  # applying expires every project's records
        invoke(find("retention", "apply"), services, callers["project_admin"], [], {})
    service.set(None, "llm_calls", "30d")
    seen = invoke(find("retention", "show"), services, callers["reader"], [], {})
    assert [(p["project"], p["kind"]) for p in seen] == [("chatbot", "traces")]  # not @registries'


def test_apply_expires_only_what_is_older_than_its_policy(store: Store, service: RetentionService) -> None:
    expired = seed(store, "a", old=6, new=4)
    kept = keepers(store)
    service.set(None, "conversations", "1d")
    service.set(None, "llm_calls", "1d")
    service.set(APP, "traces", "1d")
    before = counts(store)

    plan = service.apply(dry_run=True)
    assert {r.kind: (r.matched, r.deleted, r.dry_run) for r in plan} == {
        "conversations": (6, 0, True), "llm_calls": (6, 0, True), "traces": (6, 0, True)}  # fmt: skip
    assert counts(store) == before and retention_audit(store) == {}

    reports = apply_retention(store)  # what keel gc calls

    assert {r.kind: r.deleted for r in reports} == {"conversations": 6, "llm_calls": 6, "traces": 6}
    after = counts(store)
    assert after == {
        **before,
        "conversations": before["conversations"] - expired.conversations,
        "llm_calls": before["llm_calls"] - expired.llm_calls,
        f"traces:{APP}": before[f"traces:{APP}"] - expired.traces,
    }
    assert after[f"traces:{OTHER}"] == 10  # no policy there: old and new stay
    assert after["runs"] == 2 and after["model_versions"] == 1  # runs and versions never expire
    assert TrackingService(store).get_run(kept["runs"][1]).deleted  # a deleted run stays deleted, not purged
    assert retention_audit(store) == {"conversations": 6, "llm_calls": 6, "traces": 6}
    with store.db.read() as conn:
        actors = {r[0] for r in conn.execute("SELECT actor FROM erasures WHERE reason = 'retention'").all()}
    assert actors == {"retention"}

    again = service.apply()  # nothing left to expire: nothing counted twice
    assert all(r.deleted == 0 for r in again) and retention_audit(store) == {
        "conversations": 6, "llm_calls": 6, "traces": 6}  # fmt: skip


def test_the_lease_has_one_holder_at_a_time(store: Store) -> None:
    now = now_ms()
    assert rows.take_lease(store.db, "retention", "a", now + 1000, now)
    assert not rows.take_lease(store.db, "retention", "b", now + 1000, now)
    assert rows.take_lease(store.db, "retention", "a", now + 2000, now)  # the holder extends it
    assert not rows.take_lease(store.db, "retention", "b", now + 3000, now + 1500)
    assert rows.take_lease(store.db, "retention", "b", now + 5000, now + 2001)  # run out: taken over
    rows.release_lease(store.db, "retention", "a", 0)  # not a's any more: nothing changes
    assert not rows.take_lease(store.db, "retention", "a", now + 6000, now + 2002)

    won: list[str] = []
    start = threading.Barrier(8)

    def contend(holder: str) -> None:
        start.wait()
        if rows.take_lease(store.db, "race", holder, now + 60_000, now):
            won.append(holder)

    threads = [threading.Thread(target=contend, args=(f"h{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1


def test_a_pass_without_the_lease_applies_nothing(store: Store, service: RetentionService) -> None:
    seed(store, "b", old=2, new=0)
    assert apply_with_lease(service, "me", 60_000) == []  # no policy, no old webhook row: nothing written
    with store.db.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM maintenance_leases").scalar() == 0
    service.set(None, "conversations", "1d")
    now = now_ms()
    rows.take_lease(store.db, "retention", "another process", now + 60_000, now)
    assert apply_with_lease(service, "me", 60_000) is None
    assert counts(store)["conversations"] == 2
    rows.release_lease(store.db, "retention", "another process", 0)
    assert service.run_pass(now_ms(), before_each=lambda: False) == []  # a holder that lost its lease stops
    assert counts(store)["conversations"] == 2
    reports = apply_with_lease(service, "me", 60_000)
    assert reports is not None and [r.deleted for r in reports if r.kind == "conversations"] == [2]


def test_delivered_webhook_rows_are_pruned_after_30_days(store: Store, service: RetentionService) -> None:
    old, recent = now_ms() - 40 * DAY_MS, now_ms() - DAY_MS
    with store.db.write() as conn:
        sub = conn.execute(
            "INSERT INTO hook_subscriptions (events, url, secret, created_at) VALUES ('*', 'https://x', 's', ?)"
            " RETURNING id",
            (old,),
        ).scalar_one()

        def event(at: int, status: str | None) -> int:
            eid = conn.execute(
                "INSERT INTO events (kind, subject, created_at, dispatched) VALUES ('version.created', '{}', ?, 1)"
                " RETURNING id",
                (at,),
            ).scalar_one()
            if status is not None:
                did = conn.execute(
                    "INSERT INTO hook_deliveries (subscription_id, event_id, status, attempts, next_at, created_at,"
                    " finished_at) VALUES (?, ?, ?, 1, ?, ?, ?) RETURNING id",
                    (sub, eid, status, at, at, at),
                ).scalar_one()
                conn.execute(
                    "INSERT INTO hook_attempts (delivery_id, attempt, at, duration_ms) VALUES (?, 1, ?, 1.0)", (did, at)
                )
            return int(eid)

        event(old, "delivered")  # goes, with its delivery and attempt
        event(old, None)  # dispatched to nobody: goes
        failed = event(old, "failed")  # stays: an operator looks at it
        fresh = event(recent, "delivered")  # stays: younger than 30 days

    plan = service.apply(dry_run=True)
    assert [(r.kind, r.matched, r.deleted) for r in plan] == [("webhooks", 4, 0)]  # 2 events, 1 delivery, 1 attempt
    reports = service.apply()
    assert [(r.kind, r.deleted) for r in reports] == [("webhooks", 4)]
    with store.db.read() as conn:
        assert sorted(r[0] for r in conn.execute("SELECT id FROM events").all()) == sorted([failed, fresh])
        assert conn.execute("SELECT COUNT(*) FROM hook_deliveries").scalar() == 2
        assert conn.execute("SELECT COUNT(*) FROM hook_attempts").scalar() == 2


def test_keel_gc_applies_retention_first_and_collects_what_it_orphans(
    database_url: str, store: Store, service: RetentionService, tmp_path: Path
) -> None:
    from keel.sdk.admin import gc

    expired = seed(store, "g", old=5, new=3)
    service.set(None, "conversations", "1d")
    service.set(None, "llm_calls", "1d")
    before = counts(store)

    plan = gc(database_url, str(tmp_path / "objects"), grace=0, dry_run=True)
    assert {r.kind: r.matched for r in plan.expired} == {"conversations": 5, "llm_calls": 5}
    assert counts(store) == before and retention_audit(store) == {}
    skipped = gc(database_url, str(tmp_path / "objects"), grace=0, retention=False)
    assert skipped.expired == [] and counts(store) == before

    report = gc(database_url, str(tmp_path / "objects"), grace=0)
    assert {r.kind: r.deleted for r in report.expired} == {"conversations": 5, "llm_calls": 5}
    assert report.to_dict()["expired"][0]["kind"] in {"conversations", "llm_calls"}
    after = counts(store)
    assert after["conversations"] == before["conversations"] - expired.conversations
    assert after["llm_calls"] == before["llm_calls"] - expired.llm_calls
    assert after["runs"] == before["runs"]
