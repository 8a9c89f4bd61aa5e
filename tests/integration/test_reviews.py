"""Protected refs and change requests on SQLite and PostgreSQL: protect, request, approve,
apply, stale, break glass, and every path that moves a ref refused while it is protected."""

from __future__ import annotations

import json

import pytest

import keel
from keel.errors import Conflict, Forbidden, InvalidInput, NotFound
from keel.sdk import flags, reviews
from keel.sdk.session import get_session


def _prompt_versions() -> None:
    keel.prompts.register("chat", "Answer: {{q}}", version="1.0.0", changelog="first")
    keel.prompts.register("chat", "Answer briefly: {{q}}", version="1.1.0", changelog="shorter")
    keel.prompts.register("chat", "Answer in one line: {{q}}", version="1.2.0", changelog="one line")
    keel.prompts.set_alias("chat", "production", "1.0.0", reason="first", who="alice")


def _events(kind: str) -> list[dict]:
    with get_session().service.store.db.read() as conn:
        rows = conn.execute("SELECT subject, data FROM events WHERE kind = ? ORDER BY id", (kind,)).all()
    return [{"subject": json.loads(s), "data": json.loads(d or "null")} for s, d in rows]


def test_request_approve_applies_the_move_with_evidence_and_audit(ws):
    _prompt_versions()
    with keel.start_run(project="chat") as run:
        keel.log_metric("exact_match", 0.9)
    keel.flush()
    rule = reviews.protect("prompt", "chat", "production", approvals=2, who="admin")
    assert (rule.approvals, rule.self_approval) == (2, False)

    with pytest.raises(Conflict, match="protected"):
        keel.prompts.set_alias("chat", "production", "1.1.0", who="alice")
    assert keel.prompts.get("chat", "production").version == "1.0.0"

    cr = reviews.request(
        "prompt",
        "chat",
        "production",
        "1.1.0",
        reason="+5% exact match",
        runs=[run.id[:8]],
        comparison={"metric": "exact_match", "delta": 0.05},
        who="alice",
    )
    assert (cr.status, cr.from_target, cr.to_target, cr.required) == ("open", "1.0.0", "1.1.0", 2)
    assert cr.evidence == {"runs": [run.id], "comparison": {"metric": "exact_match", "delta": 0.05}}

    with pytest.raises(Forbidden, match="self-approval is off"):
        reviews.approve(cr.id, who="alice")
    one = reviews.approve(cr.id, comment="looks right", who="bob")
    assert (one.status, one.approvals) == ("open", 1)
    assert keel.prompts.get("chat", "production").version == "1.0.0"  # one of two
    with pytest.raises(Conflict, match="already reviewed"):
        reviews.approve(cr.id, who="bob")
    done = reviews.approve(cr.id, comment="ship it", who="carol")
    assert (done.status, done.approvals) == ("applied", 2)
    assert [(r.reviewer, r.verdict, r.comment) for r in done.reviews] == [
        ("bob", "approve", "looks right"),
        ("carol", "approve", "ship it"),
    ]
    assert keel.prompts.get("chat", "production").version == "1.1.0"
    move = keel.prompts.history("chat", "production")[-1]
    assert (move.old, move.new, move.who) == ("1.0.0", "1.1.0", "carol")
    assert f"change request {cr.id}" in move.reason

    steps = reviews.history(cr.id)
    assert [(s.old, s.new, s.who) for s in steps] == [
        (None, "open", "alice"),
        ("open", "open", "bob"),
        ("open", "open", "carol"),
        ("open", "applied", "carol"),
    ]
    with pytest.raises(Conflict, match="is applied"):
        reviews.approve(cr.id, who="dave")
    kinds = [e["subject"]["request"] for e in _events("review.applied")]
    assert kinds == [cr.id] and len(_events("review.opened")) == 1 and len(_events("review.approved")) == 2
    changes = reviews.changes(cr.id)
    assert "Answer briefly" in changes["diff"]["template_diff"]


