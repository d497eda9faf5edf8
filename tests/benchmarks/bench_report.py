"""Benchmark ``gpm report``: whole-command wall time.

- week: 8 GPUs x 7 days at 1 Hz (4.8 million rows) in SQLite.
  (1) as a user gets it: the closed hours were reduced by the write path
  (`gpm sample` / the daemon's rollup job, ``gpm.store.rollup.refresh``,
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

Run: ``python tests/benchmarks/bench_report.py [--runs 3] [--year-interval 10] [--only week,year,...]
[--baseline OTHER_CHECKOUT] [--write-docs]``. ``--baseline`` measures another
checkout's code interleaved with this one (before / after, same load);
``--write-docs`` puts each case's row, with the date and the 1-minute load
before each run, into docs/benchmarks.md between its ``bench_report``
markers. Each cell is the median wall time and the median CPU seconds
(user + system, all threads) of the command. The generated data is kept
in $TMPDIR/gpm-bench-report between runs.
"""

from __future__ import annotations

import argparse
import os
import resource
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
from tests.benchmarks.docs import DOCS, machine, replace_rows  # noqa: E402

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


CASES = {  # name -> (what is measured, target)
    "week": ("week, 4.8 M rows in SQLite, rollup kept by the write path", "< 1 s"),
    "week-cold": ("week, nothing rolled up (filled by something else): rolls up and stores every hour",
                  "may be longer"),
    "week-nocache": ("week, `--no-cache`", ""),
    "year": ("year, 25 M rows in Parquet, gpm's own archive (rollup stored by `gpm archive`)", "< 5 s"),
    "year-nocache": ("year, `--no-cache`", ""),
    "foreign-first": ("year, another host's raw archive, first run (rolls up each day, stores it beside its files)",
                      "may be longer"),
    "foreign": ("year, another host's raw archive, later runs", "< 5 s"),
    "trend": ("`--weeks 52`, later runs", "< 5 s"),
}


def child_cpu() -> float:
    """CPU seconds (user + system) of this process's waited-for children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(args: list[str], env: dict, repo: Path) -> tuple[float, float, float]:
    """(wall seconds of one ``gpm`` command run with ``repo``'s code, 1-minute load just before,
    its CPU seconds: on a shared machine they say more than the wall time)."""
    load = os.getloadavg()[0]
    cpu = child_cpu()
    t0 = time.perf_counter()
    # Run from the tree itself: ``python -m`` puts the working directory first on sys.path.
    proc = subprocess.run([sys.executable, "-m", "gpm", *args], env=dict(env, PYTHONPATH=str(repo)), cwd=repo,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"gpm {' '.join(args)} failed: {proc.stderr}")
    return elapsed, load, child_cpu() - cpu


def measure(trees: list[Path], runs: int, args: list[str], env: dict,
            before=None) -> list[list[tuple[float, float, float]]]:
    """Each tree's runs, interleaved (both see the same load); ``before()`` runs ahead of each."""
    out: list[list[tuple[float, float, float]]] = [[] for _ in trees]
    for _ in range(runs):
        for i, tree in enumerate(trees):
            if before is not None:
                before()
            out[i].append(timed(args, env, tree))
    return out


