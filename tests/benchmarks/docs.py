"""Benchmarks write their own figures into docs/benchmarks.md, between a pair of markers,
so the figures there cannot go stale by hand-copying (#14)."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Callable

DOCS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"


def machine() -> str:
    """When and on what a figure was measured: the date (UTC) and the CPUs this machine has."""
    return f"{datetime.datetime.now(datetime.timezone.utc).date().isoformat()}, {os.cpu_count()} CPUs"


def replace_rows(name: str, header: list[str], lines: list[str], key: Callable[[str], object]) -> None:
    """Put ``lines`` (table rows) between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``:
    a row whose first cell was just measured is replaced, the others kept; sorted by ``key``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    head, rest = DOCS.read_text().split(start, 1)
    block, tail = rest.split(end, 1)
    measured = {line.split(" | ")[0] for line in lines}
    kept = [line for line in block.strip().splitlines()
            if line.startswith("| ") and line not in header and line.split(" | ")[0] not in measured]
    rows = sorted(kept + lines, key=key)
    DOCS.write_text("\n".join([f"{head}{start}", *header, *rows, f"{end}{tail}"]))
