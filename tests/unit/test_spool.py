"""The spool and the delivery path of a writer: records, damage, ownership, order, idempotent retries."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from keel.core.batch import WriteBatch
from keel.core.conversations import ConversationBatch
from keel.errors import InvalidInput, StoreError
from keel.sdk.spool import (
    FILE_MAGIC,
    RECORD,
    StreamSpool,
    decode_batch,
    destination_key,
    encode_batch,
    scan,
    spool_root,
)
from keel.sdk.writer import BatchWriter, split_by_run
from keel.services.abtests import ABBatch
from keel.services.llm import CallBatch, PendingCall

T = 1_700_000_000_000


def _batch(n: int = 5, run: str = "r" * 32) -> WriteBatch:
    return WriteBatch(
        new_runs=[(run, "p", "name", T, None, "{}")],
        metrics=[(run, f"k{i % 2}", float(i), i, T + i) for i in range(n)],
        params=[(run, "model", "str", "gpt-4o", False)],
        run_ends=[(run, "finished", T + n, None)],
    )


# -- records ---------------------------------------------------------------------------------------
def test_every_batch_kind_survives_the_spool_encoding() -> None:
    batch = _batch()
    batch.metrics.append(("r" * 32, "odd", math.nan, 9, T))
    batch.metrics.append(("r" * 32, "odd", -math.inf, 10, 2**62))
    batch_id, back = decode_batch(encode_batch("b-1", batch, T))
    assert batch_id == "b-1" and back.new_runs == batch.new_runs and back.params == batch.params
    assert back.metrics[:5] == batch.metrics[:5] and math.isnan(back.metrics[5][2])
    assert back.metrics[6] == ("r" * 32, "odd", -math.inf, 10, 2**62)
    conversations = ConversationBatch(conversations=[("c1", 1, None, 2.5, "x")], feedback=[("c1", 1, None, None, T)])
    assert decode_batch(encode_batch("c", conversations, T))[1] == conversations
    exposures = ABBatch(exposures=[("exp", "u1", "a", "{}", None, T)], outcomes=[("exp", "u1", "m", 1.0, T)])
    assert decode_batch(encode_batch("x", exposures, T))[1] == exposures
    call = PendingCall("chat", {"model": "m", "messages": []}, {"id": "r1", "choices": []}, 12.5, T, None, {"k": 1})
    assert decode_batch(encode_batch("l", CallBatch([call]), T))[1] == CallBatch([call])
    with pytest.raises(InvalidInput):
        decode_batch(b'{"v": 1, "id": "x", "b": {"$type": "Nope", "fields": {}}}')


def test_records_are_appended_read_in_order_and_a_delivered_segment_is_deleted(tmp_path: Path) -> None:
    spool = StreamSpool(tmp_path / "dest" / "runs", "sqlite:///x.db")
    spool.append([(1, "a", 5, T, b"one"), (2, "b", 7, T + 1, b"two")])
    spool.sync()
    assert (spool.rows, spool.records, spool.oldest()) == (12, 2, T)
    assert (tmp_path / "dest" / "DESTINATION").read_text().strip() == "sqlite:///x.db"
    (segment,) = (tmp_path / "dest" / "runs").glob("*.seg")
    first = spool.head()
    assert first is not None and spool.read(first) == b"one" and (first.seq, first.batch_id) == (1, "a")
    spool.done(first)
    assert Path(str(segment) + ".ack").is_file() and spool.rows == 7
    second = spool.head()
    assert second is not None and spool.read(second) == b"two"
    spool.done(second)
    assert spool.head() is None and not segment.exists() and not Path(str(segment) + ".ack").exists()
    spool.close()


def _segment_with(folder: Path, payloads: list[bytes]) -> Path:
    """A segment as a process that died would leave it (not locked)."""
    spool = StreamSpool(folder)
    spool.append([(i + 1, f"id{i}", 1, T, p) for i, p in enumerate(payloads)])
    spool.close()  # releases the lock: an orphan now
    (path,) = folder.glob("*.seg")
    return path


def test_a_torn_or_corrupt_record_ends_the_segment_and_is_counted(tmp_path: Path) -> None:
    path = _segment_with(tmp_path / "runs", [b"first", b"second", b"third"])
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size - 2)  # the last record torn
    (segment,) = StreamSpool(tmp_path / "runs").claim_orphans()
    found = [segment.next()]
    assert found[0] is not None and found[0][1] == b"first"
    segment.ack(found[0][0])
    second = segment.next()
    assert second is not None and second[1] == b"second"
    segment.ack(second[0])
    assert segment.next() is None and segment.damaged == RECORD.size + len(b"third") - 2
    segment.release(delete=True)

    path = _segment_with(tmp_path / "llm", [b"alpha", b"omega"])
    data = bytearray(path.read_bytes())
    data[len(FILE_MAGIC) + RECORD.size] ^= 0xFF  # a flipped bit in the first payload: its CRC tells
    path.write_bytes(bytes(data))
    (segment,) = StreamSpool(tmp_path / "llm").claim_orphans()
    assert segment.next() is None and segment.damaged > 0
    segment.release(delete=False)


HOLDER = """
import sys, time
from keel.sdk.spool import StreamSpool
spool = StreamSpool(sys.argv[1])
spool.append([(1, "held", 3, 0, b"payload")])
spool.sync()
print("ready", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_live_process_keeps_its_segments_and_one_claimer_takes_an_orphan(tmp_path: Path) -> None:
    folder = tmp_path / "dest" / "conversations"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLDER), str(folder), "30"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        assert StreamSpool(folder).claim_orphans() == []  # held by a live process
        (status,) = scan(tmp_path)
        assert (status.held, status.held_rows, status.rows) == (1, 3, 3)
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    first, second = StreamSpool(folder), StreamSpool(folder)
    claimed = first.claim_orphans()
    assert len(claimed) == 1 and second.claim_orphans() == []  # locked by the first claimer
    found = claimed[0].next()
    assert found is not None and found[1] == b"payload" and found[0].rows == 3
    claimed[0].ack(found[0])
    claimed[0].release(delete=True)
    assert second.claim_orphans() == [] and not list(folder.glob("*.seg"))


