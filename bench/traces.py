"""Traces: keel vs MLflow tracing, side by side in one run.

    .venv/bin/python bench/traces.py --mlflow-python bench/.venv-mlflow/bin/python
    .venv/bin/python bench/traces.py --quick --skip-mlflow        # a smoke run

Three parts (issue 18, "Performance"):

1. **SDK overhead per span.** A no-op function ``f(x) -> x`` called ``--spans`` times
   (20,000) untraced, then decorated with ``@keel.trace`` (and ``@mlflow.trace`` in MLflow's
   venv), in a fresh process per tool and shape: every call a root span (a trace of its own),
   or every call a child of one enclosing span. The overhead is (traced - untraced) / calls, in
   the calling thread, while the tool's background exporter runs as it would in an app (in
   keel's case the writer thread stores the spans in SQLite meanwhile, in the same process,
   and takes its share of the GIL); the calling thread's own CPU time per span
   (``time.thread_time``) is printed below it. Then
   the time until every span is stored (keel: ``keel.traces.flush()`` into the workspace's
   SQLite store; MLflow: ``mlflow.flush_trace_async_logging()`` into a SQLite tracking store),
   as a separate figure, and the spans found stored afterwards. MLflow gets ``--mlflow-spans``
   calls (2,000): its export takes milliseconds per trace, and a burst fills its export queue
   (traces it drops show up as "stored" below "sent").
2. **OTLP ingestion.** OTLP/HTTP protobuf bodies (``ExportTraceServiceRequest``, built once with
   ``opentelemetry-proto`` before the clock starts: ``--traces-per-request`` traces of 50 spans
   with OpenTelemetry GenAI attributes and messages, like an instrumented agent) posted by
   ``--clients`` threads (8), each on its own keep-alive connection, to ``POST /v1/traces`` of a
   keel server (uvicorn, ``python -m keel.server``) and of ``mlflow server`` (its SQLite store),
   with the same worker count (``--workers``, repeatable: 1 and 2), and MLflow once more as it
   starts by default (4 workers) against keel's default (1), for at most ``--otlp-spans`` spans
   per client or ``--duration`` seconds. Spans are counted in each store after the server stops.
   The same bodies decoded and written in this process (``keel.integrations.otlp.decode`` +
   ``TraceService.ingest``, one thread, no HTTP) show keel's server-side cost per span.
3. **Search, stats and the trace page over ``--search-spans`` spans** (1,000,000: 100,000
   traces of 10 spans over 30 days, 5 models, 100 prompt versions, 20,000 conversations, 3% of
   traces failed, plus one 500-span trace with payloads). Generated once through
   ``TraceService.write_batch`` (the generation rate is printed) and cached in
   ``--cache`` (default: the system temp folder), keyed by :data:`DATA_VERSION`, so re-runs reuse
   it (the store migrates on open). Timed in this process, median of ``--reps`` after a
   warm-up: searches (filter + order, first 100), stats (by model, by day), and the trace page:
   ``TraceService.get`` of the 500-span trace, and the web UI's trace page over HTTP
   (``Server-Timing``) when this keel serves one. SQLite by default; ``--database URL`` runs
   the same on another database (e.g. PostgreSQL), which this bench does not start itself.

Benchmarks assert nothing: they print. Machines are noisy: compare ratios taken in the same
run, and use ``--rounds 3`` for medians of the SDK figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from tracking import DEFAULT_MLFLOW_PYTHON, fmt_ratio, machine_lines  # noqa: E402

from server import Server, keel_env, keel_token, mlflow_env, start_keel, start_mlflow  # noqa: E402

RESULT = "@@RESULT "
#: Bump when the generated search data changes: a cached database of another version is rebuilt.
DATA_VERSION = "traces-2"
PROJECT = "bench"
MLFLOW_DEFAULT_WORKERS = 4  # `mlflow server --workers` (keel's server starts 1)
LOAD_PROJECT = "load"
BASE_NS = 1_764_547_200_000_000_000  # 2025-12-01T00:00:00Z: the generated traces end here
DAY_NS = 86_400 * 10**9
TARGETS = {
    "sdk": (10.0, "<= 10 us", False),
    "ingest": (50_000.0, ">= 50,000/s", True),
    "search": (100.0, "<= 100 ms", False),
    "page": (100.0, "<= 100 ms", False),
}
MODELS = (
    ("gpt-4o", 0.35),
    ("gpt-4o-mini", 0.35),
    ("claude-3-5-sonnet", 0.2),
    ("llama-3-70b", 0.099),
    ("o1-preview", 0.001),
)
SEARCHES = (
    ("status = 'error' and latency > 1000", "latency desc", "failed and slow, slowest first"),
    ("model = 'gpt-4o'", None, "one model, newest first"),
    ("model = 'o1-preview'", None, "a rare model (0.1% of traces), newest first"),
    ("conversation_id = 'conv-00042'", None, "one conversation"),
    ("prompt = 'support@1.3.0'", None, "one prompt version, newest first"),
    ("latency > 5000", "cost desc", "slow traces, most expensive first"),
)


# -- 1. SDK overhead ---------------------------------------------------------------------------
_KEEL_SDK = r"""
import json, os, sqlite3, sys, time
n, shape = int(sys.argv[1]), sys.argv[2]
import keel
from keel.sdk import traces

def noop(x):
    return x