def cell(runs: list[tuple[float, float, float]]) -> str:
    each = ", ".join(f"{t:.2f} s (load {load:.1f})" for t, load, _ in runs)
    return (f"**{statistics.median(t for t, _, _ in runs):.2f} s**, "
            f"{statistics.median(cpu for _, _, cpu in runs):.2f} s CPU (median of {len(runs)}: {each})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--year-interval", type=int, default=10, help="seconds between archived samples")
    ap.add_argument("--fresh", action="store_true", help="regenerate the data")
    ap.add_argument("--only", default=",".join(CASES), help=f"cases to measure, comma-separated: {', '.join(CASES)}")
    ap.add_argument("--baseline", type=Path,
                    help="another checkout's root (e.g. `git worktree add /tmp/base main`), measured interleaved "
                         "with this one, as 'before'")
    ap.add_argument("--write-docs", action="store_true", help=f"write the figures into {DOCS.name}")
    opts = ap.parse_args()
    only = opts.only.split(",")
    if set(only) - set(CASES):
        raise SystemExit(f"--only: unknown case {sorted(set(only) - set(CASES))}; cases: {', '.join(CASES)}")
    trees = [opts.baseline.resolve(), REPO] if opts.baseline else [REPO]
    if opts.fresh:
        shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(exist_ok=True)
    env = dict(os.environ, XDG_STATE_HOME=str(WORK / "state"), XDG_CACHE_HOME=str(WORK / "cache"), NO_COLOR="1")
    today = date.today()
    this_monday = today - timedelta(days=today.weekday())
    week_start = int(datetime(*(this_monday - timedelta(days=7)).timetuple()[:3]).timestamp() * 1000)
    year_start = int(datetime(*(this_monday - timedelta(weeks=52)).timetuple()[:3]).timestamp() * 1000)
    from gpm.report.period import utc_iso
    from gpm.store.db import open_db, write

    results: dict[str, list] = {}

    db = WORK / "week.db"
    if {"week", "week-cold", "week-nocache"} & set(only):
        if not db.exists():
            t0 = time.perf_counter()
            make_week_db(db, week_start)
            print(f"generated {GPUS * 7 * 86400:,} rows in SQLite in {time.perf_counter() - t0:.1f} s")
        week_args = ["--db", str(db), "report", "--since", utc_iso(week_start),
                     "--until", utc_iso(week_start + 7 * 86_400_000), "--archive-dir", str(WORK / "none")]

        def clear() -> None:
            conn = open_db(db)  # migrates a database generated by an older version
            with write(conn):
                for table in ("report_hours", "report_minutes", "report_hist", "weekly_summaries"):
                    conn.execute(f"DELETE FROM {table}")
            conn.close()

        if "week-cold" in only:
            results["week-cold"] = measure(trees, opts.runs, week_args, env, before=clear)
        from gpm.store.db import connect
        from gpm.store.rollup import refresh

        clear()
        conn = connect(db)
        t0 = time.perf_counter()
        hours = refresh(conn, 5.0, now_ms=int(time.time() * 1000))
        print(f"rolling up one closed hour of 8 GPUs at 1 Hz (refresh): "
              f"{(time.perf_counter() - t0) / max(1, hours) * 1000:.0f} ms")
        conn.close()
        if "week" in only:
            results["week"] = measure(trees, opts.runs, week_args, env)
        if "week-nocache" in only:
            results["week-nocache"] = measure(trees, opts.runs, week_args + ["--no-cache"], env)

    archive = WORK / f"archive-v2-{opts.year_interval}s"
    if {"year", "year-nocache", "foreign-first", "foreign", "trend"} & set(only) and not archive.exists():
        t0 = time.perf_counter()
        make_year_archive(archive, year_start, opts.year_interval)
        rows = GPUS * 364 * 86400 // opts.year_interval
        print(f"generated {rows:,} archived rows in {time.perf_counter() - t0:.1f} s")
    reduced = WORK / f"archive-v3-{opts.year_interval}s-rolled-up"
    ydb = WORK / "year.db"
    ydb.unlink(missing_ok=True)
    year_args = ["--db", str(ydb), "report", "--since", utc_iso(year_start),
                 "--until", utc_iso(year_start + 364 * 86_400_000), "--archive-dir", str(archive)]
    if {"year", "year-nocache"} & set(only):
        if not (reduced / "gpu_reductions").exists():
            t0 = time.perf_counter()
            make_reduced_archive(archive, reduced)
            print(f"rolled up 364 archived days in {time.perf_counter() - t0:.1f} s")
        own_args = year_args[:-1] + [str(reduced)]
        if "year" in only:
            results["year"] = measure(trees, opts.runs, own_args, env)
        if "year-nocache" in only:
            results["year-nocache"] = measure(trees, 1, own_args + ["--no-cache"], env)
    if "foreign-first" in only:
        results["foreign-first"] = measure(
            trees, 1, year_args, env, before=lambda: shutil.rmtree(archive / "gpu_reductions", ignore_errors=True))
    if {"foreign", "trend"} & set(only):
        if not (archive / "gpu_reductions").exists():
            timed(year_args, env, REPO)  # rolls up every day folder and stores it beside its files
        if "foreign" in only:
            results["foreign"] = measure(trees, opts.runs, year_args, env)
        if "trend" in only:
            trend_args = ["--db", str(ydb), "report", "--weeks", "52", "--archive-dir", str(archive)]
            timed(trend_args, env, REPO)
            results["trend"] = measure(trees, opts.runs, trend_args, env)

    stamp = machine()
    lines = [f"| {CASES[name][0]} | {stamp} | {' | '.join(cell(r) for r in runs)} | {CASES[name][1]} |"
             if opts.baseline else f"| {CASES[name][0]} | {stamp} | | {cell(runs[0])} | {CASES[name][1]} |"
             for name, runs in results.items()]
    print("\n".join(lines))
    if opts.write_docs:
        write_docs(lines)


HEADER = [
    "| case | measured | before (`--baseline`) | after (this code) | target |",
    "|---|---|---|---|---|",
]


def write_docs(lines: list[str]) -> None:
    """Replace the rows of the cases just measured in docs/benchmarks.md; keep the others, in ``CASES`` order."""
    order = [f"| {what}" for what, _ in CASES.values()]
    first = lambda line: line.split(" | ")[0]  # noqa: E731
    replace_rows("bench_report", HEADER, lines,
                 key=lambda line: order.index(first(line)) if first(line) in order else len(order))


if __name__ == "__main__":
    main()
