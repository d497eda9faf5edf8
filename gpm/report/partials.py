"""Stage one of the report: raw GPU samples -> per-GPU, per-minute partials.

A week at 1 Hz on 8 GPUs is 4.8 million rows; the report never loops over
them in Python. They are reduced where they live — by one SQL query in SQLite,
by a lazy Polars query over the Parquet archive — to one row per GPU and
minute of sums, counts, extremes and the first and last sample of the minute.
Everything the report says is then computed from these partials (stage two,
``gpm.report.build``), whichever store the rows came from.

Why minutes are enough: a gap (the sampler not running) is at least
``MIN_GAP_SECS`` = 60 s long, so it always crosses a minute boundary, and its
two ends are the last sample of one minute and the first sample of a later
one: gaps and sampled time are exact. Busy and throttled time are the
minute's sampled time times the share of its samples that were busy or
throttled. Energy from the counter is the sum of its positive steps, exact
within a minute and across minutes (a counter reset — a driver reload — is a
negative step and is skipped).

Utilization is an integer percentage, so its exact distribution is a
101-bin histogram per GPU (``histogram``), from which p95 is read.
"""

from __future__ import annotations

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpm.gpu.model import THROTTLE_REASONS
from gpm.store.reductions import (BUCKET_MS, CLOSED_AFTER_MS, HOUR_MS, MINUTE_COLUMNS, THROTTLING,
                                  THROTTLING_MASK, drop_hour, fingerprint, reduce_span, store_hours)

if TYPE_CHECKING:
    import polars as pl

MIN_GAP_SECS = 60.0
DAY_MS = 86_400_000

KEY = ["host", "gpu_uuid", "minute"]
GPU_COLUMNS = ["host", "gpu_uuid", "gpu_index", "gpu_name"]
SUM_COLUMNS = ["n", "util_n", "util_sum", "busy_n", "temp_n", "temp_sum", "power_n",
               "power_sum_mw", "energy_n", "energy_within_mj", "thr_n", "thr_any_n",
               *[f"thr_{name}_n" for name in THROTTLING]]
MAX_COLUMNS = ["temp_max", "mem_max", "mem_total"]


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


def sqlite_gpus(conn: sqlite3.Connection, sel: Selection) -> dict[int, tuple]:
    """gpus.id -> (host, uuid, index, name, memory total) for the GPUs the selection keeps."""
    try:
        rows = conn.execute("SELECT id, host, uuid, gpu_index, name, memory_total_bytes FROM gpus").fetchall()
    except sqlite3.OperationalError:
        return {}
    return {
        r[0]: tuple(r[1:]) for r in rows
        if (not sel.hosts or r[1] in sel.hosts) and sel.gpu_matches(r[2], r[3])
    }


_ROW_SCHEMA = ("minute", "gpu_id", *MINUTE_COLUMNS)


def _frames(rows: list[tuple], hist: list[tuple]) -> tuple["pl.DataFrame", "pl.DataFrame"]:
    import polars as pl

    frame = pl.DataFrame(rows, schema={n: pl.Int64 for n in _ROW_SCHEMA}, orient="row")
    hframe = pl.DataFrame(hist, schema={"gpu_id": pl.Int64, "util": pl.Int64, "n": pl.Int64}, orient="row")
    return frame, hframe


