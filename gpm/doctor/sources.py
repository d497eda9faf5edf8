"""``gpm doctor``'s checks of what gpm reads: the GPUs (NVML, nvidia-smi) and Ollama."""

from __future__ import annotations

from gpm.doctor.findings import NOTE, OK, PROBLEM, Finding, Setup, where_set
from gpm.errors import NoBackendError
from gpm.gpu.nvml import NvmlReader
from gpm.gpu.reader import backend_reason
from gpm.gpu.smi import smi_read_once
from gpm.llm.client import OllamaClient, OllamaUnavailable

# How long gpm doctor waits for Ollama: it only asks whether it answers.
OLLAMA_TIMEOUT_SECS = 2.0


def check_gpu(setup: Setup) -> list[Finding]:
    """NVML and nvidia-smi, each on its own, with the reason each one fails (as `gpm sample` says it)."""
    cfg = setup.cfg
    out: list[Finding] = []
    nvml_ok = False
    if cfg["gpu.enable_nvml"]:
        try:
            reader = NvmlReader().open()
            try:
                out.append(Finding("gpu", OK, f"NVML: {_gpus(reader.gpu_count)}, driver {reader.driver_version}"))
                nvml_ok = True
            finally:
                reader.close()
        except NoBackendError as err:
            out.append(Finding("gpu", PROBLEM, backend_reason("NVML", err),
                               "fix the driver as the reason says, or set [gpu] enable_nvml = false"))
    if cfg["gpu.fallback_to_nvidia_smi"] or not cfg["gpu.enable_nvml"]:
        try:
            samples = smi_read_once(cfg["gpu.nvidia_smi_path"], cfg["gpu.nvidia_smi_timeout_secs"])
            out.append(Finding("gpu", OK, f"nvidia-smi: {_gpus(len(samples))}"))
        except NoBackendError as err:
            # Only the fallback: a note while NVML works, a problem when nothing reads the GPUs.
            out.append(Finding("gpu", NOTE if nvml_ok else PROBLEM, backend_reason("nvidia-smi", err),
                               "install the NVIDIA utilities or fix "
                               f"{where_set(cfg, 'gpu.nvidia_smi_path')}"))
    if not out:
        out.append(Finding("gpu", PROBLEM, "NVML and nvidia-smi are both disabled: nothing is sampled",
                           "set [gpu] enable_nvml = true"))
    return out


def check_ollama(setup: Setup) -> list[Finding]:
    """Ollama answers at [ollama] api_url, when gpm is set to watch it."""
    cfg = setup.cfg
    if not (cfg["ollama.enabled"] or cfg["ollama.enable_proxy"]):
        return [Finding("ollama", OK, "not watched ([ollama] enabled = false)")]
    url = cfg["ollama.api_url"]
    try:
        version = OllamaClient(url, min(cfg["ollama.timeout_secs"], OLLAMA_TIMEOUT_SECS)).version()
    except (OllamaUnavailable, ValueError) as err:
        return [Finding("ollama", PROBLEM, f"Ollama not reachable: {err}",
                        f"start Ollama (`ollama serve`) or fix {where_set(cfg, 'ollama.api_url')}")]
    return [Finding("ollama", OK, f"Ollama {version} at {url}")]


def _gpus(n: int) -> str:
    return f"{n} GPU" if n == 1 else f"{n} GPUs"
