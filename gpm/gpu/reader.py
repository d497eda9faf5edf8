"""Choose the GPU backend: NVML first, nvidia-smi when allowed and needed."""

from __future__ import annotations

from typing import Protocol

from gpm.config import Config
from gpm.errors import NoBackendError
from gpm.gpu.sample import GpuSample
from gpm.gpu.nvml import NvmlReader
from gpm.gpu.smi import SmiReader


class GpuReader(Protocol):
    source: str

    def open(self) -> "GpuReader": ...

    def read(self, *, processes: bool = True) -> list[GpuSample]: ...

    def close(self) -> None: ...


def open_reader(cfg: Config, *, watch_xid: bool = False) -> GpuReader:
    """An opened reader, or ``NoBackendError`` with every reason tried.

    ``watch_xid``: NVML's reader also collects critical Xid events (the
    daemon's; nvidia-smi has none to give).

    The error names why NVML failed *and* why the fallback did (a line each
    on stderr), so what gpm prints is enough to fix the machine.
    """
    reasons: list[str] = []
    if cfg["gpu.enable_nvml"]:
        try:
            return NvmlReader(watch_xid=watch_xid).open()
        except NoBackendError as err:
            reasons.append(backend_reason("NVML", err))
        except ImportError as err:  # pragma: no cover - broken install
            reasons.append(f"NVML: cannot import pynvml ({err})")
    else:
        reasons.append("NVML: disabled by [gpu] enable_nvml")
    if cfg["gpu.fallback_to_nvidia_smi"]:
        try:
            return SmiReader(cfg["gpu.nvidia_smi_path"], cfg["gpu.nvidia_smi_timeout_secs"]).open()
        except NoBackendError as err:
            reasons.append(backend_reason("nvidia-smi", err))
    else:
        reasons.append("nvidia-smi: fallback disabled by [gpu] fallback_to_nvidia_smi")
    raise NoBackendError("no GPU backend: " + "; ".join(reasons), reasons)


def backend_reason(backend: str, err: NoBackendError) -> str:
    """``nvidia-smi: not found on PATH``: the backend named once, though its
    own messages start with its name (they are also read alone)."""
    return f"{backend}: {str(err).removeprefix(backend + ' ')}"
