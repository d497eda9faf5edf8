"""A fake NVML for tests: scenarios in Python, served by a small C library.

``fake_nvml.c`` is compiled into ``libnvidia-ml.so.1`` (soname too), which the
real ``pynvml`` loads, so the real ctypes structs and return codes are used.
The library serves the world described by the scenario file named in
``$FAKE_NVML_SCENARIO`` and re-reads it whenever the file changes, so a test
changes the world with ``scenario.write(path)`` (an atomic replace).

Subprocess use::

    lib_dir = build_fake_nvml()
    Scenario.many(2).write(tmp_path / "nvml.scenario")
    subprocess.run([...], env=fake_env(lib_dir, tmp_path / "nvml.scenario"))

In-process use: ``preload(lib_dir)`` before pynvml's first ``nvmlInit`` and
``FAKE_NVML_SCENARIO`` in ``os.environ`` (``monkeypatch.setenv``).

``None`` for a GPU field means the GPU does not support it: its NVML getter
answers ``NVML_ERROR_NOT_SUPPORTED`` (pynvml raises ``NVMLError_NotSupported``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

SOURCE = Path(__file__).with_name("fake_nvml.c")
LIB_NAME = "libnvidia-ml.so.1"
ENV_VAR = "FAKE_NVML_SCENARIO"
CFLAGS = [
    "-shared", "-fPIC", "-O2", "-pthread", "-fvisibility=hidden", "-Wall",
    f"-Wl,-soname,{LIB_NAME}",
]

MiB = 1024 * 1024

#: NVML return codes by name (as in nvml.h, without ``NVML_ERROR_``).
NVML_ERRORS = {
    "UNINITIALIZED": 1, "INVALID_ARGUMENT": 2, "NOT_SUPPORTED": 3, "NO_PERMISSION": 4,
    "ALREADY_INITIALIZED": 5, "NOT_FOUND": 6, "INSUFFICIENT_SIZE": 7,
    "INSUFFICIENT_POWER": 8, "DRIVER_NOT_LOADED": 9, "TIMEOUT": 10, "IRQ_ISSUE": 11,
    "LIBRARY_NOT_FOUND": 12, "FUNCTION_NOT_FOUND": 13, "CORRUPTED_INFOROM": 14,
    "GPU_IS_LOST": 15, "RESET_REQUIRED": 16, "OPERATING_SYSTEM": 17,
    "LIB_RM_VERSION_MISMATCH": 18, "IN_USE": 19, "MEMORY": 20, "NO_DATA": 21,
    "VGPU_ECC_NOT_SUPPORTED": 22, "INSUFFICIENT_RESOURCES": 23, "FREQ_NOT_SUPPORTED": 24,
    "ARGUMENT_VERSION_MISMATCH": 25, "DEPRECATED": 26, "NOT_READY": 27,
    "GPU_NOT_FOUND": 28, "INVALID_STATE": 29, "RESET_TYPE_NOT_SUPPORTED": 30,
    "UNKNOWN": 999,
}


def _error_name(err: str | int) -> str:
    if isinstance(err, int):
        return str(err)
    name = err.upper().removeprefix("NVML_ERROR_")
    if name not in NVML_ERRORS:
        raise ValueError(f"unknown NVML error {err!r}")
    return name


@dataclass
class FakeProcess:
    pid: int
    #: bytes; None: NVML_VALUE_NOT_AVAILABLE (pynvml gives usedGpuMemory None)
    used_memory: int | None = 512 * MiB
    #: "compute", "graphics" or "both" (listed by both NVML calls)
    type: str = "compute"
    #: per-process utilization %, served by nvmlDeviceGetProcessUtilization;
    #: a process with all four None has no sample there
    sm_util: int | None = None
    mem_util: int | None = None
    enc_util: int | None = None
    dec_util: int | None = None
    #: what nvmlSystemGetProcessName answers; None: argv[0] from /proc
    name: str | None = None

    def line(self) -> str:
        if self.type not in ("compute", "graphics", "both"):
            raise ValueError(f"process type {self.type!r}")
        mem = "na" if self.used_memory is None else str(int(self.used_memory))
        parts = [f"pid={int(self.pid)}", f"mem={mem}", f"type={self.type}"]
        for key, value in (("sm", self.sm_util), ("memutil", self.mem_util),
                           ("enc", self.enc_util), ("dec", self.dec_util)):
            if value is not None:
                parts.append(f"{key}={int(value)}")
        if self.name is not None:
            parts.append(f"name={_one_line(self.name)}")
        return "process " + " ".join(parts)


@dataclass
class FakeGpu:
    """One GPU. Defaults: a busy GeForce RTX 4090 (no serial: GeForce has none)."""

    name: str | None = "NVIDIA GeForce RTX 4090"
    uuid: str | None = "GPU-5f6e0c4a-2b7d-4c1e-9a8f-3d2e1b0c9a87"
    serial: str | None = None
    pci_bus_id: str | None = "00000000:01:00.0"
    pci_device_id: int = 0x268410DE
    pci_subsystem_id: int = 0x16F010DE
    memory_total: int | None = 25757220864  # 24564 MiB
    memory_used: int = 8 * 1024 * MiB
    #: driver-reserved bytes: in v1 "used", apart in nvmlDeviceGetMemoryInfo_v2
    memory_reserved: int = 0
    util_gpu: int | None = 37
    util_memory: int | None = 12
    temperature: int | None = 54  # C
    power_mw: int | None = 123456
    power_limit_mw: int | None = 450000  # enforced
    #: nvmlDeviceGetPowerManagementLimit; "same" copies power_limit_mw
    power_management_limit_mw: int | None | str = "same"
    energy_mj: int | None = 987_654_321
    #: False: the counter grows at power_mw from when the library loaded the scenario
    energy_fixed: bool = False
    clock_graphics: int | None = 2520
    clock_sm: int | None = 2520
    clock_mem: int | None = 10501
    clock_video: int | None = 1965
    max_clock_graphics: int | None = 3105
    max_clock_sm: int | None = 3105
    max_clock_mem: int | None = 10501
    max_clock_video: int | None = 2415
    fan: int | None = 41
    pstate: int | None = 2
    clocks_event_reasons: int | None = 0
    encoder_util: int | None = 0
    decoder_util: int | None = 0
    processes: list[FakeProcess] = field(default_factory=list)
    #: {"nvmlDeviceGetFanSpeed": "NOT_SUPPORTED", ...}: that call fails so
    #: (a name without _vN covers every version of the function)
    fails: dict[str, str | int] = field(default_factory=dict)
    #: after this many calls taking the GPU's handle, every call answers
    #: GPU_IS_LOST (and handle lookups too); 0: lost from the start
    lost_after: int | None = None
    #: the error nvmlDeviceGetHandleByIndex (and ByUUID/ByPciBusId) answers
    handle_error: str | None = None
    #: every call taking the GPU's handle first sleeps this long (a GPU whose
    #: driver calls became slow); the other GPUs answer meanwhile
    slow_ms: int = 0
    #: uncorrected ECC errors since the driver loaded (nvmlDeviceGetTotalEccErrors);
    #: None: the GPU has no ECC (NOT_SUPPORTED)
    ecc_uncorrected: int | None = None
    #: critical Xid errors, each served once per load of the scenario by
    #: nvmlEventSetWait to an event set this GPU is registered in
    xids: list[int] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = ["gpu"]

        def put(key, value):
            if value is not None:
                out.append(f"{key} {_one_line(str(value))}")

        put("name", self.name)
        put("uuid", self.uuid)
        put("serial", self.serial)
        put("pci_bus_id", self.pci_bus_id)
        if self.pci_bus_id is not None:
            put("pci_device_id", f"0x{self.pci_device_id:08X}")
            put("pci_subsystem_id", f"0x{self.pci_subsystem_id:08X}")
        put("memory_total", self.memory_total)
        if self.memory_total is not None:
            put("memory_used", self.memory_used)
            put("memory_reserved", self.memory_reserved)
        put("util_gpu", self.util_gpu)
        put("util_memory", self.util_memory)
        put("temperature", self.temperature)
        put("power", self.power_mw)
        put("power_limit", self.power_limit_mw)
        pm = self.power_limit_mw if self.power_management_limit_mw == "same" \
            else self.power_management_limit_mw
        put("power_management_limit", pm)
        put("energy", self.energy_mj)
        if self.energy_mj is not None:
            put("energy_fixed", int(bool(self.energy_fixed)))
        for kind in ("graphics", "sm", "mem", "video"):
            put(f"clock_{kind}", getattr(self, f"clock_{kind}"))
            put(f"max_clock_{kind}", getattr(self, f"max_clock_{kind}"))
        put("fan", self.fan)
        put("pstate", self.pstate)
        if self.clocks_event_reasons is not None:
            put("clocks_event_reasons", f"0x{self.clocks_event_reasons:X}")
        put("encoder", self.encoder_util)
        put("decoder", self.decoder_util)
        put("lost_after", self.lost_after)
        if self.slow_ms:
            put("slow_ms", int(self.slow_ms))
        if self.handle_error is not None:
            out.append(f"fail nvmlDeviceGetHandleByIndex {_error_name(self.handle_error)}")
        for fn, err in self.fails.items():
            out.append(f"fail {fn} {_error_name(err)}")
        out.extend(p.line() for p in self.processes)
        put("ecc_uncorrected", self.ecc_uncorrected)
        out.extend(f"xid {int(code)}" for code in self.xids)
        return out


# name, memory total bytes, enforced power limit mW, max sm/mem clocks, pci device id,
# has a fan, has a serial
_MODELS = [
    ("NVIDIA GeForce RTX 4090", 25757220864, 450000, 3105, 10501, 0x268410DE, True, False),
    ("NVIDIA A100-SXM4-80GB", 85899345920, 400000, 1410, 1593, 0x20B210DE, False, True),
    ("NVIDIA H100 80GB HBM3", 85520809984, 700000, 1980, 2619, 0x233010DE, False, True),
    ("NVIDIA GeForce RTX 3090", 25769803776, 350000, 2100, 9751, 0x220410DE, True, False),
    ("NVIDIA L40S", 48305799168, 350000, 2520, 9001, 0x26B910DE, False, True),
    ("NVIDIA RTX A6000", 51527024640, 300000, 2100, 8001, 0x223010DE, True, True),
    ("Tesla T4", 16106127360, 70000, 1590, 5001, 0x1EB810DE, False, True),
    ("NVIDIA GeForce RTX 4080", 17171480576, 320000, 3105, 11201, 0x270410DE, True, False),
]


def make_gpu(i: int, **overrides) -> FakeGpu:
    """The i-th of a set of distinct, realistic GPUs (models cycle after 8)."""
    name, total, limit, max_sm, max_mem, dev_id, fan, serial = _MODELS[i % len(_MODELS)]
    util = (17 + 29 * i) % 101
    gpu = FakeGpu(
        name=name,
        uuid=f"GPU-{0x5f6e0c4a + i * 0x1111:08x}-{0x2b7d + i:04x}-4c1e-9a8f-{0x3d2e1b0c9a87 + i:012x}",
        serial=f"{1324021000000 + 7919 * i}" if serial else None,
        pci_bus_id=f"00000000:{[0x01, 0x41, 0x81, 0xC1][i % 4] + i // 4:02X}:00.0",
        pci_device_id=dev_id,
        memory_total=total,
        memory_used=min(total, (1024 + 3000 * i) * MiB),
        util_gpu=util,
        util_memory=util // 3,
        temperature=35 + (7 * i) % 50,
        power_mw=min(limit, 30000 + 41_113 * i),
        power_limit_mw=limit,
        energy_mj=1_000_000 * (i + 1) + 12_345,
        clock_graphics=max_sm - 10 * i,
        clock_sm=max_sm - 10 * i,
        clock_mem=max_mem,
        max_clock_graphics=max_sm,
        max_clock_sm=max_sm,
        max_clock_mem=max_mem,
        clock_video=max_sm * 3 // 4 - 10 * i,
        max_clock_video=max_sm * 3 // 4,
        fan=(30 + 5 * i) % 100 if fan else None,
        pstate=0 if util > 50 else 2,
        clocks_event_reasons=0 if util else 0x1,  # GPU idle
        encoder_util=i % 3,
        decoder_util=(2 * i) % 5,
    )
    return replace(gpu, **overrides)


@dataclass
class Scenario:
    driver_version: str = "550.54.14"
    cuda_version: int | None = 12040  # "12.4"
    #: None: "12.<driver_version>"
    nvml_version: str | None = None
    #: e.g. "DRIVER_NOT_LOADED": nvmlInit fails with it
    init_error: str | None = None
    gpus: list[FakeGpu] = field(default_factory=lambda: [FakeGpu()])
    #: system-level faults (nvmlSystemGetDriverVersion, nvmlDeviceGetCount, ...);
    #: a device function here fails on every GPU
    fails: dict[str, str | int] = field(default_factory=dict)

    @classmethod
    def many(cls, n: int, **kwargs) -> "Scenario":
        """n distinct GPUs (names, uuids, bus ids and readings all differ)."""
        return cls(gpus=[make_gpu(i) for i in range(n)], **kwargs)

    def text(self) -> str:
        out = ["# gpm fake NVML scenario"]
        if self.driver_version is not None:
            out.append(f"driver_version {self.driver_version}")
            major = (self.cuda_version or 12000) // 1000
            out.append(f"nvml_version {self.nvml_version or f'{major}.{self.driver_version}'}")
        elif self.nvml_version is not None:
            out.append(f"nvml_version {self.nvml_version}")
        if self.cuda_version is not None:
            out.append(f"cuda_version {int(self.cuda_version)}")
        if self.init_error is not None:
            out.append(f"init_error {_error_name(self.init_error)}")
        for fn, err in self.fails.items():
            out.append(f"fail {fn} {_error_name(err)}")
        for gpu in self.gpus:
            out.extend(gpu.lines())
        return "\n".join(out) + "\n"

    def write(self, path: str | os.PathLike) -> Path:
        """Atomically replace ``path`` (the fake notices at its next call)."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.text())
            # a unique mtime per write, so the library never mistakes a new
            # file for the one it has (coarse file timestamps, reused inodes)
            stamp = _next_stamp()
            os.utime(tmp, ns=(stamp, stamp))
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path


