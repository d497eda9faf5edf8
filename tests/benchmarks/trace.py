"""A generated GPU trace with realistic shapes, for benchmarks and tests.

``trace_frame(gpus=8, days=7, interval_s=1)`` builds one row per GPU per
sample, in gpm's storage units (the ``gpu_metrics`` columns), with Polars
only (no numpy): idle nights, short daytime bursts, long training loads,
sensor noise of a few percent on utilization, power and temperature, a
temperature that lags the load, a monotonic energy counter, clocks, P-states,
fan and throttle reasons as an RTX 6000 Ada reports them. Noise comes from
hashing the sample number, so a seed gives the same trace every time.

``write_trace(conn, frame)`` stores it fast (``executemany`` in key order);
``trace_samples(frame)`` yields ``GpuSample`` lists for gpm's own
``save_samples``. The report benchmark reuses this module.
"""

from __future__ import annotations

import sqlite3
from typing import Iterator

import polars as pl

DAY_MS = 86_400_000
GPU_NAME = "NVIDIA RTX 6000 Ada Generation"
MEMORY_TOTAL_BYTES = 51_527_024_640
POWER_LIMIT_MW = 300_000


def _uniform(expr: pl.Expr, seed: int) -> pl.Expr:
    """A deterministic uniform [0, 1) per value of ``expr``."""
    return (expr.hash(seed) % 1_000_003).cast(pl.Float64) / 1_000_003


def _noise(expr: pl.Expr, seed: int) -> pl.Expr:
    """Roughly normal noise, mean 0, standard deviation ~1 (sum of three uniforms)."""
    return (_uniform(expr, seed) + _uniform(expr, seed + 1) + _uniform(expr, seed + 2) - 1.5) * 2.0


