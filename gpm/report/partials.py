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

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from gpm.gpu.model import THROTTLE_REASONS

if TYPE_CHECKING:
    import polars as pl

BUCKET_MS = 60_000
MIN_GAP_SECS = 60.0

# Reasons that mean "the GPU was held back"; idle, application clocks,
# display clocks and sync boost are not throttling.
THROTTLING = ("sw_power_cap", "hw_slowdown", "sw_thermal_slowdown",
              "hw_thermal_slowdown", "hw_power_brake_slowdown")
THROTTLING_MASK = sum(THROTTLE_REASONS[name] for name in THROTTLING)

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


def _throttle_sql() -> str:
    parts = [f"sum((throttle_reasons & {THROTTLING_MASK}) != 0) AS thr_any_n"]
    parts += [f"sum((throttle_reasons & {THROTTLE_REASONS[name]}) != 0) AS thr_{name}_n"
              for name in THROTTLING]
    return ",\n        ".join(parts)


_BUCKETS_SQL = f"""
WITH b AS (
    SELECT gpu_id, ts_ms / {BUCKET_MS} AS minute, count(*) AS n,
        min(ts_ms) AS first_ts_ms, max(ts_ms) AS last_ts_ms,
        count(utilization_gpu_percent) AS util_n, sum(utilization_gpu_percent) AS util_sum,
        sum(utilization_gpu_percent > :busy) AS busy_n,
        count(temperature_celsius) AS temp_n, sum(temperature_celsius) AS temp_sum,
        max(temperature_celsius) AS temp_max,
        max(memory_used_bytes) AS mem_max,
        (SELECT memory_total_bytes FROM gpus WHERE gpus.id = gpu_id) AS mem_total,
        count(power_milliwatts) AS power_n, sum(power_milliwatts) AS power_sum_mw,
        count(energy_millijoules) AS energy_n,
        min(energy_millijoules) AS energy_min_mj, max(energy_millijoules) AS energy_max_mj,
        count(throttle_reasons) AS thr_n,
        {_throttle_sql()}
    FROM gpu_metrics
    WHERE ts_ms >= :since AND ts_ms < :until
    GROUP BY gpu_id, minute
)
SELECT b.*, f.power_milliwatts AS power_first_mw, f.energy_millijoules AS energy_first_mj,
       l.energy_millijoules AS energy_last_mj
FROM b
JOIN gpu_metrics f ON f.ts_ms = b.first_ts_ms AND f.gpu_id = b.gpu_id
JOIN gpu_metrics l ON l.ts_ms = b.last_ts_ms AND l.gpu_id = b.gpu_id
"""

_HISTOGRAM_SQL = """
SELECT gpu_id, utilization_gpu_percent AS util, count(*) AS n
FROM gpu_metrics
WHERE ts_ms >= :since AND ts_ms < :until AND utilization_gpu_percent IS NOT NULL
GROUP BY gpu_id, util
"""


def sqlite_gpus(conn: sqlite3.Connection, sel: Selection) -> dict[int, tuple]:
    """gpus.id -> (host, uuid, index, name) for the GPUs the selection keeps."""
    try:
        rows = conn.execute("SELECT id, host, uuid, gpu_index, name FROM gpus").fetchall()
    except sqlite3.OperationalError:
        return {}
    return {
        r[0]: tuple(r[1:]) for r in rows
        if (not sel.hosts or r[1] in sel.hosts) and sel.gpu_matches(r[2], r[3])
    }


def _positive_steps(values: Iterable[int | None]) -> int:
    total, prev = 0, None
    for v in values:
        if v is None:
            continue
        if prev is not None and v > prev:
            total += v - prev
        prev = v
    return total


HOUR_MS = 3_600_000
# An hour is cached only once it has been over this long: the sampler may
# still be writing the current one.
CLOSED_AFTER_MS = 5 * 60_000


