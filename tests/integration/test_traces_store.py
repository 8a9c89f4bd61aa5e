"""Trace storage on every backend: idempotent batches, late and duplicate spans, summaries,
search, trees, stats, scores, links, payload offload, export (keel.services.traces)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keel.core.entities import now_ms
from keel.core.traces import SpanBatch
from keel.errors import FilterSyntaxError, InvalidInput, NotFound
from keel.meta.delivered import batch_id_prefix
from keel.services.traces import INLINE_PAYLOAD_BYTES, TraceService
from keel.services.workspace import open_store

T1 = "1" * 32
T2 = "2" * 32
T3 = "3" * 32
BASE = 1_790_000_000_000_000_000  # ns
SEED = batch_id_prefix(now_ms()) + "-seed"  # as the SDK makes batch ids: older ones are pruned


def span(trace, span_id, parent=None, name="step", start=0, end=10, **extra):
    raw = {
        "trace_id": trace,
        "span_id": span_id,
        "parent_id": parent,
        "name": name,
        "start_ns": BASE + start * 1_000_000,
        "end_ns": BASE + end * 1_000_000,
        "status": extra.pop("status", "ok"),
    }
    raw.update(extra)
    return raw


def llm(trace, span_id, parent, model, tokens, cost, start=1, end=5, **attributes):
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": tokens[0],
        "gen_ai.usage.output_tokens": tokens[1],
        "keel.cost": cost,
        **attributes,
    }
    return span(trace, span_id, parent, name=f"chat {model}", start=start, end=end, attributes=attrs)


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> TraceService:
    store = open_store(database_url, str(tmp_path / "objects"), cached=False)
    yield TraceService(store)
    store.close()


def seed(service: TraceService) -> None:
    batch = SpanBatch(
        spans=[
            ("app", span(T1, "a" * 16, name="answer", start=0, end=100, attributes={"keel.conversation_id": "c-1"})),
            ("app", llm(T1, "b" * 16, "a" * 16, "gpt-4o", (10, 2), 0.5, **{"keel.prompt": "chat@1.3.0"})),
            ("app", span(T1, "c" * 16, "a" * 16, name="search", start=5, end=20, kind="retrieval")),
            ("app", span(T2, "d" * 16, name="answer", start=1000, end=3000, status="error", status_message="boom")),
            ("app", llm(T2, "e" * 16, "d" * 16, "gpt-4o-mini", (4, 1), 0.1, start=1001, end=1500)),
            ("other", span(T3, "f" * 16, name="elsewhere", start=0, end=1)),
        ]
    )
    result = service.write_batch(batch, SEED)
    assert (result.stored, result.duplicates, result.rejected) == (6, 0, 0)


def test_summary_search_and_tree(service: TraceService) -> None:
    seed(service)
    traces = service.search("app")
    assert [t.trace_id for t in traces] == [T2, T1]  # newest first
    t1 = next(t for t in traces if t.trace_id == T1)
    assert (t1.name, t1.span_count, t1.error_count, t1.status) == ("answer", 3, 0, "ok")
    assert (t1.input_tokens, t1.output_tokens, t1.cost, t1.model) == (10, 2, 0.5, "gpt-4o")
    assert t1.prompt == "chat@1.3.0" and t1.conversation_id == "c-1" and t1.duration_ms == 100.0
    assert [t.trace_id for t in service.search("app", "status = 'error'")] == [T2]
    assert [t.trace_id for t in service.search("app", "model = 'gpt-4o'")] == [T1]
    assert [t.trace_id for t in service.search("app", "span.kind = 'retrieval'")] == [T1]
    assert [t.trace_id for t in service.search("app", "latency > 1000")] == [T2]
    assert [t.trace_id for t in service.search("app", "tokens.total >= 12")] == [T1]
    assert [t.trace_id for t in service.search("app", order_by="latency asc")] == [T1, T2]
    assert service.count("app") == 2 and service.count("other") == 1
    detail = service.get(T1[:8], "app")
    assert [(d, s.name) for d, s in detail.tree()] == [(0, "answer"), (1, "chat gpt-4o"), (1, "search")]
    assert detail.links == [("prompt", "chat", "1.3.0")]


def test_batches_are_idempotent_and_duplicates_ignored(service: TraceService) -> None:
    seed(service)
    again = service.write_batch(SpanBatch(spans=[("app", span(T1, "9" * 16))]), SEED)
    assert again.stored == 0  # the same batch id: nothing written
    dup = service.write_batch(
        SpanBatch(spans=[("app", span(T1, "a" * 16, name="changed"))]), batch_id_prefix(now_ms()) + "-2"
    )
    assert (dup.stored, dup.duplicates) == (0, 1)
    assert service.get(T1, "app").trace.span_count == 3


def test_late_spans_update_the_summary_once(service: TraceService) -> None:
    # the child arrives first, its parent never comes: kept and shown as a root
    service.write_batch(SpanBatch(spans=[("app", llm(T1, "b" * 16, "a" * 16, "gpt-4o", (1, 1), 0.1, start=5))]))
    early = service.get(T1, "app")
    assert early.trace.name == "chat gpt-4o" and early.trace.root_span_id is None
    assert [s.name for _, s in early.tree()] == ["chat gpt-4o"]
    service.write_batch(SpanBatch(spans=[("app", span(T1, "a" * 16, name="root", start=0, end=50))]))
    late = service.get(T1, "app").trace
    assert (late.name, late.root_span_id, late.span_count, late.duration_ms) == ("root", "a" * 16, 2, 50.0)
    assert (late.input_tokens, late.cost) == (1, 0.1)


def test_bad_spans_are_counted_not_fatal(service: TraceService) -> None:
    result = service.ingest([span(T1, "a" * 16), {"trace_id": "zz", "span_id": "1", "name": "x"}], "app")
    assert (result.stored, result.rejected) == (1, 1) and "trace_id" in result.errors[0]


def test_scores_and_feedback_filters(service: TraceService) -> None:
    seed(service)
    service.feedback(T1, key="helpful", value=True, comment="great", project="app")
    service.feedback(T2, key="helpful", value=0, project="app")
    assert [t.trace_id for t in service.search("app", "feedback.helpful = 1")] == [T1]
    scores = service.get(T1, "app").scores
    assert [(s.key, s.value, s.comment) for s in scores] == [("helpful", 1.0, "great")]
    with pytest.raises(NotFound):
        service.feedback("9" * 32, value=1, project="app")
    with pytest.raises(InvalidInput):
        service.feedback(T1, project="app")  # empty


def test_stats_by_model_and_day(service: TraceService) -> None:
    seed(service)
    by_model = {s.group["model"]: s for s in service.stats("app", by="model")}
    assert set(by_model) == {"gpt-4o", "gpt-4o-mini"}
    assert by_model["gpt-4o"].count == 1 and by_model["gpt-4o"].input_tokens == 10
    (day,) = service.stats("app", by="day")
    assert day.count == 2 and day.errors == 1 and day.error_rate == 0.5
    assert day.latency_p50_ms is not None and day.latency_p95_ms is not None


def test_projects_are_separate_and_unknown_ones_not_found(service: TraceService) -> None:
    seed(service)
    with pytest.raises(NotFound):
        service.get(T1, "other")
    with pytest.raises(NotFound):
        service.search("nope")


def test_bad_filters_and_orders_are_refused(service: TraceService) -> None:
    seed(service)
    with pytest.raises(InvalidInput):
        service.search("app", "colour = 'red'")
    with pytest.raises(FilterSyntaxError):
        service.search("app", "status = ")
    with pytest.raises(InvalidInput):
        service.search("app", order_by="colour")


def test_large_payloads_go_to_the_object_store(service: TraceService, tmp_path: Path) -> None:
    big = {"text": "x" * (INLINE_PAYLOAD_BYTES + 10)}
    service.ingest([span(T1, "a" * 16, inputs={"q": "hi"}, outputs=big)], "app")
    stored = service.get(T1, "app").spans[0]
    assert stored.inputs == {"q": "hi"} and set(stored.outputs) == {"$object", "size"}
    assert service.payload(T1, "a" * 16, "outputs", "app") == big
    out = tmp_path / "ds.jsonl"
    assert service.export(out, "app") == 1
    assert json.loads(out.read_text())["output"] == big


def test_used_by_finds_traces(service: TraceService) -> None:
    seed(service)
    found = service.used_by("prompt", "chat", "1.3.0")
    assert [(f["project"], f["trace_id"]) for f in found] == [("app", T1)]
    assert service.used_by("prompt", "chat", "9.9.9") == []


def test_cost_comes_from_the_price_table_when_not_given(service: TraceService) -> None:
    attrs = {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100}
    service.ingest([span(T1, "a" * 16, attributes=attrs), span(T2, "b" * 16, attributes={**attrs, "keel.cost": 9.5})])
    assert service.get(T1).spans[0].cost > 0  # priced by keel's table
    assert service.get(T2).spans[0].cost == 9.5  # as given
