"""The report's one rollup: one row per GPU and minute, and each hour's utilization histogram.

A week at 1 Hz on 8 GPUs is 4.8 million rows; the report never loops over
them in Python. They are rolled up to one row per GPU and minute of sums,
counts, extremes and the first and last sample of the minute, plus a
101-bin utilization histogram per GPU and hour (p95 is read from it: the
exact distribution of an integer percentage). Everything the report says is
computed from these rows (``gpm.report.build``), whichever store they came
from. The rollup is stored beside the rows it summarizes: in SQLite
(``gpm.store.rollup``, kept current by the write path) and, for an
archived day, beside its Parquet part files (``rollup_archived_days``,
called by `gpm archive` for the days it just moved); the raw rows it does
not cover (partial hours at a range's ends, hours not rolled up) are rolled
up on the fly by the same formulas (SQL in SQLite, ``lazy_rollup`` in Polars).

Why minutes are enough: a gap (the sampler not running) is at least
``MIN_GAP_SECS`` = 60 s long, so it always crosses a minute boundary, and its
two ends are the last sample of one minute and the first sample of a later
one: gaps and sampled time are exact. Busy and throttled time are the
minute's sampled time times the share of its samples that were busy or
throttled. Energy from the counter is the sum of its positive steps, exact
within a minute and across minutes (a counter reset, a driver reload, is a
negative step and is skipped). Every time zone's offset is whole minutes, so
local days are whole minutes too.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from gpm.gpu.sample import THROTTLE_REASONS
from gpm.store.archive import write_durably
from gpm.store.archive_files import fsync_dir, host_dir
from gpm.store.history import scan_files
from gpm.store.rollup import BUCKET_MS, HOUR_MS, MINUTE_COLUMNS, THROTTLING, THROTTLING_MASK, drop_moved_hours
from gpm.store.timeseries import DAY_MS

if TYPE_CHECKING:
    import polars as pl

MIN_GAP_SECS = 60.0

KEY = ["host", "gpu_uuid", "minute"]
SUM_COLUMNS = ["n", "util_n", "util_sum", "busy_n", "temp_n", "temp_sum", "power_n",
               "power_sum_mw", "energy_n", "energy_within_mj", "thr_n", "thr_any_n",
               *[f"thr_{name}_n" for name in THROTTLING]]
MAX_COLUMNS = ["temp_max", "mem_max", "mem_total"]
# (figure, numerator, denominator): busy and throttled time are a minute's
# sampled time times these shares of its samples.
SHARES = (("busy", "busy_n", "util_n"), ("thr_any", "thr_any_n", "thr_n"),
          *[(f"thr_{r}", f"thr_{r}_n", "thr_n") for r in THROTTLING])
MINUTE_SCHEMA = {
    "host": "String", "gpu_uuid": "String", "gpu_index": "Int64", "gpu_name": "String",
    "minute": "Int64", "first_ts_ms": "Int64", "last_ts_ms": "Int64",
    **{c: "Int64" for c in SUM_COLUMNS}, **{c: "Int64" for c in MAX_COLUMNS},
    "power_first_mw": "Int64", "energy_first_mj": "Int64", "energy_last_mj": "Int64",
}
HIST_SCHEMA = {"host": "String", "gpu_uuid": "String", "hour_ms": "Int64", "util": "Int64", "n": "Int64"}
assert set(MINUTE_COLUMNS) <= set(MINUTE_SCHEMA)


@dataclass(frozen=True)
class Selection:
    """Which rows: a time range and optional host and GPU filters."""

    since_ms: int
    until_ms: int
    hosts: tuple[str, ...] = ()
    gpus: tuple[str, ...] = ()  # GPU indexes ("0") or UUIDs (or UUID prefixes)

    def gpu_matches(self, uuid: str | None, index: int | None) -> bool:
        if not self.gpus:
            return True
        for want in self.gpus:
            if want.isdigit() and index == int(want):
                return True
            if uuid and uuid.lower().startswith(want.lower()):
                return True
        return False

    def gpu_filter(self) -> "pl.Expr":
        """The host and GPU filters as a Polars expression over ``host``, ``gpu_uuid``, ``gpu_index``."""
        import polars as pl

        cond = pl.lit(True)
        if self.hosts:
            cond = cond & pl.col("host").is_in(list(self.hosts))
        if self.gpus:
            one = pl.lit(False)
            for want in self.gpus:
                if want.isdigit():
                    one = one | (pl.col("gpu_index") == int(want))
                one = one | pl.col("gpu_uuid").str.to_lowercase().str.starts_with(want.lower())
            cond = cond & one
        return cond


def normalize(frame: "pl.DataFrame") -> "pl.DataFrame":
    """The minute rows' columns and types."""
    import polars as pl

    return frame.select([pl.col(c).cast(getattr(pl, t)) for c, t in MINUTE_SCHEMA.items()])


