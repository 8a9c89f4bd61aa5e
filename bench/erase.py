"""Erasure: keel erasing 100,000 conversations (and traces) by filter, MLflow deleting traces.

    .venv/bin/python bench/erase.py --mlflow-python bench/.venv-mlflow/bin/python
    .venv/bin/python bench/erase.py --n 20000 --skip-mlflow        # a smoke run

keel (a fresh workspace: SQLite + local objects, in a subprocess): ``--n`` conversations of
one cohort (``metadata.cohort = 'gone'``) and as many of others are logged through
``keel.conversations.log`` (the reference's record shape: 2-4 messages, metadata, one in ten
with feedback, one late feedback per hundred), then ``keel.conversations.delete(filter=
"metadata.cohort = 'gone'")`` is timed: the count, the deletion in SQL (records, feedback),
the audit row and the scrub (the truncating WAL checkpoint), i.e. until the erased text is
out of ``keel.db`` and its WAL. The store is at rest when the clock starts: what logging left
in the WAL is checkpointed first, untimed (a busy app's WAL is checkpointed in the background
once it holds 32 MB, so an erasure finds little of it). The same for ``--n`` traces of one span each (and as many
kept) erased by a time range (``until``). The database file is checked for the erased
marker afterwards.

MLflow (``--mlflow-python``: MLflow 3.17.2 in its own venv, a SQLite tracking store):
``2 * --n`` traces. Through MLflow's own tracking store (``SqlAlchemyStore.start_trace``,
what the client's logging ends in) a trace takes tens of milliseconds here (a commit each),
so ``--mlflow-seeds`` (500) are made that way (at most ``--mlflow-seconds``), and the rest
are copies of the rows those calls wrote (``trace_info``, ``trace_tags``,
``trace_request_metadata``) with new ids and later times, inserted in one transaction; the
counts are printed. Then ``MlflowClient().delete_traces(experiment_id,
max_timestamp_millis=...)`` deletes the older half, timed. MLflow has no deletion by a user
filter (``delete_traces`` takes a time cutoff or trace ids), so keel's by-filter figure is set
beside MLflow's by-time figure, and keel's by-time trace erasure beside it too.

Benchmarks assert nothing: they print. Machines are noisy: compare ratios taken in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RESULT = "@@RESULT "

_KEEL = r"""
import json, os, random, secrets, sys, time
import keel
from keel.sdk import conversations, traces
from keel.sdk.session import get_session

n = int(sys.argv[1])
keel.init()
rng = random.Random(7)
words = ("refund order shipping invoice account password delivery warranty tracking address "
         "payment subscription cancel upgrade support agent policy return label damaged").split()

def sentence(k):
    return " ".join(rng.choice(words) for _ in range(k)).capitalize() + "."

pool = []
for i in range(500):
    messages = [{"role": "system", "content": "You are a helpful support assistant for ACME."}]
    for _ in range(rng.choice((1, 1, 2))):
        messages += [{"role": "user", "content": sentence(rng.randint(8, 25))},
                     {"role": "assistant", "content": " ".join(sentence(rng.randint(8, 20)) for _ in range(3))}]
    pool.append(messages)

t0 = time.perf_counter()
for i in range(2 * n):
    gone = i % 2 == 0
    messages = pool[i % len(pool)]
    if gone:
        messages = [*messages, {"role": "user", "content": "ERASEDMARKER please forget me"}]
    conversations.log({
        "conversation_id": f"c-{i:08d}",
        "messages": messages,
        "model": "gpt-4o",
        "prompt_version": "support-bot@1.3.0",
        "user_feedback": {"thumb": "up"} if i % 10 == 0 else None,
        "tokens_used": {"prompt": 300 + i % 500, "completion": 40 + i % 200},
        "latency_ms": 200.0 + (i * 37) % 3000,
        "metadata": {"user_id": f"u{i % 5000}", "cohort": "gone" if gone else "kept", "environment": "prod"},
    })
for i in range(0, 2 * n, 100):
    conversations.feedback(f"c-{i:08d}", thumb="down", comment="ERASEDMARKER comment" if i % 2 == 0 else "ok")
conversations.flush()
logged = time.perf_counter() - t0
assert conversations.count() == 2 * n
db = get_session(create=False).service.store.db
db.scrub()  # the store at rest: what logging left in the WAL is checkpointed first (not timed)

t0 = time.perf_counter()
report = conversations.delete(filter="metadata.cohort = 'gone'")
conv_s = time.perf_counter() - t0
assert report.deleted == n and conversations.count() == n, report
data = open(".keel/keel.db", "rb").read()
wal = os.path.getsize(".keel/keel.db-wal") if os.path.exists(".keel/keel.db-wal") else 0
conv_marker = data.count(b"ERASEDMARKER")

