"""Deterministic chunkers: sizes, overlap, boundaries, stable chunk ids."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.core.kb_chunking import ChunkConfig, chunk_id, chunk_text, token_spans
from keel.errors import InvalidInput


def test_characters_windows_overlap_by_exactly_the_overlap():
    assert chunk_text("abcdefghij", ChunkConfig("characters", 4, 1)) == ["abcd", "defg", "ghij"]
    assert chunk_text("abcdefghij", ChunkConfig("characters", 4, 0)) == ["abcd", "efgh", "ij"]
    assert chunk_text("abc", ChunkConfig("characters", 10, 2)) == ["abc"]


@given(st.text(min_size=1, max_size=300).filter(lambda t: not t.isspace()), st.integers(2, 40), st.data())
def test_characters_chunks_cover_the_text_and_overlap(text, size, data):
    overlap = data.draw(st.integers(0, size - 1))
    config = ChunkConfig("characters", size, overlap)
    windows = chunk_text(text, config)
    assert all(len(w) <= size for w in windows)
    # Rebuild the text from the windows (whitespace-only windows may be dropped only at the edges of the text).
    if all(not w.isspace() for w in windows) and len(windows) == len(list(_starts(len(text), size, overlap))):
        rebuilt = windows[0] + "".join(w[overlap:] for w in windows[1:])
        assert rebuilt == text
    assert chunk_text(text, config) == windows  # deterministic


def _starts(n, size, overlap):
    start = 0
    while start < n:
        yield start
        if start + size >= n:
            return
        start += size - overlap


def test_tokens_are_words_and_punctuation_and_windows_keep_the_original_text():
    text = "Hello, world! This is keel."
    assert [text[a:b] for a, b in token_spans(text)] == ["Hello", ",", "world", "!", "This", "is", "keel", "."]
    assert chunk_text(text, ChunkConfig("tokens", 3, 1)) == ["Hello, world", "world! This", "This is keel", "keel."]
    assert chunk_text(text, ChunkConfig("tokens", 100, 10)) == [text]


def test_sentences_are_packed_and_trailing_sentences_carried_as_overlap():
    text = "One two. Three four. Five six. Seven eight."
    assert chunk_text(text, ChunkConfig("sentences", 20, 0)) == ["One two. Three four.", "Five six.", "Seven eight."]
    with_overlap = chunk_text(text, ChunkConfig("sentences", 22, 12))
    assert with_overlap == ["One two. Three four.", "Three four. Five six.", "Five six. Seven eight."]


def test_a_sentence_longer_than_a_chunk_is_cut_into_windows():
    text = "Short. " + "x" * 25 + ". End."
    chunks = chunk_text(text, ChunkConfig("sentences", 10, 2))
    assert chunks[0] == "Short."
    assert all(len(c) <= 10 for c in chunks)
    assert chunks[-1] == "End."


def test_markdown_splits_at_headings_but_not_inside_code_fences():
    text = "intro\n# A\nalpha\n\n## B\nbeta\n```\n# not a heading\n```\n# C\ngamma\n"
    assert chunk_text(text, ChunkConfig("markdown", 200, 0)) == [
        "intro",
        "# A\nalpha",
        "## B\nbeta\n```\n# not a heading\n```",
        "# C\ngamma",
    ]


def test_long_markdown_sections_are_packed_by_sentences():
    text = "# Title\n" + "Word word word. " * 10
    chunks = chunk_text(text, ChunkConfig("markdown", 40, 0))
    assert len(chunks) > 1 and all(len(c) <= 40 for c in chunks)
    assert chunks[0].startswith("# Title")


def test_whitespace_only_chunks_are_dropped_and_empty_text_has_none():
    assert chunk_text("", ChunkConfig()) == []
    assert chunk_text("   \n\n  ", ChunkConfig("sentences", 10, 0)) == []
    assert chunk_text("ab    ", ChunkConfig("characters", 2, 0)) == ["ab"]


def test_chunk_ids_are_stable_and_depend_on_the_config():
    config = ChunkConfig("characters", 4, 1)
    # Pinned: a change here re-embeds every stored knowledge base.
    assert chunk_id("abcd", config) == "e25475ab273bb7bf87c7dff241dfe711e2f7a20a047b7298ff50293f59d06560"
    assert chunk_id("abcd", ChunkConfig("characters", 4, 0)) != chunk_id("abcd", config)
    assert chunk_id("abce", config) != chunk_id("abcd", config)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"splitter": "paragraphs"}, "unknown splitter"),
        ({"chunk_size": 0}, "chunk_size must be between"),
        ({"chunk_size": 10, "chunk_overlap": 10}, "chunk_overlap must be"),
        ({"chunk_overlap": -1}, "chunk_overlap must be"),
        ({"chunk_size": 5.5}, "whole number"),
        ({"chunk_size": True}, "whole number"),
    ],
)
def test_bad_configs_are_refused_with_a_hint(kwargs, message):
    with pytest.raises(InvalidInput) as caught:
        ChunkConfig(**kwargs)
    assert message in caught.value.message and caught.value.hint
