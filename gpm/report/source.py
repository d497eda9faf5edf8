"""Where the report's rows come from: the SQLite database and the Parquet archive.

SQLite rows are reduced by SQL where they live (``sqlite_partials``); the
archived rows are read through the shared history reader
(``gpm.store.history.scan`` with ``recent=False``), which picks the part
files of the range from this database's manifest (and every file of hosts
it does not own), so no row is counted twice.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from gpm.report.partials import (HOUR_MS, Selection, empty_histogram, empty_partials, lazy_partials, merge,
                                 sqlite_partials)

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


def uncovered_spans(since_ms: int, until_ms: int, covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """[since, until) less the covered spans, as ordered spans."""
    spans, cursor = [], since_ms
    for lo, hi in sorted(covered):
        if lo > cursor:
            spans.append((cursor, min(lo, until_ms)))
        cursor = max(cursor, hi)
    if cursor < until_ms:
        spans.append((cursor, until_ms))
    return [(lo, hi) for lo, hi in spans if lo < hi]


def owned_archive_hosts(conn: sqlite3.Connection | None, own_host: str | None) -> set[str]:
    """Hosts whose part files this database's manifest chooses (the history reader's rule)."""
    from gpm.store.archive import owned_hosts
    from gpm.store.timeseries import table_exists

    if conn is None or not table_exists(conn, "archive_files"):
        return set()
    return owned_hosts(conn, own_host)


@dataclass
class Reduced:
    """Reduced days of the archive: stored folders (read in one scan at the
    end) and days reduced by this report, with the raw partials around them."""

    folders: list[Path] = field(default_factory=list)
    frames: list["pl.DataFrame"] = field(default_factory=list)
    hists: list["pl.DataFrame"] = field(default_factory=list)


def _manifest_files(conn: sqlite3.Connection | None, archive_dir: Path, hosts: set[str], sel: Selection,
                    ) -> dict[tuple[str, str], list[Path]]:
    """(host, day) -> the listed part files of ``gpu_metrics`` (the owned hosts' truth)."""
    from gpm.store.archive import day_name

    if conn is None or not hosts:
        return {}
    out: dict[tuple[str, str], list[Path]] = {}
    for host, day, path in conn.execute(
            "SELECT host, day, path FROM archive_files WHERE table_name = 'gpu_metrics' AND day >= ? AND day <= ?",
            (day_name(sel.since_ms), day_name(max(sel.since_ms, sel.until_ms - 1)))):
        if host in hosts:
            out.setdefault((host, day), []).append(Path(archive_dir) / path)
    return out


def stored_own_days(conn: sqlite3.Connection, archive_dir: Path | None, sel: Selection, busy_threshold: float,
                    own_host: str | None) -> set[int]:
    """UTC days of the range for which the archive holds a current reduction of
    some host this database archived itself (read from there, not from SQLite)."""
    from gpm.report import quarters as q
    from gpm.store.archive import host_dir

    if not archive_dir or not (Path(archive_dir) / q.REDUCTIONS_DIR).is_dir():
        return set()
    out = set()
    for (host, day), files in _manifest_files(conn, archive_dir, owned_archive_hosts(conn, own_host), sel).items():
        start = _day_start(day)
        folder = q.reduction_folder(archive_dir, host_dir(host), f"date={day}")
        try:
            if start is not None and q.matches(q.read_sources(folder), q.day_sources(files), busy_threshold):
                out.add(start)
        except OSError:
            continue
    return out


def archive_partials(conn: sqlite3.Connection | None, archive_dir: Path | None, sel: Selection,
                     busy_threshold: float, own_host: str | None, sqlite_spans: list[tuple[int, int]],
                     sqlite_days: set[tuple[str, int]], cache_dir: Path | None,
                     reduced: Reduced, *, stored: bool = True) -> tuple[list["pl.DataFrame"], list["pl.DataFrame"]]:
    """Partials of the archived ``gpu_metrics`` rows of the selection.

    A whole day of a host is read from its stored reduction
    (``gpm.report.quarters``, written by `gpm archive`) while that names
    exactly the day's part files (for hosts this database archived itself,
    those its manifest lists) and the busy threshold; ``sqlite_days`` (host,
    UTC day) are left to the raw rows, since the database holds rows of them
    too. Other days of the hosts this database archived itself are read
    through the manifest, less the spans its own reductions hold
    (``sqlite_spans``). Every other host's day (copied in, not reduced) is
    reduced one day folder at a time; a whole day's reduction is kept in
    ``cache_dir`` under the files' names, sizes and modification times.
    ``stored=False`` reads no stored reduction (nor the cache): raw rows only.
    """
    from gpm.report import quarters as q
    from gpm.report.period import day_starts
    from gpm.store.archive import host_of
    from gpm.store.history import scan_files
    from gpm.store.timeseries import DAY_MS

    parts: list = []
    hists: list = []
    table_dir = Path(archive_dir) / "gpu_metrics" if archive_dir else None
    if table_dir is None or not table_dir.is_dir():
        return parts, hists
    owned = owned_archive_hosts(conn, own_host)
    present = {host_of(p.name): p for p in table_dir.glob("host=*")}
    wanted = set(sel.hosts) if sel.hosts else set(present)
    listed = _manifest_files(conn, archive_dir, owned & wanted, sel)
    starts = day_starts(sel.since_ms, sel.until_ms)
    for host in sorted(set(present) & wanted):
        mine = host in owned
        covered: list[tuple[int, int]] = []
        for day_folder in sorted(present[host].glob("date=*")):
            start = _day_start(day_folder.name)
            if start is None or start + DAY_MS <= sel.since_ms or start >= sel.until_ms:
                continue
            whole = sel.since_ms <= start and start + DAY_MS <= sel.until_ms
            files = (listed.get((host, day_folder.name.removeprefix("date=")), []) if mine
                     else sorted(day_folder.glob("*.parquet")))
            if not files or (mine and ((host, start) in sqlite_days
                                       or any(lo < start + DAY_MS and start < hi for lo, hi in sqlite_spans))):
                continue
            if not whole or not stored:
                if not mine:
                    p, h = lazy_partials(scan_files("gpu_metrics", [str(f) for f in files]), sel, busy_threshold)
                    parts.append(p)
                    hists.append(h)
                continue
            try:
                sources = q.day_sources(files)
            except OSError:
                continue  # a listed file that is gone: the history reader says so
            stored = q.reduction_folder(archive_dir, present[host].name, day_folder.name)
            if q.matches(q.read_sources(stored), sources, busy_threshold):
                reduced.folders.append(stored)
            elif not mine:
                _foreign_day(files, start, sel, busy_threshold, cache_dir, reduced)
            else:
                continue
            covered.append((start, start + DAY_MS))
            # A quarter cut by a local midnight (no current time zone does
            # that) is read raw; the day's histogram already counts it.
            for lo, hi in q.usable_quarters(start, start + DAY_MS, starts)[1]:
                p, _ = lazy_partials(scan_files("gpu_metrics", [str(f) for f in files]),
                                     replace(sel, since_ms=lo, until_ms=hi), busy_threshold)
                parts.append(p)
        if mine:
            for since, until in uncovered_spans(sel.since_ms, sel.until_ms, sqlite_spans + covered):
                span = replace(sel, since_ms=since, until_ms=until, hosts=(host,))
                p, h = lazy_partials(scan_archive(conn, archive_dir, "gpu_metrics", span, own_host),
                                     span, busy_threshold)
                parts.append(p)
                hists.append(h)
    return parts, hists


def _day_start(name: str) -> int | None:
    from datetime import date

    from gpm.store.timeseries import DAY_MS

    try:
        return (date.fromisoformat(name.removeprefix("date=")) - date(1970, 1, 1)).days * DAY_MS
    except ValueError:
        return None


CACHE_VERSION = 2


def _foreign_day(files: list[Path], start: int, sel: Selection, busy_threshold: float,
                 cache_dir: Path | None, reduced: Reduced) -> None:
    """Reduce a whole day of another host's archive, or find it in the cache."""
    import hashlib

    from gpm.report import quarters as q

    folder = None
    if cache_dir is not None:
        stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
        key = hashlib.sha256(repr((CACHE_VERSION, busy_threshold, stats)).encode()).hexdigest()[:32]
        folder = Path(cache_dir) / key
        if q.matches(q.read_sources(folder), q.day_sources(files), busy_threshold):
            reduced.folders.append(folder)
            return
    partials, hist = q.reduce_files(files, start, busy_threshold)
    if folder is not None:
        try:
            q.write_day(folder, partials, hist, q.day_sources(files), busy_threshold, root=folder, durable=False)
        except OSError:
            pass  # no cache: the next report reads the Parquet again
    reduced.frames.append(partials)
    reduced.hists.append(hist)


def _keep_gpus(partials: "pl.DataFrame", hist: "pl.DataFrame",
               sel: Selection) -> tuple["pl.DataFrame", "pl.DataFrame"]:
    """The selection's hosts and GPUs of whole days' partials."""
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
                 use_cache: bool = True, cache_dir: Path | None = None,
                 ) -> tuple["pl.DataFrame", "pl.DataFrame", "pl.DataFrame"]:
    """(minute partials, utilization histogram, reduced partials) of both stores.

    The reduced partials are quarter rows with their spare minutes
    (``gpm.report.quarters.resolve`` chooses once the gap threshold is
    known). ``cache_dir`` keeps foreign archives' reduced days (default:
    gpm's XDG cache); ``use_cache=False`` neither reads nor writes any cache
    nor reads any stored reduction: every figure from raw rows, as minutes.
    """
    import polars as pl

    from gpm.paths import cache_home
    from gpm.report import quarters as q
    from gpm.store.timeseries import DAY_MS

    parts, hists = [], []
    cached_hours: list[int] = []
    if conn is not None and db_path is not None:
        p, h = sqlite_partials(conn, str(db_path), sel, busy_threshold, now_ms=now_ms, use_cache=use_cache,
                               archived_hours=cached_hours,
                               archive_days=stored_own_days(conn, archive_dir, sel, busy_threshold, own_host)
                               if use_cache else set())
        parts.append(p)
        hists.append(h)
    if use_cache and cache_dir is None:
        cache_dir = Path(cache_home()) / "report-days"
    sqlite_days = {(host, day * DAY_MS) for host, day in pl.concat(parts).select(
        "host", pl.col("first_ts_ms") // DAY_MS).unique().iter_rows()} if parts else set()
    reduced = Reduced()
    p, h = archive_partials(conn, archive_dir, sel, busy_threshold, own_host,
                            [(hour, hour + HOUR_MS) for hour in cached_hours], sqlite_days,
                            cache_dir if use_cache else None, reduced, stored=use_cache)
    partials, hist = merge(parts + p, hists + h)
    stored, stored_hist = q.read_days(reduced.folders)
    frames = [f for f in (stored, *reduced.frames) if not f.is_empty()]
    if not frames:
        return partials, hist, empty_partials()
    rows, rows_hist = _keep_gpus(pl.concat(frames), pl.concat([stored_hist, *reduced.hists]), sel)
    hist = pl.concat([hist, rows_hist.select(hist.columns).cast(hist.schema)]).group_by(
        "host", "gpu_uuid", "util").agg(pl.col("n").sum())
    return partials, hist, q.drop_cut_quarters(rows, sel)


def archive_first_samples(archive_dir: Path | None, hosts: tuple[str, ...] = ()) -> dict[str, int]:
    """host -> its first archived GPU sample: the earliest day folder's first
    row (the database's ``gpus`` table knows only the hosts it sampled)."""
    from gpm.store.archive import host_of
    from gpm.store.history import scan_files

    table_dir = Path(archive_dir) / "gpu_metrics" if archive_dir else None
    if table_dir is None or not table_dir.is_dir():
        return {}
    out = {}
    for host_folder in sorted(table_dir.glob("host=*")):
        host = host_of(host_folder.name)
        if hosts and host not in hosts:
            continue
        for day_folder in sorted(host_folder.glob("date=*")):
            files = sorted(str(f) for f in day_folder.glob("*.parquet"))
            if files:
                first = scan_files("gpu_metrics", files).select("ts_ms").min().collect().item()
                if first is not None:
                    out[host] = first
                    break
    return out
