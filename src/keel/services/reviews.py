"""Protected refs and change requests: moving ``production`` only through an approved review.

A team protects a ref (:meth:`ReviewService.protect`): a prompt's or a model's alias, a
model stage (``stage:Production``), a knowledge-base alias, a flag environment
(``production``) or the start of A/B experiments (``start``), for one registry entry or
every entry of the registry (name ``*``), with the number of approvals a move needs and
whether the requester's own approval counts. From then on every move of that ref, by any
path (the CLI, the sdk, REST, MLflow's API, the UI, an importer), is refused by the guard
in the reflog writers (:mod:`keel.meta.protection`) unless it comes from here:

- :meth:`~ReviewService.request` records who asks to move it from what to what, why, and
  the evidence (run ids, an evaluation comparison); the target must exist now;
- :meth:`~ReviewService.approve` / :meth:`~ReviewService.reject` record a reviewer's verdict
  with a comment. The approval that reaches the required count applies the move in the
  same transaction, from the target the request saw: if the ref moved meanwhile, the
  request turns ``stale`` and nothing moves;
- :meth:`~ReviewService.break_glass`: an admin moves it now, with a recorded reason.

Every step is in the reflog (see :mod:`keel.meta.reviews`) and in the event outbox
(``review.opened|approved|rejected|applied``).

Example::

    reviews.protect("prompt", "chat", "production", approvals=1)
    cr = reviews.request("prompt", "chat", "production", "1.3.0", reason="+5% exact match", runs=[run_id])
    reviews.approve(cr.id, comment="numbers check out", who="bob")   # production -> 1.3.0
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from keel.core.auth import Principal
from keel.core.flags import inherit_bucketing, parse_flag
from keel.core.refnames import check_alias, match_alias
from keel.core.semver import SemVer
from keel.errors import Conflict, Forbidden, InvalidInput, NotFound
from keel.meta.abtests import ABStore
from keel.meta.events import record_event
from keel.meta.flags import FlagStore
from keel.meta.kb import RawKB
from keel.meta.models import RawModels
from keel.meta.prompts import PromptStore
from keel.meta.protection import KINDS, Permit, permitted
from keel.meta.refs import RefMove, Refs
from keel.meta.reviews import ChangeRequestRow, ReviewStore, RuleRow
from keel.services.audit import who as audit_who
from keel.services.contract import Limits, authorize_run, operation, service
from keel.services.workspace import Store

__all__ = ["STATUSES", "ReviewService", "evidence_runs_readable"]

#: A request's states: ``open`` until applied, rejected or found stale; ``forced``: a break glass.
STATUSES = ("open", "applied", "rejected", "stale", "forced")

_LIMITS = Limits(text=200_000, items=1_000, depth=8, total=20_000)


def _check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise InvalidInput(f"cannot protect refs of {kind!r}", f"kind is one of: {', '.join(KINDS)}")
    return str(kind)


def _check_text(what: str, value: Any, example: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 255 and what != "name":
        raise InvalidInput(f"{what} must be a non-empty name", f"e.g. {example}")
    return value.strip()


def _check_ref(kind: str, ref: Any, new: bool = True) -> str:
    """A protected ref's name, normalised; ``new``: it is being protected or moved, so an alias
    must follow the one alias rule (removing an old rule accepts any name it was made with)."""
    ref = _check_text("ref", ref, "production")
    if kind == "abtest" and ref != "start":
        raise InvalidInput(f"an experiment's protected ref is 'start', not {ref!r}", "protect: abtest NAME start")
    if kind == "model" and ref.startswith("stage:"):
        from keel.services.models import normalize_stage

        ref = f"stage:{normalize_stage(ref[6:])}"
    elif new and kind in ("prompt", "model"):  # an alias: the one rule (keel.core.refnames)
        check_alias(ref, stages=kind == "model")
    return ref


def evidence_runs_readable(services: Any, caller: Principal, arguments: dict[str, Any]) -> None:
    """Contract check of :meth:`ReviewService.request`: the evidence runs must be readable by the caller."""
    runs = arguments.get("runs") or []
    if isinstance(runs, str):
        runs = [runs]
    arguments["runs"] = [authorize_run(services, caller, run_id, "reader") for run_id in runs]


def _event(conn: Any, kind: str, row: ChangeRequestRow, who: str, comment: str = "") -> None:
    subject = {"kind": row.kind, "name": row.name, "ref": row.ref, "request": row.id}
    data = {"from": row.from_target, "to": row.to_target, "who": who, "comment": comment, "status": row.status}
    record_event(conn, kind, project=None, subject=subject, data=data)


@service("reviews")
class ReviewService:
    """Protection rules and change requests of one store."""

    def __init__(self, store: Store, tracking: Any = None, abtests: Any = None) -> None:
        self.store = store
        self.db = store.db
        self._tracking = tracking
        self._abtests = abtests
        self.raw_models = RawModels(self.db)
        self.raw_kb = RawKB(self.db)

    @property
    def abtests(self) -> Any:
        """The A/B service (resolves an experiment's variants when it starts)."""
        if self._abtests is None:
            from keel.services.abtests import ABService

            self._abtests = ABService(self.store)
        return self._abtests

    # -- rules --------------------------------------------------------------------------------
    @operation("admin")
    def protect(
        self, kind: str, name: str, ref: str, approvals: int = 1, self_approval: bool = False, who: str | None = None
    ) -> RuleRow:
        """Protect ``ref`` of ``kind`` ``name`` (``*``: every entry of the registry): moving it then
        needs ``approvals`` approvals of a change request (``self_approval``: the requester's own
        counts). Protecting again changes the rule. Logged (kind ``protection``)."""
        kind = _check_kind(kind)
        name = _check_text("name", name, "chat (or * for every entry)")
        ref = _check_ref(kind, ref)
        if isinstance(approvals, bool) or not isinstance(approvals, int) or not 1 <= approvals <= 20:
            raise InvalidInput(f"approvals must be a whole number from 1 to 20, not {approvals!r}", "--approvals 2")
        author = audit_who(who)
        with self.db.write() as conn:
            ReviewStore.protect(conn, kind, name, ref, approvals, bool(self_approval), author)
            found = ReviewStore.rule(conn, kind, name, ref)
        assert found is not None
        return found

    @operation("admin")
    def unprotect(self, kind: str, name: str, ref: str, reason: str = "", who: str | None = None) -> RefMove:
        """Remove a rule (logged); NotFound if there is none. Open requests stay open."""
        kind = _check_kind(kind)
        ref = _check_ref(kind, ref, new=False)
        with self.db.write() as conn:
            move = ReviewStore.unprotect(conn, kind, name, ref, audit_who(who), reason)
        if move is None:
            raise NotFound(f"{ref!r} of {kind} {name!r} is not protected", "list the rules: keel review rules")
        return move

    @operation("reader")
    def rules(self) -> list[RuleRow]:
        """Every protection rule."""
        with self.db.read() as conn:
            return ReviewStore.rules(conn)

    # -- what a ref points at, and what may replace it ----------------------------------------
    def _current(self, conn: Any, kind: str, name: str, ref: str) -> str | None:
        """The target ``ref`` has now (the entity's lock is held by the caller when it matters)."""
        if kind == "model" and ref.startswith("stage:"):
            row = self.raw_models.in_stage(conn.cursor(), name, ref[6:])
            return None if row is None else str(row.version)
        if kind == "abtest":
            return Refs.current(conn, "experiment", name, "status")
        return Refs.current(conn, kind, name, ref)

    def _target(self, conn: Any, kind: str, name: str, ref: str, target: Any) -> str:
        """``target`` checked to exist now, in its stored spelling; NotFound / InvalidInput if not."""
        if not isinstance(target, str | int) or isinstance(target, bool) or str(target).strip() == "":
            raise InvalidInput(f"the target must be a version, not {target!r}", "e.g. 1.3.0 (prompt) or 3 (model)")
        text = str(target).strip()
        if kind == "prompt":
            try:
                version = str(SemVer.parse(text))
            except (InvalidInput, ValueError):
                raise InvalidInput(f"{text!r} is not a prompt version", f"see: keel prompts log {name}") from None
            return PromptStore.get(conn, name, version).version
        if kind in ("model", "kb"):
            if not text.isdigit():
                raise InvalidInput(f"{text!r} is not a {kind} version number", "e.g. 3")
            cur = conn.cursor()
            if kind == "model":
                if self.raw_models.version(cur, name, int(text)) is None:
                    raise NotFound(f"model {name!r} has no version {text}", f"list them with 'keel models show {name}'")
            elif self.raw_kb.version(cur, name, int(text)) is None:
                raise NotFound(f"knowledge base {name!r} has no version {text}", f"list them: keel kb log {name}")
            return str(int(text))
        if kind == "flag":
            try:
                definition = json.loads(text)
            except ValueError:
                raise InvalidInput(
                    "a flag's target is its new definition as JSON", '--to \'{"enabled": true, "rollout": 25}\''
                ) from None
            if not isinstance(definition, dict):
                raise InvalidInput("a flag's definition is a JSON object", "--to '{\"enabled\": false}'")
            return json.dumps(parse_flag(name, definition).to_data(), sort_keys=True)
        # abtest: the one move is draft -> running
        row = ABStore.get(conn, name)
        if row is None:
            raise NotFound(f"no experiment {name!r}", "list experiments with 'keel ab status'")
        if text != "running":
            raise InvalidInput(f"an experiment's start moves it to running, not {text!r}", "target: running")
        return "running"

    # -- requests ------------------------------------------------------------------------------
    @operation("writer", limits=_LIMITS, check=evidence_runs_readable)
    def request(
        self,
        kind: str,
        name: str,
        ref: str,
        target: str,
        reason: str = "",
        runs: Sequence[str] | None = None,
        comparison: Mapping[str, Any] | None = None,
        who: str | None = None,
    ) -> ChangeRequestRow:
        """Ask to move protected ``ref`` of ``kind`` ``name`` to ``target`` (a version that exists;
        a flag: its new definition as JSON; an experiment's ``start``: ``running``), with a reason
        and evidence: the ids of runs that support it and an evaluation comparison. The request
        records the target the ref has now: if it moves before the approval, the request is stale.
        """
        kind = _check_kind(kind)
        ref = _check_ref(kind, ref)
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidInput("a change request needs a reason", "--reason 'why this version is better'")
        run_ids = [runs] if isinstance(runs, str) else list(runs or [])
        if self._tracking is not None:
            run_ids = [self._tracking.repo.resolve_run_id(r) for r in run_ids]
        evidence: dict[str, Any] = {"runs": run_ids}
        if comparison is not None:
            if not isinstance(comparison, Mapping):
                raise InvalidInput("comparison must be a mapping (a comparison's JSON)", "see: keel runs compare")
            evidence["comparison"] = dict(comparison)
        author = audit_who(who)
        with self.db.write() as conn:
            if kind in ("prompt", "model") and not ref.startswith("stage:"):  # aliases ignore case
                ref = match_alias(Refs.all_for(conn, kind, name), ref) or ref
            rule = ReviewStore.matching_rule(conn, kind, name, ref)
            if rule is None:
                raise InvalidInput(
                    f"{ref!r} of {kind} {name!r} is not protected: move it directly",
                    f"or protect it first: keel review protect {kind} {name} {ref}",
                )
            wanted = self._target(conn, kind, name, ref, target)
            current = self._current(conn, kind, name, ref)
            if kind == "abtest" and current != "draft":
                raise Conflict(f"experiment {name!r} is {current}; only a draft can start", "see: keel ab status")
            if current == wanted:
                raise Conflict(f"{ref!r} of {kind} {name!r} already points at {wanted}", "nothing to review")
            request_id = ReviewStore.create(
                conn,
                kind,
                name,
                ref,
                current,
                wanted,
                author,
                reason.strip(),
                evidence,
                rule.approvals,
                rule.self_approval,
            )
            ReviewStore.log(conn, request_id, None, "open", author, f"requested: {ref} -> {wanted}: {reason.strip()}")
            row = ReviewStore.get(conn, request_id)
            assert row is not None
            _event(conn, "review.opened", row, author, reason.strip())
        return row

    @operation("reader")
    def get(self, request_id: int) -> ChangeRequestRow:
        """One change request with its reviews (NotFound if there is none)."""
        with self.db.read() as conn:
            return self._request_or_raise(conn, request_id)

    @operation("reader")
    def list_requests(
        self, status: str | None = None, kind: str | None = None, name: str | None = None, limit: int = 100
    ) -> list[ChangeRequestRow]:
        """Change requests, newest first (``status``: open, applied, rejected, stale, forced)."""
        if status is not None and status not in STATUSES:
            raise InvalidInput(f"unknown status {status!r}", f"one of: {', '.join(STATUSES)}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidInput("limit must be 1 to 1000", "--limit 50")
        with self.db.read() as conn:
            return ReviewStore.requests(conn, status, kind, name, limit)

    @operation("reader")
    def history(self, request_id: int) -> list[RefMove]:
        """Every step of a request (its reflog), oldest first."""
        with self.db.read() as conn:
            self._request_or_raise(conn, request_id)
            return ReviewStore.history(conn, request_id)

    @staticmethod
    def _request_or_raise(conn: Any, request_id: Any, lock: bool = False) -> ChangeRequestRow:
        if isinstance(request_id, bool) or not isinstance(request_id, int):
            raise InvalidInput(f"a change request id is a number, not {request_id!r}", "see: keel review list")
        row = ReviewStore.lock_request(conn, request_id) if lock else ReviewStore.get(conn, request_id)
        if row is None:
            raise NotFound(f"no change request {request_id}", "list them: keel review list")
        return row

    # -- reviews -------------------------------------------------------------------------------
    @operation("writer")
    def approve(self, request_id: int, comment: str = "", who: str | None = None) -> ChangeRequestRow:
        """Approve a request; the approval that reaches the required count applies the move in
        the same transaction. If the ref moved since the request, the request turns stale
        (recorded), nothing moves, and Conflict says so."""
        return self._review(request_id, "approve", comment, who)

    @operation("writer")
    def reject(self, request_id: int, comment: str = "", who: str | None = None) -> ChangeRequestRow:
        """Reject a request (it is closed: nothing moves)."""
        return self._review(request_id, "reject", comment, who)

    def _review(self, request_id: int, verdict: str, comment: str, who: str | None) -> ChangeRequestRow:
        reviewer = audit_who(who)
        comment = (comment or "").strip()
        stale: str | None = None
        row = self._peek(request_id)
        resolved = self._resolved_experiment(row) if verdict == "approve" else None
        with self.db.write() as conn:
            self._lock_subject(conn, row)
            row = self._request_or_raise(conn, request_id, lock=True)
            if row.status != "open":
                raise Conflict(
                    f"change request {row.id} is {row.status}: it takes no more reviews",
                    "see it: keel review show " + str(row.id),
                )
            if any(r.reviewer == reviewer for r in row.reviews):
                raise Conflict(f"{reviewer} already reviewed change request {row.id}", "one review per reviewer")
            if reviewer == row.requester and verdict == "approve" and not row.self_approval:
                raise Forbidden(
                    f"{reviewer} asked for change request {row.id} and cannot approve it (self-approval is off)",
                    "ask another reviewer: keel review approve " + str(row.id),
                )
            ReviewStore.add_review(conn, row.id, reviewer, verdict, comment)
            if verdict == "reject":
                ReviewStore.set_status(conn, row.id, "rejected")
                ReviewStore.log(conn, row.id, "open", "rejected", reviewer, f"rejected: {comment}".rstrip(": "))
                row = self._request_or_raise(conn, row.id)
                _event(conn, "review.rejected", row, reviewer, comment)
                return row
            approvals = row.approvals + 1
            ReviewStore.log(
                conn, row.id, "open", "open", reviewer, f"approved ({approvals}/{row.required}): {comment}".rstrip(": ")
            )
            _event(conn, "review.approved", self._request_or_raise(conn, row.id), reviewer, comment)
            if approvals >= row.required:
                current = self._current(conn, row.kind, row.name, row.ref)
                if current != row.from_target:
                    stale = current
                    ReviewStore.set_status(conn, row.id, "stale")
                    ReviewStore.log(
                        conn,
                        row.id,
                        "open",
                        "stale",
                        reviewer,
                        f"stale: {row.ref} points at {current}, not {row.from_target}",
                    )
                else:
                    self._apply(conn, row, reviewer, f"change request {row.id}: {row.reason}", resolved)
                    ReviewStore.set_status(conn, row.id, "applied")
                    ReviewStore.log(conn, row.id, "open", "applied", reviewer, f"applied: {row.ref} -> {row.to_target}")
                    _event(conn, "review.applied", self._request_or_raise(conn, row.id), reviewer, comment)
            row = self._request_or_raise(conn, row.id)
        if stale is not None or row.status == "stale":
            now = "is not set" if stale is None else f"points at {stale}"
            raise Conflict(
                f"change request {row.id} is stale: {row.ref!r} of {row.kind} {row.name!r} {now}, not "
                f"{row.from_target or 'unset'} as when it was asked; nothing moved",
                f"ask again from the target it has now: keel review request {row.kind} {row.name} {row.ref} "
                f"{row.to_target} --reason TEXT",
            )
        return row

    def _peek(self, request_id: int) -> ChangeRequestRow:
        with self.db.read() as conn:
            return self._request_or_raise(conn, request_id)

    def _resolved_experiment(self, row: ChangeRequestRow) -> dict[str, Any] | None:
        """An experiment's variants resolved to versions (read before the write transaction)."""
        if row.kind != "abtest":
            return None
        return dict(self.abtests.resolve(self.abtests.get(row.name)))

    @staticmethod
    def _lock_subject(conn: Any, row: ChangeRequestRow) -> None:
        """Take the lock of the entity the request moves, before reading its ref."""
        Refs.lock(conn, row.kind, row.name)
        if row.kind == "flag":
            Refs.lock(conn, "flag_set", row.ref)

    # -- moves -----------------------------------------------------------------------------
    def _apply(self, conn: Any, row: ChangeRequestRow, who: str, reason: str, resolved: dict[str, Any] | None) -> None:
        """Move the ref to ``row.to_target`` in the caller's transaction, under a permit."""
        with permitted(Permit(row.kind, row.name, row.ref, reason)):
            if row.kind == "model" and row.ref.startswith("stage:"):
                self._move_stage(conn, row.name, row.ref[6:], int(row.to_target), who, reason)
            elif row.kind == "flag":
                self._move_flag(conn, row.name, row.ref, row.to_target, row.from_target, who, reason)
            elif row.kind == "abtest":
                from keel.core.entities import now_ms

                ABStore.set_status(conn, row.name, "running", started_at=now_ms(), resolved=resolved or {})
                Refs.set(conn, "experiment", row.name, "status", "running", who, reason, expected="draft")
            else:
                Refs.set(conn, row.kind, row.name, row.ref, row.to_target, who, reason, expected=row.from_target or "")

    def _move_stage(self, conn: Any, name: str, stage: str, version: int, who: str, reason: str) -> None:
        """Move ``version`` into ``stage``; the others in it move to Archived (each logged)."""
        from keel.core.entities import now_ms

        cur = conn.cursor()
        row = self.raw_models.version(cur, name, version)
        model = self.raw_models.model(cur, name)
        if row is None or model is None:
            raise NotFound(f"model {name!r} has no version {version}", f"see: keel models show {name}")
        peers = self.raw_models.stage_peers(cur, model.id, stage, version)
        at = max(now_ms(), row.updated_at, *(updated for _, _, updated in peers))
        self.raw_models.set_stage(cur, row.id, stage, at)
        self.raw_models.log(cur, name, f"stage:{version}", row.stage, stage, who, reason, at)
        for peer_id, peer_version, _ in peers:
            self.raw_models.set_stage(cur, peer_id, "Archived", at)
            self.raw_models.log(cur, name, f"stage:{peer_version}", stage, "Archived", who, reason, at)

    @staticmethod
    def _move_flag(conn: Any, key: str, env: str, definition: str, expected: str | None, who: str, reason: str) -> None:
        """Store ``definition`` as the flag's new state in ``env`` (the next version of its flag set)."""
        version = FlagStore.latest_version(conn, env)
        stored = FlagStore.get(conn, env, version) if version else None
        flags = json.loads(stored.flags).get("flags", {}) if stored else {}
        previous = parse_flag(key, flags[key]) if isinstance(flags.get(key), dict) else None
        flags[key] = inherit_bucketing(json.loads(definition), previous)  # the running flag's units stay put
        # the move first, then the set stamped with its time: the set "as of" a time printed by the
        # flag's history is the set that move made (as keel.services.flags does)
        move = Refs.set(conn, "flag", key, env, str(version + 1), who, reason, expected=expected or "")
        FlagStore.insert(conn, env, version + 1, json.dumps({"flags": flags}, sort_keys=True), who, reason, at=move.at)

    @operation("admin")
    def break_glass(
        self, kind: str, name: str, ref: str, target: str, reason: str, who: str | None = None
    ) -> ChangeRequestRow:
        """Move a protected ref now, without approvals (the admin role; a reason is required).
        Recorded as a change request in state ``forced`` and in the reflog (``break glass: ...``)."""
        kind = _check_kind(kind)
        ref = _check_ref(kind, ref)
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidInput("break glass needs a recorded reason", "--reason 'incident 4711: roll back now'")
        author = audit_who(who)
        note = f"break glass: {reason.strip()}"
        peek = ChangeRequestRow(0, kind, name, ref, None, str(target), author, note, {}, 0, False, "forced", 0, 0)
        resolved = self._resolved_experiment(peek)
        with self.db.write() as conn:
            self._lock_subject(conn, peek)
            wanted = self._target(conn, kind, name, ref, target)
            current = self._current(conn, kind, name, ref)
            if kind == "abtest" and current != "draft":
                raise Conflict(f"experiment {name!r} is {current}; only a draft can start", "see: keel ab status")
            request_id = ReviewStore.create(
                conn, kind, name, ref, current, wanted, author, note, {}, 0, False, "forced"
            )
            row = ReviewStore.get(conn, request_id)
            assert row is not None
            self._apply(conn, row, author, note, resolved)
            ReviewStore.log(conn, request_id, None, "forced", author, f"{note}: {ref} -> {wanted}")
            _event(conn, "review.applied", row, author, note)
        return row

    # -- what changes ------------------------------------------------------------------------
    @operation("reader")
    def changes(self, request_id: int) -> dict[str, Any]:
        """What the request changes, for a reviewer: ``{"kind": ..., "from": ..., "to": ...}`` plus
        per kind a prompt's text diff, a model's version fields, a flag's definitions, a
        knowledge base's document changes."""
        row = self.get(request_id)
        out: dict[str, Any] = {"kind": row.kind, "from": row.from_target, "to": row.to_target}
        if row.kind == "prompt":
            from keel.services.prompts import PromptService

            prompts = PromptService(self.store)
            new = prompts.get(row.name, row.to_target)
            out["to_content"] = new.content.to_dict()
            if row.from_target is not None:
                out["diff"] = prompts.diff(row.name, row.from_target, row.to_target).to_dict()
        elif row.kind == "model":
            from keel.services.models import ModelService

            models = ModelService(self.store)
            out["versions"] = {
                side: models.get(row.name, version=int(value)).to_dict()
                for side, value in (("from", row.from_target), ("to", row.to_target))
                if value is not None
            }
        elif row.kind == "kb" and row.from_target is not None:
            from keel.services.kb import KBService

            out["diff"] = KBService(self.store).diff(row.name, row.from_target, row.to_target).to_dict()
        elif row.kind == "flag":
            with self.db.read() as conn:
                stored = FlagStore.get(conn, row.ref, int(row.from_target)) if row.from_target else None
            old = json.loads(stored.flags).get("flags", {}).get(row.name) if stored else None
            out["definitions"] = {"from": old, "to": json.loads(row.to_target)}
        return out