def _reduce_span(conn: sqlite3.Connection, since_ms: int, until_ms: int,
                 busy_threshold: float) -> tuple[list[str], list[tuple], list[tuple]]:
    """Raw rows of [since, until) -> (column names, partial rows, histogram rows), all GPUs."""
    p = {"busy": busy_threshold, "since": since_ms, "until": until_ms}
    cur = conn.execute(_BUCKETS_SQL, p)
    names = [d[0] for d in cur.description]
    rows = cur.fetchall()
    # A minute whose counter is not monotonic (a reset, a missing reading)
    # gets its positive steps summed from its rows.
    ix = {name: i for i, name in enumerate(names)}
    out = []
    for r in rows:
        if r[ix["energy_max_mj"]] is None:
            within = None
        elif r[ix["energy_first_mj"]] == r[ix["energy_min_mj"]] and r[ix["energy_last_mj"]] == r[ix["energy_max_mj"]]:
            within = r[ix["energy_max_mj"]] - r[ix["energy_min_mj"]]
        else:
            values = conn.execute(
                "SELECT energy_millijoules FROM gpu_metrics WHERE gpu_id = ? AND ts_ms >= ? "
                "AND ts_ms <= ? ORDER BY ts_ms",
                (r[ix["gpu_id"]], r[ix["first_ts_ms"]], r[ix["last_ts_ms"]]),
            ).fetchall()
            within = _positive_steps(v[0] for v in values)
        out.append((*r, within))
    hist = conn.execute(_HISTOGRAM_SQL, p).fetchall()
    return names + ["energy_within_mj"], out, hist


def _frames(names: list[str], rows: list[tuple], hist: list[tuple]) -> tuple["pl.DataFrame", "pl.DataFrame"]:
    import polars as pl

    schema = {n: pl.Int64 for n in names}
    frame = pl.DataFrame(rows, schema=schema, orient="row").drop("energy_min_mj", "energy_max_mj")
    hframe = pl.DataFrame(hist, schema={"gpu_id": pl.Int64, "util": pl.Int64, "n": pl.Int64}, orient="row")
    return frame, hframe


def _to_blob(frame: "pl.DataFrame") -> bytes:
    import io

    buf = io.BytesIO()
    frame.write_ipc_stream(buf, compression="uncompressed")
    return buf.getvalue()


def _from_blob(blob: bytes) -> "pl.DataFrame":
    import io

    import polars as pl

    return pl.read_ipc_stream(io.BytesIO(blob))


def _archived_intact(conn: sqlite3.Connection, hour: int, entry: tuple) -> bool:
    """Whether a cached hour whose rows left SQLite is still whole: `gpm archive`
    moved exactly what the cache saw (every part file of that UTC day was
    recorded after the hour was cached, and they span its first and last sample)."""
    from datetime import datetime, timezone

    day = datetime.fromtimestamp(hour / 1000, tz=timezone.utc).strftime("%Y-%m-%d")
    try:
        n, created, lo, hi = conn.execute(
            "SELECT count(*), min(created_ms), min(min_ts_ms), max(max_ts_ms) FROM archive_files "
            "WHERE table_name = 'gpu_metrics' AND day = ?", (day,)).fetchone()
    except sqlite3.OperationalError:  # no archive table in this database
        return False
    return bool(n) and created >= entry[5] and lo <= entry[0] and hi >= entry[1]


def refresh_hours(conn: sqlite3.Connection, db_path: str, busy_threshold: float, *, now_ms: int) -> int:
    """Reduce the closed hours of ``gpu_metrics`` not cached yet (after the
    last cached one) into ``report_hours``; return how many hours were looked at.

    Cheap when the cache is current (two indexed queries), so `gpm archive`
    calls it before it moves rows: the report then reads archived hours from
    the cache instead of Parquet.
    """
    last = conn.execute("SELECT max(hour_ms) FROM report_hours").fetchone()[0]
    start = 0 if last is None else last + HOUR_MS
    first = conn.execute("SELECT min(ts_ms) FROM gpu_metrics WHERE ts_ms >= ?", (start,)).fetchone()[0]
    until = (now_ms - CLOSED_AFTER_MS) // HOUR_MS * HOUR_MS
    if first is None or first // HOUR_MS * HOUR_MS >= until:
        return 0
    since = first // HOUR_MS * HOUR_MS
    sqlite_partials(conn, db_path, Selection(since, until), busy_threshold, now_ms=now_ms)
    return (until - since) // HOUR_MS


