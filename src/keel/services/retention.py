"""Retention: how long conversations, recorded LLM calls and traces are kept, and applying it.

A policy is a maximum age per kind and scope. Traces belong to a project, so their policy is
set per project. Conversations and recorded LLM calls are workspace-wide in keel (they carry
no project), so their policy has one scope, ``@registries`` (the scope their roles are
granted on): one period for the whole workspace. Runs, versions, aliases and the reflog never
expire (:mod:`keel.core.retention`); deleted runs go when someone purges them
(:meth:`keel.services.tracking.TrackingService.purge_runs`).

:meth:`RetentionService.apply` runs every policy through the erasure operations with
``until=<now - max age>``, ``all=True``, ``reason="retention"`` and ``who="retention"``, so an
expiry is erased exactly as a person's request is (rows, content objects, an ``erasures``
audit row, the database scrubbed), and prunes delivered webhook rows older than
:data:`WEBHOOK_HORIZON_MS`. The team server applies it on a schedule in its own processes
(:mod:`keel.server.app`), one at a time through the ``retention`` lease
(:func:`keel.meta.retention.take_lease`); locally ``keel gc`` applies it
(:func:`apply_retention`).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

from keel.core.auth import REGISTRIES, WORKSPACE, Principal
from keel.core.entities import now_ms
from keel.core.erasure import ErasureReport
from keel.core.names import check_name
from keel.core.retention import REGISTRIES_SCOPE, WORKSPACE_KINDS, check_kind, format_age, parse_age
from keel.errors import InvalidInput, NotFound
from keel.meta import retention as rows
from keel.services.audit import who as audit_who
from keel.services.auth import require
from keel.services.contract import READABLE, operation, service
from keel.services.workspace import Store

__all__ = [
    "ENV_INTERVAL",
    "ENV_LEASE",
    "LEASE",
    "WEBHOOK_HORIZON_MS",
    "RetentionService",
    "apply_retention",
    "apply_with_lease",
    "holder_id",
]

LEASE = "retention"
ENV_INTERVAL = "KEEL_RETENTION_INTERVAL"  # seconds between a server's passes (default 3600; 0: never)
ENV_LEASE = "KEEL_RETENTION_LEASE"  # seconds a pass's lease lasts (default 600): a dead holder's is taken after it
#: Delivered webhook deliveries, their attempts and dispatched events are kept this long.
WEBHOOK_HORIZON_MS = 30 * 86_400_000
ACTOR = "retention"
log = logging.getLogger("keel.retention")


def _scope(kind: Any, project: Any) -> str:
    """The scope a policy of ``kind`` is kept on: ``@registries`` for the workspace-wide
    kinds, else the project (``default`` when none is given)."""
    if kind in WORKSPACE_KINDS:
        return REGISTRIES
    return project if isinstance(project, str) and project else "default"


def policy_scope(_services: Any, caller: Principal, arguments: dict[str, Any]) -> None:
    """``set``: the admin role on the policy's scope (``@registries`` or the project)."""
    require(caller, _scope(arguments.get("kind"), arguments.get("project")), "admin")


def workspace_admin(_services: Any, caller: Principal, _arguments: dict[str, Any]) -> None:
    """``apply``: it expires records of every project, so the admin role on every project."""
    require(caller, WORKSPACE, "admin")


