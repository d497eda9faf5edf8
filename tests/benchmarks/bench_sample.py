"""How much does `gpm sample` cost? Run: python tests/benchmarks/bench_sample.py [--runs N] [--write-docs]

Compares, as medians over interleaved runs on the fake NVML with 8 GPUs and 16 processes:
- a cold `gpm sample` (new process, stored to SQLite) against the floor, a bare
  Python script that reads the same fields of the same GPUs as gpm's NVML
  reader does (driver and CUDA version, identity, PCI info and serial, every
  reading, both process lists, per-process utilization), each process's name
  and command line through psutil, and commits the rows with sqlite3
  (target: within 2x the floor; issue #14);
- `gpustat --json` on the same fake, for reference (it sleeps 0.1 s per GPU);
- `gpm --help` (target: under 100 ms);
- in-process CPU per GPU sample, excluding NVML's own time (target < 0.5 ms).

``--write-docs`` puts the figures, with the date and the 1-minute load
before and after the runs, into docs/benchmarks.md between its
``bench_sample`` markers (``gpm --help`` is printed, not written: its
import time is another change's, #14).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.benchmarks.docs import DOCS, machine, replace_rows  # noqa: E402
from tests.fakes.nvml import FakeNvml, FakeProcess, Scenario, build_fake_nvml  # noqa: E402

FLOOR = r"""
import sqlite3, sys, time
import psutil, pynvml
def f(fn, *a):
    try:
        return fn(*a)
    except pynvml.NVMLError:
        return None
pynvml.nvmlInit()
f(pynvml.nvmlSystemGetDriverVersion); f(pynvml.nvmlSystemGetCudaDriverVersion)
ts = time.time_ns() // 1_000_000
rows = []
for i in range(pynvml.nvmlDeviceGetCount()):
    h = pynvml.nvmlDeviceGetHandleByIndex(i)
    f(pynvml.nvmlDeviceGetUUID, h); f(pynvml.nvmlDeviceGetName, h)
    f(pynvml.nvmlDeviceGetPciInfo, h); f(pynvml.nvmlDeviceGetSerial, h)
    util = f(pynvml.nvmlDeviceGetUtilizationRates, h); mem = f(pynvml.nvmlDeviceGetMemoryInfo, h)
    temp = f(pynvml.nvmlDeviceGetTemperature, h, pynvml.NVML_TEMPERATURE_GPU)
    power = f(pynvml.nvmlDeviceGetPowerUsage, h); f(pynvml.nvmlDeviceGetEnforcedPowerLimit, h)
    f(pynvml.nvmlDeviceGetTotalEnergyConsumption, h)
    f(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_SM); f(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_MEM)
    f(pynvml.nvmlDeviceGetFanSpeed, h); f(pynvml.nvmlDeviceGetPerformanceState, h)
    f(pynvml.nvmlDeviceGetCurrentClocksEventReasons, h)
    procs = (f(pynvml.nvmlDeviceGetComputeRunningProcesses, h) or []) + \
        (f(pynvml.nvmlDeviceGetGraphicsRunningProcesses, h) or [])
    f(pynvml.nvmlDeviceGetProcessUtilization, h, 0)
    for p in procs:
        try:
            proc = psutil.Process(p.pid)
            proc.name(); proc.cmdline()
        except psutil.Error:
            pass
    rows.append((ts, i, util and util.gpu, mem and mem.used, temp, power))
pynvml.nvmlShutdown()
db = sqlite3.connect(sys.argv[1])
db.execute("PRAGMA journal_mode = WAL")
db.execute("CREATE TABLE IF NOT EXISTS m (ts_ms, gpu, util, mem, temp, power_mw, PRIMARY KEY (ts_ms, gpu))")
with db:
    db.executemany("INSERT OR REPLACE INTO m VALUES (?, ?, ?, ?, ?, ?)", rows)
