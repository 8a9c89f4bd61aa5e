"""Erasing recorded LLM calls (``keel.llm.delete_calls``) on real stores.

Calls are recorded with the real ``openai`` client against the stand-in server, for two end
users (``metadata={"user_id": ...}``) whose calls share pack objects. Erasing one user must
leave the other's calls replaying byte for byte, and the erased text must be gone from every
file of the store: the object store (a local folder, or every object of the S3 bucket) and,
on SQLite, ``keel.db`` and its write-ahead log. Runs on SQLite + a local folder and on
PostgreSQL + S3 (the ``ws`` fixture).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import openai
import pytest

import keel
from keel.core.entities import now_ms
from keel.errors import FilterSyntaxError, InvalidInput, NotFound, ReplayMiss
from keel.integrations.standin import StandInServer
from keel.meta import erasures
from keel.meta.llm import Changed, ErasePlan
from keel.sdk import llm
from keel.sdk import session as sessions
from keel.services.llm import PendingCall

_OPEN: list[openai.OpenAI] = []


@pytest.fixture
def server() -> Iterator[StandInServer]:
    with StandInServer() as running:
        yield running
    while _OPEN:
        _OPEN.pop().close()


def _client(server: StandInServer) -> openai.OpenAI:
    client = openai.OpenAI(base_url=server.base_url, api_key="standin", max_retries=0)
    _OPEN.append(client)
    return client


def _ask(client: object, text: str) -> object:
    return client.chat.completions.create(  # type: ignore[attr-defined]
        model="gpt-4", messages=[{"role": "user", "content": text}], temperature=0
    )


def _store_bytes(request: pytest.FixtureRequest, root: Path) -> list[bytes]:
    """The content of every file of the store: ``.keel/`` (objects, keel.db, its WAL), or
    every object of the S3 bucket (PostgreSQL keeps deleted tuples until VACUUM: docs/erasure.md)."""
    if "postgres" not in request.node.callspec.id:
        return [p.read_bytes() for p in (root / ".keel").rglob("*") if p.is_file()]
    url = urlparse(os.environ["KEEL_OBJECTS"])
    client = request.getfixturevalue("s3_server").client
    assert parse_qs(url.query)["endpoint_url"]
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=url.netloc):
        for item in page.get("Contents", []):
            found.append(client.get_object(Bucket=url.netloc, Key=item["Key"])["Body"].read())
    return found


def _contains(blobs: list[bytes], marker: str) -> bool:
    return any(marker.encode() in blob for blob in blobs)


def _audit() -> list[erasures.ErasureEntry]:
    with sessions.get_session().llm.store.db.read() as conn:
        return erasures.listing(conn, kind="llm_calls")


def _record_two_users(server: StandInServer, marker: str, n: int = 6) -> tuple[str, dict[str, str]]:
    """A run with ``n`` calls of u-42 (their text and metadata hold ``marker``) and ``n`` of u-7, interleaved;
    the run id and u-7's live responses (JSON) by question."""
    plain = _client(server)
    gone = llm.wrap(plain, metadata={"user_id": "u-42", "plan": "pro", "ticket": marker}, trace=False)
    kept = llm.wrap(plain, metadata={"user_id": "u-7", "plan": "pro"}, trace=False)
    live: dict[str, str] = {}
    with keel.start_run(project="support", name="chat") as run:
        for i in range(n):
            _ask(gone, f"{marker} my address is {i} Elm Street")
            question = f"What is {i} + 25?"
            live[question] = _ask(kept, question).model_dump_json()  # type: ignore[attr-defined]
    llm.flush()
    return run.id, live