def test_scan_reports_what_waits_per_destination_and_stream(tmp_path: Path) -> None:
    _segment_with(tmp_path / "dest-1" / "runs", [b"x", b"y"])
    (tmp_path / "dest-1" / "DESTINATION").write_text("postgresql://keel:***@db/keel\n")
    (entry,) = scan(tmp_path)
    assert (entry.destination, entry.stream, entry.records, entry.rows, entry.held) == ("dest-1", "runs", 2, 2, 0)
    assert entry.description == "postgresql://keel:***@db/keel" and entry.to_dict()["oldest_age_s"] > 0


def test_where_the_spool_lives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEEL_SPOOL_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert spool_root(tmp_path / "ws") == tmp_path / "ws" / ".keel" / "spool"
    assert spool_root(None) == tmp_path / "cache" / "keel" / "spool"
    monkeypatch.setenv("KEEL_SPOOL_DIR", str(tmp_path / "mine"))
    assert spool_root(tmp_path / "ws") == tmp_path / "mine"
    key = destination_key("postgresql+psycopg://keel:s3cret@db.example:5432/keel")
    assert "s3cret" not in key and key == destination_key("postgresql+psycopg://keel:other@db.example:5432/keel")


# -- a writer with a spool ------------------------------------------------------------------------------
class Store:
    """A destination that stores a batch id once, fails on demand, and can commit then fail."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, object]] = []
        self.ids: set[str] = set()
        self.down = False
        self.commit_then_fail = 0
        self.lock = threading.Lock()

    def __call__(self, batch: WriteBatch, batch_id: str | None = None) -> None:
        if self.down:
            raise StoreError("the database is unavailable (connection refused)")
        with self.lock:
            if batch_id is not None and batch_id in self.ids:
                return
            if batch_id is not None:
                self.ids.add(batch_id)
            self.rows += [("m", row) for row in batch.metrics] + [("e", row) for row in batch.run_ends]
        if self.commit_then_fail:
            self.commit_then_fail -= 1
            raise StoreError("the connection broke before the reply")  # committed, unacknowledged

    def metrics(self) -> list[object]:
        return [row for kind, row in self.rows if kind == "m"]


def test_a_batch_whose_attempt_committed_unacknowledged_is_stored_once() -> None:
    store = Store()
    store.commit_then_fail = 2
    writer = BatchWriter(store, interval=10)
    for i in range(100):
        writer.add_metric(("r", "m", float(i), i, T))
    assert writer.flush(timeout=20)
    assert len(store.metrics()) == 100 and writer.written == 100 and writer.failed == 0
    writer.close()


def test_while_the_store_is_down_batches_go_to_the_spool_and_arrive_in_order(tmp_path: Path) -> None:
    store = Store()
    store.down = True
    spool = StreamSpool(tmp_path / "d" / "runs")
    writer = BatchWriter(store, interval=0.02, spool=spool)
    for i in range(300):
        writer.add_metric(("r", "m", float(i), i, T))
        if i % 50 == 0:
            time.sleep(0.05)
    deadline = time.monotonic() + 10
    while writer.status()["spooled"] < 300 and time.monotonic() < deadline:
        time.sleep(0.02)
    status = writer.status()
    assert status["spooled"] == 300 and status["queued"] == 0 and "unavailable" in status["last_error"]
    store.down = False
    assert writer.flush(timeout=20)
    assert [row[3] for row in store.metrics()] == list(range(300))  # type: ignore[index]
    assert writer.status()["spooled"] == 0 and not list((tmp_path / "d" / "runs").glob("*.seg"))
    writer.close()


def test_a_flush_that_times_out_leaves_everything_on_disk_for_the_next_process(tmp_path: Path) -> None:
    store = Store()
    store.down = True
    folder = tmp_path / "d" / "runs"
    writer = BatchWriter(store, interval=10, spool=StreamSpool(folder), split=split_by_run)
    for i in range(1000):
        writer.add_metric(("r", "m", float(i), i, T))
    writer.add("e", ("r", "finished", T, None))
    assert writer.flush(timeout=0.5) is False  # not delivered: spooled, fsynced
    assert writer.status()["spooled"] == 1001 and writer.status()["queued"] == 0
    assert writer.stop() == 1001 and writer.take_losses() == {}
    store.down = False
    later = BatchWriter(store, interval=0.05, spool=StreamSpool(folder))  # "the next process"
    assert later.claim_orphans() == 1001
    deadline = time.monotonic() + 10
    while later._claimed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(store.metrics()) == 1000 and [k for k, _ in store.rows].count("e") == 1
    assert later.written == 1001 and not list(folder.glob("*.seg"))
    later.close()


def test_without_room_in_memory_or_on_disk_rows_are_refused_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_QUEUE_MEMORY_MB", "0.05")  # ~50 KB: a few hundred rows
    store = Store()
    store.down = True
    writer = BatchWriter(store, interval=10, wake_at=100, split=split_by_run)  # no spool
    for i in range(5000):
        writer.add_metric(("r", "m", float(i), i, T))
    writer.collect()
    for i in range(5000):
        writer.add_metric(("r", "m", float(i), i, T))
    assert writer.failed > 0 and writer.status()["rejected"] == writer.failed
    assert writer.queued + writer.failed == 10_000  # every row in memory or counted: none dropped silently
    loss = writer.take_loss("r")
    assert loss is not None and "delivery queue is full" in str(loss.error)
    writer.stop()


def test_the_store_is_never_written_by_the_logging_thread() -> None:
    seen: set[str] = set()

    def store(batch: WriteBatch, batch_id: str | None = None) -> None:
        seen.add(threading.current_thread().name)
        time.sleep(0.02)  # a slow store: writing from the logging thread (10 rows a wake) would take 40 s

    writer = BatchWriter(store, interval=0.01, wake_at=10)
    started = time.perf_counter()
    for i in range(20_000):
        writer.add_metric(("r", "m", float(i), i, T))
    elapsed = time.perf_counter() - started
    writer.flush(timeout=10)
    assert threading.current_thread().name not in seen and seen == {"keel-runs-delivery"}
    assert elapsed < 2.0  # 20,000 appends, however slow the store
    writer.close()


def test_a_permanent_refusal_is_reported_and_the_batch_is_not_retried(tmp_path: Path) -> None:
    calls = []

    def store(batch: WriteBatch, batch_id: str | None = None) -> None:
        calls.append(batch_id)
        raise InvalidInput("no such project", "create it")

    rejected = []
    writer = BatchWriter(store, interval=10, spool=StreamSpool(tmp_path / "x"), on_reject=rejected.append)
    writer.add_metric(("r", "m", 1.0, 0, T))
    assert writer.flush(timeout=5)
    assert len(calls) == 1 and writer.failed == 1 and len(rejected) == 1
    assert writer.status()["rejected"] == 1 and "no such project" in writer.status()["last_error"]
    writer.close()


def test_idempotent_ids_are_unique_per_batch_and_stable_across_retries() -> None:
    ids: list[str | None] = []
    failures = [StoreError("busy")] * 3

    def store(batch: WriteBatch, batch_id: str | None = None) -> None:
        ids.append(batch_id)
        if failures:
            raise failures.pop()

    writer = BatchWriter(store, interval=10)
    writer.add_metric(("r", "m", 1.0, 0, T))
    assert writer.flush(timeout=10)
    writer.add_metric(("r", "m", 2.0, 1, T))
    assert writer.flush(timeout=10)
    assert len(ids) == 5 and len(set(ids[:4])) == 1 and ids[4] != ids[0]
    assert all(isinstance(i, str) and len(i) <= 100 for i in ids)
    writer.close()


def test_a_closed_writer_hands_its_spool_over(tmp_path: Path) -> None:
    store = Store()
    store.down = True
    folder = tmp_path / "d" / "runs"
    writer = BatchWriter(store, interval=10, spool=StreamSpool(folder))
    writer.add_metric(("r", "m", 1.0, 0, T))
    assert writer.close(timeout=0.3) is False
    (segment,) = folder.glob("*.seg")
    assert os.stat(segment).st_size > len(FILE_MAGIC)
    assert len(StreamSpool(folder).claim_orphans()) == 1  # unlocked: the next process may take it