traced = keel.trace(noop)
for i in range(1000):  # warm-up: the workspace, the writer thread, the store's statements
    traced(i)
traces.flush()

def count():
    with sqlite3.connect(".keel/keel.db") as conn:
        return conn.execute("SELECT COUNT(*) FROM spans").fetchone()[0]

before = count()

cpu = [0.0]

def loop(fn):
    c0 = time.thread_time()
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    cpu[0] = time.thread_time() - c0
    return time.perf_counter() - t0

untraced = min(loop(noop) for _ in range(3))
untraced_cpu = cpu[0]
t0 = time.perf_counter()
if shape == "root":
    calls = loop(traced)
else:
    with keel.span("outer"):
        calls = loop(traced)
t1 = time.perf_counter()
delivered = traces.flush(600)
t2 = time.perf_counter()
print("@@RESULT " + json.dumps({"calls": n, "untraced": untraced, "traced": calls, "flush": t2 - t1,
      "cpu": cpu[0] - untraced_cpu,
      "total": t2 - t0, "stored": count() - before, "sent": n + (shape != "root"), "delivered": delivered,
      "counters": traces.counters()}))
"""

_MLFLOW_SDK = r"""
import json, os, sqlite3, sys, time
n, shape = int(sys.argv[1]), sys.argv[2]
os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///" + os.path.abspath("mlflow.db")
import logging
import mlflow
logging.getLogger("mlflow").setLevel(logging.ERROR)
mlflow.set_experiment("bench")

def noop(x):
    return x

traced = mlflow.trace(noop)
for i in range(50):
    traced(i)
mlflow.flush_trace_async_logging()

def count():
    with sqlite3.connect("mlflow.db") as conn:
        return conn.execute("SELECT COUNT(*) FROM spans").fetchone()[0]

before = count()

cpu = [0.0]

def loop(fn):
    c0 = time.thread_time()
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    cpu[0] = time.thread_time() - c0
    return time.perf_counter() - t0

untraced = min(loop(noop) for _ in range(3))
untraced_cpu = cpu[0]
t0 = time.perf_counter()
if shape == "root":
    calls = loop(traced)
else:
    with mlflow.start_span("outer"):
        calls = loop(traced)
t1 = time.perf_counter()
mlflow.flush_trace_async_logging()
t2 = time.perf_counter()
print("@@RESULT " + json.dumps({"calls": n, "untraced": untraced, "traced": calls, "flush": t2 - t1,
      "cpu": cpu[0] - untraced_cpu,
      "total": t2 - t0, "stored": count() - before, "sent": n + (shape != "root"), "delivered": True}))