def test_bad_input_leaves_nothing_half_applied(ws):
    _prompt_versions()
    reviews.protect("prompt", "chat", "production", who="admin")
    with pytest.raises(NotFound, match="no version 9.9.9"):
        reviews.request("prompt", "chat", "production", "9.9.9", reason="x", who="alice")
    with pytest.raises(InvalidInput, match="needs a reason"):
        reviews.request("prompt", "chat", "production", "1.1.0", who="alice")
    with pytest.raises(InvalidInput, match="not protected"):
        reviews.request("prompt", "chat", "staging", "1.1.0", reason="x", who="alice")
    with pytest.raises(NotFound, match="no change request 42"):
        reviews.approve(42, who="bob")
    assert reviews.list_requests() == []
    cr = reviews.request("prompt", "chat", "production", "1.1.0", reason="better", who="alice")
    rejected = reviews.reject(cr.id, comment="numbers are noise", who="bob")
    assert rejected.status == "rejected"
    with pytest.raises(Conflict, match="is rejected"):
        reviews.approve(cr.id, who="carol")
    assert keel.prompts.get("chat", "production").version == "1.0.0"
    assert [r.id for r in reviews.list_requests(status="rejected")] == [cr.id]


def test_a_ref_moved_meanwhile_makes_the_request_stale(ws):
    _prompt_versions()
    reviews.protect("prompt", "chat", "production", self_approval=True, who="admin")
    cr = reviews.request("prompt", "chat", "production", "1.1.0", reason="better", who="alice")
    reviews.break_glass("prompt", "chat", "production", "1.2.0", reason="incident 7: hotfix", who="root")
    with pytest.raises(Conflict, match="stale.*points at 1.2.0"):
        reviews.approve(cr.id, who="alice")  # self-approval on: alice may
    assert reviews.get(cr.id).status == "stale"
    assert keel.prompts.get("chat", "production").version == "1.2.0"
    forced = reviews.list_requests(status="forced")
    assert [(f.from_target, f.to_target, f.requester) for f in forced] == [("1.0.0", "1.2.0", "root")]
    move = keel.prompts.history("chat", "production")[-1]
    assert (move.who, move.reason) == ("root", "break glass: incident 7: hotfix")
    with pytest.raises(InvalidInput, match="recorded reason"):
        reviews.break_glass("prompt", "chat", "production", "1.0.0", reason=" ", who="root")


def _model_versions() -> None:
    for i in range(3):
        keel.models.register("assistant", f"s3://models/assistant-{i}", card={"eval": {"accuracy": 0.8 + i / 100}})
    keel.models.set_alias("assistant", "champion", 1)
    keel.models.transition_stage("assistant", 1, "Production")


def test_every_path_that_moves_a_protected_ref_is_refused(ws):
    """Each way keel moves an alias, a stage, a flag or an experiment, with its ref protected."""
    _prompt_versions()
    _model_versions()
    flags.set("new_ui", rollout=10, reason="canary")
    get_session().abtests.create({"name": "tone", "variants": {"a": {"config": {"t": 1}}, "b": {"config": {"t": 2}}}})
    keel.prompts.set_alias("chat", "production", "1.2.0")
    keel.prompts.set_alias("chat", "production", "1.0.0")  # so a rollback has somewhere to go
    for kind, name, ref in [
        ("prompt", "*", "production"),
        ("model", "assistant", "champion"),
        ("model", "assistant", "stage:Production"),
        ("flag", "*", "production"),
        ("abtest", "*", "start"),
    ]:
        reviews.protect(kind, name, ref, who="admin")
    session = get_session()
    models, prompts = session.models, session.prompts
    attempts = {
        "prompts.set_alias": lambda: prompts.set_alias("chat", "production", "1.1.0"),
        "prompts.delete_alias": lambda: prompts.delete_alias("chat", "production"),
        "prompts.rollback": lambda: prompts.rollback("chat", "production"),
        "models.set_alias": lambda: models.set_alias("assistant", "champion", 2),
        "models.delete_alias": lambda: models.delete_alias("assistant", "champion"),
        "models.delete_version": lambda: models.delete_version("assistant", 1),
        "models.delete_model": lambda: models.delete_model("assistant"),
        "models.transition_stage in": lambda: models.transition_stage("assistant", 2, "Production"),
        "models.transition_stage out": lambda: models.transition_stage("assistant", 1, "Archived"),
        "flags.set": lambda: flags.set("new_ui", rollout=50),
        "flags.kill": lambda: flags.kill("new_ui"),
        "flags.delete": lambda: session.flags.delete("new_ui"),
        "abtests.start": lambda: session.abtests.start("tone"),
    }
    passed = []
    for label, attempt in attempts.items():
        try:
            attempt()
        except Conflict as exc:
            assert "is protected" in str(exc), label
        else:
            passed.append(label)
    assert passed == []
    # Nothing moved, nothing half-written (no new flag-set version, the version still there).
    assert keel.prompts.get("chat", "production").version == "1.0.0"
    assert models.get("assistant", alias="champion").version == 1
    assert models.get("assistant", stage="Production").version == 1
    assert session.flags.store_version("production") == 1
    assert session.abtests.get("tone").status == "draft"
    # The other refs still move freely.
    keel.prompts.set_alias("chat", "staging", "1.2.0")
    models.transition_stage("assistant", 3, "Staging")


