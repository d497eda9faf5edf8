"""Where the report's minute rows come from: the rollup, and the raw rows it does not cover.

One read transaction of SQLite (``gpm.store.rollup.snapshot``) gives the
archive manifest, the rolled-up hours still current and the raw rows of the
rest, so a concurrent `gpm archive` is seen either before or after its
commit, never half-way: each row is in SQLite or in a listed part file,
never both, never neither. Archived days are read from the rollup stored
beside their part files while it names exactly those files; else from the
raw Parquet (and a day of another host's archive, which gpm did not roll up
itself, is rolled up once and stored beside its files, where it can be).
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from gpm.report import rollup as r
from gpm.report.rollup import Selection
from gpm.store.archive_files import day_name, host_of, owned_hosts
from gpm.store.history import scan_files
from gpm.store.rollup import (BUCKET_MS, HOUR_MS, MINUTE_COLUMNS, closed_until, current_hours,
                                  reduce_span, roll_up, snapshot)
from gpm.store.timeseries import DAY_MS, table_exists

if TYPE_CHECKING:
    import polars as pl

Progress = Callable[[int], None]
log = logging.getLogger(__name__)


def whole_hours(since_ms: int, until_ms: int) -> list[int]:
    """The hours that lie wholly inside [since, until)."""
    return list(range(-(-since_ms // HOUR_MS) * HOUR_MS, until_ms // HOUR_MS * HOUR_MS, HOUR_MS))


def spans_without(since_ms: int, until_ms: int, hours: list[int]) -> list[tuple[int, int]]:
    """[since, until) less the given hours, as ordered spans."""
    spans, cursor = [], since_ms
    for hour in hours:
        if hour > cursor:
            spans.append((cursor, hour))
        cursor = max(cursor, hour + HOUR_MS)
    if cursor < until_ms:
        spans.append((cursor, until_ms))
    return spans


def sqlite_gpus(conn: sqlite3.Connection, sel: Selection) -> dict[int, tuple]:
    """gpus.id -> (host, uuid, index, name, memory total) for the GPUs the selection keeps."""
    try:
        rows = conn.execute("SELECT id, host, uuid, gpu_index, name, memory_total_bytes FROM gpus").fetchall()
    except sqlite3.OperationalError:
        return {}
    return {g[0]: tuple(g[1:]) for g in rows if (not sel.hosts or g[1] in sel.hosts) and sel.gpu_matches(g[2], g[3])}


def hours_to_roll_up(conn: sqlite3.Connection, sel: Selection, busy_threshold: float, now_ms: int) -> list[int]:
    """Closed hours of the range with rows in SQLite but no current rollup
    (a database filled by something else, rows written late, another busy threshold)."""
    with snapshot(conn):
        return current_hours(conn, whole_hours(sel.since_ms, min(sel.until_ms, closed_until(now_ms))),
                             busy_threshold)[1]


_COLUMNS = ("minute", "gpu_id", *MINUTE_COLUMNS)


def _rolled_minutes(conn: sqlite3.Connection, hours: list[int]) -> "pl.DataFrame":
    """``report_minutes`` of the given hours as a frame. Each column crosses
    from SQLite as one comma-separated text (NULL as an empty field) that
    Polars splits and parses: a week of 8 GPUs is 80,640 rows, which as
    Python tuples take twice as long."""
    import polars as pl

    select = ", ".join(f"group_concat(coalesce({c}, ''), ',')" for c in _COLUMNS)
    texts = []
    for lo, hi in _runs(hours):
        row = conn.execute(f"SELECT count(*), {select} FROM report_minutes WHERE minute >= ? AND minute < ?",
                           (lo // BUCKET_MS, hi // BUCKET_MS)).fetchone()
        if row[0]:
            texts.append(row[1:])
    if not texts:
        return pl.DataFrame(schema={c: pl.Int64 for c in _COLUMNS})
    return pl.DataFrame({
        name: pl.Series([t[i] for t in texts]).str.split(",").explode().cast(pl.Int64, strict=False)
        for i, name in enumerate(_COLUMNS)
    })


def _runs(hours: list[int]) -> list[tuple[int, int]]:
    """Consecutive hours as [lo, hi) spans."""
    out: list[list[int]] = []
    for hour in hours:
        if out and out[-1][1] == hour:
            out[-1][1] = hour + HOUR_MS
        else:
            out.append([hour, hour + HOUR_MS])
    return [(lo, hi) for lo, hi in out]


def sqlite_rows(conn: sqlite3.Connection, sel: Selection, busy_threshold: float, *, now_ms: int,
                own_host: str | None, use_rollup: bool) -> tuple["pl.DataFrame", "pl.DataFrame", dict[tuple[str, str], list[str]], set[str]]:
    """(minute rows, histogram, listed part files by (host, day), owned hosts),
    all from one snapshot of the database."""
    import polars as pl

    with snapshot(conn):
        listed: dict[tuple[str, str], list[str]] = {}
        owned: set[str] = set()
        if table_exists(conn, "archive_files"):
            owned = owned_hosts(conn, own_host)
            for host, day, path in conn.execute(
                    "SELECT host, day, path FROM archive_files WHERE table_name = 'gpu_metrics' AND day >= ? "
                    "AND day <= ?", (day_name(sel.since_ms), day_name(max(sel.since_ms, sel.until_ms - 1)))):
                listed.setdefault((host, day), []).append(path)
        gpus = sqlite_gpus(conn, sel) if table_exists(conn, "gpu_metrics") else {}
        if not gpus:
            return r.empty_minutes(), r.empty_histogram(), listed, owned
        hours = whole_hours(sel.since_ms, min(sel.until_ms, closed_until(now_ms))) if use_rollup else []
        rolled = current_hours(conn, hours, busy_threshold)[0]
        frames = [_rolled_minutes(conn, rolled)] if rolled else []
        hist_rows = conn.execute(
            "SELECT gpu_id, hour_ms, util, n FROM report_hist WHERE hour_ms IN (SELECT value FROM json_each(?))",
            (str(rolled),)).fetchall() if rolled else []
        for lo, hi in spans_without(sel.since_ms, sel.until_ms, rolled):
            rows, hist = reduce_span(conn, lo, hi, busy_threshold)
            frames.append(pl.DataFrame(rows, schema={c: pl.Int64 for c in _COLUMNS}, orient="row"))
            hist_rows += [(gpu_id, lo // HOUR_MS * HOUR_MS, util, n) for gpu_id, util, n in hist]
    ident = pl.DataFrame(
        [(gid, *info) for gid, info in gpus.items()],
        schema={"gpu_id": pl.Int64, "host": pl.String, "gpu_uuid": pl.String,
                "gpu_index": pl.Int64, "gpu_name": pl.String, "mem_total": pl.Int64}, orient="row")
    minutes = pl.concat(frames, how="vertical_relaxed").join(ident, on="gpu_id")
    hist = pl.DataFrame(hist_rows, schema={"gpu_id": pl.Int64, "hour_ms": pl.Int64, "util": pl.Int64,
                                           "n": pl.Int64}, orient="row").join(ident, on="gpu_id")
    return r.normalize(minutes), hist.select(list(r.HIST_SCHEMA)), listed, owned


@dataclass
class ArchiveRead:
    """What the archive adds: stored rollups to scan (folder, whole hours used), and rows rolled up here."""

    stored: list[tuple[Path, int, int]] = field(default_factory=list)
    minutes: list["pl.DataFrame"] = field(default_factory=list)
    hists: list["pl.DataFrame"] = field(default_factory=list)

    def add(self, minutes: "pl.DataFrame", hist: "pl.DataFrame") -> None:
        self.minutes.append(minutes)
        self.hists.append(hist)


def archive_days(archive_dir: Path, sel: Selection, listed: dict[tuple[str, str], list[str]],
                 owned: set[str]) -> list[tuple[str, Path, int, list[Path]]]:
    """(host, rollup folder, UTC day start, part files) of every archived day in the range:
    the manifest's files for the hosts this database archived, every file of the others."""
    table_dir = Path(archive_dir) / "gpu_metrics"
    if not table_dir.is_dir():
        return []
    out = []
    for host_folder in sorted(table_dir.glob("host=*")):
        host = host_of(host_folder.name)
        if sel.hosts and host not in sel.hosts:
            continue
        for day_folder in sorted(host_folder.glob("date=*")):
            start = r.day_start(day_folder.name)
            if start is None or start + DAY_MS <= sel.since_ms or start >= sel.until_ms:
                continue
            if host in owned:
                files = [Path(archive_dir) / p for p in sorted(listed.get((host, day_folder.name[5:]), []))]
                for gone in [f for f in files if not f.exists()]:
                    log.warning("%s: archived file is missing", gone)
                    files.remove(gone)
            else:
                files = sorted(day_folder.glob("*.parquet"))
            if files:
                out.append((host, r.rollup_folder(archive_dir, host_folder.name, day_folder.name), start, files))
    return out


