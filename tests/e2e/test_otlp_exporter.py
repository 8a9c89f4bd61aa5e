"""OpenTelemetry to a live keel server: the real SDK, OTLP HTTP exporter and a published GenAI
instrumentation of the ``openai`` client (``opentelemetry-instrumentation-openai-v2``), configured
only by the environment variables docs/traces.md gives, against a uvicorn server and the stand-in
model server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from test_server_api import Server, start_server

from keel.integrations.standin import StandInServer
from keel.services.auth import AuthStore
from keel.services.traces import TraceService
from keel.services.workspace import open_store


@pytest.fixture(scope="module")
def keel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, str]]:
    folder: Path = tmp_path_factory.mktemp("otlp-server")
    store = f"sqlite:///{folder / 'keel.db'}"
    opened = open_store(store, cached=False)  # the first admin, written in process (no CLI subprocess)
    try:
        AuthStore(opened.db).create_user("root", is_admin=True)
        token, _ = AuthStore(opened.db).create_token("root", "otel")
    finally:
        opened.close()
    server = start_server(store, folder)
    try:
        yield server, store, token
    finally:
        server.stop()


def test_an_instrumented_openai_app_sends_genai_spans_to_keel(
    keel: tuple[Server, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, store, token = keel
    # What docs/traces.md tells a user to set (the header value is URL-encoded, as OTel specifies).
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{server.url}/v1/traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", f"Authorization=Bearer%20{token},x-keel-project=chat-bot")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "span_only")
    provider = TracerProvider(resource=Resource.create({"service.name": "chat-bot"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        tracer = provider.get_tracer("chat-bot")
        with StandInServer() as model, tracer.start_as_current_span("handle question") as root:
            client = openai.OpenAI(base_url=model.base_url, api_key="none", max_retries=0)
            reply = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[
                    {"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": "What is 17 + 25?"},
                ],
            )
            client.close()
        assert provider.force_flush(10_000)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()

    trace_id = format(root.get_span_context().trace_id, "032x")
    opened = open_store(store, cached=False)
    try:
        detail = TraceService(opened).get(trace_id, "chat-bot")
    finally:
        opened.close()
    tree = [(depth, span.name, span.kind) for depth, span in detail.tree()]
    assert tree == [(0, "handle question", "other"), (1, "chat gpt-4o-mini", "llm")]
    llm = detail.spans[1] if detail.spans[1].kind == "llm" else detail.spans[0]
    usage = reply.usage
    assert usage is not None
    assert llm.model == "gpt-4o-mini"
    assert (llm.input_tokens, llm.output_tokens) == (usage.prompt_tokens, usage.completion_tokens)
    assert llm.attributes["gen_ai.provider.name"] == "openai" and llm.attributes["otel.span_kind"] == "client"
    assert llm.attributes["resource.service.name"] == "chat-bot"
    system, user = llm.inputs
    assert system["role"] == "system" and user["parts"][0]["content"] == "What is 17 + 25?"
    assert llm.outputs[0]["parts"][0]["content"] == reply.choices[0].message.content
    assert detail.trace.model == "gpt-4o-mini" and detail.trace.input_tokens == usage.prompt_tokens