def test_models_flags_and_experiments_through_reviews(ws):
    _model_versions()
    flags.set("new_ui", rollout=10, reason="canary")
    session = get_session()
    session.abtests.create({"name": "tone", "variants": {"a": {"config": {"t": 1}}, "b": {"config": {"t": 2}}}})
    reviews.protect("model", "*", "stage:production", who="admin")  # stage names are normalised
    reviews.protect("model", "assistant", "champion", who="admin")
    reviews.protect("flag", "new_ui", "production", who="admin")
    reviews.protect("abtest", "tone", "start", who="admin")

    stage = reviews.request("model", "assistant", "stage:Production", "2", reason="better", who="alice")
    assert (stage.ref, stage.from_target) == ("stage:Production", "1")
    assert reviews.approve(stage.id, who="bob").status == "applied"
    assert session.models.get("assistant", version=2).stage == "Production"
    assert session.models.get("assistant", version=1).stage == "Archived"
    changes = reviews.changes(stage.id)
    assert changes["versions"]["to"]["card"] == {"eval": {"accuracy": 0.81}}

    alias = reviews.request("model", "assistant", "champion", 3, reason="newer", who="alice")
    reviews.approve(alias.id, who="bob")
    assert session.models.get("assistant", alias="champion").version == 3
    with pytest.raises(NotFound, match="no version 7"):
        reviews.request("model", "assistant", "champion", 7, reason="x", who="alice")

    flag = reviews.request("flag", "new_ui", "production", json.dumps({"rollout": 50}), reason="ramp", who="alice")
    assert reviews.changes(flag.id)["definitions"]["from"]["rollout"] == 10
    reviews.approve(flag.id, who="bob")
    assert flags.get("new_ui").rollout == 50
    assert [e.move.who for e in flags.history("new_ui")][-1] == "bob"

    start = reviews.request("abtest", "tone", "start", "running", reason="go", who="alice")
    reviews.approve(start.id, who="bob")
    assert session.abtests.get("tone").status == "running"


def test_protect_rules_are_logged_and_removable(ws):
    _prompt_versions()
    reviews.protect("prompt", "chat", "production", approvals=2, who="admin")
    reviews.protect("prompt", "chat", "production", approvals=3, self_approval=True, who="admin")
    assert [(r.name, r.ref, r.approvals, r.self_approval) for r in reviews.rules()] == [("chat", "production", 3, True)]
    reviews.unprotect("prompt", "chat", "production", reason="release done", who="admin")
    assert reviews.rules() == []
    keel.prompts.set_alias("chat", "production", "1.2.0")  # free again
    with pytest.raises(NotFound, match="is not protected"):
        reviews.unprotect("prompt", "chat", "production", who="admin")
    with pytest.raises(InvalidInput, match="kind is one of"):
        reviews.protect("dataset", "x", "production", who="admin")
    with get_session().service.store.db.read() as conn:
        from keel.meta.refs import Refs

        log = Refs.history(conn, "protection", "prompt:chat", "production")
    assert [(m.old, m.new) for m in log] == [
        (None, "approvals=2 self=no"),
        ("approvals=2 self=no", "approvals=3 self=yes"),
        ("approvals=3 self=yes", None),
    ]


def test_knowledge_base_aliases_through_reviews(ws):
    kb = keel.kb.create("faq")
    kb.add_documents([{"text": "Refunds take 5 days."}])
    kb.commit("first")
    kb.add_documents([{"text": "Shipping is free over 50 EUR."}])
    kb.commit("second")
    reviews.protect("kb", "faq", "production", who="admin")
    with pytest.raises(NotFound, match="no version 3"):
        reviews.request("kb", "faq", "production", "3", reason="x", who="alice")
    cr = reviews.request("kb", "faq", "production", "2", reason="shipping answers", who="alice")
    assert cr.from_target is None
    assert reviews.approve(cr.id, who="bob").status == "applied"
    with get_session().service.store.db.read() as conn:
        from keel.meta.refs import Refs

        assert Refs.current(conn, "kb", "faq", "production") == "2"
    second = reviews.request("kb", "faq", "production", "1", reason="back", who="alice")
    removed = reviews.changes(second.id)["diff"]["documents"]["removed"]
    assert len(removed) == 1  # going back to version 1 drops the shipping document