def read_archive(archive_dir: Path, sel: Selection, busy_threshold: float,
                 listed: dict[tuple[str, str], list[str]], owned: set[str], *,
                 use_rollup: bool, progress: Callable[[int], Progress | None] | None = None) -> ArchiveRead:
    """The archived days of the range: whole hours from each day's rollup, the rest raw."""
    out = ArchiveRead()
    days = archive_days(archive_dir, sel, listed, owned)
    unrolled = []
    for host, folder, start, files in days:
        lo, hi = max(sel.since_ms, start), min(sel.until_ms, start + DAY_MS)
        hours = whole_hours(lo, hi) if use_rollup else []
        try:
            usable = bool(hours) and r.matches(r.read_sources(folder), r.day_sources(files), busy_threshold)
        except OSError:
            usable = False  # a listed file that is gone: the history reader says so
        if usable:
            out.stored.append((folder, hours[0], hours[-1] + HOUR_MS))
        elif hours and host not in owned:
            unrolled.append((host, folder, start, files, hours))
            continue
        else:
            hours = []
        for a, b in spans_without(lo, hi, hours):
            # The files of this snapshot's manifest, not a later one's: no row twice.
            out.add(*r.lazy_rollup(scan_files("gpu_metrics", [str(f) for f in files]),
                                   Selection(a, b, sel.hosts, sel.gpus), busy_threshold))
    tick = progress(len(unrolled)) if progress is not None and unrolled else None
    for host, folder, start, files, hours in unrolled:
        # Another host's raw archive: rolled up once, whole days, and kept beside its files.
        minutes, hist = r.roll_up_day(files, start, busy_threshold)
        try:
            r.write_day(folder, minutes, hist, r.day_sources(files), busy_threshold, root=Path(archive_dir))
        except OSError:
            pass  # a read-only archive: the next report rolls it up again
        lo, hi = max(sel.since_ms, start), min(sel.until_ms, start + DAY_MS)
        out.add(*_within(*_hours(minutes, hist, hours[0], hours[-1] + HOUR_MS), sel))
        for a, b in spans_without(lo, hi, hours):
            out.add(*r.lazy_rollup(scan_files("gpu_metrics", [str(f) for f in files]),
                                   Selection(a, b, sel.hosts, sel.gpus), busy_threshold))
        if tick is not None:
            tick(1)
    return out