"""


def run_worker(
    python: str, code: str, args: list[str], env: dict[str, str], folder: Path, timeout: float
) -> dict[str, Any]:
    """Run a worker script in ``folder``; its result dict (raises with the worker's stderr)."""
    out = subprocess.run(
        [python, "-c", code, *args], cwd=folder, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    lines = [x for x in out.stdout.splitlines() if x.startswith(RESULT)]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"exit {out.returncode}: {(out.stderr or out.stdout)[-1500:]}")
    return json.loads(lines[-1][len(RESULT) :])  # type: ignore[no-any-return]


def measure_sdk(args: argparse.Namespace, tmp: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per tool and shape, the result of each round (fresh process and store every time)."""
    tools = [("keel", args.keel_python, _KEEL_SDK, args.spans)]
    if args.mlflow_python:
        tools.append(("mlflow", args.mlflow_python, _MLFLOW_SDK, args.mlflow_spans))
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for round_ in range(args.rounds):
        for shape in ("root", "child"):
            for tool, python, code, n in tools:
                folder = tmp / f"sdk-{tool}-{shape}-{round_}"
                folder.mkdir()
                env = keel_env() if tool == "keel" else mlflow_env()
                if tool == "keel":
                    env["KEEL_PROJECT"] = PROJECT
                    init = "from keel.sdk.workspace import init_workspace; init_workspace('.')"
                    subprocess.run([python, "-c", init], cwd=folder, env=env, check=True, capture_output=True)
                print(f"  .. {tool:<6} sdk, {n:,} {shape} spans (round {round_ + 1})", file=sys.stderr, flush=True)
                try:
                    result = run_worker(python, code, [str(n), shape], env, folder, args.timeout)
                except Exception as exc:  # noqa: BLE001 - reported, the rest goes on
                    print(f"     FAILED: {str(exc)[-600:]}", file=sys.stderr)
                    continue
                out.setdefault(tool, {}).setdefault(shape, []).append(result)
                shutil.rmtree(folder, ignore_errors=True)
    return out


# -- 2. OTLP ingestion -------------------------------------------------------------------------
def otlp_bodies(client: int, count: int, traces_per_request: int, seed: int = 7) -> list[bytes]:
    """``count`` ``ExportTraceServiceRequest`` bodies (protobuf) of ``traces_per_request`` traces of
    50 spans: an agent root, 16 GenAI chat calls (with messages), 16 tool calls, 17 retrievals."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

    rng = random.Random(seed * 1000 + client)

    def value(v: Any) -> AnyValue:
        if isinstance(v, bool):
            return AnyValue(bool_value=v)
        if isinstance(v, int):
            return AnyValue(int_value=v)
        if isinstance(v, float):
            return AnyValue(double_value=v)
        if isinstance(v, list):
            return AnyValue(array_value=ArrayValue(values=[value(x) for x in v]))
        return AnyValue(string_value=str(v))

    def attrs(d: dict[str, Any]) -> list[KeyValue]:
        return [KeyValue(key=k, value=value(v)) for k, v in d.items()]

    resource = Resource(attributes=attrs({"service.name": "support-agent", "deployment.environment": "prod"}))
    scope = InstrumentationScope(name="opentelemetry.instrumentation.openai_v2", version="2.4b0")
    ok, error = Status(code=Status.STATUS_CODE_OK), Status(code=Status.STATUS_CODE_ERROR, message="tool timed out")
    bodies = []
    for r in range(count):
        spans = []
        for t in range(traces_per_request):
            trace_id = rng.getrandbits(128).to_bytes(16, "big")
            root = rng.getrandbits(64).to_bytes(8, "big")
            start = BASE_NS + (client * 1_000_000 + r * traces_per_request + t) * 1_000_000
            conversation = f"conv-{client}-{r}"
            agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support",
                     "gen_ai.conversation.id": conversation, "user.id": f"u{r % 97}"}  # fmt: skip
            spans.append(Span(trace_id=trace_id, span_id=root, name="invoke_agent support", kind=Span.SPAN_KIND_SERVER,
                              start_time_unix_nano=start, end_time_unix_nano=start + 2_400_000_000, status=ok,
                              attributes=attrs(agent)))  # fmt: skip
            for j in range(49):
                span_id = rng.getrandbits(64).to_bytes(8, "big")
                s0 = start + j * 40_000_000
                if j % 3 == 0:
                    model = ("gpt-4o", "gpt-4o-mini")[j % 2]
                    question = f"Where is my order {r}-{j}? It was due last week and the tracking page is empty."
                    attributes = {
                        "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": model,
                        "gen_ai.response.model": model + "-2024-08-06", "gen_ai.request.temperature": 0.2,
                        "gen_ai.request.max_tokens": 512, "gen_ai.usage.input_tokens": 350 + j,
                        "gen_ai.usage.output_tokens": 60 + j, "gen_ai.response.finish_reasons": ["stop"],
                        "gen_ai.response.id": f"chatcmpl-{r}-{t}-{j}", "server.address": "api.openai.com",
                        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text",
                            "content": question}]}]),
                        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text",
                            "content": "Your order shipped yesterday; the tracking number is on its way."}],
                            "finish_reason": "stop"}]),
                    }  # fmt: skip
                    name, kind = f"chat {model}", Span.SPAN_KIND_CLIENT
                elif j % 3 == 1:
                    attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_order",
                                  "gen_ai.tool.call.id": f"call_{r}_{j}", "order.id": f"o-{r}-{j}"}  # fmt: skip
                    name, kind = "execute_tool lookup_order", Span.SPAN_KIND_INTERNAL
                else:
                    attributes = {"db.system": "qdrant", "db.operation": "search", "retrieval.top_k": 5,
                                  "retrieval.collection": "help-center"}  # fmt: skip
                    name, kind = "retrieve help-center", Span.SPAN_KIND_INTERNAL
                failed = j == 47 and t % 10 == 0
                spans.append(Span(trace_id=trace_id, span_id=span_id, parent_span_id=root, name=name, kind=kind,
                                  start_time_unix_nano=s0, end_time_unix_nano=s0 + 35_000_000,
                                  status=error if failed else ok, attributes=attrs(attributes)))  # fmt: skip
        request = ExportTraceServiceRequest(
            resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(scope=scope, spans=spans)])]
        )
        bodies.append(request.SerializeToString())
    return bodies