def empty_minutes() -> "pl.DataFrame":
    import polars as pl

    return pl.DataFrame(schema={c: getattr(pl, t) for c, t in MINUTE_SCHEMA.items()})


def empty_histogram() -> "pl.DataFrame":
    import polars as pl

    return pl.DataFrame(schema={c: getattr(pl, t) for c, t in HIST_SCHEMA.items()})


def lazy_rollup(lf: "pl.LazyFrame", sel: Selection, busy_threshold: float) -> tuple["pl.DataFrame", "pl.DataFrame"]:
    """(minute rows, hourly histogram) of raw rows shaped like the history
    reader's ``gpu_metrics`` (host, gpu_uuid, gpu_index, gpu_name, ts_ms + metric columns):
    the same figures ``gpm.store.rollup.reduce_span`` computes in SQL."""
    import polars as pl

    lf = lf.filter((pl.col("ts_ms") >= sel.since_ms) & (pl.col("ts_ms") < sel.until_ms) & sel.gpu_filter())
    e = pl.col("energy_millijoules")
    ts = pl.col("ts_ms")
    util = pl.col("utilization_gpu_percent")
    thr = pl.col("throttle_reasons")
    # Archived part files hold one host and day each, sorted by GPU and time,
    # and are read in order: the rows arrive as runs of one GPU in time
    # order. They are sorted only when that does not hold (sorting a year of
    # rows by strings takes longer than everything else). ``run`` numbers
    # those runs and ``key`` is (run, minute) as one integer, so the
    # counter's steps are plain vectorised shifts.
    needed = ["host", "gpu_uuid", "gpu_index", "gpu_name", "ts_ms", "utilization_gpu_percent",
              "temperature_celsius", "memory_used_bytes", "memory_total_bytes", "power_milliwatts",
              "energy_millijoules", "throttle_reasons"]
    df = lf.select(needed).collect()
    same_gpu = (pl.col("host") == pl.col("host").shift(1)) & (pl.col("gpu_uuid") == pl.col("gpu_uuid").shift(1))
    if df.select((same_gpu & (ts < ts.shift(1))).any()).item():
        df = df.sort("host", "gpu_uuid", "ts_ms")
    lf = (
        df.lazy()
        .with_columns(minute=ts // BUCKET_MS, run=(~same_gpu).fill_null(True).cum_sum())
        .with_columns(key=pl.col("run").cast(pl.Int64) * 1_000_000_000_000 + pl.col("minute"))
        .with_columns(
            _prev_e=e.forward_fill().shift(1),
            _prev_key=pl.when(e.is_not_null()).then(pl.col("key")).forward_fill().shift(1),
        )
        .with_columns(
            _step=pl.when((pl.col("_prev_key") == pl.col("key")) & (e > pl.col("_prev_e")))
            .then(e - pl.col("_prev_e")).otherwise(0)
        )
    )
    aggs = [
        pl.col("host", "gpu_uuid", "minute").first(),
        pl.col("gpu_index").last(), pl.col("gpu_name").last(),
        pl.len().alias("n"),
        pl.col("ts_ms").min().alias("first_ts_ms"), pl.col("ts_ms").max().alias("last_ts_ms"),
        util.count().alias("util_n"), util.sum().alias("util_sum"),
        (util > busy_threshold).sum().alias("busy_n"),
        pl.col("temperature_celsius").count().alias("temp_n"),
        pl.col("temperature_celsius").sum().alias("temp_sum"),
        pl.col("temperature_celsius").max().alias("temp_max"),
        pl.col("memory_used_bytes").max().alias("mem_max"),
        pl.col("memory_total_bytes").max().alias("mem_total"),
        pl.col("power_milliwatts").count().alias("power_n"),
        pl.col("power_milliwatts").sum().alias("power_sum_mw"),
        e.count().alias("energy_n"),
        thr.count().alias("thr_n"),
        ((thr & THROTTLING_MASK) != 0).sum().alias("thr_any_n"),
        *[((thr & THROTTLE_REASONS[name]) != 0).sum().alias(f"thr_{name}_n") for name in THROTTLING],
        pl.col("power_milliwatts").first().alias("power_first_mw"),
        e.first().alias("energy_first_mj"), e.last().alias("energy_last_mj"),
        pl.when(e.count() > 0).then(pl.col("_step").sum()).alias("energy_within_mj"),
    ]
    minutes, hist = pl.collect_all([
        lf.group_by("key").agg(aggs).drop("key").sort("host", "gpu_uuid", "minute"),
        lf.filter(util.is_not_null()).group_by("host", "gpu_uuid", (ts // HOUR_MS * HOUR_MS).alias("hour_ms"),
                                               util.alias("util")).agg(pl.len().alias("n")),
    ])
    return normalize(minutes), hist.select([pl.col(c).cast(getattr(pl, t)) for c, t in HIST_SCHEMA.items()])


def merge(parts: list["pl.DataFrame"], hists: list["pl.DataFrame"]) -> tuple["pl.DataFrame", "pl.DataFrame"]:
    """Minute rows and histograms of several stores as one; a minute found in
    two (rows of one minute both in SQLite and in the archive) is merged, its
    counter step across the stores included."""
    import polars as pl

    parts = [p for p in parts if not p.is_empty()]
    frame = pl.concat(parts) if parts else empty_minutes()
    hist = pl.concat(hists) if hists else empty_histogram()
    # Each part holds a minute once; only parts whose minutes overlap can
    # share one (a check of every key of a year costs seconds).
    spans = sorted((p["minute"].min(), p["minute"].max()) for p in parts)
    overlap = any(b[0] <= a[1] for a, b in zip(spans, spans[1:]))
    if overlap and frame.select(pl.struct(KEY).is_duplicated().any()).item():
        frame = normalize(frame.sort("first_ts_ms").group_by(KEY, maintain_order=True).agg(
            pl.col("gpu_index", "gpu_name").last(),
            pl.col("first_ts_ms").min(), pl.col("last_ts_ms").max(),
            *[pl.col(c).sum() for c in SUM_COLUMNS if c != "energy_within_mj"],
            *[pl.col(c).max() for c in MAX_COLUMNS],
            pl.col("power_first_mw").first(), pl.col("energy_first_mj").first(),
            pl.col("energy_last_mj").last(),
            (pl.col("energy_within_mj").sum()
             + (pl.col("energy_first_mj") - pl.col("energy_last_mj").shift(1)).clip(lower_bound=0).sum()
             ).alias("energy_within_mj"),
        ))
    # Unsorted: the report's windows order each GPU's minutes themselves
    # (sorting a year's 4.2 M rows took 3-5 s).
    return frame, hist


# --------------------------------------------------------------------------- archived days

ROLLUP_DIR = "gpu_reductions"
# Parquet, but not named *.parquet: in the archive that means a part file of the manifest.
FILES = {"minutes": "minutes.pq", "hist": "hist.pq"}
FORMAT_VERSION = 2  # 1: quarter hours (before #14.1), rolled up again as minutes


def rollup_folder(archive_dir: Path, host_folder: str, day_folder: str) -> Path:
    return Path(archive_dir) / ROLLUP_DIR / host_folder / day_folder


reduction_folder = rollup_folder  # the name gpm.doctor and older branches use


def day_start(name: str) -> int | None:
    """``date=2025-03-03`` (or the bare date) -> its UTC midnight in ms."""
    try:
        return (date.fromisoformat(name.removeprefix("date=")) - date(1970, 1, 1)).days * DAY_MS
    except ValueError:
        return None


def day_sources(files: list[Path]) -> list[list]:
    return sorted([f.name, f.stat().st_size] for f in files)


def read_sources(folder: Path) -> dict | None:
    """A stored rollup's record, None unless it and both its files are there."""
    try:
        meta = json.loads((folder / "sources.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if all((folder / name).is_file() for name in FILES.values()) else None


def matches(meta: dict | None, sources: list[list], busy_threshold: float) -> bool:
    """Whether a stored rollup summarizes exactly these part files with this busy threshold."""
    return bool(meta) and meta.get("version") == FORMAT_VERSION and meta.get("files") == sources \
        and meta.get("busy_threshold_percent") == busy_threshold


def roll_up_day(files: list[Path], day_ms: int, busy_threshold: float) -> tuple["pl.DataFrame", "pl.DataFrame"]:
    """(minute rows, hourly histogram) of one host's part files of one UTC day."""
    return lazy_rollup(scan_files("gpu_metrics", [str(f) for f in files]),
                       Selection(day_ms, day_ms + DAY_MS), busy_threshold)


def write_day(folder: Path, minutes: "pl.DataFrame", hist: "pl.DataFrame", sources: list[list],
              busy_threshold: float, *, root: Path) -> None:
    """Store a day's rollup, as durably as the part files; ``sources.json``
    last (its presence, naming the files, marks a whole rollup)."""
    meta = json.dumps({"version": FORMAT_VERSION, "busy_threshold_percent": busy_threshold, "files": sources})
    (folder / "sources.json").unlink(missing_ok=True)
    for name, frame in (("minutes", minutes), ("hist", hist)):
        write_durably(frame, folder / FILES[name], root=root)
    (folder / "partials.pq").unlink(missing_ok=True)  # a quarter-hour rollup of FORMAT_VERSION 1
    tmp = folder / ".sources.json.tmp"
    with open(tmp, "w") as fh:
        fh.write(meta)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, folder / "sources.json")
    fsync_dir(folder)


BACKFILL_DAYS = 31  # days archived earlier (or by a killed run) rolled up per `gpm archive` run


def rollup_archived_days(conn: sqlite3.Connection, archive_dir: Path, busy_threshold: float, *,
                         created_since_ms: int, backfill_days: int = BACKFILL_DAYS) -> int:
    """Store the rollup of every (host, UTC day) of ``gpu_metrics`` that got a
    part file since ``created_since_ms`` beside its files (`gpm archive` calls
    it for the days it just moved), and of up to ``backfill_days`` more
    archived days without a current one (newest first: archives from before
    rollups, a run killed while writing one); then drop the SQLite rollups of
    the hours that left the database. Return how many days were rolled up.
    A rollup names the day's part files in the manifest, so it is used only
    while they are exactly those."""
    root = Path(archive_dir)
    days: dict[tuple[str, str], list[Path]] = {}
    fresh: set[tuple[str, str]] = set()
    for host, day, path, created in conn.execute(
            "SELECT host, day, path, created_ms FROM archive_files WHERE table_name = 'gpu_metrics'"):
        days.setdefault((host, day), []).append(root / path)
        if created >= created_since_ms:
            fresh.add((host, day))
    for host in {h for h, _ in days}:
        for tmp in (root / ROLLUP_DIR / host_dir(host)).glob("date=*/.*.tmp"):
            tmp.unlink(missing_ok=True)  # left by a run killed while writing
    done = backfilled = 0
    for (host, day), files in sorted(days.items(), key=lambda kv: kv[0][1], reverse=True):
        if (host, day) not in fresh and backfilled >= backfill_days:
            continue
        folder = rollup_folder(root, host_dir(host), f"date={day}")
        try:
            sources = day_sources(files)
        except OSError:
            continue  # a listed file that is gone: `gpm archive` reports it
        if matches(read_sources(folder), sources, busy_threshold):
            continue
        start = day_start(day)
        write_day(folder, *roll_up_day(files, start, busy_threshold), sources, busy_threshold, root=root)
        done += 1
        backfilled += (host, day) not in fresh
    moved = [day_start(day) for _, day in fresh]
    if moved:
        drop_moved_hours(conn, min(moved), max(moved) + DAY_MS)
    return done


