"""``keel reproduce --trace ID``: a recorded trace's LLM calls replayed offline, call by call.

The stand-in server's ``counter`` model answers the same request ``sample-1``,
``sample-2``, ... (as a model sampling at temperature 0.9 answers differently each
time). Two traces of one run ask it the same question (2 calls, then 3): each
trace's calls must replay their own answers, in order, with the server stopped.
Traces that name their recordings as a wrapped client's spans do
(``keel.llm.request_hash``, ``keel.llm.occurrence``) and traces that name none (an
app traced with OpenTelemetry) are stored here as such spans arrive, through
``keel.traces.ingest``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

import keel
from keel.cli.main import main
from keel.errors import InvalidInput, NotFound
from keel.integrations.standin import StandInServer
from keel.sdk import llm
from keel.sdk import session as sessions
from keel.sdk.reproduce_trace import REQUEST_HASH, reproduce_trace

KEEL = Path(sys.executable).with_name("keel")
VOTE = [{"role": "user", "content": "Is 91 a prime number? Answer yes or no."}]
MS = 1_000_000


@dataclass
class Recorded:
    run_id: str
    first: str  # trace id: 2 calls
    vote: str  # trace id: 3 more identical calls
    rows: list[Any]  # the run's recordings, oldest first


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[Recorded]:
    """A workspace where one run made two traces of identical calls; the server is stopped after."""
    from keel.sdk.workspace import init_workspace

    init_workspace(tmp_path)
    with StandInServer() as server:
        raw = openai.OpenAI(base_url=server.base_url, api_key="standin", max_retries=0)
        client = llm.wrap(raw)

        def ask() -> str:
            response = client.chat.completions.create(model="counter", messages=VOTE, temperature=0.9)
            return str(response.choices[0].message.content)

        with keel.start_run(project="vote") as run:
            with keel.span("first", project="vote") as first:
                assert [ask(), ask()] == ["sample-1", "sample-2"]
            time.sleep(0.005)  # the traces' times do not overlap, to the millisecond
            with keel.span("vote", project="vote") as vote:
                assert [ask(), ask(), ask()] == ["sample-3", "sample-4", "sample-5"]
        raw.close()
    keel.traces.flush()
    rows = sessions.get_session().llm.calls(run=run.id, limit=None)
    assert [r.occurrence for r in rows] == [0, 1, 2, 3, 4]
    yield Recorded(run.id, first.trace_id, vote.trace_id, rows)
    sessions.reset()


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["reproduce", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _trace(trace_id: str, spans: list[dict[str, Any]], start_ns: int, end_ns: int, run_id: str) -> None:
    """Store a trace as its spans arrive from an exporter: a root and ``spans`` under it."""
    root = {"trace_id": trace_id, "span_id": "0" * 15 + "1", "name": "request", "start_ns": start_ns}
    root.update(end_ns=end_ns, attributes={"keel.run_id": run_id})
    children = [{"trace_id": trace_id, "parent_id": root["span_id"], **s} for s in spans]
    assert keel.traces.ingest([root, *children], project="vote").stored == 1 + len(spans)


def test_each_trace_replays_its_own_calls_in_order(recorded: Recorded, capsys) -> None:
    code, out, err = _cli(capsys, "--trace", recorded.first[:8], "--project", "vote")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        f"replayed 2 LLM calls of trace {recorded.first[:8]} offline, from the recordings of run {recorded.run_id[:8]}:"
    )
    assert [line.split()[-2:] for line in lines[1:3]] == [["#0", "'sample-1'"], ["#1", "'sample-2'"]]
    assert lines[-1] == f"identical: every LLM call of trace {recorded.first[:8]} replayed its recording"

    # The second trace's identical requests are the run's 3rd to 5th: they get sample-3..5, not sample-1..3.
    code, out, _ = _cli(capsys, "--trace", recorded.vote, "-p", "vote", "--json")
    report = json.loads(out)
    assert code == 0 and report["identical"] is True and report["run_id"] == recorded.run_id
    assert [(c["answer"], c["occurrence"]) for c in report["calls"]] == [
        ("sample-3", 2),
        ("sample-4", 3),
        ("sample-5", 4),
    ]
    assert report["differences"] == []


def test_spans_that_name_their_recordings(recorded: Recorded, capsys) -> None:
    digest = recorded.rows[0].request_hash
    start = recorded.rows[0].created_at * MS - 50 * MS

    def call(span_id: str, at: int, **attributes: Any) -> dict[str, Any]:
        attributes = {REQUEST_HASH: digest, "keel.run_id": recorded.run_id, **attributes}
        return {"span_id": span_id, "name": "chat counter", "kind": "llm", "attributes": attributes,
                "start_ns": start + at * MS, "end_ns": start + (at + 1) * MS}  # fmt: skip

    # Its calls named by occurrence, as a wrapped client's spans name them: those recordings, whenever made.
    named = "4" * 32
    spans = [call("000000000000000" + str(n), n, **{"keel.llm.occurrence": occ}) for n, occ in ((2, 4), (3, 1))]
    _trace(named, spans, start, start + 10 * MS, recorded.run_id)
    report = reproduce_trace(named[:8], "vote")
    assert report.identical and report.notes == []
    assert [(c.answer, c.occurrence, c.span_id) for c in report.calls] == [
        ("sample-2", 1, "0000000000000003"),
        ("sample-5", 4, "0000000000000002"),
    ]

    # One replayed (noted), one naming a recording the run does not have (a difference: exit 1).
    odd = "5" * 32
    spans = [
        call("0000000000000002", 1, **{"keel.llm.occurrence": 0}),
        call("0000000000000003", 2, **{"keel.llm.occurrence": 0, "keel.llm.mode": "replay", "keel.llm.source": "x"}),
        call("0000000000000004", 3, **{"keel.llm.occurrence": 9}),
    ]
    _trace(odd, spans, start, start + 10 * MS, recorded.run_id)
    code, out, _ = _cli(capsys, "--trace", odd, "-p", "vote")
    assert code == 1
    assert "  1  ok      chat.completions  counter  " in out and out.count("'sample-1'") == 1
    assert "note: LLM span 'chat counter' (0000000000000003) was answered from a recording of x: not replayed" in out
    assert (
        f"  LLM span 'chat counter' (0000000000000004) names request {digest[:12]} #9, which run "
        f"{recorded.run_id[:8]} did not record"
    ) in out.splitlines()


def test_spans_that_name_nothing_take_the_calls_made_meanwhile(recorded: Recorded, capsys) -> None:
    """An app traced with OpenTelemetry: the run's calls recorded while its trace ran are its calls."""
    first, last = recorded.rows[0].created_at, recorded.rows[1].created_at
    plain = "6" * 32
    _trace(plain, [], (first - 1) * MS, last * MS, recorded.run_id)
    code, out, _ = _cli(capsys, "--trace", plain, "-p", "vote")
    assert code == 0
    assert "note: the trace's spans do not name their recordings (keel.llm.request_hash)" in out
    assert [line.split()[-1] for line in out.splitlines()[1:3]] == ["'sample-1'", "'sample-2'"]
    assert out.startswith(f"replayed 2 LLM calls of trace {plain[:8]}")