def test_erasing_one_user_leaves_the_other_replaying_byte_identical(
    ws: Path, server: StandInServer, request: pytest.FixtureRequest
) -> None:
    marker = "ERASEME-" + secrets.token_hex(6)
    run_id, live = _record_two_users(server, marker)
    rows = llm.calls(run=run_id)
    assert len(rows) == 12
    users_by_pack: dict[str, set[str]] = {}
    for row in rows:
        users_by_pack.setdefault(row.oid, set()).add(row.context["metadata"]["user_id"])
    assert any(len(users) == 2 for users in users_by_pack.values())  # erasing must rewrite shared packs
    assert _contains(_store_bytes(request, ws), marker)  # the checks below can fail
    database = [ws / ".keel" / name for name in ("keel.db", "keel.db-wal")]
    if "sqlite" in request.node.callspec.id:  # the rows' context holds it too
        assert _contains([p.read_bytes() for p in database if p.exists()], marker)

    offline = llm.wrap(_client(server), mode="replay", replay_from=run_id, trace=False)
    _ask(offline, f"{marker} my address is 0 Elm Street")  # replay caches now hold the erased call

    report = llm.delete_calls(filter="metadata.user_id = 'u-42' and metadata.plan = 'pro'")
    assert (report.kind, report.matched, report.deleted, report.dry_run) == ("llm_calls", 6, 6, False)
    assert report.objects_removed == len(users_by_pack) and report.bytes_freed > 0
    assert report.derived == []

    left = llm.calls(run=run_id)
    assert sorted(r.context["metadata"]["user_id"] for r in left) == ["u-7"] * 6
    assert {r.id for r in left} == {r.id for r in rows if r.context["metadata"]["user_id"] == "u-7"}
    assert not {r.oid for r in left} & set(users_by_pack)  # moved to new packs
    assert not _contains(_store_bytes(request, ws), marker)

    for scope in (run_id, None):  # replay from the run, and from the whole store
        replay = llm.wrap(_client(server), mode="replay", replay_from=scope, trace=False)
        for question, answer in live.items():
            assert _ask(replay, question).model_dump_json() == answer  # type: ignore[attr-defined]
        for i in range(6):
            with pytest.raises(ReplayMiss):
                _ask(replay, f"{marker} my address is {i} Elm Street")

    (entry,) = _audit()
    assert (entry.kind, entry.matched, entry.deleted, entry.ids, entry.reason) == ("llm_calls", 6, 6, 0, "request")
    assert entry.filter == "metadata.user_id = 'u-42' and metadata.plan = 'pro'"
    assert entry.objects_removed == report.objects_removed and entry.bytes_freed == report.bytes_freed
    assert entry.id == report.audit_id and entry.actor


_RECORDER = """\
import sys, keel, openai
from keel.sdk import llm
client = openai.OpenAI(base_url=sys.argv[1], api_key="standin", max_retries=0)
wrapped = llm.wrap(client, metadata={"user_id": "u-new"}, trace=False)
with keel.start_run(project="support", name="meanwhile") as run:
    print(run.id, flush=True)
    for i in range(int(sys.argv[2])):
        wrapped.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": f"new {i}"}])
        if i % 10 == 0:
            llm.flush()
client.close()
"""


def _pending(user: str, marker: str, count: int, run_id: str | None = None) -> list[PendingCall]:
    """Calls as the SDK hands them over (one batch is one pack), for volume without a server."""
    return [
        PendingCall(
            "chat.completions",
            {"model": "gpt-4", "messages": [{"role": "user", "content": f"{marker} {i}"}]},
            {"id": f"c{i}", "object": "chat.completion", "model": "gpt-4", "choices": [], "note": f"{marker} {i}"},
            1.0,
            now_ms(),
            run_id=run_id,
            context={"metadata": {"user_id": user}},
        )
        for i in range(count)
    ]