def _within(minutes: "pl.DataFrame", hist: "pl.DataFrame", sel: Selection) -> tuple["pl.DataFrame", "pl.DataFrame"]:
    """Rollup rows of the GPUs the selection keeps."""
    minutes = minutes.filter(sel.gpu_filter())
    if sel.hosts or sel.gpus:
        hist = hist.join(minutes.select("host", "gpu_uuid").unique(), on=["host", "gpu_uuid"], how="semi")
    return r.normalize(minutes), hist.select(list(r.HIST_SCHEMA))


def _hours(minutes: "pl.DataFrame", hist: "pl.DataFrame", lo: int, hi: int) -> tuple["pl.DataFrame", "pl.DataFrame"]:
    import polars as pl

    return (minutes.filter((pl.col("minute") >= lo // BUCKET_MS) & (pl.col("minute") < hi // BUCKET_MS)),
            hist.filter((pl.col("hour_ms") >= lo) & (pl.col("hour_ms") < hi)))


def read_stored(stored: list[tuple[Path, int, int]], sel: Selection) -> tuple["pl.DataFrame", "pl.DataFrame"]:
    """The stored day rollups, each kind of file read in one scan, only the hours each day gives
    (all of them but at the range's ends)."""
    import polars as pl

    if not stored:
        return r.empty_minutes(), r.empty_histogram()
    lo, hi = min(s[1] for s in stored), max(s[2] for s in stored)
    whole = [folder for folder, a, b in stored if b - a == DAY_MS]
    parts = [folder for folder, a, b in stored if b - a != DAY_MS]
    frames = []
    for kind, ts in (("minutes", pl.col("minute") * BUCKET_MS), ("hist", pl.col("hour_ms"))):
        scans = [pl.scan_parquet([str(f / r.FILES[kind]) for f in whole])] if whole else []
        scans += [pl.scan_parquet(str(f / r.FILES[kind])).filter((ts >= a) & (ts < b))
                  for f, a, b in stored if f in parts]
        frames.append(pl.concat(scans).filter((ts >= lo) & (ts < hi)))
    return _within(*pl.collect_all(frames), sel)


def gpu_rollup(conn: sqlite3.Connection | None, archive_dir: Path | None, sel: Selection, busy_threshold: float,
               *, now_ms: int, own_host: str | None = None, use_rollup: bool = True,
               progress: Callable[[int], Progress | None] | None = None) -> tuple["pl.DataFrame", "pl.DataFrame"]:
    """(minute rows, hourly utilization histogram) of the selection from both stores.

    With ``use_rollup`` the SQLite hours of the range that have rows but no
    current rollup are rolled up first and stored (the write path's
    function, ``gpm.store.rollup.roll_up``); a database that cannot be
    written is read raw. ``use_rollup=False`` (``--no-cache``) reads and
    writes no rollup: every figure from raw rows. ``progress(total)`` returns
    a callback advanced once per hour or day rolled up (a progress bar).
    """
    import polars as pl

    listed: dict[tuple[str, str], list[str]] = {}
    owned: set[str] = set()
    parts, hists = [], []
    if conn is not None:
        if use_rollup and table_exists(conn, "gpu_metrics"):
            todo = hours_to_roll_up(conn, sel, busy_threshold, now_ms)
            if todo:
                try:
                    roll_up(conn, todo, busy_threshold, now_ms=now_ms,
                            progress=progress(len(todo)) if progress is not None else None)
                except sqlite3.Error:
                    pass  # read-only or busy: this report reads those hours raw
        minutes, hist, listed, owned = sqlite_rows(conn, sel, busy_threshold, now_ms=now_ms, own_host=own_host,
                                                   use_rollup=use_rollup)
        parts.append(minutes)
        hists.append(hist)
    if archive_dir is not None and Path(archive_dir).is_dir():
        got = read_archive(Path(archive_dir), sel, busy_threshold, listed, owned,
                           use_rollup=use_rollup, progress=progress)
        stored, stored_hist = read_stored(got.stored, sel)
        parts += [stored, *got.minutes]
        hists += [stored_hist, *got.hists]
    minutes, hist = r.merge(parts, hists)
    return minutes, hist.group_by("host", "gpu_uuid", "util").agg(pl.col("n").sum())


def archive_first_samples(archive_dir: Path | None, hosts: tuple[str, ...] = ()) -> dict[str, int]:
    """host -> its first archived GPU sample: the earliest day folder's first
    row (the database's ``gpus`` table knows only the hosts it sampled)."""
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
