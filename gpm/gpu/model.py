"""The sample: one reading of one GPU, whichever backend produced it.

NVML and nvidia-smi both fill these dataclasses, so everything downstream
(storage, classification, exporters, reports) sees one shape. A field the GPU
does not report is ``None``, never 0: a zero power reading and "no power
sensor" are different facts.
"""

from __future__ import annotations

from datetime import datetime, timezone

from gpm.humanize import visible
from gpm.plain import Plain

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


# GpuSample's fields after (ts_ms, index, source, status), in its order:
# every reading is None unless the backend filled it.
_READINGS = (
    "uuid", "name", "pci_bus_id", "serial", "driver_version", "cuda_version",
    "utilization_gpu_percent", "utilization_memory_percent", "memory_used_bytes", "memory_total_bytes",
    "temperature_celsius", "power_watts", "power_limit_watts", "energy_joules", "sm_clock_mhz",
    "memory_clock_mhz", "fan_percent", "pstate", "throttle_reasons",
)
_SAMPLE_FIELDS = ("ts_ms", "index", "source", "status") + _READINGS


class ProcessDetails(Plain):
    """What classification learnt about a process that storage keeps.

    ``cmdline`` is already redacted (or None when ``[classify] store_cmdline``
    is off), so nothing secret reaches a saver.
    """

    __slots__ = ("user", "exe", "cmdline", "start_time_ms")

    def __init__(self, *, user: str | None = None, exe: str | None = None, cmdline: list[str] | None = None,
                 start_time_ms: int | None = None) -> None:
        self.user = user
        self.exe = exe
        self.cmdline = cmdline
        self.start_time_ms = start_time_ms


class GpuProcess(Plain):
    """A process holding a context on a GPU, as the driver reports it.

    ``type`` is "compute", "graphics" or "compute+graphics" (a process in
    both lists). ``category``, ``label``, ``reason`` and ``details`` are
    filled by classification (gpm.classify); None until then.
    """

    __slots__ = ("pid", "used_memory_bytes", "type", "sm_utilization_percent", "name", "category", "label",
                 "reason", "details")

    def __init__(self, pid: int, *, used_memory_bytes: int | None = None, type: str = "compute",
                 sm_utilization_percent: int | None = None, name: str | None = None, category: str | None = None,
                 label: str | None = None, reason: str | None = None,
                 details: ProcessDetails | None = None) -> None:
        self.pid = pid
        self.used_memory_bytes = used_memory_bytes
        self.type = type
        self.sm_utilization_percent = sm_utilization_percent
        self.name = name
        self.category = category
        self.label = label
        self.reason = reason
        self.details = details

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


class GpuSample(Plain):
    """One GPU at one moment. Units are in the field names."""

    ts_ms: int  # Unix time, milliseconds, UTC
    index: int
    source: str  # "nvml" or "nvidia-smi"
    status: str  # "ok" or a short failure reason ("gpu_is_lost", ...)
    uuid: str | None
    name: str | None
    pci_bus_id: str | None
    serial: str | None
    driver_version: str | None
    cuda_version: str | None
    utilization_gpu_percent: int | None
    utilization_memory_percent: int | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    temperature_celsius: int | None
    power_watts: float | None
    power_limit_watts: float | None
    energy_joules: float | None  # driver's counter since it loaded
    sm_clock_mhz: int | None
    memory_clock_mhz: int | None
    fan_percent: int | None
    pstate: int | None  # 0 for P0 ... 15 for P15
    throttle_reasons: int | None  # bitmask of THROTTLE_REASONS
    processes: list[GpuProcess]

    __slots__ = _SAMPLE_FIELDS + ("processes",)

    def __init__(self, ts_ms: int, index: int, source: str, *, status: str = "ok",
                 processes: list[GpuProcess] | None = None, **readings: object) -> None:
        self.ts_ms = ts_ms
        self.index = index
        self.source = source
        self.status = status
        self.processes = [] if processes is None else processes
        for name in _READINGS:
            setattr(self, name, readings.pop(name, None))
        if readings:
            raise TypeError(f"GpuSample() got unexpected keyword arguments: {', '.join(sorted(readings))}")

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
    import time

    return time.time_ns() // 1_000_000
