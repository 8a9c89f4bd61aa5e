"""Recording and replaying LLM calls with the real ``openai`` client over HTTP.

The client talks to keel's stand-in OpenAI-compatible server on 127.0.0.1;
replay runs with that server stopped, so nothing can come from the network.
The main round trip runs on SQLite + a local folder and on PostgreSQL + S3.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response

import keel
from keel.errors import InvalidInput, NotFound, ReplayMiss
from keel.integrations.standin import StandInServer
from keel.sdk import llm
from keel.sdk import session as sessions

QUESTION = [{"role": "user", "content": "What is 17 + 25?"}]


_OPEN: list[object] = []


@pytest.fixture
def server() -> Iterator[StandInServer]:
    with StandInServer() as running:
        yield running
    while _OPEN:  # close every client a test made (unclosed sockets warn, and warnings fail tests)
        _OPEN.pop().close()  # type: ignore[attr-defined]


def _client(server: StandInServer, **options: object) -> openai.OpenAI:
    client = openai.OpenAI(base_url=server.base_url, api_key="standin", max_retries=0, **options)  # type: ignore[arg-type]
    _OPEN.append(client)
    return client


def _record_everything(client: object) -> dict[str, object]:
    """One call of every intercepted kind; returns what the live calls gave."""
    out: dict[str, object] = {}
    out["chat"] = client.chat.completions.create(  # type: ignore[attr-defined]
        model="gpt-4", messages=QUESTION, temperature=0, seed=42, keel_prompt="chat@1.3.0",
        extra_keel={"rag_index_version": "20240301", "team": "search"},
    )  # fmt: skip
    stream = client.chat.completions.create(  # type: ignore[attr-defined]
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello to the team"}],
        stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    out["chunks"] = list(stream)
    out["response"] = client.responses.create(model="gpt-4o", input="What is 3 * 4?")  # type: ignore[attr-defined]
    out["events"] = list(client.responses.create(model="gpt-4o", input="What is 5 * 4?", stream=True))  # type: ignore[attr-defined]
    out["embedding"] = client.embeddings.create(model="text-embedding-3-small", input=["refund policy", "orders"])  # type: ignore[attr-defined]
    return out


def test_record_then_replay_offline_gives_identical_openai_objects(ws: Path, server: StandInServer) -> None:
    client = llm.wrap(_client(server), metadata={"experiment": "A"})
    with keel.start_run(project="llm", name="record") as run:
        live = _record_everything(client)
    llm.flush()

    rows = llm.calls(run=run.id)
    endpoints = ["chat.completions", "chat.completions", "responses", "responses", "embeddings"]
    assert [r.endpoint for r in rows] == endpoints
    chat = rows[0]
    assert chat.run_id == run.id and chat.model == "gpt-4" and not chat.streamed
    assert chat.input_tokens == 5 and chat.output_tokens == 1
    assert chat.cost == pytest.approx((5 * 30 + 1 * 60) / 1e6)
    assert chat.system_fingerprint == "fp_keel_standin" and chat.latency_ms and chat.latency_ms > 0
    assert chat.context["prompt"] == "chat@1.3.0"
    assert chat.context["rag_index_version"] == "20240301"
    assert chat.context["metadata"] == {"experiment": "A", "team": "search"}
    assert chat.context["base_url"].startswith("http://127.0.0.1:")
    assert rows[1].streamed and rows[1].output_tokens and rows[1].input_tokens == 5
    stored = llm.get_call(chat.request_hash[:10])
    assert stored.request["seed"] == 42 and "keel_prompt" not in stored.request and "extra_keel" not in stored.request
    assert stored.response == live["chat"].model_dump(mode="json", exclude_unset=True)  # type: ignore[attr-defined]
    assert "chunks" not in stored.content
    streamed = llm.get_call(rows[1].request_hash)
    assert len(streamed.content["chunks"]) == len(live["chunks"])  # type: ignore[arg-type]
    assert streamed.response["choices"][0]["message"]["content"].startswith("(stand-in")

    served = server.requests_served
    server.stop()
    offline = llm.wrap(_client(server), mode="replay")
    with keel.start_run(project="llm", name="replay") as replay_run:
        again = _record_everything(offline)
    assert server.requests_served == served  # nothing reached the network
    assert type(again["chat"]) is ChatCompletion and again["chat"] == live["chat"]
    assert all(type(c) is ChatCompletionChunk for c in again["chunks"])  # type: ignore[attr-defined]
    assert again["chunks"] == live["chunks"]
    assert type(again["response"]) is Response and again["response"] == live["response"]
    assert again["response"].output_text == "12"  # type: ignore[attr-defined]
    assert again["events"] == live["events"]
    assert type(again["embedding"]) is CreateEmbeddingResponse and again["embedding"] == live["embedding"]
    assert llm.last_call() is not None and llm.last_call().replayed  # type: ignore[union-attr]

    # the recording run produced its cassette; the replaying run used it
    assert (f"cassette:{run.id}", "llm_calls") in _edges(run.id, "output")
    assert (f"cassette:{run.id}", "replay") in _edges(replay_run.id, "input")
    assert ("prompt:chat@1.3.0", "prompt") in _edges(run.id, "input")


def _edges(run_id: str, direction: str) -> set[tuple[str, str]]:
    keel.flush()
    return {(str(e.entity), e.role) for e in keel.lineage.of(run_id) if e.direction == direction}


def test_async_client_records_and_replays(ws: Path, server: StandInServer) -> None:
    async def calls(mode: str) -> tuple[object, list[object]]:
        async with llm.wrap(openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0), mode) as client:
            chat = await client.chat.completions.create(model="gpt-4", messages=QUESTION, temperature=0)
            stream = await client.chat.completions.create(
                model="gpt-4", messages=QUESTION, stream=True, stream_options={"include_usage": True}
            )
            return chat, [chunk async for chunk in stream]

    live = asyncio.run(calls("record"))
    llm.flush()
    server.stop()
    again = asyncio.run(calls("replay"))
    assert again == live
    assert type(again[0]) is ChatCompletion


def test_a_non_streamed_recording_replays_as_a_stream_and_back(ws: Path, server: StandInServer) -> None:
    client = llm.wrap(_client(server))
    whole = client.chat.completions.create(model="gpt-4", messages=QUESTION, temperature=0)
    llm.flush()
    server.stop()
    offline = llm.wrap(_client(server), mode="replay")
    chunks = list(offline.chat.completions.create(model="gpt-4", messages=QUESTION, temperature=0, stream=True))
    assert all(type(c) is ChatCompletionChunk for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content


def test_auto_mode_replays_what_is_recorded_and_records_the_rest(ws: Path, server: StandInServer) -> None:
    client = llm.wrap(_client(server), mode="auto")
    first = client.chat.completions.create(model="gpt-4", messages=QUESTION, temperature=0)
    assert server.requests_served == 1 and not llm.last_call().replayed  # type: ignore[union-attr]
    # the same request again through this client is its second call, not recorded yet: live
    client.chat.completions.create(model="gpt-4", messages=QUESTION, temperature=0)
    assert server.requests_served == 2 and not llm.last_call().replayed  # type: ignore[union-attr]
    again = llm.wrap(_client(server), mode="auto")  # its first call replays the first recording
    second = again.chat.completions.create(model="gpt-4", messages=QUESTION, temperature=0, user="someone-else")
    assert server.requests_served == 2 and second == first and llm.last_call().replayed  # type: ignore[union-attr]
    again.chat.completions.create(model="gpt-4", messages=QUESTION, temperature=0.5)
    assert server.requests_served == 3
    llm.flush()
    assert len(llm.calls()) == 3


def test_mode_from_the_environment(ws: Path, server: StandInServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_LLM_MODE", "replay")
    with pytest.raises(ReplayMiss):
        llm.wrap(_client(server)).chat.completions.create(model="gpt-4", messages=QUESTION)
    assert server.requests_served == 0
    monkeypatch.setenv("KEEL_LLM_MODE", "sometimes")
    with pytest.raises(InvalidInput):
        llm.wrap(_client(server))


def test_a_strict_miss_names_the_hash_and_the_closest_recording(ws: Path, server: StandInServer) -> None:
    client = llm.wrap(_client(server))
    client.chat.completions.create(model="gpt-4", messages=QUESTION, temperature=0.7)
    client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "Tell me a joke"}])
    client.embeddings.create(model="text-embedding-3-small", input="What is 17 + 25?")
    llm.flush()
    recorded = llm.calls()[-1]  # oldest last: the first call
    misses = llm.stats().misses
    offline = llm.wrap(_client(server), mode="replay")
    wanted = [{"role": "user", "content": "What is 17 + 26?"}]
    with pytest.raises(ReplayMiss) as caught:
        offline.chat.completions.create(model="gpt-4", messages=wanted, temperature=0.7)
    miss = caught.value
    assert isinstance(miss, NotFound) and miss.code == "replay_miss"
    assert miss.request_hash == llm.request_hash("chat.completions", {"model": "gpt-4", "messages": wanted,
                                                                       "temperature": 0.7})  # fmt: skip
    assert miss.closest.request_hash == recorded.request_hash  # type: ignore[attr-defined]
    assert miss.request_hash in str(miss) and recorded.request_hash in str(miss)
    assert "messages[0].content: 'What is 17 + 26?' (recorded 'What is 17 + 25?')" in str(miss)
    assert llm.stats().misses == misses + 1


def test_recording_failures_never_break_the_call(ws: Path, server: StandInServer) -> None:
    client = llm.wrap(_client(server))
    client.chat.completions.create(model="gpt-4", messages=QUESTION)  # creates the session's service
    llm.flush()
    session = sessions.get_session()

    def refuse(_batch: object) -> None:
        raise InvalidInput("the store refuses recordings (injected failure)")

    session.llm.write = refuse  # the background writer's store now refuses every batch
    before = llm.stats().failures
    answer = client.chat.completions.create(model="gpt-4", messages=QUESTION, temperature=0)
    assert answer.choices[0].message.content  # the caller got its response
    llm.flush()
    assert llm.stats().failures == before + 1

    class Unrecordable:
        def model_dump(self, **_: object) -> dict[str, object]:
            raise RuntimeError("cannot be dumped")

    @llm.record
    def tool(thing: object, n: int) -> int:
        return n * 2

    assert tool(Unrecordable(), 21) == 42  # the snapshot failed: counted, the call still ran
    assert llm.stats().failures == before + 2
    assert "cannot be dumped" in llm.stats().last_error


def test_a_broken_stream_is_not_recorded_and_errors_pass_through(ws: Path, server: StandInServer) -> None:
    failures = llm.stats().failures
    client = llm.wrap(_client(server, timeout=0.5))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="error-500", messages=QUESTION)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="slow-2", messages=QUESTION)
    words = [{"role": "user", "content": "a b c d"}]
    stream = client.chat.completions.create(model="gpt-4", messages=words, stream=True)
    next(iter(stream))
    stream.close()  # abandoned half-way: not a whole response
    llm.flush()
    assert llm.calls() == []
    assert llm.stats().failures == failures


def test_prompt_versions_loaded_in_the_run_are_recorded(ws: Path, server: StandInServer) -> None:
    keel.prompts.register("math", template="What is {{ a }} + {{ b }}?", model="gpt-4", changelog="First")
    client = llm.wrap(_client(server), rag_index_version="kb-7")
    with keel.start_run() as run:
        prompt = keel.prompts.load("math@1.0.0")
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": prompt.render(a=1, b=2)}])
        client.chat.completions.create(model="gpt-4", messages=QUESTION, keel_prompt=prompt)
    llm.flush()
    first, second = llm.calls(run=run.id[:8])
    assert first.context["prompt"] == "math@1.0.0" and first.context["rag_index_version"] == "kb-7"
    assert second.context["prompt"] == "math@1.0.0"
    assert llm.last_call() is not None and llm.last_call().run_id == run.id  # type: ignore[union-attr]


def test_export_and_import_a_cassette_into_a_fresh_workspace(
    ws: Path, server: StandInServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = llm.wrap(_client(server))
    with keel.start_run() as run:
        live = _record_everything(client)
    assert llm.export_cassette(tmp_path / "shared" / "math.jsonl", run=run.id) == 5
    lines = (tmp_path / "shared" / "math.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["keel_cassette"] == 1 and len(lines) == 6
    server.stop()

    fresh = tmp_path / "elsewhere"
    fresh.mkdir()
    sessions.reset()
    monkeypatch.delenv("KEEL_URI", raising=False)
    monkeypatch.delenv("KEEL_OBJECTS", raising=False)
    monkeypatch.chdir(fresh)
    from keel.sdk.workspace import init_workspace

    init_workspace(fresh)
    offline = llm.wrap(_client(server), mode="replay")
    with pytest.raises(ReplayMiss):
        offline.chat.completions.create(model="gpt-4", messages=QUESTION, temperature=0, seed=42)
    imported = llm.import_cassette(tmp_path / "shared" / "math.jsonl")
    assert (imported.name, imported.calls, imported.created) == ("math", 5, True)
    assert llm.import_cassette(tmp_path / "shared" / "math.jsonl").created is False  # idempotent
    again = _record_everything(offline)
    assert again == live
    scoped = llm.wrap(_client(server), mode="replay", replay_from="math")
    assert scoped.responses.create(model="gpt-4o", input="What is 3 * 4?") == live["response"]
    assert llm.cassettes() == [("math", 5)]
    row = llm.calls(cassette="math")[0]
    assert row.run_id is None and row.context["source_run"] == run.id
    with keel.start_run() as user:
        scoped.embeddings.create(model="text-embedding-3-small", input=["refund policy", "orders"])
    assert (f"cassette:math@{imported.version}", "replay") in _edges(user.id, "input")


def test_record_decorator_for_any_client_function(ws: Path) -> None:
    calls = []

    @llm.record
    def complete(model: str, prompt: str, temperature: float = 0.0) -> dict[str, object]:
        calls.append(prompt)
        return {"text": prompt.upper(), "usage": {"prompt_tokens": 2, "completion_tokens": 2}}

    @llm.record(name="async-complete")
    async def acomplete(model: str, prompt: str) -> ChatCompletion:
        calls.append(prompt)
        return ChatCompletion.model_validate(
            {"id": "x", "object": "chat.completion", "created": 1, "model": model,
             "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": prompt}}]}
        )  # fmt: skip

    assert complete("gpt-4", "hi") == {"text": "HI", "usage": {"prompt_tokens": 2, "completion_tokens": 2}}
    live = asyncio.run(acomplete("gpt-4", prompt="yo"))
    llm.flush()
    rows = {r.endpoint: r for r in llm.calls()}
    assert set(rows) == {"fn:test_record_decorator_for_any_client_function.<locals>.complete", "fn:async-complete"}
    assert rows["fn:async-complete"].model == "gpt-4"

    replay = llm.record(complete.__wrapped__, mode="replay")  # type: ignore[attr-defined]
    assert replay("gpt-4", prompt="hi") == {"text": "HI", "usage": {"prompt_tokens": 2, "completion_tokens": 2}}
    areplay = llm.record(acomplete.__wrapped__, name="async-complete", mode="replay")  # type: ignore[attr-defined]
    again = asyncio.run(areplay("gpt-4", "yo"))
    assert type(again) is ChatCompletion and again == live
    assert calls == ["hi", "yo"]


def test_prices_are_configurable(ws: Path, server: StandInServer) -> None:
    llm.set_prices({"house-model": (1.0, 2.0)})
    try:
        client = llm.wrap(_client(server))
        client.chat.completions.create(model="house-model-v2", messages=QUESTION)
        assert llm.last_call().cost == pytest.approx((5 * 1.0 + 1 * 2.0) / 1e6)  # type: ignore[union-attr]
        cheap = llm.wrap(_client(server), prices={"gpt-4": (0.0, 0.0)})
        cheap.chat.completions.create(model="gpt-4", messages=QUESTION)
        llm.flush()
        costs = {r.model: r.cost for r in llm.calls()}
        assert costs == {"house-model-v2": pytest.approx(7e-6), "gpt-4": 0.0}
    finally:
        llm.set_prices({}, replace=True)
        llm.set_prices(llm_defaults())


def llm_defaults() -> dict[str, tuple[float, float]]:
    from keel.core.llm import DEFAULT_PRICES

    return dict(DEFAULT_PRICES)


def test_wrapped_client_keeps_the_whole_interface(ws: Path, server: StandInServer) -> None:
    client = llm.wrap(_client(server))
    assert client.base_url == _client(server).base_url
    assert [m.id for m in client.models.list()][:1] == ["gpt-4"]
    raw = client.chat.completions.with_raw_response.create(model="gpt-4", messages=QUESTION)
    assert raw.headers["x-keel-standin"] == "1"
    faster = client.with_options(timeout=5)
    faster.chat.completions.create(model="gpt-4", messages=QUESTION)
    with client as same:
        same.embeddings.create(model="text-embedding-3-small", input="x")
    llm.flush()
    assert [r.endpoint for r in llm.calls()] == ["embeddings", "chat.completions"]  # raw response: not recorded
    assert os.environ.get("KEEL_LLM_MODE") is None