def _read_minutes(db_path: str, since_minute: int, until_minute: int, threads: int) -> "pl.DataFrame":
    """``report_minutes`` rows of [since, until) as a frame.

    Each column crosses from SQLite as one comma-separated text (NULL as an
    empty field) that Polars splits and parses: a week of 8 GPUs is 80,640
    rows, which as Python tuples take twice as long. All the aggregates of
    one query see the rows in the same order. The range is split among
    ``threads`` connections (sqlite3 lets go of the GIL while SQLite works).
    """
    import polars as pl

    from gpm.store.db import connect

    select = ", ".join(f"group_concat(coalesce({c}, ''), ',')" for c in _ROW_SCHEMA)
    step = max(1, -(-(until_minute - since_minute) // max(1, threads)))
    bounds = [(lo, min(lo + step, until_minute)) for lo in range(since_minute, until_minute, step)]

    def run(span: tuple[int, int]) -> tuple:
        c = connect(db_path, readonly=True)
        try:
            return c.execute(f"SELECT count(*), {select} FROM report_minutes WHERE minute >= ? AND minute < ?",
                             span).fetchone()
        finally:
            c.close()

    with ThreadPoolExecutor(max_workers=max(1, len(bounds))) as pool:
        results = [r for r in pool.map(run, bounds) if r[0]]
    if not results:
        return pl.DataFrame(schema={n: pl.Int64 for n in _ROW_SCHEMA})
    return pl.DataFrame({
        name: pl.Series([r[i + 1] for r in results]).str.split(",").explode().cast(pl.Int64, strict=False)
        for i, name in enumerate(_ROW_SCHEMA)
    })


def _archived_intact(conn: sqlite3.Connection, hour: int, entry: tuple) -> bool:
    """Whether a reduced hour whose rows left SQLite is still whole: `gpm archive`
    moved exactly what the reduction saw (every part file of that UTC day was
    recorded after the hour was reduced, and they span its first and last sample)."""
    from datetime import datetime, timezone

    day = datetime.fromtimestamp(hour / 1000, tz=timezone.utc).strftime("%Y-%m-%d")
    try:
        n, created, lo, hi = conn.execute(
            "SELECT count(*), min(created_ms), min(min_ts_ms), max(max_ts_ms) FROM archive_files "
            "WHERE table_name = 'gpu_metrics' AND day = ?", (day,)).fetchone()
    except sqlite3.OperationalError:  # no archive table in this database
        return False
    return bool(n) and created >= entry[3] and lo <= entry[0] and hi >= entry[1]


def sqlite_partials(conn: sqlite3.Connection, db_path: str, sel: Selection, busy_threshold: float,
                    *, now_ms: int, use_cache: bool = True, threads: int = 2,
                    archived_hours: list[int] | None = None,
                    archive_days: set[int] = frozenset()) -> tuple["pl.DataFrame", "pl.DataFrame"]:
    """(partials, histogram) of the SQLite rows in the selection.

    Whole closed hours come from the reduction tables (``report_minutes``,
    ``report_hist``) when their fingerprint (first and last sample, busy
    threshold) still matches; an hour not reduced yet, or changed since, is
    reduced here and stored (``use_cache=False`` neither reads nor writes
    them). A reduced hour whose rows `gpm archive` has since moved is still
    used while the archive holds exactly those rows (``_archived_intact``);
    such hours are appended to ``archived_hours`` so that the caller does not
    read them from Parquet again, except in ``archive_days`` (UTC day starts),
    whose reductions the archive holds itself (fewer rows). Raw rows are reduced by ``threads``
    parallel read-only connections (sqlite3 releases the GIL while a query runs).
    """
    import polars as pl

    from gpm.store.db import connect, write

    gpus = sqlite_gpus(conn, sel)
    if not gpus:
        return empty_partials(), empty_histogram()
    first_hour = -(-sel.since_ms // HOUR_MS) * HOUR_MS
    last_hour = min(sel.until_ms, now_ms - CLOSED_AFTER_MS) // HOUR_MS * HOUR_MS
    hours = list(range(first_hour, last_hour, HOUR_MS))
    spans: list[tuple[int, int]] = []
    if hours:
        if sel.since_ms < hours[0]:
            spans.append((sel.since_ms, hours[0]))
        if hours[-1] + HOUR_MS < sel.until_ms:
            spans.append((hours[-1] + HOUR_MS, sel.until_ms))
    else:
        spans.append((sel.since_ms, sel.until_ms))
    if not use_cache:
        spans += [(hour, hour + HOUR_MS) for hour in hours]
        hours = []

    cached: dict[int, tuple] = {}
    if hours:
        cached = {r[0]: r[1:] for r in conn.execute(
            "SELECT hour_ms, first_ts_ms, last_ts_ms, busy_threshold_percent, computed_ms "
            "FROM report_hours WHERE hour_ms >= ? AND hour_ms < ?", (hours[0], hours[-1] + HOUR_MS))}
    valid, stale, todo = [], [], []
    for hour in hours:
        fp = fingerprint(conn, hour)
        entry = cached.get(hour)
        if fp[0] is None:
            if hour // DAY_MS * DAY_MS in archive_days:
                continue
            if entry and entry[2] == busy_threshold and _archived_intact(conn, hour, entry):
                valid.append(hour)
                if archived_hours is not None:
                    archived_hours.append(hour)
            elif entry:
                stale.append(hour)
        elif entry and entry[:3] == (*fp, busy_threshold):
            valid.append(hour)
        else:
            todo.append((hour, fp))
    spans += [(hour, hour + HOUR_MS) for hour, _ in todo]

    def run(span: tuple[int, int]):
        c = connect(db_path, readonly=True)
        try:
            return reduce_span(c, span[0], span[1], busy_threshold)
        finally:
            c.close()

    parts, hists = [], []
    if valid:
        lo, hi = valid[0], valid[-1] + HOUR_MS
        frame = _read_minutes(db_path, lo // BUCKET_MS, hi // BUCKET_MS, threads)
        if len(valid) != (hi - lo) // HOUR_MS:  # a hole of hours reduced again below
            frame = frame.filter((pl.col("minute") * BUCKET_MS // HOUR_MS * HOUR_MS).is_in(valid))
        parts.append(frame)
        hists.append(pl.DataFrame(conn.execute(
            "SELECT gpu_id, util, sum(n) FROM report_hist WHERE hour_ms IN (SELECT value FROM json_each(?)) "
            "GROUP BY gpu_id, util", (json.dumps(valid),)).fetchall(),
            schema={"gpu_id": pl.Int64, "util": pl.Int64, "n": pl.Int64}, orient="row"))
    if spans:
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(spans)))) as pool:
            results = list(pool.map(run, spans))
        for rows, hist in results:
            frame, hframe = _frames(rows, hist)
            parts.append(frame)
            hists.append(hframe)
        if todo or stale:
            fresh = dict(zip((s[0] for s in spans), results))
            with write(conn):
                for hour in stale:
                    drop_hour(conn, hour)
                store_hours(conn, busy_threshold, now_ms, [(hour, fp, *fresh[hour]) for hour, fp in todo])
    parts = [p for p in parts if not p.is_empty()]
    if not parts:
        return empty_partials(), empty_histogram()
    ident = pl.DataFrame(
        [(gid, *info) for gid, info in gpus.items()],
        schema={"gpu_id": pl.Int64, "host": pl.String, "gpu_uuid": pl.String,
                "gpu_index": pl.Int64, "gpu_name": pl.String, "mem_total": pl.Int64},
        orient="row",
    )
    frame = pl.concat(parts, how="vertical_relaxed").join(ident, on="gpu_id")
    hist = pl.concat(hists, how="vertical_relaxed").join(ident.select("gpu_id", "host", "gpu_uuid"), on="gpu_id")
    return normalize(frame), hist.group_by("host", "gpu_uuid", "util").agg(pl.col("n").sum())

def lazy_partials(lf: "pl.LazyFrame", sel: Selection,
                  busy_threshold: float) -> tuple["pl.DataFrame", "pl.DataFrame"]:
    """(partials, histogram) of a LazyFrame shaped like the history reader's
    ``gpu_metrics`` (host, gpu_uuid, gpu_index, gpu_name, ts_ms + metric columns)."""
    import polars as pl

    lf = lf.filter((pl.col("ts_ms") >= sel.since_ms) & (pl.col("ts_ms") < sel.until_ms))
    if sel.hosts:
        lf = lf.filter(pl.col("host").is_in(list(sel.hosts)))
    if sel.gpus:
        cond = pl.lit(False)
        for want in sel.gpus:
            if want.isdigit():
                cond = cond | (pl.col("gpu_index") == int(want))
            cond = cond | pl.col("gpu_uuid").str.to_lowercase().str.starts_with(want.lower())
        lf = lf.filter(cond)
    e = pl.col("energy_millijoules")
    ts = pl.col("ts_ms")
    util = pl.col("utilization_gpu_percent")
    thr = pl.col("throttle_reasons")
    # Archived part files hold one host and day each, sorted by GPU and time,
    # and the history reader reads them in order: the rows arrive as runs of
    # one GPU in time order. They are sorted only when that does not hold
    # (sorting a year of rows by strings takes longer than everything else).
    # ``run`` numbers those runs and ``key`` is (run, minute) as one integer,
    # so the counter's steps are plain vectorised shifts.
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
    frames = pl.collect_all([
        lf.group_by("key").agg(aggs).drop("key").sort("host", "gpu_uuid", "minute"),
        lf.filter(util.is_not_null()).group_by("host", "gpu_uuid", util.alias("util"))
        .agg(pl.len().alias("n")),
    ])
    return normalize(frames[0]), frames[1].with_columns(pl.col("util", "n").cast(pl.Int64))


# Quarter rows (``gpm.report.quarters``) also carry what a minute row's
# figures are derived from inside the quarter: the time-weighted shares and
# integrated power of its minutes (``*_within``), the counts of its first
# minute (``in_*``, for the interval leading into it) and its longest step
# between minutes. Minute rows leave these null and ``span_minutes`` at 1.
SHARES = (("busy", "busy_n", "util_n"), ("thr_any", "thr_any_n", "thr_n"),
          *[(f"thr_{r}", f"thr_{r}_n", "thr_n") for r in THROTTLING])
QUARTER_COLUMNS = {
    "span_minutes": "Int64", "max_step_ms": "Int64",
    **{f"{name}_within_ms": "Float64" for name, _, _ in SHARES}, "power_within_uj": "Float64",
    **{f"in_{c}": "Int64" for c in sorted({c for _, num, den in SHARES for c in (num, den)})},
}
PARTIAL_SCHEMA = {
    "host": "String", "gpu_uuid": "String", "gpu_index": "Int64", "gpu_name": "String",
    "minute": "Int64", "first_ts_ms": "Int64", "last_ts_ms": "Int64",
    **{c: "Int64" for c in SUM_COLUMNS}, **{c: "Int64" for c in MAX_COLUMNS},
    "power_first_mw": "Int64", "energy_first_mj": "Int64", "energy_last_mj": "Int64",
    **QUARTER_COLUMNS,
}


def normalize(frame: "pl.DataFrame") -> "pl.DataFrame":
    """The partials' columns and types; a frame of minute rows gets the quarter columns (span 1, nulls)."""
    import polars as pl

    def column(name: str, kind: str) -> "pl.Expr":
        if name in frame.columns:
            return pl.col(name).cast(getattr(pl, kind))
        default = 1 if name == "span_minutes" else None
        return pl.lit(default, dtype=getattr(pl, kind)).alias(name)

    return frame.select([column(c, t) for c, t in PARTIAL_SCHEMA.items()])


def empty_partials() -> "pl.DataFrame":
    import polars as pl

    return pl.DataFrame(schema={c: getattr(pl, t) for c, t in PARTIAL_SCHEMA.items()})


def empty_histogram() -> "pl.DataFrame":
    import polars as pl

    return pl.DataFrame(schema={"host": pl.String, "gpu_uuid": pl.String, "util": pl.Int64, "n": pl.Int64})


def merge(parts: list["pl.DataFrame"], hists: list["pl.DataFrame"]) -> tuple["pl.DataFrame", "pl.DataFrame"]:
    """Combine partials of several stores; a minute found in two (rows at the
    archive's border) is merged, its counter step across the stores included."""
    import polars as pl

    parts = [p for p in parts if not p.is_empty()]
    frame = pl.concat(parts) if parts else empty_partials()
    hist = pl.concat(hists) if hists else empty_histogram()
    # Each part holds a minute once; only parts whose minutes overlap can
    # share one (a check of every key of a year costs seconds).
    spans = sorted((p["minute"].min(), p["minute"].max()) for p in parts)
    overlap = any(b[0] <= a[1] for a, b in zip(spans, spans[1:]))
    if overlap and frame.select(pl.struct(KEY).is_duplicated().any()).item():
        frame = frame.sort("first_ts_ms").group_by(KEY, maintain_order=True).agg(
            pl.col("gpu_index", "gpu_name").last(),
            pl.col("first_ts_ms").min(), pl.col("last_ts_ms").max(),
            *[pl.col(c).sum() for c in SUM_COLUMNS if c != "energy_within_mj"],
            *[pl.col(c).max() for c in MAX_COLUMNS],
            pl.col("power_first_mw").first(), pl.col("energy_first_mj").first(),
            pl.col("energy_last_mj").last(),
            (pl.col("energy_within_mj").sum()
             + (pl.col("energy_first_mj") - pl.col("energy_last_mj").shift(1)).clip(lower_bound=0).sum()
             ).alias("energy_within_mj"),
        )
        frame = normalize(frame)
    hist = hist.group_by("host", "gpu_uuid", "util").agg(pl.col("n").sum())
    return frame.sort("host", "gpu_uuid", "minute"), hist
