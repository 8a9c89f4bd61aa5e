"""The object-store contract, checked on every backend (local folder, S3 server, memory).

Backend-specific behaviour (read-only fan-out files, corruption on disk or in
a bucket) has its own tests below the shared ones.
"""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import pytest

from keel.core.hashing import hash_bytes
from keel.errors import IntegrityError, InvalidInput, NotFound, StoreError
from keel.objects import LocalObjectStore, MemoryObjectStore, ObjectStore, open_object_store
from servers import S3Server

BIG = (1 << 20) * 2 + 12_345  # more than one streaming chunk (1 MiB), not a multiple of it


def _random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def _oid_of_nothing_stored() -> str:
    return hash_bytes(b"never stored anywhere")


# -- the shared contract ----------------------------------------------------
def test_put_bytes_returns_the_blake3_oid_and_stores_identical_content_once(
    object_store: ObjectStore,
) -> None:
    first = object_store.put_bytes(b"hello keel")
    second = object_store.put_bytes(b"hello keel")

    assert first == second == hash_bytes(b"hello keel")
    assert list(object_store.iter_oids()) == [first]


def test_put_file_gives_the_same_oid_as_put_bytes_and_dedups(object_store: ObjectStore, tmp_path: Path) -> None:
    data = _random_bytes(BIG)
    path = tmp_path / "big.bin"
    path.write_bytes(data)

    oid, size = object_store.put_file(path)
    again = object_store.put_file(path)
    from_bytes = object_store.put_bytes(data)

    assert (oid, size) == (hash_bytes(data), len(data))
    assert again == (oid, size)
    assert from_bytes == oid
    assert list(object_store.iter_oids()) == [oid]


def test_get_bytes_and_get_file_round_trip(object_store: ObjectStore, tmp_path: Path) -> None:
    for size in (0, 1, 1 << 20, BIG):
        data = _random_bytes(size, seed=size)
        source = tmp_path / f"source-{size}.bin"
        source.write_bytes(data)
        oid, stored_size = object_store.put_file(source)
        dest = tmp_path / "nested" / str(size) / "copy.bin"

        object_store.get_file(oid, dest)

        assert stored_size == size
        assert object_store.get_bytes(oid) == data
        assert dest.read_bytes() == data
        assert os.listdir(dest.parent) == ["copy.bin"]  # no temp file left behind


def test_get_file_replaces_an_existing_destination(object_store: ObjectStore, tmp_path: Path) -> None:
    oid = object_store.put_bytes(b"new content")
    dest = tmp_path / "out.txt"
    dest.write_bytes(b"old content that is longer")

    object_store.get_file(oid, dest)

    assert dest.read_bytes() == b"new content"


def test_exists_and_exists_many(object_store: ObjectStore) -> None:
    stored = [object_store.put_bytes(f"object {i}".encode()) for i in range(6)]
    absent = [hash_bytes(f"absent {i}".encode()) for i in range(6)]

    assert all(object_store.exists(oid) for oid in stored)
    assert not any(object_store.exists(oid) for oid in absent)
    # Few ids and many ids (S3 switches from HEAD requests to listing at 8).
    assert object_store.exists_many(stored[:2] + absent[:2]) == set(stored[:2])
    assert object_store.exists_many(stored + absent) == set(stored)
    assert object_store.exists_many([]) == set()


def test_iter_oids_lists_every_object_once(object_store: ObjectStore) -> None:
    oids = {object_store.put_bytes(_random_bytes(100, seed=i)) for i in range(25)}

    listed = list(object_store.iter_oids())

    assert sorted(listed) == sorted(oids)


def test_an_empty_store_lists_nothing_and_verifies_clean(object_store: ObjectStore) -> None:
    assert list(object_store.iter_oids()) == []
    assert list(object_store.verify_all()) == []


def test_verify_passes_on_intact_objects(object_store: ObjectStore) -> None:
    oids = [object_store.put_bytes(_random_bytes(1000, seed=i)) for i in range(3)]

    for oid in oids:
        object_store.verify(oid)
    assert list(object_store.verify_all()) == []


