"""The executable bit in pointers, trees and diffs; the modes a checkout writes; empty folders
found by the walk."""

from __future__ import annotations

import os
from pathlib import Path

import blake3
import pytest

from keel.core.data_pointer import Pointer, format_pointer, parse_pointer
from keel.core.data_tree import Tree, TreeEntry, diff_entries, parse_tree
from keel.errors import InvalidInput
from keel.services.data_files import file_mode, set_executable, walk

OID = "ab" * 32
PACK = blake3.blake3(b"pack").hexdigest()
HEAD = f"version: 1\nkind: file\npath: run.sh\noid: {OID}\nsize: 9\n"


@pytest.mark.parametrize(
    ("extra", "executable"),
    [
        ("", False),  # every pointer written before modes were versioned
        ("executable: true\n", True),
        ("executable: false\n", False),
    ],
)
def test_a_file_pointer_reads_its_executable_line(extra: str, executable: bool):
    pointer = parse_pointer(HEAD + extra)
    assert pointer.executable is executable
    assert parse_pointer(format_pointer(pointer)) == pointer
    assert ("executable: true" in format_pointer(pointer)) is executable  # written only when true


def test_an_ordinary_pointer_is_byte_for_byte_what_it_was():
    text = format_pointer(Pointer("file", "a.csv", OID, 5))
    assert text.splitlines()[2:] == ["version: 1", "kind: file", "path: a.csv", f"oid: {OID}", "size: 5"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (HEAD + "executable: yes\n", "neither 'true' nor 'false'"),
        (HEAD.replace("kind: file", "kind: dir") + "files: 2\nexecutable: true\n", "a folder's pointer"),
    ],
)
def test_a_bad_executable_line_is_refused(text: str, words: str):
    with pytest.raises(InvalidInput, match=words):
        parse_pointer(text)


def _tree(executable: frozenset[str] = frozenset()) -> Tree:
    return Tree(
        [TreeEntry("a/run.sh", OID, 9, PACK, 0), TreeEntry("a/x.txt", OID, 9, PACK, 9), TreeEntry("big", "cd" * 32, 9)],
        executable,
    )


@pytest.mark.parametrize(
    ("executable", "marked"),
    [
        (frozenset(), []),
        (frozenset({"a/run.sh"}), ["0:0:x a/run.sh"]),
        (frozenset({"big"}), ["-:x big"]),
        (frozenset({"a/run.sh", "a/x.txt", "big"}), ["0:0:x a/run.sh", "0:9:x a/x.txt", "-:x big"]),
    ],
)
def test_a_tree_records_executable_entries_and_reads_them_back(executable: frozenset[str], marked: list[str]):
    encoded = _tree(executable).encode()
    assert [line.split(" ", 2)[2] for line in encoded.decode().splitlines() if ":x" in line] == marked
    back = parse_tree(encoded)
    assert back.executable == executable and back.entries == _tree().entries  # same oids, sizes, places
    if not executable:
        assert b":x" not in encoded  # the format of before: an old tree keeps its oid


def test_mode_is_part_of_the_trees_identity_not_the_files():
    plain, marked = _tree().encode(), _tree(frozenset({"a/run.sh"})).encode()
    assert blake3.blake3(plain).hexdigest() != blake3.blake3(marked).hexdigest()
    assert [line.split()[0] for line in plain.splitlines()[2:]] == [line.split()[0] for line in marked.splitlines()[2:]]


@pytest.mark.parametrize(
    ("old_x", "new_x", "new_oid", "mode_changed", "made", "modified"),
    [
        (set(), {"f"}, OID, ["f"], ["f"], []),  # chmod +x
        ({"f"}, set(), OID, ["f"], [], []),  # chmod -x
        ({"f"}, {"f"}, OID, [], [], []),
        (set(), {"f"}, "cd" * 32, [], [], ["f"]),  # new bytes: "modified" says it all
    ],
)
def test_diff_reports_a_mode_change_only_for_equal_bytes(old_x, new_x, new_oid, mode_changed, made, modified):
    changes = diff_entries({"f": OID, "g": OID}, {"f": new_oid, "g": OID}, old_x, new_x)
    assert (changes.mode_changed, changes.made_executable, changes.modified) == (mode_changed, made, modified)
    assert bool(changes) is bool(mode_changed or modified)
    assert set(changes.to_dict()) == {"added", "removed", "modified", "mode_changed", "made_executable"}


@pytest.mark.parametrize(
    ("executable", "umask", "mode"),
    [(False, 0o022, 0o644), (True, 0o022, 0o755), (False, 0o002, 0o664), (True, 0o077, 0o700), (False, 0o077, 0o600)],
)
def test_checkout_writes_what_the_umask_makes_of_666_or_777(executable: bool, umask: int, mode: int):
    assert file_mode(executable, umask) == mode


@pytest.mark.parametrize(
    ("before", "executable", "after"),
    [(0o644, True, 0o755), (0o600, True, 0o700), (0o755, False, 0o644), (0o700, False, 0o600)],
)
def test_setting_the_bit_keeps_the_other_bits(tmp_path: Path, before: int, executable: bool, after: int):
    path = tmp_path / "f"
    path.write_text("x")
    os.chmod(path, before)
    set_executable(str(path), os.stat(path).st_mode, executable, 0o022)
    assert os.stat(path).st_mode & 0o777 == after


def test_the_walk_reads_the_bit_from_its_stat_and_lists_empty_folders(tmp_path: Path):
    (tmp_path / "kb" / "a" / "empty").mkdir(parents=True)
    (tmp_path / "kb" / "b").mkdir()
    (tmp_path / "kb" / "a" / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "kb" / "a" / "x.txt").write_text("x\n")
    os.chmod(tmp_path / "kb" / "a" / "run.sh", 0o755)
    empty: list[str] = []
    files, other = walk(str(tmp_path / "kb"), "kb", empty)
    assert {f.rel: f.executable for f in files} == {"kb/a/run.sh": True, "kb/a/x.txt": False}
    assert sorted(empty) == [str(tmp_path / "kb" / "a" / "empty"), str(tmp_path / "kb" / "b")]
    (tmp_path / "kb" / "a" / "run.sh").unlink()
    (tmp_path / "kb" / "a" / "x.txt").unlink()
    empty.clear()
    walk(str(tmp_path / "kb" / "b"), "kb/b", empty)
    assert empty == []  # the walked folder itself is never listed
