"""Charts as inline SVG, drawn on the server: no JavaScript library, nothing to download.

Pure functions from numbers to SVG markup (:class:`markupsafe.Markup`, ready for a
template); every label is escaped. Non-finite values (NaN, infinities) are left out.

- :func:`line_chart`: one or more series over steps (metrics of a run, of several runs).
- :func:`scatter_chart`: quality against cost, the Pareto front highlighted and joined.
- :func:`bar_chart`: one bar per variant with its confidence interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

__all__ = ["PALETTE", "Bar", "Point", "Series", "bar_chart", "downsample", "line_chart", "nice_ticks", "scatter_chart"]

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#db2777", "#65a30d")
MAX_POINTS = 600  # per drawn series: more cannot be seen at this width, and would only weigh the page
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 58, 14, 26, 40


@dataclass(frozen=True)
class Series:
    """A named line: ``xs`` (steps) and ``ys`` of equal length."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float]


@dataclass(frozen=True)
class Point:
    """A labelled point of a scatter chart; ``highlight`` marks it (e.g. on the Pareto front)."""

    label: str
    x: float
    y: float
    highlight: bool = False


@dataclass(frozen=True)
class Bar:
    """One bar: a value and, optionally, its confidence interval ``low``..``high``."""

    label: str
    value: float
    low: float | None = None
    high: float | None = None
    highlight: bool = False


