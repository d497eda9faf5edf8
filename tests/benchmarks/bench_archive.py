"""Benchmark `gpm archive` on a generated trace (default 8 GPUs x 7 days at 1 Hz = 4.8 M samples).

    python tests/benchmarks/bench_archive.py [--gpus 8] [--days 7] [--interval 1] [--repeat 1]

Prints, with the median over --repeat fresh databases: trace generation and
load time, SQLite bytes per GPU-sample (table + its key, after a checkpoint;
target <= 64), archive throughput (target >= 500,000 rows/s), Parquet bytes
per GPU-sample (target <= 10), and the database size after archive + vacuum.

Throughput is measured twice: the library's ``archive()`` (the move itself),
and the whole ``gpm archive`` command on a copy of the same database whose
closed hours were reduced first, as `gpm sample` and the daemon leave them:
the command also stores the report's reductions of the days it moved.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gpm.store.archive import archive, cutoff_ms  # noqa: E402
from gpm.store.db import open_db  # noqa: E402
from gpm.store.history import scan  # noqa: E402
from gpm.store.reductions import refresh  # noqa: E402
from tests.benchmarks.trace import DAY_MS, trace_frame, write_trace  # noqa: E402


def table_bytes(conn, table: str) -> int | None:
    """Bytes of a table's b-tree pages (dbstat), when SQLite was built with it."""
    try:
        row = conn.execute("SELECT SUM(pgsize) FROM dbstat WHERE name = ?", (table,)).fetchone()
    except Exception:  # noqa: BLE001 - dbstat is optional in SQLite builds
        return None
    return row[0]


def run_once(gpus: int, days: float, interval: float, workdir: Path) -> dict:
    now = time.time_ns() // 1_000_000
    start = (now - int((days + 1) * DAY_MS)) // DAY_MS * DAY_MS
    t0 = time.perf_counter()
    frame = trace_frame(gpus, days, interval, start_ms=start)
    t_gen = time.perf_counter() - t0
    db_path = workdir / "bench.db"
    conn = open_db(db_path)
    t0 = time.perf_counter()
    write_trace(conn, frame)
    t_load = time.perf_counter() - t0
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    rows = frame.height
    db_before = db_path.stat().st_size
    metrics_bytes = table_bytes(conn, "gpu_metrics")
    del frame
    cli_s = cli_archive(db_path, workdir / "cli", now)
    archive_dir = workdir / "archive"
    load = os.getloadavg()[0]  # other work on the machine competes for the same cores
    t0 = time.perf_counter()
    result = archive(conn, archive_dir, cutoff=cutoff_ms(1, now), own_host="bench-host")
    t_archive = time.perf_counter() - t0
    assert result.rows == rows, (result.rows, rows, result.problems, result.notes)
    parquet_bytes = sum(p.stat().st_size for p in archive_dir.rglob("*.parquet"))
    db_after = db_path.stat().st_size
    t0 = time.perf_counter()
    read_back = scan("gpu_metrics", conn=conn, archive_dir=archive_dir).select("ts_ms").collect().height
    t_scan = time.perf_counter() - t0
    assert read_back == rows
    conn.close()
    return {
        "rows": rows, "gen_s": t_gen, "load_s": t_load, "archive_s": t_archive, "scan_s": t_scan,
        "db_before": db_before, "db_after": db_after, "metrics_bytes": metrics_bytes,
        "parquet_bytes": parquet_bytes, "files": sum(t.files for t in result.tables.values()),
        "reclaim": result.reclaim, "load": load, "cli_s": cli_s,
    }


def cli_archive(db_path: Path, folder: Path, now: int) -> float:
    """Seconds of a whole `gpm archive` run on a copy of the database, its hours reduced beforehand."""
    folder.mkdir()
    copy = folder / "gpm.db"
    shutil.copyfile(db_path, copy)  # checkpointed: the WAL is empty
    conn = open_db(copy)
    refresh(conn, 5.0, now_ms=now)  # what the write path does every hour
    conn.close()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]), XDG_CACHE_HOME=str(folder))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gpm", "--db", str(copy), "archive", "--archive-dir",
                    str(folder / "archive"), "--older-than", "1"], env=env, check=True)
    elapsed = time.perf_counter() - t0
    shutil.rmtree(folder)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--days", type=float, default=7)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeat):
        workdir = Path(tempfile.mkdtemp(prefix="gpm-bench-archive-"))
        try:
            runs.append(run_once(args.gpus, args.days, args.interval, workdir))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    rows = runs[0]["rows"]
    print(f"trace: {args.gpus} GPUs x {args.days:g} days at {args.interval:g} s = {rows:,} samples "
          f"({len(runs)} run(s), medians; {os.cpu_count()} CPUs)")
    print(f"generate        {med('gen_s'):8.2f} s")
    print(f"load SQLite     {med('load_s'):8.2f} s   {rows / med('load_s'):12,.0f} rows/s")
    print(f"SQLite file     {med('db_before') / 2**20:8.1f} MiB {med('db_before') / rows:8.1f} bytes/sample "
          f"(target <= 64)")
    if runs[0]["metrics_bytes"]:
        print(f"  gpu_metrics   {med('metrics_bytes') / 2**20:8.1f} MiB {med('metrics_bytes') / rows:8.1f} "
              f"bytes/sample (table = its only index)")
    print(f"archive         {med('archive_s'):8.2f} s   {rows / med('archive_s'):12,.0f} rows/s "
          f"(target >= 500,000); {runs[0]['files']} files; {runs[0]['reclaim']}")
    if len(runs) > 1:
        each = ", ".join(f"{rows / r['archive_s']:,.0f} (load {r['load']:.1f})" for r in runs)
        print(f"  each run      {each} rows/s (1-minute load average before it)")
    print(f"gpm archive     {med('cli_s'):8.2f} s   {rows / med('cli_s'):12,.0f} rows/s (the whole command, "
          f"hours reduced beforehand by the write path; it also stores the days' report reductions)")
    print(f"Parquet         {med('parquet_bytes') / 2**20:8.1f} MiB {med('parquet_bytes') / rows:8.2f} "
          f"bytes/sample (target <= 10); {med('db_before') / med('parquet_bytes'):.1f}x smaller than SQLite")
    print(f"SQLite after    {med('db_after') / 2**20:8.2f} MiB (archive + vacuum)")
    print(f"history scan    {med('scan_s'):8.2f} s   {rows / med('scan_s'):12,.0f} rows/s (all rows back)")


if __name__ == "__main__":
    main()
