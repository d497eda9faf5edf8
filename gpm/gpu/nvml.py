"""Read GPUs through NVML. The only module in gpm that imports ``pynvml``.

Design, after gpustat and nvitop:
- ``nvmlInit`` happens in ``NvmlReader.open()``, never at import time, and its
  failures become one-line reasons (``NoBackendError``), read after "NVML: ".
- Every optional field goes through ``_field``: a field the GPU or driver does
  not support is ``None``; it never fails the GPU and is never a made-up 0.
- A GPU that is lost (``GPU_IS_LOST``) or answers ``UNKNOWN`` is reported as
  failed, with the reason in ``status``, while the other GPUs are still read.
- Static facts (name, uuid, bus id, serial, versions) are read once per
  ``open()``; each sample re-reads only what changes.
- ``pynvml`` is imported inside the functions that use it: loading it is a
  start-up cost that ``gpm --help``, ``gpm report`` and the commands that
  never read a GPU do not pay.
- With ``watch_xid`` (the daemon: events need a process that stays), every
  GPU is registered for critical Xid events and each read drains them
  without waiting into ``GpuSample.xid_errors`` (#15).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpm.errors import NoBackendError
from gpm.gpu.sample import GpuProcess, GpuSample, now_ms

if TYPE_CHECKING:
    import pynvml

_ERROR_NAMES: dict[int, str] = {}  # filled on the first error: scanning pynvml's 2,000 names costs ~0.5 ms


@functools.cache
def _field_unavailable() -> frozenset[int]:
    """Errors that mean "this field is not available here": the field becomes None."""
    import pynvml

    return frozenset({
        pynvml.NVML_ERROR_NOT_SUPPORTED,
        pynvml.NVML_ERROR_NO_PERMISSION,
        pynvml.NVML_ERROR_NOT_FOUND,
        pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
        pynvml.NVML_ERROR_INVALID_ARGUMENT,
        pynvml.NVML_ERROR_NO_DATA,
        getattr(pynvml, "NVML_ERROR_ARGUMENT_VERSION_MISMATCH", -1),
    })


def _init_reason(err: pynvml.NVMLError) -> str:
    """Why ``nvmlInit`` failed, in words a user can act on."""
    import pynvml

    reasons = {
        pynvml.NVML_ERROR_LIBRARY_NOT_FOUND:
            "libnvidia-ml.so.1 not found: is the NVIDIA driver installed?",
        pynvml.NVML_ERROR_DRIVER_NOT_LOADED:
            "NVIDIA driver not loaded (no /dev/nvidia*; is the kernel module loaded?)",
        pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH:
            "NVIDIA driver/library version mismatch: the kernel module and libnvidia-ml "
            "differ (reboot after a driver upgrade)",
        pynvml.NVML_ERROR_NO_PERMISSION:
            "no permission to open the GPU (check access to /dev/nvidia*)",
        pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES:
            "could not allocate resources to initialise",
        pynvml.NVML_ERROR_INSUFFICIENT_SIZE:
            "answered 'Insufficient Size' at start-up: the driver's NVML is older than "
            "nvidia-ml-py expects (upgrade the NVIDIA driver, or install an older nvidia-ml-py)",
        pynvml.NVML_ERROR_UNKNOWN:
            "answered 'Unknown Error' at start-up: the driver is in a bad state "
            "(look for NVRM/Xid lines in `dmesg`; a reboot or GPU reset usually clears it)",
    }
    return reasons.get(err.value, f"failed to initialise: {err} ({error_name(err)}; see `nvidia-smi` and `dmesg`)")


def error_name(err: pynvml.NVMLError) -> str:
    """``gpu_is_lost``, ``unknown_error``, ... for an NVML error."""
    import pynvml

    if not _ERROR_NAMES:
        _ERROR_NAMES.update(
            (getattr(pynvml, name), name[len("NVML_ERROR_"):].lower())
            for name in dir(pynvml)
            if name.startswith("NVML_ERROR_") and isinstance(getattr(pynvml, name), int)
        )
        # Spelled as nvidia-smi's "Unknown Error" becomes, so both backends agree.
        _ERROR_NAMES[pynvml.NVML_ERROR_UNKNOWN] = "unknown_error"
    return _ERROR_NAMES.get(err.value, f"nvml_error_{err.value}")


class _GpuFailed(Exception):
    def __init__(self, reason: str):
        self.reason = reason


def _field(fn, *args):
    """Call an NVML getter; unsupported -> None; GPU trouble -> _GpuFailed."""
    import pynvml

    try:
        return fn(*args)
    except pynvml.NVMLError as err:
        if err.value in _field_unavailable():
            return None
        raise _GpuFailed(error_name(err)) from None


def _text(value) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass
class _Static:
    """What is read once per GPU when NVML opens."""

    handle: object
    index: int
    failed: str | None = None  # reason, when the GPU could not even be opened
    uuid: str | None = None
    name: str | None = None
    pci_bus_id: str | None = None
    serial: str | None = None
    last_process_ts: int = 0  # for nvmlDeviceGetProcessUtilization
    reopen: bool = False  # failed at its last read: get a fresh handle first
    xid_registered: bool = False  # registered (or tried) for Xid events


class NvmlReader:
    """Samples every GPU through NVML.

    ``open()`` raises ``NoBackendError`` with a one-line reason; ``read()``
    returns one ``GpuSample`` per GPU, failed GPUs included.
    """

    source = "nvml"

    def __init__(self, *, watch_xid: bool = False) -> None:
        self._gpus: list[_Static] = []
        self._opened = False
        self.watch_xid = watch_xid
        self._events = None  # the Xid event set, made at the first read
        self.driver_version: str | None = None
        self.cuda_version: str | None = None

    def open(self) -> "NvmlReader":
        if self._opened:
            return self
        import pynvml

        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as err:
            raise NoBackendError(_init_reason(err)) from None
        except OSError as err:  # pragma: no cover - ctypes trouble
            raise NoBackendError(f"could not be loaded: {err}") from None
        self._opened = True
        try:
            self.driver_version = _text(_field(pynvml.nvmlSystemGetDriverVersion))
            cuda = _field(pynvml.nvmlSystemGetCudaDriverVersion)
            if cuda:
                self.cuda_version = f"{cuda // 1000}.{cuda % 1000 // 10}"
        except _GpuFailed:
            pass
        try:
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as err:
            self.close()
            raise NoBackendError(f"cannot count GPUs: {err}") from None
        self._gpus = [self._open_gpu(i) for i in range(count)]
        return self

    def _open_gpu(self, index: int, known: _Static | None = None) -> _Static:
        """Open GPU ``index``; a GPU that fails again keeps the identity ``known`` had,
        so its failed rows stay with that GPU instead of an anonymous ``index:N``."""
        import pynvml

        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except pynvml.NVMLError as err:
            gpu = _Static(handle=None, index=index, failed=error_name(err))
        else:
            gpu = _Static(handle=handle, index=index)
            try:
                gpu.uuid = _text(_field(pynvml.nvmlDeviceGetUUID, handle))
                gpu.name = _text(_field(pynvml.nvmlDeviceGetName, handle))
                pci = _field(pynvml.nvmlDeviceGetPciInfo, handle)
                gpu.pci_bus_id = _text(pci.busId) if pci is not None else None
                gpu.serial = _text(_field(pynvml.nvmlDeviceGetSerial, handle))
            except _GpuFailed as failed:
                gpu.failed = failed.reason
        if known is not None:
            if gpu.failed and gpu.uuid in (None, known.uuid):
                gpu.uuid, gpu.name = known.uuid, known.name
                gpu.pci_bus_id, gpu.serial = known.pci_bus_id, known.serial
            if gpu.uuid == known.uuid:
                gpu.last_process_ts = known.last_process_ts
        return gpu

    @property
    def gpu_count(self) -> int:
        return len(self._gpus)

    def close(self) -> None:
        import pynvml

        if self._events is not None:
            try:
                pynvml.nvmlEventSetFree(self._events)
            except pynvml.NVMLError:
                pass
            self._events = None
        if self._opened:
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                pass
            self._opened = False

    def read(self, *, processes: bool = True) -> list[GpuSample]:
        if not self._opened:
            self.open()
        self._rescan()
        ts = now_ms()
        samples = [self._read_gpu(gpu, ts, processes) for gpu in self._gpus]
        for gpu, sample in zip(self._gpus, samples):
            gpu.reopen = not sample.ok
        if self.watch_xid:
            for index, xid in self._xid_events():
                if 0 <= index < len(samples):
                    samples[index].xid_errors.append(xid)
        return samples

    def _xid_events(self) -> list[tuple[int, int]]:
        """(GPU index, Xid) of every critical Xid since the last call, waiting for none.

        GPUs are registered as they are opened (a reopened GPU again); a GPU
        or driver without events (NOT_SUPPORTED) simply gives none.
        """
        import pynvml

        try:
            if self._events is None:
                self._events = pynvml.nvmlEventSetCreate()
            for gpu in self._gpus:
                if gpu.handle is not None and not gpu.failed and not gpu.xid_registered:
                    gpu.xid_registered = True
                    pynvml.nvmlDeviceRegisterEvents(gpu.handle, pynvml.nvmlEventTypeXidCriticalError,
                                                    self._events)
        except pynvml.NVMLError:
            if self._events is None:
                return []
        found = []
        for _ in range(64):  # a storm of events is read over several samples
            try:
                data = pynvml.nvmlEventSetWait(self._events, 0)
                index = pynvml.nvmlDeviceGetIndex(data.device)
            except pynvml.NVMLError:  # TIMEOUT: none left
                break
            if data.eventType == pynvml.nvmlEventTypeXidCriticalError:
                found.append((index, int(data.eventData)))
        return found

    def _rescan(self) -> None:
        """Follow the GPUs as they come and go while a daemon keeps NVML open.

        A GPU added at run time (hot-plug, a VM given one more) is opened
        and read from now on; an index that vanished is recorded as lost
        rather than read through a stale handle into a row of Nones; a GPU
        that failed at its last read gets a fresh handle, so one that comes
        back (after a reset, a driver reload) reads again without a restart.
        """
        import pynvml

        try:
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError:
            count = len(self._gpus)  # the reads below say what is wrong
        for index in range(len(self._gpus), count):
            self._gpus.append(self._open_gpu(index))
        for index, gpu in enumerate(self._gpus):
            if index >= count:
                gpu.failed, gpu.reopen = "gpu_is_lost", True
            elif gpu.reopen:
                self._gpus[index] = self._open_gpu(index, known=gpu)

    def _read_gpu(self, gpu: _Static, ts: int, with_processes: bool) -> GpuSample:
        import pynvml

        s = GpuSample(
            ts_ms=ts, index=gpu.index, source=self.source, uuid=gpu.uuid, name=gpu.name,
            pci_bus_id=gpu.pci_bus_id, serial=gpu.serial,
            driver_version=self.driver_version, cuda_version=self.cuda_version,
        )
        if gpu.failed:
            s.status = gpu.failed
            return s
        h = gpu.handle
        try:
            util = _field(pynvml.nvmlDeviceGetUtilizationRates, h)
            if util is not None:
                s.utilization_gpu_percent = util.gpu
                s.utilization_memory_percent = util.memory
            mem = _field(pynvml.nvmlDeviceGetMemoryInfo, h)
            if mem is not None:
                s.memory_used_bytes = mem.used
                s.memory_total_bytes = mem.total
            s.temperature_celsius = _field(
                pynvml.nvmlDeviceGetTemperature, h, pynvml.NVML_TEMPERATURE_GPU
            )
            power = _field(pynvml.nvmlDeviceGetPowerUsage, h)
            s.power_watts = None if power is None else power / 1000
            limit = _field(pynvml.nvmlDeviceGetEnforcedPowerLimit, h)
            s.power_limit_watts = None if limit is None else limit / 1000
            energy = _field(pynvml.nvmlDeviceGetTotalEnergyConsumption, h)
            s.energy_joules = None if energy is None else energy / 1000
            s.sm_clock_mhz = _field(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_SM)
            s.memory_clock_mhz = _field(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_MEM)
            s.fan_percent = _field(pynvml.nvmlDeviceGetFanSpeed, h)
            s.pstate = _field(pynvml.nvmlDeviceGetPerformanceState, h)
            if s.pstate is not None and not 0 <= s.pstate <= 15:
                s.pstate = None  # NVML_PSTATE_UNKNOWN (32)
            s.throttle_reasons = self._throttle(h)
            s.ecc_uncorrected_errors = _field(pynvml.nvmlDeviceGetTotalEccErrors, h,
                                              pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC)
            if with_processes:
                s.processes = self._processes(gpu)
        except _GpuFailed as failed:
            s.status = failed.reason
        return s

    @staticmethod
    def _throttle(h) -> int | None:
        import pynvml

        getter = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if getter is not None:
            mask = _field(getter, h)
            if mask is not None:
                return int(mask)
        mask = _field(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons, h)
        return None if mask is None else int(mask)

    def _processes(self, gpu: _Static) -> list[GpuProcess]:
        import pynvml

        h = gpu.handle
        found: dict[int, GpuProcess] = {}
        for kind, getter in (
            ("compute", pynvml.nvmlDeviceGetComputeRunningProcesses),
            ("graphics", pynvml.nvmlDeviceGetGraphicsRunningProcesses),
        ):
            for info in _field(getter, h) or []:
                used = info.usedGpuMemory
                existing = found.get(info.pid)
                if existing is None:
                    found[info.pid] = GpuProcess(pid=info.pid, used_memory_bytes=used, type=kind)
                else:
                    existing.type = "compute+graphics"
                    if used is not None:
                        existing.used_memory_bytes = max(existing.used_memory_bytes or 0, used)
        if found:  # named by the classifier, which reads each process once (gpm.classify.live)
            self._process_utilization(gpu, found)
        return sorted(found.values(), key=lambda p: p.pid)

    @staticmethod
    def _process_utilization(gpu: _Static, found: dict[int, GpuProcess]) -> None:
        import pynvml

        try:
            samples = pynvml.nvmlDeviceGetProcessUtilization(gpu.handle, gpu.last_process_ts)
        except pynvml.NVMLError as err:
            if err.value == pynvml.NVML_ERROR_GPU_IS_LOST:
                raise _GpuFailed(error_name(err)) from None
            return  # not supported, or no samples since last time
        for sample in samples:
            proc = found.get(sample.pid)
            if proc is not None:
                proc.sm_utilization_percent = sample.smUtil
            gpu.last_process_ts = max(gpu.last_process_ts, sample.timeStamp)


def nvml_read_once() -> list[GpuSample]:
    """Open, read every GPU once, close: the cron path."""
    reader = NvmlReader().open()
    try:
        return reader.read()
    finally:
        reader.close()
