"""What does `gpm daemon` cost to run for months? Run:

    python tests/benchmarks/bench_daemon.py [--duration 600] [--gpus 8] [--processes 50] [--interval 1]

The daemon samples the fake NVML (8 GPUs, 50 real processes spread over them,
so /proc lookups and classification see live PIDs) at 1 Hz into a fresh
database. After a warm-up it measures:
- CPU share of one core: (utime + stime) / wall time (target: under 0.5 %);
- resident memory (VmRSS) over the run, and its growth from the first to the
  last tenth of the run (target: under 60 MB and not growing);
- wakeups per second: context switches of all the daemon's threads
  (voluntary + involuntary, /proc/PID/task/*/status) per second of wall time.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.fakes.nvml import FakeNvml, FakeProcess, Scenario, build_fake_nvml, make_gpu  # noqa: E402

CPU_TARGET_PERCENT = 0.5
RSS_TARGET_MB = 60.0
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_secs(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def switches(pid: int) -> int:
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass  # a thread that just ended
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600, help="measured seconds (default 600)")
    parser.add_argument("--warmup", type=float, default=15, help="seconds before measuring (default 15)")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--processes", type=int, default=50)
    parser.add_argument("--interval", type=float, default=1.0, help="sampling interval, seconds")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gpm-bench-daemon-"))
    sleepers = [subprocess.Popen(["sleep", str(args.duration + args.warmup + 120)])
                for _ in range(args.processes)]
    gpus = [make_gpu(i) for i in range(args.gpus)]
    for n, proc in enumerate(sleepers):
        gpus[n % args.gpus].processes.append(
            FakeProcess(pid=proc.pid, used_memory=(256 + n) * 1024 * 1024, sm_util=n % 100))
    fake = FakeNvml(build_fake_nvml(), work / "nvml.scenario", Scenario(gpus=gpus))
    env = fake.env()
    env["PYTHONPATH"] = str(REPO)
    env["XDG_CONFIG_HOME"] = str(work / "config")  # defaults only: no user config
    db = work / "gpm.db"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "gpm", "--db", str(db), "daemon", "--interval", str(args.interval),
         "--log-level", "warning"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(args.warmup)
        if daemon.poll() is not None:
            raise SystemExit(f"daemon exited: {daemon.stderr.read()}")
        pid = daemon.pid
        t0, cpu0, sw0 = time.monotonic(), cpu_secs(pid), switches(pid)
        rss: list[tuple[float, float]] = []
        step = max(1.0, args.duration / 60)
        while time.monotonic() - t0 < args.duration:
            time.sleep(min(step, args.duration - (time.monotonic() - t0)) if args.duration > 0 else 0)
            rss.append((time.monotonic() - t0, rss_mb(pid)))
        wall = time.monotonic() - t0
        cpu, sw = cpu_secs(pid) - cpu0, switches(pid) - sw0
        threads = len(os.listdir(f"/proc/{pid}/task"))
        daemon.send_signal(signal.SIGTERM)
        rc = daemon.wait(timeout=10)
        errors = [line for line in daemon.stderr.read().splitlines() if " ERROR " in line]
    finally:
        if daemon.poll() is None:
            daemon.kill()
        for proc in sleepers:
            proc.kill()
            proc.wait()
    conn = sqlite3.connect(db)
    samples = conn.execute("SELECT COUNT(DISTINCT ts_ms) FROM gpu_metrics").fetchone()[0]
    conn.close()

    tenth = max(1, len(rss) // 10)
    first = statistics.median(v for _, v in rss[:tenth])
    last = statistics.median(v for _, v in rss[-tenth:])
    cpu_pct = 100 * cpu / wall
    print(f"gpm daemon, {args.gpus} fake GPUs, {args.processes} processes, every {args.interval:g} s, "
          f"measured {wall:.0f} s after {args.warmup:g} s warm-up ({samples} samples stored, "
          f"{threads} threads, exit {rc}, {len(errors)} errors)")
    print(f"  CPU share of one core: {cpu_pct:.3f} %  (target < {CPU_TARGET_PERCENT} %): "
          f"{'ok' if cpu_pct < CPU_TARGET_PERCENT else 'OVER'}")
    print(f"  CPU per sample:        {1000 * cpu / max(1, wall / args.interval):.2f} ms")
    print(f"  RSS first/last tenth:  {first:.1f} MB / {last:.1f} MB, max {max(v for _, v in rss):.1f} MB, "
          f"growth {last - first:+.2f} MB  (target < {RSS_TARGET_MB:g} MB, not growing): "
          f"{'ok' if last < RSS_TARGET_MB and last - first < 1.0 else 'CHECK'}")
    print(f"  wakeups per second:    {sw / wall:.2f}  (context switches of all threads; "
          f"{sw / wall * args.interval:.1f} per sample)")
    return 0 if rc == 0 and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