def test_a_process_recording_during_erasures_loses_nothing(ws: Path, server: StandInServer) -> None:
    service = sessions.get_session().llm
    calls = 150
    child = subprocess.Popen(
        [sys.executable, "-c", _RECORDER, server.base_url, str(calls)],
        cwd=ws,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_id = child.stdout.readline().strip()  # type: ignore[union-attr]
    erased = 0
    while child.poll() is None or erased == 0:
        # Mixed packs of two users (u-7 stays), then u-42's calls erased: rewrites run all along.
        marker = "GONE-" + secrets.token_hex(4)
        service.write(_pending("u-42", marker, 40) + _pending("u-7", "STAY", 10))
        erased += llm.delete_calls(filter="metadata.user_id = 'u-42'").deleted
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert erased >= 40

    recorded = llm.calls(run=run_id, limit=None)
    assert len(recorded) == calls
    replay = llm.wrap(_client(server), mode="replay", replay_from=run_id, trace=False)
    for i in range(calls):
        reply = replay.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": f"new {i}"}])
        assert f"You said: new {i}" in reply.choices[0].message.content
    stayed = llm.calls(limit=None)
    assert {r.context["metadata"]["user_id"] for r in stayed} == {"u-new", "u-7"}
    for row in stayed:  # every pack a row points at is there
        service.read(row)


def test_two_erasures_of_the_same_packs_at_once_both_hold(ws: Path) -> None:
    service = sessions.get_session().llm
    for _ in range(4):  # four packs, each holding all three users
        service.write(_pending("u-1", "ONE", 20) + _pending("u-2", "TWO", 20) + _pending("u-3", "THREE", 20))
    errors: list[BaseException] = []

    def erase(user: str) -> None:
        try:
            llm.delete_calls(filter=f"metadata.user_id = '{user}'")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=erase, args=(user,)) for user in ("u-1", "u-2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    left = llm.calls(limit=None)
    assert len(left) == 80 and {r.context["metadata"]["user_id"] for r in left} == {"u-3"}
    for row in left:
        assert service.read(row).request["messages"][0]["content"].startswith("THREE ")
    assert sum(e.deleted for e in _audit()) == 160


def test_a_plan_made_stale_by_another_erasure_changes_nothing(ws: Path) -> None:
    service = sessions.get_session().llm
    service.write(_pending("u-1", "ONE", 3) + _pending("u-2", "TWO", 3))
    rows = service.repo.of_packs(sorted({r.oid for r in llm.calls()}))
    first = rows[0]
    stale = ErasePlan([first[0]], {}, {row_id: (oid, part) for row_id, oid, part in rows})
    llm.delete_calls(filter="metadata.user_id = 'u-2'")
    before = [(r.id, r.oid, r.part) for r in llm.calls()]
    with pytest.raises(Changed):
        service.repo.erase(stale, {"kind": "llm_calls"})
    assert [(r.id, r.oid, r.part) for r in llm.calls()] == before
    assert len(_audit()) == 1


def test_refusals_erase_nothing(ws: Path) -> None:
    service = sessions.get_session().llm
    service.write(_pending("u-1", "ONE", 3))
    service.write(_pending("u-2", "TWO", 3))
    before = [(r.id, r.oid, r.part) for r in llm.calls()]
    with pytest.raises(InvalidInput, match="nothing selects") as nothing:
        llm.delete_calls()
    assert "all=True" in nothing.value.hint
    with pytest.raises(InvalidInput, match="matches every recorded LLM call"):
        llm.delete_calls(filter="model = 'gpt-4'")
    with pytest.raises(InvalidInput, match="matches every recorded LLM call"):
        llm.delete_calls(ids=[r[0] for r in before])
    with pytest.raises(NotFound, match="no recorded LLM call with id 999999"):
        llm.delete_calls(ids=[before[0][0], 999999])
    with pytest.raises(InvalidInput, match="unknown recorded call field 'colour'"):
        llm.delete_calls(filter="colour = 'red'")
    with pytest.raises(FilterSyntaxError):
        llm.delete_calls(filter="metadata.user_id = ")
    with pytest.raises(InvalidInput, match="reason"):
        llm.delete_calls(filter="metadata.user_id = 'u-1'", reason="because")
    with pytest.raises(NotFound):
        llm.delete_calls(run_id="abcdef01")
    assert [(r.id, r.oid, r.part) for r in llm.calls()] == before
    assert _audit() == []

    dry = llm.delete_calls(filter="model = 'gpt-4'", all=True, dry_run=True)
    assert (dry.matched, dry.deleted, dry.dry_run, dry.audit_id) == (6, 0, True, None)
    assert [(r.id, r.oid, r.part) for r in llm.calls()] == before
    everything = llm.delete_calls(all=True)
    assert (everything.matched, everything.deleted, everything.objects_removed) == (6, 6, 2)
    assert llm.calls() == []


def test_erase_by_ids_run_and_time_and_what_lineage_links(ws: Path, server: StandInServer, tmp_path: Path) -> None:
    client = llm.wrap(_client(server), trace=False)
    with keel.start_run(project="support", name="first") as first:
        for i in range(3):
            _ask(client, f"first {i}")
    with keel.start_run(project="support", name="second") as second:
        for i in range(3):
            _ask(client, f"second {i}")
    llm.flush()
    llm.export_cassette(tmp_path / "first.jsonl", run=first.id)
    llm.import_cassette(tmp_path / "first.jsonl", name="first-copy")
    replay = llm.wrap(_client(server), mode="replay", replay_from=first.id, trace=False)
    with keel.start_run(project="support", name="replayed") as replayed:
        _ask(replay, "first 0")

    ids = [r.id for r in llm.calls(run=second.id)]
    report = llm.delete_calls(ids=ids[:2])
    assert (report.matched, report.deleted) == (2, 2)
    assert [r.id for r in llm.calls(run=second.id)] == ids[2:]
    assert _audit()[0].ids == 2 and _audit()[0].filter == ""

    newest = llm.calls(run=second.id)[0].created_at
    assert llm.delete_calls(run_id=second.id, until=newest).matched == 0  # until is exclusive
    assert llm.delete_calls(run_id=second.id[:8], since=newest).deleted == 1
    assert llm.calls(run=second.id) == []

    report = llm.delete_calls(run_id=first.id, dry_run=True)
    assert report.matched == 3
    why = f"replayed recorded LLM calls of run {first.id}"
    assert {"kind": "run", "id": replayed.id, "version": "", "why": why} in report.derived
    copy = next(d for d in report.derived if d["kind"] == "cassette")
    assert copy["id"] == "first-copy" and first.id in copy["why"]
    # the imported copies keep the context, so they match a filter on the source run too
    both = llm.delete_calls(filter=f"run_id = '{first.id}' or context.source_run = '{first.id}'", all=True)
    assert both.deleted == 6 and [d["kind"] for d in both.derived] == ["run"]
    assert llm.cassettes() == []


def test_rows_read_before_an_erasure_still_read_or_say_erased(ws: Path) -> None:
    """Another process's caches hold rows read before the erasure: a moved call is found in
    its new pack, an erased one is reported erased (not a missing object)."""
    service = sessions.get_session().llm
    service.write(_pending("u-1", "ONE", 2) + _pending("u-2", "TWO", 2))
    before = {r.context["metadata"]["user_id"]: r for r in llm.calls()}
    llm.delete_calls(filter="metadata.user_id = 'u-2'")
    service._packs.clear()  # as in a process that never read the packs
    moved = service.read(before["u-1"])
    assert moved.row.oid != before["u-1"].oid and moved.request["messages"][0]["content"].startswith("ONE ")
    with pytest.raises(NotFound, match=f"recorded LLM call {before['u-2'].id} .* was erased"):
        service.read(before["u-2"])


def test_packs_that_cannot_be_deleted_after_the_commit_are_named(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.errors import StoreError

    service = sessions.get_session().llm
    service.write(_pending("u-1", "ONE", 2) + _pending("u-2", "TWO", 2))

    def refuse(oids: object) -> int:
        raise OSError("the object store went away")

    monkeypatch.setattr(service.objects, "delete_many", refuse)
    with pytest.raises(StoreError, match="erased from the database, but the 1 pack objects") as failed:
        llm.delete_calls(filter="metadata.user_id = 'u-2'")
    assert "keel gc" in (failed.value.hint or "")
    assert {r.context["metadata"]["user_id"] for r in llm.calls()} == {"u-1"}  # committed
    assert [e.deleted for e in _audit()] == [2]


def test_identical_batches_never_share_a_pack(ws: Path) -> None:
    """What makes recording during an erasure safe: a pack an erasure deletes can never be
    the object a writer of the same calls was about to point at (every pack is new content)."""
    service = sessions.get_session().llm
    calls = _pending("u-1", "SAME", 3)
    service.write(calls)
    service.write(calls)
    service.write(calls, batch_id="b-1")
    service.write(calls, batch_id="b-1")  # a retried batch: written once, in the same pack
    packs = [r.oid for r in llm.calls(limit=None)]
    assert len(packs) == 9 and len(set(packs)) == 3
    llm.delete_calls(ids=[r.id for r in llm.calls(limit=None)][:3])
    assert len({r.oid for r in llm.calls(limit=None)}) == 2
