"""The background writer: ordering, flush semantics, batching and failure handling."""

import threading

from keel.core.batch import WriteBatch
from keel.errors import InvalidInput, StoreError
from keel.sdk.writer import BatchWriter


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


def test_an_interrupted_write_keeps_its_rows_for_the_next_flush():
    class Interrupting(Sink):
        def __call__(self, batch):
            if not self.batches and not getattr(self, "interrupted", False):
                self.interrupted = True
                raise KeyboardInterrupt
            super().__call__(batch)

    sink = Interrupting()
    writer = BatchWriter(sink, interval=10)
    writer.add_metric(("r", "m", 1.0, 0, 0))
    writer.add("p", ("r", "model", "str", "gpt-4", False))
    try:
        writer.flush()
    except KeyboardInterrupt:
        pass
    assert writer.pending == 2
    writer.add_metric(("r", "m", 2.0, 1, 0))
    writer.flush()
    assert [m[2] for m in sink.batches[0].metrics] == [1.0, 2.0]
    assert len(sink.batches[0].params) == 1 and writer.pending == 0
    writer.close()
