"""Tree manifests, their diff and pack grouping."""

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.checks import relative_path_problem
from keel.core.data_tree import (
    MAX_TREE_PATH,
    PACK_TARGET,
    Tree,
    TreeEntry,
    check_rel_path,
    diff_entries,
    group_into_packs,
    parse_tree,
)
from keel.errors import InvalidInput, KeelError


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
    names = [n for n in names if relative_path_problem(n, MAX_TREE_PATH) is None]
    tree = Tree([TreeEntry(n, oid(n), len(n)) for n in names])
    assert parse_tree(tree.encode()).by_path() == tree.by_path()


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\n\r")), max_size=8))
def test_a_tree_is_read_back_exactly_when_every_path_is_contained(names):
    """The tree rule and the single-path rule agree (the bulk screen misses nothing)."""
    names = list(dict.fromkeys(names))
    tree = Tree([TreeEntry(n, oid(n), len(n)) for n in names])
    if all(relative_path_problem(n, MAX_TREE_PATH) is None for n in names):
        assert parse_tree(tree.encode()).by_path() == tree.by_path()
    else:
        with pytest.raises(InvalidInput, match="line"):
            parse_tree(tree.encode(), "tree abc")


@pytest.mark.parametrize(
    "path",
    [
        "../../victim.txt",
        "a/../../victim.txt",
        "/etc/passwd",
        "a//b",
        "a/./b",
        "a/",
        "..",
        "C:/windows/x",
        "a\\..\\..\\x",
        "nul\x00byte",
        "tab\tname",
        "x" * 256,
    ],
)
def test_entries_that_would_land_outside_the_folder_are_refused_with_the_line(path):
    data = f"keel-tree 1\n{oid('a')} 1 - a/ok.txt\n{oid('b')} 1 - {path}\n".encode()
    with pytest.raises(InvalidInput) as caught:
        parse_tree(data, "tree 0123abcd of data/kb")
    assert "tree 0123abcd of data/kb, line 3" in caught.value.message
    assert caught.value.hint


@pytest.mark.parametrize(
    "line",
    [
        f"{'g' * 64} 1 - a",  # not hex: it would become a file name in the cache
        f"{'../' * 21}x 1 - a",
        f"{oid('a')} -1 - a",
        f"{oid('a')} {2**63} - a",
    ],
)
def test_entries_with_bad_ids_or_numbers_are_refused(line):
    data = f"keel-tree 1\npack {oid('p')}\n{line}\n".encode()
    with pytest.raises(InvalidInput) as caught:
        parse_tree(data, "tree x")
    assert caught.value.hint


@settings(max_examples=300)
@given(st.binary(max_size=400) | st.text(max_size=300).map(lambda t: ("keel-tree 1\n" + t).encode("utf-8", "replace")))
def test_parsing_arbitrary_bytes_raises_only_keel_errors(data):
    try:
        tree = parse_tree(data)
    except KeelError as exc:
        assert exc.message and exc.hint
        return
    for e in tree.entries:  # whatever it accepts is safe to write
        assert relative_path_problem(e.path, MAX_TREE_PATH) is None
        assert len(e.oid) == 64 and 0 <= e.size < 2**63 and 0 <= e.offset < 2**63


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
    for bad in ("", "/abs", "a/../b", "line\nbreak", "a//b", "back\\slash", "nul\x00", "bad\udcff"):
        with pytest.raises(InvalidInput):
            check_rel_path(bad)
    assert check_rel_path("ok/name with spaces.txt") == "ok/name with spaces.txt"


def test_packs_are_grouped_to_the_target_size():
    groups = list(group_into_packs([10, 10, 10, 10, 10], target=25))
    assert [list(g) for g in groups] == [[0, 1], [2, 3], [4]]
    assert [list(g) for g in group_into_packs([PACK_TARGET * 2, 1])] == [[0], [1]]
    assert list(group_into_packs([])) == []
