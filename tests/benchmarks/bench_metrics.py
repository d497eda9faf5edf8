"""What does a scrape of `gpm serve-metrics` cost? Run:

    python tests/benchmarks/bench_metrics.py [--scrapes N] [--baseline OTHER_CHECKOUT] [--write-docs]

On the fake NVML with 8 GPUs and 200 GPU processes (25 per GPU), whose pids
this /proc cannot show (above pid_max: host pids that NVML reports into a
container), so every scrape classifies them unless the decision is kept:
- scrape latency over HTTP, median and p99, with a fresh NVML read at every
  scrape (--cache-secs 0, the worst case; target: median under 10 ms), with the
  read cached (--cache-secs 60, what several scrapers sharing one read see),
  and with --per-process (200 more series);
- CPU time the server process spends per scrape (from /proc/PID/stat);
- in-process: building the exposition from a state snapshot (what a scrape of
  the daemon costs, no hardware access).

``--baseline`` runs another checkout's server in each mode too, alternating
with this one (before / after, same load); ``--write-docs`` puts the rows,
with the date and the 1-minute load, into docs/benchmarks.md between its
``bench_metrics`` markers.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
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
from tests.fakes.nvml import FakeNvml, FakeProcess, Scenario, build_fake_nvml  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
PID_MAX = int(Path("/proc/sys/kernel/pid_max").read_text())


def scenario() -> Scenario:
    s = Scenario.many(8)
    for i, gpu in enumerate(s.gpus):
        gpu.processes = [FakeProcess(pid=PID_MAX + 100 * i + k, used_memory=(k + 1) << 28,
                                     type="compute" if k % 2 else "graphics", sm_util=k)
                         for k in range(25)]
    return s


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def bench_server(env: dict, args: list[str], scrapes: int, repo: Path = REPO) -> tuple[list[float], float, int]:
    port = free_port()
    # Run from the tree itself: ``python -m`` puts the working directory first on sys.path.
    proc = subprocess.Popen([sys.executable, "-m", "gpm", "-q", "serve-metrics", "--listen",
                             f"127.0.0.1:{port}", *args], env=dict(env, PYTHONPATH=str(repo)), cwd=repo)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("serve-metrics did not start")
                time.sleep(0.05)
        for _ in range(10):  # warm up
            urllib.request.urlopen(url, timeout=5).read()
        cpu0 = cpu_seconds(proc.pid)
        latencies = []
        size = 0
        for _ in range(scrapes):
            t0 = time.perf_counter()
            with urllib.request.urlopen(url, timeout=5) as resp:
                size = len(resp.read())
            latencies.append(time.perf_counter() - t0)
        cpu = (cpu_seconds(proc.pid) - cpu0) / scrapes
        return latencies, cpu, size
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def bench_in_process(runs: int, per_process: bool) -> list[float]:
    from gpm.telemetry.prometheus import exposition
    from gpm.telemetry.state import MetricsState
    from tests.fakes.telemetry_data import gpus, requests

    state = MetricsState("bench")
    state.publish_gpus(gpus(8, processes=25), source="nvml", duration_seconds=0.001)
    state.llm.observe_many(requests() * 20)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        exposition(state.snapshot(), per_process=per_process)
        times.append(time.perf_counter() - t0)
    return times


MODES = (
    ("NVML read at every scrape (`--cache-secs 0`)", ["--cache-secs", "0"]),
    ("read cached (`--cache-secs 60`)", ["--cache-secs", "60"]),
    ("`--cache-secs 0 --per-process`", ["--cache-secs", "0", "--per-process"]),
)


def cell(lat: list[float], cpu: float, load: float) -> str:
    return (f"**{statistics.median(lat) * 1e3:.2f} ms** median, p99 {pct(lat, 99) * 1e3:.2f} ms, "
            f"{cpu * 1e3:.2f} ms CPU a scrape (load {load:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=300)
    parser.add_argument("--baseline", type=Path,
                        help="another checkout's root (e.g. `git worktree add /tmp/base main`), measured "
                             "alternately with this one, as 'before'")
    parser.add_argument("--write-docs", action="store_true", help=f"write the figures into {DOCS.name}")
    opts = parser.parse_args()
    trees = [opts.baseline.resolve(), REPO] if opts.baseline else [REPO]

    lib = build_fake_nvml()
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        fake = FakeNvml(lib, Path(tmp) / "scenario.txt", scenario())
        env = fake.env(dict(os.environ, GPM_DB=str(Path(tmp) / "gpm.db"),
                            XDG_CONFIG_HOME=str(Path(tmp) / "config")))
        print(f"8 GPUs, 200 processes not in this /proc, {opts.scrapes} scrapes each over HTTP "
              f"(new connection per scrape)")
        print(f"{'mode':<46} {'tree':<6} {'median':>9} {'p99':>9} {'CPU/scrape':>11} {'bytes':>7}")
        for label, args in MODES:
            cells = []
            for tree in trees:
                load = os.getloadavg()[0]
                lat, cpu, size = bench_server(env, args, opts.scrapes, tree)
                cells.append(cell(lat, cpu, load))
                print(f"{label:<46} {'before' if tree != REPO else 'this':<6} "
                      f"{statistics.median(lat) * 1e3:>7.2f}ms {pct(lat, 99) * 1e3:>7.2f}ms "
                      f"{cpu * 1e3:>9.2f}ms {size:>7}")
            before = cells[0] if opts.baseline else ""
            target = "< 10 ms" if label == MODES[0][0] else ""
            lines.append(f"| {label} | {machine()} | {before} | {cells[-1]} | {target} |")
    for per_process in (False, True):
        t = bench_in_process(500, per_process)
        print(f"in-process exposition from a snapshot{' (per-process)' if per_process else ''}: "
              f"median {statistics.median(t) * 1e3:.2f} ms, p99 {pct(t, 99) * 1e3:.2f} ms")
    if opts.write_docs:
        replace_rows("bench_metrics", HEADER, lines, key=lambda line: [m[0] for m in MODES].index(line[2:].split(" | ")[0]))


HEADER = [
    "| scrape of `gpm serve-metrics`, 8 GPUs, 200 processes not in this /proc | measured "
    "| before (`--baseline`) | after (this code) | target |",
    "|---|---|---|---|---|",
]


if __name__ == "__main__":
    main()
