"""The canonical encodings behind record digests (``keel.core.digests``)."""

from __future__ import annotations

import math
import struct

from keel.core.digests import (
    RUN_DIGEST_LENGTH,
    RUN_SECTIONS,
    RunContent,
    changed_sections,
    model_version_digest,
    prompt_version_digest,
    reflog_digest,
)


def _arrays(values: list[float]) -> tuple[bytes, bytes, bytes]:
    n = len(values)
    return struct.pack(f"<{n}q", *range(n)), struct.pack(f"<{n}q", *range(n)), struct.pack(f"<{n}d", *values)


def _run(order: int = 1, values: list[float] | None = None) -> RunContent:
    content = RunContent()
    content.set_run("a" * 32, "finished", 1, 2, None, None, "{}", '{"params":{"a":1}}')
    params = [("a", "int", "1"), ("b", "str", "x")]
    for key, vtype, value in params[::order]:
        content.add_param(key, vtype, value)
    for key, value in [("t1", "x"), ("t2", "y")][::order]:
        content.add_tag(key, value)
    steps, stamps, vals = _arrays(values or [0.5, 0.25])
    content.add_chunk("loss", RunContent.encode_chunk(len(values or [0, 0]), 0, 1, steps, stamps, vals))
    content.add_latest("loss", 0.25, False, 1, 1, 0.25, 0.5, 2)
    for path in ["a.txt", "b.txt"][::order]:
        content.add_artifact(path, "0" * 64, 1, "file", 5)
    for entity in ["d1", "d2"][::order]:
        content.add_edge("input", "dataset", entity, "", "", 7)
    return content


def test_a_run_digest_does_not_depend_on_the_order_rows_are_read_in() -> None:
    digest = _run().digest()
    assert len(digest) == RUN_DIGEST_LENGTH and digest[64] == "/"
    assert _run(order=-1).digest() == digest


def test_every_section_is_told_apart() -> None:
    base = _run().digest()
    changed = _run(values=[0.5, 0.2500001]).digest()

    assert changed != base
    assert changed_sections(base, changed) == ["metrics"]
    assert set(RUN_SECTIONS) >= {"params", "tags", "metrics", "latest", "artifacts", "lineage"}


def test_a_damaged_stored_digest_names_no_section() -> None:
    digest = _run().digest()
    assert changed_sections("x" + digest[1:], digest) == []
    assert changed_sections("garbage", digest) == []


def test_chunks_of_one_key_are_encoded_in_written_order() -> None:
    first, second = RunContent(), RunContent()
    one = RunContent.encode_chunk(1, 0, 0, *_arrays([1.0]))
    two = RunContent.encode_chunk(1, 1, 1, *_arrays([2.0]))
    first.add_chunk("m", one)
    first.add_chunk("m", two)
    second.add_chunk("m", two)
    second.add_chunk("m", one)
    assert first.digest() != second.digest()


def test_large_arrays_are_hashed_and_still_cover_every_byte() -> None:
    values = [float(i) for i in range(1000)]
    steps, stamps, vals = _arrays(values)
    row = RunContent.encode_chunk(1000, 0, 999, steps, stamps, vals)
    assert len(row) < 100  # the arrays are in it by their BLAKE3
    flipped = bytearray(vals)
    flipped[4000] ^= 1
    assert RunContent.encode_chunk(1000, 0, 999, steps, stamps, bytes(flipped)) != row


def test_metric_summaries_are_normalised_as_the_database_stores_them() -> None:
    stored, fresh = RunContent(), RunContent()
    stored.add_latest("m", 0.0, False, 1, 2, None, None, 1)  # SQLite returns -0.0 as 0.0
    fresh.add_latest("m", -0.0, 0, 1, 2, None, None, 1)
    assert stored.latest == fresh.latest
    nan_stored, nan_fresh = RunContent(), RunContent()
    nan_stored.add_latest("m", None, True, 1, 2, None, None, 1)  # NaN is stored as NULL + is_nan
    nan_fresh.add_series("m", b"", b"", b"", 1, 1, 1, math.nan, 1, 2, None, None)
    assert nan_stored.latest == nan_fresh.latest


def test_registry_digests_cover_every_field() -> None:
    prompt = ("chat", "1.0.0", (1, 0, 0), '{"t":"x"}', "h" * 64, "[]", "first", "ann", 5)
    assert prompt_version_digest(*prompt) != prompt_version_digest(*prompt[:-1], 6)
    model = ("clf", 1, "s3://x", None, "{}", None, "ann", 5)
    assert model_version_digest(*model) != model_version_digest("clf", 1, "s3://y", *model[3:])


def test_reflog_entries_chain() -> None:
    entry = ("prompt", "chat", "production", "1.0.0", "1.1.0", 5, "ann", "why")
    first = reflog_digest(None, *entry)
    assert reflog_digest("", *entry) == first  # no previous entry, or one from before digests
    assert reflog_digest(first, *entry) != first
