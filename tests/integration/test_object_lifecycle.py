"""Listing, freshening and deleting objects (what gc, erasure and purge build on), on every
backend: a local folder, the S3 server, memory."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from keel.core.hashing import hash_bytes
from keel.errors import KeelError
from keel.objects import LocalObjectStore, MemoryObjectStore, ObjectInfo, ObjectStore
from keel.objects.http import HttpObjectStore
from keel.objects.packs import write_parts


def _put(store: ObjectStore, *blobs: bytes) -> list[str]:
    return [store.put_bytes(blob) for blob in blobs]


def test_iter_objects_lists_every_object_with_its_size_and_time(object_store: ObjectStore) -> None:
    before = time.time() - 5  # the S3 server's clock has one-second steps
    oids = _put(object_store, b"a", b"bb" * 100, b"")
    listed = {info.oid: info for info in object_store.iter_objects()}
    assert set(listed) == set(oids)
    assert [listed[oid].size for oid in oids] == [1, 200, 0]
    assert all(before <= info.mtime <= time.time() + 5 for info in listed.values())


def test_delete_many_removes_those_given_returns_bytes_freed_and_is_idempotent(object_store: ObjectStore) -> None:
    keep, gone1, gone2 = _put(object_store, b"keep", b"x" * 10, b"y" * 7)
    absent = hash_bytes(b"never stored")
    assert object_store.delete_many([gone1, gone2, absent]) == 17
    assert {info.oid for info in object_store.iter_objects()} == {keep}
    assert not object_store.exists(gone1) and object_store.exists(keep)
    assert object_store.delete_many([gone1, gone2]) == 0
    assert object_store.delete_many([]) == 0
    object_store.put_bytes(b"x" * 10)  # stored again after a delete: a new object, readable
    assert object_store.get_bytes(gone1) == b"x" * 10


def test_delete_many_and_prune_go_in_batches(object_store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.objects import s3

    monkeypatch.setattr(s3, "DELETE_BATCH", 3)  # S3's is 1,000 keys per DeleteObjects
    oids = _put(object_store, *[f"object {i}".encode() for i in range(12)])
    freed = object_store.delete_many(oids[:7])
    assert freed == sum(len(f"object {i}") for i in range(7))
    assert {info.oid for info in object_store.iter_objects()} == set(oids[7:])
    removed = object_store.prune(list(object_store.iter_objects())[:4], time.time() + 5)
    assert len(removed) == 4 and len(list(object_store.iter_objects())) == 1


def test_a_put_that_finds_the_object_stored_freshens_it(
    object_store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keel.objects import s3

    monkeypatch.setattr(s3, "FRESH_ENOUGH_S", 0.0)  # else S3 copies only objects over ten minutes old
    oid = object_store.put_bytes(b"content")
    cutoff = _age(object_store, [oid])
    object_store.put_bytes(b"content")
    assert _mtime(object_store, oid) > cutoff
    cutoff = _age(object_store, [oid])
    (tmp_path / "f").write_bytes(b"content")
    assert object_store.put_file(tmp_path / "f") == (oid, 7)
    assert _mtime(object_store, oid) > cutoff
    assert object_store.get_bytes(oid) == b"content"


def test_prune_deletes_only_objects_not_freshened_since_the_cutoff(
    object_store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keel.objects import s3

    monkeypatch.setattr(s3, "FRESH_ENOUGH_S", 0.0)
    stale, fresh, gone = _put(object_store, b"stale", b"fresh", b"gone meanwhile")
    cutoff = _age(object_store, [stale, fresh, gone])
    listed = list(object_store.iter_objects())
    assert all(info.mtime <= cutoff for info in listed)
    object_store.freshen(fresh)
    object_store.delete_many([gone])
    removed = object_store.prune(listed, cutoff)
    assert [info.oid for info in removed] == [stale]
    assert removed[0].size == 5
    assert {info.oid for info in object_store.iter_objects()} == {fresh}
    object_store.freshen(stale)  # freshening an absent object is not an error
    assert not object_store.freshened(stale)


def test_local_delete_removes_read_only_files_and_empty_fan_folders_stay_usable(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    oid = store.put_bytes(b"read-only")
    assert not os.access(store.path(oid), os.W_OK) or os.geteuid() == 0
    assert store.delete_many([oid]) == 9
    assert not store.path(oid).exists()
    assert store.put_bytes(b"read-only") == oid and store.get_bytes(oid) == b"read-only"


def test_local_listing_skips_temporary_and_stray_files(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    oid = store.put_bytes(b"real")
    (store.tmp_folder() / "half-written").write_bytes(b"partial")
    (store.root / oid[:2] / "not-an-oid").write_bytes(b"stray")
    assert [info.oid for info in store.iter_objects()] == [oid]


def test_local_prune_interrupted_leaves_the_object_to_be_restored(tmp_path: Path) -> None:
    """A gc killed between renaming an object aside and unlinking it leaves it in tmp/:
    the next sweep (or gc) puts it back, so an object a writer freshened is never lost."""
    store = LocalObjectStore(tmp_path / "objects")
    oid = store.put_bytes(b"freshened by a writer")
    dead = _dead_pid()
    os.rename(store.path(oid), store.tmp_folder() / f"gc-{dead}-{oid}")
    assert not store.exists(oid)
    assert store.sweep_tmp(older_than=0) == (0, 0)
    assert store.get_bytes(oid) == b"freshened by a writer"
    assert os.listdir(store.tmp_folder()) == []


def test_write_parts_freshens_a_pack_found_stored(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    parts = [b"one", b"two"]
    oid = hash_bytes(b"onetwo")
    write_parts(store, oid, parts)
    cutoff = _age(store, [oid])
    write_parts(store, oid, parts)
    assert _mtime(store, oid) > cutoff


def test_a_keel_servers_objects_refuse_gc_from_a_client_with_a_hint() -> None:
    store = HttpObjectStore("http://127.0.0.1:9", token="t")
    with pytest.raises(KeelError) as err:
        list(store.iter_objects())
    assert "keel gc" in err.value.hint
    with pytest.raises(KeelError):
        store.delete_many([hash_bytes(b"x")])


# -- helpers -----------------------------------------------------------------------------------
def _mtime(store: ObjectStore, oid: str) -> float:
    return next(info.mtime for info in store.iter_objects() if info.oid == oid)


def _age(store: ObjectStore, oids: list[str]) -> float:
    """Make ``oids`` older than a cutoff that is returned; anything written or freshened
    after this call is younger than it. Local files and memory objects are back-dated an
    hour; S3 objects cannot be, so the test waits past one tick of its one-second clock."""
    now = time.time()
    if isinstance(store, LocalObjectStore):
        for oid in oids:
            os.utime(store.path(oid), (now - 3600, now - 3600))
        return now - 600
    if isinstance(store, MemoryObjectStore):
        for oid in oids:
            store._mtimes[oid] = now - 3600
        return now - 600
    time.sleep(1.1)
    cutoff = time.time()
    time.sleep(1.1)
    return cutoff


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(child.stdout)


def test_object_info_is_a_value() -> None:
    assert ObjectInfo("a" * 64, 1, 2.0) == ObjectInfo("a" * 64, 1, 2.0)


def test_freshen_many_answers_the_stored_subset_and_makes_old_ones_young(
    object_store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keel.objects import s3

    monkeypatch.setattr(s3, "FRESH_ENOUGH_S", 0.0)  # else S3 copies only objects over ten minutes old
    oids = _put(object_store, *[b"many %d" % i for i in range(9)])
    cutoff = _age(object_store, oids)
    absent = hash_bytes(b"not stored")
    assert object_store.freshen_many([*oids, absent]) == set(oids)
    assert all(_mtime(object_store, oid) > cutoff for oid in oids)
