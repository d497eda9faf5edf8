"""Outside strings made safe: decoded once from the OS, shown without tricks.

Process names, command lines, paths, model and GPU names come from whoever
started a process or named a file. Two things can go wrong with them:

- they are bytes, not always UTF-8 (a file named ``bad\\xff\\xfe``). Python's
  usual ``surrogateescape`` strings cannot be stored in SQLite or printed,
  and "replace" would lose which bytes they were. ``os_text`` decodes every
  such byte string the same way: invalid bytes become the four characters
  ``\\xff`` (issue #12.2). A name that really contains a backslash, an ``x``
  and two hex digits reads the same: the cost of one printable form.
- they can hold control characters: an escape sequence that retitles or
  clears the terminal, a newline that splits a table row, a bidi override
  that shows text reversed (issue #12.10). ``visible`` spells each one out
  (``\\x1b``, ``\\n``, ``\\u202e``) in every human-readable output; JSON
  output stays exact and does not use it.

Human units (GiB, W, 3h 25m) and widths live here too: every human-readable
output fits the terminal (issue #13.1). ``display_width`` counts what a
terminal shows (East Asian wide characters take two columns), ``cut``
shortens a string to a width with ``…``, ``short_gpu_name`` is the one way a
GPU is named in a table, and ``table`` lays out rows whose columns give way
in a stated order so that the numbers always show.
"""

from __future__ import annotations

import re
import shutil
import unicodedata
from dataclasses import dataclass


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def os_text(data: bytes) -> str:
    """Bytes from the OS (``/proc``, a link target, a file name) as text.

    Valid UTF-8 is decoded as is; every invalid byte becomes ``\\xNN``.
    """
    return data.decode("utf-8", "backslashreplace")


def os_str(text: str) -> str:
    """A ``str`` the OS handed to Python (``os.readlink``, ``os.listdir``, ``sys.argv``),
    with its undecodable bytes (``surrogateescape``) spelt as ``os_text`` spells them."""
    if text.isascii():
        return text
    return os_text(text.encode("utf-8", "surrogateescape"))


