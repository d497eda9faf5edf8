"""Where the report's rows come from: the SQLite database and the Parquet archive.

SQLite rows are reduced by SQL where they live (``sqlite_partials``); the
archived rows are read through the shared history reader
(``gpm.store.history.scan`` with ``recent=False``), which picks the part
files of the range from this database's manifest (and every file of hosts
it does not own), so no row is counted twice.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from gpm.report.partials import HOUR_MS, Selection, lazy_partials, merge, sqlite_partials

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


def uncovered_spans(since_ms: int, until_ms: int, hours: list[int]) -> list[tuple[int, int]]:
    """[since, until) less the given whole hours, as ordered spans."""
    spans, cursor = [], since_ms
    for hour in sorted(hours):
        if hour > cursor:
            spans.append((cursor, hour))
        cursor = max(cursor, hour + HOUR_MS)
    if cursor < until_ms:
        spans.append((cursor, until_ms))
    return spans


def archived_gpu_rows(conn: sqlite3.Connection | None, archive_dir: Path | None, sel: Selection,
                      own_host: str | None, cached_hours: list[int]) -> "pl.LazyFrame | None":
    """Archived ``gpu_metrics`` rows of the selection, less the hours this
    database's cache already holds (those are its own hosts' rows)."""
    import polars as pl

    from gpm.store.archive import host_of, owned_hosts

    if not archive_dir or not (Path(archive_dir) / "gpu_metrics").is_dir():
        return None
    if not cached_hours or conn is None:
        return scan_archive(conn, archive_dir, "gpu_metrics", sel, own_host)
    owned = owned_hosts(conn, own_host)
    present = {host_of(p.name) for p in (Path(archive_dir) / "gpu_metrics").glob("host=*")}
    wanted = set(sel.hosts) if sel.hosts else present
    frames = []
    foreign = sorted((present - owned) & wanted)
    if foreign:
        frames.append(scan_archive(conn, archive_dir, "gpu_metrics", replace(sel, hosts=tuple(foreign)), own_host))
    mine = tuple(sorted(owned & wanted))
    if mine:
        for since, until in uncovered_spans(sel.since_ms, sel.until_ms, cached_hours):
            frames.append(scan_archive(conn, archive_dir, "gpu_metrics",
                                       replace(sel, since_ms=since, until_ms=until, hosts=mine), own_host))
    return pl.concat(frames) if frames else None


def gpu_partials(conn: sqlite3.Connection | None, db_path: Path | None, archive_dir: Path | None,
                 sel: Selection, busy_threshold: float, *, now_ms: int, own_host: str | None = None,
                 use_cache: bool = True) -> tuple["pl.DataFrame", "pl.DataFrame"]:
    """Per-minute partials and the utilization histogram of both stores."""
    parts, hists = [], []
    cached_hours: list[int] = []
    if conn is not None and db_path is not None:
        p, h = sqlite_partials(conn, str(db_path), sel, busy_threshold, now_ms=now_ms, use_cache=use_cache,
                               archived_hours=cached_hours)
        parts.append(p)
        hists.append(h)
    lf = archived_gpu_rows(conn, archive_dir, sel, own_host, cached_hours)
    if lf is not None:
        p, h = lazy_partials(lf, sel, busy_threshold)
        parts.append(p)
        hists.append(h)
    return merge(parts, hists)
