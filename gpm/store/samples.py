"""Save GPU samples: upsert the GPU's identity, append its metrics.

A sample's ``memory_total_bytes`` goes to ``gpus`` (it is the GPU's, not
the moment's); ``power_limit_watts`` goes to both, since users change power
limits at run time and the report needs the limit of each moment.
"""

from __future__ import annotations

import sqlite3
from typing import Iterable

from gpm.gpu.model import GpuSample
from gpm.store.db import write
from gpm.store.schema_core import SOURCE_CODES

_METRIC_SQL = """
INSERT OR IGNORE INTO gpu_metrics (
    ts_ms, gpu_id, source, status, utilization_gpu_percent, utilization_memory_percent,
    memory_used_bytes, temperature_celsius, power_milliwatts,
    power_limit_milliwatts, energy_millijoules, sm_clock_mhz, memory_clock_mhz,
    fan_percent, pstate, throttle_reasons
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


def gpu_key(sample: GpuSample) -> str:
    """The GPU's stable identity: its UUID, or its index when the UUID is unknown."""
    return sample.uuid or f"index:{sample.index}"


def _milli(value: float | None) -> int | None:
    return None if value is None else round(value * 1000)


class GpuIds:
    """Caches gpus.id per (host, uuid) so a daemon does not look it up each sample."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], int] = {}
        self._identity: dict[int, tuple] = {}

    def resolve(self, conn: sqlite3.Connection, host: str, sample: GpuSample) -> int:
        key = (host, gpu_key(sample))
        identity = (
            sample.index, sample.name, sample.pci_bus_id, sample.serial,
            sample.memory_total_bytes, sample.power_limit_watts,
            sample.driver_version, sample.cuda_version,
        )
        gpu_id = self._ids.get(key)
        if gpu_id is not None and self._identity.get(gpu_id) == identity:
            conn.execute("UPDATE gpus SET last_seen_ms = ? WHERE id = ?", (sample.ts_ms, gpu_id))
            return gpu_id
        row = conn.execute("SELECT id FROM gpus WHERE host = ? AND uuid = ?", key).fetchone()
        if row is None:
            gpu_id = conn.execute(
                """INSERT INTO gpus (host, uuid, gpu_index, name, pci_bus_id, serial,
                   memory_total_bytes, power_limit_watts, driver_version, cuda_version,
                   first_seen_ms, last_seen_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (*key, *identity, sample.ts_ms, sample.ts_ms),
            ).lastrowid
        else:
            gpu_id = row[0]
            # A failed read knows little: keep what an earlier sample recorded.
            conn.execute(
                """UPDATE gpus SET gpu_index = ?, name = COALESCE(?, name),
                   pci_bus_id = COALESCE(?, pci_bus_id), serial = COALESCE(?, serial),
                   memory_total_bytes = COALESCE(?, memory_total_bytes),
                   power_limit_watts = COALESCE(?, power_limit_watts),
                   driver_version = COALESCE(?, driver_version),
                   cuda_version = COALESCE(?, cuda_version),
                   last_seen_ms = MAX(last_seen_ms, ?) WHERE id = ?""",
                (*identity, sample.ts_ms, gpu_id),
            )
        self._ids[key] = gpu_id
        self._identity[gpu_id] = identity
        return gpu_id


def metric_row(gpu_id: int, s: GpuSample) -> tuple:
    return (
        s.ts_ms, gpu_id, SOURCE_CODES[s.source], None if s.ok else s.status,
        s.utilization_gpu_percent, s.utilization_memory_percent,
        s.memory_used_bytes, s.temperature_celsius,
        _milli(s.power_watts), _milli(s.power_limit_watts), _milli(s.energy_joules),
        s.sm_clock_mhz, s.memory_clock_mhz, s.fan_percent, s.pstate, s.throttle_reasons,
    )


def save_samples(
    conn: sqlite3.Connection, host: str, samples: Iterable[GpuSample], ids: GpuIds | None = None
) -> dict[int, int]:
    """Store one sample of every GPU in one transaction; return {index: gpu_id}.

    Savers of other tables (process events, ...) run inside the same
    transaction through ``save_samples_with`` so a sample is stored whole or
    not at all.
    """
    ids = ids or GpuIds()
    with write(conn):
        return _save(conn, host, samples, ids)


def _save(conn: sqlite3.Connection, host: str, samples: Iterable[GpuSample], ids: GpuIds) -> dict[int, int]:
    rows = []
    gpu_ids: dict[int, int] = {}
    for s in samples:
        gpu_id = ids.resolve(conn, host, s)
        gpu_ids[s.index] = gpu_id
        rows.append(metric_row(gpu_id, s))
    conn.executemany(_METRIC_SQL, rows)
    return gpu_ids
