"""``POST /v1/traces`` on the real server app, in process: the real OpenTelemetry SDK and OTLP HTTP
exporter send to it through a ``requests`` adapter over :class:`~keel.transport.asgi.ASGIAppTransport`
(no socket), and raw bodies test what an exporter never sends.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from keel.core.traces import CLOCK_SKEW, TRUNCATED
from keel.integrations.otlp import MAX_BODY_BYTES
from keel.server import create_app
from keel.services.auth import AuthStore
from keel.services.mlflow_tracking import MlflowTracking
from keel.transport.asgi import ASGIAppTransport

URL = "http://testserver"
PROTOBUF = "application/x-protobuf"
TRACE = "5b8efff798038103d269b633813fc60c"


class ASGIAdapter(BaseAdapter):
    """A ``requests`` adapter that hands each request to the in-process app (what the exporter uses)."""

    def __init__(self, transport: ASGIAppTransport) -> None:
        super().__init__()
        self.transport = transport

    def send(self, request: requests.PreparedRequest, **_kwargs: Any) -> requests.Response:
        body = request.body if isinstance(request.body, bytes) else (request.body or "").encode()
        forwarded = httpx.Request(
            request.method or "POST", request.url or URL, headers=dict(request.headers), content=body
        )
        reply = self.transport.handle_request(forwarded)
        response = requests.Response()
        response.status_code = reply.status_code
        response.headers = CaseInsensitiveDict(reply.headers)
        response._content = reply.content
        response.url = request.url or URL
        response.request = request
        return response

    def close(self) -> None:
        pass


@dataclass
class Site:
    app: Any
    transport: ASGIAppTransport
    client: httpx.Client  # closing it leaves the transport running (leaving a 'with' block would stop it)
    tokens: dict[str, str]
    experiments: dict[str, str]

    def post(
        self, body: bytes, user: str | None = "root", content_type: str = PROTOBUF, **headers: str
    ) -> httpx.Response:
        sent = {"content-type": content_type, **{k.replace("_", "-"): v for k, v in headers.items()}}
        if user:
            sent["authorization"] = f"Bearer {self.tokens[user]}"
        return self.client.post("/v1/traces", content=body, headers=sent)

    def tracer(self, user: str = "root", compression: Compression | None = None, **headers: str) -> TracerProvider:
        """A real OpenTelemetry SDK whose OTLP HTTP exporter sends to this app as ``user``."""
        session = requests.Session()
        session.mount("http://", ASGIAdapter(self.transport))
        exporter = OTLPSpanExporter(
            endpoint=f"{URL}/v1/traces",
            headers={"authorization": f"Bearer {self.tokens[user]}", **headers},
            compression=compression,
            session=session,
        )
        provider = TracerProvider(resource=Resource.create({"service.name": "chat-api"}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return provider

    def trace(self, trace_id: str, project: str = "default") -> Any:
        return self.app.state.keel.traces.get(trace_id, project)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder: Path = tmp_path_factory.mktemp("otlp")
    app = create_app(f"sqlite:///{folder / 'keel.db'}", str(folder / "objects"))
    context = app.state.keel
    auth = AuthStore(context.store.db)
    tokens = {}
    for name in ("root", "wes", "rita"):
        auth.create_user(name, is_admin=name == "root")
        tokens[name], _ = auth.create_token(name, "otel")
    mlflow = MlflowTracking(context.tracking)
    for project in ("alpha", "beta"):
        context.tracking.create_project(project)
    auth.grant("wes", "alpha", "writer", "root")
    auth.grant("rita", "alpha", "reader", "root")
    experiments = {p: mlflow.experiment_id(p) for p in ("alpha", "beta")}
    with ASGIAppTransport(app) as transport:
        client = httpx.Client(transport=transport, base_url=URL)
        yield Site(app, transport, client, tokens, experiments)
        client.close()


def _span(span_id: str, **over: Any) -> dict[str, Any]:
    span = {
        "traceId": over.pop("trace_id", TRACE),
        "spanId": span_id,
        "name": over.pop("name", f"span {span_id[-2:]}"),
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000500000000",
    }
    return {**span, **over}


def _request(*spans: dict[str, Any]) -> bytes:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]}).encode()


def _status(response: httpx.Response) -> tuple[int, str]:
    """The ``google.rpc.Status`` of a failure, in the encoding of the reply."""
    if response.headers["content-type"] == PROTOBUF:
        status = status_pb2.Status.FromString(response.content)
        return status.code, status.message
    body = response.json()
    return body["code"], body["message"]


# -- the real SDK and exporter ---------------------------------------------------------------------
def test_the_real_exporter_sends_a_tree_that_keel_stores(site: Site) -> None:
    provider = site.tracer(compression=Compression.Gzip, **{"x-keel-project": "alpha"})
    tracer = provider.get_tracer("my.app", "2.0")
    messages = [{"role": "user", "parts": [{"type": "text", "content": "What is 17 + 25?"}]}]
    with tracer.start_as_current_span("answer", attributes={"session.id": "conv-7", "tags": ["a", "b"]}) as root:
        with tracer.start_as_current_span("retrieve", attributes={"openinference.span.kind": "RETRIEVER"}):
            pass
        with tracer.start_as_current_span("chat gpt-4o") as llm:
            llm.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": 12,
                    "gen_ai.usage.output_tokens": 1,
                    "gen_ai.input.messages": json.dumps(messages),
                }
            )
            llm.add_event("gen_ai.choice", {"index": 0, "finish_reason": "stop", "message": '{"content": "42"}'})
        try:
            raise RuntimeError("the reranker is down")
        except RuntimeError as exc:
            root.record_exception(exc)
            root.set_status(Status(StatusCode.ERROR, "the reranker is down"))
    provider.shutdown()
    trace_id = format(root.get_span_context().trace_id, "032x")

    detail = site.trace(trace_id, "alpha")
    tree = [(depth, span.name, span.kind) for depth, span in detail.tree()]
    assert tree == [(0, "answer", "other"), (1, "retrieve", "retrieval"), (1, "chat gpt-4o", "llm")]
    assert detail.trace.status == "error" and detail.trace.conversation_id == "conv-7"
    answer = next(s for s in detail.spans if s.name == "answer")
    assert answer.status == "error" and answer.status_message == "the reranker is down"
    assert [e["name"] for e in answer.events] == ["exception"]
    assert answer.attributes["tags"] == ["a", "b"] and answer.attributes["resource.service.name"] == "chat-api"
    assert answer.attributes["otel.scope.name"] == "my.app" and answer.attributes["otel.scope.version"] == "2.0"
    llm_span = next(s for s in detail.spans if s.kind == "llm")
    assert (llm_span.model, llm_span.input_tokens, llm_span.output_tokens) == ("gpt-4o", 12, 1)
    assert llm_span.inputs == messages
    assert llm_span.outputs == [{"role": "assistant", "content": "42", "index": 0, "finish_reason": "stop"}]
    assert llm_span.events == [] and "gen_ai.input.messages" not in llm_span.attributes


def test_otlp_json_is_stored_and_answered_in_json(site: Site) -> None:
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-app"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            _span(
                                "1000000000000001",
                                trace_id="1" * 32,
                                name="q",
                                attributes=[{"key": "input.value", "value": {"stringValue": '{"question": "hi"}'}}],
                            )
                        ]
                    }
                ],
            }
        ]
    }
    reply = site.post(json.dumps(body).encode(), content_type="application/json; charset=utf-8")
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/json" and reply.json() == {}
    (span,) = site.trace("1" * 32).spans
    assert span.inputs == {"question": "hi"} and span.attributes["resource.service.name"] == "json-app"


# -- projects, tokens and roles ---------------------------------------------------------------------
def test_the_project_comes_from_the_headers(site: Site) -> None:
    assert site.post(_request(_span("2000000000000001", trace_id="2" * 32)), "wes", "application/json",
                     x_keel_project="alpha").status_code == 200  # fmt: skip
    assert site.trace("2" * 32, "alpha").trace.project == "alpha"
    by_experiment = site.post(
        _request(_span("2000000000000002", trace_id="3" * 32)),
        "wes",
        "application/json",
        x_mlflow_experiment_id=site.experiments["alpha"],
    )
    assert by_experiment.status_code == 200, by_experiment.text
    assert site.trace("3" * 32, "alpha").trace.project == "alpha"
    assert (
        site.post(_request(_span("2000000000000003", trace_id="4" * 32)), content_type="application/json").status_code
        == 200
    )
    assert site.trace("4" * 32).trace.project == "default"
    # an experiment wes cannot see answers exactly as one that does not exist
    hidden = site.post(_request(_span("2000000000000004")), "wes", "application/json",
                       x_mlflow_experiment_id=site.experiments["beta"])  # fmt: skip
    unknown = site.post(_request(_span("2000000000000004")), "wes", "application/json", x_mlflow_experiment_id="9999")
    assert hidden.status_code == unknown.status_code == 404
    assert _status(hidden)[1].replace(site.experiments["beta"], "N") == _status(unknown)[1].replace("9999", "N")
    assert _status(hidden)[0] == 5


def test_tokens_and_roles_apply_as_to_every_api_call(site: Site) -> None:
    body = _request(_span("3000000000000001", trace_id="5" * 32))
    anonymous = site.post(body, None)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    assert _status(anonymous)[0] == 16 and "token" in _status(anonymous)[1]
    forged = site.client.post(
        "/v1/traces", content=body, headers={"content-type": PROTOBUF, "authorization": "Bearer keel_x"}
    )
    assert forged.status_code == 401
    reader = site.post(body, "rita", "application/json", x_keel_project="alpha")
    assert reader.status_code == 403 and _status(reader)[0] == 7
    hidden = site.post(body, "wes", "application/json", x_keel_project="beta")
    missing = site.post(body, "wes", "application/json", x_keel_project="gamma")
    assert hidden.status_code == missing.status_code == 404
    assert _status(hidden)[1].replace("beta", "P") == _status(missing)[1].replace("gamma", "P")
    bad_name = site.post(body, "root", "application/json", x_keel_project="-not a name")
    assert bad_name.status_code == 400 and "invalid project" in _status(bad_name)[1]
    with pytest.raises(Exception, match="no trace"):
        site.trace("5" * 32, "alpha")  # nothing was written by the refused calls


def test_keel_ui_takes_spans_without_a_token_but_only_under_a_loopback_name(tmp_path: Path) -> None:
    app = create_app(f"sqlite:///{tmp_path / 'keel.db'}", str(tmp_path / "objects"), local=True)  # 'keel ui'
    body = _request(_span("3000000000000002", trace_id="6" * 32))
    json_body = {"content-type": "application/json"}
    with ASGIAppTransport(app) as transport:
        client = httpx.Client(transport=transport, base_url="http://127.0.0.1:8765")
        rebound = client.post("/v1/traces", content=body, headers={**json_body, "host": "attacker.example"})
        assert rebound.status_code == 403  # DNS rebinding: another site's name pointed at 127.0.0.1
        assert client.post("/v1/traces", content=body, headers=json_body).status_code == 200
        client.close()
    assert app.state.keel.traces.get("6" * 32).trace.span_count == 1


# -- bad input --------------------------------------------------------------------------------------
def test_malformed_bodies_are_400_in_otlp_form(site: Site) -> None:
    garbage = site.post(b"\x0a\xff\xff\xff\x0f", content_type=PROTOBUF)
    assert garbage.status_code == 400 and garbage.headers["content-type"] == PROTOBUF
    code, message = _status(garbage)
    assert code == 3 and "protobuf" in message
    not_json = site.post(b"{nope", content_type="application/json")
    assert not_json.status_code == 400 and not_json.headers["content-type"] == "application/json"
    assert _status(not_json)[0] == 3 and "not JSON" in _status(not_json)[1]
    wrong_type = site.post(_request(_span("4000000000000001", attributes={"k": "v"})), content_type="application/json")
    assert wrong_type.status_code == 400 and "spans[0].attributes must be a list" in _status(wrong_type)[1]
    bad_gzip = site.post(b"not gzip", content_encoding="gzip")
    assert bad_gzip.status_code == 400 and "decompressed" in _status(bad_gzip)[1]
    unsupported = site.post(b"{}", content_type="text/plain")
    assert unsupported.status_code == 415 and _status(unsupported)[0] == 3


def test_oversized_bodies_and_gzip_bombs_are_413(site: Site) -> None:
    big = b"\x00" * (MAX_BODY_BYTES + 1)
    declared = site.post(big)
    assert declared.status_code == 413 and _status(declared)[0] == 8

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(17):
            yield b"\x00" * (1 << 20)

    streamed = site.client.post(
        "/v1/traces",
        content=chunks(),
        headers={"content-type": "application/json", "authorization": f"Bearer {site.tokens['root']}"},
    )
    assert streamed.status_code == 413 and streamed.json()["code"] == 8
    bomb = gzip.compress(b"\x00" * (MAX_BODY_BYTES + (4 << 20)), 9)
    assert len(bomb) < 100_000
    inflated = site.post(bomb, content_encoding="gzip")
    assert inflated.status_code == 413 and "decompressed" in _status(inflated)[1]


def test_refused_spans_are_counted_and_the_valid_ones_kept(site: Site) -> None:
    good = _span("5000000000000001", trace_id="7" * 32, name="good")
    zero_trace = _span("5000000000000002", trace_id="0" * 32)
    no_name = _span("5000000000000003", trace_id="7" * 32, name="")
    reply = site.post(_request(good, zero_trace, no_name), content_type="application/json")
    assert reply.status_code == 200
    partial = reply.json()["partialSuccess"]
    assert (
        partial["rejectedSpans"] == "2" and "trace_id" in partial["errorMessage"] and "name" in partial["errorMessage"]
    )
    assert [s.name for s in site.trace("7" * 32).spans] == ["good"]


def test_duplicate_span_ids_are_ignored_and_counted(site: Site) -> None:
    first = _span("6000000000000001", trace_id="8" * 32, name="first")
    again = _span("6000000000000001", trace_id="8" * 32, name="second copy")
    reply = site.post(_request(first, again), content_type="application/json")
    assert reply.json() == {"partialSuccess": {"errorMessage": "1 span(s) already stored were ignored"}}
    protobuf_twin = site.post(_request(first), content_type="application/json")  # a retried export
    assert "already stored" in protobuf_twin.json()["partialSuccess"]["errorMessage"]
    detail = site.trace("8" * 32)
    assert [s.name for s in detail.spans] == ["first"] and detail.trace.span_count == 1


def test_late_parents_skewed_clocks_and_large_attributes_are_kept_and_marked(site: Site) -> None:
    orphan = _span("7000000000000002", trace_id="9" * 32, name="child first", parentSpanId="7000000000000001")
    skewed = _span(
        "7000000000000003",
        trace_id="9" * 32,
        name="skewed",
        startTimeUnixNano="1700000000900000000",
        endTimeUnixNano="1700000000100000000",
    )
    large = _span(
        "7000000000000004",
        trace_id="9" * 32,
        name="large",
        attributes=[
            {"key": "document", "value": {"stringValue": "x" * 200_000}},
            {"key": "small", "value": {"intValue": 1}},
        ],
    )
    assert site.post(_request(orphan, skewed, large), content_type="application/json").json() == {}
    spans = {s.name: s for s in site.trace("9" * 32).spans}
    assert spans["child first"].parent_id == "7000000000000001"  # kept, waiting for its parent
    assert spans["skewed"].flags & CLOCK_SKEW and spans["skewed"].end_ns == spans["skewed"].start_ns
    document = spans["large"].attributes["document"]
    assert spans["large"].flags & TRUNCATED and spans["large"].attributes["keel.truncated"] is True
    assert len(document) < 10_000 and spans["large"].attributes["small"] == 1
    root = _span("7000000000000001", trace_id="9" * 32, name="root")
    assert site.post(_request(root), content_type="application/json").json() == {}
    tree = [(depth, span.name) for depth, span in site.trace("9" * 32).tree()]
    assert (0, "root") in tree and (1, "child first") in tree


def test_a_partial_success_reaches_a_protobuf_client_in_protobuf(site: Site) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    spans.add(trace_id=b"\xab" * 16, span_id=b"\x01" * 8, name="ok", start_time_unix_nano=1)
    spans.add(trace_id=b"\xab" * 8, span_id=b"\x02" * 8, name="short trace id", start_time_unix_nano=1)
    reply = site.post(request.SerializeToString())
    assert reply.status_code == 200 and reply.headers["content-type"] == PROTOBUF
    partial = ExportTraceServiceResponse.FromString(reply.content).partial_success
    assert partial.rejected_spans == 1 and "trace_id" in partial.error_message
