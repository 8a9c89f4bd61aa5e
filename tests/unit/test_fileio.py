"""keel.fileio.atomic_write: all or nothing, a temporary file of its own, never through a planted link."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from keel import fileio
from keel.fileio import TEMP_SUFFIX, atomic_write, atomic_write_bytes, atomic_write_text, temp_path
from keel.objects.memory import MemoryObjectStore


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX))


def test_writes_the_content_and_returns_what_the_writer_returns(tmp_path: Path):
    target = tmp_path / "out.bin"
    assert atomic_write(target, lambda fh: fh.write(b"abc")) == 3
    assert target.read_bytes() == b"abc"
    atomic_write_text(target, "line\r\nnext\n")  # no newline translation
    assert target.read_bytes() == b"line\r\nnext\n"
    atomic_write_bytes(target, b"")
    assert target.read_bytes() == b"" and leftovers(tmp_path) == []


def test_a_writer_that_fails_half_way_leaves_the_old_file(tmp_path: Path):
    target = tmp_path / "config.toml"
    target.write_text("old content\n")

    def crash(fh):
        fh.write(b"new content, half of it")
        fh.flush()
        raise RuntimeError("the disk went away")

    with pytest.raises(RuntimeError, match="disk went away"):
        atomic_write(target, crash)
    assert target.read_text() == "old content\n"
    assert leftovers(tmp_path) == [] and sorted(os.listdir(tmp_path)) == ["config.toml"]

    with pytest.raises(KeyboardInterrupt):  # not only Exception: ^C mid-write too
        atomic_write(target, lambda fh: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert target.read_text() == "old content\n" and leftovers(tmp_path) == []


def test_a_failed_rename_leaves_nothing_behind(tmp_path: Path):
    target = tmp_path / "a-folder"
    target.mkdir()
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"x")  # a folder cannot be replaced by a file
    assert target.is_dir() and leftovers(tmp_path) == []


def test_modes(tmp_path: Path):
    secret = tmp_path / "credentials.toml"
    atomic_write_text(secret, "token = 'x'\n", mode=0o600)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    read_only = tmp_path / "object"
    atomic_write_bytes(read_only, b"x", mode=0o444, fsync=False)
    assert stat.S_IMODE(read_only.stat().st_mode) == 0o444
    atomic_write_bytes(read_only, b"y", mode=0o444)  # a read-only file is replaced, not opened
    assert read_only.read_bytes() == b"y"
    plain = tmp_path / "plain"
    old = os.umask(0o022)
    try:
        atomic_write_bytes(plain, b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(plain.stat().st_mode) == 0o644


def test_temporary_names_are_unique_and_bounded(tmp_path: Path):
    target = tmp_path / ("n" * 250)
    names = {temp_path(target).name for _ in range(200)}
    assert len(names) == 200
    assert all(f".{os.getpid()}." in n and n.endswith(TEMP_SUFFIX) and len(n.encode()) <= 255 for n in names)
    atomic_write_bytes(target, b"long name")
    assert target.read_bytes() == b"long name"


def test_a_symlink_planted_at_the_temporary_name_is_never_followed(tmp_path: Path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "out.txt"
    tokens = iter(["aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    monkeypatch.setattr(fileio, "_token_hex", lambda n: next(tokens))
    planted = target.with_name(f".out.txt.{os.getpid()}.aaaaaaaaaaaa{TEMP_SUFFIX}")
    planted.symlink_to(victim)
    atomic_write_text(target, "mine")
    assert target.read_text() == "mine" and victim.read_text() == "precious" and planted.is_symlink()


def test_get_file_does_not_follow_a_link_at_the_old_predictable_name(tmp_path: Path):
    """objects/base.py used to write ``.NAME.keel-tmp-<pid>`` with a plain open()."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    store = MemoryObjectStore()
    oid = store.put_bytes(b"downloaded")
    dest = tmp_path / "dl" / "file.bin"
    dest.parent.mkdir()
    (dest.parent / f".file.bin.keel-tmp-{os.getpid()}").symlink_to(victim)
    store.get_file(oid, dest)
    assert dest.read_bytes() == b"downloaded" and victim.read_text() == "precious"


def test_two_writers_of_one_target_never_mix(tmp_path: Path):
    target = tmp_path / "shared.jsonl"
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(tag: bytes) -> None:
        def write(fh):
            start.wait()
            for _ in range(200):
                fh.write(tag * 100 + b"\n")

        try:
            atomic_write(target, write, fsync=False)
        except BaseException as exc:  # pragma: no cover - the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(tag,)) for tag in (b"a", b"b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    lines = set(target.read_bytes().splitlines())
    assert lines in ({b"a" * 100}, {b"b" * 100}) and leftovers(tmp_path) == []