_last_stamp = 0


def _next_stamp() -> int:
    global _last_stamp
    _last_stamp = max(time.time_ns(), _last_stamp + 1)
    return _last_stamp


def _one_line(s: str) -> str:
    if "\n" in s or "\r" in s:
        raise ValueError(f"newline in scenario value {s!r}")
    return s


def default_build_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"gpm-fake-nvml-{os.getuid()}"


def build_fake_nvml(out_dir: str | os.PathLike | None = None, cc: str | None = None) -> Path:
    """Compile the fake once per source version; the folder holding libnvidia-ml.so.1.

    The library goes to ``out_dir/<hash of source and flags>/``, so calls after
    the first (in this session or a later one) cost a stat.  Safe to call from
    parallel test processes.
    """
    out_dir = Path(out_dir) if out_dir is not None else default_build_dir()
    cc = cc or os.environ.get("CC") or "cc"
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + "\0".join(CFLAGS).encode()).hexdigest()[:16]
    final = out_dir / digest
    if (final / LIB_NAME).is_file():
        return final
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{digest}.tmp-", dir=out_dir))
    try:
        proc = subprocess.run(
            [cc, *CFLAGS, "-o", str(work / LIB_NAME), str(SOURCE)],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE.name} failed:\n{proc.stderr}")
        try:
            work.rename(final)
        except OSError:  # another process won the race
            if not (final / LIB_NAME).is_file():
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return final


