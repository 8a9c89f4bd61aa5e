"""Paths stay inside, through the Python API: what `keel data add` stores can always be checked
out again, and nothing writes through a symlink (issue 16; the CLI side is tests/e2e/test_data_containment_cli.py)."""

from __future__ import annotations

import marshal
import os
from pathlib import Path

import pytest
from data_helpers import init_repo, make_kb, write

from keel.errors import InvalidInput
from keel.sdk import data
from keel.services.data import open_repo


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from keel.sdk import session

    root = init_repo(tmp_path / "repo")
    monkeypatch.chdir(root)
    yield root
    session.reset()


@pytest.mark.parametrize("name", ["tab\tname.txt", "back\\slash.txt", "bell\x07.txt"])
def test_add_refuses_names_a_tree_could_not_hold(repo: Path, name: str):
    make_kb(repo, n=3)
    write(repo / "data" / "kb" / "part0" / name, "x")
    with pytest.raises(InvalidInput) as caught:
        data.add(["data/kb"])
    assert "cannot track" in caught.value.message and "rename" in (caught.value.hint or "")
    assert not (repo / "data" / "kb.keel").exists()
    with pytest.raises(InvalidInput, match="cannot track"):
        data.add([f"data/kb/part0/{name}"])


def test_unprotect_never_writes_through_a_symlink(repo: Path, tmp_path: Path):
    make_kb(repo, n=3)
    data.add(["data/kb"])
    outside = tmp_path / "outside"
    outside.mkdir()
    write(outside / "doc.txt", "precious")
    os.symlink(outside, repo / "data" / "linked")
    with pytest.raises(InvalidInput, match="symlink"):
        data.unprotect(["data/linked"])
    assert (outside / "doc.txt").read_text() == "precious"


def test_a_tree_parsed_by_an_older_keel_is_checked_again(repo: Path):
    """Parsed trees are cached (marshal); a cache entry written before trees were checked is
    not trusted: the tree is read and checked again."""
    make_kb(repo, n=3)
    data.add(["data/kb"])
    with open_repo(repo) as opened:
        pointer = opened.read_pointer("data/kb.keel")
        cache = Path(opened.trees.path(pointer.oid))
        st = os.stat(opened.cache.path(pointer.oid))
        evil = (1, pointer.oid, (st.st_ino, st.st_size, st.st_mtime_ns), ["../../x"], ["0" * 64], [1], [""], [0])
        cache.write_bytes(marshal.dumps(evil))
        tree = opened.load_tree(pointer.oid, "data/kb")
    assert "../../x" not in {e.path for e in tree.entries} and len(tree.entries) == 3