def trace_frame(gpus: int = 8, days: float = 7, interval_s: float = 1.0, *,
                start_ms: int | None = None, seed: int = 7) -> pl.DataFrame:
    """The trace as a frame of ``gpu_index`` + ``gpu_metrics`` columns, sorted by (ts_ms, gpu_index)."""
    import time

    n = int(days * 86_400 / interval_s)
    step_ms = int(interval_s * 1000)
    if start_ms is None:
        start_ms = (time.time_ns() // 1_000_000 - int(days * DAY_MS)) // DAY_MS * DAY_MS
    ticks = pl.DataFrame({"i": pl.int_range(0, n, eager=True, dtype=pl.Int64)})
    ticks = ticks.with_columns(
        # A drift-free 1 Hz schedule still wakes a few ms late.
        ts_ms=start_ms + pl.col("i") * step_ms + (_uniform(pl.col("i"), seed) * 25).cast(pl.Int64),
    )
    frames = [ticks.with_columns(gpu_index=pl.lit(g, dtype=pl.Int64)) for g in range(gpus)]
    f = pl.concat(frames).sort(["ts_ms", "gpu_index"])
    row = pl.col("i") * 64 + pl.col("gpu_index")
    hour = ((pl.col("ts_ms") % DAY_MS) / 3_600_000)
    night = (hour < 7) | (hour >= 23)
    # Long loads: 3-hour blocks, some GPUs train (more by day); bursts: 10-minute blocks.
    load_block = pl.col("ts_ms") // 10_800_000 * 16 + pl.col("gpu_index")
    burst_block = pl.col("ts_ms") // 600_000 * 16 + pl.col("gpu_index")
    long_load = _uniform(load_block, seed + 10) < pl.when(night).then(0.25).otherwise(0.45)
    burst = (~night) & (_uniform(burst_block, seed + 11) < 0.3)
    f = f.with_columns(
        state=pl.when(long_load).then(2).when(burst).then(1).otherwise(0),
        burst_level=30 + _uniform(burst_block, seed + 12) * 60,
        load_mem=20 + _uniform(load_block, seed + 13) * 25,
    )
    util = (
        pl.when(pl.col("state") == 2).then(97 + _noise(row, seed + 20) * 3)
        .when(pl.col("state") == 1).then(pl.col("burst_level") * (1 + _noise(row, seed + 21) * 0.05))
        .otherwise(_uniform(row, seed + 22) * 2)
    ).clip(0, 100)
    f = f.with_columns(util=util)
    f = f.with_columns(
        # Temperature follows the load with a lag (a thermal mass), per GPU.
        temp_smooth=(34 + pl.col("util") * 0.5).ewm_mean(alpha=min(1.0, 0.02 * interval_s), adjust=False)
        .over("gpu_index"),
        power_w=(pl.when(pl.col("state") == 0).then(22.0).otherwise(70 + pl.col("util") * 2.35))
        * (1 + _noise(row, seed + 30) * 0.03),
    )
    f = f.with_columns(power_w=pl.col("power_w").clip(5, POWER_LIMIT_MW / 1000))
    f = f.with_columns(
        energy_j=(pl.col("power_w") * interval_s).cum_sum().over("gpu_index")
        + 1.0e6 * (pl.col("gpu_index") + 3),
    )
    active = pl.col("state") > 0
    out = f.select(
        "ts_ms",
        "gpu_index",
        source=pl.lit(0, dtype=pl.Int64),
        status=pl.lit(None, dtype=pl.String),
        utilization_gpu_percent=pl.col("util").round().cast(pl.Int64),
        utilization_memory_percent=(pl.col("util") * 0.6 * (1 + _noise(row, seed + 40) * 0.05))
        .clip(0, 100).round().cast(pl.Int64),
        memory_used_bytes=(
            pl.when(pl.col("state") == 2).then(pl.col("load_mem") * 2**30)
            .when(pl.col("state") == 1).then((8 + pl.col("burst_level") / 10) * 2**30)
            .otherwise(487 * 2**20)
            + (_uniform(pl.col("ts_ms") // 60_000 * 16 + pl.col("gpu_index"), seed + 41) * 64).floor() * 2**20
        ).cast(pl.Int64),
        memory_total_bytes=pl.lit(MEMORY_TOTAL_BYTES, dtype=pl.Int64),
        temperature_celsius=(pl.col("temp_smooth") + _noise(row, seed + 50) * 0.7).round().cast(pl.Int64),
        power_milliwatts=(pl.col("power_w") * 1000).round().cast(pl.Int64),
        power_limit_milliwatts=pl.lit(POWER_LIMIT_MW, dtype=pl.Int64),
        energy_millijoules=(pl.col("energy_j") * 1000).round().cast(pl.Int64),
        sm_clock_mhz=pl.when(active).then(2505 - (pl.col("util") > 95).cast(pl.Int64) * 15 * (
            _uniform(row, seed + 60) * 4).floor().cast(pl.Int64)).otherwise(210),
        memory_clock_mhz=pl.when(active).then(pl.lit(10001)).otherwise(405),
        fan_percent=(30 + (pl.col("temp_smooth") - 40).clip(0, 50) * 1.2).round().cast(pl.Int64),
        pstate=pl.when(active).then(pl.lit(2)).otherwise(8),
        throttle_reasons=pl.when(~active).then(pl.lit(0x1))
        .when(pl.col("power_w") >= POWER_LIMIT_MW / 1000 * 0.98).then(pl.lit(0x4)).otherwise(0),
    )
    return out


def write_trace(conn: sqlite3.Connection, frame: pl.DataFrame, host: str = "bench-host",
                batch: int = 200_000) -> None:
    """Store the trace: one ``gpus`` row per GPU, then ``gpu_metrics`` in key order."""
    gpus = frame.get_column("gpu_index").unique().sort().to_list()
    first, last = int(frame.get_column("ts_ms").min()), int(frame.get_column("ts_ms").max())
    ids = {}
    conn.execute("BEGIN IMMEDIATE")
    for g in gpus:
        uuid = f"GPU-{g:08x}-5e1f-4c2a-9b7d-{g:012x}"
        conn.execute(
            """INSERT INTO gpus (host, uuid, gpu_index, name, pci_bus_id, memory_total_bytes,
               power_limit_watts, driver_version, cuda_version, first_seen_ms, last_seen_ms)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (host, uuid) DO UPDATE SET first_seen_ms = MIN(first_seen_ms, excluded.first_seen_ms),
               last_seen_ms = MAX(last_seen_ms, excluded.last_seen_ms)""",
            (host, uuid, g, GPU_NAME, f"00000000:{g + 1:02X}:00.0",
             MEMORY_TOTAL_BYTES, POWER_LIMIT_MW / 1000, "550.54.15", "12.4", first, last),
        )
        ids[g] = conn.execute("SELECT id FROM gpus WHERE host = ? AND uuid = ?", (host, uuid)).fetchone()[0]
    conn.execute("COMMIT")
    stored = {row[1] for row in conn.execute("PRAGMA table_info(gpu_metrics)")}
    # memory_total_bytes lives in gpus since schema_core 0002.
    metrics = frame.with_columns(pl.col("gpu_index").replace_strict(ids).alias("gpu_id")).select(
        "ts_ms", "gpu_id", *[c for c in frame.columns if c not in ("ts_ms", "gpu_index") and c in stored]
    )
    placeholders = ", ".join("?" * metrics.width)
    sql = f"INSERT INTO gpu_metrics ({', '.join(metrics.columns)}) VALUES ({placeholders})"
    for offset in range(0, metrics.height, batch):
        chunk = metrics.slice(offset, batch)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, chunk.iter_rows())
        conn.execute("COMMIT")


def trace_samples(frame: pl.DataFrame) -> Iterator[list]:
    """The trace as ``GpuSample`` lists, one list per sample time, for ``save_samples``."""
    from gpm.gpu.sample import GpuSample

    for (ts_ms,), rows in frame.group_by(["ts_ms"], maintain_order=True):
        samples = []
        for r in rows.iter_rows(named=True):
            g = r["gpu_index"]
            samples.append(GpuSample(
                ts_ms=ts_ms, index=g, source="nvml", status=r["status"] or "ok",
                uuid=f"GPU-{g:08x}-5e1f-4c2a-9b7d-{g:012x}", name=GPU_NAME,
                pci_bus_id=f"00000000:{g + 1:02X}:00.0", driver_version="550.54.15", cuda_version="12.4",
                utilization_gpu_percent=r["utilization_gpu_percent"],
                utilization_memory_percent=r["utilization_memory_percent"],
                memory_used_bytes=r["memory_used_bytes"], memory_total_bytes=r["memory_total_bytes"],
                temperature_celsius=r["temperature_celsius"], power_watts=r["power_milliwatts"] / 1000,
                power_limit_watts=r["power_limit_milliwatts"] / 1000,
                energy_joules=r["energy_millijoules"] / 1000, sm_clock_mhz=r["sm_clock_mhz"],
                memory_clock_mhz=r["memory_clock_mhz"], fan_percent=r["fan_percent"], pstate=r["pstate"],
                throttle_reasons=r["throttle_reasons"],
            ))
        yield samples
