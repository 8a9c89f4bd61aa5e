"""The background writer: ordering, flush semantics, batching and failure handling."""

import threading

from keel.core.batch import WriteBatch
from keel.errors import InvalidInput, KeelError, StoreError, WriteFailed
from keel.sdk.writer import BatchWriter, split_by_run


class Sink:
    """A real in-memory destination for batches (the writer's only dependency)."""

    def __init__(self, fail_times=0, error=StoreError("locked")):
        self.batches: list[WriteBatch] = []
        self.fail_times = fail_times
        self.error = error

    def __call__(self, batch):
        if self.fail_times:
            self.fail_times -= 1
            raise self.error
        self.batches.append(batch)


def test_flush_makes_everything_before_it_written():
    sink = Sink()
    writer = BatchWriter(sink, interval=10)
    for i in range(1000):
        writer.add_metric(("r", "loss", float(i), i, 0))
    writer.add("p", ("r", "model", "str", "gpt-4", False))
    writer.flush()
    rows = [m for b in sink.batches for m in b.metrics]
    assert len(rows) == 1000 and rows[-1][2] == 999.0
    assert [p for b in sink.batches for p in b.params] == [("r", "model", "str", "gpt-4", False)]
    writer.close()


def test_many_threads_lose_nothing():
    sink = Sink()
    writer = BatchWriter(sink, interval=0.01, wake_at=100)

    def work(t):
        for i in range(5000):
            writer.add_metric((f"r{t}", "m", float(i), i, 0))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.flush()
    assert sum(len(b.metrics) for b in sink.batches) == 20000
    writer.close()


def test_transient_errors_are_retried():
    sink = Sink(fail_times=2)
    writer = BatchWriter(sink, interval=10)
    writer.add_metric(("r", "m", 1.0, 0, 0))
    writer.flush()
    assert writer.errors == 0 and len(sink.batches) == 1
    writer.close()


def test_permanent_errors_are_counted_not_raised(caplog):
    sink = Sink(fail_times=1, error=InvalidInput("bad run"))
    writer = BatchWriter(sink, interval=10)
    writer.add_metric(("r", "m", 1.0, 0, 0))
    writer.flush()  # does not raise into the app
    assert writer.errors == 1 and isinstance(writer.last_error, InvalidInput)
    assert "could not write 1 logged rows" in caplog.text
    writer.close()


def test_an_interrupted_attempt_is_tried_again_and_loses_nothing():
    class Interrupting(Sink):
        def __call__(self, batch):
            if not self.batches and not getattr(self, "interrupted", False):
                self.interrupted = True
                raise KeyboardInterrupt  # nothing was written: like a transient failure
            super().__call__(batch)

    sink = Interrupting()
    writer = BatchWriter(sink, interval=10)
    writer.add_metric(("r", "m", 1.0, 0, 0))
    writer.add("p", ("r", "model", "str", "gpt-4", False))
    assert writer.flush(timeout=10)
    assert [m[2] for m in sink.batches[0].metrics] == [1.0]
    assert len(sink.batches[0].params) == 1 and writer.pending == 0 and writer.failed == 0
    writer.close()


# -- a refused batch loses only the refused run's rows, and says so (issue 16) -----------------
class Refusing(Sink):
    """Refuses (permanently) every batch that holds a row of run ``bad``."""

    def __init__(self, bad="bad", error=None):
        super().__init__()
        self.bad = bad
        self.refusal = error or InvalidInput("no project 'theirs'", "list the projects you can see")
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        if self.bad in batch.run_ids() or any(row[0] == self.bad for row in batch.new_runs):
            raise self.refusal
        self.batches.append(batch)


def _rows(sink, field, run_id):
    return [row for b in sink.batches for row in getattr(b, field) if row[0] == run_id]


