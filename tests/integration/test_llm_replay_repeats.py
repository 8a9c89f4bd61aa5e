"""Replay is exact call by call: identical requests get their own recordings, in order.

The stand-in server's ``counter`` model answers the same request ``sample-1``,
``sample-2``, ... as a sampling model at temperature 0.9 answers differently each
time. Replays run with the server stopped. The main round trip (in this process
right after the run, and in a new process) runs on SQLite and on PostgreSQL + S3.
"""

from __future__ import annotations

import contextvars
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

import keel
from keel.errors import InvalidInput, ReplayMiss
from keel.integrations.standin import StandInServer
from keel.sdk import llm
from keel.sdk import session as sessions

VOTE = [{"role": "user", "content": "Is 91 a prime number? Answer yes or no."}]
_OPEN: list[openai.OpenAI] = []


@pytest.fixture
def server() -> Iterator[StandInServer]:
    with StandInServer() as running:
        yield running
    while _OPEN:  # unclosed sockets warn, and warnings fail tests
        _OPEN.pop().close()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Path]:
    """A SQLite workspace only (the store-specific parts are covered by the tests on ``ws``)."""
    from keel.sdk.workspace import init_workspace

    init_workspace(tmp_path)
    yield tmp_path
    sessions.reset()


def _client(server: StandInServer) -> openai.OpenAI:
    client = openai.OpenAI(base_url=server.base_url, api_key="standin", max_retries=0)
    _OPEN.append(client)
    return client


def _ask(client: Any, messages: list[dict[str, str]] = VOTE) -> str:
    response = client.chat.completions.create(model="counter", messages=messages, temperature=0.9)
    return str(response.choices[0].message.content)


def _record_three(server: StandInServer) -> str:
    client = llm.wrap(_client(server))
    with keel.start_run(project="vote", name="self-consistency") as run:
        assert [_ask(client) for _ in range(3)] == ["sample-1", "sample-2", "sample-3"]
    return run.id


REPLAY_IN_A_NEW_PROCESS = """
import json, sys
import openai
from keel.sdk import llm

client = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="unused", max_retries=0)
out = {}
for name, scope in (("scoped", sys.argv[1]), ("unscoped", None)):
    offline = llm.wrap(client, mode="replay", replay_from=scope)
    messages = [{"role": "user", "content": "Is 91 a prime number? Answer yes or no."}]
    out[name] = [offline.chat.completions.create(model="counter", messages=messages, temperature=0.9)
                 .choices[0].message.content for _ in range(3)]
print(json.dumps(out))
"""


def test_three_identical_calls_replay_in_order_as_soon_as_the_run_ends(ws: Path, server: StandInServer) -> None:
    run_id = _record_three(server)
    # The run's end wrote its recordings: the store has them, without any flush.
    stored = sessions.get_session().llm.calls(run=run_id)
    digest = stored[0].request_hash
    assert [(row.occurrence, row.request_hash) for row in stored] == [(0, digest), (1, digest), (2, digest)]
    server.stop()

    expected = ["sample-1", "sample-2", "sample-3"]
    offline = llm.wrap(_client(server), mode="replay", replay_from=run_id)
    assert [_ask(offline) for _ in range(3)] == expected
    with pytest.raises(ReplayMiss) as caught:  # a fourth call is a miss that says why
        _ask(offline)
    message = f"request {digest} (chat.completions) was recorded 3 times in run {run_id}; this is call 4"
    assert message in str(caught.value)
    assert caught.value.request_hash == digest and "replay_repeats='cycle'" in (caught.value.hint or "")
    with keel.start_run() as replaying:  # from the whole store: the newest run that recorded it
        unscoped = llm.wrap(_client(server), mode="replay")
        assert [_ask(unscoped) for _ in range(3)] == expected
    assert server.requests_served == 3  # nothing but the recording reached the model
    assert (f"cassette:{run_id}", "replay") in {
        (str(e.entity), e.role) for e in keel.lineage.of(replaying.id) if e.direction == "input"
    }


