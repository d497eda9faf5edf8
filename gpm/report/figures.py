"""The html report's building blocks: a chart's figure, its table of numbers, cell formats.

Every number in a table is a ``Num``: its cell shows it in human units and
carries the json value (``data-value``) and where it comes from in the
json report (``data-json``, a path), so a test can check that the page says
what ``--format json`` says, cell by cell.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date

from gpm.humanize import fmt_bytes
from gpm.report import cost
from gpm.report.render import kwh
from gpm.report.svg import esc


@dataclass(frozen=True)
class Num:
    """A table cell with a number: ``path`` into the json report (None for a
    figure the page derives, such as energy not charged to any process)."""

    value: float | int | None
    text: str
    path: tuple | None = None


def cell(value: float | int | None, fmt, path: tuple | None = None) -> Num:
    return Num(value, "–" if value is None else fmt(value), path)


def table(headers: list[str], rows: list[list], caption: str | None = None) -> str:
    """An HTML table: strings are escaped and made visible, ``Num`` cells right-aligned."""
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f'<th scope="col">{esc(h)}</th>' for h in headers) + "</tr></thead><tbody>")
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            tag = "th" if i == 0 else "td"
            scope = ' scope="row"' if i == 0 else ""
            if isinstance(v, Num):
                attrs = f' class="num" data-value="{esc(json.dumps(v.value))}"'
                if v.path is not None:
                    attrs += f' data-json="{esc(json.dumps(list(v.path)))}"'
                cells.append(f"<{tag}{scope}{attrs}>{esc(v.text)}</{tag}>")
            else:
                cells.append(f"<{tag}{scope}>{esc('' if v is None else v)}</{tag}>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def figure(fid: str, title: str, chart: str, table_html: str, note: str = "") -> str:
    """A chart with its heading, an optional note and its numbers (open by default, so they print)."""
    return (f'<section class="fig" id="{fid}"><h2>{esc(title)}</h2>'
            + (f'<p class="note">{esc(note)}</p>' if note else "")
            + f'<div class="plot">{chart}</div>'
            + f"<details open><summary>The numbers: {esc(title)}</summary>{table_html}</details></section>")


def omitted(fid: str, title: str, why: str) -> str:
    return f'<section class="fig" id="{fid}"><h2>{esc(title)}</h2><p class="omitted">{esc(why)}</p></section>'


# ---- formats -----------------------------------------------------------------------

def energy(j: float) -> str:
    return kwh(j)


def hours(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 360 else f"{s / 60:.0f} min"


def percent(p: float) -> str:
    return f"{p:.0f} %"


def celsius(c: float) -> str:
    return f"{c:.0f} °C"


def gib(b: float) -> str:
    return f"{b / (1 << 30):.1f} GiB"


def nbytes(b: float) -> str:
    return fmt_bytes(b)


def secs(s: float) -> str:
    return f"{s:.2f} s" if s < 10 else f"{s:.0f} s"


def count(n: float) -> str:
    return f"{n:,.0f}"


def day_label(iso: str) -> str:
    """``2025-11-17`` -> ``Mon 17``."""
    d = date.fromisoformat(iso)
    return f"{d:%a} {d.day}"


def priced(obj: dict) -> dict | None:
    """The report's pricing (helper H's ``pricing``), or None when it has none."""
    return obj.get("pricing") or None


def money(obj: dict):
    """Amounts as the text report writes them (``EUR 1,234.56``, gpm.report.cost.money)."""
    currency = (priced(obj) or {}).get("currency")
    return lambda v: cost.money(v, currency)


def price_headers(obj: dict) -> list[str]:
    """The cost and CO₂ columns, when the report is priced."""
    return ["Cost", "CO₂"] if priced(obj) else []


def price_cells(obj: dict, row: dict, *path) -> list[Num]:
    """A priced row's cost and CO₂ cells (none when the report is not priced)."""
    if not priced(obj):
        return []
    return [cell(row.get("cost"), money(obj), (*path, "cost") if "cost" in row else None),
            cell(row.get("co2_grams"), cost.grams, (*path, "co2_grams") if "co2_grams" in row else None)]