def fake_env(lib_dir: str | os.PathLike, scenario_path: str | os.PathLike,
             base: dict | os._Environ | None = None) -> dict:
    """An environment for a subprocess that should see the fake NVML."""
    env = dict(os.environ if base is None else base)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        filter(None, [str(lib_dir), env.get("LD_LIBRARY_PATH")]))
    env[ENV_VAR] = str(scenario_path)
    return env


def preload(lib_dir: str | os.PathLike) -> ctypes.CDLL:
    """Load the fake into this process, so ``CDLL("libnvidia-ml.so.1")`` (what
    pynvml does at its first nvmlInit) gets it by soname.

    Raises RuntimeError if pynvml already holds another NVML (a real one).
    The scenario still comes from ``os.environ["FAKE_NVML_SCENARIO"]``.
    """
    lib = ctypes.CDLL(str(Path(lib_dir) / LIB_NAME), mode=ctypes.RTLD_GLOBAL)
    by_soname = ctypes.CDLL(LIB_NAME)
    if not hasattr(by_soname, "fakeNvmlMarker"):
        raise RuntimeError(f"{LIB_NAME} by soname is not the fake")
    pynvml = sys.modules.get("pynvml")
    held = getattr(pynvml, "nvmlLib", None) if pynvml is not None else None
    if held is not None and not hasattr(held, "fakeNvmlMarker"):
        raise RuntimeError("pynvml already loaded a real NVML in this process")
    return lib


def reset(lib: ctypes.CDLL) -> None:
    """Forget the loaded scenario, the init count and the per-GPU call counts
    of an in-process fake (pynvml's own state is untouched)."""
    lib.fakeNvmlReset()


class FakeNvml:
    """A built fake plus one scenario file: the usual test fixture value."""

    def __init__(self, lib_dir: str | os.PathLike, scenario_path: str | os.PathLike,
                 scenario: Scenario | None = None):
        self.lib_dir = Path(lib_dir)
        self.scenario_path = Path(scenario_path)
        self.scenario = scenario or Scenario()
        self.scenario.write(self.scenario_path)

    def set(self, scenario: Scenario) -> Scenario:
        """Change the world (seen by the fake's next call)."""
        self.scenario = scenario
        scenario.write(self.scenario_path)
        return scenario

    def env(self, base: dict | None = None) -> dict:
        return fake_env(self.lib_dir, self.scenario_path, base)

