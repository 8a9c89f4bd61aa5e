"""CLI tables fit the terminal: headers abbreviated distinguishably, wide values cut,
optional columns dropped whole, statuses and times never cut; piped output printed whole."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.cli.render import abbreviate, fit, output_width, table

# What `keel runs list` shows for evaluation runs: id, name, status, start, then metrics.
HEADERS = [
    "id", "name", "status", "start", "exact_match", "faithfulness", "cost_per_query",
    "latency_p50_ms", "exact_match_ci_high", "exact_match_ci_low",
]  # fmt: skip
KEEP = {0, 2, 3}
OPTIONAL = list(range(4, len(HEADERS)))
ROWS = [
    ["14a3796e", "qa_v1.2.0_llama-3-70b-instruct", "finished", "Dec 07 14:03", "0.7", "0.6", "0.000533", "812.5",
     "0.74", "0.65"],
    ["048d0662", "qa_v1.2.0_gpt-4o", "running", "Dec 07 14:05", "0.9", "0.8", "0.000612", "640", "0.94", "0.85"],
]  # fmt: skip


def _lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line]


def _headers(out: str) -> list[str]:
    return [h.strip() for h in _lines(out)[0].split("┃")]


def test_at_80_columns_metric_columns_are_dropped_whole_and_nothing_essential_is_cut():
    layout = fit(HEADERS, ROWS, 80, KEEP, OPTIONAL)
    assert layout.total <= 80
    assert layout.shown[:4] == (0, 1, 2, 3)
    # whole columns go, least relevant first, and are reported most relevant first
    assert layout.hidden == tuple(OPTIONAL[len(layout.shown) - 4 :])
    assert 4 in layout.shown  # the first score still fits
    widths = dict(zip(layout.shown, layout.widths, strict=True))
    assert widths[2] >= len("finished") and widths[3] >= len("Dec 07 14:03") and widths[0] >= 8
    assert len(set(layout.headers)) == len(layout.headers)


def test_at_200_columns_everything_is_shown_as_is():
    layout = fit(HEADERS, ROWS, 200, KEEP, OPTIONAL)
    assert layout.shown == tuple(range(len(HEADERS))) and layout.hidden == ()
    assert layout.headers == tuple(HEADERS)
    assert layout.total <= 200


def test_piped_without_width_nothing_is_cut_or_dropped():
    wide = [*ROWS, ["0000abcd", "x" * 300, "finished", "Dec 07 14:06", "1", "1", "1", "1", "1", "1"]]
    layout = fit(HEADERS, wide, None, KEEP, OPTIONAL)
    assert layout.hidden == () and layout.headers == tuple(HEADERS) and layout.widths[1] == 300


@pytest.mark.parametrize("width", range(4, 20))
def test_a_short_header_never_reads_as_another_column(width):
    names = [
        "exact_match_ci_high", "exact_match_ci_low", "faithfulness_ci_high", "faithfulness_ci_low", "exact_match",
        "latency_p50_ms", "latency_p95_ms", "cost_per_query", "cost_total",
    ]  # fmt: skip
    rendered, widths = abbreviate(names, [width] * len(names))
    assert len(set(rendered)) == len(names), rendered
    for name, text, w in zip(names, rendered, widths, strict=True):
        assert len(text) <= w
        if text == name:
            continue
        head, ellipsis, tail = text.partition("…")
        assert ellipsis and name.startswith(head) and name.endswith(tail)
        readable_as = [o for o in names if o != name and o.startswith(head) and o.endswith(tail)]
        assert not readable_as, f"{text!r} reads as {name!r} and {readable_as}"


def test_abbreviations_keep_the_distinguishing_end():
    names = ["exact_match_ci_high", "exact_match_ci_low", "latency_p50_ms", "latency_p95_ms"]
    rendered, _ = abbreviate(names, [12] * 4)
    assert rendered == ["exac…ci_high", "exact…ci_low", "laten…p50_ms", "laten…p95_ms"]
    # a single word keeps its start; names that differ only at the start keep that
    assert abbreviate(["description"], [8])[0] == ["descrip…"]
    first, second = abbreviate(["Xaaaaaaaaaaaaaaaaa", "Yaaaaaaaaaaaaaaaaa"], [8, 8])[0]
    assert first != second and first.startswith("X") and second.startswith("Y")


def test_names_that_cannot_differ_at_their_width_widen_their_columns():
    names = ["abcdefghijklmnopXqrstuvwxyz", "abcdefghijklmnopYqrstuvwxyz"]
    rendered, widths = abbreviate(names, [8, 8])
    assert rendered[0] != rendered[1] and widths[0] > 8
    assert all(len(text) <= width for text, width in zip(rendered, widths, strict=True))


def _render(monkeypatch, capsys, columns: int | None, *args, **kwargs) -> tuple[str, list[str]]:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", str(columns))
    hidden = table(*args, **kwargs)
    return capsys.readouterr().out, hidden


def test_table_at_80_columns(monkeypatch, capsys):
    out, hidden = _render(monkeypatch, capsys, 80, HEADERS, ROWS, keep=KEEP, optional=OPTIONAL, right=OPTIONAL)
    assert all(len(line) <= 80 for line in _lines(out)), out
    assert "finished" in out and "running" in out and "Dec 07 14:03" in out and "14a3796e" in out
    assert "finis…" not in out and "Dec 07 1…" not in out
    headers = _headers(out)
    assert len(set(headers)) == len(headers) and headers[:4] == ["id", "name", "status", "start"]
    assert hidden and hidden == HEADERS[4 + len(headers) - 4 :]
    assert "exact_match_ci_high" in hidden and "exact_match_ci_low" in hidden


def test_table_at_200_columns(monkeypatch, capsys):
    out, hidden = _render(monkeypatch, capsys, 200, HEADERS, ROWS, keep=KEEP, optional=OPTIONAL, right=OPTIONAL)
    assert hidden == []
    assert _headers(out) == HEADERS
    assert "…" not in out and "qa_v1.2.0_llama-3-70b-instruct" in out
    assert all(len(line) <= 200 for line in _lines(out))
    # metrics are right-aligned under their headers
    row = next(line for line in _lines(out) if line.startswith("048d0662"))
    cells = [c for c in row.split("│")]
    assert cells[4] == f" {'0.9':>{len('exact_match')}} "


def test_narrow_table_with_only_ci_columns_shows_distinct_headers(monkeypatch, capsys):
    headers = ["id", "exact_match_ci_high", "exact_match_ci_low", "faithfulness_ci_high", "faithfulness_ci_low"]
    rows = [["14a3796e", "0.74", "0.65", "0.64", "0.55"]]
    out, hidden = _render(monkeypatch, capsys, 56, headers, rows)
    shown = _headers(out)
    assert hidden == [] and len(shown) == 5 and len(set(shown)) == 5
    assert all(len(line) <= 56 for line in _lines(out)), out
    assert [h.endswith("high") for h in shown[1:]] == [True, False, True, False]
    assert [h.endswith("low") for h in shown[1:]] == [False, True, False, True]
    assert all("…" in h for h in shown[1:])


def test_other_tables_keep_their_columns_and_times(monkeypatch, capsys):
    """A list without optional columns keeps them all; its identity and time columns stay whole."""
    rows = [["rag-eval-project", 3, "2026-12-07 14:26", "a very long description " * 5]]
    out, hidden = _render(monkeypatch, capsys, 60, ["project", "runs", "created", "description"], rows)
    assert hidden == [] and _headers(out) == ["project", "runs", "created", "description"]
    assert "rag-eval-project" in out and "2026-12-07 14:26" in out
    assert all(len(line) <= 60 for line in _lines(out))
    assert re.search(r"a very long d\w*…", out)


def test_piped_tables_are_printed_whole(monkeypatch, capsys):
    rows = [["p", 1, "2026-12-07 14:26", "word " * 100]]
    out, _ = _render(monkeypatch, capsys, None, ["project", "runs", "created", "description"], rows)
    assert "…" not in out and ("word " * 100).strip() in out


def test_output_width(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "123")
    assert output_width() == 123  # COLUMNS wins, piped or not
    monkeypatch.delenv("COLUMNS")
    assert output_width() is None  # stdout is captured here: not a terminal


def test_a_long_title_is_printed_whole_above_a_narrow_table(monkeypatch, capsys):
    title = "mean [95% CI]  delta vs baseline  (* significant, Holm-corrected)"
    out, _ = _render(monkeypatch, capsys, 100, ["metric", "a"], [["acc", 0.5]], title=title)
    assert _lines(out)[0].strip() == title


# -- piped tables are drawn without rich: the same characters -----------------------------
_ASCII = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    headers=st.lists(st.text(alphabet="abcdefgh_.", min_size=1, max_size=24), min_size=1, max_size=7, unique=True),
    data=st.data(),
)
def test_tables_are_what_rich_prints(monkeypatch, headers, data):
    """plain_table (no rich import: ~30 ms of start-up) writes what rich_table writes, piped
    (no escape codes) and on a terminal (bold headers, bold yellow highlighted rows, italic
    long titles), whatever the widths, cuts, drops, alignment and title."""
    import io

    from rich.console import Console

    from keel.cli import render

    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    rows = data.draw(st.lists(st.lists(_ASCII, min_size=len(headers), max_size=len(headers)), max_size=4))
    columns = data.draw(st.none() | st.integers(min_value=10, max_value=120))
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", str(columns))
    title = data.draw(st.none() | _ASCII.filter(bool) | st.text(alphabet="xy ", min_size=60, max_size=90))
    right = data.draw(st.sets(st.integers(min_value=0, max_value=len(headers) - 1)))
    optional = data.draw(st.permutations(range(1, len(headers))))[: data.draw(st.integers(0, len(headers)))]
    highlight = data.draw(st.sets(st.integers(min_value=0, max_value=3)))
    terminal = data.draw(st.sampled_from([None, "standard", "256", "truecolor"]))
    layout = fit(headers, rows, render.output_width(), {0}, optional)
    width = render.output_width() or render.PIPED_TEXT_WIDTH
    plain = render.plain_table(layout, rows, title, right, width, highlight, ansi=terminal is not None)
    out = io.StringIO()
    kind: dict = {"force_terminal": True, "color_system": terminal} if terminal else {}
    monkeypatch.setattr(render, "_console", Console(file=out, highlight=False, soft_wrap=False, **kind))
    render.rich_table(layout, rows, title, highlight, right)
    fits = title is None or len(title) <= max(width, layout.total)  # else rich wraps it at the console's width
    if title is None or (title == title.strip() and "  " not in title and fits):
        assert plain == out.getvalue()
    else:  # rich wraps such a title as words: rich draws the table
        assert plain is None


def test_anything_but_printable_ascii_is_left_to_rich(monkeypatch, capsys):
    from keel.cli import render

    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    for rows in ([["Zoë", "1"]], [["tab\there", "2"]], [["two\nlines", "3"]], [["宽字符", "4"]]):
        layout = fit(["name", "value"], rows, None, {0})
        assert render.plain_table(layout, rows, None, (), 200) is None  # rich measures, expands, splits them
        table(["name", "value"], rows)
        drawn = capsys.readouterr().out
        render.rich_table(layout, rows, None, None, ())
        assert drawn == capsys.readouterr().out
