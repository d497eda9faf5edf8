"""Should the per-sample writes go through sqlite-utils? Run: python tests/benchmarks/bench_store_writes.py [--write-docs]

#14.5 asks for sqlite-utils' ``insert_all``/``upsert_all`` wherever they read
better, and for a figure where the hot path keeps plain ``execute``. One
sample of 8 GPUs with 16 processes (two a GPU, all seen before: the common
case) is stored, in one transaction, two ways on two databases, interleaved:

- gpm's own savers (``Sampler.store``: the ``gpus`` upsert, the
  ``gpu_metrics`` rows, the ``process_events`` updates);
- the same writes through sqlite-utils: ``gpus`` with ``upsert_all(pk=(host,
  uuid))``, ``gpu_metrics`` with ``insert_all(ignore=True)``, each process run
  found as gpm finds it and counted with ``update(id, ..., conversions=)``.
  (Only the cost is comparable: sqlite-utils cannot say COALESCE, MIN or MAX
  in an upsert, nor which rows ``INSERT OR IGNORE`` skipped, which #12.6 and
  #13.2 need.)

It prints the medians per sample and, from new processes, what a cold
`gpm sample` would pay once to use sqlite-utils at all: importing it and
its first ``Database`` (plugin discovery). ``--write-docs`` puts them, with
the date and load, between the ``bench_store_writes`` markers of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "benchmarks.md"
START, END = "<!-- bench_store_writes:start -->", "<!-- bench_store_writes:end -->"
sys.path.insert(0, str(REPO))

from gpm.config import load_config  # noqa: E402
from gpm.gpu.sample import GpuProcess, GpuSample, ProcessDetails  # noqa: E402
from gpm.sampling import Sampler  # noqa: E402
from gpm.store.db import open_db, utils_db, write  # noqa: E402
from gpm.store.samples import gpu_key, metric_row  # noqa: E402

GPUS, PROCS_PER_GPU = 8, 2
_METRICS = ("ts_ms", "gpu_id", "source", "status", "utilization_gpu_percent", "utilization_memory_percent",
            "memory_used_bytes", "temperature_celsius", "power_milliwatts", "power_limit_milliwatts",
            "energy_millijoules", "sm_clock_mhz", "memory_clock_mhz", "fan_percent", "pstate", "throttle_reasons")
COLD = ("import time, sqlite3; t = time.perf_counter(); import sqlite_utils; "
        "db = sqlite_utils.Database(sqlite3.connect(':memory:')); print(time.perf_counter() - t)")


def sample(ts_ms: int) -> list[GpuSample]:
    """8 GPUs at work, each with two long-running processes."""
    out = []
    for i in range(GPUS):
        procs = [GpuProcess(1000 + 10 * i + k, used_memory_bytes=(4 + k) << 30, sm_utilization_percent=40,
                            name="python3", category="ml_training", label="train.py", reason="bench",
                            details=ProcessDetails(user="ann", exe="/usr/bin/python3",
                                                   cmdline=["python3", "train.py", f"--rank={k}"],
                                                   start_time_ms=1_700_000_000_000))
                 for k in range(PROCS_PER_GPU)]
        out.append(GpuSample(ts_ms, i, "nvml", uuid=f"GPU-{i:08d}-bench", name="NVIDIA H100 80GB HBM3",
                             pci_bus_id=f"00000000:{i + 1:02X}:00.0", memory_total_bytes=80 << 30,
                             memory_used_bytes=9 << 30, utilization_gpu_percent=80, power_watts=350.5,
                             power_limit_watts=700.0, temperature_celsius=60, energy_joules=1e6 + ts_ms / 1000 * 350,
                             sm_clock_mhz=1980, memory_clock_mhz=2619, throttle_reasons=0, processes=procs))
    return out


def save_with_sqlite_utils(db, host: str, samples: list[GpuSample]) -> None:
    """The same writes as ``Sampler.store``, spelled with sqlite-utils (see the module's docstring)."""
    conn = db.conn
    with write(conn):
        db["gpus"].upsert_all([{
            "host": host, "uuid": gpu_key(s), "gpu_index": s.index, "name": s.name, "pci_bus_id": s.pci_bus_id,
            "serial": s.serial, "memory_total_bytes": s.memory_total_bytes,
            "power_limit_watts": s.power_limit_watts, "driver_version": s.driver_version,
            "cuda_version": s.cuda_version, "first_seen_ms": s.ts_ms, "last_seen_ms": s.ts_ms,
        } for s in samples], pk=("host", "uuid"))
        ids = dict(conn.execute("SELECT uuid, id FROM gpus WHERE host = ?", (host,)).fetchall())
        db["gpu_metrics"].insert_all([dict(zip(_METRICS, metric_row(ids[gpu_key(s)], s))) for s in samples],
                                     ignore=True)
        events = db["process_events"]
        for s in samples:
            for p in s.processes:
                row = conn.execute(
                    "SELECT id FROM process_events WHERE gpu_id = ? AND pid = ? AND start_time_ms IS ? "
                    "ORDER BY last_seen_ms DESC LIMIT 1", (ids[gpu_key(s)], p.pid, p.details.start_time_ms),
                ).fetchone()
                seconds = 1.0
                events.update(row[0], {
                    "last_seen_ms": s.ts_ms, "samples": 1, "gpu_seconds": seconds, "energy_joules": 43.75,
                    "used_memory_byte_seconds": p.used_memory_bytes * seconds, "category": p.category,
                    "label": p.label, "reason": p.reason,
                }, conversions={"last_seen_ms": "MAX(last_seen_ms, ?)", "samples": "samples + ?",
                                "gpu_seconds": "gpu_seconds + ?", "energy_joules": "energy_joules + ?",
                                "used_memory_byte_seconds": "used_memory_byte_seconds + ?"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=400, help="samples stored each way")
    parser.add_argument("--cold", type=int, default=7, help="new processes for the import cost")
    parser.add_argument("--write-docs", action="store_true", help="write the figures into docs/benchmarks.md")
    args = parser.parse_args()
    host = "bench"
    with tempfile.TemporaryDirectory() as tmp:
        plain_conn, utils_conn = open_db(Path(tmp) / "plain.db"), open_db(Path(tmp) / "utils.db")
        sampler = Sampler(load_config(), conn=plain_conn, enrichers=[], host=host)
        db = utils_db(utils_conn)
        start = 1_760_000_000_000
        sampler.store(sample(start))  # the GPUs and process runs exist: the steady state
        Sampler(load_config(), conn=utils_conn, enrichers=[], host=host).store(sample(start))
        plain, utils = [], []
        for n in range(1, args.samples + 1):
            ts = start + n * 1000
            first, second = ((plain, lambda s: sampler.store(s)), (utils, lambda s: save_with_sqlite_utils(db, host, s)))
            for times, save in (first, second) if n % 2 else (second, first):
                samples = sample(ts)
                t0 = time.perf_counter()
                save(samples)
                times.append(time.perf_counter() - t0)
        for conn in (plain_conn, utils_conn):
            counts = conn.execute("SELECT (SELECT COUNT(*) FROM gpu_metrics), (SELECT SUM(samples) FROM "
                                  "process_events)").fetchone()
            expected = ((args.samples + 1) * GPUS, (args.samples + 1) * GPUS * PROCS_PER_GPU)
            assert counts == expected, (counts, expected)
            conn.close()
    cold = [float(subprocess.run([sys.executable, "-c", COLD], capture_output=True, text=True, check=True).stdout)
            for _ in range(args.cold)]
    p, u = statistics.median(plain) * 1e3, statistics.median(utils) * 1e3
    lines = [
        f"One sample of {GPUS} GPUs with {GPUS * PROCS_PER_GPU} processes stored in one transaction, median of "
        f"{args.samples}, {datetime.date.today()}, 1-minute load {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs:",
        "",
        f"- plain `execute` (gpm's savers): {p:.2f} ms",
        f"- the same writes through sqlite-utils: {u:.2f} ms ({u / p:.1f}x)",
        f"- once per cold process, importing sqlite_utils and its first `Database`: "
        f"{statistics.median(cold) * 1e3:.0f} ms (median of {args.cold})",
    ]
    print("\n".join(lines))
    if args.write_docs:
        head, rest = DOCS.read_text().split(START, 1)
        DOCS.write_text("\n".join([head + START, *lines, END + rest.split(END, 1)[1]]))


if __name__ == "__main__":
    main()
