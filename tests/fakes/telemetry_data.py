"""Realistic states for the telemetry tests and the benchmark: GPUs, processes, LLM requests."""

from __future__ import annotations

from gpm.gpu.sample import GpuProcess, GpuSample
from gpm.llm.record import REQUEST_COLUMNS
from gpm.store.db import open_db, write
from gpm.store.llm import save_request
from gpm.telemetry.llm import LlmRequest

CATEGORIES = ["gaming", "llm_inference", "ml_training", "desktop", "general_compute", None]
NAMES = {"gaming": "Cyberpunk2077.exe", "llm_inference": "ollama", "ml_training": "python3",
         "desktop": "Xorg", "general_compute": "ffmpeg", None: "mystery"}


def gpu(index: int, *, processes: int = 6, ts_ms: int = 1_760_000_000_000) -> GpuSample:
    procs = []
    for i in range(processes):
        cat = CATEGORIES[i % len(CATEGORIES)]
        procs.append(GpuProcess(pid=1000 + index * 1000 + i, used_memory_bytes=(i + 1) * 256 * 2**20,
                                type="compute", sm_utilization_percent=i % 100, name=NAMES[cat],
                                category=cat, label=None if cat is None else f"{cat} job"))
    return GpuSample(
        ts_ms=ts_ms, index=index, source="nvml", uuid=f"GPU-0000000{index}-aaaa-bbbb-cccc-ddddeeeeffff",
        name="NVIDIA GeForce RTX 4090", pci_bus_id=f"00000000:0{index + 1}:00.0", serial=None,
        driver_version="550.54.14", cuda_version="12.4",
        utilization_gpu_percent=10 * index % 101, utilization_memory_percent=5 + index,
        memory_used_bytes=(index + 1) * 2**30, memory_total_bytes=24 * 2**30,
        temperature_celsius=40 + index, power_watts=100.5 + index, power_limit_watts=450.0,
        energy_joules=123456.789 + index, sm_clock_mhz=2520, memory_clock_mhz=10501,
        fan_percent=30, pstate=2, throttle_reasons=0x4 if index % 2 else 0x1, processes=procs,
    )


def gpus(n: int, processes: int = 6) -> list[GpuSample]:
    return [gpu(i, processes=processes) for i in range(n)]


def requests() -> list[LlmRequest]:
    return [
        LlmRequest(model="llama3.2", endpoint="/api/chat", status=200, start_ms=1_760_000_000_000,
                   duration_seconds=2.0, ttft_seconds=0.3, prompt_tokens=26, completion_tokens=18,
                   done_reason="stop", stream=True),
        LlmRequest(model="llama3.2", endpoint="/api/generate", status=200, start_ms=1_760_000_001_000,
                   duration_seconds=0.9, ttft_seconds=0.05, prompt_tokens=10, completion_tokens=35,
                   done_reason="length", stream=True),
        LlmRequest(model="qwen2.5:7b", endpoint="/v1/chat/completions", status=200,
                   duration_seconds=12.5, ttft_seconds=1.2, prompt_tokens=1500, completion_tokens=400),
        LlmRequest(model="qwen2.5:7b", endpoint="/api/chat", status=502, error="upstream down",
                   duration_seconds=0.003),
        LlmRequest(model="nomic-embed-text", endpoint="/api/embed", status=200, duration_seconds=0.04,
                   prompt_tokens=12),
    ]


def request_row(req: LlmRequest, *, host: str = "box") -> dict:
    """The ``llm_requests`` row the proxy would have saved for ``req`` (for ``save_request``)."""
    start = req.start_ms if req.start_ms is not None else 1_760_000_002_000
    row = dict.fromkeys(REQUEST_COLUMNS[1:])
    row.update(
        ts_ms=start, end_ms=start + round((req.duration_seconds or 0) * 1000), host=host,
        endpoint=req.endpoint, model=req.model, stream=bool(req.stream), status=req.status, error=req.error,
        done_reason=req.done_reason, prompt_tokens=req.prompt_tokens, completion_tokens=req.completion_tokens,
        ttft_seconds=req.ttft_seconds, tpot_seconds=req.tpot_seconds, duration_seconds=req.duration_seconds,
    )
    return row


def save_requests(db_path, reqs: list[LlmRequest]) -> None:
    """Store requests in a real gpm database (created and migrated if need be), as the proxy does."""
    conn = open_db(db_path)
    try:
        with write(conn):
            for req in reqs:
                save_request(conn, request_row(req))
    finally:
        conn.close()