def _finite(*values: float | None) -> bool:
    return all(v is not None and isinstance(v, int | float) and math.isfinite(v) for v in values)


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e5 or magnitude < 1e-3:
        return f"{value:.2g}"
    return f"{value:.4g}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``low``..``high`` (1, 2, 5 times a power of ten)."""
    if not _finite(low, high):
        return []
    if high < low:
        low, high = high, low
    if high == low:
        spread = abs(low) * 0.1 or 1.0
        low, high = low - spread, high + spread
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks and ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def downsample(xs: Sequence[float], ys: Sequence[float], limit: int = MAX_POINTS) -> tuple[list[float], list[float]]:
    """At most about ``limit`` points, keeping each bucket's lowest and highest value (so spikes
    stay visible), the first and the last point. Non-finite points are dropped."""
    pairs = [(float(x), float(y)) for x, y in zip(xs, ys, strict=False) if _finite(x, y)]
    if len(pairs) <= limit:
        return [p[0] for p in pairs], [p[1] for p in pairs]
    size = math.ceil(len(pairs) / (limit // 2))
    kept: list[tuple[float, float]] = []
    for start in range(0, len(pairs), size):
        bucket = pairs[start : start + size]
        low = min(bucket, key=lambda p: p[1])
        high = max(bucket, key=lambda p: p[1])
        kept.extend(sorted({low, high}))
    if kept[0] != pairs[0]:
        kept.insert(0, pairs[0])
    if kept[-1] != pairs[-1]:
        kept.append(pairs[-1])
    return [p[0] for p in kept], [p[1] for p in kept]


class _Frame:
    """Maps data to pixels inside the padded plot area, and draws axes."""

    def __init__(self, width: int, height: int, x_ticks: list[float], y_ticks: list[float], log_x: bool = False):
        self.width, self.height, self.log_x = width, height, log_x
        self.x_ticks, self.y_ticks = x_ticks, y_ticks
        self.x0, self.x1 = x_ticks[0], x_ticks[-1]
        self.y0, self.y1 = y_ticks[0], y_ticks[-1]

    def px(self, x: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return _PAD_L + (x - self.x0) / span * (self.width - _PAD_L - _PAD_R)

    def py(self, y: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return self.height - _PAD_B - (y - self.y0) / span * (self.height - _PAD_T - _PAD_B)

    def axes(self, x_label: str, y_label: str, x_names: Sequence[str] | None = None) -> list[str]:
        out = []
        bottom, right = self.height - _PAD_B, self.width - _PAD_R
        for tick in self.y_ticks:
            y = self.py(tick)
            out.append(f'<line x1="{_PAD_L}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#e5e7eb"/>')
            out.append(f'<text x="{_PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(tick)}</text>')
        if x_names is None:
            for tick in self.x_ticks:
                x = self.px(tick)
                label = _fmt(10**tick) if self.log_x else _fmt(tick)
                out.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#9ca3af"/>')
                out.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{label}</text>')
        out.append(f'<path d="M{_PAD_L},{_PAD_T} V{bottom} H{right}" fill="none" stroke="#9ca3af"/>')
        out.append(
            f'<text x="{(_PAD_L + right) / 2:.1f}" y="{self.height - 6}" text-anchor="middle">{escape(x_label)}</text>'
        )
        out.append(
            f'<text x="12" y="{(_PAD_T + bottom) / 2:.1f}" text-anchor="middle" '
            f'transform="rotate(-90 12 {(_PAD_T + bottom) / 2:.1f})">{escape(y_label)}</text>'
        )
        return out


def _svg(width: int, height: int, title: str, body: list[str]) -> Markup:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart-svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}" '
        f'font-family="system-ui, sans-serif" font-size="11" fill="#374151">'
    )
    heading = f'<text x="{_PAD_L}" y="16" font-size="13" font-weight="600">{escape(title)}</text>' if title else ""
    return Markup(head + f"<title>{escape(title)}</title>" + heading + "".join(body) + "</svg>")


def _empty(width: int, height: int, title: str, why: str) -> Markup:
    note = f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#9ca3af">{escape(why)}</text>'
    return _svg(width, height, title, [note])


def _legend(labels: Sequence[str], width: int) -> list[str]:
    out: list[str] = []
    x = float(_PAD_L)
    for i, label in enumerate(labels):
        text = label if len(label) <= 28 else label[:27] + "…"
        color = PALETTE[i % len(PALETTE)]
        out.append(f'<rect x="{x}" y="{_PAD_T - 8}" width="10" height="3" fill="{color}"/>')
        out.append(f'<text x="{x + 14}" y="{_PAD_T - 3}">{escape(text)}</text>')
        x += 24 + 6.5 * len(text)
        if x > width - 60:
            break
    return out


def line_chart(
    series: Sequence[Series],
    *,
    title: str = "",
    x_label: str = "step",
    y_label: str = "",
    width: int = 560,
    height: int = 260,
) -> Markup:
    """Lines of several series over a shared x axis (a metric's history per run or per key).

    Each series is thinned to :data:`MAX_POINTS` with :func:`downsample`; a series of one
    point is drawn as a dot. With several series, a legend names them.
    """
    drawn = [(s.label, *downsample(s.xs, s.ys)) for s in series]
    drawn = [d for d in drawn if d[1]]
    if not drawn:
        return _empty(width, height, title, "no values")
    all_x = [x for _label, xs, _ys in drawn for x in xs]
    all_y = [y for _label, _xs, ys in drawn for y in ys]
    frame = _Frame(width, height, nice_ticks(min(all_x), max(all_x), 6), nice_ticks(min(all_y), max(all_y), 5))
    body = frame.axes(x_label, y_label)
    for i, (label, xs, ys) in enumerate(drawn):
        color = PALETTE[i % len(PALETTE)]
        if len(xs) == 1:
            body.append(
                f'<circle cx="{frame.px(xs[0]):.1f}" cy="{frame.py(ys[0]):.1f}" r="3" fill="{color}">'
                f"<title>{escape(label)}: {_fmt(ys[0])} at {_fmt(xs[0])}</title></circle>"
            )
            continue
        points = " L".join(f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in zip(xs, ys, strict=True))
        body.append(
            f'<path d="M{points}" fill="none" stroke="{color}" stroke-width="1.6" stroke-linejoin="round">'
            f"<title>{escape(label)}: last {_fmt(ys[-1])} at {_fmt(xs[-1])}</title></path>"
        )
    if len(drawn) > 1:
        body.extend(_legend([d[0] for d in drawn], width))
    return _svg(width, height, title, body)


def scatter_chart(
    points: Sequence[Point],
    *,
    title: str = "",
    x_label: str = "",
    y_label: str = "",
    log_x: bool = False,
    width: int = 560,
    height: int = 300,
    front_label: str = "Pareto front",
) -> Markup:
    """Labelled points; highlighted ones (the Pareto front) are filled and joined by a dashed path.

    ``log_x`` draws x on a log scale with ticks at powers of ten (costs spanning orders of
    magnitude); it is ignored when some x is not positive or the values span under a decade.
    """
    kept = [p for p in points if _finite(p.x, p.y)]
    if not kept:
        return _empty(width, height, title, "no runs with both values")
    if log_x and all(p.x > 0 for p in kept):
        exponents = [math.log10(p.x) for p in kept]
        log_x = max(exponents) - min(exponents) >= 1  # under a decade a log axis only confuses
    else:
        log_x = False
    xs = [math.log10(p.x) if log_x else p.x for p in kept]
    x_ticks = (
        [float(e) for e in range(math.floor(min(xs)), math.ceil(max(xs)) + 1)]
        if log_x
        else nice_ticks(min(xs), max(xs), 5)
    )
    ys = [p.y for p in kept]
    frame = _Frame(width, height, x_ticks, nice_ticks(min(ys), max(ys), 5), log_x)
    body = frame.axes(x_label, y_label)
    front = sorted((x, p.y) for x, p in zip(xs, kept, strict=True) if p.highlight)
    if len(front) > 1:
        d = " L".join(f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in front)
        body.append(f'<path d="M{d}" fill="none" stroke="{PALETTE[1]}" stroke-width="1.4" stroke-dasharray="5 4"/>')
    for x, point in zip(xs, kept, strict=True):
        cx, cy = frame.px(x), frame.py(point.y)
        fill, stroke = (PALETTE[1], PALETTE[1]) if point.highlight else ("#fff", PALETTE[0])
        tip = f"{escape(point.label)}: {escape(y_label)} {_fmt(point.y)}, {escape(x_label)} {_fmt(point.x)}"
        body.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{fill}" stroke="{stroke}" stroke-width="1.6">'
            f"<title>{tip}</title></circle>"
        )
        label = point.label if len(point.label) <= 24 else point.label[:23] + "…"
        if cx > width * 0.6:  # keep labels of points on the right inside the chart
            body.append(f'<text x="{cx - 7:.1f}" y="{cy - 7:.1f}" text-anchor="end">{escape(label)}</text>')
        else:
            body.append(f'<text x="{cx + 7:.1f}" y="{cy - 7:.1f}">{escape(label)}</text>')
    if any(p.highlight for p in kept):
        body.append(f'<circle cx="{width - 110}" cy="{_PAD_T - 10}" r="4" fill="{PALETTE[1]}"/>')
        body.append(f'<text x="{width - 102}" y="{_PAD_T - 6}">{escape(front_label)}</text>')
    return _svg(width, height, title, body)


def bar_chart(
    bars: Sequence[Bar],
    *,
    title: str = "",
    y_label: str = "",
    width: int = 560,
    height: int = 260,
) -> Markup:
    """One bar per variant, with its confidence interval as a whisker; highlighted bars (e.g.
    the winner, or the significant ones) are drawn in the accent colour."""
    kept = [b for b in bars if _finite(b.value)]
    if not kept:
        return _empty(width, height, title, "no results yet")
    values = [b.value for b in kept] + [v for b in kept for v in (b.low, b.high) if v is not None and _finite(v)]
    low, high = min(0.0, *values), max(0.0, *values)
    frame = _Frame(width, height, [0.0, float(len(kept))], nice_ticks(low, high, 5))
    body = frame.axes("", y_label, x_names=[b.label for b in kept])
    slot = (width - _PAD_L - _PAD_R) / len(kept)
    zero = frame.py(0.0)
    for i, bar in enumerate(kept):
        left = _PAD_L + i * slot + slot * 0.2
        top = min(frame.py(bar.value), zero)
        color = PALETTE[1] if bar.highlight else PALETTE[0]
        body.append(
            f'<rect x="{left:.1f}" y="{top:.1f}" width="{slot * 0.6:.1f}" '
            f'height="{abs(zero - frame.py(bar.value)):.1f}" fill="{color}" fill-opacity="0.8">'
            f"<title>{escape(bar.label)}: {_fmt(bar.value)}</title></rect>"
        )
        centre = left + slot * 0.3
        if _finite(bar.low, bar.high):
            assert bar.low is not None and bar.high is not None
            y_lo, y_hi = frame.py(bar.low), frame.py(bar.high)
            body.append(
                f'<path d="M{centre:.1f},{y_lo:.1f} V{y_hi:.1f} M{centre - 6:.1f},{y_lo:.1f} h12 '
                f'M{centre - 6:.1f},{y_hi:.1f} h12" stroke="#111827" stroke-width="1.3" fill="none">'
                f"<title>{escape(bar.label)}: {_fmt(bar.low)} to {_fmt(bar.high)}</title></path>"
            )
        label = bar.label if len(bar.label) <= 18 else bar.label[:17] + "…"
        body.append(f'<text x="{centre:.1f}" y="{height - _PAD_B + 16}" text-anchor="middle">{escape(label)}</text>')
    return _svg(width, height, title, body)
