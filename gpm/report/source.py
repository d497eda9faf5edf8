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


def owned_archive_hosts(conn: sqlite3.Connection | None, own_host: str | None) -> set[str]:
    """Hosts whose part files this database's manifest chooses (the history reader's rule)."""
    from gpm.store.archive import owned_hosts
    from gpm.store.timeseries import table_exists

    if conn is None or not table_exists(conn, "archive_files"):
        return set()
    return owned_hosts(conn, own_host)


def archive_partials(conn: sqlite3.Connection | None, archive_dir: Path | None, sel: Selection,
                     busy_threshold: float, own_host: str | None, cached_hours: list[int],
                     cache_dir: Path | None) -> tuple[list["pl.DataFrame"], list["pl.DataFrame"]]:
    """Partials of the archived ``gpu_metrics`` rows of the selection.

    Hosts this database archived itself are read through the manifest, less
    the hours its reductions already hold. Every other host's archive (copied
    in, never reduced here) is reduced one day folder at a time; a whole day's
    partials are kept in ``cache_dir`` under the folder's file names, sizes
    and modification times, so its Parquet is read once.
    """
    from gpm.store.archive import host_of

    parts: list = []
    hists: list = []
    table_dir = Path(archive_dir) / "gpu_metrics" if archive_dir else None
    if table_dir is None or not table_dir.is_dir():
        return parts, hists
    owned = owned_archive_hosts(conn, own_host)
    present = {host_of(p.name): p for p in table_dir.glob("host=*")}
    wanted = set(sel.hosts) if sel.hosts else set(present)
    mine = tuple(sorted(owned & wanted))
    if mine:
        spans = (uncovered_spans(sel.since_ms, sel.until_ms, cached_hours) if cached_hours
                 else [(sel.since_ms, sel.until_ms)])
        for since, until in spans:
            lf = scan_archive(conn, archive_dir, "gpu_metrics",
                              replace(sel, since_ms=since, until_ms=until, hosts=mine), own_host)
            p, h = lazy_partials(lf, replace(sel, since_ms=since, until_ms=until), busy_threshold)
            parts.append(p)
            hists.append(h)
    for host in sorted((set(present) - owned) & wanted):
        for day_folder in sorted(present[host].glob("date=*")):
            p, h = day_partials(day_folder, sel, busy_threshold, cache_dir)
            if p is not None:
                parts.append(p)
                hists.append(h)
    return parts, hists


CACHE_VERSION = 1


def day_partials(day_folder: Path, sel: Selection, busy_threshold: float,
                 cache_dir: Path | None) -> tuple["pl.DataFrame | None", "pl.DataFrame | None"]:
    """(partials, histogram) of one host's day folder within the selection; (None, None) outside it."""
    import hashlib
    from datetime import date

    import polars as pl

    from gpm.store.history import scan_files
    from gpm.store.timeseries import DAY_MS

    try:
        start = (date.fromisoformat(day_folder.name.removeprefix("date=")) - date(1970, 1, 1)).days * DAY_MS
    except ValueError:
        return None, None
    if start + DAY_MS <= sel.since_ms or start >= sel.until_ms:
        return None, None
    files = sorted(day_folder.glob("*.parquet"))
    if not files:
        return None, None
    whole = sel.since_ms <= start and start + DAY_MS <= sel.until_ms
    cached = None
    if whole and cache_dir is not None:
        stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
        key = hashlib.sha256(repr((CACHE_VERSION, busy_threshold, stats)).encode()).hexdigest()[:32]
        cached = Path(cache_dir) / key
        if (cached / "hist.parquet").exists():
            try:
                return _keep_gpus(pl.read_parquet(cached / "partials.parquet"),
                                  pl.read_parquet(cached / "hist.parquet"), sel)
            except (OSError, pl.exceptions.PolarsError):
                pass  # a damaged cache entry is computed again
    lf = scan_files("gpu_metrics", [str(f) for f in files])
    if not whole:
        return lazy_partials(lf, sel, busy_threshold)
    p, h = lazy_partials(lf, Selection(start, start + DAY_MS), busy_threshold)
    if cached is not None:
        _store(cached, p, h)
    return _keep_gpus(p, h, sel)


def _store(folder: Path, partials: "pl.DataFrame", hist: "pl.DataFrame") -> None:
    """Write a cache entry atomically (histogram last: its presence marks a whole entry)."""
    import os

    from gpm.paths import ensure_private_dir

    try:
        ensure_private_dir(folder)
        for name, frame in (("partials", partials), ("hist", hist)):
            tmp = folder / f".{name}.{os.getpid()}.tmp"
            frame.write_parquet(tmp)
            os.replace(tmp, folder / f"{name}.parquet")
    except OSError:
        pass  # no cache: the next report reads the Parquet again


def _keep_gpus(partials: "pl.DataFrame", hist: "pl.DataFrame",
               sel: Selection) -> tuple["pl.DataFrame", "pl.DataFrame"]:
    """The selection's hosts and GPUs of a whole day's partials."""
    import polars as pl

    if not sel.hosts and not sel.gpus:
        return partials, hist
    keep = {(h, u) for h, u, i in partials.select("host", "gpu_uuid", "gpu_index").unique().iter_rows()
            if (not sel.hosts or h in sel.hosts) and sel.gpu_matches(u, i)}
    key = pl.struct("host", "gpu_uuid")
    wanted = pl.Series([{"host": h, "gpu_uuid": u} for h, u in keep],
                       dtype=pl.Struct({"host": pl.String, "gpu_uuid": pl.String}))
    return partials.filter(key.is_in(wanted)), hist.filter(key.is_in(wanted))


def gpu_partials(conn: sqlite3.Connection | None, db_path: Path | None, archive_dir: Path | None,
                 sel: Selection, busy_threshold: float, *, now_ms: int, own_host: str | None = None,
                 use_cache: bool = True, cache_dir: Path | None = None) -> tuple["pl.DataFrame", "pl.DataFrame"]:
    """Per-minute partials and the utilization histogram of both stores.
    ``cache_dir`` keeps foreign archives' day partials (default: gpm's XDG cache;
    ``use_cache=False`` neither reads nor writes any cache)."""
    from gpm.paths import cache_home

    parts, hists = [], []
    cached_hours: list[int] = []
    if conn is not None and db_path is not None:
        p, h = sqlite_partials(conn, str(db_path), sel, busy_threshold, now_ms=now_ms, use_cache=use_cache,
                               archived_hours=cached_hours)
        parts.append(p)
        hists.append(h)
    if use_cache and cache_dir is None:
        cache_dir = Path(cache_home()) / "report-days"
    p, h = archive_partials(conn, archive_dir, sel, busy_threshold, own_host, cached_hours,
                            cache_dir if use_cache else None)
    return merge(parts + p, hists + h)
