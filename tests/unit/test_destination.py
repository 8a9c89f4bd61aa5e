"""One containment check for paths from content: the pure rules (bulk and single) and the
file-system checks of keel.services.destination."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.checks import relative_path_problem, relative_paths_problem
from keel.errors import InvalidInput
from keel.services.destination import Destination, contained_target
from keel.services.importers.dvc_files import parse_outs, read_dir_manifest

_PART = st.sampled_from(
    ["a", "b.txt", ".", "..", "", "C:", "x\\y", "n\x00", "é", "\u00a0", "t\tab", "x" * 70, "ü" * 70]
)


@settings(max_examples=500)
@given(st.lists(st.lists(_PART, min_size=1, max_size=4).map("/".join) | st.text(max_size=12), max_size=6))
def test_the_bulk_check_agrees_with_the_single_path_rule(paths):
    expected = next(
        ((i, problem) for i, p in enumerate(paths) if (problem := relative_path_problem(p, 4096)) is not None), None
    )
    assert relative_paths_problem(paths) == expected


def test_the_bulk_check_refuses_what_is_not_text():
    assert relative_paths_problem(["ok", None])[0] == 1  # type: ignore[list-item]
    assert relative_paths_problem([]) is None


def test_symlinks_on_the_way_are_refused_each_folder_looked_at_once(tmp_path: Path, monkeypatch):
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "a" / "link").symlink_to(outside, target_is_directory=True)
    (root / "a" / "file").write_text("x")
    destination = Destination(root, "data path")
    calls: list[str] = []
    real_lstat = os.lstat
    monkeypatch.setattr(os, "lstat", lambda p, *a, **k: calls.append(str(p)) or real_lstat(p, *a, **k))
    destination.check([f"a/b/f{i}" for i in range(100)], files=False)
    assert len(calls) == 2  # "a" and "a/b", not once per file
    for bad, words in (
        ("a/link/x", "through the symlink"),
        ("a/link/deeper/x", "through the symlink"),
        ("a/file/x", "is a file where"),
        ("../x", "'..' component"),
        ("a/./x", "'.' component"),
        ("/abs", "absolute"),
    ):
        with pytest.raises(InvalidInput, match=words):
            destination.check([bad], files=False)
    monkeypatch.undo()
    with pytest.raises(InvalidInput, match="through the symlink"):
        Destination(root).check(["a/link"])  # files=True: a link where the file goes
    assert sorted(os.listdir(outside)) == []


def test_files_the_caller_removes_first_may_become_folders(tmp_path: Path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "kb").write_text("a file where a folder now goes")
    Destination(tmp_path).check(["data/kb/x.txt"], files=False, removed={"data/kb"})
    with pytest.raises(InvalidInput, match="is a file where"):
        Destination(tmp_path).check(["data/kb/x.txt"], files=False)


def test_contained_target_refuses_a_file_as_root_and_a_folder_as_target(tmp_path: Path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InvalidInput, match="not a folder"):
        contained_target(tmp_path / "f", "x")
    (tmp_path / "d" / "sub").mkdir(parents=True)
    with pytest.raises(InvalidInput, match="not a regular file"):
        contained_target(tmp_path / "d", "sub")
    assert contained_target(tmp_path / "d", "sub/new.txt") == tmp_path / "d" / "sub" / "new.txt"


@pytest.mark.parametrize("path", ["../outside", "/etc/x", ".git/hooks", ".keel/objects", "a/../../b", "a\x00b", "."])
def test_dvc_files_cannot_name_data_outside_the_repository_or_in_its_tool_folders(path):
    text = f"outs:\n- md5: 0123456789abcdef0123456789abcdef\n  path: {path!r}\n"
    with pytest.raises(InvalidInput) as caught:
        parse_outs(text, "sub/../data.dvc" if path == "." else "data.dvc")
    assert caught.value.hint


def test_dvc_folder_manifests_cannot_name_files_outside_the_folder(tmp_path: Path):
    manifest = tmp_path / "x.dir"
    for rel in ("../x", "/etc/passwd", "a/../../x", "a\\..\\x", "nul\x00"):
        manifest.write_text(json.dumps([{"md5": "0123", "relpath": rel}]))
        with pytest.raises(InvalidInput, match="bad entry"):
            read_dir_manifest(manifest, "0123.dir")
    manifest.write_text('[{"md5": "0123", "relpath": "a/./b"}]')
    assert read_dir_manifest(manifest, "0123.dir") == [("a/b", "0123")]
