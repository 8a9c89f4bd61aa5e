"""keel.trace / keel.span on a real store: nesting across functions, generators, async tasks
and threads, errors, sampling, redaction, ties to runs and conversations, feedback, export."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

import keel
from keel.errors import InvalidInput
from keel.sdk import traces


@pytest.fixture(autouse=True)
def _fresh_settings(ws: Path):
    traces.configure(sample=1.0, max_payload_bytes=1 << 20)
    traces.set_redactor(None)
    traces.reset_counters()
    yield
    traces.configure(sample=1.0, max_payload_bytes=1 << 20)
    traces.set_redactor(None)


def only(filter: str):
    found = keel.traces.search(filter=filter)
    assert len(found) == 1, found
    return keel.traces.get(found[0].trace_id)


def test_nested_spans_form_one_tree(ws: Path) -> None:
    @keel.trace(kind="retrieval")
    def retrieve(question: str) -> list[str]:
        return ["doc-1", "doc-2"]

    @keel.trace
    def answer(question: str, *, style: str = "short") -> str:
        docs = retrieve(question)
        with keel.span("generate", kind="llm", attributes={"gen_ai.request.model": "gpt-4o"}) as s:
            s.set_outputs("42")
        return f"{len(docs)} docs"

    assert answer("why?", style="long") == "2 docs"
    keel.traces.flush()
    detail = only("name = 'test_nested_spans_form_one_tree.<locals>.answer'")
    tree = [(depth, s.name.rsplit(".", 1)[-1], s.kind) for depth, s in detail.tree()]
    assert tree == [(0, "answer", "chain"), (1, "retrieve", "retrieval"), (1, "generate", "llm")]
    root = detail.tree()[0][1]
    assert root.inputs == {"question": "why?", "style": "long"} and root.outputs == "2 docs"
    assert detail.trace.model == "gpt-4o" and detail.trace.status == "ok"


def test_errors_mark_spans_and_propagate(ws: Path) -> None:
    @keel.trace
    def failing() -> None:
        raise ValueError("no answer")

    with pytest.raises(ValueError, match="no answer"):
        failing()
    keel.traces.flush()
    detail = only("status = 'error'")
    span = detail.spans[0]
    assert span.status == "error" and "ValueError: no answer" in (span.status_message or "")
    assert span.events[0]["name"] == "exception"


def test_generators_and_async(ws: Path) -> None:
    @keel.trace
    def numbers(n: int):
        yield from range(n)

    @keel.trace
    async def child(i: int) -> int:
        await asyncio.sleep(0)
        return i * 2

    @keel.trace
    async def parent() -> list[int]:
        return list(await asyncio.gather(*(child(i) for i in range(3))))

    assert list(numbers(3)) == [0, 1, 2]
    assert asyncio.run(parent()) == [0, 2, 4]
    keel.traces.flush()
    gen = only("name like '%numbers'")
    assert gen.spans[0].outputs == [0, 1, 2]
    tree = only("name like '%parent'")
    assert tree.trace.span_count == 4
    assert sorted(s.outputs for d, s in tree.tree() if d == 1) == [0, 2, 4]


def test_threads_start_their_own_traces(ws: Path) -> None:
    seen: list[str | None] = []
    with keel.span("outer"):
        thread = threading.Thread(target=lambda: seen.append(keel.traces.current_trace_id()))
        thread.start()
        thread.join()
    assert seen == [None]


def test_ties_to_run_conversation_user_and_tags(ws: Path) -> None:
    with keel.start_run(project="bot") as run:
        with keel.span("turn", conversation_id="c-7", user_id="u-1", tags={"env": "prod"}):
            keel.traces.note("prompt", "chat", "1.3.0")
            keel.traces.note("flag", "enable_reranker", "on")
    keel.traces.flush()
    (found,) = keel.traces.search(project="bot")
    assert (found.run_id, found.conversation_id, found.user_id, found.tags) == (run.id, "c-7", "u-1", {"env": "prod"})
    detail = keel.traces.get(found.trace_id, project="bot")
    assert set(detail.links) == {("prompt", "chat", "1.3.0"), ("flag", "enable_reranker", "on")}
    assert keel.traces.search(project="bot", filter="tags.env = 'prod' and prompt = 'chat@1.3.0'")


def test_sampling_keeps_failed_traces(ws: Path) -> None:
    traces.configure(sample=0.0)
    for _ in range(5):
        with keel.span("quiet"):
            pass
    with pytest.raises(RuntimeError), keel.span("loud"), keel.span("inner"):
        raise RuntimeError("kept")
    keel.traces.flush()
    names = sorted(t.name for t in keel.traces.search())
    assert names == ["loud"] and traces.counters()["sampled_out"] == 5
    assert keel.traces.search()[0].span_count == 2


def test_redactor_and_payload_limit(ws: Path) -> None:
    traces.set_redactor("builtin")
    traces.configure(max_payload_bytes=100)
    with keel.span("pii", inputs={"q": "mail me at ann@example.com"}) as s:
        s.set_outputs("x" * 500)
    keel.traces.flush()
    span = only("name = 'pii'").spans[0]
    assert "ann@example.com" not in json.dumps(span.inputs)
    assert span.outputs["keel.truncated"] is True and span.outputs["size"] == 500
    traces.set_redactor(lambda span: None)
    with keel.span("dropped"):
        pass
    keel.traces.flush()
    assert not keel.traces.search(filter="name = 'dropped'")
    assert traces.counters()["redacted_out"] == 1


def test_secrets_are_masked_by_the_store(ws: Path) -> None:
    with keel.span("call", attributes={"api_key": "sk-live-1234567890abcdef"}, inputs={"password": "hunter2"}):
        pass
    keel.traces.flush()
    span = only("name = 'call'").spans[0]
    assert "sk-live-1234567890abcdef" not in json.dumps(span.attributes)
    assert "hunter2" not in json.dumps(span.inputs)


def test_feedback_and_export(ws: Path, tmp_path: Path) -> None:
    with keel.span("qa", inputs={"question": "2+2?"}) as s:
        s.set_outputs({"answer": "4"})
        trace_id = s.trace_id
    keel.traces.feedback(trace_id, key="correct", value=True, comment="right")
    keel.traces.flush()
    assert keel.traces.search(filter="feedback.correct = 1")
    out = tmp_path / "ds.jsonl"
    assert keel.traces.export(out, filter="name = 'qa'") == 1
    example = json.loads(out.read_text())
    assert example["input"] == {"question": "2+2?"} and example["output"] == {"answer": "4"}
    assert example["metadata"]["scores"] == {"correct": 1.0}
    with pytest.raises(InvalidInput):
        keel.traces.feedback("not-a-trace", value=1)


def test_bad_arguments_are_refused(ws: Path) -> None:
    with pytest.raises(InvalidInput):
        keel.trace(kind="nonsense")
    with pytest.raises(InvalidInput), keel.span(""):
        pass
    with pytest.raises(InvalidInput):
        traces.configure(sample=2)
