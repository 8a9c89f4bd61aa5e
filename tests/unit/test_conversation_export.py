"""Two conversation exports to the same file at once: each writes its own temporary file, the
last rename wins, the file is one whole export (the temporary name used to be shared)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from keel.errors import StoreError
from keel.fileio import TEMP_SUFFIX
from keel.services.conversations import write_examples


def slow_examples(tag: str, start: threading.Barrier, n: int = 50):
    start.wait()
    for i in range(n):
        time.sleep(0.001)  # both exports are half-written at the same time
        yield {"conversation_id": f"{tag}-{i}", "input": [], "output": tag, "feedback": {}, "metadata": {}}


def test_two_exports_to_one_target_do_not_collide(tmp_path: Path):
    target = tmp_path / "dataset.jsonl"
    start = threading.Barrier(2)
    results: dict[str, int] = {}
    errors: list[BaseException] = []

    def export(tag: str) -> None:
        try:
            results[tag] = write_examples(target, slow_examples(tag, start))
        except BaseException as exc:  # pragma: no cover - shown by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=export, args=(tag,)) for tag in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == {"first": 50, "second": 50}
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(rows) == 50 and len({row["output"] for row in rows}) == 1  # one whole export, not a mix
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(TEMP_SUFFIX)]


def test_an_export_that_fails_keeps_the_previous_file(tmp_path: Path):
    target = tmp_path / "dataset.jsonl"
    target.write_text('{"old": true}\n')

    def broken():
        yield {"conversation_id": "a"}
        raise RuntimeError("the store went away")

    with pytest.raises(RuntimeError):
        write_examples(target, broken())
    assert target.read_text() == '{"old": true}\n'
    with pytest.raises(StoreError):
        write_examples(tmp_path / "no-such-folder" / "x.jsonl", iter([]))
