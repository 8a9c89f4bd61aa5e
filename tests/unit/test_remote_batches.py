"""A background writer's backlog is sent to a server in bounded requests, rows in order."""

from __future__ import annotations

from keel.core.batch import WriteBatch
from keel.core.conversations import ConversationBatch
from keel.sdk.remote import split_batch


def test_a_small_batch_is_sent_as_it_is() -> None:
    batch = WriteBatch(metrics=[("r", "m", 1.0, 0, 0)])
    assert split_batch(batch, 10) == [batch]


def test_a_large_batch_is_cut_with_new_runs_first_and_run_ends_last() -> None:
    batch = WriteBatch(
        new_runs=[("r", "p", "n", 0, None, "{}")],
        metrics=[("r", "m", float(i), i, i) for i in range(25)],
        tags=[("r", "t", "v")],
        run_ends=[("r", "finished", 9, None)],
    )
    parts = split_batch(batch, 10)
    assert [len(p) for p in parts] == [10, 10, 8]
    assert parts[0].new_runs == batch.new_runs and not parts[1].new_runs
    assert parts[-1].run_ends == batch.run_ends and parts[-1].tags == batch.tags
    assert [m for p in parts for m in p.metrics] == batch.metrics


def test_every_batch_kind_is_cut_the_same_way() -> None:
    batch = ConversationBatch(conversations=[(i,) for i in range(5)], feedback=[("c", 1, None, None, 0)] * 3)
    parts = split_batch(batch, 4)
    assert [len(p) for p in parts] == [4, 4]
    assert [row for p in parts for row in p.conversations] == batch.conversations
    assert sum(len(p.feedback) for p in parts) == 3
