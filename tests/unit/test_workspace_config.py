"""The one typed reader of .keel/config.toml."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.errors import InvalidInput, KeelError, StoreError
from keel.services.workspace_config import MAX_CONFIG_BYTES, read_workspace_config


def write(root: Path, text: str | bytes) -> Path:
    path = root / ".keel" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    return path


def test_a_missing_file_reads_as_the_defaults(tmp_path: Path):
    config = read_workspace_config(tmp_path)
    assert not config.exists
    assert (config.store.database, config.store.objects, config.store.server) == ("keel.db", "objects", None)
    assert (config.data.link, config.data.default_remote, dict(config.data.remotes)) == ("auto", None, {})
    assert config.conversations.redact is None and dict(config.conversations.prices) == {}


def test_every_section_is_typed(tmp_path: Path):
    write(
        tmp_path,
        """
[store]
database = "postgresql+psycopg://db/keel"
objects = "s3://bucket/prefix"
server = "https://keel.example.com"

[data]
link = "copy"
default_remote = "storage"

[data.remotes]
storage = "s3://b/p"
backup = "/mnt/backup"

[conversations]
redact = "builtin"

[conversations.prices]
"my-model" = { prompt = 1.0, completion = 2.0 }
""",
    )
    config = read_workspace_config(tmp_path)
    assert config.exists
    assert config.store.database.startswith("postgresql") and config.store.server == "https://keel.example.com"
    assert config.data.link == "copy" and config.data.default_remote == "storage"
    assert dict(config.data.remotes) == {"storage": "s3://b/p", "backup": "/mnt/backup"}
    assert config.conversations.redact == "builtin" and "my-model" in config.conversations.prices


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("[store]\ndatabase = 'x'\n[data\n", 3, "not valid TOML"),
        ("[store]\ndatabase = 5\n", 2, "[store] database must be text, not int"),
        ("[store]\nobjects = ['a']\n", 2, "[store] objects must be text, not a list"),
        ("\n\n[data]\nlink = 'sideways'\n", 4, "link = 'sideways' is not one of"),
        ("[data]\nlink = 'copy'\n[data.remotes]\nbad = 3\n", 4, "[data.remotes] bad must be a URL"),
        ("store = 'flat'\n", 1, "[store] must be a table, not text"),
        ("[data]\nremotes = 'x'\n", 2, "[data.remotes] must be a table"),
        ("[conversations]\nredact = 3\n", 2, "redact must be text or false"),
        ("[conversations]\nprices = 1\n", 2, "[conversations.prices] must be a table"),
    ],
)
def test_a_malformed_file_names_the_file_and_line(tmp_path: Path, text: str, line: int, words: str):
    path = write(tmp_path, text)
    with pytest.raises(InvalidInput) as caught:
        read_workspace_config(tmp_path)
    assert caught.value.message.startswith(f"{path}:{line}: "), caught.value.message
    assert words in caught.value.message and caught.value.hint


def test_not_utf8_and_too_large_are_refused(tmp_path: Path):
    path = write(tmp_path, b"[store]\n\xff = 1\n")
    with pytest.raises(InvalidInput, match=f"{path}:2: not UTF-8"):
        read_workspace_config(tmp_path)
    write(tmp_path, b"# " + b"x" * MAX_CONFIG_BYTES)
    with pytest.raises(InvalidInput, match="larger than"):
        read_workspace_config(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_a_store_error(tmp_path: Path):  # pragma: no cover - not as root
    path = write(tmp_path, "[store]\n")
    path.chmod(0)
    with pytest.raises(StoreError, match="cannot read"):
        read_workspace_config(tmp_path)


_PIECES = st.sampled_from(
    ["[store]", "[data]", "[data.remotes]", "[conversations]", "[conversations.prices]", "database = 'x'",
     "link = 'copy'", "link = 1", "a = {b = 1}", "redact = true", "remotes = []", "x = 1e999", "[[data]]", "="]
)  # fmt: skip


@settings(max_examples=200)
@given(st.lists(_PIECES | st.text(max_size=30), max_size=8).map("\n".join))
def test_any_text_reads_or_raises_a_keel_error(text: str):
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        write(Path(folder), text.encode("utf-8", "surrogatepass"))
        try:
            config = read_workspace_config(folder)
        except KeelError as exc:
            assert exc.message and exc.hint
            return
        assert isinstance(config.store.database, str) and config.data.link in ("auto", "reflink", "hardlink", "copy")
        assert all(isinstance(v, str) for v in config.data.remotes.values())
