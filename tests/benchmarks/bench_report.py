"""Benchmark ``gpm report``: whole-command wall time.

- week: 8 GPUs x 7 days at 1 Hz (4.8 million rows) in SQLite.
  (1) as a user gets it: the closed hours were reduced by the write path
  (`gpm sample` / the daemon's reduce job, ``gpm.store.reductions.refresh``,
  run here once over the week, and timed per hour); the report reads
  ``report_minutes`` plus the raw rows of the partial hours at the edges.
  (2) cold worst case: no reductions at all (a database filled by something
  else), so the first report reduces 4.8 M rows; and ``--no-cache``.
  Target: under 1 s.
- year: 8 GPUs x 52 weeks in the Parquet archive (hive layout of the archive
  issue), every ``--year-interval`` seconds (default 10 s: 25 million rows;
  1 Hz would be 250 million). Measured: a report over the whole year, first
  run (raw Parquet, each day's rollup stored beside its files) and later runs, and ``--weeks 52`` cold (summaries computed from the archive
  and stored) and warm (read from ``weekly_summaries``). Target: under 5 s.
  The target case: the same year as it arrives through gpm's own path, each
  day's rollup stored beside its files (``gpm.report.rollup``, what `gpm
  archive` writes), read as 4.2 M minute rows; first and later runs. The
  foreign raw archive: its first run must read every raw row (and stores
  each day's rollup beside its files), later runs read the rollup.

Run: ``python tests/benchmarks/bench_report.py [--runs 3] [--year-interval 10]``.
The generated data is kept in $TMPDIR/gpm-bench-report between runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

GPUS = 8
WORK = Path(tempfile.gettempdir()) / "gpm-bench-report"


def trace(start_ms: int, seconds: int, interval_s: int, gpu: int):
    """One GPU's samples with realistic shapes: idle nights, daytime bursts,
    long loads, a few percent of sensor noise, a monotonic energy counter."""
    import polars as pl

    n = seconds // interval_s
    i = pl.int_range(0, n, eager=True)
    noise = lambda salt: (pl.int_range(0, n).hash(gpu * 1000 + salt) % 10_000) / 10_000  # noqa: E731
    hour = ((i * interval_s + start_ms // 1000) // 3600) % 24
    frame = pl.DataFrame({"i": i, "hour": hour}).with_columns(
        n1=noise(1), n2=noise(2), n3=noise(3),
        block=(pl.col("i") * interval_s // 1800).hash(gpu) % 100,
    ).with_columns(
        load=pl.when(pl.col("hour") < 7).then(0.0)
        .when(pl.col("block") < 35).then(0.95)  # long loads
        .when(pl.col("block") < 60).then(0.5 + 0.5 * pl.col("n1"))  # bursts
        .otherwise(0.03),
    ).with_columns(
        util=(pl.col("load") * 100 * (0.97 + 0.06 * pl.col("n2"))).clip(0, 100).round().cast(pl.Int64),
    ).with_columns(
        power_mw=(25_000 + pl.col("util") * 3_800 + pl.col("n3") * 8_000).cast(pl.Int64),
        temp=(33 + pl.col("util") * 0.5 + pl.col("n1") * 2).round().cast(pl.Int64),
        mem=(600_000_000 + pl.col("load") * 18_000_000_000).cast(pl.Int64),
        thr=pl.when(pl.col("util") > 97).then(4).when(pl.col("util") < 2).then(1).otherwise(0),
        sm=(210 + pl.col("util") * 25).cast(pl.Int64),
    )
    return frame.select(
        ts_ms=start_ms + pl.col("i") * interval_s * 1000,
        source=pl.lit(0),
        utilization_gpu_percent=pl.col("util"),
        utilization_memory_percent=(pl.col("util") // 3),
        memory_used_bytes=pl.col("mem"),
        memory_total_bytes=pl.lit(25_757_220_864),
        temperature_celsius=pl.col("temp"),
        power_milliwatts=pl.col("power_mw"),
        power_limit_milliwatts=pl.lit(450_000),
        energy_millijoules=(pl.col("power_mw") * interval_s).cum_sum() + 10_000_000_000,
        sm_clock_mhz=pl.col("sm"),
        memory_clock_mhz=pl.lit(10_501),
        fan_percent=(30 + pl.col("util") // 2),
        pstate=pl.when(pl.col("util") > 5).then(0).otherwise(8),
        throttle_reasons=pl.col("thr"),
    )


def make_week_db(path: Path, start_ms: int) -> None:
    from gpm.store.db import open_db, write

    conn = open_db(path)
    cols = None
    with write(conn):
        for g in range(GPUS):
            gid = conn.execute(
                "INSERT INTO gpus (host, uuid, gpu_index, name, memory_total_bytes, first_seen_ms, last_seen_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                ("bench", f"GPU-bench-{g}", g, "NVIDIA GeForce RTX 4090", 25_757_220_864, start_ms, start_ms),
            ).lastrowid
            frame = trace(start_ms, 7 * 86400, 1, g).drop("memory_total_bytes")  # in gpus
            cols = frame.columns
            conn.executemany(
                f"INSERT INTO gpu_metrics (gpu_id, {', '.join(cols)}) VALUES (?, {', '.join('?' * len(cols))})",
                ((gid, *row) for row in frame.iter_rows()),
            )
    conn.close()


def make_year_archive(folder: Path, start_ms: int, interval_s: int) -> None:
    """The layout and columns `gpm archive` writes (one part file per host, UTC day and GPU here)."""
    import polars as pl

    from gpm.store.db import open_db
    from gpm.store.timeseries import lookup, resolve

    conn = open_db(folder.parent / "schema.db")
    schema = resolve(conn, lookup("gpu_metrics")).file_schema()
    conn.close()
    for g in range(GPUS):
        frame = trace(start_ms, 364 * 86400, interval_s, g).with_columns(
            host=pl.lit("bench"), gpu_uuid=pl.lit(f"GPU-bench-{g}"), gpu_index=pl.lit(g),
            gpu_name=pl.lit("NVIDIA GeForce RTX 4090"), ts=pl.from_epoch("ts_ms", time_unit="ms"),
            source=pl.lit("nvml"), status=pl.lit(None, dtype=pl.String),
            date=pl.from_epoch("ts_ms", time_unit="ms").dt.strftime("%Y-%m-%d"),
        )
        for (day,), part in frame.group_by("date"):
            out = folder / "gpu_metrics" / "host=bench" / f"date={day}"
            out.mkdir(parents=True, exist_ok=True)
            part = part.select([pl.col(n).cast(t) for n, t in schema.items()])
            part.write_parquet(out / f"part-{g}.parquet", compression="zstd")


def make_reduced_archive(raw: Path, folder: Path, busy_threshold: float = 5.0) -> None:
    """The same part files (hard links) with the rollup `gpm archive` stores beside each day
    (``gpm.report.rollup``: what rollup_archived_days writes, without a manifest)."""
    from gpm.report import rollup as q

    for day in sorted((raw / "gpu_metrics").glob("host=*/date=*")):
        out = folder / "gpu_metrics" / day.parent.name / day.name
        out.mkdir(parents=True, exist_ok=True)
        for f in day.glob("*.parquet"):
            if not (out / f.name).exists():
                os.link(f, out / f.name)
        files = sorted(out.glob("*.parquet"))
        minutes, hist = q.roll_up_day(files, q.day_start(day.name), busy_threshold)
        q.write_day(q.rollup_folder(folder, day.parent.name, day.name), minutes, hist, q.day_sources(files),
                    busy_threshold, root=folder)


def timed(args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gpm", *args], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"gpm {' '.join(args)} failed: {proc.stderr}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--year-interval", type=int, default=10, help="seconds between archived samples")
    ap.add_argument("--fresh", action="store_true", help="regenerate the data")
    opts = ap.parse_args()
    if opts.fresh:
        shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), XDG_STATE_HOME=str(WORK / "state"),
               XDG_CACHE_HOME=str(WORK / "cache"), NO_COLOR="1")
    today = date.today()
    this_monday = today - timedelta(days=today.weekday())
    week_start = int(datetime(*(this_monday - timedelta(days=7)).timetuple()[:3]).timestamp() * 1000)
    year_start = int(datetime(*(this_monday - timedelta(weeks=52)).timetuple()[:3]).timestamp() * 1000)

    db = WORK / "week.db"
    if not db.exists():
        t0 = time.perf_counter()
        make_week_db(db, week_start)
        print(f"generated {GPUS * 7 * 86400:,} rows in SQLite in {time.perf_counter() - t0:.1f} s")
    archive = WORK / f"archive-v2-{opts.year_interval}s"
    if not archive.exists():
        t0 = time.perf_counter()
        make_year_archive(archive, year_start, opts.year_interval)
        rows = GPUS * 364 * 86400 // opts.year_interval
        print(f"generated {rows:,} archived rows in {time.perf_counter() - t0:.1f} s")

    since, until = str(week_start), str(week_start + 7 * 86_400_000)
    from gpm.report.period import utc_iso

    week_args = ["--db", str(db), "report", "--since", utc_iso(int(since)), "--until", utc_iso(int(until)),
                 "--archive-dir", str(WORK / "none")]
    def clear() -> None:
        from gpm.store.db import open_db, write

        conn = open_db(db)  # migrates a database generated by an older version
        with write(conn):
            for table in ("report_hours", "report_minutes", "report_hist", "weekly_summaries"):
                conn.execute(f"DELETE FROM {table}")
        conn.close()

    from gpm.store.db import connect
    from gpm.store.reductions import refresh

    cold = []
    for _ in range(opts.runs):
        clear()
        cold.append(timed(week_args, env))
    clear()
    conn = connect(db)
    t0 = time.perf_counter()
    hours = refresh(conn, 5.0, now_ms=int(time.time() * 1000))
    per_hour = (time.perf_counter() - t0) / max(1, hours)
    conn.close()
    user = [timed(week_args, env) for _ in range(opts.runs)]
    nocache = statistics.median([timed(week_args + ["--no-cache"], env) for _ in range(opts.runs)])
    print(f"week, 4.8 M rows in SQLite, medians of {opts.runs}:\n"
          f"  (1) reductions kept by the write path: {statistics.median(user):.2f} s (target < 1 s, ratio "
          f"{statistics.median(user) / 1.0:.2f}); reducing one closed hour of 8 GPUs at 1 Hz: "
          f"{per_hour * 1000:.0f} ms\n"
          f"  (2) cold, nothing reduced: {statistics.median(cold):.2f} s (reduces and stores every hour); "
          f"--no-cache {nocache:.2f} s")

    reduced = WORK / f"archive-v3-{opts.year_interval}s-rolled-up"
    if not (reduced / "gpu_reductions").exists():
        t0 = time.perf_counter()
        make_reduced_archive(archive, reduced)
        print(f"reduced 364 archived days in {time.perf_counter() - t0:.1f} s")
    ydb = WORK / "year.db"
    if ydb.exists():
        ydb.unlink()
    year_args = ["--db", str(ydb), "report", "--since", utc_iso(year_start),
                 "--until", utc_iso(year_start + 364 * 86_400_000), "--archive-dir", str(archive)]
    own_args = year_args[:-1] + [str(reduced)]
    own_first = timed(own_args, env)
    own = statistics.median([timed(own_args, env) for _ in range(opts.runs)])
    own_nocache = timed(own_args + ["--no-cache"], env)
    print(f"year, {GPUS * 364 * 86400 // opts.year_interval / 1e6:.1f} M rows in Parquet, arrived through gpm's "
          f"own path (each day's rollup stored by gpm archive, 8 x 1440 minute rows a day):\n"
          f"  whole-year report, first run {own_first:.2f} s; later runs {own:.2f} s (median of {opts.runs}, "
          f"target < 5 s, ratio {own / 5:.2f}); --no-cache (every raw row) {own_nocache:.2f} s")
    shutil.rmtree(archive / "gpu_reductions", ignore_errors=True)
    first = timed(year_args, env)  # rolls up every day folder and stores it beside its files
    raw = statistics.median([timed(year_args, env) for _ in range(opts.runs)])
    trend_args = ["--db", str(ydb), "report", "--weeks", "52", "--archive-dir", str(archive)]
    t_cold = timed(trend_args, env)
    t_warm = statistics.median([timed(trend_args, env) for _ in range(opts.runs)])
    print(f"year, {GPUS * 364 * 86400 // opts.year_interval / 1e6:.1f} M rows in Parquet "
          f"(1 sample / {opts.year_interval} s), another host's archive (no reductions):\n"
          f"  whole-year report, first run (raw Parquet, each day's rollup stored beside it): {first:.2f} s; later runs "
          f"{raw:.2f} s (median of {opts.runs}, target < 5 s, ratio {raw / 5:.2f}); --weeks 52 first run "
          f"{t_cold:.2f} s, later runs {t_warm:.2f} s (target < 5 s, ratio {t_warm / 5:.2f})")


if __name__ == "__main__":
    main()
