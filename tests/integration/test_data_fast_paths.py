"""The data path's fast paths keep their promises: what the stat cache vouches for is
neither read nor looked up, checkout creates files in place and recovers from an
interrupted run, small files are hashed in order, and history
sources are used only where they apply."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from data_helpers import commit, git, init_repo, write

from keel.core.data_pointer import Pointer
from keel.errors import Conflict
from keel.objects.local import LocalObjectStore
from keel.sdk import data
from keel.services import data_files as files_
from keel.services.data import open_repo
from keel.services.data_cache import FINE_RACY_NS, racy_ns, trusted
from keel.services.data_files import FileStat
from keel.services.data_history import _SOURCES, register_history_source
from keel.services.data_state import RACY_NS
from keel.services.data_workspace import Tracked, Workspace


@pytest.fixture
def repo(tmp_path: Path):
    from keel.sdk import session

    root = init_repo(tmp_path / "repo")
    os.chdir(root)
    yield root
    session.reset()


def _folder(root: Path, n: int, mtime_ns: int | None = None) -> Path:
    folder = root / "data" / "set"
    for i in range(n):
        path = write(folder / f"d{i % 7}" / f"f{i:04d}.txt", f"file {i}\n" * (i % 50 + 1), old=mtime_ns is None)
        if mtime_ns is not None:
            os.utime(path, ns=(mtime_ns, mtime_ns))
    return folder


def test_the_racy_window_is_the_file_systems_timestamp_step() -> None:
    assert racy_ns(1_700_000_000_123_456_789) == FINE_RACY_NS == 50_000_000
    assert racy_ns(1_700_000_000_000_000_000) == RACY_NS == 1_000_000_000
    fine = FileStat("a", "/a", 1, 10, 1_700_000_000_123_456_789)
    row = (1, 10, fine.mtime, "oid", fine.mtime + FINE_RACY_NS + 1)
    assert trusted(row, fine)
    assert not trusted((1, 10, fine.mtime, "oid", fine.mtime + FINE_RACY_NS), fine)  # recorded in the window
    whole = fine._replace(mtime=1_700_000_000_000_000_000)
    assert not trusted((1, 10, whole.mtime, "oid", whole.mtime + FINE_RACY_NS + 1), whole)
    assert trusted((1, 10, whole.mtime, "oid", whole.mtime + RACY_NS + 1), whole)
    assert not trusted((2, 10, fine.mtime, "oid", fine.mtime + RACY_NS + 1), fine)  # another inode


def test_data_written_just_before_add_is_not_read_again_on_the_next_add(repo: Path) -> None:
    # Written 0.2 s ago with a sub-second mtime (ext4, XFS, tmpfs...): past its 50 ms window.
    _folder(repo, 40, time.time_ns() - 200_000_123)
    assert data.add(["data/set"])[0].hashed == 40
    assert data.add(["data/set"])[0].hashed == 0
    # A whole-second mtime (a coarse file system) half a second ago is still racy: read once more.
    path = repo / "data" / "set" / "d0" / "f0000.txt"
    whole = (time.time_ns() // 1_000_000_000) * 1_000_000_000
    os.utime(path, ns=(whole, whole))
    assert data.add(["data/set"])[0].hashed == 1


def test_re_adding_an_unchanged_folder_neither_reads_nor_looks_up_its_files(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _folder(repo, 300)
    write(repo / "data" / "set" / "big.bin", os.urandom(300_000))  # a loose object too
    first = data.add(["data/set"])[0]
    reads: list[str] = []
    lookups: list[str] = []
    real_read, real_exists = files_.read_small, LocalObjectStore.exists
    monkeypatch.setattr(files_, "read_small", lambda f: reads.append(f.rel) or real_read(f))
    monkeypatch.setattr(LocalObjectStore, "exists", lambda self, oid: lookups.append(oid) or real_exists(self, oid))
    again = data.add(["data/set"])[0]
    assert (again.oid, again.hashed, again.stored, again.changed) == (first.oid, 0, 0, False)
    assert reads == []
    tree = open_repo(repo).load_tree(first.oid, "data/set")
    # The tree, its packs and the loose file: a handful of lookups, none per small file.
    assert set(lookups) <= {first.oid, *tree.objects()} and len(lookups) <= 2 + len(tree.objects())


def test_checkout_after_rm_creates_the_files_and_leaves_no_journal(repo: Path) -> None:
    folder = _folder(repo, 300)
    before = {p: p.read_bytes() for p in folder.rglob("*.txt")}
    data.add(["data/set"])
    shutil.rmtree(folder)
    result = data.checkout()
    assert result.written == 300 and {p: p.read_bytes() for p in folder.rglob("*.txt")} == before
    assert not (repo / ".keel" / "data" / "checkout.journal").exists()
    assert os.listdir(repo / ".keel" / "data" / "tmp") == []
    assert [s.state for s in data.status()] == ["ok"]


def test_a_checkout_after_an_interrupted_one_overwrites_what_it_left_half_written(repo: Path) -> None:
    folder = _folder(repo, 30)
    data.add(["data/set"])
    shutil.rmtree(folder)
    half = folder / "d1" / "f0001.txt"
    good = b"file 1\n" * 2
    half.parent.mkdir(parents=True)
    half.write_bytes(good[:5])  # what a killed checkout may leave where it was creating a file
    # Without the journal the half file is a change the cache does not have: refused.
    with pytest.raises(Conflict, match="f0001.txt"):
        data.checkout()
    journal = repo / ".keel" / "data" / "checkout.journal"
    journal.write_text("data/set/d1/f0001.txt\ndata/other/x.bin\n")
    assert data.checkout().written == 30
    assert half.read_bytes() == good
    # What this checkout did not look at (another tracked path) stays listed for the next one.
    assert journal.read_text() == "data/other/x.bin\n"
    write(repo / "data" / "other" / "x.bin", "x")
    data.add(["data/other"])
    data.checkout()
    assert not journal.exists()


def test_checkout_replaces_a_changed_file_and_leaves_the_others_alone(repo: Path) -> None:
    folder = _folder(repo, 20)
    data.add(["data/set"])
    commit(repo, "v1")
    target = folder / "d2" / "f0002.txt"
    kept = folder / "d3" / "f0003.txt"
    v1 = target.read_bytes()
    write(target, "version two\n")
    data.add(["data/set"])
    kept_inode = kept.stat().st_ino
    git(repo, "checkout", "-q", "HEAD", "--", "data/set.keel")  # the pointer of v1 again
    result = data.checkout()
    assert (result.written, result.unchanged) == (1, 19)
    assert target.read_bytes() == v1 and kept.stat().st_ino == kept_inode
    assert os.listdir(repo / ".keel" / "data" / "tmp") == []


def test_small_files_are_read_and_hashed_in_order(tmp_path: Path) -> None:
    files = []
    for i in range(1000):
        path = tmp_path / f"f{i:04d}"
        path.write_bytes(os.urandom(i % 97 + 1))
        st = path.stat()
        files.append(FileStat(f"f{i:04d}", str(path), st.st_ino, st.st_size, st.st_mtime_ns))
    import blake3

    expected = [(Path(f.path).read_bytes(), blake3.blake3(Path(f.path).read_bytes()).hexdigest()) for f in files]
    assert list(files_.read_and_hash(files)) == expected
    Path(files[700].path).write_bytes(b"grown since the walk" * 10)
    with pytest.raises(Conflict, match="f0700 changed while it was being hashed"):
        list(files_.read_and_hash(files))


def test_history_sources_are_loaded_only_where_their_marker_is(repo: Path) -> None:
    loaded: list[str] = []

    class Source:
        def tracked(self, workspace: Workspace, exclude: set[str]) -> list[Tracked]:
            pointer = Pointer("file", "legacy.bin", "0" * 64, 3)
            return [Tracked("legacy.tool#data/legacy.bin", "data/legacy.bin", pointer)]

        def history_pointers(self, workspace: Workspace) -> list[Pointer]:
            return []

    def load() -> Source:
        loaded.append("x")
        return Source()

    register_history_source("test-tool", ".test-tool", load)
    try:
        with open_repo(repo) as opened:
            assert opened.select(None) == [] and loaded == []  # no marker: never loaded
            (repo / ".test-tool").mkdir()
            assert [t.data_path for t in opened.select(None)] == ["data/legacy.bin"]
            assert [t.data_path for t in opened.select(["data/legacy.bin"])] == ["data/legacy.bin"]
            assert loaded
    finally:
        _SOURCES.pop("test-tool", None)
