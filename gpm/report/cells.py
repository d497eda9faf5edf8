"""How a report's figures are written in a table cell: energy in Wh or kWh,
durations in the one unit their column calls for, percentages, sparklines.

Shared by the text, markdown and csv renderers; nothing here computes a figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

BLOCKS = "▁▂▃▄▅▆▇█"
# A host name in a GPU's or a program's cell is cut before it, so that the
# index or the program's name stays when the cell gives way.
HOST_IN_CELL = 12


def kwh(joules: float | None) -> str:
    """Energy in kWh, or in Wh under 0.1 kWh (``46 Wh``, not ``0.05 kWh``),
    with three significant digits at most (``1234 kWh``, not ``1234.00 kWh``:
    a fleet's week fits its column)."""
    if joules is None:
        return "-"
    wh = joules / 3600
    if round(wh, 1) < 10:
        return f"{wh:.1f} Wh"
    if round(wh) < 100:
        return f"{wh:.0f} Wh"
    digits = 2 if round(wh / 1000, 2) < 10 else 1 if round(wh / 1000, 1) < 100 else 0
    return f"{wh / 1000:.{digits}f} kWh"


@dataclass(frozen=True)
class Durations:
    """A text cell with durations that take their column's unit (#13.8): ``text``
    has one ``{}`` per value of ``seconds`` (None shows as ``-``)."""

    text: str
    seconds: tuple[float | None, ...]


DURATION_UNITS = ((3600, "h"), (60, "min"), (1, "s"))


def duration_unit(longest: float) -> tuple[int, str]:
    """Hours once a column holds an hour or more, else minutes, else seconds."""
    return next((size, name) for size, name in DURATION_UNITS if longest >= size or size == 1)


def in_units(rows: list[list]) -> list[list]:
    """Every ``Durations`` cell of a column in the one unit its longest value calls
    for, so that ``28h 10m`` never stands beside ``4d 0h``."""
    out = [list(r) for r in rows]
    for col in range(len(out[0]) if out else 0):
        values = [v for r in out if isinstance(r[col], Durations) for v in r[col].seconds if v is not None]
        size, name = duration_unit(max(values, default=0))
        digits = 0 if size == 1 else 1
        for r in out:
            if isinstance(r[col], Durations):
                r[col] = r[col].text.format(*["-" if v is None else f"{v / size:.{digits}f} {name}"
                                              for v in r[col].seconds])
    return out


def pct(x: float | None, digits: int = 0) -> str:
    """A percentage with ``digits`` decimals, ``-`` when unknown."""
    return "-" if x is None else f"{x:.{digits}f}%"


def sparkline(values: list[float | None], top: float | None = None) -> str:
    """One block per value, scaled to ``top`` (default: the largest); ``·`` = no data,
    a space = nothing (zero), so that only a value above zero draws a block."""
    known = [v for v in values if v is not None]
    top = top if top is not None else (max(known) if known else 0)
    out = []
    for v in values:
        if v is None:
            out.append("·")
        elif v <= 0 or top <= 0:
            out.append(" ")
        else:
            out.append(BLOCKS[min(len(BLOCKS) - 1, max(0, round(v / top * (len(BLOCKS) - 1))))])
    return "".join(out)


def day_label(iso_date: str) -> str:
    """``Mon 12-07``: a day of the per-day table and the initial of the strip."""
    return date.fromisoformat(iso_date).strftime("%a %m-%d")
