"""Pointer files: the text format committed to git."""

import pytest

from keel.core.data_pointer import Pointer, format_pointer, parse_pointer, pointer_name
from keel.errors import InvalidInput

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
