"""Pointer files: the text format committed to git."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.checks import relative_path_problem
from keel.core.data_pointer import Pointer, format_pointer, parse_pointer, pointer_name
from keel.errors import InvalidInput, KeelError

OID = "ab" * 32


def test_file_and_dir_pointers_round_trip_and_read_like_yaml():
    for pointer in (Pointer("file", "train.jsonl", OID, 123), Pointer("dir", "kb", OID, 9_000, files=20_000)):
        text = format_pointer(pointer)
        assert parse_pointer(text) == pointer
        assert f"oid: {OID}" in text and text.startswith("# keel data pointer")
    assert "files:" not in format_pointer(Pointer("file", "a", OID, 1))
    assert pointer_name("kb") == "kb.keel"


def test_formatting_is_deterministic():
    a = Pointer("dir", "kb", OID, 5, files=2)
    assert format_pointer(a) == format_pointer(Pointer("dir", "kb", OID, 5, files=2))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("hello", "not a keel data pointer"),
        (f"version: 2\nkind: file\npath: a\noid: {OID}\nsize: 1\n", "version 2"),
        (f"version: 1\nkind: link\npath: a\noid: {OID}\nsize: 1\n", "neither 'file' nor 'dir'"),
        ("version: 1\nkind: file\npath: a\noid: xyz\nsize: 1\n", "not a 64-digit hex hash"),
        (f"version: 1\nkind: file\npath: ../a\noid: {OID}\nsize: 1\n", "invalid path"),
        (f"version: 1\nkind: file\npath: a\noid: {OID}\nsize: -1\n", "negative"),
        (f"version: 1\nkind: dir\npath: a\noid: {OID}\nsize: 1\n", "no 'files' line"),
        (f"version: 1\nkind: file\npath: a\noid: {OID}\nsize: 1\ngarbage\n", "expected 'key: value'"),
    ],
)
def test_bad_pointers_say_what_is_wrong(text, words):
    with pytest.raises(InvalidInput) as caught:
        parse_pointer(text, "data/x.keel")
    assert words in str(caught.value)
    assert caught.value.hint


@pytest.mark.parametrize(
    "name",
    ["..", ".", "a/b", "../../victim.txt", "/etc", "nul\x00byte", "tab\tname", "back\\slash", "C:x", "x" * 256, ""],
)
def test_a_pointer_path_is_one_contained_name(name):
    text = f"version: 1\nkind: file\npath: {name}\noid: {OID}\nsize: 1\n"
    with pytest.raises(InvalidInput) as caught:
        parse_pointer(text, "data/x.keel")
    assert caught.value.message.startswith("data/x.keel: invalid path") and caught.value.hint


def test_sizes_beyond_64_bits_are_refused():
    with pytest.raises(InvalidInput, match="too large"):
        parse_pointer(f"version: 1\nkind: file\npath: a\noid: {OID}\nsize: {2**63}\n")


_LINES = st.sampled_from(["version: 1", "kind: file", "kind: dir", f"oid: {OID}", "size: 3", "files: 2", "path: a"])


@settings(max_examples=300)
@given(st.lists(_LINES | st.text(max_size=40), max_size=8).map("\n".join) | st.text(max_size=300))
def test_parsing_arbitrary_text_raises_only_keel_errors(text):
    try:
        pointer = parse_pointer(text, "p.keel")
    except KeelError as exc:
        assert exc.message and exc.hint
        return
    assert relative_path_problem(pointer.path, 255) is None and "/" not in pointer.path
    assert 0 <= pointer.size < 2**63 and 0 <= pointer.files < 2**63