def sqlite_partials(conn: sqlite3.Connection, db_path: str, sel: Selection, busy_threshold: float,
                    *, now_ms: int, use_cache: bool = True, threads: int = 2,
                    archived_hours: list[int] | None = None) -> tuple["pl.DataFrame", "pl.DataFrame"]:
    """(partials, histogram) of the SQLite rows in the selection.

    Whole closed hours come from ``report_hours`` when their fingerprint
    (first and last sample, busy threshold) still matches, and are stored
    there once computed (``use_cache=False`` neither reads nor writes it).
    A cached hour whose rows `gpm archive` has since moved is still used
    while the archive holds exactly those rows (``_archived_intact``); such
    hours are appended to ``archived_hours`` so that the caller does not read
    them from Parquet again. The rest is reduced by ``threads`` parallel
    read-only connections (sqlite3 releases the GIL while a query runs).
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
        cached = {
            r[0]: r[1:] for r in conn.execute(
                "SELECT hour_ms, first_ts_ms, last_ts_ms, busy_threshold_percent, partials, histogram, "
                "computed_ms "
                "FROM report_hours WHERE hour_ms >= ? AND hour_ms < ?", (hours[0], hours[-1] + HOUR_MS),
            )
        }
    parts, hists, stale, todo = [], [], [], []
    for hour in hours:
        # Two queries: SQLite answers a lone min() or max() from the index.
        fp = tuple(conn.execute(
            f"SELECT {agg}(ts_ms) FROM gpu_metrics WHERE ts_ms >= ? AND ts_ms < ?", (hour, hour + HOUR_MS),
        ).fetchone()[0] for agg in ("min", "max"))
        entry = cached.get(hour)
        if fp[0] is None:
            frames = None
            if entry and entry[2] == busy_threshold and _archived_intact(conn, hour, entry):
                try:
                    frames = _from_blob(entry[3]), _from_blob(entry[4])
                except Exception:  # noqa: BLE001 - another polars version: read the archive instead
                    frames = None
            if frames is None:
                if entry:
                    stale.append(hour)
                continue
            parts.append(frames[0])
            hists.append(frames[1])
            if archived_hours is not None:
                archived_hours.append(hour)
            continue
        if entry and (entry[0], entry[1], entry[2]) == (fp[0], fp[1], busy_threshold):
            try:
                frames = _from_blob(entry[3]), _from_blob(entry[4])
            except Exception:  # noqa: BLE001 - written by another polars version: recompute
                todo.append((hour, fp))
                continue
            parts.append(frames[0])
            hists.append(frames[1])
        else:
            todo.append((hour, fp))
    spans += [(hour, hour + HOUR_MS) for hour, _ in todo]

    def run(span: tuple[int, int]):
        c = connect(db_path, readonly=True)
        try:
            return _reduce_span(c, span[0], span[1], busy_threshold)
        finally:
            c.close()

    if spans:
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(spans)))) as pool:
            results = list(pool.map(run, spans))
    else:
        results = []
    fresh = {}
    for span, (names, rows, hist) in zip(spans, results):
        frame, hframe = _frames(names, rows, hist)
        parts.append(frame)
        hists.append(hframe)
        fresh[span[0]] = (frame, hframe)
    if todo or stale:
        with write(conn):
            conn.executemany("DELETE FROM report_hours WHERE hour_ms = ?", [(h,) for h in stale])
            conn.executemany(
                "INSERT OR REPLACE INTO report_hours (hour_ms, first_ts_ms, last_ts_ms, "
                "busy_threshold_percent, partials, histogram, computed_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(hour, fp[0], fp[1], busy_threshold, _to_blob(fresh[hour][0]), _to_blob(fresh[hour][1]), now_ms)
                 for hour, fp in todo],
            )
    parts = [p for p in parts if not p.is_empty()]
    if not parts:
        return empty_partials(), empty_histogram()
    ident = pl.DataFrame(
        [(gid, *info) for gid, info in gpus.items()],
        schema={"gpu_id": pl.Int64, "host": pl.String, "gpu_uuid": pl.String,
                "gpu_index": pl.Int64, "gpu_name": pl.String},
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


PARTIAL_SCHEMA = {
    "host": "String", "gpu_uuid": "String", "gpu_index": "Int64", "gpu_name": "String",
    "minute": "Int64", "first_ts_ms": "Int64", "last_ts_ms": "Int64",
    **{c: "Int64" for c in SUM_COLUMNS}, **{c: "Int64" for c in MAX_COLUMNS},
    "power_first_mw": "Int64", "energy_first_mj": "Int64", "energy_last_mj": "Int64",
}


def normalize(frame: "pl.DataFrame") -> "pl.DataFrame":
    import polars as pl

    return frame.select([pl.col(c).cast(getattr(pl, t)) for c, t in PARTIAL_SCHEMA.items()])


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

    frame = pl.concat(parts) if parts else empty_partials()
    hist = pl.concat(hists) if hists else empty_histogram()
    if frame.select(pl.struct(KEY).is_duplicated().any()).item():
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