@dataclass
class ClientResult:
    sent: int = 0
    requests: int = 0
    ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def post_loop(server: Server, headers: dict[str, str], bodies: list[bytes], spans_per_body: int,
              start: threading.Barrier, deadline: list[float], result: ClientResult) -> None:  # fmt: skip
    conn = server.connection()
    try:
        start.wait()
        for body in bodies:
            if time.perf_counter() > deadline[0]:
                break
            t0 = time.perf_counter()
            conn.request("POST", "/v1/traces", body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read()
            result.ms.append((time.perf_counter() - t0) * 1000)
            if response.status != 200:
                result.errors.append(f"{response.status}: {answer[:200]!r}")
                break
            result.sent += spans_per_body
            result.requests += 1
    except Exception as exc:  # noqa: BLE001 - a bench reports, it does not stop
        result.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def count_spans(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM spans").fetchone()[0])


def measure_otlp(tool: str, args: argparse.Namespace, tmp: Path, workers: int,
                 bodies: list[list[bytes]]) -> dict[str, Any] | None:  # fmt: skip
    """Post the clients' bodies to a fresh server; the figures, and the spans stored."""
    folder = tmp / f"otlp-{tool}-w{workers}"
    folder.mkdir()
    print(f"  .. {tool:<6} OTLP ingest, {workers} worker(s), {args.clients} clients", file=sys.stderr, flush=True)
    server: Server | None = None
    spans_per_body = 50 * args.traces_per_request
    try:
        if tool == "keel":
            token = keel_token(args.keel_python, f"sqlite:///{folder / 'keel.db'}")
            server = start_keel(args.keel_python, folder, workers, token)
            headers = {**server.headers, "x-keel-project": LOAD_PROJECT}
            database = folder / "keel.db"
        else:
            server = start_mlflow(args.mlflow_python, folder, workers)
            experiment = server.ok("POST", "/api/2.0/mlflow/experiments/create", {"name": LOAD_PROJECT})[
                "experiment_id"
            ]
            headers = {"x-mlflow-experiment-id": str(experiment)}
            database = folder / "mlflow.db"
        headers["Content-Type"] = "application/x-protobuf"
        # one request first: a missing route fails here, not in 8 threads
        probe = server.connection()
        probe.request("POST", "/v1/traces", body=otlp_bodies(999, 1, 1)[0], headers=headers)
        response = probe.getresponse()
        text = response.read()
        probe.close()
        if response.status != 200:
            return {"error": f"POST /v1/traces -> {response.status}: {text[:200]!r}"}
        before = count_spans(database)
        results = [ClientResult() for _ in bodies]
        start = threading.Barrier(len(bodies) + 1)
        deadline = [float("inf")]
        threads = [
            threading.Thread(target=post_loop, args=(server, headers, b, spans_per_body, start, deadline, results[i]),
                             daemon=True)
            for i, b in enumerate(bodies)
        ]  # fmt: skip
        for thread in threads:
            thread.start()
        deadline[0] = time.perf_counter() + args.duration
        start.wait()
        t0 = time.perf_counter()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - t0
        server.stop()
        server = None
        stored = count_spans(database) - before
        sent = sum(r.sent for r in results)
        ms = [x for r in results for x in r.ms]
        return {
            "seconds": seconds,
            "sent": sent,
            "stored": stored,
            "rate": stored / seconds if seconds else None,
            "requests": sum(r.requests for r in results),
            "p50": percentile(ms, 0.5),
            "p95": percentile(ms, 0.95),
            "errors": [e for r in results for e in r.errors][:5],
        }
    except Exception as exc:  # noqa: BLE001 - reported, the other measurements go on
        print(f"     FAILED: {exc}", file=sys.stderr)
        return {"error": str(exc)[:300]}
    finally:
        if server is not None:
            server.stop()


def measure_otlp_in_process(args: argparse.Namespace, tmp: Path, bodies: list[bytes]) -> dict[str, Any]:
    """keel's server-side work without HTTP: decode each body and ingest it, one thread."""
    from keel.integrations.otlp import decode
    from keel.services.traces import TraceService
    from keel.services.workspace import open_store

    folder = tmp / "otlp-in-process"
    folder.mkdir()
    store = open_store(f"sqlite:///{folder / 'keel.db'}", str(folder / "objects"), cached=False)
    try:
        service = TraceService(store)
        service.ingest(decode(bodies[0], "application/x-protobuf").spans, LOAD_PROJECT)  # warm-up
        decode_s = ingest_s = 0.0
        spans = stored = 0
        for body in bodies[1:]:
            t0 = time.perf_counter()
            decoded = decode(body, "application/x-protobuf")
            t1 = time.perf_counter()
            result = service.ingest(decoded.spans, LOAD_PROJECT)
            t2 = time.perf_counter()
            decode_s += t1 - t0
            ingest_s += t2 - t1
            spans += len(decoded)
            stored += result.stored
    finally:
        store.close()
    return {"spans": spans, "stored": stored, "decode_us": decode_s / spans * 1e6, "ingest_us": ingest_s / spans * 1e6,
            "rate": spans / (decode_s + ingest_s)}  # fmt: skip


# -- 3. search, stats, trace page over 1M spans -------------------------------------------------
def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    x = rng.random()
    for name, weight in weighted:
        x -= weight
        if x < 0:
            return name
    return weighted[0][0]


def generated_trace(rng: random.Random, i: int, n_traces: int) -> list[dict[str, Any]]:
    """Trace ``i`` of the search data: 10 spans (agent, retrieval, rerank, 3 LLM calls, 2 tools,
    a guardrail, an embedding), spread over 30 days; 3% of traces have a failed tool call."""
    trace_id = f"{rng.getrandbits(128) | 1:032x}"
    start = BASE_NS - 30 * DAY_NS + i * (30 * DAY_NS // n_traces)
    latency = int(rng.lognormvariate(6.5, 0.9) * 1e6)  # median ~670 ms, p95 ~3 s
    failed = rng.random() < 0.03
    model = _pick(rng, MODELS)
    prompt = f"{('support', 'billing', 'triage', 'summary', 'router')[i % 5]}@1.{(i // 5) % 5}.{(i // 25) % 4}"
    root = f"{rng.getrandbits(64) | 1:016x}"
    attrs = {"keel.conversation_id": f"conv-{i % 20_000:05d}", "keel.user_id": f"user-{i % 3_000}",
             "keel.tag.env": "prod" if i % 4 else "staging"}  # fmt: skip
    spans = [{"trace_id": trace_id, "span_id": root, "name": "answer", "kind": "chain", "start_ns": start,
              "end_ns": start + latency, "status": "error" if failed else "ok", "attributes": attrs,
              "inputs": {"question": f"question {i}"}, "outputs": "an answer"}]  # fmt: skip
    step = latency // 10
    layout = ("retrieval", "rerank", "llm", "tool", "llm", "tool", "guardrail", "embedding", "llm")
    for j, kind in enumerate(layout):
        s0 = start + j * step
        attributes: dict[str, Any] = {}
        if kind == "llm":
            attributes = {"gen_ai.request.model": model, "gen_ai.usage.input_tokens": 200 + (i * 7 + j) % 900,
                          "gen_ai.usage.output_tokens": 20 + (i * 3 + j) % 300, "keel.prompt": prompt}  # fmt: skip
        elif kind == "embedding":
            attributes = {"gen_ai.request.model": "text-embedding-3-small", "gen_ai.usage.input_tokens": 12}
        spans.append({"trace_id": trace_id, "span_id": f"{rng.getrandbits(64) | 1:016x}", "parent_id": root,
                      "name": kind, "kind": kind, "start_ns": s0, "end_ns": s0 + step,
                      "status": "error" if failed and kind == "tool" and j == 3 else "ok",
                      "attributes": attributes})  # fmt: skip
    return spans


def big_trace(rng: random.Random) -> list[dict[str, Any]]:
    """One 500-span trace (an agent loop: 5 levels, ~1 KB of inputs and outputs per span)."""
    trace_id = f"{rng.getrandbits(128) | 1:032x}"
    start = BASE_NS - DAY_NS // 2
    ids = [f"{rng.getrandbits(64) | 1:016x}" for _ in range(500)]
    text = "The customer asks about a delayed order; look it up and answer politely. " * 14
    spans = []
    for k, span_id in enumerate(ids):
        parent = None if k == 0 else ids[(k - 1) // 5]
        kind = ("chain", "llm", "tool", "retrieval", "llm")[k % 5]
        attributes: dict[str, Any] = {"step": k}
        if kind == "llm":
            attributes |= {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 500,
                           "gen_ai.usage.output_tokens": 80, "keel.prompt": "support@1.3.0"}  # fmt: skip
        s0 = start + k * 5_000_000
        spans.append({"trace_id": trace_id, "span_id": span_id, "parent_id": parent, "name": f"{kind} {k}",
                      "kind": kind, "start_ns": s0, "end_ns": s0 + 4_000_000, "status": "ok",
                      "attributes": attributes, "inputs": {"messages": [{"role": "user", "content": text}]},
                      "outputs": {"content": text[:400]}})  # fmt: skip
    return spans


def open_search_store(args: argparse.Namespace) -> tuple[Any, str, dict[str, Any]]:
    """The store with the search data (generated on first use, then reused); the project name
    and how the data was obtained."""
    from keel.core.traces import SpanBatch
    from keel.services.traces import TraceService
    from keel.services.workspace import open_store

    n_traces = max(1, args.search_spans // 10)
    project = f"{PROJECT}-{DATA_VERSION}-{n_traces * 10}"
    if args.database:
        store = open_store(args.database, args.objects or str(Path(tempfile.gettempdir()) / "keel-bench-objects"),
                           cached=False)  # fmt: skip
        where = args.database.split("@")[-1]
    else:
        cache = Path(args.cache or tempfile.gettempdir()) / "keel-bench-traces"
        for stale in cache.glob(f"{PROJECT}-*"):  # data of other versions is never read again
            if stale.is_dir() and not stale.name.startswith(f"{PROJECT}-{DATA_VERSION}-"):
                shutil.rmtree(stale, ignore_errors=True)
        folder = cache / project
        folder.mkdir(parents=True, exist_ok=True)
        store = open_store(f"sqlite:///{folder / 'keel.db'}", str(folder / "objects"), cached=False)
        where = str(folder / "keel.db")
    service = TraceService(store)
    expected = n_traces * 10 + 500
    have = service.raw.project_id(project)
    spans = 0
    if have is not None:
        with store.db.raw_read() as cur:
            cur.execute(store.db.sql("SELECT COUNT(*) FROM spans WHERE project_id = ?"), (have,))
            spans = int(cur.fetchone()[0])
    info: dict[str, Any] = {"where": where, "project": project, "spans": expected}
    if spans == expected:
        info["cached"] = True
        return store, project, info
    if spans:
        raise SystemExit(f"{where} holds a partial project {project} ({spans:,} spans): delete it and run again")
    print(
        f"  .. keel   generating {expected:,} spans into {where} (cached for the next runs)",
        file=sys.stderr,
        flush=True,
    )
    rng = random.Random(20251201)
    t0 = time.perf_counter()
    batch = SpanBatch()
    write_s = 0.0
    for i in range(n_traces):
        batch.spans.extend((project, s) for s in generated_trace(rng, i, n_traces))
        if len(batch.spans) >= 10_000 or i == n_traces - 1:
            w0 = time.perf_counter()
            service.write_batch(batch)
            write_s += time.perf_counter() - w0
            batch = SpanBatch()
    big = big_trace(rng)
    service.write_batch(SpanBatch(spans=[(project, s) for s in big]))
    info |= {"cached": False, "generate_s": time.perf_counter() - t0, "write_s": write_s,
             "write_rate": n_traces * 10 / write_s}  # fmt: skip
    return store, project, info


def timed(fn: Any, reps: int) -> tuple[float, Any]:
    """One warm-up call, then ``reps`` timed calls: the median ms and the last result."""
    result = fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), result


def measure_search(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from keel.services.traces import TraceService

    store, project, info = open_search_store(args)
    out: dict[str, Any] = {"info": info, "searches": [], "stats": []}
    try:
        service = TraceService(store)
        print(f"  .. keel   searches over {info['spans']:,} spans", file=sys.stderr, flush=True)
        for filter_, order, label in SEARCHES:
            ms, found = timed(lambda f=filter_, o=order: service.search(project, f, o, limit=100), args.reps)
            plan = explain(store, service, project, filter_, order) if args.explain else None
            out["searches"].append({"label": label, "filter": filter_, "order": order, "ms": ms, "found": len(found),
                                    "plan": plan})  # fmt: skip
        for by, since in (("model", None), ("day", None), ("prompt", None), ("model", BASE_NS // 10**9 - 86_400)):
            ms, groups = timed(lambda b=by, s=since: service.stats(project, b, since=s), max(1, args.reps // 2))
            out["stats"].append({"by": by, "since": since, "ms": ms, "groups": len(groups)})
        big = service.search(project, "spans >= 500", limit=1)
        trace_id = big[0].trace_id
        ms, detail = timed(lambda: service.get(trace_id, project), args.reps)
        out["get"] = {"ms": ms, "spans": len(detail.spans), "trace_id": trace_id}
        ms, _tree = timed(lambda: service.get(trace_id, project).tree(), args.reps)
        out["get_tree"] = {"ms": ms}
    finally:
        store.close()
    if not args.database:
        out["page"] = measure_trace_page(args, tmp, Path(info["where"]), project, out["get"]["trace_id"])
    return out


def explain(store: Any, service: Any, project: str, filter_: str, order: str | None) -> list[str]:
    """SQLite's query plan of a search (empty on other databases)."""
    if not store.db.is_sqlite:
        return []
    from keel.core.filters import parse_order_by

    query = service.query(project, filter_)
    order_sql = service.raw.order_sql(parse_order_by(order, {}, None) if order else [])
    from keel.meta.traces import _TRACE_SELECT

    with store.db.raw_read() as cur:
        cur.execute(f"EXPLAIN QUERY PLAN {_TRACE_SELECT}{query.where()}{order_sql} LIMIT 100", query.all_params())
        return [str(r[-1]) for r in cur.fetchall()]


def measure_trace_page(
    args: argparse.Namespace, tmp: Path, database: Path, project: str, trace_id: str
) -> dict[str, Any]:
    """The web UI's trace page over HTTP (a keel server on a copy of the search data)."""
    folder = tmp / "page"
    folder.mkdir()
    copy = folder / "keel.db"
    with sqlite3.connect(database) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    try:
        token = keel_token(args.keel_python, f"sqlite:///{copy}")
        from keel.services.auth import AuthStore
        from keel.services.workspace import open_store

        store = open_store(f"sqlite:///{copy}", str(folder / "objects"), cached=False)
        try:
            session = AuthStore(store.db).create_session("bench", "password", 3600)
        finally:
            store.close()
        server = start_keel(args.keel_python, folder, 1, token)
    except Exception as exc:  # noqa: BLE001 - reported
        return {"error": str(exc)[:300]}
    try:
        conn = server.connection()
        client: list[float] = []
        timing: list[float] = []
        status = 0
        size = 0
        path = f"/ui/projects/{project}/traces/{trace_id}"
        for i in range(args.reps + 1):
            t0 = time.perf_counter()
            conn.request("GET", path, headers={"Cookie": f"keel_session={session}"})
            response = conn.getresponse()
            body = response.read()
            status, size = response.status, len(body)
            if status != 200:
                return {"error": f"GET {path} -> {status}", "status": status}
            if i:
                client.append((time.perf_counter() - t0) * 1000)
                found = (response.getheader("server-timing") or "").partition("dur=")[2]
                if found:
                    timing.append(float(found.split(";")[0].split(",")[0]))
        conn.close()
        return {"client_ms": statistics.median(client), "server_ms": statistics.median(timing) if timing else None,
                "bytes": size, "status": status}  # fmt: skip
    finally:
        server.stop()


# -- report ------------------------------------------------------------------------------------
def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "us":
        return f"{value:,.1f} us"
    if unit == "s":
        return f"{value:,.2f} s"
    return f"{value:,.1f} ms" if value >= 10 else f"{value:,.2f} ms"


def med(results: list[dict[str, Any]] | None, fn: Any) -> float | None:
    values = [fn(r) for r in results or []]
    return statistics.median(values) if values else None


def report(args: argparse.Namespace, sdk: dict[str, Any], otlp: dict[str, Any], search: dict[str, Any],
           tmp: Path, total: float) -> list[dict[str, Any]]:  # fmt: skip
    rows: list[dict[str, Any]] = []

    def add(label: str, mlflow: float | None, keel: float | None, unit: str, target: str | None) -> None:
        higher = unit == "/s"
        ratio = (keel / mlflow if higher else mlflow / keel) if mlflow and keel else None
        met = None
        if target and keel is not None:
            limit, _text, up = TARGETS[target]
            met = keel >= limit if up else keel <= limit
        rows.append({"workload": label, "mlflow": mlflow, "keel": keel, "unit": unit, "ratio": ratio,
                     "target": TARGETS[target][1] if target else "", "met": met})  # fmt: skip

    def overhead(r: dict[str, Any]) -> float:
        return (r["traced"] - r["untraced"]) / r["calls"] * 1e6

    def cpu(r: dict[str, Any]) -> float:
        return r["cpu"] / r["calls"] * 1e6

    for shape, what in (("root", "each call a trace"), ("child", "children of one span")):
        k, m = sdk.get("keel", {}).get(shape), sdk.get("mlflow", {}).get(shape)
        add(f"SDK overhead per span, {what} (us in the app)", med(m, overhead), med(k, overhead), "us", "sdk")
        add(f"  of which CPU of the calling thread ({what})", med(m, cpu), med(k, cpu), "us", None)
        add(f"  spans stored / s, first call to flushed ({what})", med(m, lambda r: r["stored"] / r["total"]),
            med(k, lambda r: r["stored"] / r["total"]), "/s", None)  # fmt: skip
        add(f"  flush after the calls ({what})", med(m, lambda r: r["flush"]), med(k, lambda r: r["flush"]), "s", None)
    inproc = otlp.get("in_process")
    for workers in args.workers if otlp else ():
        k, m = otlp.get(("keel", workers)), otlp.get(("mlflow", workers))
        what = f"{args.clients} clients, {workers} worker(s), {50 * args.traces_per_request} spans/request"

        def rate(r: dict[str, Any] | None) -> float | None:
            return None if r is None else r.get("rate")

        add(f"OTLP /v1/traces spans stored/s ({what})", rate(m), rate(k), "/s", "ingest")
        add(f"  request p95 ({what})", None if m is None else m.get("p95"), None if k is None else k.get("p95"),
            "ms", None)  # fmt: skip
    m, k = otlp.get(("mlflow", MLFLOW_DEFAULT_WORKERS)), otlp.get(("keel", 1))
    if m and k and MLFLOW_DEFAULT_WORKERS not in args.workers:
        add(f"OTLP spans stored/s, each server as started by default (MLflow {MLFLOW_DEFAULT_WORKERS} workers,"
            " keel 1)", m.get("rate"), k.get("rate"), "/s", "ingest")  # fmt: skip
    if inproc:
        add("OTLP decode + TraceService.ingest in process, 1 thread (spans/s)", None, inproc["rate"], "/s", None)
    for s in search.get("searches", []):
        add(f"search: {s['filter']}" + (f" order by {s['order']}" if s["order"] else "") + " (first 100)",
            None, s["ms"], "ms", "search")  # fmt: skip
    for s in search.get("stats", []):
        since = " over the last day" if s["since"] else f" over all {search['info']['spans']:,} spans"
        add(f"stats by {s['by']}{since}", None, s["ms"], "ms", None)
    if "get" in search:
        add(f"trace page data: TraceService.get ({search['get']['spans']} spans)", None, search["get"]["ms"], "ms",
            "page")  # fmt: skip
        add("  the same + tree()", None, search["get_tree"]["ms"], "ms", None)
    page = search.get("page") or {}
    if page.get("server_ms") is not None or page.get("client_ms") is not None:
        add("trace page over HTTP, 500 spans (server ms)", None, page.get("server_ms"), "ms", "page")
        add("trace page over HTTP, 500 spans (client ms)", None, page.get("client_ms"), "ms", None)

    print()
    for line in machine_lines({}, tmp):
        if not line.startswith("mlflow"):
            print(line)
    mode = "QUICK sizes (targets are for the full sizes)" if args.quick else "full sizes"
    print(f"{mode}; {args.spans:,} keel / {args.mlflow_spans:,} MLflow SDK calls, {args.rounds} round(s);"
          f" total {total:.0f} s")  # fmt: skip
    print()
    headers = ["workload", "MLflow", "keel", "ratio", "target", "met?"]
    table = [
        [r["workload"], fmt(r["mlflow"], r["unit"]) if r["mlflow"] is not None else "", fmt(r["keel"], r["unit"]),
         fmt_ratio(r["ratio"]) if r["ratio"] else "", r["target"],
         "" if r["met"] is None else ("yes" if r["met"] else "NO")]
        for r in rows
    ]  # fmt: skip
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    print("  ".join(f"{h:<{w}}" for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in table:
        print("  ".join(f"{c:<{w}}" for c, w in zip(row, widths, strict=True)).rstrip())
    print("ratio = how many times better keel is (rates: keel/MLflow; times: MLflow/keel)")
    print()
    print("details:")
    for tool, shapes in sdk.items():
        for shape, results in shapes.items():
            for r in results:
                print(f"  sdk {tool:<6} {shape:<5} {r['calls']:,} calls:"
                      f" untraced {r['untraced'] / r['calls'] * 1e9:,.0f} ns/call,"
                      f" traced {r['traced'] / r['calls'] * 1e6:,.1f} us/call, flush {r['flush']:.2f} s;"
                      f" sent {r['sent']:,} spans, stored {r['stored']:,}"
                      + ("" if r["stored"] == r["sent"] else " (MISSING SPANS)"))  # fmt: skip
    for key, r in otlp.items():
        if key == "in_process":
            print(f"  otlp keel in process: decode {r['decode_us']:.1f} us/span + ingest {r['ingest_us']:.1f} us/span"
                  f" ({r['spans']:,} spans, stored {r['stored']:,})")  # fmt: skip
            continue
        tool, workers = key
        if r is None or "error" in r:
            print(f"  otlp {tool:<6} w{workers}: not measured: {None if r is None else r['error']}")
            continue
        check = "all stored" if r["stored"] == r["sent"] else "MISMATCH"
        print(f"  otlp {tool:<6} w{workers}: {r['requests']:,} requests in {r['seconds']:.1f} s, sent {r['sent']:,}"
              f" spans, stored {r['stored']:,} ({check}); p50 {fmt(r['p50'], 'ms')}"
              + (f"; errors: {r['errors']}" if r["errors"] else ""))  # fmt: skip
    info = search.get("info")
    if info:
        how = (
            "reused from the cache"
            if info.get("cached")
            else (
                f"generated in {info['generate_s']:.1f} s (TraceService.write_batch: {info['write_rate']:,.0f} spans/s)"
            )
        )
        print(f"  search data: {info['spans']:,} spans, project {info['project']} in {info['where']}; {how}")
        for s in search["searches"]:
            print(
                f"    {s['label']}: {s['found']} traces" + ("" if not s["plan"] else f"; plan: {' | '.join(s['plan'])}")
            )
        page = search.get("page") or {}
        if page.get("error"):
            print(f"  trace page over HTTP: not measured ({page['error']})")
        if args.database:
            print("  trace page over HTTP: measured on SQLite runs only")
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mlflow-python", default=str(DEFAULT_MLFLOW_PYTHON) if DEFAULT_MLFLOW_PYTHON.exists() else "",
                        help="python of a venv with mlflow installed (default bench/.venv-mlflow)")  # fmt: skip
    parser.add_argument("--keel-python", default=sys.executable, help="python with keel (default: this one)")
    parser.add_argument("--skip-mlflow", action="store_true", help="measure keel only")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", choices=("sdk", "otlp", "search"), action="append", help="run only these parts")
    parser.add_argument("--spans", type=int, default=0, help="keel SDK calls per shape (20,000; quick 5,000)")
    parser.add_argument("--mlflow-spans", type=int, default=0, help="MLflow SDK calls per shape (2,000; quick 300)")
    parser.add_argument("--rounds", type=int, default=1, help="SDK rounds in fresh processes (medians)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent OTLP clients (8)")
    parser.add_argument("--workers", type=int, action="append", help="server worker processes; repeatable (1, 2)")
    parser.add_argument("--traces-per-request", type=int, default=10, help="50-span traces per OTLP request (10)")
    parser.add_argument("--otlp-spans", type=int, default=0, help="most spans each client sends (50,000; quick 5,000)")
    parser.add_argument("--duration", type=float, default=0, help="most seconds per OTLP load (20; quick 5)")
    parser.add_argument(
        "--search-spans", type=int, default=0, help="spans of the search data (1,000,000; quick 50,000)"
    )
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions of each search (median)")
    parser.add_argument("--explain", action="store_true", help="print SQLite's plan of each search")
    parser.add_argument("--cache", help="folder of the cached search data (default: the system temp folder)")
    parser.add_argument("--database", help="run the searches on this database URL instead (e.g. PostgreSQL)")
    parser.add_argument("--objects", help="the object store URL that goes with --database")
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    parser.add_argument("--tmpdir", help="where the temporary stores go")
    parser.add_argument("--keep", action="store_true", help="keep the temporary stores")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per worker process")
    args = parser.parse_args()
    if args.skip_mlflow:
        args.mlflow_python = ""
    args.workers = args.workers or [1, 2]
    args.spans = args.spans or (5_000 if args.quick else 20_000)
    args.mlflow_spans = args.mlflow_spans or (300 if args.quick else 2_000)
    args.otlp_spans = args.otlp_spans or (5_000 if args.quick else 50_000)
    args.duration = args.duration or (5.0 if args.quick else 20.0)
    args.search_spans = args.search_spans or (50_000 if args.quick else 1_000_000)
    args.keel_python = os.path.abspath(args.keel_python)
    if args.mlflow_python:
        args.mlflow_python = os.path.abspath(args.mlflow_python)
    return args


def main() -> int:
    args = parse_args()
    parts = set(args.only or ("sdk", "otlp", "search"))
    tmp = Path(tempfile.mkdtemp(prefix="keel-bench-traces-", dir=args.tmpdir))
    started = time.perf_counter()
    sdk: dict[str, Any] = {}
    otlp: dict[Any, Any] = {}
    search: dict[str, Any] = {}
    try:
        if "sdk" in parts:
            sdk = measure_sdk(args, tmp)
        if "otlp" in parts:
            per_client = max(1, args.otlp_spans // (50 * args.traces_per_request))
            print(f"  .. building {args.clients} x {per_client} OTLP bodies", file=sys.stderr, flush=True)
            bodies = [otlp_bodies(c, per_client, args.traces_per_request) for c in range(args.clients)]
            otlp["in_process"] = measure_otlp_in_process(args, tmp, bodies[0][: max(2, min(len(bodies[0]), 40))])
            tools = ["mlflow", "keel"] if args.mlflow_python else ["keel"]
            for workers in args.workers:
                for tool in tools:
                    otlp[(tool, workers)] = measure_otlp(tool, args, tmp, workers, bodies)
            if args.mlflow_python and MLFLOW_DEFAULT_WORKERS not in args.workers:  # as `mlflow server` starts
                otlp[("mlflow", MLFLOW_DEFAULT_WORKERS)] = measure_otlp(
                    "mlflow", args, tmp, MLFLOW_DEFAULT_WORKERS, bodies
                )
        if "search" in parts:
            search = measure_search(args, tmp)
    finally:
        total = time.perf_counter() - started
        if args.keep:
            print(f"kept the stores in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    rows = report(args, sdk, otlp, search, tmp, total)
    if args.json:
        payload = {"rows": rows, "sdk": sdk, "otlp": {str(k): v for k, v in otlp.items()}, "search": search,
                   "seconds": total}  # fmt: skip
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
