"""Tree manifests, their diff and pack grouping."""

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.core.data_tree import (
    PACK_TARGET,
    Tree,
    TreeEntry,
    check_rel_path,
    diff_entries,
    group_into_packs,
    parse_tree,
)
from keel.errors import InvalidInput


def oid(text: str) -> str:
    return blake3.blake3(text.encode()).hexdigest()


PACK = oid("pack")


def test_a_tree_round_trips_with_packed_and_loose_entries():
    tree = Tree(
        [
            TreeEntry("z/big.bin", oid("big"), 10_000_000),
            TreeEntry("a/one.txt", oid("1"), 3, PACK, 0),
            TreeEntry("a/two words.txt", oid("2"), 4, PACK, 3),
        ]
    )
    data = tree.encode()
    assert data.startswith(b"keel-tree 1\npack " + PACK.encode())
    back = parse_tree(data)
    assert [e.path for e in back.entries] == ["a/one.txt", "a/two words.txt", "z/big.bin"]
    assert back.by_path()["a/two words.txt"] == TreeEntry("a/two words.txt", oid("2"), 4, PACK, 3)
    assert back.objects() == {PACK, oid("big")}
    assert back.packs == [PACK] and back.size == 10_000_007


def test_entry_order_does_not_change_the_encoding():
    a = TreeEntry("b", oid("b"), 1)
    b = TreeEntry("a", oid("a"), 1)
    assert Tree([a, b]).encode() == Tree([b, a]).encode()


@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\n\r/"), min_size=1),
        unique=True,
        max_size=20,
    )
)
def test_any_file_names_round_trip(names):
    names = [n for n in names if n not in (".", "..")]
    tree = Tree([TreeEntry(n, oid(n), len(n)) for n in names])
    assert parse_tree(tree.encode()).by_path() == tree.by_path()


@pytest.mark.parametrize(
    "data", [b"nope", b"keel-tree 1\nxx 1 - a\n", b"keel-tree 1\n" + b"a" * 64 + b" 1 3:0 a\n", b"\xff"]
)
def test_malformed_trees_are_refused(data):
    with pytest.raises(InvalidInput):
        parse_tree(data, "tree x")


def test_diff_of_two_versions():
    old = {"a": oid("a"), "b": oid("b"), "c": oid("c")}
    new = {"a": oid("a"), "b": oid("B"), "d": oid("d")}
    d = diff_entries(old, new)
    assert (d.added, d.removed, d.modified) == (["d"], ["c"], ["b"])
    assert not diff_entries(old, dict(old))


def test_paths_that_cannot_be_stored_are_refused():
    for bad in ("", "/abs", "a/../b", "line\nbreak", "a//b"):
        with pytest.raises(InvalidInput):
            check_rel_path(bad)
    assert check_rel_path("ok/name with spaces.txt") == "ok/name with spaces.txt"


def test_packs_are_grouped_to_the_target_size():
    groups = list(group_into_packs([10, 10, 10, 10, 10], target=25))
    assert [list(g) for g in groups] == [[0, 1], [2, 3], [4]]
    assert [list(g) for g in group_into_packs([PACK_TARGET * 2, 1])] == [[0], [1]]
    assert list(group_into_packs([])) == []