def readable_policies(_services: Any, caller: Principal, result: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``show`` narrowed to the scopes ``caller`` may read."""
    return [p for p in result if caller.rank(p["project"]) > 0]


@service("retention")
class RetentionService:
    """Retention policies (set, show) and applying them."""

    def __init__(self, store: Store, tracking: Any = None) -> None:
        self.store = store
        self._tracking = tracking

    @operation("admin", READABLE, check=policy_scope)
    def set(self, project: str | None, kind: str, max_age: str | None, who: str = "") -> dict[str, Any] | None:
        """Keep records of ``kind`` (``conversations``, ``llm_calls``, ``traces``) at most
        ``max_age`` (``30d``, ``12w``, ``24h``); None removes the policy (kept forever).

        Traces: per project (``default`` when None). Conversations and recorded calls are
        workspace-wide: their scope is ``@registries`` (a project name is refused). Returns
        the policy as stored (None when removed)."""
        kind = check_kind(kind)
        if kind in WORKSPACE_KINDS:
            if project not in (None, "", REGISTRIES_SCOPE):
                raise InvalidInput(
                    f"{kind} are workspace-wide in keel (they have no project): their retention is one period "
                    "for the workspace",
                    f"leave out the project: keel retention set --kind {kind} --max-age 30d",
                )
            scope = REGISTRIES_SCOPE
        else:
            scope = check_name(project or "default", "project name")
            if max_age is not None and scope != "default":  # default exists before its first run
                self.store.tracking.project_ids([scope])  # NotFound for a project that does not exist
        if max_age is None:
            if not rows.remove_policy(self.store.db, scope, kind):
                raise NotFound(f"no retention policy for {kind} in {scope}", "see them with 'keel retention show'")
            return None
        max_age_ms = parse_age(max_age, "max age")
        at = now_ms()
        rows.set_policy(self.store.db, scope, kind, max_age_ms, audit_who(who), at)
        return self._shown(rows.Policy(scope, kind, max_age_ms, audit_who(who), at))

    @operation("reader", READABLE, filter=readable_policies)
    def show(self) -> list[dict[str, Any]]:
        """Every policy: ``{"project", "kind", "max_age", "max_age_ms", "updated_by", "updated_at"}``."""
        return [self._shown(p) for p in rows.policies(self.store.db)]

    @staticmethod
    def _shown(policy: rows.Policy) -> dict[str, Any]:
        return {**policy.to_dict(), "max_age": format_age(policy.max_age_ms)}

    @operation("admin", READABLE, check=workspace_admin)
    def apply(self, now: int | None = None, dry_run: bool = False) -> list[ErasureReport]:
        """Erase every record older than its policy allows (``now``: epoch ms, default the
        clock), and prune delivered webhook rows older than 30 days; a report per policy
        applied (and one of kind ``webhooks`` when any went; not audited: they hold no one's
        content). ``dry_run`` counts and changes nothing."""
        if now is not None and (isinstance(now, bool) or not isinstance(now, int) or now <= 0):
            raise InvalidInput(f"invalid now {now!r}", "give epoch milliseconds, or leave it out")
        return self.run_pass(now if now is not None else now_ms(), dry_run)

    def run_pass(
        self, clock: int, dry_run: bool = False, before_each: Callable[[], bool] | None = None
    ) -> list[ErasureReport]:
        """:meth:`apply` at ``clock``; ``before_each()`` is asked before each step (the scheduled
        pass extends its lease there): False stops the pass, with the reports of the steps done."""
        reports: list[ErasureReport] = []
        for policy in rows.policies(self.store.db):
            cutoff = clock - policy.max_age_ms
            if cutoff <= 0:
                continue
            if before_each is not None and not before_each():
                return reports
            reports.append(self._expire(policy, cutoff, dry_run))
        if before_each is not None and not before_each():
            return reports
        pruned = rows.prune_webhooks(self.store.db, clock - WEBHOOK_HORIZON_MS, dry_run)
        total = sum(pruned.values())
        if total:
            done = 0 if dry_run else total
            reports.append(ErasureReport("webhooks", total, done, dry_run=dry_run))
        return reports

    def _expire(self, policy: rows.Policy, cutoff: int, dry_run: bool) -> ErasureReport:
        common: dict[str, Any] = {"until": cutoff, "all": True, "dry_run": dry_run, "who": ACTOR}
        if policy.kind == "conversations":
            return self._service("conversations").delete(**common, reason="retention")  # type: ignore[no-any-return]
        if policy.kind == "llm_calls":
            return self._service("llm").delete_calls(**common, reason="retention")  # type: ignore[no-any-return]
        if self.store.tracking.run_count(policy.project) is None:  # its project was deleted: nothing to keep
            return ErasureReport("traces", 0, 0, dry_run=dry_run)
        return self._service("traces").delete(project=policy.project, **common, reason="retention")  # type: ignore[no-any-return]

    def _service(self, name: str) -> Any:
        """The erasing service ``name``, built on first use."""
        found = self.__dict__.get(f"_{name}")
        if found is not None:
            return found
        if name == "conversations":
            from keel.services.conversations import ConversationService

            found = ConversationService(self.store)
        elif name == "llm":
            from keel.services.llm import LlmService
            from keel.services.tracking import TrackingService

            self._tracking = self._tracking or TrackingService(self.store)
            found = LlmService(self.store, self._tracking)
        else:
            from keel.services.traces import TraceService

            found = TraceService(self.store)
        self.__dict__[f"_{name}"] = found
        return found


def apply_retention(store: Store, dry_run: bool = False, now: int | None = None) -> list[ErasureReport]:
    """Apply the store's retention policies once (what ``keel gc`` does locally): the reports
    of :meth:`RetentionService.apply`."""
    return RetentionService(store).apply(now=now, dry_run=dry_run)


def holder_id() -> str:
    """A name for this process as a lease holder: host, pid and a random part."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def apply_with_lease(service: RetentionService, holder: str, lease_ms: int) -> list[ErasureReport] | None:
    """One scheduled pass: take (or extend) the ``retention`` lease for ``lease_ms`` and apply;
    None when another process holds it (it applies retention; this one waits for the next pass).

    The holder keeps the lease while it lives (it extends it each pass, and before each policy
    of a pass), so passes stay in one process; one that dies is replaced once its lease has run
    out. A holder that finds its lease taken (it stalled past it) stops its pass there."""

    if not rows.has_work(service.store.db, now_ms() - WEBHOOK_HORIZON_MS):
        return []  # nothing to apply: no lease taken, nothing written

    def extend() -> bool:  # before each step: a pass longer than the lease never overlaps another's
        now = now_ms()
        return rows.take_lease(service.store.db, LEASE, holder, now + lease_ms, now)

    if not extend():
        return None
    return service.run_pass(now_ms(), before_each=extend)