def test_unknown_oid_raises_not_found(object_store: ObjectStore, tmp_path: Path) -> None:
    oid = _oid_of_nothing_stored()
    dest = tmp_path / "restored" / "out.bin"

    with pytest.raises(NotFound):
        object_store.get_bytes(oid)
    with pytest.raises(NotFound):
        object_store.get_file(oid, dest)
    with pytest.raises(NotFound):
        object_store.verify(oid)
    assert os.listdir(dest.parent) == []  # neither the file nor a temp file


def test_not_found_names_the_missing_object(object_store: ObjectStore, request: pytest.FixtureRequest) -> None:
    oid = _oid_of_nothing_stored()

    with pytest.raises(NotFound, match=oid):
        object_store.get_bytes(oid)


MALFORMED_OIDS = ["", "abc", "0" * 63, "0" * 65, "A" * 64, "g" * 64, "../" + "0" * 61, None]


def test_malformed_oid_raises_invalid_input(object_store: ObjectStore, tmp_path: Path) -> None:
    dest = tmp_path / "restored" / "out.bin"
    for bad in MALFORMED_OIDS:
        with pytest.raises(InvalidInput, match="invalid object id"):
            object_store.get_bytes(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="invalid object id"):
            object_store.get_file(bad, dest)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="invalid object id"):
            object_store.verify(bad)  # type: ignore[arg-type]
    assert os.listdir(dest.parent) == []


# -- local folder ---------------------------------------------------------------
@pytest.fixture
def local_store(tmp_path: Path) -> LocalObjectStore:
    store = open_object_store(str(tmp_path / "objects"))
    assert isinstance(store, LocalObjectStore)
    return store


def _corrupt(path: Path) -> None:
    """Flip the first byte of a (read-only) stored file."""
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    os.chmod(path, stat.S_IRUSR)


def test_local_objects_are_read_only_files_in_fan_out_folders(local_store: LocalObjectStore, tmp_path: Path) -> None:
    oid = local_store.put_bytes(b"fan out")
    source = tmp_path / "file.bin"
    source.write_bytes(_random_bytes(BIG))
    file_oid, _ = local_store.put_file(source)

    for each in (oid, file_oid):
        path = tmp_path / "objects" / each[:2] / each[2:]
        assert local_store.path(each) == path
        assert path.is_file()
        assert stat.S_IMODE(path.stat().st_mode) & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) == 0
    assert os.listdir(tmp_path / "objects" / "tmp") == []  # temp files renamed or removed


def test_local_corrupt_object_is_detected_on_read_naming_its_path(
    local_store: LocalObjectStore, tmp_path: Path
) -> None:
    small = local_store.put_bytes(b"precious data")
    source = tmp_path / "big.bin"
    source.write_bytes(_random_bytes(BIG))
    big, _ = local_store.put_file(source)
    intact = local_store.put_bytes(b"untouched")
    for oid in (small, big):
        _corrupt(local_store.path(oid))

    for oid in (small, big):
        with pytest.raises(IntegrityError, match=str(local_store.path(oid))):
            local_store.get_bytes(oid)
        dest = tmp_path / "restored" / oid
        with pytest.raises(IntegrityError, match=oid):
            local_store.get_file(oid, dest)
        assert not dest.exists()
        with pytest.raises(IntegrityError):
            local_store.verify(oid)
    assert local_store.get_bytes(small, verify=False) != b"precious data"
    assert local_store.get_bytes(intact) == b"untouched"
    assert os.listdir(tmp_path / "restored") == []  # no partial or temp file


def test_local_verify_all_lists_exactly_the_corrupt_objects(local_store: LocalObjectStore) -> None:
    oids = [local_store.put_bytes(f"object {i}".encode()) for i in range(5)]
    _corrupt(local_store.path(oids[3]))

    problems = list(local_store.verify_all())

    assert [oid for oid, _ in problems] == [oids[3]]
    assert str(local_store.path(oids[3])) in problems[0][1]


@pytest.mark.parametrize("bad", ["fan-out", "", "fan-out/"])
def test_local_malformed_oid_is_never_reported_as_stored(local_store: LocalObjectStore, bad: str) -> None:
    oid = local_store.put_bytes(b"content")
    bad = bad.replace("fan-out", oid[:2])

    try:
        found = local_store.exists(bad)
    except InvalidInput:
        return  # refusing a malformed id is fine too
    assert found is False


