"""Where the report's rows come from: the SQLite database and the Parquet archive.

The archive is read as the archive issue lays it out,
``<dir>/**/gpu_metrics/host=<host>/date=<YYYY-MM-DD>/*.parquet`` (hive
partitioning), so a folder holding several hosts' archives is one data set.
Only the day folders that can hold rows of the range are opened.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from gpm.report.partials import Selection, lazy_partials, merge, sqlite_partials
from gpm.report.period import local_date

if TYPE_CHECKING:
    import polars as pl

_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_HOST_DIR = re.compile(r"^host=(.+)$")


def archive_files(archive_dir: Path, table: str, sel: Selection) -> list[Path]:
    """Parquet files of ``table`` whose host and day partitions may hold rows of ``sel``."""
    if not archive_dir or not archive_dir.is_dir():
        return []
    # Partition dates may be UTC or local: allow a day on either side.
    first = local_date(sel.since_ms) - timedelta(days=1)
    last = local_date(sel.until_ms) + timedelta(days=1)
    out = []
    for table_dir in sorted({p for p in archive_dir.glob(f"**/{table}") if p.is_dir()}):
        for host_dir in sorted(table_dir.glob("host=*")):
            host = _HOST_DIR.match(host_dir.name)
            if not host or (sel.hosts and host.group(1) not in sel.hosts):
                continue
            for date_dir in sorted(host_dir.glob("date=*")):
                m = _DATE_DIR.match(date_dir.name)
                if m and first <= date.fromisoformat(m.group(1)) <= last:
                    out.extend(sorted(date_dir.glob("*.parquet")))
    return out


def scan_archive(archive_dir: Path | None, table: str, sel: Selection) -> "pl.LazyFrame | None":
    """A LazyFrame over the archived rows of ``table`` in the selection, or None."""
    import polars as pl

    files = archive_files(archive_dir, table, sel) if archive_dir else []
    if not files:
        return None
    lf = pl.scan_parquet(files, hive_partitioning=True, missing_columns="insert")
    return lf.filter((pl.col("ts_ms") >= sel.since_ms) & (pl.col("ts_ms") < sel.until_ms))


def gpu_partials(conn: sqlite3.Connection | None, db_path: Path | None, archive_dir: Path | None,
                 sel: Selection, busy_threshold: float, *, now_ms: int,
                 use_cache: bool = True) -> tuple["pl.DataFrame", "pl.DataFrame"]:
    """Per-minute partials and the utilization histogram of both stores."""
    parts, hists = [], []
    if conn is not None and db_path is not None:
        p, h = sqlite_partials(conn, str(db_path), sel, busy_threshold, now_ms=now_ms, use_cache=use_cache)
        parts.append(p)
        hists.append(h)
    lf = scan_archive(archive_dir, "gpu_metrics", sel)
    if lf is not None:
        p, h = lazy_partials(lf, sel, busy_threshold)
        parts.append(p)
        hists.append(h)
    return merge(parts, hists)
