"""Erasing one end user's conversations and traces on real stores (a SQLite file with local
objects; PostgreSQL with the S3 server): only theirs go, the others' records are intact, the
erased text is in no file of the store any more (SQLite: ``keel.db``, ``keel.db-wal``, the
object files), one audit entry per erasure stays without the content, and every refusal
deletes nothing."""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from pathlib import Path

import pytest

from keel.errors import InvalidInput, NotFound, Unavailable
from keel.sdk import conversations, erasures, traces
from keel.sdk.session import get_session

GONE = "ZEBRAQUOKKA"  # in everything of the erased user: messages, metadata, feedback, payloads
KEPT = "OKAPILEMUR"  # in everything of the others


def _log(users: dict[str, int]) -> list[str]:
    """Conversations (with feedback) and traces (one with a payload big enough to go to the
    object store) for each user; the trace ids."""
    now = time.time_ns()
    spans = []
    for user, count in users.items():
        mark = GONE if user == "u-42" else KEPT
        for i in range(count):
            cid = f"{user}-c{i}"
            conversations.log(
                {
                    "conversation_id": cid,
                    "messages": [
                        {"role": "user", "content": f"{mark} question {i} of {user}"},
                        {"role": "assistant", "content": f"{mark} answer"},
                    ],
                    "metadata": {"user_id": user, "note": f"{mark}-note"},
                }
            )
            conversations.feedback(cid, thumb="down", comment=f"{mark} feedback")
            big = {"document": f"{mark} {user} {i} " + "lorem ipsum " * 2000}  # > 16 KiB: an object
            spans.append(
                {
                    "trace_id": secrets.token_hex(16),
                    "span_id": secrets.token_hex(8),
                    "name": "answer",
                    "start_ns": now + len(spans),
                    "end_ns": now + len(spans) + 1_000_000,
                    "attributes": {"keel.user_id": user, "note": f"{mark}-attribute"},
                    "inputs": big if i == 0 else {"q": f"{mark} inline {i}"},
                    "outputs": {"a": f"{mark} output"},
                }
            )
    conversations.flush()
    assert traces.ingest(spans).stored == len(spans)
    for span in spans[:: max(1, len(spans) // 4)]:
        traces.feedback(span["trace_id"], key="helpful", value=0.0, comment="scored")
    traces.flush()
    return [s["trace_id"] for s in spans]


def _store():
    return get_session(create=False).service.store


def _object_texts() -> list[bytes]:
    objects = _store().objects
    return [objects.get_bytes(info.oid) for info in objects.iter_objects()]


def test_erasing_one_user_leaves_the_others_and_no_trace_in_the_files(ws: Path) -> None:
    _log({"u-42": 6, "u-7": 5, "u-8": 3})
    assert conversations.count("metadata.user_id = 'u-42'") == 6
    plans = erasures.erase_user("u-42", dry_run=True)
    assert [(p, r.kind, r.matched, r.deleted) for p, r in plans] == [
        ("", "conversations", 6, 0),
        ("default", "traces", 6, 0),
        ("", "llm_calls", 0, 0),
    ]
    assert conversations.count() == 14  # a dry run changed nothing

    reports = {r.kind: r for _, r in erasures.erase_user("u-42")}
    assert (reports["conversations"].matched, reports["conversations"].deleted) == (6, 6)
    assert (reports["traces"].deleted, reports["traces"].objects_removed) == (6, 1)
    assert reports["traces"].bytes_freed > 16 * 1024

    # only theirs went: the others' records, feedback, traces and payloads are intact
    assert conversations.count("metadata.user_id = 'u-42'") == 0
    assert conversations.count() == 8
    detail = conversations.get("u-7-c0")
    assert KEPT in detail.latest.messages[0]["content"] and [e.comment for e in detail.feedback] == [f"{KEPT} feedback"]
    assert traces.search("user_id = 'u-42'") == []
    kept = traces.search("user_id = 'u-7'")
    assert len(kept) == 5
    loaded = [traces.get(t.trace_id) for t in kept]
    big = [d for d in loaded if isinstance(d.spans[0].inputs, dict) and "$object" in d.spans[0].inputs]
    assert len(big) == 1
    payload = get_session(create=False).traces.payload(big[0].trace.trace_id, big[0].spans[0].span_id, "inputs")
    assert payload["document"].startswith(f"{KEPT} u-7 0")

    # nothing of the erased user is readable from the store's files
    texts = _object_texts()
    assert not any(GONE.encode() in t for t in texts)
    assert any(KEPT.encode() in t for t in texts)
    store = _store()
    database = store.db.database
    if database is not None:  # SQLite: the database file and its write-ahead log, byte for byte
        files = [Path(database), Path(f"{database}-wal")]
        raw = b"".join(f.read_bytes() for f in files if f.exists())
        assert GONE.encode() not in raw
        assert KEPT.encode() in raw
        objects = Path(database).parent / "objects"
        assert not any(GONE.encode() in p.read_bytes() for p in objects.rglob("*") if p.is_file())
    else:  # PostgreSQL: the rows are gone (VACUUM's part is in docs/erasure.md)
        with store.db.read() as conn:
            for table, column in (
                ("conversations", "messages"),
                ("conversation_feedback", "comment"),
                ("spans", "attributes"),
                ("traces", "user_id"),
            ):
                found = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {column} LIKE ?", (f"%{GONE}%",))
                assert found.scalar() == 0, table
            assert conn.execute("SELECT COUNT(*) FROM traces WHERE user_id = 'u-42'").scalar() == 0

    # the audit: one entry per erasure, counts and the filter, never the content
    entries = erasures.entries()
    assert [(e.kind, e.scope, e.deleted) for e in entries] == [
        ("llm_calls", "", 0),
        ("traces", "default", 6),
        ("conversations", "", 6),
    ]
    assert entries[1].filter == "user_id = 'u-42'" and entries[1].objects_removed == 1
    assert all(GONE not in repr(e) for e in entries)


def test_refusals_delete_nothing(ws: Path) -> None:
    trace_ids = _log({"u-1": 2, "u-2": 2})
    before = (conversations.count(), len(traces.search()))

    with pytest.raises(InvalidInput, match="matches every conversation"):
        conversations.delete(filter="metadata.user_id != 'nobody'")
    with pytest.raises(InvalidInput, match="matches every trace"):
        traces.delete(since="2000-01-01")
    with pytest.raises(InvalidInput, match="give ids, a filter or a time range"):
        conversations.delete()
    with pytest.raises(NotFound, match="nothing was deleted"):
        conversations.delete(["u-1-c0", "no-such-conversation"])
    with pytest.raises(NotFound):
        traces.delete([trace_ids[0], "0123456789abcdef0123456789abcdef"])
    with pytest.raises(InvalidInput, match="not both"):
        conversations.delete(["u-1-c0"], filter="model = 'x'")
    assert (conversations.count(), len(traces.search())) == before
    assert erasures.entries() == []

    # all=True is the way to say "everything"; ids erase whole conversations
    assert conversations.delete(["u-1-c0"]).deleted == 1
    assert traces.delete([trace_ids[1][:8]]).deleted == 1
    report = conversations.delete(filter="metadata.user_id != 'nobody'", all=True)
    assert report.deleted == 3 and conversations.count() == 0
    assert traces.delete(all=True).deleted == 3 and traces.search() == []


def test_time_ranges_and_exported_dataset_versions(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.sdk import data

    _log({"u-42": 3, "u-7": 2})
    if _store().db.database is None:
        pytest.skip("dataset versions are tracked in a workspace (SQLite here)")
    export = ws / "eval.jsonl"
    assert conversations.export(export, "metadata.user_id = 'u-42'") == 3
    monkeypatch.chdir(ws)
    (added,) = data.add(str(export))
    import keel

    with keel.start_run(name="eval") as run:
        run.use_dataset(export)
    plan = conversations.delete(filter="metadata.user_id = 'u-42'", dry_run=True)
    assert plan.derived == [
        {
            "kind": "dataset",
            "id": added.path,
            "version": added.oid,
            "why": plan.derived[0]["why"],
        }
    ]
    assert plan.derived[0]["why"].startswith("3 line(s) exported from erased records")
    assert plan.derived[0]["why"].endswith(f"; used by run(s) {run.id[:8]}")  # lineage
    # the others' conversations are in no dataset; a range after every record matches nothing
    assert conversations.delete(filter="metadata.user_id = 'u-7'", dry_run=True).derived == []
    assert conversations.delete(since="2999-01-01").matched == 0
    report = conversations.delete(until="2999-01-01", filter="metadata.user_id = 'u-42'")
    assert report.deleted == 3 and report.derived == plan.derived
    assert _store().objects.exists(added.oid)  # versions are immutable: listed, never rewritten


def test_scrub_waits_for_readers_then_says_so(tmp_path: Path) -> None:
    from keel.meta.engine import open_database
    from keel.meta.migrate import ensure_schema

    db = open_database(str(tmp_path / "keel.db"))
    ensure_schema(db)
    with db.write() as conn:
        conn.execute("INSERT INTO erasures (at, kind) VALUES (1, 'conversations')")
    reader = sqlite3.connect(tmp_path / "keel.db", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM erasures").fetchall()  # holds a snapshot in the log
    with db.write() as conn:
        conn.execute("DELETE FROM erasures")
    with pytest.raises(Unavailable, match="write-ahead log could not be emptied"):
        db.scrub(attempts=2)
    reader.execute("COMMIT")
    reader.close()
    db.scrub()
    assert os.path.getsize(tmp_path / "keel.db-wal") == 0
    db.close()


def test_a_payload_another_record_shares_is_kept(ws: Path) -> None:
    now = time.time_ns()
    shared = {"document": "the same long answer " * 2000}  # one object, by content, for both traces
    spans = [
        {
            "trace_id": secrets.token_hex(16),
            "span_id": secrets.token_hex(8),
            "name": "answer",
            "start_ns": now + i,
            "end_ns": now + i + 1000,
            "attributes": {"keel.user_id": user},
            "inputs": shared,
        }
        for i, user in enumerate(("u-42", "u-7"))
    ]
    assert traces.ingest(spans).stored == 2
    report = traces.delete(filter="user_id = 'u-42'")
    assert (report.deleted, report.objects_removed, report.bytes_freed) == (1, 0, 0)
    (left,) = traces.search()
    payload = get_session(create=False).traces.payload(left.trace_id, spans[1]["span_id"], "inputs")
    assert payload == shared
