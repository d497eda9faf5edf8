"""Plain SVG chart primitives for the html report (#16): no library, no script.

Why hand-written: the page must open offline, without JavaScript, and weigh
little; the charts are five simple shapes (a heat map, stacked bars, lines
with marked spans, box plots, horizontal bars) that take less code here
than any plotting library's set-up, and add no dependency to gpm.

Every chart is an ``<svg role="img">`` with a ``<title>`` and a ``<desc>``,
a ``viewBox`` and ``width="100%"`` (it scales to the page), axes with their
unit and a legend. Colours are CSS classes (``f0``..``f7`` fill, ``l0``..
``l7`` stroke, ``fg``, ``grid``, ``gap``, ``out``) that the page's style
sheet gives light and dark values. Every text is escaped and made visible
here, so callers pass plain strings.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Callable, Sequence

from gpm.humanize import visible

WIDTH = 720
COLOURS = 8
LEFT, RIGHT, TOP = 64, 16, 12
ROW = 14  # legend and heat-map row height
TITLE = 24  # the title's band above the chart


def esc(text: object) -> str:
    """``text`` for HTML or SVG: outside strings made visible, then escaped."""
    return html.escape(visible(str(text)), quote=True)


def nice_top(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above ``value`` (1 for nothing)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= value * (1 - 1e-9))


def ticks(top: float) -> int:
    """How many steps divide 0..top into round numbers (5 for 5, 4 for 2, 5 for 2.5)."""
    lead = round(top / 10 ** math.floor(math.log10(top)), 3) if top > 0 else 1
    return 4 if lead == 2 else 5


def _n(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _tip(tip: str | None) -> str:
    return "" if tip is None else f"<title>{esc(tip)}</title>"


def text(x: float, y: float, label: object, anchor: str = "start", cls: str = "fg", extra: str = "",
         tip: str | None = None) -> str:
    return (f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}" class="{cls}"{extra}>'
            f'{esc(label)}{_tip(tip)}</text>')


def rect(x: float, y: float, w: float, h: float, cls: str, extra: str = "", tip: str | None = None) -> str:
    """A rectangle; ``tip`` is its tooltip (an SVG ``<title>``)."""
    shape = f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(max(w, 0))}" height="{_n(max(h, 0))}" class="{cls}"{extra}'
    return shape + ("/>" if tip is None else f">{_tip(tip)}</rect>")


def svg(cid: str, title: str, desc: str, height: float, body: list[str]) -> str:
    """One chart, its title written above it: ``cid`` is unique in the page (ids of
    its title, desc and patterns)."""
    return (f'<svg id="{cid}" class="chart" viewBox="0 0 {WIDTH} {_n(height + TITLE)}" width="100%" '
            f'role="img" aria-labelledby="{cid}-t {cid}-d">'
            f'<title id="{cid}-t">{esc(title)}</title><desc id="{cid}-d">{esc(desc)}</desc>'
            + text(4, 15, title, cls="fg heading") + f'<g transform="translate(0,{TITLE})">'
            + "".join(body) + "</g></svg>")


def legend(items: Sequence[tuple[str, ...]], y: float, x: float = LEFT) -> tuple[list[str], float]:
    """Swatches ``(label, class[, extra attributes])`` in rows from ``(x, y)``;
    (the shapes, the y below them)."""
    out, cx = [], x
    for label, cls, *extra in items:
        width = 18 + 6.5 * len(visible(label))
        if cx + width > WIDTH - RIGHT and cx > x:
            cx, y = x, y + ROW + 2
        out.append(rect(cx, y, 10, 10, cls, "".join(extra)))
        out.append(text(cx + 14, y + 9, label))
        cx += width + 10
    return out, y + ROW + 4


def y_axis(top: float, y0: float, height: float, fmt: Callable[[float], str], unit: str,
           x0: float = LEFT, x1: float = WIDTH - RIGHT) -> list[str]:
    """Grid lines and labels for 0..top over [y0 + height, y0], the unit written above the axis."""
    out = []
    steps = ticks(top)
    for i in range(steps + 1):
        y = y0 + height - height * i / steps
        out.append(f'<line x1="{_n(x0)}" y1="{_n(y)}" x2="{_n(x1)}" y2="{_n(y)}" class="grid"/>')
        out.append(text(x0 - 4, y + 4, fmt(top * i / steps), "end"))
    out.append(text(4, y0 - 8, unit))
    return out


@dataclass(frozen=True)
class Scale:
    """Value -> y in a plot area of ``height`` from ``y0``, 0..top."""

    top: float
    y0: float
    height: float

    def y(self, value: float) -> float:
        return self.y0 + self.height - self.height * min(max(value / self.top, 0.0), 1.0)


def x_axis(top: float, x0: float, width: float, y0: float, y1: float, fmt: Callable[[float], str]) -> list[str]:
    """Vertical grid lines and labels for 0..top over [x0, x0 + width], under y1."""
    out = []
    steps = ticks(top)
    for i in range(steps + 1):
        x = x0 + width * i / steps
        out.append(f'<line x1="{_n(x)}" y1="{_n(y0)}" x2="{_n(x)}" y2="{_n(y1)}" class="grid"/>')
        out.append(text(x, y1 + 12, fmt(top * i / steps), "middle"))
    return out


# ---- heat map -----------------------------------------------------------------

GAP, OUTSIDE = "gap", "outside"


def heatmap(cid: str, title: str, desc: str, blocks: list[tuple[str, list[tuple[str, list]]]],
            columns: int) -> str:
    """Blocks of rows (a GPU: its days), each row ``columns`` cells: a percentage
    (0..100, darker is higher), ``GAP`` (hatched: not sampled, so unknown) or
    ``OUTSIDE`` (blank: not in the range, or before the first sample)."""
    cell = (WIDTH - LEFT - RIGHT - 40) / max(columns, 1)
    body = [f'<defs><pattern id="{cid}-gap" width="6" height="6" patternUnits="userSpaceOnUse">'
            f'<rect width="6" height="6" class="gapbg"/><path d="M0 6L6 0" class="gapline"/></pattern></defs>']
    y = TOP + 14
    for h in range(0, columns, 3):
        body.append(text(LEFT + (h + 0.5) * cell, y - 4, f"{h:02d}", "middle"))
    for name, rows in blocks:
        body.append(text(4, y + 10, name, cls="fg strong"))
        y += ROW
        for label, cells in rows:
            body.append(text(LEFT - 4, y + 10, label, "end"))
            for h, value in enumerate(cells):
                x = LEFT + h * cell
                if value == GAP:
                    body.append(rect(x, y, cell - 1, ROW - 2, "gap", f' fill="url(#{cid}-gap)"'))
                elif value == OUTSIDE or value is None:
                    body.append(rect(x, y, cell - 1, ROW - 2, "out"))
                else:
                    opacity = 0.1 + 0.9 * min(max(float(value), 0.0), 100.0) / 100
                    body.append(rect(x, y, cell - 1, ROW - 2, "heat", f' fill-opacity="{opacity:.2f}"'))
            y += ROW
    y += 4
    body.append(text(LEFT + columns * cell / 2, y + 8, "hour of day (local time)", "middle"))
    y += 16
    items = [(f"{p} %", "heat", f' fill-opacity="{0.1 + 0.9 * p / 100:.2f}"') for p in (0, 25, 50, 75, 100)]
    shapes, y = legend([*items, ("gap: not sampled", "gap", f' fill="url(#{cid}-gap)"'),
                        ("outside the range / before gpm", "out", "")], y)
    return svg(cid, title, desc, y + 4, body + shapes)


# ---- bars ---------------------------------------------------------------------------

def stacked_bars(cid: str, title: str, desc: str, labels: list[str], series: list[tuple[str, list[float]]],
                 totals: list[float | None], fmt: Callable[[float], str], unit: str, x_unit: str,
                 scale_by: float = 1.0) -> str:
    """One bar per label, stacked by series (colour i), its total written above it;
    ``fmt`` writes a value, the axis shows values divided by ``scale_by`` (in ``unit``)."""
    height = 220
    top = scale_by * nice_top(max([t or 0 for t in totals] + [sum(v[i] or 0 for _, v in series)
                                                              for i in range(len(labels))], default=0) / scale_by)
    scale = Scale(top, TOP + 22, height)
    body = y_axis(top / scale_by, scale.y0, height, lambda v: f"{v:g}", unit)
    slot = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    bar = min(slot * 0.7, 60)
    for i, label in enumerate(labels):
        x = LEFT + slot * i + (slot - bar) / 2
        base = 0.0
        for k, (name, values) in enumerate(series):
            v = values[i] or 0
            if v > 0:
                body.append(rect(x, scale.y(base + v), bar, scale.y(base) - scale.y(base + v), f"f{k % COLOURS}",
                                 tip=f"{name}, {label}: {fmt(v)}"))
            base += v
        total = totals[i]
        if total is not None:
            body.append(text(x + bar / 2, scale.y(max(total, base)) - 3, fmt(total), "middle"))
        body.append(text(x + bar / 2, scale.y0 + height + 14, label, "middle"))
    y = scale.y0 + height + 20
    body.append(text(LEFT + (WIDTH - LEFT - RIGHT) / 2, y + 8, x_unit, "middle"))
    shapes, y = legend([(name, f"f{k % COLOURS}") for k, (name, _) in enumerate(series)], y + 14)
    return svg(cid, title, desc, y + 4, body + shapes)


def hbars(cid: str, title: str, desc: str, items: list[tuple[str, float | None]],
          fmt: Callable[[float], str], unit: str, cls: str = "f0") -> str:
    """Horizontal bars, one per labelled value (None: no bar, "unknown")."""
    label_w = 200
    top = nice_top(max([v or 0 for _, v in items], default=0))
    width = WIDTH - label_w - RIGHT - 70
    body, y = x_axis(top, label_w, width, TOP, TOP + len(items) * (ROW + 4), fmt), TOP
    for label, value in items:
        shown = label if len(label) <= 30 else label[:29] + "…"
        body.append(text(label_w - 6, y + 11, shown, "end", tip=label))
        if value is None:
            body.append(text(label_w, y + 11, "unknown"))
        else:
            w = width * min(value / top, 1.0)
            body.append(rect(label_w, y + 1, w, ROW, cls))
            body.append(text(label_w + w + 4, y + 11, fmt(value)))
        y += ROW + 4
    body.append(text(label_w + width / 2, y + 28, unit, "middle"))
    shapes, y = legend([(unit, cls)], y + 36)
    return svg(cid, title, desc, y + 4, body + shapes)


# ---- lines ---------------------------------------------------------------------------

def lines(cid: str, title: str, desc: str, points: int, ticks: list[tuple[int, str]],
          series: list[tuple[str, list[float | None]]], fmt: Callable[[float], str], unit: str,
          x_unit: str, marks: list[tuple[str, list[bool]]] = (), mark_name: str = "") -> str:
    """One line per series over ``points`` x positions (None breaks the line); under the
    plot, one lane per ``marks`` entry with its marked positions filled (e.g. throttled)."""
    height = 200
    top = nice_top(max([v for _, vs in series for v in vs if v is not None], default=0))
    scale = Scale(top, TOP + 22, height)
    body = y_axis(top, scale.y0, height, fmt, unit)
    step = (WIDTH - LEFT - RIGHT) / max(points, 1)

    def x_of(i: int) -> float:
        return LEFT + step * (i + 0.5)

    for k, (name, values) in enumerate(series):
        runs: list[list[str]] = [[]]
        for i, v in enumerate(values):
            if v is None:
                runs.append([])
            else:
                runs[-1].append(f"{_n(x_of(i))},{_n(scale.y(v))}")
        for run in runs:
            if len(run) == 1:
                x, y = run[0].split(",")
                body.append(f'<circle cx="{x}" cy="{y}" r="2" class="f{k % COLOURS}"/>')
            elif run:
                body.append(f'<polyline points="{" ".join(run)}" class="line l{k % COLOURS}">'
                            f'<title>{esc(name)}</title></polyline>')
    y = scale.y0 + height
    for i, label in ticks:
        body.append(f'<line x1="{_n(x_of(i) - step / 2)}" y1="{_n(scale.y0)}" x2="{_n(x_of(i) - step / 2)}" '
                    f'y2="{_n(y + 4)}" class="grid"/>')
        body.append(text(x_of(i) - step / 2 + 2, y + 14, label))
    y += 20
    for k, (name, flags) in enumerate(marks):
        body.append(text(LEFT - 4, y + 9, name, "end"))
        body.append(rect(LEFT, y, WIDTH - LEFT - RIGHT, ROW - 4, "out"))
        for i, flag in enumerate(flags):
            if flag:
                body.append(rect(x_of(i) - step / 2, y, max(step, 1.5), ROW - 4, "mark"))
        y += ROW
    body.append(text(LEFT + (WIDTH - LEFT - RIGHT) / 2, y + 10, x_unit, "middle"))
    items = [(name, f"f{k % COLOURS}") for k, (name, _) in enumerate(series)]
    shapes, y = legend(items + ([(mark_name, "mark")] if marks else []), y + 18)
    return svg(cid, title, desc, y + 4, body + shapes)


# ---- distributions ---------------------------------------------------------------

def boxes(cid: str, title: str, desc: str, items: list[tuple[str, dict | None]],
          fmt: Callable[[float], str], unit: str) -> str:
    """One horizontal box plot per label from ``{min, p25, p50, p75, p95, max}``:
    whiskers min..max, box p25..p75, a bar at the median, a tick at p95."""
    label_w = 200
    width = WIDTH - label_w - RIGHT - 20
    top = nice_top(max([d["max"] for _, d in items if d], default=0))

    def x_of(v: float) -> float:
        return label_w + width * min(max(v / top, 0.0), 1.0)

    body, y = x_axis(top, label_w, width, TOP, TOP + 24 * len(items), fmt), TOP
    for k, (label, d) in enumerate(items):
        shown = label if len(label) <= 30 else label[:29] + "…"
        body.append(text(label_w - 6, y + 13, shown, "end"))
        if not d:
            body.append(text(label_w, y + 13, "no requests reported it"))
        else:
            mid = y + 9
            body.append(f'<line x1="{_n(x_of(d["min"]))}" y1="{mid}" x2="{_n(x_of(d["max"]))}" y2="{mid}" '
                        f'class="line l{k % COLOURS}"/>')
            body.append(rect(x_of(d["p25"]), y + 2, x_of(d["p75"]) - x_of(d["p25"]) or 1.5, 14, f"f{k % COLOURS} box",
                             tip=f'{label}: min {fmt(d["min"])}, median {fmt(d["p50"])}, '
                                 f'p95 {fmt(d["p95"])}, max {fmt(d["max"])} ({d["n"]} requests)'))
            body.append(rect(x_of(d["p50"]) - 1, y, 2.5, 18, "median"))
            body.append(rect(x_of(d["p95"]) - 0.5, y + 4, 1.5, 10, "fgfill"))
        y += 24
    body.append(text(label_w + width / 2, y + 28, unit, "middle"))
    shapes, y = legend([("p25 to p75", "f0 box"), ("median", "median"), ("95th percentile", "fgfill")], y + 36)
    return svg(cid, title, desc, y + 4, body + shapes)