db.close()
"""


ENTRY = "import sys; from gpm.cli import main; sys.exit(main())"


def scenario() -> Scenario:
    s = Scenario.many(8)
    me, parent = os.getpid(), os.getppid()  # 16 processes that /proc can show
    for gpu in s.gpus:
        gpu.processes = [FakeProcess(pid=me, used_memory=512 << 20), FakeProcess(pid=parent, used_memory=256 << 20)]
    return s


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wall(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run."""
    cpu, start = child_cpu(), time.perf_counter()
    # From the checkout: `python -c` looks in the current folder first, where another gpm may be.
    subprocess.run(cmd, env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, child_cpu() - cpu


def in_process_cost(env: dict, rounds: int = 300) -> tuple[float, float]:
    """(CPU ms per GPU for Sampler.sample with store, CPU ms per GPU of bare pynvml reads)."""
    os.environ.update(env)
    from tests.fakes.nvml import preload

    preload(Path(env["LD_LIBRARY_PATH"].split(os.pathsep)[0]))
    import pynvml

    from gpm.config import load_config
    from gpm.sampling import Sampler
    from gpm.store.db import open_db

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(env={})
        sampler = Sampler(cfg, conn=open_db(Path(tmp) / "gpm.db")).open()
        sampler.sample()
        start = time.process_time()
        for _ in range(rounds):
            sampler.sample()
        gpm_cpu = (time.process_time() - start) / rounds / 8
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(8)]
        start = time.process_time()
        for _ in range(rounds):
            for h in handles:
                pynvml.nvmlDeviceGetUtilizationRates(h); pynvml.nvmlDeviceGetMemoryInfo(h)
                pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
                pynvml.nvmlDeviceGetPowerUsage(h); pynvml.nvmlDeviceGetEnforcedPowerLimit(h)
                pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
                pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)
                pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM)
                try:
                    pynvml.nvmlDeviceGetFanSpeed(h)
                except pynvml.NVMLError:
                    pass
                pynvml.nvmlDeviceGetPerformanceState(h)
                pynvml.nvmlDeviceGetCurrentClocksEventReasons(h)
                pynvml.nvmlDeviceGetComputeRunningProcesses(h)
                pynvml.nvmlDeviceGetGraphicsRunningProcesses(h)
                try:
                    pynvml.nvmlDeviceGetProcessUtilization(h, 0)
                except pynvml.NVMLError:
                    pass
        nvml_cpu = (time.process_time() - start) / rounds / 8
        sampler.close()
    return gpm_cpu * 1000, nvml_cpu * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--write-docs", action="store_true", help=f"write the figures into {DOCS.name}")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gpm-bench-"))
    fake = FakeNvml(build_fake_nvml(), tmp / "scenario.txt", scenario())
    env = fake.env()
    env["PYTHONPATH"] = str(REPO)
    # Installed packages have their bytecode compiled; so must the checkout.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["HOME"] = str(tmp)
    env["XDG_DATA_HOME"] = str(tmp / "data")
    env["XDG_CONFIG_HOME"] = str(tmp / "config")
    py = sys.executable
    commands = {
        "floor (pynvml, psutil, sqlite3)": [py, "-c", FLOOR, str(tmp / "floor.db")],
        # What the `gpm` console script that pip installs runs:
        "gpm sample (cold, stored)": [py, "-c", ENTRY, "--db", str(tmp / "gpm.db"), "sample"],
        "gpustat --json": [py, "-m", "gpustat", "--json"],
        "gpm --help": [py, "-c", ENTRY, "--help"],
    }
    for cmd in commands.values():  # warm the page cache and the database
        wall(cmd, env)
    loads = [os.getloadavg()[0]]
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, cmd in commands.items():  # interleaved, so drift hits all alike
            times[name].append(wall(cmd, env))
    loads.append(os.getloadavg()[0])
    med = {name: statistics.median(w for w, _ in v) * 1000 for name, v in times.items()}
    cpu = {name: statistics.median(c for _, c in v) * 1000 for name, v in times.items()}
    floor_name, gpm_name = "floor (pynvml, psutil, sqlite3)", "gpm sample (cold, stored)"
    floor = med[floor_name]
    print(f"median wall time (and CPU) over {args.runs} interleaved runs, 8 fake GPUs:")
    for name, ms in med.items():
        print(f"  {name:<30} {ms:7.1f} ms   {ms / floor:5.2f}x floor   CPU {cpu[name]:6.1f} ms")
    gpm_cpu, nvml_cpu = in_process_cost(env)
    print(f"in-process CPU per GPU sample: gpm {gpm_cpu:.3f} ms, bare NVML reads {nvml_cpu:.3f} ms, "
          f"gpm's own cost {gpm_cpu - nvml_cpu:.3f} ms (target < 0.5 ms)")
    if args.write_docs:
        replace_rows("bench_sample", HEADER, [
            f"| cold `gpm sample`, 8 fake GPUs, 16 processes, stored | {machine()}, load "
            f"{loads[0]:.1f} / {loads[1]:.1f} | **{med[gpm_name] / floor:.2f}x** the floor: {med[gpm_name]:.0f} vs "
            f"{floor:.0f} ms wall, {cpu[gpm_name]:.0f} vs {cpu[floor_name]:.0f} ms CPU (medians of {args.runs} "
            f"interleaved runs; `gpustat --json` {med['gpustat --json']:.0f} ms) | gpm's own CPU "
            f"{gpm_cpu - nvml_cpu:.3f} ms per GPU sample, NVML's time excluded (target < 0.5 ms) |",
        ], key=lambda line: line)


HEADER = [
    "| case | measured (load: 1-minute average before / after) | against the floor (target <= 2x) | in process |",
    "|---|---|---|---|",
]


if __name__ == "__main__":
    main()