def test_differences_are_reported_and_exit_1(recorded: Recorded, capsys) -> None:
    with keel.start_run(project="vote") as run:
        with keel.span("ghost", project="vote") as ghost, keel.span("chat", kind="llm") as call:
            call.set_attribute(REQUEST_HASH, "ab" * 32)  # a call the run never recorded
    keel.traces.flush()
    code, out, _ = _cli(capsys, "--trace", ghost.trace_id, "-p", "vote")
    assert code == 1
    assert f"differs: trace {ghost.trace_id[:8]}:" in out
    assert f"LLM span 'chat' ({call.span_id}) names request {'ab' * 6}, which run {run.id[:8]} did not record" in out

    # A recording whose content is gone: the calls stored in that pack object differ, the others replay.
    rows = recorded.rows
    gone = rows[0].oid
    sessions.get_session().service.store.objects.path(gone).unlink()
    sessions.reset()  # read again from the store (this process kept the packs it read)
    first = reproduce_trace(recorded.first, "vote")
    vote = reproduce_trace(recorded.vote, "vote")
    assert [c.identical for c in first.calls + vote.calls] == [r.oid != gone for r in rows]
    assert not first.identical and len(first.differences) == 2
    assert first.differences[0].startswith(
        f"call 1 (chat.completions counter, request {rows[0].request_hash[:12]} #0): "
    )
    code, out, _ = _cli(capsys, "--trace", recorded.first, "-p", "vote")
    assert code == 1 and "  1  DIFFERS " in out


def test_traces_that_cannot_be_replayed(recorded: Recorded, capsys) -> None:
    with keel.span("outside a run", project="vote") as outside:
        pass
    with keel.start_run(project="vote") as run, keel.span("no calls", project="vote") as quiet:
        pass
    keel.traces.flush()
    with pytest.raises(InvalidInput, match="was not recorded inside a run"):
        reproduce_trace(outside.trace_id, "vote")
    code, out, err = _cli(capsys, "--trace", quiet.trace_id, "-p", "vote")
    assert code == 3 and out == ""
    assert err == (
        f"error: run {run.id[:8]} recorded no LLM call while trace {quiet.trace_id[:8]} ran (record them through "
        f"keel.llm.wrap(client) in record mode; see 'keel llm calls --run {run.id[:8]}')\n"
    )
    with pytest.raises(NotFound):
        reproduce_trace("f" * 32, "vote")
    code, _, err = _cli(capsys, "some-run", "--trace", quiet.trace_id)
    assert code == 2 and err.startswith("error: --trace replays a trace offline")
    code, _, err = _cli(capsys)
    assert code == 2 and err == "error: give the evaluation run to reproduce, or --trace ID (keel reproduce RUN)\n"


def test_a_new_process_replays_the_trace(recorded: Recorded) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    done = subprocess.run(
        [str(KEEL), "reproduce", "--trace", recorded.vote[:10], "-p", "vote"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert [line.split()[-1] for line in done.stdout.splitlines()[1:4]] == ["'sample-3'", "'sample-4'", "'sample-5'"]
    assert done.stdout.splitlines()[-1].startswith("identical:")
    # a replay adds no trace of its own (a wrapped client's call outside a trace would start one)
    assert {t.trace_id for t in keel.traces.search(project="vote")} == {recorded.first, recorded.vote}
    assert [p.name for p, _runs in keel.Client().list_projects()] == ["vote"]
