"""The sample: one reading of one GPU, whichever backend produced it.

NVML and nvidia-smi both fill these dataclasses, so everything downstream
(storage, classification, exporters, reports) sees one shape. A field the GPU
does not report is ``None``, never 0: a zero power reading and "no power
sensor" are different facts.
"""

from __future__ import annotations

import time
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime, timezone

from gpm.humanize import visible

# NVML's clock event ("throttle") reason bits, named as nvidia-smi names them
# (without the clocks_event_reason_ prefix). Storage keeps the bitmask; JSON
# and exporters use the names.
THROTTLE_REASONS: dict[str, int] = {
    "gpu_idle": 0x1,
    "applications_clocks_setting": 0x2,
    "sw_power_cap": 0x4,
    "hw_slowdown": 0x8,
    "sync_boost": 0x10,
    "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40,
    "hw_power_brake_slowdown": 0x80,
    "display_clock_setting": 0x100,
}


def throttle_names(mask: int | None) -> list[str] | None:
    """Bitmask -> reason names, in bit order; ``None`` stays ``None``."""
    if mask is None:
        return None
    return [name for name, bit in THROTTLE_REASONS.items() if mask & bit]


def throttle_mask(names: list[str]) -> int:
    mask = 0
    for name in names:
        mask |= THROTTLE_REASONS.get(name, 0)
    return mask


@dataclass(slots=True)
class ProcessDetails:
    """What classification learnt about a process that storage keeps.

    ``cmdline`` is already redacted (or None when ``[classify] store_cmdline``
    is off), so nothing secret reaches a saver.
    """

    _: KW_ONLY
    user: str | None = None
    exe: str | None = None
    cmdline: list[str] | None = None
    start_time_ms: int | None = None


@dataclass(slots=True)
class GpuProcess:
    """A process holding a context on a GPU, as the driver reports it.

    ``type`` is "compute", "graphics" or "compute+graphics" (a process in
    both lists). ``category``, ``label``, ``reason`` and ``details`` are
    filled by classification (gpm.classify); None until then.
    """

    pid: int
    _: KW_ONLY
    used_memory_bytes: int | None = None
    type: str = "compute"
    sm_utilization_percent: int | None = None
    name: str | None = None
    category: str | None = None
    label: str | None = None
    reason: str | None = None
    details: ProcessDetails | None = None

    def to_json(self) -> dict:
        return {
            "pid": self.pid,
            "name": self.name,
            "used_memory_bytes": self.used_memory_bytes,
            "type": self.type,
            "sm_utilization_percent": self.sm_utilization_percent,
            "category": self.category,
            "label": self.label,
        }


@dataclass(slots=True)
class GpuSample:
    """One GPU at one moment. Units are in the field names; a reading the
    backend did not fill is None."""

    ts_ms: int  # Unix time, milliseconds, UTC
    index: int
    source: str  # "nvml" or "nvidia-smi"
    _: KW_ONLY
    status: str = "ok"  # or a short failure reason ("gpu_is_lost", ...)
    uuid: str | None = None
    name: str | None = None
    pci_bus_id: str | None = None
    serial: str | None = None
    driver_version: str | None = None
    cuda_version: str | None = None
    utilization_gpu_percent: int | None = None
    utilization_memory_percent: int | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    temperature_celsius: int | None = None
    power_watts: float | None = None
    power_limit_watts: float | None = None
    energy_joules: float | None = None  # driver's counter since it loaded
    sm_clock_mhz: int | None = None
    memory_clock_mhz: int | None = None
    fan_percent: int | None = None
    pstate: int | None = None  # 0 for P0 ... 15 for P15
    throttle_reasons: int | None = None  # bitmask of THROTTLE_REASONS
    ecc_uncorrected_errors: int | None = None  # volatile: since the driver loaded; None: no ECC
    xid_errors: list[int] = field(default_factory=list)  # critical Xids since the last read (daemon only)
    processes: list[GpuProcess] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def failure(self) -> str:
        """``GPU 1 (GPU-…) failed: gpu_is_lost``: the one line `gpm sample` and `gpm ps` say it with."""
        ident = self.uuid or self.name
        named = f" ({visible(ident)})" if ident else ""
        return f"GPU {self.index}{named} failed: {self.status}"

    @property
    def ts_iso(self) -> str:
        dt = datetime.fromtimestamp(self.ts_ms / 1000, tz=timezone.utc)
        return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def to_json(self, host: str) -> dict:
        """The ``gpm sample --json`` object (one per GPU per sample)."""
        return {
            "ts": self.ts_iso,
            "host": host,
            "gpu_index": self.index,
            "gpu_uuid": self.uuid,
            "gpu_name": self.name,
            "utilization_gpu_percent": self.utilization_gpu_percent,
            "utilization_memory_percent": self.utilization_memory_percent,
            "memory_used_bytes": self.memory_used_bytes,
            "memory_total_bytes": self.memory_total_bytes,
            "temperature_celsius": self.temperature_celsius,
            "power_watts": self.power_watts,
            "power_limit_watts": self.power_limit_watts,
            "energy_joules": self.energy_joules,
            "sm_clock_mhz": self.sm_clock_mhz,
            "memory_clock_mhz": self.memory_clock_mhz,
            "fan_percent": self.fan_percent,
            "pstate": None if self.pstate is None else f"P{self.pstate}",
            "throttle_reasons": throttle_names(self.throttle_reasons),
            "driver_version": self.driver_version,
            "cuda_version": self.cuda_version,
            "pci_bus_id": self.pci_bus_id,
            "source": self.source,
            "status": self.status,
            "processes": [p.to_json() for p in self.processes],
        }


def now_ms() -> int:
    return time.time_ns() // 1_000_000
