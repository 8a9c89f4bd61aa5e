"""MLflow tracing against a live keel server: the real ``mlflow`` client (mlflow-skinny 3.17).

``@mlflow.trace``, ``mlflow.start_span`` and ``mlflow.update_current_trace`` land as keel
traces (one per MLflow trace, ``tr-<32 hex>`` <-> keel's 32-hex id), keel's own API sees
them (read here through the keel SDK's remote service proxy), and ``mlflow.search_traces``
/ ``MlflowClient.get_trace`` read any keel trace back, one logged with keel's SDK
included. One server for the module (the fixture of ``test_mlflow_client.py``).

Not covered: ``mlflow.openai.autolog()``. In the dev environment mlflow-skinny cannot
import ``mlflow.openai`` (its model flavor needs pandas, which mlflow-skinny does not
install); the LLM span it would create is made here with ``start_span`` and the
attributes the autologger sets (``mlflow.llm.model``, ``mlflow.chat.tokenUsage``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import AssessmentSource, SpanType
from mlflow.exceptions import MlflowException, RestException
from mlflow.store.tracking.rest_store import RestStore
from mlflow.utils.rest_utils import MlflowHostCreds
from packaging.version import Version
from test_mlflow_client import Keel, keel, use  # noqa: F401 - keel: the module's server (a fixture)
from test_server_api import ok

import keel as keel_sdk
from keel.sdk import session as sessions
from keel.sdk.remote import open_remote, remote
from keel.services.traces import TraceService

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(autouse=True, scope="module")
def _synchronous_export() -> Iterator[None]:
    """Traces are exported as they end (MLflow's async queue costs a second per flush and per
    experiment switch; one test below runs it, as users do by default)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
        mlflow.tracing.reset()
        yield
    mlflow.tracing.reset()


