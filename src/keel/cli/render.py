"""Rendering for the CLI: rich tables for people, ``--json`` for programs."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
from collections.abc import Collection, Iterable, Sequence
from typing import Any, NamedTuple

__all__ = [
    "Layout",
    "abbreviate",
    "cell_len",
    "console",
    "fit",
    "fmt",
    "key_values",
    "output_width",
    "plain_table",
    "print_json",
    "rich_table",
    "table",
]

_console: Any = None
PIPED_TEXT_WIDTH = 200  # where piped text (not tables: they are printed whole) wraps


def console() -> Any:
    """The shared rich console (created on first use), as wide as :func:`output_width`."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(highlight=False, soft_wrap=False)
    # Piped text is not cut at 80 columns: it is read by tools, not folded by a terminal.
    _console.width = output_width() or PIPED_TEXT_WIDTH
    return _console


def _default(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(value)
    return str(value)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def print_json(value: Any) -> None:
    """Write ``value`` as JSON on stdout (NaN/inf as strings, so it stays valid JSON)."""
    text = json.dumps(_json_safe(json.loads(json.dumps(value, default=_default))), indent=2, sort_keys=False)
    sys.stdout.write(text + "\n")


def fmt(value: Any) -> str:
    """A compact human form of a param/metric value."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.6g}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def output_width() -> int | None:
    """How many columns tables must fit in, or None to print them whole.

    ``COLUMNS`` wins when set (also when piped, so ``COLUMNS=80 keel runs list | less``
    fits 80 columns); else a terminal's own width. Piped output with no ``COLUMNS`` is
    read by tools, so it is never cut: None.
    """
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def cell_len(text: str) -> int:
    """How many terminal cells ``text`` takes (rich's measure); printable ASCII without
    importing rich: one cell a character."""
    if _PLAIN.fullmatch(text):
        return len(text)
    from rich.cells import cell_len as measure

    return measure(text)


class Layout(NamedTuple):  # not a dataclass: making one costs ~0.5 ms of every command's start-up
    """Where a table's columns go: which are shown (indices), their headers and widths,
    and which were dropped to fit (indices, most relevant first)."""

    shown: tuple[int, ...]
    headers: tuple[str, ...]
    widths: tuple[int, ...]
    hidden: tuple[int, ...] = ()

    @property
    def total(self) -> int:
        """The printed width: the columns plus the ``" │ "`` between them."""
        return sum(self.widths) + GAP * max(0, len(self.widths) - 1)


GAP = 3  # " │ " between two columns (no outer edge)
HEADER_MIN = 8  # a header is abbreviated to no fewer cells than this (or its values' width)
SOFT_CELL = 20  # wide values are cut to this before a droppable column is dropped
HARD_CELL = 10  # ... and to this after: statuses and short names survive whole
_ELLIPSIS = "…"
_SEPARATORS = "_.-/: "
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}(:\d{2})?)?$")
_PLAIN = re.compile(r"[ -~]*")  # printable ASCII: one cell each, nothing rich would change


def fit(
    headers: Sequence[str],
    cells: Sequence[Sequence[str]],
    width: int | None,
    keep: Collection[int] = (),
    optional: Sequence[int] = (),
) -> Layout:
    """Lay a table out in ``width`` cells (None: as wide as its content).

    What gives way, in order, until it fits: long headers are abbreviated (never below
    their values or :data:`HEADER_MIN`); wide values are cut to :data:`SOFT_CELL`; the
    ``optional`` columns are dropped whole, last first; wide values are cut to
    :data:`HARD_CELL`. Columns in ``keep`` never have a value cut. When even that does
    not fit, the table is wider than ``width`` rather than cut further.

    Args:
        headers: the column headers (distinct).
        cells: the rows, as text.
        width: the cells available, or None.
        keep: indices of columns whose values are never cut (ids, statuses, times).
        optional: indices of columns that may be dropped, most relevant first.

    Example:
        >>> layout = fit(["name", "exact_match_ci_low", "exact_match_ci_high"], [["a", "0.7", "0.9"]], 34)
        >>> layout.headers
        ('name', 'exact…ci_low', 'exac…ci_high')
    """
    values = [max((cell_len(row[i]) for row in cells), default=0) for i in range(len(headers))]
    natural = [max(cell_len(h), v) for h, v in zip(headers, values, strict=True)]

    def floors(cut: int | None) -> list[int]:
        out = []
        for i, header in enumerate(headers):
            value = values[i] if cut is None or i in keep else min(values[i], cut)
            out.append(max(value, min(cell_len(header), HEADER_MIN)))
        return out

    shown = list(range(len(headers)))
    dropped: list[int] = []
    widths = natural
    if width is not None:
        droppable = [i for i in optional if i in shown]
        while True:
            widths = _squeeze(shown, natural, floors(None), width)
            if _total(shown, widths) <= width:
                break
            widths = _squeeze(shown, natural, floors(SOFT_CELL), width)
            if _total(shown, widths) <= width or not droppable:
                if _total(shown, widths) > width:
                    widths = _squeeze(shown, natural, floors(HARD_CELL), width)
                break
            last = droppable.pop()
            shown.remove(last)
            dropped.insert(0, last)
    rendered, final = abbreviate([headers[i] for i in shown], [widths[i] for i in shown])
    return Layout(tuple(shown), tuple(rendered), tuple(final), tuple(dropped))


def _total(shown: Sequence[int], widths: Sequence[int]) -> int:
    return sum(widths[i] for i in shown) + GAP * max(0, len(shown) - 1)


def _squeeze(shown: Sequence[int], natural: Sequence[int], floor: Sequence[int], width: int) -> list[int]:
    """Widths where every column wider than some level is brought down to it (never below
    its floor), at the highest level that fits; the floors when none does."""

    def at(level: int) -> list[int]:
        return [max(floor[i], min(natural[i], level)) for i in range(len(natural))]

    low, high = 0, max(natural, default=0)
    if _total(shown, at(high)) <= width:
        return at(high)
    while low < high:  # the highest level that fits
        middle = (low + high + 1) // 2
        if _total(shown, at(middle)) <= width:
            low = middle
        else:
            high = middle - 1
    return at(low)


def abbreviate(names: Sequence[str], widths: Sequence[int]) -> tuple[list[str], list[int]]:
    """Each name cut to its width with an ellipsis, never readable as another of the names.

    A name made of parts (``exact_match_ci_high``) keeps its last parts (``exac…ci_high``);
    a single word keeps its start (``descript…``). A short form that another name could
    also be cut to (``exact_m…`` beside ``exact_match_ci_low``) keeps more of the end where
    they differ (``exa…high``), or of the start; if neither fits, its column widens.
    Returns the short forms and the widths (a widened column's new width).
    """
    widths = list(widths)
    out = []
    for i, name in enumerate(names):
        short = _shorten(name, widths[i])
        while others := _readable_as(short, name, names):
            short = _distinct(name, widths[i], others)
            if _readable_as(short, name, names):  # still: widen (each turn ends or widens)
                widths[i] += 1
                short = _shorten(name, widths[i])
        out.append(short)
    return out, widths


def _readable_as(short: str, name: str, names: Sequence[str]) -> list[str]:
    """The other names that ``short`` (``name`` cut around an ellipsis) could also stand for."""
    if short == name or _ELLIPSIS not in short:
        return []
    head, _, tail = short.partition(_ELLIPSIS)
    room = len(head) + len(tail)
    return [o for o in names if o != name and len(o) > room and o.startswith(head) and o.endswith(tail)]


def _head(text: str, cells: int) -> str:
    out = ""
    for char in text:
        if cell_len(out + char) > cells:
            break
        out += char
    return out


def _tail(text: str, cells: int) -> str:
    return _head(text[::-1], cells)[::-1]


def _cut(name: str, width: int, keep_end: int) -> str:
    """``name``'s start and its last ``keep_end`` characters around an ellipsis, ``width`` cells."""
    end = _tail(name, min(keep_end, max(0, width - 1)))
    return _head(name, width - 1 - cell_len(end)) + _ELLIPSIS + end


def _shorten(name: str, width: int) -> str:
    """``name`` in ``width`` cells, on its own (see :func:`abbreviate`)."""
    if cell_len(name) <= width:
        return name
    if width <= 1:
        return _ELLIPSIS[:width]
    # The longest run of whole last parts that leaves at least 4 characters of the start;
    # else (a single word, or too little room) the start alone.
    ends = [len(name) - i - 1 for i, c in enumerate(name) if c in _SEPARATORS and 0 < i < len(name) - 1]
    fitting = [e for e in ends if width - 1 - e >= 4]
    return _cut(name, width, max(fitting, default=0))


def _distinct(name: str, width: int, others: Sequence[str]) -> str:
    """``name`` cut to ``width``, keeping enough of its end (or else of its start) to
    differ from ``others``."""
    end = 1
    while end < len(name) and any(o.endswith(name[-end:]) for o in others):
        end += 1
    while end < len(name) and name[-end - 1] not in _SEPARATORS:  # to the start of that part
        end += 1
    end = max(end, _end_kept(_shorten(name, width), name))
    if end > width - 2:  # the end does not fit beside a start: a differing start may
        start = 1
        while start < len(name) and any(o.startswith(name[:start]) for o in others):
            start += 1
        if start <= width - 1:
            return _cut(name, width, 0)
    return _cut(name, width, end)


def _end_kept(short: str, name: str) -> int:
    """How many characters of ``name``'s end its short form ``short`` keeps."""
    return len(short) - short.index(_ELLIPSIS) - 1 if _ELLIPSIS in short and short != name else 0


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    title: str | None = None,
    highlight_rows: set[int] | None = None,
    *,
    keep: Collection[int] | None = None,
    optional: Sequence[int] = (),
    right: Collection[int] = (),
) -> list[str]:
    """Print a table that fits the terminal (see :func:`output_width` and :func:`fit`).

    Rows in ``highlight_rows`` are emphasised. ``keep`` are the columns whose values are
    never cut (default: the first, the row's identity; columns of times are always kept);
    ``optional`` the columns that may be dropped to fit, most relevant first; ``right`` the
    right-aligned ones (numbers). Returns the headers of the columns dropped to fit.
    """
    headers = list(columns)
    cells = [[fmt(v) for v in row] for row in rows]
    kept = set(range(1) if keep is None else keep)
    kept.update(i for i in range(len(headers)) if _times(cells, i))
    layout = fit(headers, cells, output_width(), kept, optional)
    codes = _escape_codes()
    plain = None
    if codes is not None:
        width = output_width() or PIPED_TEXT_WIDTH
        plain = plain_table(layout, cells, title, right, width, highlight_rows or (), ansi=codes)
    if plain is None:
        rich_table(layout, cells, title, highlight_rows, right)
    else:
        sys.stdout.write(plain)
    return [headers[i] for i in layout.hidden]


def rich_table(
    layout: Layout,
    cells: Sequence[Sequence[str]],
    title: str | None,
    highlight_rows: set[int] | None,
    right: Collection[int],
) -> None:
    """Print a laid-out table with rich (bold headers, highlighted rows) on the shared console."""
    from rich.table import Table
    from rich.text import Text

    out = Table(show_edge=False, header_style="bold", pad_edge=False)
    for i, header, width in zip(layout.shown, layout.headers, layout.widths, strict=True):
        out.add_column(
            Text(header), width=width, no_wrap=True, overflow="ellipsis", justify="right" if i in right else "left"
        )
    for n, row in enumerate(cells):
        style = "bold yellow" if highlight_rows and n in highlight_rows else None
        out.add_row(*(Text(row[i]) for i in layout.shown), style=style)
    shared = console()
    if title:
        # A title wider than the table would wrap into a column of fragments: print it whole.
        if len(title) > layout.total:
            shared.print(Text(title, style="italic"))
        else:
            out.title = Text(title)
    saved = shared.width
    shared.width = max(saved, layout.total)  # the layout decided the width; rich must not squeeze it again
    try:
        shared.print(out)
    finally:
        shared.width = saved


def _escape_codes() -> bool | None:
    """Whether rich would write escape codes to stdout: False (piped), True (a terminal that
    takes them), None when it is rich's to decide (``NO_COLOR``, a dumb terminal, Windows).

    rich's own tests: ``Console.is_terminal`` (``TTY_COMPATIBLE``, then ``FORCE_COLOR``, then
    whether stdout is a terminal) and ``_detect_color_system`` (no codes for ``TERM=dumb``)."""
    compatible = os.environ.get("TTY_COMPATIBLE", "")
    force = os.environ.get("FORCE_COLOR")
    if compatible in ("0", "1"):
        terminal = compatible == "1"
    elif force is not None:
        terminal = force != ""
    else:
        try:
            terminal = sys.stdout.isatty()
        except ValueError:
            terminal = False
    if not terminal:
        return False
    if "NO_COLOR" in os.environ or sys.platform == "win32":
        return None
    if os.environ.get("TERM", "").lower() in ("dumb", "unknown"):
        return None
    return True


def plain_table(
    layout: Layout,
    cells: Sequence[Sequence[str]],
    title: str | None,
    right: Collection[int],
    width: int,
    highlight_rows: Collection[int] = (),
    ansi: bool = False,
) -> str | None:
    """The text rich prints for :func:`table`, without importing rich (~30 ms of a command's
    start-up); None when a header, cell or the title holds anything but printable ASCII
    (rich measures, strips and splits those itself).

    As rich draws it: ``┃`` between headers, ``━``/``╇`` under them, ``│`` between cells, one
    space of padding inside the separators and none at the table's edges; a value wider than
    its column cut to ``width - 1`` characters and ``…``; the title centred over the table
    (printed on its own, as long as it is, when it is wider than the table). ``ansi``: with
    the escape codes rich writes to a terminal (bold headers, bold yellow ``highlight_rows``,
    an italic title above the table), each cell and padding coded on its own, as rich does.
    """
    texts = [*layout.headers, *(row[i] for row in cells for i in layout.shown), title or ""]
    if not layout.shown or not all(_PLAIN.fullmatch(t.replace(_ELLIPSIS, "")) for t in texts):
        return None
    if title and (title != title.strip() or "  " in title):  # rich wraps a title as words
        return None
    last = len(layout.shown) - 1

    def coded(text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if code and ansi else text

    def line(values: Sequence[str], bar: str, code: str) -> str:
        parts = []
        for n, (i, value, w) in enumerate(zip(layout.shown, values, layout.widths, strict=True)):
            if i in right:  # rich strips a right-justified value's end before cutting it
                value = value.rstrip()
            if len(value) > w:
                value = value[: max(0, w - 1)] + _ELLIPSIS if w > 0 else ""
            value = value.rjust(w) if i in right else value.ljust(w)
            pad = coded(" ", code)
            parts.append(("" if n == 0 else pad) + coded(value, code) + ("" if n == last else pad))
        return bar.join(parts)

    out = []
    if title:
        if len(title) > layout.total:
            if len(title) > width:  # rich would wrap it at the console's width
                return None
            out.append(coded(title, "3"))
        else:
            left = (layout.total - len(title)) // 2
            out.append(" " * left + title + " " * (layout.total - len(title) - left))
    out.append(line(layout.headers, "┃", "1"))
    rule = ["━" * (w + (n > 0) + (n < last)) for n, w in enumerate(layout.widths)]
    out.append("╇".join(rule))
    out.extend(
        line([row[i] for i in layout.shown], "│", "1;33" if n in highlight_rows else "") for n, row in enumerate(cells)
    )
    return "\n".join(out) + "\n"


def _times(cells: Sequence[Sequence[str]], column: int) -> bool:
    values = [row[column] for row in cells if row[column]]
    return bool(values) and all(_TIME.match(v) for v in values)


def key_values(items: list[str] | None, what: str) -> dict[str, str]:
    """``["k=v", ...]`` from a repeatable option -> ``{k: v}`` (values as written)."""
    from keel.errors import InvalidInput

    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"invalid {what} {item!r}", f"write {what}s as key=value")
        out[key.strip()] = value
    return out