def test_a_new_process_replays_them_in_order(local: Path, server: StandInServer) -> None:
    run_id = _record_three(server)
    server.stop()
    done = subprocess.run(
        [sys.executable, "-c", REPLAY_IN_A_NEW_PROCESS, run_id],
        capture_output=True, text=True, timeout=120, env=os.environ.copy(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = ["sample-1", "sample-2", "sample-3"]
    assert json.loads(done.stdout) == {"scoped": expected, "unscoped": expected}


def test_replay_from_the_run_just_ended_in_the_same_process(local: Path, server: StandInServer) -> None:
    client = llm.wrap(_client(server))
    with keel.start_run() as run:
        _ask(client), _ask(client), _ask(client)
        recorder_run = run.id
    offline = llm.wrap(_client(server), mode="replay", replay_from=recorder_run)
    assert [_ask(offline) for _ in range(3)] == ["sample-1", "sample-2", "sample-3"]
    info = llm.last_call()
    assert info is not None and info.replayed and info.occurrence == 2


def test_cycle_mode_replays_the_recordings_again(
    local: Path, server: StandInServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = _record_three(server)
    server.stop()
    cycling = llm.wrap(_client(server), mode="replay", replay_from=run_id, replay_repeats="cycle")
    assert [_ask(cycling) for _ in range(7)] == ["sample-1", "sample-2", "sample-3"] * 2 + ["sample-1"]
    with pytest.raises(InvalidInput, match="replay_repeats"):
        llm.wrap(_client(server), mode="replay", replay_repeats="forever")

    # A cassette keeps the order: exported, imported, replayed from by name.
    assert llm.export_cassette(tmp_path / "vote.jsonl", run=run_id) == 3
    assert [json.loads(line)["occurrence"] for line in (tmp_path / "vote.jsonl").read_text().splitlines()[1:]] == [
        0, 1, 2,
    ]  # fmt: skip
    sessions.reset()
    fresh = tmp_path / "elsewhere"
    fresh.mkdir()
    monkeypatch.chdir(fresh)
    from keel.sdk.workspace import init_workspace

    init_workspace(fresh)
    llm.import_cassette(tmp_path / "vote.jsonl")
    from_file = llm.wrap(_client(server), mode="replay", replay_from="vote")
    assert [_ask(from_file) for _ in range(3)] == ["sample-1", "sample-2", "sample-3"]
    with pytest.raises(ReplayMiss, match="was recorded 3 times in cassette vote; this is call 4"):
        _ask(from_file)


def test_a_miss_does_not_use_up_the_calls_number(local: Path, server: StandInServer) -> None:
    offline = llm.wrap(_client(server), mode="replay")
    with pytest.raises(ReplayMiss, match="nothing comparable is recorded"):
        _ask(offline)
    _record_three(server)
    assert [_ask(offline) for _ in range(3)] == ["sample-1", "sample-2", "sample-3"]


def _in_threads(calls: int, work: Callable[[int], tuple[str, int | None]]) -> list[tuple[str, int | None]]:
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=calls) as pool:
        return list(pool.map(lambda index: context.copy().run(work, index), range(calls)))


def _answer(client: Any, **options: Any) -> tuple[str, int | None]:
    """The answer and the call's occurrence."""
    response = client.chat.completions.create(model="counter", messages=VOTE, temperature=0.9, **options)
    info = llm.last_call()
    return str(response.choices[0].message.content), info.occurrence if info is not None else None


def test_concurrent_calls_replay_by_occurrence(ws: Path, server: StandInServer) -> None:
    client = llm.wrap(_client(server))

    def staggered(i: int) -> tuple[str, int | None]:
        # Calls start one after the other and finish in the opposite order (the stand-in waits
        # longer for the early ones; the header is not part of the request hash), so they are
        # stored, and answered sample-1, sample-2..., in the opposite order of their numbers.
        time.sleep(0.05 * i)
        return _answer(client, extra_headers={"x-keel-standin-fault": f"slow:{0.06 * (6 - i):.2f}"})

    with keel.start_run() as run:
        live = _in_threads(6, staggered)
    assert sorted(n for _, n in live) == list(range(6))  # each call got its own number
    answer_of = {n: answer for answer, n in live}
    stored = [row.occurrence for row in sessions.get_session().llm.calls(run=run.id)]
    assert sorted(stored) == list(range(6)) and stored != list(range(6))  # not stored in call order
    server.stop()

    # One after the other, the n-th call gets the n-th occurrence's answer (not the n-th stored).
    offline = llm.wrap(_client(server), mode="replay", replay_from=run.id)
    assert [_ask(offline) for _ in range(6)] == [answer_of[n] for n in range(6)]
    # Concurrently, each call gets the answer recorded for its own number.
    concurrent = llm.wrap(_client(server), mode="replay", replay_from=run.id)
    replayed = _in_threads(6, lambda _: _answer(concurrent))
    assert sorted(n for _, n in replayed) == list(range(6))
    assert all(answer == answer_of[n] for answer, n in replayed if n is not None)


def test_sequences_number_their_calls_on_their_own(local: Path, server: StandInServer) -> None:
    client = llm.wrap(_client(server))
    with keel.start_run() as run:
        with llm.sequence("question-a"):
            first_a = [_ask(client), _ask(client)]
        with llm.sequence("question-b"):
            first_b = [_ask(client), _ask(client)]
    assert (first_a, first_b) == (["sample-1", "sample-2"], ["sample-3", "sample-4"])
    rows = llm.calls(run=run.id)
    assert [(r.context["sequence"], r.occurrence) for r in rows] == [
        ("question-a", 0), ("question-a", 1), ("question-b", 0), ("question-b", 1),
    ]  # fmt: skip
    server.stop()
    offline = llm.wrap(_client(server), mode="replay", replay_from=run.id)
    with llm.sequence("question-b"):  # replayed in the other order: each gets its own
        assert [_ask(offline), _ask(offline)] == first_b
    with llm.sequence("question-a"):
        assert [_ask(offline), _ask(offline)] == first_a
    with llm.sequence("question-c"), pytest.raises(ReplayMiss, match="sequence 'question-c'"):
        _ask(offline)
    # Outside a sequence, a call goes through all of them in order.
    everything = llm.wrap(_client(server), mode="replay", replay_from=run.id)
    assert sorted(_ask(everything) for _ in range(4)) == sorted(first_a + first_b)


def test_unscoped_replay_uses_the_newest_run_that_recorded_the_request(local: Path, server: StandInServer) -> None:
    _record_three(server)  # sample-1..3
    client = llm.wrap(_client(server))
    with keel.start_run():
        newer = [_ask(client), _ask(client)]  # sample-4, sample-5
    other = [{"role": "user", "content": "Is 97 a prime number? Answer yes or no."}]
    with keel.start_run():
        _ask(client, other)  # a newer run that did not ask it does not count
    server.stop()
    offline = llm.wrap(_client(server), mode="replay")
    assert [_ask(offline), _ask(offline)] == newer == ["sample-4", "sample-5"]
    with pytest.raises(ReplayMiss, match="was recorded 2 times in run "):
        _ask(offline)


def test_calls_outside_a_run_are_numbered_per_client(local: Path, server: StandInServer) -> None:
    client = llm.wrap(_client(server))
    assert [_ask(client) for _ in range(3)] == ["sample-1", "sample-2", "sample-3"]
    server.stop()
    offline = llm.wrap(_client(server), mode="replay")
    assert [_ask(offline) for _ in range(3)] == ["sample-1", "sample-2", "sample-3"]
    with pytest.raises(ReplayMiss, match="recorded 3 times in the calls recorded outside a run by one client"):
        _ask(offline)


def test_recordings_from_before_occurrences_replay_in_stored_order(local: Path, server: StandInServer) -> None:
    run_id = _record_three(server)
    session = sessions.get_session()
    with session.service.store.db.raw_write() as cur:  # as rows written before migration 0019 are
        cur.execute("UPDATE llm_calls SET occurrence = NULL")
    assert {row.occurrence for row in llm.calls(run=run_id)} == {None}
    server.stop()
    scoped = llm.wrap(_client(server), mode="replay", replay_from=run_id)
    assert [_ask(scoped) for _ in range(3)] == ["sample-1", "sample-2", "sample-3"]
    unscoped = llm.wrap(_client(server), mode="replay")
    assert [_ask(unscoped) for _ in range(3)] == ["sample-1", "sample-2", "sample-3"]


CALC = [{"role": "user", "content": "{{ question }}"}]


def test_reproduce_of_an_evaluation_with_repeated_calls_is_identical(local: Path, server: StandInServer) -> None:
    keel.prompts.register("vote", template=CALC, changelog="first")
    rows = [{"id": f"r{i}", "question": "Is 91 prime?", "answer": "sample-3"} for i in range(8)]
    result = keel.evaluate(
        rows, "vote@1.0.0", {"name": "counter", "temperature": 0.9}, _client(server),
        [keel.scorers.exact_match("answer")], concurrency=4, mode="record",
    )  # fmt: skip
    outputs = result.samples.column("output")
    assert sorted(outputs) == sorted(f"sample-{n}" for n in range(1, 9))  # eight different answers
    server.stop()
    report = keel.reproduce(result.run_id)
    assert report.identical, report.differences
    assert not [note for note in report.notes if note.startswith("metric ")]  # latency and cost match too
    again = keel.Client().table(report.new_run_id, "samples")
    assert again.column("output") == outputs
