"""Traces for the web UI's traces pages (shared by the ASGI and the browser tests): an agent
trace tied to a run, a conversation and a registered prompt version, with a large output
kept in the object store and feedback; a failed trace; a trace whose names, attributes,
inputs, events and status message carry XSS payloads; a few dozen small traces to sort and
page through; and a trace in a second project."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keel.core.conversations import ConversationBatch
from keel.services.conversations import ConversationService
from keel.services.prompts import PromptService
from keel.services.traces import TraceService
from keel.services.tracking import TrackingService
from keel.services.workspace import Store

PROJECT = "support-bot"
HIDDEN = "hr-bot"
PROMPT = "support-answer"
CONVERSATION = "conv-42"
XSS = "<script>alert('trace')</script>"
XSS_ATTR = '"><img src=x onerror=alert(3)>'
BIG = "The full answer. " * 2_000  # ~34 KB: over the inline threshold, kept in the object store
START = 1_765_100_000_000_000_000  # 2025-12-07 09:33:20 UTC
MS = 1_000_000


@dataclass
class SeededTraces:
    """What :func:`seed_traces` created (ids the tests look for)."""

    agent: str = ""  # the agent trace: run, conversation, prompt, big output, feedback
    failed: str = ""  # a tool span failed
    hostile: str = ""  # XSS everywhere a person could type
    hidden: str = ""  # in HIDDEN
    run_id: str = ""
    prompt_version: str = ""
    small: list[str] = field(default_factory=list)
    big_span: str = ""  # the llm span of the agent trace, whose outputs are in the object store
    tool_span: str = ""  # the failed tool span


def _trace_id(n: int) -> str:
    return f"{n:08x}4bf92f3577b34da6a3ce929d"


def _span(trace: str, n: int, parent: int | None, name: str, kind: str, start_ms: float, took_ms: float,
          **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "trace_id": trace,
        "span_id": f"{n:016x}",
        "parent_id": None if parent is None else f"{parent:016x}",
        "name": name,
        "kind": kind,
        "start_ns": START + int(start_ms * MS),
        "end_ns": START + int((start_ms + took_ms) * MS),
        "status": extra.pop("status", "ok"),
        **extra,
    }


def agent_spans(trace: str, run_id: str, prompt: str, offset_ms: int = 0) -> list[dict[str, Any]]:
    """An agent answering a question: retrieval (embedding the query), rerank, an LLM call (big
    answer), a tool call, a guardrail."""
    at = offset_ms
    llm = {
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 812,
        "gen_ai.usage.output_tokens": 164,
        "keel.cost": 0.00022,
        "keel.prompt": prompt,
    }
    return [
        _span(trace, 1, None, "support-agent", "agent", at, 1450,
              attributes={"keel.run_id": run_id, "keel.conversation_id": CONVERSATION, "user.id": "u-7",
                          "keel.kb": "faq@3"},
              inputs={"question": "Where is my order #1234?"}, outputs={"answer": "It ships tomorrow."}),
        _span(trace, 2, 1, "kb.search", "retrieval", at + 5, 120, inputs={"query": "order status"},
              outputs=[{"id": "shipping.md", "score": 0.82}, {"id": "refunds.md", "score": 0.41}]),
        _span(trace, 3, 1, "rerank", "rerank", at + 130, 40, outputs=["shipping.md"]),
        _span(trace, 4, 1, "chat gpt-4o-mini", "llm", at + 175, 1010, attributes=llm,
              inputs={"messages": [{"role": "user", "content": "Where is my order #1234?"}]},
              outputs={"role": "assistant", "content": BIG}),
        _span(trace, 5, 1, "lookup_order", "tool", at + 1190, 250, inputs={"order": 1234}, outputs={"eta": "tomorrow"},
              events=[{"name": "cache miss", "time_ns": START + (at + 1200) * MS, "attributes": {"key": "o-1234"}}]),
        _span(trace, 6, 2, "embed query", "embedding", at + 8, 30, attributes={"embedding.dimensions": 384}),
        _span(trace, 7, 1, "pii check", "guardrail", at + 1441, 8, outputs={"passed": True}),
    ]  # fmt: skip


def seed_traces(store: Store, who: str = "alice") -> SeededTraces:
    """Fill ``store`` (see the module docstring)."""
    out = SeededTraces()
    tracking = TrackingService(store)
    out.run_id = tracking.start_run(PROJECT, "nightly-eval").run_id
    version, _ = PromptService(store).register(PROMPT, "Answer: {{ question }}", changelog="first", author=who)
    out.prompt_version = f"{PROMPT}@{version.version}"
    conversations = ConversationService(store)
    row = conversations.prepare(
        {
            "conversation_id": CONVERSATION,
            "messages": [{"role": "user", "content": "Where is my order #1234?"}],
            "model": "gpt-4o-mini",
            "prompt_version": out.prompt_version,
        }
    )
    assert row is not None
    conversations.write_batch(ConversationBatch([row]))

    traces = TraceService(store)
    spans: list[dict[str, Any]] = []
    out.agent = _trace_id(0xA6E47)
    spans += agent_spans(out.agent, out.run_id, out.prompt_version, offset_ms=60_000)
    out.big_span = f"{4:016x}"
    out.failed = _trace_id(0xFA11ED)
    failed = agent_spans(out.failed, out.run_id, out.prompt_version, offset_ms=120_000)
    failed[4].update(status="error", status_message="TimeoutError: the orders API did not answer in 250 ms",
                     outputs=None)  # fmt: skip
    out.tool_span = failed[4]["span_id"]
    spans += failed
    out.hostile = _trace_id(0xBAD)
    spans += [
        _span(out.hostile, 1, None, f"root {XSS}", "chain", 180_000, 300,
              attributes={"note": XSS, "tags.env": XSS_ATTR, XSS_ATTR: "key"},
              inputs={"question": XSS, "html": "<b>bold</b>"}, outputs=XSS_ATTR,
              events=[{"name": XSS, "attributes": {"why": XSS}}]),
        _span(out.hostile, 2, 1, XSS_ATTR, "tool", 180_010, 100, status="error", status_message=XSS,
              attributes={"gen_ai.request.model": XSS_ATTR}),
    ]  # fmt: skip
    for i in range(30):  # small traces: latencies 10..300 ms, costs, two models
        trace = _trace_id(0x5000 + i)
        out.small.append(trace)
        model = "gpt-4o" if i % 3 == 0 else "gpt-4o-mini"
        attributes = {"gen_ai.request.model": model, "gen_ai.usage.input_tokens": 100 + i,
                      "gen_ai.usage.output_tokens": 10, "keel.cost": 0.0001 * (30 - i)}  # fmt: skip
        spans.append(
            _span(trace, 1, None, f"classify {i:02d}", "llm", 240_000 + i * 1000, 10 * (i + 1), attributes=attributes)
        )
    result = traces.ingest(spans, project=PROJECT)
    assert result.rejected == 0, result.errors
    traces.feedback(out.agent, key="helpful", value=1, comment=f"great {XSS}", source="user", project=PROJECT)
    traces.feedback(out.agent, key="grounded", value=0.5, span_id=out.big_span, source="evaluator", project=PROJECT)
    out.hidden = _trace_id(0x41DDE)
    traces.ingest(agent_spans(out.hidden, out.run_id, out.prompt_version), project=HIDDEN)
    return out
