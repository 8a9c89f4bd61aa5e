"""Data versioning in a real git repository: add, status, diff, checkout, gc, verify, lineage."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from data_helpers import OLD, commit, git, init_repo, make_kb, snapshot, write

from keel.errors import Conflict, IntegrityError, InvalidInput, NotFound
from keel.sdk import data


@pytest.fixture
def repo(tmp_path: Path):
    from keel.sdk import session

    root = init_repo(tmp_path / "repo")
    os.chdir(root)
    yield root
    session.reset()


def test_add_writes_pointers_gitignore_and_registers_versions(repo: Path):
    write(repo / "data" / "train.jsonl", '{"q": 1}\n')
    make_kb(repo)
    results = data.add(["data/train.jsonl", "data/kb/"])

    assert [(r.path, r.kind, r.files, r.changed) for r in results] == [
        ("data/train.jsonl", "file", 1, True),
        ("data/kb", "dir", 30, True),
    ]
    pointer = (repo / "data" / "kb.keel").read_text()
    assert f"oid: {results[1].oid}" in pointer and "files: 30" in pointer and "kind: dir" in pointer
    assert (repo / "data" / ".gitignore").read_text().splitlines() == ["/train.jsonl", "/kb"]
    assert git(repo, "status", "--porcelain", "--untracked-files=all", "data").splitlines() == [
        "?? data/.gitignore",
        "?? data/kb.keel",
        "?? data/train.jsonl.keel",
    ]
    versions = data.log("data/kb")
    assert [(v.path, v.oid, v.files) for v in versions] == [("data/kb", results[1].oid, 30)]
    # Adding the same data again changes nothing and registers nothing new.
    again = data.add(["data/train.jsonl", "data/kb"])
    assert [r.changed for r in again] == [False, False] and [r.oid for r in again] == [r.oid for r in results]
    assert len(data.log()) == 2


def test_the_stat_cache_means_unchanged_files_are_not_read_again(repo: Path):
    make_kb(repo, n=40)
    first = data.add(["data/kb"])[0]
    assert first.hashed == 40
    assert data.add(["data/kb"])[0].hashed == 0
    write(repo / "data" / "kb" / "part0" / "doc000.txt", "changed\n")
    third = data.add(["data/kb"])[0]
    assert third.hashed == 1 and third.oid != first.oid
    # A file touched within the racy window is re-checked (its content decides), not trusted.
    os.utime(repo / "data" / "kb" / "part1" / "doc001.txt")
    assert data.add(["data/kb"])[0].hashed == 1


def test_status_lists_new_modified_deleted_and_missing(repo: Path):
    kb = make_kb(repo, n=6)
    write(repo / "data" / "a.txt", "a")
    data.add(["data/kb", "data/a.txt"])
    assert [(s.path, s.state) for s in data.status()] == [("data/a.txt", "ok"), ("data/kb", "ok")]

    write(kb / "part0" / "doc000.txt", "edited")
    write(kb / "new.txt", "new")
    (kb / "part1" / "doc001.txt").unlink()
    (repo / "data" / "a.txt").unlink()
    by_path = {s.path: s for s in data.status()}
    assert by_path["data/a.txt"].state == "missing"
    kb_status = by_path["data/kb"]
    assert kb_status.state == "modified"
    assert kb_status.changes.added == ["data/kb/new.txt"]
    assert kb_status.changes.modified == ["data/kb/part0/doc000.txt"]
    assert kb_status.changes.removed == ["data/kb/part1/doc001.txt"]
    assert [s.path for s in data.status(["data/kb/part0"])] == ["data/kb"]


def test_checkout_restores_each_committed_version(repo: Path):
    kb = make_kb(repo, n=12)
    big = write(repo / "data" / "big.bin", os.urandom(600_000))
    data.add(["data/kb", "data/big.bin"])
    commit(repo, "data v1", tag="v1.0")
    v1 = snapshot(repo / "data")

    write(kb / "part0" / "doc000.txt", "v2 text")
    write(kb / "extra" / "new.txt", "new in v2")
    (kb / "part2" / "doc002.txt").unlink()
    write(big, os.urandom(700_000))
    data.add(["data/kb", "data/big.bin"])
    commit(repo, "data v2", tag="v2.0")
    v2 = snapshot(repo / "data")

    git(repo, "checkout", "-q", "v1.0")
    result = data.checkout()
    assert snapshot(repo / "data") == v1
    assert result.removed == 1 and result.written == 3
    assert not (kb / "extra").exists()  # folders emptied by the checkout go too
    assert data.checkout().written == 0

    git(repo, "checkout", "-q", "v2.0")
    data.checkout()
    assert snapshot(repo / "data") == v2
    assert [s.state for s in data.status()] == ["ok", "ok"]


def test_checkout_never_discards_changes_that_are_not_in_the_cache(repo: Path):
    kb = make_kb(repo, n=5)
    data.add(["data/kb"])
    write(kb / "part0" / "doc000.txt", "my unsaved work")
    write(kb / "scratch.txt", "notes")

    with pytest.raises(Conflict) as caught:
        data.checkout()
    assert "data/kb/part0/doc000.txt" in str(caught.value) and "data/kb/scratch.txt" in str(caught.value)
    assert "--force" in (caught.value.hint or "")
    assert (kb / "part0" / "doc000.txt").read_text() == "my unsaved work"  # nothing was touched
    assert (kb / "scratch.txt").exists()

    data.checkout(force=True)
    assert not (kb / "scratch.txt").exists()
    assert (kb / "part0" / "doc000.txt").read_text() == "document 0\n"


def test_large_files_are_hard_linked_read_only_and_unprotect_makes_them_writable(repo: Path):
    big = write(repo / "data" / "model.bin", os.urandom(1 << 20))
    (result,) = data.add(["data/model.bin"], link="hardlink")
    cache_object = repo / ".keel" / "objects" / result.oid[:2] / result.oid[2:]
    assert os.stat(big).st_ino == os.stat(cache_object).st_ino  # stored without a copy
    assert not os.stat(big).st_mode & 0o222

    big.unlink()
    assert data.checkout(link="hardlink").modes == {"hardlink": 1}
    assert data.unprotect(["data/model.bin"]) == ["data/model.bin"]
    assert os.stat(big).st_ino != os.stat(cache_object).st_ino and os.access(big, os.W_OK)
    assert [s.state for s in data.status()] == ["ok"]

    big.unlink()
    assert data.checkout(link="copy").modes == {"copy": 1}
    assert os.stat(big).st_nlink == 1 and big.read_bytes() == cache_object.read_bytes()


@pytest.mark.parametrize("link", ["copy", "auto"])
def test_copy_mode_add_leaves_the_workspace_file_alone(repo: Path, link: str):
    if link == "auto" and os.geteuid() != 0:
        pytest.skip("auto means a copy only as root (or where reflinks exist)")
    big = write(repo / "data" / "model.bin", os.urandom(300_000))
    inode = os.stat(big).st_ino
    data.add(["data/model.bin"], link=link)
    assert os.stat(big).st_ino == inode and os.access(big, os.W_OK)
    assert os.stat(big).st_nlink == 1


def test_bad_paths_are_refused_with_a_clear_message(repo: Path, tmp_path: Path):
    make_kb(repo, n=3)
    outside = write(tmp_path / "outside.txt", "x")
    write(repo / "data" / "target.txt", "t")
    os.symlink(repo / "data" / "target.txt", repo / "data" / "link.txt")
    data.add(["data/kb"])

    cases = [
        (str(outside), InvalidInput, "outside the repository"),
        ("data/kb/part0/doc000.txt", InvalidInput, "tracked already"),
        ("data/link.txt", InvalidInput, "symlink"),
        ("data/kb.keel", InvalidInput, "pointer file"),
        ("data/nothing.txt", NotFound, "does not exist"),
        (".", InvalidInput, "whole workspace"),
        (".keel/config.toml", InvalidInput, "inside .keel/"),
    ]
    for path, error, words in cases:
        with pytest.raises(error) as caught:
            data.add([path])
        assert words in str(caught.value), path
        assert caught.value.hint

    os.symlink(repo / "data" / "target.txt", repo / "data" / "kb" / "part0" / "inner-link")
    with pytest.raises(InvalidInput) as caught:
        data.add(["data/kb"])
    assert "data/kb/part0/inner-link" in str(caught.value) and "symlink" in str(caught.value)

    write(repo / "data" / "outer" / "inner" / "x.txt", "x")
    data.add(["data/outer/inner"])
    with pytest.raises(InvalidInput) as caught:
        data.add(["data/outer"])
    assert "contains tracked data" in str(caught.value)


def test_a_file_changing_while_it_is_hashed_is_not_recorded(repo: Path):
    big = write(repo / "data" / "growing.bin", os.urandom(64 << 20))
    stop = threading.Event()

    def writer() -> None:
        fd = os.open(big, os.O_WRONLY)
        try:
            i = 0
            while not stop.is_set():
                os.pwrite(fd, os.urandom(64), (i * 997_331) % (64 << 20))
                i += 1
        finally:
            os.close(fd)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with pytest.raises(Conflict) as caught:
            for _ in range(20):  # each attempt almost surely overlaps a write; a few tries make it certain
                data.add(["data/growing.bin"], link="copy")
    finally:
        stop.set()
        thread.join()
    assert "changed while it was being hashed" in str(caught.value)
    assert not (repo / "data" / "growing.bin.keel").exists()


def _corrupt(path: Path) -> None:
    os.chmod(path, 0o644)
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))


def test_corrupt_objects_are_detected_by_checkout_and_verify(repo: Path):
    kb = make_kb(repo, n=8)
    (result,) = data.add(["data/kb"])
    tree = (repo / ".keel" / "objects" / result.oid[:2] / result.oid[2:]).read_text()
    pack = tree.splitlines()[1].split()[1]
    _corrupt(repo / ".keel" / "objects" / pack[:2] / pack[2:])

    checked, problems = data.verify()
    assert checked == 2
    paths = {p.path for p in problems if p.problem == "corrupt"}
    assert any(p.startswith("data/kb/part") for p in paths) and not any(p.repaired for p in problems)

    for f in kb.rglob("*.txt"):
        f.unlink()
    with pytest.raises(IntegrityError) as caught:
        data.checkout()
    assert "corrupt" in str(caught.value) and "data/kb/part" in str(caught.value)


def test_verify_with_workspace_reports_modified_files(repo: Path):
    make_kb(repo, n=4)
    data.add(["data/kb"])
    doc = repo / "data" / "kb" / "part0" / "doc000.txt"
    st = os.stat(doc)
    doc.write_text("X" * st.st_size)  # same size ...
    os.utime(doc, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and mtime: only a re-hash sees it
    _, problems = data.verify(workspace=True)
    assert [(p.path, p.problem) for p in problems] == [("data/kb/part0/doc000.txt", "modified")]


def test_diff_between_revisions_and_against_the_working_tree(repo: Path):
    kb = make_kb(repo, n=6)
    write(repo / "data" / "a.txt", "a")
    data.add(["data/kb", "data/a.txt"])
    commit(repo, "v1", tag="v1")
    write(kb / "part0" / "doc000.txt", "changed")
    write(kb / "added.txt", "added")
    (kb / "part1" / "doc001.txt").unlink()
    write(repo / "data" / "b.txt", "b")
    data.add(["data/kb", "data/b.txt"])

    changes = {c.path: c for c in data.diff()}
    assert set(changes) == {"data/kb", "data/b.txt"}
    assert changes["data/b.txt"].change == "added"
    files = changes["data/kb"].files
    assert files is not None
    assert (files.added, files.removed, files.modified) == (
        ["data/kb/added.txt"],
        ["data/kb/part1/doc001.txt"],
        ["data/kb/part0/doc000.txt"],
    )
    commit(repo, "v2", tag="v2")
    assert {c.path for c in data.diff("v1", "v2")} == {"data/kb", "data/b.txt"}
    assert data.diff() == []
    assert [c.change for c in data.diff("v2", "v1")] == ["removed", "modified"]
    with pytest.raises(InvalidInput):
        data.diff("no-such-rev")


def test_gc_keeps_what_pointers_runs_and_history_reach(repo: Path):
    import keel

    kb = make_kb(repo, n=6)
    data.add(["data/kb"])
    commit(repo, "v1")
    write(kb / "part0" / "doc000.txt", "v2")
    data.add(["data/kb"])
    commit(repo, "v2")
    write(kb / "part0" / "doc000.txt", "v3, never committed")
    data.add(["data/kb"])
    write(repo / "artifact.txt", "a run artifact")
    with keel.start_run(project="p") as run:
        run.log_artifact("artifact.txt")
    before = set((repo / ".keel" / "objects").rglob("*"))

    dry = data.gc(all_commits=True, dry_run=True)
    assert dry.removed == [] and set((repo / ".keel" / "objects").rglob("*")) == before

    git(repo, "checkout", "-q", "--", "data/kb.keel")  # back to v2's pointer: v3 is unreachable
    removed = data.gc(all_commits=True)
    assert len(removed.removed) == 2  # v3's tree and its one-file pack
    data.checkout(force=True)
    assert (kb / "part0" / "doc000.txt").read_text() == "v2"

    removed = data.gc()  # the working tree only: v1's objects go
    assert len(removed.removed) == 1  # v1's one-file pack; the shared pack stays
    assert [s.state for s in data.status()] == ["ok"]
    checked, problems = data.verify()
    assert problems == []
    from keel.sdk.client import Client

    assert Client().verify().ok  # the run's artifact is still there


def test_gc_keeps_data_that_a_run_used(repo: Path):
    import keel

    kb = make_kb(repo, n=3)
    data.add(["data/kb"])
    with keel.start_run(project="p") as run:
        ref = run.use_dataset("data/kb")
    write(kb / "part0" / "doc000.txt", "v2")
    data.add(["data/kb"])
    assert data.gc().removed == []  # v1 is unreachable from the pointers, but a run used it
    versions = data.log("data/kb")
    assert [v.runs for v in versions] == [[], [run.id]]
    assert ref.version == versions[1].oid and str(ref).startswith("dataset:data/kb@")


def test_use_dataset_refuses_data_that_differs_from_its_pointer(repo: Path):
    import keel

    kb = make_kb(repo, n=3)
    data.add(["data/kb"])
    write(kb / "part0" / "doc000.txt", "edited, not added")
    with keel.start_run(project="p") as run:
        with pytest.raises(Conflict) as caught:
            run.use_dataset("data/kb")
        assert "keel data add data/kb" in (caught.value.hint or "")
        ref = run.use_dataset("data/kb", check=False)
    assert keel.lineage.inputs(run.id) == [ref]


def test_the_same_small_file_in_two_folders_is_stored_once(repo: Path):
    for folder in ("a", "b"):
        for i in range(5):
            write(repo / folder / f"{i}.txt", f"shared {i}")
    write(repo / "b" / "own.txt", "only in b")
    first, second = data.add(["a", "b"])
    assert first.stored == 2  # a pack and a tree
    assert second.stored == 2  # b reuses a's pack for the shared files: one small pack and its tree
    assert len([p for p in (repo / ".keel" / "objects").rglob("*") if p.is_file()]) == 4


def test_add_works_outside_git_too(tmp_path: Path):
    from keel.sdk import session
    from keel.sdk.workspace import init_workspace

    init_workspace(tmp_path)
    make_kb(tmp_path, n=3)
    (result,) = data.add(["data/kb"])
    assert data.log()[0].git_commit == "" and data.status()[0].state == "ok"
    assert result.files == 3
    session.reset()


def test_old_mtime_constant_is_in_the_past():
    assert OLD < 2_000_000_000


def test_parsed_trees_are_cached_but_never_trusted_over_the_object(repo: Path):
    make_kb(repo, n=8)
    (result,) = data.add(["data/kb"])
    cached = repo / ".keel" / "data" / "trees" / result.oid
    assert cached.is_file()  # written by add: status and re-add skip parsing the manifest
    assert [s.state for s in data.status()] == ["ok"]

    cached.write_bytes(b"not marshal data")  # a damaged cache entry is ignored and rebuilt
    assert [s.state for s in data.status()] == ["ok"]
    assert cached.read_bytes() != b"not marshal data"

    _corrupt(repo / ".keel" / "objects" / result.oid[:2] / result.oid[2:])  # the tree object itself
    with pytest.raises(IntegrityError):
        data.status()
