"""Benchmark `gpm archive` on generated traces: one day and one week of 8 GPUs at 1 Hz.

    python tests/benchmarks/bench_archive.py [--gpus 8] [--days 1,7] [--repeat 3] [--write-docs]

For each span, one trace is generated and loaded into SQLite once; each run
archives a fresh copy of that database. Printed, as medians over --repeat
runs, each with the 1-minute load average taken just before it (the
machine may be shared): the library's move (``gpm.store.archive.archive``:
read, sort, write, check, delete, reclaim), in wall and CPU seconds (this
process and its children); the whole ``gpm archive`` command, its hours
reduced beforehand as `gpm sample` and the daemon leave them; SQLite and
Parquet bytes per GPU-sample. Targets: a day under 3 s, SQLite <= 64 and
Parquet <= 10 bytes per GPU-sample.

``--write-docs`` puts each trace's row, with the date and load, into
docs/benchmarks.md between its ``bench_archive`` markers, replacing that
trace's earlier row and keeping the others (a week may be run with fewer
repeats than a day).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gpm.store.archive import archive, cutoff_ms  # noqa: E402
from gpm.store.db import open_db  # noqa: E402
from gpm.store.rollup import refresh  # noqa: E402
from tests.benchmarks.docs import DOCS, machine, replace_rows  # noqa: E402
from tests.benchmarks.trace import DAY_MS, trace_frame, write_trace  # noqa: E402



def table_bytes(conn, table: str) -> int | None:
    """Bytes of a table's b-tree pages (dbstat), when SQLite was built with it."""
    try:
        row = conn.execute("SELECT SUM(pgsize) FROM dbstat WHERE name = ?", (table,)).fetchone()
    except Exception:  # noqa: BLE001 - dbstat is optional in SQLite builds
        return None
    return row[0]


def cpu_seconds() -> float:
    """CPU time of this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def loaded_db(gpus: int, days: int, workdir: Path, now: int) -> tuple[Path, dict]:
    """A checkpointed database of ``days`` old days at 1 Hz, and its size figures."""
    start = (now - (days + 1) * DAY_MS) // DAY_MS * DAY_MS
    frame = trace_frame(gpus, days, 1.0, start_ms=start)
    db_path = workdir / f"{days}d.db"
    conn = open_db(db_path)
    write_trace(conn, frame)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    sizes = {"rows": frame.height, "db_bytes": db_path.stat().st_size,
             "metrics_bytes": table_bytes(conn, "gpu_metrics")}
    conn.close()
    return db_path, sizes


def move_once(db_path: Path, folder: Path, now: int) -> dict:
    """The library's move on a fresh copy."""
    folder.mkdir()
    copy = folder / "gpm.db"
    shutil.copyfile(db_path, copy)
    conn = open_db(copy)
    load = os.getloadavg()[0]
    cpu, t0 = cpu_seconds(), time.perf_counter()
    result = archive(conn, folder / "archive", cutoff=cutoff_ms(1, now), own_host="bench-host")
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu
    conn.close()
    parquet = sum(p.stat().st_size for p in (folder / "archive").rglob("*.parquet"))
    out = {"wall": wall, "cpu": cpu, "load": load, "rows": result.rows, "parquet_bytes": parquet,
           "files": sum(t.files for t in result.tables.values())}
    shutil.rmtree(folder)
    return out


def command_once(db_path: Path, folder: Path, now: int) -> dict:
    """The whole `gpm archive` command on a fresh copy, its hours reduced beforehand."""
    folder.mkdir()
    copy = folder / "gpm.db"
    shutil.copyfile(db_path, copy)
    conn = open_db(copy)
    refresh(conn, 5.0, now_ms=now)  # what the write path does every hour
    conn.close()
    env = dict(os.environ, PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(folder))
    load = os.getloadavg()[0]
    cpu, t0 = cpu_seconds(), time.perf_counter()
    subprocess.run([sys.executable, "-m", "gpm", "--db", str(copy), "archive", "--archive-dir",
                    str(folder / "archive"), "--older-than", "1"], env=env, check=True)
    out = {"wall": time.perf_counter() - t0, "cpu": cpu_seconds() - cpu, "load": load}
    shutil.rmtree(folder)
    return out


def summary(runs: list[dict]) -> str:
    wall = statistics.median(r["wall"] for r in runs)
    cpu = statistics.median(r["cpu"] for r in runs)
    each = ", ".join(f"{r['wall']:.2f} s (load {r['load']:.1f})" for r in runs)
    return f"{wall:.2f} s wall, {cpu:.2f} s CPU (median of {len(runs)}: {each})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--days", default="1,7", help="spans to measure, in days, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true", help=f"write the figures into {DOCS.name}")
    args = parser.parse_args()
    now = time.time_ns() // 1_000_000
    lines = []
    workdir = Path(tempfile.mkdtemp(prefix="gpm-bench-archive-"))
    try:
        for days in (int(d) for d in args.days.split(",")):
            db_path, sizes = loaded_db(args.gpus, days, workdir, now)
            moves, commands = [], []
            for run in range(args.repeat):  # interleaved: both see the same load
                moves.append(move_once(db_path, workdir / f"move{run}", now))
                commands.append(command_once(db_path, workdir / f"cli{run}", now))
            db_path.unlink()
            rows = sizes["rows"]
            assert all(m["rows"] == rows for m in moves), (moves, rows)
            parquet = statistics.median(m["parquet_bytes"] for m in moves)
            metrics = f", `gpu_metrics` and its key {sizes['metrics_bytes'] / rows:.1f}" if sizes["metrics_bytes"] else ""
            lines += [
                f"| {args.gpus} GPUs x {days} day{'s' if days > 1 else ''} at 1 Hz ({rows:,} rows) | "
                f"{machine()} | "
                f"move {summary(moves)}; whole `gpm archive` {summary(commands)} | "
                f"SQLite {sizes['db_bytes'] / rows:.1f}{metrics}; Parquet {parquet / rows:.2f} "
                f"({moves[0]['files']} files) |",
            ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n".join(lines))
    if args.write_docs:
        write_docs(lines)


HEADER = [
    "| trace | measured | seconds; load = 1-minute load average before each run (target: a day under 3 s) "
    "| bytes per GPU-sample (targets: SQLite <= 64, Parquet <= 10) |",
    "|---|---|---|---|",
]


def write_docs(lines: list[str]) -> None:
    """Replace the rows of the traces just measured in docs/benchmarks.md; keep the others."""
    replace_rows("bench_archive", HEADER, lines, key=lambda line: int(line.split(" x ")[1].split(" day")[0]))


if __name__ == "__main__":
    main()
