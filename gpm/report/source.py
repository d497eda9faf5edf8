"""Where the report's rows come from: the SQLite database and the Parquet archive.

SQLite rows are reduced by SQL where they live (``sqlite_partials``); the
archived rows are read through the shared history reader
(``gpm.store.history.scan`` with ``recent=False``), which picks the part
files of the range from this database's manifest (and every file of hosts
it does not own), so no row is counted twice.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from gpm.report.partials import Selection, lazy_partials, merge, sqlite_partials

if TYPE_CHECKING:
    import polars as pl


def scan_archive(conn: sqlite3.Connection | None, archive_dir: Path | None, table: str, sel: Selection,
                 own_host: str | None) -> "pl.LazyFrame | None":
    """A LazyFrame over the archived rows of ``table`` in the selection, or None without an archive."""
    from gpm.store.history import scan

    if not archive_dir or not Path(archive_dir).is_dir():
        return None
    return scan(table, conn=conn, archive_dir=archive_dir, since_ms=sel.since_ms, until_ms=sel.until_ms,
                hosts=sel.hosts or None, own_host=own_host, recent=False)


def gpu_partials(conn: sqlite3.Connection | None, db_path: Path | None, archive_dir: Path | None,
                 sel: Selection, busy_threshold: float, *, now_ms: int, own_host: str | None = None,
                 use_cache: bool = True) -> tuple["pl.DataFrame", "pl.DataFrame"]:
    """Per-minute partials and the utilization histogram of both stores."""
    parts, hists = [], []
    lf = scan_archive(conn, archive_dir, "gpu_metrics", sel, own_host)
    if conn is not None and db_path is not None:
        p, h = sqlite_partials(conn, str(db_path), sel, busy_threshold, now_ms=now_ms, use_cache=use_cache)
        parts.append(p)
        hists.append(h)
    if lf is not None:
        p, h = lazy_partials(lf, sel, busy_threshold)
        parts.append(p)
        hists.append(h)
    return merge(parts, hists)
