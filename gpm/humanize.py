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
"""

from __future__ import annotations

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
