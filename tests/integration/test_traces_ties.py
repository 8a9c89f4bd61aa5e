"""Traces tied to the rest of keel: ``keel.lineage.used_by`` finds the traces that used a
version (beside the runs, as before), and feedback on a trace's conversation shows on the
trace as scores with source ``conversation``, read when the trace is read."""

from __future__ import annotations

from pathlib import Path

import keel
from keel.core.traces import SpanBatch
from keel.sdk import conversations
from keel.sdk.lineage import TraceUse, UsedBy
from keel.sdk.session import get_session


def test_used_by_finds_traces_beside_runs(ws: Path) -> None:
    with keel.start_run(project="bot") as run:
        run.log_input("prompt:chat@1.3.0")
        with keel.span("turn") as turn:
            keel.traces.note("prompt", "chat", "1.3.0")
            keel.traces.note("flag", "reranker", "on")
    with keel.span("other", project="ops") as other:
        keel.traces.note("prompt", "chat", "2.0.0")
    with keel.span("plain", project="ops"):
        pass

    users = keel.lineage.used_by("prompt:chat@1.3.0")
    assert isinstance(users, UsedBy)
    assert users == [run.id] and users.runs == [run.id]  # the run ids, as before
    assert users.traces == [TraceUse("bot", turn.trace_id, turn.start_ns)]
    assert str(users.traces[0]) == f"trace:{turn.trace_id}" and users.traces[0].kind == "trace"
    assert users.to_dict()["traces"][0] == {
        "kind": "trace",
        "project": "bot",
        "trace_id": turn.trace_id,
        "start_ns": turn.start_ns,
    }
    # every version, newest first; another version or kind finds only its own
    assert [t.trace_id for t in keel.lineage.used_by("prompt:chat").traces] == [other.trace_id, turn.trace_id]
    assert [t.trace_id for t in keel.lineage.used_by("prompt:chat@2.0.0").traces] == [other.trace_id]
    assert keel.lineage.used_by("prompt:chat@2.0.0") == []
    assert [t.trace_id for t in keel.lineage.used_by("flag:reranker@on").traces] == [turn.trace_id]
    assert keel.lineage.used_by("prompt:unknown@1.0.0").traces == []
    assert keel.lineage.used_by(f"run:{run.id}").traces == []  # runs are not linked to traces by lineage
    # the service narrows to named projects
    service = get_session().traces
    assert [t["trace_id"] for t in service.used_by("prompt", "chat", None, 10, ["ops"])] == [other.trace_id]
    assert service.used_by("prompt", "chat", None, 10, []) == []


def test_conversation_feedback_lands_on_the_trace(ws: Path) -> None:
    with keel.span("turn", project="bot", conversation_id="c-42") as turn:
        pass
    with keel.span("turn", project="bot", conversation_id="c-43") as quiet:
        pass
    keel.traces.feedback(turn.trace_id, key="helpful", value=0.25, project="bot")
    keel.traces.flush()
    assert [s.source for s in keel.traces.get(turn.trace_id, project="bot").scores] == ["user"]

    conversations.log(
        conversation_id="c-42",
        messages=[{"role": "user", "content": "Where is my order?"}, {"role": "assistant", "content": "Gone."}],
        user_feedback={"score": 3},
    )
    conversations.flush()
    conversations.feedback("c-42", thumb="down", comment="wrong order", strict=True)
    conversations.feedback("c-42", score=1.5, strict=True)
    conversations.flush()

    detail = keel.traces.get(turn.trace_id, project="bot")
    assert detail.trace.conversation_id == "c-42"
    mine = [(s.key, s.value, s.label, s.comment) for s in detail.scores if s.source == "conversation"]
    assert mine == [("thumb", 0.0, "down", "wrong order"), ("score", 1.5, None, None)]
    assert [s.key for s in detail.scores if s.source == "user"] == ["helpful"]
    assert all(s.span_id is None for s in detail.scores)
    assert [s.created_at for s in detail.scores] == sorted(s.created_at for s in detail.scores)
    assert detail.to_dict()["scores"][-1]["source"] == "conversation"
    assert keel.traces.get(quiet.trace_id, project="bot").scores == []

    # Feedback logged with a record and never changed by a later event counts too.
    conversations.log(conversation_id="c-43", messages=[{"role": "user", "content": "hi"}], user_feedback="up")
    conversations.flush()
    scores = keel.traces.get(quiet.trace_id, project="bot").scores
    assert [(s.key, s.value, s.label, s.source) for s in scores] == [("thumb", 1.0, "up", "conversation")]


def test_conversation_feedback_before_the_conversation_is_stored(ws: Path) -> None:
    """Feedback that waits for its conversation's record (pending) is shown already."""
    service = get_session().traces
    start = 1_790_000_000_000_000_000
    raw = {
        "trace_id": "7" * 32,
        "span_id": "7" * 16,
        "name": "turn",
        "start_ns": start,
        "end_ns": start + 5_000_000,
        "attributes": {"session.id": "late-1"},  # OpenTelemetry's name for the conversation
    }
    service.write_batch(SpanBatch(spans=[("bot", raw)]))
    conversations.feedback("late-1", thumb="up", score=5, comment="great", strict=True)
    conversations.flush()
    scores = service.get("7" * 32, "bot").scores
    assert [(s.key, s.value, s.label, s.comment) for s in scores] == [
        ("thumb", 1.0, "up", "great"),
        ("score", 5.0, None, None),
    ]
    # the exported dataset carries the trace's own scores (conversations have their own export)
    assert service.examples("bot")[0]["metadata"]["scores"] == {}