def _escape(c: str) -> str:
    if c in _NAMED:
        return _NAMED[c]
    n = ord(c)
    if 0xDC80 <= n <= 0xDCFF:  # an undecodable byte (surrogateescape): as os_text shows it
        return f"\\x{n - 0xDC00:02x}"
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def visible(text: str) -> str:
    """``text`` with every character that is not printable spelt out as an escape.

    "Printable" is Python's ``str.isprintable``: it rules out C0 and C1
    controls, DEL, format characters (bidi overrides and isolates, zero-width
    spaces and joiners, the BOM), line and paragraph separators, surrogates,
    private-use and unassigned code points. The plain space is kept; printable
    text (any script) comes back unchanged, at the cost of one C call.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def md_cell(text: str) -> str:
    """``visible`` for a Markdown table cell: a ``|`` would end the cell."""
    return visible(text).replace("|", "\\|")


def visible_rows(rows: list[list], markdown: bool = False) -> list[list]:
    """Table rows with every string cell made ``visible`` (``md_cell`` for Markdown),
    ready for ``tabulate``; numbers and None pass through."""
    show = md_cell if markdown else visible
    return [[show(v) if isinstance(v, str) else v for v in row] for row in rows]


# ---- units ---------------------------------------------------------------

def fmt_opt(value, fmt: str, missing: str = "-") -> str:
    return missing if value is None else fmt.format(value)


def fmt_bytes(n: int | float | None, missing: str = "-") -> str:
    if n is None:
        return missing
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit in ("B", "KiB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"  # pragma: no cover


def fmt_duration(seconds: float | None, missing: str = "-") -> str:
    if seconds is None:
        return missing
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    minutes, s = divmod(s, 60)
    if minutes < 60:
        return f"{minutes}m {s:02d}s" if s else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


# ---- widths --------------------------------------------------------------

ELLIPSIS = "…"


def terminal_size() -> tuple[int, int]:
    """(columns, lines) of the terminal on stdout; 80x24 when unknown or not a
    terminal. ``$COLUMNS``/``$LINES`` win, as ``shutil.get_terminal_size`` has it."""
    size = shutil.get_terminal_size((80, 24))
    return (size.columns if size.columns > 0 else 80), (size.lines if size.lines > 0 else 24)


def _char_width(c: str) -> int:
    if c.isascii():
        return 1
    if unicodedata.combining(c) or unicodedata.category(c) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal; make it ``visible`` first (an
    escape sequence is not one column per character)."""
    if text.isascii():
        return len(text)
    return sum(_char_width(c) for c in text)


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` columns, ending in ``…`` when shortened."""
    if display_width(text) <= width:
        return text
    if width <= 0:
        return ""
    room, out = width - 1, []
    for c in text:
        w = _char_width(c)
        if w > room:
            break
        out.append(c)
        room -= w
    return "".join(out).rstrip() + ELLIPSIS


def cut_start(text: str, width: int) -> str:
    """``text`` in at most ``width`` columns, its start given way to ``…``:
    for paths, whose end says the most."""
    return cut(text[::-1], width)[::-1]


def pad(text: str, width: int, right: bool = False) -> str:
    """``text`` padded with spaces to ``width`` columns (display width)."""
    fill = " " * max(0, width - display_width(text))
    return fill + text if right else text + fill


# The vendor and the consumer brand say nothing in a table of one vendor's
# GPUs; the model (RTX 4090, A100-SXM4-80GB, Tesla T4, Quadro P2000) stays.
_GPU_NOISE = re.compile(r"^(?:NVIDIA(?:\s+Corporation)?\s+)?(?:GeForce\s+)?", re.IGNORECASE)
_GPU_TAIL = re.compile(r"(\S)\s+(?:Generation|GPU)$", re.IGNORECASE)
GPU_NAME_WIDTH = 20


def short_gpu_name(name: str | None, width: int = GPU_NAME_WIDTH) -> str:
    """The name a table shows for a GPU, the same everywhere:
    ``NVIDIA GeForce RTX 4090`` -> ``RTX 4090``, ``NVIDIA A100-SXM4-80GB`` ->
    ``A100-SXM4-80GB``; made ``visible`` and cut to ``width`` with ``…``.
    A name that is only the vendor stays as it is; no name is ``?``."""
    text = " ".join(visible(name or "").split())
    short = _GPU_TAIL.sub(r"\1", _GPU_NOISE.sub("", text)) or text
    return cut(short or "?", width)


@dataclass
class Column:
    """A table column: its header, whether it is right-aligned (numbers), and
    the narrowest it may become when the table must give way (default: its
    header's width)."""

    header: str
    right: bool = False
    min_width: int | None = None


GiveWay = tuple["int | tuple[int, int]", ...]


def table(columns: list[Column], rows: list[list], width: int | None = None,
          give_way: GiveWay = (), markdown: bool = False) -> str:
    """Rows laid out as tabulate's "simple" format does (``markdown``: its
    "github" one), in at most ``width`` columns (default: the terminal's).

    Cells are made ``visible`` (``md_cell`` for Markdown); None is empty.
    When the table is too wide, the columns listed in ``give_way`` (indexes,
    first to give way first) shrink, each down to its ``min_width``
    (default: its header's width), and their cells are cut with ``…``: a
    long reason or command line goes before a number does. An entry
    ``(index, floor)`` stops that column at ``floor`` columns, so that it can
    give way again later, after others did. A terminal too
    narrow even then cuts each line at its edge, rather than let it wrap.
    A Markdown table that does not fit drops its padding first (Markdown
    needs none), then each row gives way on its own.
    """
    if width is None:
        width = terminal_size()[0]
    show = md_cell if markdown else visible
    header = [c.header for c in columns]
    cells = [header] + [["" if v is None else show(str(v)) for v in row] for row in rows]
    widths = [max(display_width(r[i]) for r in cells) for i in range(len(columns))]
    # "a  b" between columns; "| a | b |" around and between them in Markdown
    between = 3 * len(columns) + 1 if markdown else 2 * (len(columns) - 1)
    if markdown and sum(widths) + between > width:
        return _ragged_markdown(columns, cells, width, give_way)
    widths = _give_way(columns, widths, give_way, sum(widths) + between - width)

    def line(values: list[str]) -> str:
        padded = [pad(cut(v, w), w, c.right) for v, w, c in zip(values, widths, columns)]
        return cut(f"| {' | '.join(padded)} |" if markdown else "  ".join(padded).rstrip(), width)

    if markdown:  # the colon says how GitHub aligns the column
        rule = "|" + "|".join("-" * (w + 1) + ":" if c.right else ":" + "-" * (w + 1)
                              for w, c in zip(widths, columns)) + "|"
    else:
        rule = "  ".join("-" * w for w in widths)
    out = [line(cells[0]), cut(rule, width)] + [line(r) for r in cells[1:]]
    return "\n".join(out)


def _give_way(columns: list[Column], widths: list[int], give_way: GiveWay, excess: int) -> list[int]:
    """``widths`` less ``excess`` columns taken from the ``give_way`` columns, in order."""
    widths = list(widths)
    for entry in give_way:
        if excess <= 0:
            break
        i, floor = entry if isinstance(entry, tuple) else (entry, columns[entry].min_width)
        if floor is None:
            floor = display_width(columns[i].header)
        take = min(excess, max(0, widths[i] - floor))
        widths[i] -= take
        excess -= take
    return widths


def _ragged_markdown(columns: list[Column], cells: list[list[str]], width: int, give_way: GiveWay) -> str:
    """A Markdown table without padding: each line (header first) as narrow as its cells."""
    out = []
    for values in cells:
        widths = [display_width(v) for v in values]
        widths = _give_way(columns, widths, give_way, sum(widths) + 3 * len(columns) + 1 - width)
        out.append(cut(f"| {' | '.join(cut(v, w) for v, w in zip(values, widths))} |", width))
    out.insert(1, cut("|" + "|".join("-:" if c.right else ":-" for c in columns) + "|", width))
    return "\n".join(out)