# traces: n old ones (erased by time) and n recent ones (kept), one span each
base = time.time_ns() - 10 * 86_400 * 10**9
spans = []
for i in range(2 * n):
    start = base + i * 1_000_000 + (0 if i < n else 5 * 86_400 * 10**9)
    spans.append({"trace_id": secrets.token_hex(16), "span_id": secrets.token_hex(8), "name": "answer",
                  "start_ns": start, "end_ns": start + 5_000_000,
                  "attributes": {"keel.user_id": f"u{i % 5000}", "gen_ai.request.model": "gpt-4o"},
                  "inputs": {"q": "ERASEDMARKER" if i < n else "kept"}, "outputs": {"a": "answer"}})
t0 = time.perf_counter()
stored = sum(traces.ingest(spans[s:s + 5000]).stored for s in range(0, len(spans), 5000))
assert stored == 2 * n, stored
ingest_s = time.perf_counter() - t0
db.scrub()
cutoff_ms = (base + 2 * 86_400 * 10**9 + n * 1_000_000) // 1_000_000
t0 = time.perf_counter()
treport = traces.delete(until=cutoff_ms)
trace_s = time.perf_counter() - t0
assert treport.deleted == n, treport
data = open(".keel/keel.db", "rb").read()
print("@@RESULT " + json.dumps({
    "n": n, "log_s": logged, "conversations_s": conv_s, "conversations_marker": conv_marker, "wal_after": wal,
    "ingest_s": ingest_s, "traces_s": trace_s, "marker_after": data.count(b"ERASEDMARKER"),
    "db_mb": len(data) / 1e6,
}))
"""

_MLFLOW = r"""
import json, os, sqlite3, sys, time, uuid
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
import mlflow
from mlflow import MlflowClient
from mlflow.entities import TraceInfo, TraceLocation, TraceState

want, budget, seeds = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
path = os.path.abspath("mlflow.db")
uri = "sqlite:///" + path
mlflow.set_tracking_uri(uri)
client = MlflowClient(uri)
experiment = client.create_experiment("erase-bench")
store = client._tracking_client.store
base = int(time.time() * 1000) - 10 * 86_400_000
t0 = time.perf_counter()
made = 0
while made < min(want, seeds) and time.perf_counter() - t0 < budget:
    store.start_trace(TraceInfo(
        trace_id="tr-" + uuid.uuid4().hex,
        trace_location=TraceLocation.from_experiment_id(experiment),
        request_time=base + made,
        state=TraceState.OK,
        request_preview="ERASEDMARKER please forget me",
        response_preview="answer",
        execution_duration=5,
        trace_metadata={"mlflow.trace.user": f"u{made % 5000}"},
        tags={"mlflow.traceName": "answer"},
    ))
    made += 1
api_s = time.perf_counter() - t0
api_made = made
# the rest: copies of the rows start_trace wrote (trace_info, trace_tags, trace_request_metadata),
# each with a new id and a later time, in one transaction
t0 = time.perf_counter()
db = sqlite3.connect(path)
infos = db.execute("SELECT * FROM trace_info").fetchall()
columns = [d[1] for d in db.execute("PRAGMA table_info(trace_info)").fetchall()]
at_id, at_time = columns.index("request_id"), columns.index("timestamp_ms")
at_preview = columns.index("request_preview")
tags = {}
for table in ("trace_tags", "trace_request_metadata"):
    for key, value, rid in db.execute(f"SELECT key, value, request_id FROM {table}"):
        tags.setdefault((table, rid), []).append((key, value))
marks = ", ".join("?" for _ in columns)
rows, tag_rows, meta_rows = [], [], []
while made < want:
    seed = infos[made % len(infos)]
    new = list(seed)
    new[at_id] = "tr-" + uuid.uuid4().hex
    new[at_time] = base + made
    if made >= want // 2:  # the half that stays: without the marker, so what is left of it shows
        new[at_preview] = "kept"
    rows.append(new)
    for key, value in tags.get(("trace_tags", seed[at_id]), []):
        tag_rows.append((key, value.replace(seed[at_id], new[at_id]) if value else value, new[at_id]))
    for key, value in tags.get(("trace_request_metadata", seed[at_id]), []):
        meta_rows.append((key, value, new[at_id]))
    made += 1