def test_a_refused_batch_is_split_by_run_and_only_the_refused_runs_rows_are_lost():
    sink = Refusing()
    writer = BatchWriter(sink, interval=10, split=split_by_run)
    for run_id in ("good", "bad", "other"):
        writer.add("r", (run_id, "p", run_id, 0, None, "{}"))
    for i in range(1000):
        writer.add_metric(("good", "loss", float(i), i, 0))
        if i < 3:
            writer.add_metric(("bad", "m", 1.0, i, 0))
    writer.add("p", ("other", "model", "str", "gpt-4", False))
    writer.add("e", ("bad", "finished", 1, None))
    writer.flush()
    assert len(_rows(sink, "metrics", "good")) == 1000 and len(_rows(sink, "params", "other")) == 1
    assert [row[0] for b in sink.batches for row in b.new_runs] == ["good", "other"]
    assert sink.calls == 4  # the whole batch, then each run's rows alone
    assert (writer.errors, writer.failed, writer.lost) == (1, 5, 5)
    assert writer.take_loss("good") is None
    loss = writer.take_loss("bad")
    assert loss is not None and loss.rows == 5 and loss.error is sink.refusal
    assert writer.take_loss("bad") is None and writer.lost == 0  # reported once
    failed = loss.failure("bad" * 8, "refused")
    assert isinstance(failed, WriteFailed) and isinstance(failed, KeelError)
    assert (failed.run_id, failed.rows, failed.cause_code) == ("bad" * 8, 5, "invalid_input")
    assert failed.message == "5 logged rows of run badbadba (refused) could not be written: no project 'theirs'"
    assert failed.hint == "list the projects you can see" and failed.__cause__ is sink.refusal
    writer.close()


def test_losses_add_up_per_run_and_keep_the_first_error():
    sink = Refusing()
    writer = BatchWriter(sink, interval=10, split=split_by_run)
    writer.add_metric(("bad", "m", 1.0, 0, 0))
    writer.add_metric(("good", "m", 1.0, 0, 0))
    writer.flush()
    first = sink.refusal
    sink.refusal = InvalidInput("another reason")
    writer.add_metric(("bad", "m", 2.0, 1, 0))  # alone in its batch: no split, one try
    writer.flush()
    assert sink.calls == 4
    loss = writer.take_loss("bad")
    assert loss is not None and (loss.rows, loss.error) == (2, first)
    writer.close()


def test_a_transient_failure_is_retried_until_delivered_and_never_counted_as_lost():
    sink = Sink(fail_times=4, error=StoreError("database is locked"))
    writer = BatchWriter(sink, interval=10, max_attempts=2, split=split_by_run)
    writer.add_metric(("a", "m", 1.0, 0, 0))
    writer.add_metric(("a", "m", 2.0, 1, 0))
    writer.add_metric(("b", "m", 1.0, 0, 0))
    assert writer.flush(timeout=20)  # more tries than max_attempts: transient errors never give up
    assert sink.fail_times == 0 and sum(len(b.metrics) for b in sink.batches) == 3
    assert writer.take_losses() == {} and writer.failed == 0
    assert isinstance(writer.last_error, StoreError)
    writer.close()


def test_a_writer_without_split_counts_its_losses_under_none(caplog):
    sink = Sink(fail_times=1, error=InvalidInput("bad row"))
    writer = BatchWriter(sink, interval=10)
    writer.add_metric(("r", "m", 1.0, 0, 0))
    writer.flush()
    assert "could not write 1 logged rows" in caplog.text  # rows no run's finish() will report: a warning
    loss = writer.take_losses()[None]
    assert loss.rows == 1 and loss.failure("r").cause == "bad row"
    writer.close()


def test_an_interruption_while_splitting_retries_that_part_only():
    class InterruptOnce(Refusing):
        def __call__(self, batch):
            if batch.run_ids() == {"c"} and not getattr(self, "interrupted", False):
                self.interrupted = True
                raise KeyboardInterrupt
            super().__call__(batch)

    sink = InterruptOnce()
    writer = BatchWriter(sink, interval=10, split=split_by_run)
    for run_id in ("a", "bad", "c", "d"):
        writer.add_metric((run_id, "m", 1.0, 0, 0))
    assert writer.flush(timeout=10)
    assert sorted(row[0] for b in sink.batches for row in b.metrics) == ["a", "c", "d"]
    assert writer.take_loss("bad").rows == 1 and writer.pending == 0
    writer.close()


def test_split_by_run_keeps_each_runs_rows_in_order_and_new_runs_first():
    batch = WriteBatch(
        new_runs=[("child", "p", "c", 0, "parent", "{}"), ("parent", "p", "p", 0, None, "{}")],
        metrics=[("parent", "m", 1.0, 0, 0), ("child", "m", 2.0, 0, 0), ("parent", "m", 3.0, 1, 0)],
        run_ends=[("child", "finished", 1, None)],
    )
    parts = dict(split_by_run(batch))
    assert list(parts) == ["child", "parent"]  # the order the runs were created in
    assert [m[2] for m in parts["parent"].metrics] == [1.0, 3.0]
    assert len(parts["child"]) == 3 and len(parts["parent"]) == 3
