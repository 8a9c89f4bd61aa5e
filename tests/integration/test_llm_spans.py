"""keel.llm.wrap inside traces: an LLM span per call (the real openai and anthropic clients
against the stand-in model server), Anthropic record and replay, and the versions a span used
(prompt, flag, KB, A/B arm, model, config) as trace links and lineage."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

import keel
from keel.core.llm import DEFAULT_PRICES, call_cost
from keel.errors import ReplayMiss
from keel.integrations.standin import StandInServer
from keel.sdk import llm, traces
from keel.sdk import session as sessions

QUESTION = [{"role": "user", "content": "What is 17 + 25?"}]
CLAUDE = "claude-haiku-4-5"  # priced (1, 5) USD per 1M tokens; not deprecated in the client


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Path]:
    """A SQLite workspace (the trace store itself is tested on PostgreSQL too, in test_traces_sdk)."""
    from keel.sdk.workspace import init_workspace

    init_workspace(tmp_path)
    traces.configure(sample=1.0)
    traces.reset_counters()
    yield tmp_path
    sessions.reset()


@pytest.fixture
def server() -> Iterator[StandInServer]:
    with StandInServer() as running:
        yield running


@pytest.fixture
def oai(server: StandInServer) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=server.base_url, api_key="standin", max_retries=0)
    yield client
    client.close()


def _anthropic(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="standin", max_retries=0)


def _trace(name: str | None = None, project: str | None = None) -> Any:
    keel.traces.flush()
    found = keel.traces.search(filter=f"name = '{name}'" if name else None, project=project)
    assert len(found) == 1, found
    return keel.traces.get(found[0].trace_id, project=project)


def _llm_spans(detail: Any) -> list[Any]:
    return [s for _, s in detail.tree() if s.kind == "llm"]


def test_a_call_in_a_trace_is_an_llm_child_span(local: Path, oai: openai.OpenAI) -> None:
    client = llm.wrap(oai)

    @keel.trace(name="answer")
    def answer(question: str) -> str:
        response = client.chat.completions.create(
            model="gpt-4o", messages=QUESTION, temperature=0.2, seed=7, keel_prompt="calc@1.3.0"
        )
        return str(response.choices[0].message.content)

    assert answer("17 + 25?") == "42"
    call = llm.last_call()
    assert call is not None
    detail = _trace("answer")
    (depth, root), (child_depth, span) = detail.tree()
    assert (depth, root.kind, child_depth) == (0, "chain", 1)
    assert (span.name, span.kind, span.status, span.parent_id) == ("chat gpt-4o", "llm", "ok", root.span_id)
    recorded = llm.calls()[0]
    assert (span.model, span.input_tokens, span.output_tokens) == ("gpt-4o", recorded.input_tokens, 1)
    assert span.cost == pytest.approx(recorded.cost) and span.cost == call_cost("gpt-4o", 5, 1, DEFAULT_PRICES)
    assert span.prompt == "calc@1.3.0" and detail.trace.prompt == "calc@1.3.0"
    a = span.attributes
    assert a["keel.llm.request_hash"] == recorded.request_hash == call.request_hash
    assert (a["keel.llm.occurrence"], a["keel.llm.mode"], a["keel.llm.endpoint"]) == (0, "record", "chat.completions")
    assert (a["gen_ai.operation.name"], a["gen_ai.provider.name"], a["gen_ai.request.model"]) == (
        "chat",
        "openai",
        "gpt-4o",
    )
    assert (a["gen_ai.request.temperature"], a["gen_ai.request.seed"]) == (0.2, 7)
    assert a["gen_ai.response.finish_reasons"] == ["stop"] and a["gen_ai.response.id"].startswith("chatcmpl-")
    assert a["server.address"] == "127.0.0.1" and "keel_prompt" not in str(span.inputs)
    assert span.inputs == QUESTION and span.outputs == {"role": "assistant", "content": "42"}
    assert detail.trace.cost == pytest.approx(span.cost) and detail.trace.input_tokens == span.input_tokens
    assert ("prompt", "calc", "1.3.0") in detail.links
    by_prompt = keel.traces.stats(by="prompt", filter="kind = 'llm'")
    assert [(s.group, s.count) for s in by_prompt] == [({"prompt": "calc@1.3.0"}, 1)]


def test_a_stream_ends_its_span_when_read_to_the_end(local: Path, oai: openai.OpenAI) -> None:
    client = llm.wrap(oai)
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "tell me three words"}], stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    assert traces.counters()["spans"] == 0  # not read yet: the span is still open
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    detail = _trace()  # outside any trace: a trace of its own, one span long
    (span,) = detail.spans
    assert (span.name, span.kind, span.parent_id, span.status) == ("chat gpt-4o-mini", "llm", None, "ok")
    assert span.outputs == {"role": "assistant", "content": text} and "not a real LLM" in text
    assert span.attributes["keel.llm.stream"] is True and span.attributes["keel.llm.chunks"] >= 3
    assert (span.input_tokens, span.output_tokens) == (4, len(text.split()))
    assert span.cost == pytest.approx(call_cost("gpt-4o-mini", 4, len(text.split()), DEFAULT_PRICES))

    with keel.span("early"), client.chat.completions.create(model="gpt-4o", messages=QUESTION, stream=True) as s:
        next(iter(s))  # closed after one chunk: not recorded, its span ends with what was read
    (early,) = _llm_spans(_trace("early"))
    assert early.attributes["keel.llm.stream_closed_early"] is True and early.attributes["keel.llm.chunks"] == 1
    assert len(llm.calls()) == 1


def test_errors_mark_the_span_failed(local: Path, oai: openai.OpenAI) -> None:
    client = llm.wrap(oai)
    with pytest.raises(openai.InternalServerError), keel.span("turn"):
        client.chat.completions.create(model="error-500", messages=QUESTION)
    detail = _trace("turn")
    (span,) = _llm_spans(detail)
    assert span.status == "error" and "InternalServerError" in (span.status_message or "")
    assert span.events[0]["name"] == "exception" and detail.trace.status == "error"
    assert span.attributes["keel.llm.mode"] == "record" and span.outputs is None

    offline = llm.wrap(oai, mode="replay")  # nothing recorded: the miss fails the span too
    with pytest.raises(ReplayMiss), keel.span("offline"):
        offline.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "never asked"}])
    (missed,) = _llm_spans(_trace("offline"))
    assert missed.status == "error" and "ReplayMiss" in (missed.status_message or "")
    assert missed.attributes["keel.llm.mode"] == "replay" and missed.attributes["keel.llm.occurrence"] == 0


def test_replay_emits_spans_with_the_recorded_occurrences(local: Path, server: StandInServer) -> None:
    live = openai.OpenAI(base_url=server.base_url, api_key="standin", max_retries=0)
    client = llm.wrap(live, trace=False)  # recording only: no spans
    vote = [{"role": "user", "content": "Is 91 prime?"}]
    with keel.start_run(name="vote") as run:
        recorded = [client.chat.completions.create(model="counter", messages=vote, temperature=0.9) for _ in range(2)]
    live.close()
    server.stop()
    assert traces.counters()["spans"] == 0

    offline = llm.wrap(openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="unused", max_retries=0),
                       mode="replay", replay_from=run.id)  # fmt: skip

    @keel.trace(name="vote")
    def ask_twice() -> list[str]:
        return [
            str(
                offline.chat.completions.create(model="counter", messages=vote, temperature=0.9)
                .choices[0]
                .message.content
            )
            for _ in range(2)
        ]

    # a replay outside any trace adds no trace (replayed tests would copy their recordings)
    replayed_alone = offline.chat.completions.create(model="counter", messages=vote, temperature=0.9)
    assert replayed_alone.choices[0].message.content == "sample-1"
    assert traces.counters()["spans"] == 0
    offline = llm.wrap(openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="unused", max_retries=0),
                       mode="replay", replay_from=run.id)  # fmt: skip

    assert ask_twice() == ["sample-1", "sample-2"] == [r.choices[0].message.content for r in recorded]
    spans = _llm_spans(_trace("vote"))
    assert [s.attributes["keel.llm.occurrence"] for s in spans] == [0, 1]
    assert [s.outputs["content"] for s in spans] == ["sample-1", "sample-2"]
    rows = llm.calls(run.id)
    for span, row in zip(spans, sorted(rows, key=lambda r: r.occurrence or 0), strict=True):
        a = span.attributes
        assert (a["keel.llm.mode"], a["keel.llm.source"], a["keel.llm.request_hash"]) == (
            "replay",
            run.id,
            row.request_hash,
        )
        assert (span.input_tokens, span.output_tokens, span.cost) == (row.input_tokens, row.output_tokens, row.cost)


def test_mode_off_still_traces_and_trace_false_does_not(local: Path, oai: openai.OpenAI) -> None:
    with keel.span("plain"):
        llm.wrap(oai, mode="off").chat.completions.create(model="gpt-4o", messages=QUESTION)
        llm.wrap(oai, trace=False).chat.completions.create(model="gpt-4o", messages=QUESTION)
    (span,) = _llm_spans(_trace("plain"))
    assert span.attributes["keel.llm.mode"] == "live" and "keel.llm.request_hash" not in span.attributes
    assert span.output_tokens == 1 and span.cost is not None


def test_anthropic_records_replays_and_traces(local: Path, server: StandInServer) -> None:
    """Sync and async clients; ``messages.create`` with and without ``stream=True`` and the
    ``messages.stream`` helper: recorded against the stand-in, replayed with it stopped."""
    system = "Answer with the number only."

    def ask(client: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["create"] = client.messages.create(model=CLAUDE, max_tokens=64, system=system, messages=QUESTION)
        events = client.messages.create(
            model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "stream this please"}], stream=True
        )
        out["events"] = [event.type for event in events]
        with client.messages.stream(model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as s:
            out["helper"] = "".join(s.text_stream)
            out["final"] = s.get_final_message()
        return out

    async def ask_async(client: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["create"] = await client.messages.create(
            model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "async"}]
        )
        async with client.messages.stream(
            model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "a stream"}]
        ) as s:
            out["helper"] = "".join([text async for text in s.text_stream])
        return out

    async def run_async(url: str, mode: str, **options: Any) -> dict[str, Any]:
        async with anthropic.AsyncAnthropic(base_url=url, api_key="standin", max_retries=0) as raw:
            return await ask_async(llm.wrap(raw, mode=mode, **options))

    raw = _anthropic(server.anthropic_base_url)
    with keel.start_run(name="claude") as run, keel.span("recorded"):
        live = ask(llm.wrap(raw))
        live_async = asyncio.run(run_async(server.anthropic_base_url, "record"))
    raw.close()
    server.stop()
    assert live["create"].content[0].text == "42" and live["create"].usage.input_tokens == 10
    assert live["events"][0] == "message_start" and live["events"][-1] == "message_stop"
    assert "You said: hi" in live["helper"] and live["final"].content[0].text == live["helper"]
    rows = llm.calls(run.id)
    assert sorted(r.endpoint for r in rows) == ["messages"] * 5 and all(r.model == CLAUDE for r in rows)
    first = next(r for r in rows if not r.streamed and r.output_tokens == 1)
    assert (first.input_tokens, first.output_tokens) == (10, 1) and first.cost == pytest.approx(15 / 1_000_000)
    streamed = [r for r in rows if r.streamed]
    assert len(streamed) == 3 and all(r.input_tokens and r.output_tokens for r in streamed)

    offline = _anthropic("http://127.0.0.1:9")  # nothing listens: replay never calls
    again = ask(llm.wrap(offline, mode="replay", replay_from=run.id))
    again_async = asyncio.run(run_async("http://127.0.0.1:9", "replay", replay_from=run.id))
    offline.close()
    assert again["create"] == live["create"] and again["events"] == live["events"]
    assert again["helper"] == live["helper"] and again["final"] == live["final"]
    assert again_async == live_async and "You said: a stream" in live_async["helper"]

    spans = _llm_spans(_trace("recorded"))
    assert len(spans) == 5 and {s.name for s in spans} == {f"chat {CLAUDE}"}
    for span in spans:
        a = span.attributes
        assert (a["gen_ai.provider.name"], a["keel.llm.endpoint"], a["keel.llm.mode"]) == (
            "anthropic",
            "messages",
            "record",
        )
        assert (
            span.input_tokens
            and span.output_tokens
            and span.cost == pytest.approx(call_cost(CLAUDE, span.input_tokens, span.output_tokens, DEFAULT_PRICES))
        )
    created = next(s for s in spans if s.outputs == {"role": "assistant", "content": "42"})
    assert created.inputs == [{"role": "system", "content": system}, *QUESTION]
    assert created.attributes["gen_ai.response.finish_reasons"] == ["end_turn"]
    assert created.attributes["gen_ai.request.max_tokens"] == 64
    helper = next(s for s in spans if s.inputs == [{"role": "user", "content": "hi"}])
    assert helper.outputs["content"] == live["helper"] and helper.attributes["keel.llm.stream"] is True


def test_anthropic_tool_use_and_truncation(local: Path, server: StandInServer) -> None:
    client = llm.wrap(_anthropic(server.anthropic_base_url))
    tools = [{"name": "lookup", "description": "find it", "input_schema": {"type": "object"}}]
    with keel.span("tools"):
        used = client.messages.create(
            model=CLAUDE, max_tokens=64, messages=QUESTION, tools=tools, tool_choice={"type": "any"}, stream=True
        )
        events = list(used)
        cut = client.messages.create(
            model=CLAUDE, max_tokens=3, messages=[{"role": "user", "content": "one two three four"}]
        )
    assert events[-2].delta.stop_reason == "tool_use" and cut.stop_reason == "max_tokens"
    recorded = llm.get_call(next(r for r in llm.calls() if r.streamed).request_hash)
    assert recorded.response["content"][0]["type"] == "tool_use" and recorded.response["content"][0]["input"] == {
        "input": "42"
    }
    tool_span, cut_span = _llm_spans(_trace("tools"))
    assert tool_span.outputs["content"][0]["name"] == "lookup"
    assert tool_span.attributes["gen_ai.response.finish_reasons"] == ["tool_use"]
    assert cut_span.attributes["gen_ai.response.finish_reasons"] == ["max_tokens"] and cut_span.output_tokens == 3


def test_versions_used_in_a_trace_become_links(local: Path, oai: openai.OpenAI) -> None:
    keel.prompts.register("chat", "Answer: {{q}}", version="1.3.0", changelog="first")
    keel.flags.set("reranker", {"variants": {"off": False, "on": True}, "default": "on"})
    kb = keel.kb.create("support-docs")
    kb.add_documents([{"text": "Refunds take five days.", "source": "refunds.md"}])
    kb.commit("first")
    keel.ab.create("prompt-test", [{"name": "control", "prompt": "chat@1.3.0"}, {"name": "treatment"}])
    keel.ab.start("prompt-test")
    keel.models.register("embedder", "hf://sentence-transformers/all-MiniLM-L6-v2")
    folder = local / "config"
    folder.mkdir()
    (folder / "base.yaml").write_text("llm:\n  model: gpt-4o\n")
    (folder / "production.yaml").write_text("llm:\n  temperature: 0.1\n")
    flags = keel.flags.client(refresh_seconds=0)
    client = llm.wrap(oai)

    @keel.trace(name="turn")
    def turn(user: str) -> str:
        prompt = keel.prompts.load("chat@1.3.0")
        variant = flags.variant("reranker", user_id=user)
        hits = keel.kb.search("support-docs", "refunds")
        arm = keel.ab.assign("prompt-test", user_id=user)
        keel.models.get("embedder@1")
        keel.config.load(env="production", attach=False)
        messages = [{"role": "user", "content": prompt.render(q="refunds?")}]
        client.chat.completions.create(model="gpt-4o", messages=messages)  # the prompt noted above is its prompt
        return f"{variant} {len(hits)} {arm.variant if arm else None}"

    assert turn("u-1").startswith("on 1 ")
    prompt_outside = keel.prompts.load("chat@1.3.0")  # outside a trace: a no-op note
    assert prompt_outside.version == "1.3.0"
    detail = _trace("turn")
    kinds = {kind: (name, version) for kind, name, version in detail.links}
    assert kinds["prompt"] == ("chat", "1.3.0") and kinds["flag"] == ("reranker", "on")
    assert kinds["kb"] == ("support-docs", "v1") and kinds["model"] == ("embedder", "1")
    assert kinds["experiment"][0] == "prompt-test" and kinds["experiment"][1] in ("control", "treatment")
    assert kinds["config"][0] == "production" and len(kinds["config"][1]) == 12
    (span,) = _llm_spans(detail)
    assert span.prompt == "chat@1.3.0"
    service = sessions.get_session().traces
    assert [u["trace_id"] for u in service.used_by("prompt", "chat", "1.3.0")] == [detail.trace.trace_id]
    assert [u["trace_id"] for u in service.used_by("kb", "support-docs", None)] == [detail.trace.trace_id]
    assert service.used_by("prompt", "chat", "9.9.9") == []