@pytest.fixture(autouse=True)
def _as_root(keel: Keel, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:  # noqa: F811
    use(keel, monkeypatch)
    mlflow.set_experiment(experiment_id="0")
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture(scope="module")
def stored(keel: Keel) -> Iterator[TraceService]:  # noqa: F811
    """keel's trace service on the server, as keel's SDK reaches it (over HTTP, as root)."""
    store = open_remote(keel.url, keel.tokens["root"])
    yield remote(TraceService, store)
    store.close()


def new_experiment(name: str) -> str:
    return MlflowClient().create_experiment(name)


def http(keel: Keel, user: str = "root") -> httpx.Client:  # noqa: F811
    return httpx.Client(base_url=keel.url, headers={"Authorization": f"Bearer {keel.tokens[user]}"}, timeout=30)


def grant(keel: Keel, user: str, project: str, role: str) -> None:  # noqa: F811
    if user not in keel.tokens:
        ok(keel.admin.post("/admin/users", json={"name": user}), 201)
        keel.tokens[user] = ok(keel.admin.post(f"/admin/users/{user}/tokens", json={"name": "t"}), 201)["token"]
    ok(keel.admin.put(f"/projects/{project}/grants/{user}", json={"role": role}))


# -- the version probe ---------------------------------------------------------------------------------
def test_the_client_identifies_the_server_version_and_logs_traces_in_order(
    keel: Keel,  # noqa: F811
    stored: TraceService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answer = httpx.get(f"{keel.url}/version")  # unauthenticated, as MLflow's own
    assert answer.status_code == 200 and answer.text == "3.3.0"
    creds = MlflowHostCreds(keel.url, token=keel.tokens["root"])
    RestStore._get_server_version.cache_clear()
    assert RestStore._get_server_version(creds) == Version("3.3.0")  # no "could not identify MLflow server version"
    assert httpx.get(f"{keel.url}/api/3.0/mlflow/server-info").json()["workspaces_enabled"] is False

    # MLflow's default export (a background queue): below 3.4 the client sends a trace's info,
    # then its spans, in one task; it does not send spans over OTLP in tasks of their own
    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "true")
    mlflow.tracing.reset()
    try:
        with mlflow.start_span("probe") as span:
            mlflow.update_current_trace(tags={"queue": "async"})
        mlflow.flush_trace_async_logging(terminate=False)
    finally:
        monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
        mlflow.tracing.reset()
    assert stored.get(span.trace_id[3:], "default").trace.tags == {"queue": "async"}
    with pytest.raises(NotImplementedError, match="less than 3.4"):
        RestStore(lambda: creds).log_spans("0", [span])


# -- writing: @mlflow.trace, start_span, update_current_trace ------------------------------------------
def test_traced_functions_land_as_one_keel_trace_each(keel: Keel, stored: TraceService) -> None:  # noqa: F811
    @mlflow.trace(span_type=SpanType.RETRIEVER)
    def retrieve(question: str) -> list[str]:
        return ["doc-1", "doc-2"]

    @mlflow.trace
    def generate(question: str, docs: list[str]) -> str:
        with mlflow.start_span("format", span_type=SpanType.PARSER) as span:
            span.set_inputs({"n": len(docs)})
            span.set_attributes({"template": "qa-v2", "top_k": 2})
            span.set_outputs("ok")
        return f"{len(docs)} docs for {question}"

    @mlflow.trace(name="answer", span_type=SpanType.CHAIN)
    def answer(question: str) -> str:
        mlflow.update_current_trace(
            tags={"team": "search", "env": "dev"},
            metadata={"mlflow.trace.session": "conv-7", "mlflow.trace.user": "ada", "app.version": "1.4"},
            client_request_id="req-42",
        )
        return generate(question, retrieve(question))

    @mlflow.trace
    def explode(x: int) -> int:
        raise ValueError(f"cannot answer {x}")

    assert answer("why?") == "2 docs for why?"
    good = mlflow.get_last_active_trace_id()
    with pytest.raises(ValueError, match="cannot answer 3"):
        explode(3)
    bad = mlflow.get_last_active_trace_id()

    # keel's side: one trace per MLflow trace, the id without its tr- prefix
    assert good.startswith("tr-") and len(good) == 35
    detail = stored.get(good[3:], "default")
    assert detail.trace.trace_id == good[3:] and detail.trace.name == "answer"
    tree = [(depth, s.name, s.kind) for depth, s in detail.tree()]
    assert tree == [
        (0, "answer", "chain"),
        (1, "retrieve", "retrieval"),
        (1, "generate", "other"),
        (2, "format", "chain"),
    ]
    by_name = {s.name: s for s in detail.spans}
    assert by_name["answer"].inputs == {"question": "why?"} and by_name["answer"].outputs == "2 docs for why?"
    assert by_name["retrieve"].outputs == ["doc-1", "doc-2"]
    fmt = by_name["format"]
    assert fmt.attributes["template"] == "qa-v2" and fmt.attributes["top_k"] == 2  # values decoded, not '"qa-v2"'
    assert fmt.inputs == {"n": 2} and "mlflow.spanInputs" not in fmt.attributes
    assert detail.trace.conversation_id == "conv-7" and detail.trace.user_id == "ada"
    assert detail.trace.tags["team"] == "search" and detail.trace.tags["env"] == "dev"
    assert detail.trace.status == "ok" and detail.trace.span_count == 4
    failed = stored.get(bad[3:], "default")
    [span] = failed.spans
    assert failed.trace.status == "error" and span.status == "error"
    assert span.status_message == "ValueError: cannot answer 3"
    assert span.events[0]["name"] == "exception"
    assert span.events[0]["attributes"]["exception.type"] == "ValueError"

    # and MLflow reads them back as it wrote them
    trace = mlflow.get_trace(good)
    assert trace.info.trace_id == good and trace.info.state.value == "OK"
    assert trace.info.tags["team"] == "search" and trace.info.tags["mlflow.traceName"] == "answer"
    assert trace.info.trace_metadata["mlflow.trace.session"] == "conv-7"
    assert trace.info.trace_metadata["mlflow.trace.user"] == "ada"
    assert trace.info.trace_metadata["app.version"] == "1.4"
    assert trace.info.client_request_id == "req-42"
    assert trace.info.request_preview == '{"question": "why?"}'
    assert trace.info.response_preview == '"2 docs for why?"'
    spans = {s.name: s for s in trace.data.spans}
    assert spans["retrieve"].span_type == "RETRIEVER" and spans["retrieve"].outputs == ["doc-1", "doc-2"]
    assert spans["retrieve"].parent_id == spans["answer"].span_id
    assert spans["format"].attributes["top_k"] == 2 and spans["format"].inputs == {"n": 2}
    assert not any(k.startswith("mlflow.trace.") for k in spans["answer"].attributes)  # trace info is not a span's
    errored = MlflowClient().get_trace(bad)
    assert errored.info.state.value == "ERROR"
    [span] = errored.data.spans
    assert span.status.status_code.value == "ERROR" and span.status.description == "ValueError: cannot answer 3"
    assert span.events[0].name == "exception" and span.events[0].attributes["exception.type"] == "ValueError"


def test_an_llm_span_keeps_its_model_and_tokens(stored: TraceService) -> None:
    with mlflow.start_span("chat", span_type=SpanType.CHAT_MODEL) as span:
        span.set_inputs({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is 17 + 25?"}]})
        span.set_attributes(
            {  # what mlflow.openai.autolog() sets on its span
                "mlflow.llm.model": "gpt-4o-mini",
                "mlflow.chat.tokenUsage": {"input_tokens": 14, "output_tokens": 2, "total_tokens": 16},
                "mlflow.message.format": "openai",
            }
        )
        span.set_outputs({"choices": [{"message": {"role": "assistant", "content": "42"}}]})

    detail = stored.get(span.trace_id[3:], "default")
    [kept] = detail.spans
    assert (kept.kind, kept.model, kept.input_tokens, kept.output_tokens) == ("llm", "gpt-4o-mini", 14, 2)
    assert (detail.trace.model, detail.trace.input_tokens, detail.trace.output_tokens) == ("gpt-4o-mini", 14, 2)
    [back] = mlflow.get_trace(span.trace_id).data.spans
    assert back.span_type == "CHAT_MODEL" and back.attributes["mlflow.llm.model"] == "gpt-4o-mini"
    assert back.attributes["mlflow.chat.tokenUsage"] == {"input_tokens": 14, "output_tokens": 2, "total_tokens": 16}
    assert not any(k.startswith("keel.") for k in back.attributes)  # keel's copies are not shown to MLflow


def test_large_payloads_are_kept_whole(stored: TraceService) -> None:
    page = "lorem ipsum " * 100_000  # 1.2 MB: over keel's inline size (object store) and 1 MiB
    with mlflow.start_span("read-page", span_type=SpanType.RETRIEVER) as span:
        span.set_inputs({"url": "https://example.com/long"})
        span.set_outputs({"text": page})
    kept = stored.get(span.trace_id[3:], "default").spans[0]
    assert kept.outputs["$object"] and not kept.truncated  # in the object store, not cut
    [back] = mlflow.get_trace(span.trace_id).data.spans
    assert back.outputs == {"text": page} and back.inputs == {"url": "https://example.com/long"}


def test_a_trace_inside_a_run_is_linked_to_it(stored: TraceService) -> None:
    with mlflow.start_run() as run:
        with mlflow.start_span("in-run"):
            pass
    trace_id = mlflow.get_last_active_trace_id()
    assert stored.get(trace_id[3:], "default").trace.run_id == run.info.run_id
    found = mlflow.search_traces(run_id=run.info.run_id, return_type="list")
    assert [t.info.trace_id for t in found] == [trace_id]
    assert found[0].info.trace_metadata["mlflow.sourceRun"] == run.info.run_id


def test_the_documented_example_runs_as_written(stored: TraceService) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "traces.md").read_text()
    section = doc[doc.index("\n## MLflow tracing\n") :]
    start = section.index("```python\n") + len("```python\n")
    namespace: dict[str, Any] = {}
    exec(compile(section[start : section.index("\n```", start)], "docs/traces.md", "exec"), namespace)  # noqa: S102
    trace = namespace["trace"]
    assert [s.name for s in trace.data.spans] == ["answer", "retrieve"]
    assert (
        trace.info.tags["env"] == "prod"
        and trace.info.experiment_id == mlflow.get_experiment_by_name("chat-bot").experiment_id
    )
    kept = stored.get(trace.info.trace_id[3:], "chat-bot")
    assert kept.trace.conversation_id == "conv-7" and kept.trace.tags == {"env": "prod"}


# -- reading: search and get ------------------------------------------------------------------------------
def test_search_traces_filters_orders_and_pages(keel: Keel) -> None:  # noqa: F811
    experiment = new_experiment("tracing-search")
    mlflow.set_experiment(experiment_id=experiment)

    @mlflow.trace
    def step(i: int) -> int:
        mlflow.update_current_trace(tags={"parity": "even" if i % 2 == 0 else "odd"})
        if i == 3:
            raise RuntimeError("three")
        with mlflow.start_span("lookup", span_type=SpanType.RETRIEVER if i == 4 else SpanType.TOOL):
            pass
        return i

    ids = []
    for i in range(5):
        try:
            step(i)
        except RuntimeError:
            pass
        ids.append(mlflow.get_last_active_trace_id())

    def search(**kwargs: Any) -> list[str]:
        traces = mlflow.search_traces(locations=[experiment], return_type="list", **kwargs)
        return [t.info.trace_id for t in traces]

    assert search() == ids[::-1]  # newest first
    assert search(order_by=["timestamp_ms ASC"]) == ids
    assert search(filter_string="tags.parity = 'even'") == [ids[4], ids[2], ids[0]]
    assert search(filter_string="status = 'ERROR'") == [ids[3]]
    assert search(filter_string="attributes.status = 'OK' AND tags.parity = 'odd'") == [ids[1]]
    assert search(filter_string="span.type = 'RETRIEVER'") == [ids[4]]
    assert search(filter_string="execution_time_ms >= 0", max_results=2) == [ids[4], ids[3]]
    assert search(filter_string=f"trace.timestamp_ms < {mlflow.get_trace(ids[1]).info.request_time}") == [ids[0]]

    client = MlflowClient()
    first = client.search_traces(locations=[experiment], max_results=2, order_by=["timestamp_ms ASC"])
    assert [t.info.trace_id for t in first] == ids[:2] and first.token
    rest = client.search_traces(
        locations=[experiment], max_results=10, order_by=["timestamp_ms ASC"], page_token=first.token
    )
    assert [t.info.trace_id for t in rest] == ids[2:] and not rest.token
    assert {len(t.data.spans) for t in rest} == {1, 2}  # spans come with them (batchGet)
    infos = client.search_traces(locations=[experiment], include_spans=False, filter_string="tags.parity = 'odd'")
    assert [t.info.tags["parity"] for t in infos] == ["odd", "odd"] and all(not t.data.spans for t in infos)

    both = mlflow.search_traces(locations=[experiment, "0"], return_type="list", max_results=500)
    assert set(ids) <= {t.info.trace_id for t in both}
    assert {t.info.experiment_id for t in both if t.info.trace_id in ids} == {experiment}

    with pytest.raises(MlflowException, match="INVALID_PARAMETER_VALUE") as caught:
        search(filter_string="span.attributes.foo = 'x'")
    assert "not searchable in keel" in str(caught.value)


def test_a_trace_logged_with_keels_sdk_reads_back_in_mlflow(
    keel: Keel,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEEL_URI", keel.url)
    monkeypatch.setenv("KEEL_TOKEN", keel.tokens["root"])
    monkeypatch.setenv("KEEL_PROJECT", "default")

    @keel_sdk.trace
    def ask(question: str) -> str:
        with keel_sdk.span("search", kind="retrieval", inputs={"q": question}) as s:
            s.set_outputs(["kb-1"])
        with keel_sdk.span("llm", kind="llm", attributes={"gen_ai.request.model": "gpt-4o"}) as s:
            s.set_attributes({"gen_ai.usage.input_tokens": 30, "gen_ai.usage.output_tokens": 5})
            s.set_outputs("forty-two")
        return "forty-two"

    try:
        with keel_sdk.span("session", kind="chain", conversation_id="c-9", user_id="grace", tags={"source": "sdk"}):
            ask("meaning?")
        assert keel_sdk.traces.flush(10)
        [found] = keel_sdk.traces.search(filter="conversation_id = 'c-9'")
        trace_id = found.trace_id
    finally:
        sessions.reset()

    trace = MlflowClient().get_trace(f"tr-{trace_id}")
    assert trace.info.trace_id == f"tr-{trace_id}" and trace.info.experiment_id == "0"
    assert trace.info.trace_metadata["mlflow.trace.session"] == "c-9"
    assert trace.info.trace_metadata["mlflow.trace.user"] == "grace"
    assert json.loads(trace.info.trace_metadata["mlflow.trace.tokenUsage"])["total_tokens"] == 35
    assert trace.info.tags["source"] == "sdk" and trace.info.tags["mlflow.traceName"] == "session"
    spans = {s.name.rsplit(".", 1)[-1]: s for s in trace.data.spans}
    assert spans["search"].span_type == "RETRIEVER" and spans["search"].inputs == {"q": "meaning?"}
    assert spans["search"].parent_id == spans["ask"].span_id and spans["ask"].parent_id == spans["session"].span_id
    llm = spans["llm"]
    assert llm.span_type == "LLM" and llm.outputs == "forty-two"
    assert llm.attributes["mlflow.llm.model"] == "gpt-4o"
    assert llm.attributes["mlflow.chat.tokenUsage"] == {"input_tokens": 30, "output_tokens": 5, "total_tokens": 35}
    assert spans["ask"].inputs == {"question": "meaning?"}
    listed = mlflow.search_traces(
        locations=["0"], filter_string="metadata.`mlflow.trace.session` = 'c-9'", return_type="list"
    )
    assert [t.info.trace_id for t in listed] == [f"tr-{trace_id}"]


# -- tags and feedback -----------------------------------------------------------------------------------
def test_tags_are_set_while_the_trace_runs_and_feedback_becomes_a_score(stored: TraceService) -> None:
    with mlflow.start_span("tagged") as span:
        mlflow.update_current_trace(tags={"stage": "canary"})
        MlflowClient().set_trace_tag(span.trace_id, "reviewed", "no")  # on the live trace: in memory
    assert mlflow.get_trace(span.trace_id).info.tags["reviewed"] == "no"
    found = mlflow.search_traces(locations=["0"], filter_string="tags.stage = 'canary'", return_type="list")
    assert [t.info.trace_id for t in found] == [span.trace_id]

    with pytest.raises(RestException) as caught:  # a stored trace's tags do not change
        MlflowClient().set_trace_tag(span.trace_id, "reviewed", "yes")
    assert caught.value.error_code == "NOT_IMPLEMENTED" and "update_current_trace" in caught.value.message
    with pytest.raises(RestException) as caught:
        MlflowClient().delete_traces("0", trace_ids=[span.trace_id])
    assert caught.value.error_code == "NOT_IMPLEMENTED"

    mlflow.log_feedback(
        trace_id=span.trace_id,
        name="helpful",
        value=True,
        rationale="answered the question",
        source=AssessmentSource(source_type="HUMAN", source_id="ada"),
    )
    [score] = stored.get(span.trace_id[3:], "default").scores
    assert (score.key, score.value, score.comment, score.source) == ("helpful", 1.0, "answered the question", "user")
    [assessment] = mlflow.get_trace(span.trace_id).info.assessments
    assert assessment.name == "helpful" and assessment.value == 1.0 and assessment.rationale == "answered the question"


# -- refusals --------------------------------------------------------------------------------------------
def _start(client: httpx.Client, trace_id: str, experiment: str = "0", **info: Any) -> httpx.Response:
    body = {
        "trace": {
            "trace_info": {
                "trace_id": trace_id,
                "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment}},
                "request_time": "2026-12-07T10:00:00Z",
                "state": "OK",
                **info,
            }
        }
    }
    return client.post("/api/3.0/mlflow/traces", json=body)


def _span(trace_hex: str, span_hex: str, name: str = "s", parent: str | None = None) -> dict[str, Any]:
    return {
        "trace_id": base64.b64encode(bytes.fromhex(trace_hex)).decode(),
        "span_id": base64.b64encode(bytes.fromhex(span_hex)).decode(),
        "parent_span_id": base64.b64encode(bytes.fromhex(parent)).decode() if parent else None,
        "name": name,
        "start_time_unix_nano": 1_796_000_000_000_000_000,
        "end_time_unix_nano": 1_796_000_000_500_000_000,
        "status": {"code": "STATUS_CODE_OK", "message": ""},
        "attributes": {"mlflow.spanType": '"CHAIN"', "mlflow.spanInputs": '{"q": 1}'},
        "events": [],
    }


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code, body
    return str(body["message"])


def test_malformed_trace_payloads_answer_invalid_parameter_value(keel: Keel, stored: TraceService) -> None:  # noqa: F811
    trace_hex = "ab" * 16
    with http(keel) as client:
        assert "trace_info" in _error(
            client.post("/api/3.0/mlflow/traces", json={"trace": {}}), 400, "INVALID_PARAMETER_VALUE"
        )
        assert "invalid trace id" in _error(_start(client, "tr-nothex"), 400, "INVALID_PARAMETER_VALUE")
        no_experiment = client.post(
            "/api/3.0/mlflow/traces", json={"trace": {"trace_info": {"trace_id": f"tr-{trace_hex}"}}}
        )
        assert "experiment_id" in _error(no_experiment, 400, "INVALID_PARAMETER_VALUE")
        assert "is not JSON" in _error(
            client.post("/api/3.0/mlflow/traces", content=b"{nope", headers={"content-type": "application/json"}),
            400,
            "INVALID_PARAMETER_VALUE",
        )

        started = ok(_start(client, f"tr-{trace_hex}", tags={"k": "v"}))["trace"]["trace_info"]
        location = started["tags"]["mlflow.artifactLocation"]
        assert location.startswith(f"mlflow-artifacts:/0/traces/tr-{trace_hex}/")
        upload = "/api/2.0/mlflow-artifacts/artifacts/" + location.split(":/", 1)[1] + "/traces.json"
        assert "not JSON" in _error(client.put(upload, content=b"[not json"), 400, "INVALID_PARAMETER_VALUE")
        assert "spans" in _error(client.put(upload, json={"spans": []}), 400, "INVALID_PARAMETER_VALUE")
        other = _span("cd" * 16, "01" * 8)
        assert "span of trace" in _error(client.put(upload, json={"spans": [other]}), 400, "INVALID_PARAMETER_VALUE")
        bad_id = {**_span(trace_hex, "02" * 8), "span_id": "not-base64!"}
        assert "span_id" in _error(client.put(upload, json={"spans": [bad_id]}), 400, "INVALID_PARAMETER_VALUE")
        # one span the store refuses among valid ones: the valid ones are kept, the answer says so
        root, child = _span(trace_hex, "03" * 8, "root"), _span(trace_hex, "04" * 8, "child", parent="03" * 8)
        nameless = {**_span(trace_hex, "05" * 8), "name": ""}
        refused = _error(client.put(upload, json={"spans": [root, child, nameless]}), 400, "INVALID_PARAMETER_VALUE")
        assert "1 span(s)" in refused and "2 stored" in refused and "name" in refused
        detail = stored.get(trace_hex, "default")
        assert sorted(s.name for s in detail.spans) == ["child", "root"] and detail.trace.tags["k"] == "v"
        assert detail.spans[0].inputs == {"q": 1}
        again = ok(_start(client, f"tr-{trace_hex}"))["trace"]["trace_info"]  # a retried start: stored already
        assert (
            again["tags"]["mlflow.trace.spansLocation"] == "TRACKING_STORE"
            and "mlflow.artifactLocation" not in again["tags"]
        )
        ok(client.put(upload, json={"spans": [root, child]}))  # a retried upload stores nothing twice
        assert stored.get(trace_hex, "default").trace.span_count == 2
        # a location that was not answered by StartTraceV3
        forged = upload.replace(location.rsplit("/", 2)[1], "0" * 64)
        assert "not started" in _error(client.put(forged, json={"spans": [root]}), 404, "RESOURCE_DOES_NOT_EXIST")
        assert "invalid trace id" in _error(
            client.get("/api/3.0/mlflow/traces/get", params={"trace_id": "x"}), 400, "INVALID_PARAMETER_VALUE"
        )
        unsupported = client.post("/api/3.0/mlflow/issues/search", json={})
        assert "not supported by keel" in _error(unsupported, 501, "NOT_IMPLEMENTED")


def test_a_trace_of_an_experiment_the_caller_cannot_see_does_not_exist(keel: Keel) -> None:  # noqa: F811
    experiment = new_experiment("tracing-private")
    mlflow.set_experiment(experiment_id=experiment)
    with mlflow.start_span("private"):
        pass
    hidden = mlflow.get_last_active_trace_id()
    grant(keel, "otto", "default", "writer")  # otto sees the default experiment only
    with http(keel, "otto") as otto:
        for trace_id in (hidden, "tr-" + "9" * 32):  # hidden and unknown: the same answer
            message = _error(otto.get(f"/api/3.0/mlflow/traces/{trace_id}"), 404, "RESOURCE_DOES_NOT_EXIST")
            assert message.startswith(f"Trace with ID {trace_id} not found")
            _error(
                otto.get("/api/3.0/mlflow/traces/get", params={"trace_id": trace_id}), 404, "RESOURCE_DOES_NOT_EXIST"
            )
        assert otto.get("/api/3.0/mlflow/traces/batchGet", params={"trace_ids": [hidden]}).json() == {"traces": []}
        search = {"locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment}}]}
        message = _error(otto.post("/api/3.0/mlflow/traces/search", json=search), 404, "RESOURCE_DOES_NOT_EXIST")
        assert "tracing-private" not in message
        refused = _start(otto, "tr-" + "8" * 32, experiment)
        assert "tracing-private" not in _error(refused, 404, "RESOURCE_DOES_NOT_EXIST")
    with http(keel, "rita") as rita:  # a reader of every project reads traces but cannot log one
        assert ok(rita.get(f"/api/3.0/mlflow/traces/{hidden}"))["trace"]["trace_info"]["trace_id"] == hidden
        _error(_start(rita, "tr-" + "7" * 32, experiment), 403, "PERMISSION_DENIED")
