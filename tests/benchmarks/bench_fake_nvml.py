"""How much does a call into the fake NVML cost? Run: python tests/benchmarks/bench_fake_nvml.py [--runs N]

The fake re-reads its scenario file when it changes, so every test and
benchmark that samples 8 fake GPUs pays this per call. Median over N runs of
the seven per-GPU reads a sample makes (utilization, memory, temperature,
power, energy, clock, processes), 10 rounds over 8 GPUs each, in-process
through pynvml (target: under 200 µs a call, so the fake never dominates a
sample). It was an assertion in tests/test_fake_nvml.py, where a loaded
machine made it fail (#14.8).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.fakes.nvml import FakeNvml, Scenario, build_fake_nvml, preload, reset  # noqa: E402

TARGET_US = 200.0
GPUS, ROUNDS, READS = 8, 10, 7


def per_call_us(N, handles) -> float:
    start = time.perf_counter()
    for _ in range(ROUNDS):
        for h in handles:
            N.nvmlDeviceGetUtilizationRates(h)
            N.nvmlDeviceGetMemoryInfo(h)
            N.nvmlDeviceGetTemperature(h, 0)
            N.nvmlDeviceGetPowerUsage(h)
            N.nvmlDeviceGetTotalEnergyConsumption(h)
            N.nvmlDeviceGetClockInfo(h, 1)
            N.nvmlDeviceGetComputeRunningProcesses(h)
    return (time.perf_counter() - start) / (ROUNDS * GPUS * READS) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    lib_dir = build_fake_nvml()
    lib = preload(lib_dir)
    reset(lib)
    import pynvml as N

    with tempfile.TemporaryDirectory() as tmp:
        fake = FakeNvml(lib_dir, Path(tmp) / "nvml.scenario")
        fake.set(Scenario.many(GPUS))
        os.environ["FAKE_NVML_SCENARIO"] = str(fake.scenario_path)
        N.nvmlInit()
        try:
            handles = [N.nvmlDeviceGetHandleByIndex(i) for i in range(GPUS)]
            figures = sorted(per_call_us(N, handles) for _ in range(args.runs))
        finally:
            N.nvmlShutdown()
    median = statistics.median(figures)
    verdict = "met" if median < TARGET_US else "MISSED"
    print(f"fake NVML, {GPUS} GPUs, {READS} reads each: {median:.1f} µs a call, median of {args.runs} runs "
          f"({figures[0]:.1f}-{figures[-1]:.1f}); target < {TARGET_US:.0f} µs: {verdict}")


if __name__ == "__main__":
    main()
