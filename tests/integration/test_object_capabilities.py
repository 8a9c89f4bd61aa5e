"""What each object store says it can do (``ObjectStore.capabilities``), and that it does it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from keel.errors import InvalidInput
from keel.objects import ObjectStore, open_object_store
from keel.objects.base import Capabilities
from keel.objects.http import HttpObjectStore
from keel.objects.packs import PackWriter, mapped, write_parts


def test_each_store_states_its_capabilities(object_store: ObjectStore) -> None:
    caps = object_store.capabilities
    kind = object_store.url.split("://", 1)[0] if "://" in object_store.url else "local"
    assert {
        "local": Capabilities(local_path=True, link_in=True, transfer_jobs=4),
        "s3": Capabilities(multipart_put=True, presign=True, transfer_jobs=16),
        "memory": Capabilities(),
    }[kind] == caps
    assert HttpObjectStore.capabilities == Capabilities(transfer_jobs=8)


def test_what_a_store_cannot_do_is_refused_with_a_clear_error(object_store: ObjectStore, tmp_path: Path) -> None:
    oid = object_store.put_bytes(b"content")
    caps = object_store.capabilities
    if caps.local_path:
        assert object_store.path(oid).read_bytes() == b"content"
    else:
        with pytest.raises(InvalidInput, match="cannot name a local file"):
            object_store.path(oid)
    if caps.presign:
        assert object_store.presigned_url(oid).startswith("http")
    else:
        with pytest.raises(InvalidInput, match="cannot presign"):
            object_store.presigned_url(oid)
    if not caps.link_in:
        with pytest.raises(InvalidInput, match="cannot take files in"):
            object_store.commit_file(tmp_path / "x", oid)
    if not caps.multipart_put:
        assert object_store.abort_stale_uploads(0) == []
    # Every store streams (the server's downloads): a one-chunk read where it cannot do better.
    size, chunks = object_store.open_stream(oid)
    assert size == 7 and b"".join(chunks) == b"content"


def test_link_in_renames_a_file_into_the_store_read_only(tmp_path: Path) -> None:
    store = open_object_store(str(tmp_path / "objects"))
    assert store.capabilities.link_in
    oid = store.put_bytes(b"abc")  # (the oid of these bytes)
    other = open_object_store(str(tmp_path / "other"))
    tmp = other.tmp_folder() / "incoming"
    tmp.write_bytes(b"abc")
    final = other.commit_file(tmp, oid)
    assert final == other.path(oid) and final.read_bytes() == b"abc" and not tmp.exists()
    assert not os.access(final, os.W_OK) or os.geteuid() == 0
    assert oct(final.stat().st_mode & 0o777) == "0o444"


def test_packs_store_new_content_once_and_reuse_what_is_stored(tmp_path: Path) -> None:
    store = open_object_store(str(tmp_path / "objects"))

    class Item:
        def __init__(self, oid: str) -> None:
            self.oid, self.pack, self.offset = oid, "", 0

    stored = {"a" * 64: ("f" * 64, 123)}  # content some earlier pack holds
    asked: list[set[str]] = []

    def locate(oids: set[str]) -> dict[str, tuple[str, int]]:
        asked.append(set(oids))
        return {o: stored[o] for o in oids if o in stored}

    writer = PackWriter(store, locate)
    items = [Item("1" * 64), Item("a" * 64), Item("1" * 64), Item("2" * 64)]
    for item, data in zip(items, [b"one", b"old", b"one", b"two!"], strict=True):
        writer.add(item, data)
    writer.flush()
    writer.close()
    assert asked == [{"1" * 64, "a" * 64, "2" * 64}]  # one question per pack, not per file
    [pack] = writer.new_packs
    assert [(i.pack, i.offset) for i in items] == [(pack, 0), ("f" * 64, 123), (pack, 0), (pack, 3)]
    assert store.path(pack).read_bytes() == b"onetwo!"  # the duplicate once, the stored one not at all
    assert sorted(writer.new_locations) == [("1" * 64, pack, 0, 3), ("2" * 64, pack, 3, 4)]
    write_parts(store, pack, [b"not", b"rewritten"])  # an object is never written twice
    assert store.path(pack).read_bytes() == b"onetwo!"


def test_mapped_reads_slices_without_copies_and_maps_empty_files(tmp_path: Path) -> None:
    (tmp_path / "pack").write_bytes(b"0123456789")
    with mapped(tmp_path / "pack") as view:
        part = view[3:6]
        assert bytes(part) == b"345"
        part.release()
    (tmp_path / "empty").write_bytes(b"")
    with mapped(tmp_path / "empty") as view:
        assert len(view) == 0
