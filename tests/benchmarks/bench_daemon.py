"""What does `gpm daemon` cost to run for months? Run:

    python tests/benchmarks/bench_daemon.py [--duration 600] [--gpus 8] [--processes 50] [--interval 1]
        [--scrape-every 5] [--write-docs]

The daemon samples the fake NVML (8 GPUs, 50 real processes spread over them,
so /proc lookups and classification see live PIDs) at 1 Hz into a fresh
database. After a warm-up it measures:
- CPU share of one core: (utime + stime) / wall time (target: under 0.5 %);
- resident memory (VmRSS) over the run, and its growth from the first to the
  last tenth of the run (target: under 60 MB and not growing);
- wakeups per second: context switches of all the daemon's threads
  (voluntary + involuntary, /proc/PID/task/*/status) per second of wall time.

``--scrape-every S`` turns the daemon's Prometheus endpoint on and scrapes it
every S seconds from this process, as a Prometheus server would (target: still
under 0.5 %). ``--write-docs`` puts the row of the case measured, with the
date and the 1-minute load at the start, middle and end of the run, into
docs/benchmarks.md between its ``bench_daemon`` markers.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.benchmarks.docs import DOCS, machine, replace_rows  # noqa: E402
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url: str) -> int:
    """Bytes of one scrape; the daemon may take a moment to open its endpoint."""
    for _ in range(100):
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return len(resp.read())
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"no metrics at {url}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600, help="measured seconds (default 600)")
    parser.add_argument("--warmup", type=float, default=15, help="seconds before measuring (default 15)")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--processes", type=int, default=50)
    parser.add_argument("--interval", type=float, default=1.0, help="sampling interval, seconds")
    parser.add_argument("--scrape-every", type=float, default=0,
                        help="serve Prometheus metrics and scrape them every this many seconds (default: off)")
    parser.add_argument("--write-docs", action="store_true", help=f"write the figures into {DOCS.name}")
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
    url = None
    if args.scrape_every:
        listen = f"127.0.0.1:{free_port()}"
        env.update(GPM_TELEMETRY_ENABLE_PROMETHEUS="true", GPM_TELEMETRY_METRICS_LISTEN=listen)
        url = f"http://{listen}/metrics"
    db = work / "gpm.db"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "gpm", "--db", str(db), "daemon", "--interval", str(args.interval),
         "--log-level", "warning"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(args.warmup)
        if daemon.poll() is not None:
            raise SystemExit(f"daemon exited: {daemon.stderr.read()}")
        pid = daemon.pid
        size = scrape(url) if url else 0
        loads = [os.getloadavg()[0]]
        t0, cpu0, sw0 = time.monotonic(), cpu_secs(pid), switches(pid)
        rss: list[tuple[float, float]] = []
        scrapes = 0
        step = max(1.0, args.duration / 60)
        next_rss, next_scrape = t0 + step, t0 + args.scrape_every
        while (now := time.monotonic()) - t0 < args.duration:
            if url and now >= next_scrape:
                scrape(url)
                scrapes += 1
                next_scrape += args.scrape_every
            if now >= next_rss:
                rss.append((now - t0, rss_mb(pid)))
                if len(rss) == 30:
                    loads.append(os.getloadavg()[0])
                next_rss += step
            wake = min(next_rss, next_scrape if url else next_rss, t0 + args.duration)
            time.sleep(max(0.0, wake - time.monotonic()))
        wall = time.monotonic() - t0
        rss.append((wall, rss_mb(pid)))
        loads.append(os.getloadavg()[0])
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
    scraped = f", Prometheus endpoint scraped every {args.scrape_every:g} s ({size:,} bytes)" if url else ""
    print(f"gpm daemon, {args.gpus} fake GPUs, {args.processes} processes, every {args.interval:g} s{scraped}, "
          f"measured {wall:.0f} s after {args.warmup:g} s warm-up ({samples} samples stored, "
          f"{scrapes} scrapes, {threads} threads, exit {rc}, {len(errors)} errors)")
    print(f"  CPU share of one core: {cpu_pct:.3f} %  (target < {CPU_TARGET_PERCENT} %): "
          f"{'ok' if cpu_pct < CPU_TARGET_PERCENT else 'OVER'}")
    print(f"  CPU per sample:        {1000 * cpu / max(1, wall / args.interval):.2f} ms")
    print(f"  RSS first/last tenth:  {first:.1f} MB / {last:.1f} MB, max {max(v for _, v in rss):.1f} MB, "
          f"growth {last - first:+.2f} MB  (target < {RSS_TARGET_MB:g} MB, not growing): "
          f"{'ok' if last < RSS_TARGET_MB and last - first < 1.0 else 'CHECK'}")
    print(f"  wakeups per second:    {sw / wall:.2f}  (context switches of all threads; "
          f"{sw / wall * args.interval:.1f} per sample)")
    ok = rc == 0 and not errors
    if args.write_docs and ok:
        case = (f"{args.gpus} GPUs, {args.processes} processes, every {args.interval:g} s"
                + (f", scraped every {args.scrape_every:g} s" if url else ""))
        write_docs([
            f"| {case} | {machine()}, load {' / '.join(f'{v:.1f}' for v in loads)} | {wall:.0f} s | "
            f"**{cpu_pct:.3f} %** ({1000 * cpu / max(1, wall / args.interval):.2f} ms a sample) | "
            f"{first:.1f} → {last:.1f} MB (max {max(v for _, v in rss):.1f}) | {sw / wall:.2f} |"])
    return 0 if ok else 1


HEADER = [
    "| case | measured (load: 1-minute average at start / middle / end) | measured for "
    "| CPU, share of one core (target < 0.5 %) | RSS, first → last tenth (target < 60 MB, flat) | wakeups/s |",
    "|---|---|---|---|---|---|",
]


def write_docs(lines: list[str]) -> None:
    """Replace the row of the case just measured in docs/benchmarks.md; keep the others."""
    replace_rows("bench_daemon", HEADER, lines, key=lambda line: ("scraped" in line.split(" | ")[0], line))


if __name__ == "__main__":
    sys.exit(main())
