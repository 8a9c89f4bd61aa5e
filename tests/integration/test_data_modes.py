"""Data keeps its executable bit (git's 100755, DVC 3's ``isexec``); an interrupted
checkout's re-run leaves no folders the version lacks; a ``.dvc`` file that names other
data than the ``.keel`` pointer is reported. Real git, real files, the sdk."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from data_helpers import commit, git, write
from import_helpers import new_workspace

from keel.core.data_pointer import parse_pointer
from keel.sdk import data
from keel.services.data_files import current_umask, file_mode

SMALL = b"#!/bin/sh\necho hello\n"
LARGE = os.urandom(300_000)  # loose: stored and checked out as one object, not from a pack


@pytest.fixture
def repo(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory):
    from keel.sdk import session

    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "user.name", "Test")
    new_workspace(root, tmp_path_factory.getbasetemp())  # a copy of one migrated workspace: fast
    os.chdir(root)
    yield root
    session.reset()


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def executable(path: Path) -> bool:
    return bool(os.stat(path).st_mode & stat.S_IXUSR)


def pointer(root: Path, rel: str):
    return parse_pointer((root / f"{rel}.keel").read_text())


def tree_text(root: Path, oid: str) -> str:
    return (root / ".keel" / "objects" / oid[:2] / oid[2:]).read_text()


# -- 1 and 2: add records the bit, status reports a change of it ----------------------------------
MODE_ROWS = [  # (tracked path, the file whose bit changes, its content)
    ("run.sh", "run.sh", SMALL),
    ("tool.bin", "tool.bin", LARGE),
    ("tools", "tools/bin/run.sh", SMALL),
    ("jobs", "jobs/bin/tool.bin", LARGE),
]


def test_add_records_the_executable_bit_and_status_reports_a_mode_change(repo: Path):
    for tracked, target, content in MODE_ROWS:
        os.chmod(write(repo / target, content), 0o644)
        if tracked != target:
            write(repo / tracked / "readme.txt", "plain\n")
    first = {r.path: r for r in data.add([row[0] for row in MODE_ROWS])}
    assert [s.state for s in data.status()] == ["ok"] * 4

    for _, target, _ in MODE_ROWS:
        os.chmod(repo / target, 0o755)  # chmod +x: the same bytes
    states = {s.path: s for s in data.status()}
    for tracked, target, _ in MODE_ROWS:
        state = states[tracked]
        assert state.state == "modified", tracked
        assert state.changes.modified == [] and state.changes.mode_changed == [target]
        assert state.changes.made_executable == [target]

    second = {r.path: r for r in data.add([row[0] for row in MODE_ROWS])}
    assert [s.state for s in data.status()] == ["ok"] * 4
    for tracked, target, _ in MODE_ROWS:
        assert second[tracked].changed, tracked
        if tracked == target:
            assert second[tracked].oid == first[tracked].oid  # the mode is not part of the content's hash
            assert pointer(repo, tracked).executable
            assert "executable: true" in (repo / f"{tracked}.keel").read_text()
        else:
            assert second[tracked].oid != first[tracked].oid  # a tree's identity includes its modes, as git's
            lines = tree_text(repo, second[tracked].oid).splitlines()
            name = target[len(tracked) + 1 :]
            assert [line for line in lines if line.endswith(f":x {name}")]
            assert not [line for line in lines if line.endswith(":x readme.txt")]

    for _, target, _ in MODE_ROWS:
        os.chmod(repo / target, 0o644)  # and back: a change again
    states = {s.path: s for s in data.status()}
    for tracked, target, _ in MODE_ROWS:
        assert states[tracked].changes.mode_changed == [target] and states[tracked].changes.made_executable == []
    third = {r.path: r for r in data.add([row[0] for row in MODE_ROWS])}
    for tracked, _, _ in MODE_ROWS:
        assert third[tracked].oid == first[tracked].oid  # the same bytes and modes: the first version again
        assert "executable" not in (repo / f"{tracked}.keel").read_text()


def test_the_same_bytes_executable_and_not_are_one_object(repo: Path):
    write(repo / "kb" / "a.sh", SMALL)
    write(repo / "kb" / "b.sh", SMALL)
    write(repo / "kb" / "big1", LARGE)
    write(repo / "kb" / "big2", LARGE)
    os.chmod(repo / "kb" / "a.sh", 0o755)
    os.chmod(repo / "kb" / "big1", 0o755)
    result = data.add(["kb"])[0]
    lines = tree_text(repo, result.oid).splitlines()
    entries = {line.rsplit(" ", 1)[1]: line.split(" ") for line in lines[1:] if not line.startswith("pack ")}
    assert entries["a.sh"][0] == entries["b.sh"][0] and entries["big1"][0] == entries["big2"][0]
    assert entries["a.sh"][2].endswith(":x") and not entries["b.sh"][2].endswith(":x")
    assert entries["big1"][2] == "-:x" and entries["big2"][2] == "-"
    loose = [p for p in (repo / ".keel" / "objects").rglob("*") if p.is_file() and p.stat().st_size == len(LARGE)]
    assert len(loose) == 1


def test_old_pointers_and_trees_without_modes_read_as_not_executable(repo: Path):
    write(repo / "kb" / "a.txt", "a\n")
    write(repo / "one.txt", "one\n")
    results = data.add(["kb", "one.txt"])
    assert ":x" not in tree_text(repo, results[0].oid)  # no executable file: the format of before
    old_pointer = (
        f"# keel data pointer\nversion: 1\nkind: file\npath: one.txt\noid: {results[1].oid}\nsize: {results[1].size}\n"
    )
    (repo / "one.txt.keel").write_text(old_pointer)
    assert [s.state for s in data.status()] == ["ok", "ok"]
    assert not pointer(repo, "one.txt").executable


# -- 3: checkout and pull restore the recorded mode ---------------------------------------------------
@pytest.mark.parametrize("link", ["copy", "hardlink"])
def test_git_checkout_then_data_checkout_restores_each_versions_modes(repo: Path, link: str):
    umask = current_umask()
    files = {"run.sh": SMALL, "tool.bin": LARGE, "tools/bin/run.sh": SMALL, "tools/bin/tool.bin": LARGE}
    for rel, content in files.items():
        os.chmod(write(repo / rel, content), 0o755)
    write(repo / "tools" / "readme.txt", "plain\n")
    data.add(["run.sh", "tool.bin", "tools"], link=link)
    commit(repo, "v1: executables", tag="v1")
    for rel in files:
        os.chmod(repo / rel, 0o644)
    data.add(["run.sh", "tool.bin", "tools"], link=link)
    commit(repo, "v2: not executable", tag="v2")

    for tag, want in (("v1", True), ("v2", False), ("v1", True)):
        git(repo, "checkout", "-q", tag)
        result = data.checkout(link=link)
        assert result.mode_changed == len(files)  # the bytes were right: only the bit changed
        for rel in files:
            assert executable(repo / rel) is want, (tag, rel)
            if link != "hardlink" or want:
                assert mode(repo / rel) & 0o111 == (file_mode(want, umask) & 0o111), (tag, rel)
        assert mode(repo / "tools" / "readme.txt") & 0o111 == 0
        assert [s.state for s in data.status()] == ["ok", "ok", "ok"]

    # Removed and written again (not just chmod-ed): created with the recorded mode.
    for rel in files:
        (repo / rel).unlink()
    data.checkout(link=link)
    for rel in files:
        assert executable(repo / rel), rel
        assert mode(repo / rel) & 0o111 == file_mode(True, umask) & 0o111
    cache = [p for p in (repo / ".keel" / "objects").rglob("*") if p.is_file()]
    assert all(not p.stat().st_mode & 0o333 for p in cache)  # the cache stays read-only, never +x


CLONE_ROWS = [  # (path, mode in the repository, executable in a fresh clone)
    ("run.sh", 0o755, True),
    ("tools/bin/run.sh", 0o755, True),
    ("tools/big.bin", 0o755, True),
    ("notes.txt", 0o644, False),
    ("secret.txt", 0o600, False),  # only the x bit is versioned: a fresh clone gets the umask's 644
    ("tools/private.txt", 0o600, False),
]


def test_a_fresh_clone_and_pull_restores_executables(repo: Path, tmp_path: Path):
    umask = current_umask()
    for rel, before, _ in CLONE_ROWS:
        os.chmod(write(repo / rel, LARGE if rel.endswith(".bin") else f"{rel}\n"), before)
    data.add(["tools", "run.sh", "notes.txt", "secret.txt"])
    data.add_remote("storage", str(tmp_path / "remote"), default=True)
    commit(repo, "v1")
    data.push()

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    os.chdir(clone)
    data.pull()
    for rel, _, executable_after in CLONE_ROWS:
        assert (clone / rel).read_bytes() == (repo / rel).read_bytes()
        assert mode(clone / rel) == file_mode(executable_after, umask), rel
    assert all(s.state == "ok" for s in data.status())


def test_a_mode_change_between_two_commits_shows_in_data_diff(repo: Path):
    write(repo / "tools" / "run.sh", SMALL)
    data.add(["tools"])
    commit(repo, "v1", tag="v1")
    os.chmod(repo / "tools" / "run.sh", 0o755)
    data.add(["tools"])
    commit(repo, "v2", tag="v2")
    (change,) = data.diff("v1", "v2")
    assert change.change == "modified" and change.files is not None
    assert change.files.mode_changed == ["tools/run.sh"] and change.files.modified == []


# -- 4: an interrupted checkout ------------------------------------------------------------------------
def _two_versions(repo: Path) -> tuple[Path, list[str]]:
    kb = repo / "data" / "kb"
    for i in range(12):
        write(kb / f"part{i % 4}" / f"sub{i % 2}" / f"doc{i}.txt", f"doc {i}\n")
    data.add(["data/kb"])
    commit(repo, "v1: 4 parts", tag="v1")
    for i in range(12):
        if i % 4 >= 2:
            (kb / f"part{i % 4}" / f"sub{i % 2}" / f"doc{i}.txt").unlink()
    data.add(["data/kb"])
    commit(repo, "v2: 2 parts", tag="v2")
    assert data.checkout().folders_removed == 4  # part2/sub0, part3/sub1 and above: no file needs them
    return kb, sorted(str(p.relative_to(kb)) for p in kb.rglob("*"))


def _folders(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_dir())


@pytest.mark.parametrize(
    "killed",
    [
        "while removing",  # v1 -> v2: files of part2/part3 unlinked, their folders not yet
        "while creating",  # v2 -> v1: every folder made, some files half-written, the rest not yet
        "creating, then rerun at the other version",  # v2 -> v1 killed, then git checkout v2 and rerun
    ],
)
def test_the_rerun_of_a_killed_checkout_leaves_exactly_the_version(repo: Path, killed: str):
    kb, v2_paths = _two_versions(repo)
    git(repo, "checkout", "-q", "v1")
    data.checkout()
    v1_paths = sorted(str(p.relative_to(kb)) for p in kb.rglob("*"))
    v1_folders = _folders(kb)
    journal = repo / ".keel" / "data" / "checkout.journal"
    tmp = repo / ".keel" / "data" / "tmp"
    # The state a checkout killed with kill -9 leaves (see keel.services.data_checkout):
    if killed == "while removing":
        git(repo, "checkout", "-q", "v2")
        journal.write_text("/data/kb\n")
        for p in kb.rglob("*.txt"):
            if p.parts[-3] in ("part2", "part3"):
                p.unlink()
        expected, tag = v2_paths, "v2"
    else:
        git(repo, "checkout", "-q", "v2")
        data.checkout()
        git(repo, "checkout", "-q", "v1")
        created = sorted(f"data/kb/{p}" for p in set(v1_paths) - set(v2_paths) if p.endswith(".txt"))
        journal.write_text("/data/kb\n" + "\n".join(created) + "\n")
        for folder in v1_folders:
            (kb / folder).mkdir(exist_ok=True)
        (repo / created[0]).write_bytes(b"do")  # half-written
        (tmp / f"{os.getpid()}-0123456789abcdef-0-0").write_bytes(b"partial")
        expected, tag = v1_paths, "v1"
        if killed.endswith("other version"):
            git(repo, "checkout", "-q", "v2")
            expected, tag = v2_paths, "v2"

    (state,) = data.status()
    assert state.state == "modified" and state.interrupted  # never "up to date" before the rerun
    result = data.checkout()
    assert sorted(str(p.relative_to(kb)) for p in kb.rglob("*")) == expected, tag
    assert not [p for p in kb.rglob("*") if p.is_dir() and not any(p.iterdir())]  # no empty folder
    assert not journal.exists()
    (state,) = data.status()
    assert state.state == "ok" and not state.interrupted
    if killed == "while removing":
        assert result.folders_removed == 4
        assert result.written == 0


def test_checkout_removes_empty_folders_but_never_files(repo: Path):
    kb, _ = _two_versions(repo)
    (kb / "part0" / "stray" / "deeper").mkdir(parents=True)
    (kb / "part0" / "sub0" / "empty").mkdir()
    (kb / "notes").mkdir()
    write(kb / "notes" / "mine.txt", "a file of the user's, not in any version\n")
    with pytest.raises(Exception, match="not in the cache"):
        data.checkout()  # the user's file is protected as always
    data.add(["data/kb"])  # ... until it is added
    data.checkout()
    assert (kb / "notes" / "mine.txt").exists()
    assert not (kb / "part0" / "stray").exists() and not (kb / "part0" / "sub0" / "empty").exists()
    assert (kb / "part0" / "sub0").is_dir()


# -- 5: a .dvc file that disagrees with the .keel pointer ----------------------------------------------
def _dvc_file(repo: Path, rel: str, content: bytes) -> None:
    """What ``dvc add`` writes for ``content`` (DVC itself is not installed here)."""
    (repo / ".dvc").mkdir(exist_ok=True)
    digest = hashlib.md5(content, usedforsecurity=False).hexdigest()
    size = len(content)
    (repo / f"{rel}.dvc").write_text(f"outs:\n- md5: {digest}\n  size: {size}\n  hash: md5\n  path: {Path(rel).name}\n")


DVC_ROWS = [  # (case, what the workspace holds, what the .dvc file names, warned)
    ("dvc add after keel add", b"a,b\n1,2\n3,4\n", b"a,b\n1,2\n3,4\n", True),
    ("both name the same bytes", b"a,b\n1,2\n", b"a,b\n1,2\n", False),
    ("dvc names bytes nobody has", b"a,b\n1,2\n", b"bytes that are nowhere\n", True),
]


def test_status_and_checkout_say_when_the_dvc_file_and_the_keel_pointer_disagree(repo: Path):
    old = b"a,b\n1,2\n"
    names = [f"data{i}.csv" for i in range(len(DVC_ROWS))]
    for name in names:
        write(repo / name, old)
    added = {r.path: r for r in data.add(names)}
    for name, (_, workspace, dvc, _) in zip(names, DVC_ROWS, strict=True):
        write(repo / name, workspace)
        _dvc_file(repo, name, dvc)

    states = {s.path: s for s in data.status()}
    for name, (case, _, dvc, warned) in zip(names, DVC_ROWS, strict=True):
        state = states[name]
        if not warned:
            assert state.warnings == [] and state.state == "ok", case
            continue
        (warning,) = state.warnings
        assert warning.startswith(f"{name}.dvc and {name}.keel disagree about {name}"), case
        assert f"{name}.keel says {added[name].oid[:12]} ({len(old)} bytes)" in warning
        md5 = hashlib.md5(dvc, usedforsecurity=False).hexdigest()
        assert f"{name}.dvc says md5 {md5[:12]} ({len(dvc)} bytes; a version keel has not imported)" in warning
        if case == "dvc add after keel add":
            assert f"the workspace holds it, {name}.keel" in warning and warning.endswith("not the workspace")
        else:
            assert f"not the workspace, {name}.keel" in warning and warning.endswith("the workspace holds it")

    result = data.checkout(force=True)
    assert len(result.warnings) == 2
    assert all(w.endswith(f"checkout --force restores keel's version ({w.split()[0][:-4]}.keel)")
               for w in result.warnings)  # fmt: skip
    for name in names:
        assert (repo / name).read_bytes() == old


def _dvc_cache(repo: Path, content: bytes) -> str:
    md5 = hashlib.md5(content, usedforsecurity=False).hexdigest()
    path = repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.chmod(path, 0o444)  # DVC's cache files are read-only, executable or not
    return md5


def test_dvc_isexec_is_imported_as_the_executable_bit(repo: Path):
    from keel.sdk import importers

    tool, notes = b"#!/bin/sh\necho tool\n", b"notes\n"
    run_md5, tool_md5, notes_md5 = _dvc_cache(repo, SMALL), _dvc_cache(repo, tool), _dvc_cache(repo, notes)
    entries = [{"md5": notes_md5, "relpath": "notes.txt"}, {"md5": tool_md5, "relpath": "tool.sh", "isexec": True}]
    manifest = json.dumps(entries)
    dir_md5 = hashlib.md5(manifest.encode(), usedforsecurity=False).hexdigest() + ".dir"
    (repo / ".dvc" / "cache" / "files" / "md5" / dir_md5[:2]).mkdir(exist_ok=True)
    (repo / ".dvc" / "cache" / "files" / "md5" / dir_md5[:2] / dir_md5[2:]).write_text(manifest)
    (repo / "run.sh.dvc").write_text(
        f"outs:\n- md5: {run_md5}\n  size: {len(SMALL)}\n  hash: md5\n  isexec: true\n  path: run.sh\n"
    )
    (repo / "bin.dvc").write_text(f"outs:\n- md5: {dir_md5}\n  size: 26\n  nfiles: 2\n  hash: md5\n  path: bin\n")
    importers.dvc()

    assert pointer(repo, "run.sh").executable
    tree = tree_text(repo, pointer(repo, "bin").oid)
    assert [line.rsplit(" ", 1)[1] for line in tree.splitlines() if ":x " in line] == ["tool.sh"]
    data.checkout()
    umask = current_umask()
    assert mode(repo / "run.sh") == mode(repo / "bin" / "tool.sh") == file_mode(True, umask)
    assert mode(repo / "bin" / "notes.txt") == file_mode(False, umask)