def test_local_store_cannot_be_created_where_a_file_is(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")

    with pytest.raises(StoreError, match="cannot create the object store"):
        open_object_store(str(tmp_path / "a-file" / "objects"))


# -- S3 -------------------------------------------------------------------------
@pytest.mark.s3
def test_s3_corrupt_object_is_detected_on_read_naming_its_key(s3_url: str, s3_server: S3Server) -> None:
    store = open_object_store(s3_url)
    try:
        bad = store.put_bytes(b"precious data")
        good = store.put_bytes(b"untouched")
        s3_server.client.put_object(Bucket=store.bucket, Key=store.key(bad), Body=b"tampered data")  # type: ignore[attr-defined]

        with pytest.raises(IntegrityError, match=f"s3://{store.bucket}/objects/{bad[:2]}/{bad[2:]}"):  # type: ignore[attr-defined]
            store.get_bytes(bad)
        with pytest.raises(IntegrityError):
            store.verify(bad)
        assert [oid for oid, _ in store.verify_all()] == [bad]
        assert store.get_bytes(good) == b"untouched"
    finally:
        store.close()


@pytest.mark.s3
def test_s3_keys_live_under_the_prefix_in_fan_out_form(s3_url: str, s3_server: S3Server) -> None:
    store = open_object_store(s3_url)
    try:
        oid = store.put_bytes(b"where am I")
        listing = s3_server.client.list_objects_v2(Bucket=store.bucket)  # type: ignore[attr-defined]
        keys = [item["Key"] for item in listing["Contents"]]
    finally:
        store.close()

    assert keys == [f"objects/{oid[:2]}/{oid[2:]}"]


@pytest.mark.s3
def test_s3_missing_bucket_raises_store_error(s3_server: S3Server) -> None:
    store = open_object_store(f"s3://no-such-bucket/objects?endpoint_url={s3_server.endpoint_url}")
    try:
        with pytest.raises(StoreError, match="no-such-bucket"):
            store.put_bytes(b"anything")
        with pytest.raises(StoreError, match="no-such-bucket"):
            list(store.iter_oids())
    finally:
        store.close()


# -- URLs -----------------------------------------------------------------------
def test_open_object_store_understands_each_url_form(tmp_path: Path) -> None:
    local = open_object_store(str(tmp_path / "plain"))
    file_url = open_object_store(f"file://{tmp_path / 'file-url'}")
    memory = open_object_store("memory://")

    assert isinstance(local, LocalObjectStore) and local.root == tmp_path / "plain"
    assert isinstance(file_url, LocalObjectStore) and file_url.root == tmp_path / "file-url"
    assert isinstance(memory, MemoryObjectStore)


def test_open_object_store_parses_s3_urls_without_contacting_a_server() -> None:
    store = open_object_store("s3://my-bucket/some/prefix/?endpoint_url=http%3A%2F%2F127.0.0.1%3A9")
    try:
        assert (store.bucket, store.prefix, store.url) == (
            "my-bucket",
            "some/prefix",
            "s3://my-bucket/some/prefix",
        )  # type: ignore[attr-defined]
        assert store._client.meta.endpoint_url == "http://127.0.0.1:9"  # type: ignore[attr-defined]
    finally:
        store.close()
    bare = open_object_store("s3://my-bucket")
    try:
        assert (bare.prefix, bare.url, bare.key("ab" + "c" * 62)) == (
            "",
            "s3://my-bucket",
            "ab/" + "c" * 62,
        )  # type: ignore[attr-defined]
    finally:
        bare.close()


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "gs://bucket/prefix", "ftp://host/x"])
def test_open_object_store_rejects_bad_urls(url: str) -> None:
    with pytest.raises(InvalidInput, match="URL"):
        open_object_store(url)


@pytest.mark.parametrize("url", ["file://objects", ""])
def test_open_object_store_rejects_urls_that_would_land_in_the_current_directory(url: str) -> None:
    with pytest.raises(InvalidInput):
        open_object_store(url)
