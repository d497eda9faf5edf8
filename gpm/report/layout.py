"""The parts of the text and markdown report around its tables: wrapped notes,
figures aligned right, the per-day strip and the GPU-failures block."""

from __future__ import annotations

import re
import textwrap
from datetime import date

from gpm.humanize import cut, display_width, short_gpu_name, visible
from gpm.report.build import Report
from gpm.report.cells import HOST_IN_CELL, day_label, kwh, sparkline
from gpm.report.period import fmt_local

# Beyond a month, the per-day table and strip show weeks (json and csv keep
# every day); a strip wider than the terminal (STRIP_WIDTH in a file) wraps.
MAX_DAY_ROWS = 31
STRIP_WIDTH = 53
STRIP_LABEL = 13


FAILED_WORDS = {"gpu_is_lost": "lost"}


def failure_lines(report: Report, width: int | None, markdown: bool = False) -> list[str]:
    """The "GPU failures" block: one line per span a GPU failed, or one saying none (#13.2).

    ``GPU 1 (RTX A6000): lost (gpu_is_lost) at 2026-12-03 14:02, back at 14:09``.
    """
    if not report.failures:
        return ["", "GPU failures: none."]
    lines = ["", "GPU failures:"] + ([""] if markdown else [])
    for f in report.failures:
        gpu = f"GPU {f['gpu_index']}" + (f" ({short_gpu_name(f['gpu_name'])})" if f["gpu_name"] else "")
        if len(report.coverage) > 1:
            gpu = f"{cut(visible(f['host']), HOST_IN_CELL)}: {gpu}"
        since = fmt_local(f["since_ms"])
        if f["until_ms"] is None:
            end = "still failing at the end of the range"
        else:
            back = fmt_local(f["until_ms"])
            end = "back at " + (back[11:] if back[:10] == since[:10] else back)
        word = FAILED_WORDS.get(f["status"], "failed")
        lines += wrap(f"{'- ' if markdown else ''}{gpu}: {word} ({visible(f['status'])}) at {since}, {end}.", width)
    return lines


def wrap(text: str, width: int | None) -> list[str]:
    """A sentence in lines of at most ``width`` columns; a note's ``* `` hangs."""
    if width is None:
        return [text]
    indent = "  " if text.startswith("* ") else ""
    return [cut(line, width) for line in textwrap.wrap(text, width, subsequent_indent=indent,
                                                       break_on_hyphens=False)]


NUMBER = re.compile(r"(\d[\d.,]*[a-zA-Z%]*( \S+)?( \d+%)?\*?|-|–)")


def alignment(rows: list[list]) -> list[bool]:
    """Columns of figures (a number, its unit, a share) aligned right, to compare at a glance."""
    return [all(NUMBER.fullmatch(str(r[i])) for r in rows) for i in range(len(rows[0]))]


def weeks(days: list[dict]) -> list[dict]:
    """Days summed per ISO week (utilization weighted by sampled time)."""
    out: list[dict] = []
    for x in days:
        year, week, _ = date.fromisoformat(x["date"]).isocalendar()
        label = f"{year}-W{week:02d}"
        if not out or out[-1]["week"] != label:
            out.append({"week": label, "sampled_seconds": 0.0, "busy_seconds": 0.0, "_util": 0.0, "_util_s": 0.0,
                        "energy_joules": None, "first_date": x["date"]})
        w = out[-1]
        w["sampled_seconds"] += x["sampled_seconds"]
        w["busy_seconds"] += x["busy_seconds"]
        if x["utilization_mean_percent"] is not None:
            w["_util"] += x["utilization_mean_percent"] * x["sampled_seconds"]
            w["_util_s"] += x["sampled_seconds"]
        if x["energy_joules"] is not None:
            w["energy_joules"] = (w["energy_joules"] or 0.0) + x["energy_joules"]
    for w in out:
        w["utilization_mean_percent"] = w["_util"] / w["_util_s"] if w["_util_s"] else None
    return out


def _month_marks(first_dates: list[str]) -> str:
    """One character per week: a month's name above the week it begins in."""
    marks = [" "] * len(first_dates)
    free, month = 0, None
    for i, iso in enumerate(first_dates):
        day = date.fromisoformat(iso)
        if day.month != month and i >= free:
            name = day.strftime("%b")[: len(marks) - i]
            marks[i:i + len(name)] = name
            free = i + len(name) + 1
        month = day.month
    return "".join(marks)


def day_strip(report: Report, markdown: bool, width: int | None) -> list[str]:
    """Utilization and energy per day (per week beyond a month) as sparklines, wrapped to ``width``."""
    weekly = len(report.days) > MAX_DAY_ROWS
    slots = weeks(report.days) if weekly else report.days
    util = [x["utilization_mean_percent"] for x in slots]
    energy = [x["energy_joules"] for x in slots]
    known = [e for e in energy if e is not None]
    labels = _month_marks([x["first_date"] for x in slots]) if weekly else "".join(day_label(x["date"])[0] for x in slots)
    util_line, energy_line = sparkline(util, 100), sparkline(energy, max(known) if known else None)
    scale = f"  0–{kwh(max(known)) if known else '-'} per {'week' if weekly else 'day'}"
    room = STRIP_WIDTH if width is None else max(7, width - STRIP_LABEL - display_width(scale))
    rows: list[str] = []
    for at in range(0, len(slots), room):
        end = at + room
        if rows:
            rows.append("")
        rows += [
            f"{'weeks' if weekly else 'days':<{STRIP_LABEL - 1}} {labels[at:end]}",
            f"{'utilization':<{STRIP_LABEL - 1}} {util_line[at:end]}  0–100%",
            f"{'energy':<{STRIP_LABEL - 1}} {energy_line[at:end]}{scale}",
        ]
    if width is not None:
        rows = [cut(row, width) for row in rows]
    return ["```", *rows, "```"] if markdown else rows