db.executemany(f"INSERT INTO trace_info VALUES ({marks})", rows)
db.executemany("INSERT INTO trace_tags (key, value, request_id) VALUES (?, ?, ?)", tag_rows)
db.executemany("INSERT INTO trace_request_metadata (key, value, request_id) VALUES (?, ?, ?)", meta_rows)
db.commit()
db.close()
copy_s = time.perf_counter() - t0
half = made // 2
t0 = time.perf_counter()
deleted = client.delete_traces(experiment, max_timestamp_millis=base + half - 1)
delete_s = time.perf_counter() - t0
data = open(path, "rb").read()
secure = sqlite3.connect(":memory:").execute("PRAGMA secure_delete").fetchone()[0]
print("@@RESULT " + json.dumps({"secure_delete_default": secure, "made": made, "api_made": api_made,
                                "api_s": api_s, "copy_s": copy_s,
                                "deleted": deleted, "delete_s": delete_s, "version": mlflow.__version__,
                                "marker_after": data.count(b"ERASEDMARKER")}))
"""


def _run(python: str, code: str, args: list[str], cwd: Path, timeout: float) -> dict:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    env.pop("KEEL_URI", None)
    env.pop("KEEL_OBJECTS", None)
    out = subprocess.run([python, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    for line in out.stdout.splitlines():
        if line.startswith(RESULT):
            return dict(json.loads(line[len(RESULT) :]))
    raise SystemExit(f"the worker failed ({out.returncode}):\n{out.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="records erased (as many are kept)")
    parser.add_argument("--mlflow-python", default="bench/.venv-mlflow/bin/python")
    parser.add_argument(
        "--mlflow-seconds", type=float, default=60.0, help="time allowed to create traces through MLflow's store"
    )
    parser.add_argument("--mlflow-seeds", type=int, default=500, help="traces made through MLflow's store, at most")
    parser.add_argument("--skip-mlflow", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="keel-erase-") as folder:
        keel = _run(sys.executable, _KEEL, [str(args.n)], Path(folder), 3600)
    n = keel["n"]
    print(f"keel: {2 * n:,} conversations logged in {keel['log_s']:.1f} s ({2 * n / keel['log_s']:,.0f}/s)")
    print(
        f"keel: erase {n:,} conversations by filter (metadata.cohort = 'gone'), audit and scrub: "
        f"{keel['conversations_s']:.2f} s ({n / keel['conversations_s']:,.0f} records/s); "
        f"WAL after: {keel['wal_after']} bytes; marker in keel.db after: {keel['conversations_marker']}"
    )
    print(
        f"keel: erase {n:,} traces by time (until), audit and scrub: {keel['traces_s']:.2f} s "
        f"({n / keel['traces_s']:,.0f} traces/s); marker in keel.db after: {keel['marker_after']} "
        f"({keel['db_mb']:.0f} MB file)"
    )
    if args.skip_mlflow:
        return
    mlflow_python = os.path.abspath(args.mlflow_python)  # the workers run in a temporary folder
    if not Path(mlflow_python).exists():
        raise SystemExit(f"{args.mlflow_python} not found: make bench creates it (or pass --skip-mlflow)")
    with tempfile.TemporaryDirectory(prefix="mlflow-erase-") as folder:
        peer = _run(
            mlflow_python,
            _MLFLOW,
            [str(2 * n), str(args.mlflow_seconds), str(args.mlflow_seeds)],
            Path(folder),
            3600,
        )
    made, deleted = peer["made"], peer["deleted"]
    print(
        f"MLflow {peer['version']}: {made:,} traces in its SQLite store: {peer['api_made']:,} through "
        f"SqlAlchemyStore.start_trace in {peer['api_s']:.1f} s ({peer['api_made'] / peer['api_s']:,.0f}/s), "
        f"the rest copies of their rows in {peer['copy_s']:.1f} s"
    )
    rate = deleted / peer["delete_s"] if peer["delete_s"] else float("inf")
    print(
        f"MLflow: delete_traces(max_timestamp_millis) of {deleted:,} traces: {peer['delete_s']:.2f} s "
        f"({rate:,.0f}/s); the deleted traces' marker still in mlflow.db: {peer['marker_after']:,} times "
        f"(this SQLite build's secure_delete default: {peer['secure_delete_default']}; keel sets it on every "
        "connection, MLflow leaves the build's default)"
    )
    keel_conv = n / keel["conversations_s"]
    keel_traces = n / keel["traces_s"]
    print(
        f"ratio (records per second erased, keel / MLflow): conversations by filter {keel_conv / rate:.1f}x, "
        f"traces by time {keel_traces / rate:.1f}x"
    )


if __name__ == "__main__":
    main()
