"""`gpm report` over a week of history with known answers.

The week (2025-W47, UTC): host "lab" sampled every 10 s on two GPUs.
GPU 0 has an energy counter: two busy hours... precisely: Monday 08:00-10:00
(first hour 100 % at 200 W, second hour idle at 50 W, the first 10 minutes
power capped), then the sampler stops for a day while the GPU's counter keeps
counting 1 MJ, then Tuesday 10:00-11:00 at 50 % and 100 W with a driver reload
(counter back to 0) at 10:30. GPU 1 has no counter: 10 % at 80 W throughout.

Processes, classified as the sampler's enricher does and stored by its
saver: Xorg (desktop) on GPU 0 all Monday, sharing it with Cyberpunk 2077
(gaming, 08:00-09:00) and then an Ollama runner (llm_inference,
09:00-10:00); train.py (ml_training) on GPU 0 Tuesday; on GPU 1 Factorio
(Monday 09:00-09:30), Blender (general compute, Tuesday 10:00-10:30) and
Cyberpunk 2077 again (Tuesday 10:30-11:00). Ollama: five requests to two
models on Monday after 09:00 (one failed; two overlap) and one on
Wednesday, when nothing was sampled; both models loaded 09:00-09:10.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from gpm.config import load_config
from gpm.humanize import display_width
from gpm.gpu.sample import GpuProcess, GpuSample, ProcessDetails
from gpm.llm.client import LoadedModel
from gpm.llm.sessions import PollResult
from gpm.sampling import Sampler
from gpm.report.period import resolve_period, utc_iso, week_bounds
from gpm.report.cells import sparkline
from gpm.store.db import open_db, write
from gpm.store.llm import SessionLog, save_request
from gpm.store.samples import save_samples
from tests.conftest import REPO, run_gpm

GOLDEN = Path(__file__).parent / "golden" / "report_2025-W47.txt"
WEEK = "2025-W47"
MON = 1763337600000  # 2025-11-17T00:00:00Z
HOUR = 3_600_000
GIB = 1 << 30
UTC = {"TZ": "UTC", "NO_COLOR": "1"}


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def gpu(ts_ms: int, index: int, **values) -> GpuSample:
    return GpuSample(ts_ms=ts_ms, index=index, source="nvml", uuid=f"GPU-{index}aaaaaaa-0000",
                     name="NVIDIA GeForce RTX 4090", memory_total_bytes=24 * GIB, **values)


MIB = 1 << 20
T0 = MON + 8 * HOUR  # Monday's block
T1 = MON + 34 * HOUR  # Tuesday's block


def run(pid: int, name: str, category: str, label: str | None, start_ms: int, memory: int,
        sm: int | None = None) -> GpuProcess:
    return GpuProcess(pid=pid, used_memory_bytes=memory, sm_utilization_percent=sm, name=name,
                      category=category, label=label, reason="test",
                      details=ProcessDetails(user="ada", exe=f"/usr/bin/{name}", cmdline=[name],
                                             start_time_ms=start_ms))


XORG = run(50, "Xorg", "desktop", None, MON, 256 * MIB, 10)


def processes(index: int, ts: int) -> list[GpuProcess]:
    """The GPU processes of the sample of GPU ``index`` at ``ts``."""
    if index == 0 and ts < T0 + HOUR:
        return [XORG, run(100, "Cyberpunk2077.exe", "gaming", "Cyberpunk 2077", T0 - 60_000, 7 * GIB, 90)]
    if index == 0 and ts < T0 + 2 * HOUR:
        return [XORG, run(200, "ollama", "llm_inference", "llama3.1:8b", T0 + HOUR - 60_000, 5 * GIB, 40)]
    if index == 0:
        return [run(300, "python3", "ml_training", "train.py", T1 - 60_000, 3 * GIB, 100)]
    if T0 + HOUR <= ts < T0 + 90 * 60_000:
        return [run(500, "factorio", "gaming", "Factorio", T0 + HOUR - 60_000, GIB)]
    if T1 <= ts < T1 + HOUR // 2:
        return [run(400, "blender", "general_compute", "blender", T1 - 60_000, 1536 * MIB)]
    if ts >= T1 + HOUR // 2:
        return [run(600, "Cyberpunk2077.exe", "gaming", "Cyberpunk 2077", T1 + HOUR // 2 - 60_000, 1536 * MIB)]
    return []


def week_samples() -> list[GpuSample]:
    out = []
    energy_mj = 5_000_000_000
    t0 = MON + 8 * HOUR
    for i in range(720):  # Monday 08:00:00 .. 09:59:50
        busy = i < 360
        watts = 200 if busy else 50
        if i:
            energy_mj += watts * 10 * 1000
        out.append(gpu(t0 + i * 10_000, 0, processes=processes(0, t0 + i * 10_000),
                       utilization_gpu_percent=100 if busy else 0,
                       power_watts=float(watts), energy_joules=energy_mj / 1000,
                       temperature_celsius=70 if busy else 40,
                       memory_used_bytes=8 * GIB if busy else GIB,
                       throttle_reasons=0x4 if i < 60 else (0 if busy else 0x1)))
    energy_mj += 1_000_000_000  # used while nobody sampled
    t1 = MON + 34 * HOUR  # Tuesday 10:00
    for i in range(360):
        if i == 180:
            energy_mj = 1_000_000  # driver reload: the counter starts again
        elif i:
            energy_mj += 1_000_000
        out.append(gpu(t1 + i * 10_000, 0, processes=processes(0, t1 + i * 10_000),
                       utilization_gpu_percent=50, power_watts=100.0,
                       energy_joules=energy_mj / 1000, temperature_celsius=60,
                       memory_used_bytes=4 * GIB, throttle_reasons=0))
    for ts in [t0 + i * 10_000 for i in range(720)] + [t1 + i * 10_000 for i in range(360)]:
        out.append(gpu(ts, 1, processes=processes(1, ts), utilization_gpu_percent=10, power_watts=80.0,
                       temperature_celsius=45,
                       memory_used_bytes=2 * GIB, throttle_reasons=0))
    return out


def request(model: str, start_ms: int, end_ms: int, **values) -> dict:
    """An ``llm_requests`` row as the recording proxy produces it."""
    row = {"ts_ms": start_ms, "end_ms": end_ms, "host": "lab", "endpoint": "/api/generate", "model": model,
           "stream": True, "status": 200, "duration_seconds": (end_ms - start_ms) / 1000}
    return {**row, **values}


NINE = T0 + HOUR
REQUESTS = [
    request("llama3.1:8b", NINE + 10_000, NINE + 20_000, prompt_tokens=20, completion_tokens=100,
            ttft_seconds=0.5, tpot_seconds=0.05, tokens_per_second=50.0, load_seconds=2.5),
    request("llama3.1:8b", NINE + 30_000, NINE + 50_000, prompt_tokens=40, completion_tokens=400,
            ttft_seconds=0.3, tpot_seconds=0.04, tokens_per_second=20.0, load_seconds=0.01),
    request("llama3.1:8b", NINE + 40_000, NINE + 50_000, prompt_tokens=10, completion_tokens=50,
            ttft_seconds=0.2, tpot_seconds=0.06, tokens_per_second=40.0, load_seconds=0.01),
    request("llama3.1:8b", NINE + 60_000, NINE + 61_000, status=500, error="llama runner process has terminated"),
    request("qwen2.5:7b", NINE + 100_000, NINE + 110_000, prompt_tokens=50, completion_tokens=200,
            ttft_seconds=1.0, tpot_seconds=0.02, tokens_per_second=60.0, load_seconds=1.5),
    request("qwen2.5:7b", MON + 60 * HOUR, MON + 60 * HOUR + 5_000, prompt_tokens=10, completion_tokens=100,
            ttft_seconds=0.8, tpot_seconds=0.03, tokens_per_second=45.0),
]


def loaded(model: str, vram: int) -> LoadedModel:
    return LoadedModel(model=model, digest="sha256:" + model, size_bytes=vram, size_vram_bytes=vram,
                       context_length=4096, quantization="Q4_K_M", parameter_size="8B", family="llama",
                       expires_at_ms=None)


LLAMA, QWEN = loaded("llama3.1:8b", 5_000_000_000), loaded("qwen2.5:7b", 4_700_000_000)


def fill_week(path: Path, host: str = "lab") -> None:
    """The known week, stored by gpm's own savers (sampler, request log, session tracker)."""
    conn = open_db(path)
    Sampler(load_config(), conn=conn, enrichers=[], host=host).store(
        sorted(week_samples(), key=lambda s: (s.ts_ms, s.index)))
    with write(conn):
        for row in REQUESTS:
            save_request(conn, {**row, "host": host})
    save = SessionLog(conn, "http://127.0.0.1:11434", host)
    for ts, models in ((NINE + 8_000, [LLAMA]), (NINE + 98_000, [LLAMA, QWEN]),
                       (NINE + 300_000, [LLAMA, QWEN]), (NINE + 600_000, [])):
        save(PollResult(ts, up=True, version="0.5.1", models=models))
    conn.close()


@pytest.fixture
def week_db(tmp_path) -> Path:
    path = tmp_path / "gpm.db"
    fill_week(path)
    return path


def report_json(gpm, db: Path, *args) -> dict:
    proc = gpm("--db", db, "report", *args, "--format", "json", env=UTC, check=True)
    return json.loads(proc.stdout)


GPU0 = {
    "host": "lab", "gpu_index": 0, "gpu_uuid": "GPU-0aaaaaaa-0000", "gpu_name": "NVIDIA GeForce RTX 4090",
    "samples": 1080, "first_sample_ms": MON + 8 * HOUR, "last_sample_ms": MON + 35 * HOUR - 10_000,
    "sampled_seconds": 10780.0, "busy_seconds": 7180.0,
    "utilization_mean_percent": 50.0, "utilization_p95_percent": 100,
    "temperature_mean_celsius": 56.67, "temperature_max_celsius": 70,
    "memory_peak_bytes": 8 * GIB, "memory_total_bytes": 24 * GIB, "power_mean_watts": 116.667,
    # 898 kJ in Monday's block + 1 MJ counted across the gap + 358 kJ on
    # Tuesday (the reload's negative step skipped).
    "energy_joules": 2256000.0, "energy_method": "energy_counter",
    "throttled_seconds": 590.0,
    "throttle_reasons_seconds": {"sw_power_cap": 590.0, "hw_slowdown": 0.0, "sw_thermal_slowdown": 0.0,
                                 "hw_thermal_slowdown": 0.0, "hw_power_brake_slowdown": 0.0},
}
GPU1 = {
    **GPU0, "gpu_index": 1, "gpu_uuid": "GPU-1aaaaaaa-0000", "busy_seconds": 10780.0,
    "utilization_mean_percent": 10.0, "utilization_p95_percent": 10,
    "temperature_mean_celsius": 45.0, "temperature_max_celsius": 45,
    "memory_peak_bytes": 2 * GIB, "power_mean_watts": 80.0,
    # 80 W over the 719 + 359 ten-second intervals that are not gaps.
    "energy_joules": 862400.0, "energy_method": "integrated_power",
    "throttled_seconds": 0.0,
    "throttle_reasons_seconds": {k: 0.0 for k in GPU0["throttle_reasons_seconds"]},
}


def _day(n: int, **values) -> dict:
    start = MON + n * 24 * HOUR
    base = {"date": f"2025-11-{17 + n}", "start_ms": start, "end_ms": start + 24 * HOUR,
            "sampled_seconds": 0.0, "busy_seconds": 0.0, "utilization_mean_percent": None,
            "energy_joules": None, "category_energy_joules": {}}
    return {**base, **values}


def test_json_of_a_known_week_is_exact(gpm, week_db):
    got = report_json(gpm, week_db, "--week", WEEK)
    got.pop("hourly")  # test_hourly_figures_add_up_to_the_gpus
    generated = got["report"].pop("generated_ms")
    assert abs(generated - time.time() * 1000) < 120_000
    week_ms = 7 * 24 * HOUR
    last = MON + 35 * HOUR - 10_000
    assert got == {
        "report": {"version": 1, "since_ms": MON, "until_ms": MON + week_ms,
                   "since": "2025-11-17T00:00:00.000Z", "until": "2025-11-24T00:00:00.000Z",
                   "range_seconds": 604800.0, "iso_week": WEEK, "busy_threshold_percent": 5.0},
        "coverage": [{
            # The first sample ever is Monday 08:00: the 8 hours before it are no gap.
            "host": "lab", "range_seconds": 604800.0, "first_sample_ms": MON + 8 * HOUR,
            "last_sample_ms": last, "before_first_sample_seconds": 28800.0, "sampled_seconds": 10780.0,
            "coverage_ratio": 0.0187, "gap_seconds": 565220.0,
            "gaps": [
                {"start_ms": MON + 10 * HOUR - 10_000, "end_ms": MON + 34 * HOUR, "seconds": 86410.0},
                {"start_ms": last, "end_ms": MON + week_ms, "seconds": (MON + week_ms - last) / 1000},
            ],
        }],
        "hosts": [{"host": "lab", "sampled_seconds": 10780.0, "coverage_ratio": 0.0187, "gpus": 2,
                   "gpu_sampled_seconds": 21560.0, "busy_seconds": 17960.0,
                   "utilization_mean_percent": 30.0, "energy_joules": 3118400.0,
                   "energy_methods": ["energy_counter", "integrated_power"], "throttled_seconds": 590.0}],
        "fleet": {"hosts": 1, "gpus": 2, "gpu_sampled_seconds": 21560.0, "busy_seconds": 17960.0,
                  "utilization_mean_percent": 30.0, "energy_joules": 3118400.0,
                  "energy_methods": ["energy_counter", "integrated_power"], "throttled_seconds": 590.0},
        "gpus": [GPU0, GPU1],
        "days": [
            # Monday's runs: Cyberpunk, Ollama, Xorg; Tuesday's: train.py,
            # Blender and Cyberpunk again (each run within one day).
            _day(0, sampled_seconds=14380.0, busy_seconds=10780.0, utilization_mean_percent=30.0,
                 energy_joules=898000.0 + 575200.0,
                 category_energy_joules={"desktop": 107800.0, "gaming": 646200.0 + 144000.0,
                                         "llm_inference": 144000.0}),
            _day(1, sampled_seconds=7180.0, busy_seconds=7180.0, utilization_mean_percent=30.0,
                 energy_joules=1358000.0 + 287200.0,
                 category_energy_joules={"gaming": 144000.0, "general_compute": 143200.0,
                                         "ml_training": 359000.0}),
            *[_day(n) for n in range(2, 7)],
        ],
        "workload": WORKLOAD,
        "games": GAMES,
        "llm": LLM,
        "models": MODELS,
        "processes": PROCESSES,
        "failures": [],
        "alerts": [],
        "omitted": {},
    }


# Per category: runs, GPU seconds, joules. GPU 0's intervals: 2000 J (Monday's
# first hour), 500 J (second hour), 1000 J (Tuesday; at the reload the saver
# falls back to 100 W x 10 s); GPU 1's: 80 W x 10 s = 800 J. Shared by SM
# utilization: Cyberpunk 90 / Xorg 10, then Ollama 40 / Xorg 10. A run's
# first sample after a gap has no interval.
CATEGORY_RUNS = {
    "gaming": (3, 3590 + 1800 + 1800, 359 * 2000 * 0.9 + 180 * 800 + 180 * 800),
    "llm_inference": (1, 3600, 360 * 500 * 0.8),
    "ml_training": (1, 3590, 359 * 1000),
    "desktop": (1, 7190, 359 * 2000 * 0.1 + 360 * 500 * 0.2),
    "general_compute": (1, 1790, 179 * 800),
}
_S = sum(v[1] for v in CATEGORY_RUNS.values())
_J = sum(v[2] for v in CATEGORY_RUNS.values())
WORKLOAD = [{"category": c, "runs": n, "gpu_seconds": float(s), "gpu_time_share": round(s / _S, 4),
             "energy_joules": round(j, 3), "energy_share": round(j / _J, 4)}
            for c, (n, s, j) in CATEGORY_RUNS.items()]
GAMES = [
    {"game": "Cyberpunk 2077", "sessions": 2, "gpu_seconds": 5390.0, "energy_joules": 646200.0 + 144000.0,
     "first_seen_ms": T0, "last_seen_ms": T1 + 359 * 10_000},
    {"game": "Factorio", "sessions": 1, "gpu_seconds": 1800.0, "energy_joules": 144000.0,
     "first_seen_ms": T0 + HOUR, "last_seen_ms": T0 + HOUR + 179 * 10_000},
]
LLM = [
    # Request energy: 500 J, 500 J + half of the 500 J it shares with the
    # third request, 250 J, then 1 s at 50 W for the failed one.
    {"model": "llama3.1:8b", "requests": 4, "errors": 1, "prompt_tokens": 70, "completion_tokens": 550,
     "tokens_per_second_p50": 40.0, "tokens_per_second_p95": 50.0, "ttft_seconds_p50": 0.3,
     "ttft_seconds_p95": 0.5, "tpot_seconds_p50": 0.05, "load_seconds_max": 2.5, "measured_requests": 4,
     "energy_joules": 1550.0, "joules_per_token": round(1500 / 550, 3),
     # The failed request reports neither figure.
     "tokens_per_second_distribution": {"n": 3, "min": 20.0, "p25": 20.0, "p50": 40.0, "p75": 50.0,
                                        "p95": 50.0, "max": 50.0},
     "ttft_seconds_distribution": {"n": 3, "min": 0.2, "p25": 0.2, "p50": 0.3, "p75": 0.5, "p95": 0.5,
                                   "max": 0.5},
     "requests_per_day": {"2025-11-17": 4}},
    # Wednesday's request has no GPU samples: counted, not measured.
    {"model": "qwen2.5:7b", "requests": 2, "errors": 0, "prompt_tokens": 60, "completion_tokens": 300,
     "tokens_per_second_p50": 45.0, "tokens_per_second_p95": 60.0, "ttft_seconds_p50": 0.8,
     "ttft_seconds_p95": 1.0, "tpot_seconds_p50": 0.02, "load_seconds_max": 1.5, "measured_requests": 1,
     "energy_joules": 500.0, "joules_per_token": 2.5,
     "tokens_per_second_distribution": {"n": 2, "min": 45.0, "p25": 45.0, "p50": 45.0, "p75": 60.0,
                                        "p95": 60.0, "max": 60.0},
     "ttft_seconds_distribution": {"n": 2, "min": 0.8, "p25": 0.8, "p50": 0.8, "p75": 1.0, "p95": 1.0,
                                   "max": 1.0},
     "requests_per_day": {"2025-11-17": 1, "2025-11-19": 1}},
]
MODELS = [
    {"host": "lab", "model": "llama3.1:8b", "loads": 1, "loaded_seconds": 592.0,
     "vram_max_bytes": 5_000_000_000, "size_bytes": 5_000_000_000},
    {"host": "lab", "model": "qwen2.5:7b", "loads": 1, "loaded_seconds": 502.0,
     "vram_max_bytes": 4_700_000_000, "size_bytes": 4_700_000_000},
]


def _program(name, category, label, runs, seconds, joules, memory):
    return {"host": "lab", "name": name, "category": category, "label": label, "runs": runs,
            "gpu_seconds": float(seconds), "energy_joules": float(joules), "max_used_memory_bytes": memory}


XORG_P = _program("Xorg", "desktop", None, 1, 7190, 107800, 256 * MIB)
CYBERPUNK_P = _program("Cyberpunk2077.exe", "gaming", "Cyberpunk 2077", 2, 5390, 790200, 7 * GIB)
OLLAMA_P = _program("ollama", "llm_inference", "llama3.1:8b", 1, 3600, 144000, 5 * GIB)
TRAIN_P = _program("python3", "ml_training", "train.py", 1, 3590, 359000, 3 * GIB)
FACTORIO_P = _program("factorio", "gaming", "Factorio", 1, 1800, 144000, GIB)
BLENDER_P = _program("blender", "general_compute", "blender", 1, 1790, 143200, 1536 * MIB)
PROCESSES = {
    "by_gpu_time": [XORG_P, CYBERPUNK_P, OLLAMA_P, TRAIN_P, FACTORIO_P, BLENDER_P],
    "by_energy": [CYBERPUNK_P, TRAIN_P, FACTORIO_P, OLLAMA_P, BLENDER_P, XORG_P],
}


def test_hourly_figures_add_up_to_the_gpus(gpm, week_db):
    got = report_json(gpm, week_db, "--week", WEEK)
    hourly = got["hourly"]
    assert hourly["hour_starts_ms"] == [MON + h * HOUR for h in range(7 * 24)]
    assert [(g["gpu_index"], g["gpu_uuid"]) for g in hourly["gpus"]] == [
        (g["gpu_index"], g["gpu_uuid"]) for g in got["gpus"]]
    for g, whole in zip(hourly["gpus"], got["gpus"]):
        assert all(len(v) == 168 for k, v in g.items() if isinstance(v, list))
        assert sum(g["sampled_seconds"]) == whole["sampled_seconds"]
        assert sum(t or 0 for t in g["throttled_seconds"]) == whole["throttled_seconds"]
        assert max(m for m in g["memory_max_bytes"] if m is not None) == whole["memory_peak_bytes"]
        # Sampled hours: Monday 08:00 and 09:00, Tuesday 10:00; the rest are unknown, not zero.
        assert [h for h, s in enumerate(g["sampled_seconds"]) if s] == [8, 9, 34]
        assert g["utilization_mean_percent"][7] is None and g["temperature_max_celsius"][7] is None
    gpu0 = hourly["gpus"][0]
    assert [gpu0[k][8] for k in ("utilization_mean_percent", "temperature_max_celsius", "memory_max_bytes",
                                 "throttled_seconds")] == [100.0, 70, 8 * GIB, 590.0]
    assert [gpu0["utilization_mean_percent"][h] for h in (9, 34)] == [0.0, 50.0]
    # More than a month of hours is left out (hourly: null).
    assert report_json(gpm, week_db, "--since", "2025-10-01", "--until", "2025-11-24")["hourly"] is None


def test_energy_is_the_counter_delta_not_averaged_power(gpm, week_db):
    gpus = report_json(gpm, week_db, "--week", WEEK)["gpus"]
    naive = gpus[0]["power_mean_watts"] * gpus[0]["sampled_seconds"]
    assert gpus[0]["energy_joules"] == 2_256_000.0
    assert naive == pytest.approx(1_257_670, rel=1e-4)


def test_text_matches_the_reviewed_golden_file(gpm, week_db):
    proc = gpm("--db", week_db, "report", "--week", WEEK, env=UTC, check=True)
    if os.environ.get("REGENERATE_GOLDEN"):
        GOLDEN.write_text(proc.stdout, encoding="utf-8")
    assert proc.stdout == GOLDEN.read_text(encoding="utf-8"), (
        "text report changed: review it, then regenerate with REGENERATE_GOLDEN=1 pytest tests/test_report.py"
    )
    assert max(display_width(line) for line in proc.stdout.splitlines()) <= 80
    assert "\x1b[" not in proc.stdout


def test_cached_hours_give_the_same_report_and_follow_new_rows(gpm, week_db):
    first = report_json(gpm, week_db, "--week", WEEK)
    conn = sqlite3.connect(week_db)
    assert conn.execute("SELECT count(*) FROM report_hours").fetchone()[0] == 3
    again = report_json(gpm, week_db, "--week", WEEK)
    fresh = report_json(gpm, week_db, "--week", WEEK, "--no-cache")
    for r in (first, again, fresh):
        r["report"].pop("generated_ms")
    assert first == again == fresh
    # A row written late into the middle of a cached hour leaves the hour's
    # fingerprint (first and last sample) unchanged: the cache does not see
    # it, --no-cache does (the README says so).
    db = open_db(week_db)
    save_samples(db, "lab", [gpu(MON + 8 * HOUR + 5_000, 1, utilization_gpu_percent=10, power_watts=80.0,
                                 temperature_celsius=45, memory_used_bytes=2 * GIB, throttle_reasons=0)])
    db.close()
    assert report_json(gpm, week_db, "--week", WEEK)["gpus"][1]["samples"] == 1080
    late = report_json(gpm, week_db, "--week", WEEK, "--no-cache")
    assert late["gpus"][1]["samples"] == 1081


def archive_db(db: Path, archive: Path, host: str) -> None:
    """Move every row of ``db`` into ``archive`` the way `gpm archive` does."""
    from gpm.store.archive import archive as move

    conn = open_db(db)
    move(conn, archive, cutoff=MON + 30 * 24 * HOUR, own_host=host)
    conn.close()


def test_archive_gives_the_same_figures_and_many_hosts_add_up(gpm, week_db, tmp_path):
    archive = tmp_path / "archive"
    from_db = report_json(gpm, week_db, "--week", WEEK, "--no-cache")
    rig = tmp_path / "rig.db"
    fill_week(rig, "rig")
    archive_db(week_db, archive, "lab")
    archive_db(rig, archive, "rig")
    assert sqlite3.connect(week_db).execute("SELECT count(*) FROM gpu_metrics").fetchone()[0] == 0
    # The database that archived its rows reads them back through its manifest...
    archived = report_json(gpm, week_db, "--week", WEEK, "--archive-dir", archive, "--host", "lab")
    # ... and any other database reads every host's files.
    empty = tmp_path / "empty.db"
    from_elsewhere = report_json(gpm, empty, "--week", WEEK, "--archive-dir", archive, "--host", "lab")
    for r in (from_db, archived, from_elsewhere):
        r["report"].pop("generated_ms")
    # Request energy needs the GPU samples in the database: archived
    # requests are counted, not measured.
    from_db["llm"] = [{**m, "measured_requests": 0, "energy_joules": None, "joules_per_token": None}
                      for m in from_db["llm"]]
    assert archived == from_db
    assert from_elsewhere == from_db
    both = report_json(gpm, empty, "--week", WEEK, "--archive-dir", archive)
    assert [h["host"] for h in both["hosts"]] == ["lab", "rig"]
    assert both["fleet"]["gpus"] == 4
    assert both["fleet"]["energy_joules"] == 2 * 3118400.0
    text = gpm("--db", empty, "report", "--week", WEEK, "--archive-dir", archive, "--section", "hosts",
               env=UTC, check=True).stdout
    assert "fleet" in text and "rig" in text


def test_gpm_archive_moves_the_rollup_beside_the_parquet(gpm, week_db, tmp_path):
    """The rollup lives beside the rows it summarizes: after `gpm archive`
    the moved hours' rollup is in the archive, not in SQLite (#14.1)."""
    import shutil

    archive = tmp_path / "archive"
    before = report_json(gpm, week_db, "--week", WEEK, "--no-cache")
    gpm("--db", week_db, "archive", "--archive-dir", archive, "--older-than", "30", env=UTC, check=True)
    conn = sqlite3.connect(week_db)
    assert [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("gpu_metrics", "report_hours", "report_minutes", "report_hist")] == [0, 0, 0, 0]
    days = sorted(p.name for p in (archive / "gpu_reductions" / "host=lab").iterdir())
    assert days == ["date=2025-11-17", "date=2025-11-18"]
    rolled = report_json(gpm, week_db, "--week", WEEK, "--archive-dir", archive)
    raw = report_json(gpm, week_db, "--week", WEEK, "--archive-dir", archive, "--no-cache")
    shutil.rmtree(archive / "gpu_reductions")
    without = report_json(gpm, week_db, "--week", WEEK, "--archive-dir", archive)
    for r in (before, rolled, raw, without):
        r["report"].pop("generated_ms")
        r.pop("llm")  # archived requests are not measured (see the archive test)
    assert rolled == before == raw == without


def test_a_report_that_began_before_gpm_archive_committed_counts_every_row_once(week_db, tmp_path):
    """The race with `gpm archive` (#14.1): a report reads the manifest, the
    rollup and the raw rows of one snapshot. Here its read transaction is
    open while the archive moves every row, rolls up the moved days and
    commits (on another connection; space is reclaimed later, since that
    waits for readers); the report still sees each row exactly once. Before,
    it reduced hours through other connections (a later snapshot, without
    the moved rows) and failed storing them from its stale one ("database is
    locked", a traceback)."""
    from gpm.report.make import make_report
    from gpm.report.period import Period, week_bounds
    from gpm.report.rollup import rollup_archived_days
    from gpm.store.archive import archive as move

    archive = tmp_path / "archive"
    since, until = week_bounds(WEEK)
    period = Period(since, until, WEEK, WEEK)
    conn = open_db(week_db)
    try:
        conn.execute("BEGIN")
        assert conn.execute("SELECT count(*) FROM gpu_metrics").fetchone()[0] == 2160
        mover = open_db(week_db)
        started = int(time.time() * 1000)
        move(mover, archive, cutoff=MON + 30 * 24 * HOUR, own_host="lab", reclaim_space=False)
        rollup_archived_days(mover, archive, 5.0, created_since_ms=started)
        mover.close()
        assert sqlite3.connect(week_db).execute("SELECT count(*) FROM gpu_metrics").fetchone()[0] == 0
        assert len(list((archive / "gpu_reductions" / "host=lab").iterdir())) == 2
        during = make_report(conn=conn, archive_dir=archive, period=period, busy_threshold=5.0,
                             now_ms=MON + 30 * 24 * HOUR, own_host="lab")
        conn.execute("COMMIT")
        after = make_report(conn=conn, archive_dir=archive, period=period, busy_threshold=5.0,
                            now_ms=MON + 30 * 24 * HOUR, own_host="lab")
    finally:
        conn.close()
    assert [g["samples"] for g in during.gpus] == [g["samples"] for g in after.gpus] == [1080, 1080]
    assert [g["energy_joules"] for g in during.gpus] == [GPU0["energy_joules"], GPU1["energy_joules"]]
    assert during.coverage == after.coverage


def fill_last_week(db: Path) -> str:
    """An hour of one GPU at 100 W (360 kJ) in last week; its ISO week."""
    now = resolve_period(now_ms=int(time.time() * 1000))
    last_week = time.strftime("%G-W%V", time.gmtime(now.until_ms / 1000 - 7 * 86400))
    start, _ = week_bounds(last_week)
    conn = open_db(db)
    save_samples(conn, "lab", [gpu(start + HOUR + i * 10_000, 0, utilization_gpu_percent=100, power_watts=100.0,
                                   energy_joules=1000.0 + i * 1000) for i in range(361)])
    conn.close()
    return last_week


def test_weekly_summary_is_replaced_not_duplicated_and_feeds_the_trend(gpm, tmp_path):
    db = tmp_path / "gpm.db"
    last_week = fill_last_week(db)
    for _ in range(2):
        gpm("--db", db, "report", "--week", last_week, env=UTC, check=True)
    rows = sqlite3.connect(db).execute("SELECT iso_week, host, energy_joules, busy_seconds "
                                       "FROM weekly_summaries").fetchall()
    assert rows == [(last_week, "lab", 360000.0, 3600.0)]
    trend = report_json(gpm, db, "--weeks", "3")["trend"]
    assert [t["iso_week"] for t in trend][-1] == last_week
    assert trend[-1]["energy_joules"] == 360000.0 and trend[-1]["gpus"] == 1
    assert trend[0]["gpus"] == 0 and trend[0]["energy_joules"] is None
    assert trend[-1]["category_energy_joules"] == {} and trend[-1]["completion_tokens"] == 0
    csv_text = gpm("--db", db, "report", "--weeks", "3", "--format", "csv", "--section", "trend",
                   env=UTC, check=True).stdout
    assert csv_text.splitlines()[0].startswith("iso_week,week_start_ms,week_end_ms,hosts,gpus")


def test_weekly_summary_keeps_energy_per_category_and_tokens_for_the_trend(gpm, week_db):
    from gpm.report.summaries import load_weeks, trend_row

    gpm("--db", week_db, "report", "--week", WEEK, env=UTC, check=True)
    conn = sqlite3.connect(week_db)
    usage = json.loads(conn.execute("SELECT usage_json FROM weekly_summaries WHERE iso_week = ?",
                                    (WEEK,)).fetchone()[0])
    assert usage == {
        "category_energy_joules": {w["category"]: w["energy_joules"] for w in WORKLOAD},
        "category_gpu_seconds": {w["category"]: w["gpu_seconds"] for w in WORKLOAD},
        "llm_requests": 6, "prompt_tokens": 130, "completion_tokens": 850,
    }
    row = trend_row(WEEK, load_weeks(conn, [WEEK], ())[WEEK])
    assert row["category_energy_joules"] == dict(sorted(usage["category_energy_joules"].items()))
    assert (row["llm_requests"], row["completion_tokens"]) == (6, 850)


def test_output_is_atomic_and_runs_never_overlap(gpm, week_db, tmp_path):
    from gpm.locks import exclusive_lock, lock_path

    out = tmp_path / "week.md"
    gpm("--db", week_db, "report", "--week", WEEK, "--format", "markdown", "-o", out, env=UTC, check=True)
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# gpm report: 2025-W47") and "## Per GPU" in text
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with exclusive_lock(lock_path(week_db, "report"), job="report"):
        proc = gpm("--db", week_db, "report", "--week", WEEK, "-o", out, env=UTC)
    assert proc.returncode == 75 and "another `gpm report` is running" in proc.stderr
    assert out.read_text(encoding="utf-8") == text


def test_csv_gives_one_section_in_machine_units(gpm, week_db):
    proc = gpm("--db", week_db, "report", "--week", WEEK, "--format", "csv", "--section", "gaps",
               env=UTC, check=True)
    assert proc.stdout.splitlines() == [
        "host,start_ms,end_ms,seconds",
        f"lab,{MON + 10 * HOUR - 10_000},{MON + 34 * HOUR},86410.0",
        f"lab,{MON + 35 * HOUR - 10_000},{MON + 7 * 24 * HOUR},478810.0",
    ]
    bad = gpm("--db", week_db, "report", "--format", "csv", "--section", "gpus", "--section", "days", env=UTC)
    assert bad.returncode == 2 and bad.stderr.startswith("gpm: --format csv prints one section")


def test_gpu_filter_and_empty_range(gpm, week_db):
    only = report_json(gpm, week_db, "--week", WEEK, "--gpu", "1")
    assert [g["gpu_index"] for g in only["gpus"]] == [1]
    by_uuid = report_json(gpm, week_db, "--week", WEEK, "--gpu", "GPU-0aaa")
    assert [g["gpu_index"] for g in by_uuid["gpus"]] == [0]
    empty = gpm("--db", week_db, "report", "--week", "2025-W48", env=UTC, check=True).stdout
    assert "Per GPU: omitted, no GPU samples in this range." in empty
    assert "Coverage" in empty and "0.0%" in empty


@pytest.mark.parametrize("args, message", [
    (["--week", "2025-W54"], "--week '2025-W54': 2025 has no week 54"),
    (["--since", "yesterday"], "--since 'yesterday': expected a date"),
    (["--since", "1d", "--until", "2d"], "empty range"),
    (["--week", "2025-W47", "--since", "1d"], "--week cannot be combined"),
])
def test_bad_ranges_are_one_line_usage_errors(gpm, week_db, args, message):
    proc = gpm("--db", week_db, "report", *args, env=UTC)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_ranges():
    now = MON + 3 * 24 * HOUR + 5 * HOUR
    assert resolve_period(now_ms=now).since_ms == now - 7 * 24 * HOUR
    assert resolve_period(now_ms=now, since="24h").since_ms == now - 24 * HOUR
    p = resolve_period(now_ms=now, since="2025-11-17", until="2025-11-24")
    assert (p.since_ms, p.until_ms, p.iso_week) == (MON, MON + 7 * 24 * HOUR, WEEK)
    assert resolve_period(now_ms=now, since="2025-11-17T08:00:00Z").since_ms == MON + 8 * HOUR
    assert resolve_period(now_ms=now, since="2025-11-17T09:00+01:00").since_ms == MON + 8 * HOUR


def test_sparkline_marks_missing_days_and_draws_nothing_for_zero():
    assert sparkline([0, 50, 100, None, 1], 100) == " ▅█·▁"


def test_help_documents_every_option(gpm):
    out = gpm("report", "--help", check=True).stdout
    for option in ("--week", "--since", "--until", "--host", "--gpu", "--format", "--section", "--weeks",
                   "--archive-dir", "--busy-threshold", "--output", "--no-cache", "75"):
        assert option in out


# ---- reductions kept current by `gpm sample` ----------------------------------------

_CLOCK = '''\
import os, time
_offset_ns = int(os.environ["GPM_TEST_CLOCK_OFFSET_MS"]) * 1_000_000
_time_ns, _time = time.time_ns, time.time
time.time_ns = lambda: _time_ns() + _offset_ns
time.time = lambda: _time() + _offset_ns / 1e9
'''


def test_gpm_sample_keeps_the_reductions_and_the_report_equals_no_cache(fake_nvml, tmp_path):
    """A database written only by `gpm sample` (cron-like runs over four
    hours, with gaps and changing load): each run reduces the hours that
    closed since the last, so the report finds them reduced and must say
    exactly what it says reading every raw row (--no-cache)."""
    from tests.fakes.nvml import Scenario, make_gpu

    clock = tmp_path / "clock"
    clock.mkdir()
    (clock / "sitecustomize.py").write_text(_CLOCK)
    db = tmp_path / "gpm.db"
    start = MON + 2 * HOUR
    offsets = [start + k * 7 * 60_000 + (k % 3) * 11_000 for k in range(36)]  # 07:00 ... 06:05 later
    offsets = [t for t in offsets if not (3 * HOUR <= t - start < 3 * HOUR + 25 * 60_000)]  # a gap

    def env_at(ts_ms: int) -> dict:
        return {**fake_nvml.env(), "GPM_TEST_CLOCK_OFFSET_MS": str(ts_ms - time.time_ns() // 1_000_000),
                "PYTHONPATH": os.pathsep.join([str(REPO), str(clock)]), **UTC}

    for k, ts in enumerate(offsets):
        fake_nvml.set(Scenario(gpus=[make_gpu(i, util_gpu=(13 * k + 40 * i) % 101, power_mw=40_000 + 5_000 * k)
                                     for i in range(2)]))
        run_gpm("--db", db, "sample", "-n", "3", "-i", "0.1", env=env_at(ts), check=True)
    conn = sqlite3.connect(db)
    reduced = conn.execute("SELECT hour_ms, computed_ms FROM report_hours ORDER BY 1").fetchall()
    last = offsets[-1]
    closed = [h for h in range(start, last, HOUR) if h + HOUR + 5 * 60_000 <= last]
    assert [h for h, _ in reduced] == closed and len(closed) == 4  # 07:00-10:59 closed; 11:00 still open
    assert conn.execute("SELECT count(*) FROM report_minutes").fetchone()[0] > 0

    args = ["--db", db, "report", "--since", utc_iso(start), "--until", utc_iso(last + HOUR), "--format", "json"]
    env = env_at(last + 2 * HOUR)
    kept = json.loads(run_gpm(*args, env=env, check=True).stdout)
    raw = json.loads(run_gpm(*args, "--no-cache", env=env, check=True).stdout)
    for report in (kept, raw):
        report["report"].pop("generated_ms")
    assert kept == raw
    assert [g["samples"] for g in kept["gpus"]] == [3 * len(offsets)] * 2
    gaps = kept["coverage"][0]["gaps"]  # 7 minutes between runs is no gap; the 25 minutes without runs
    assert len(gaps) == 2 and gaps[-1]["end_ms"] == last + HOUR  # is one, and so is the hour after the last
    # The report used the hours `gpm sample` reduced: none was reduced again.
    assert conn.execute("SELECT hour_ms, computed_ms FROM report_hours WHERE hour_ms IN "
                        "(SELECT value FROM json_each(?)) ORDER BY 1", (json.dumps(closed),)).fetchall() == reduced


def test_cron_runs_that_start_late_are_not_gaps():
    """`gpm sample -n 3 -i 0.1` from cron every 7 minutes, each run starting
    0 or 3 s late (a busy machine): the threshold is well above the spacing,
    whichever runs share a quarter hour, and a missed half hour is still a gap.
    It was the spacing itself (two runs in a quarter are 5 intervals), so a
    run 3 s later than the one before was a gap."""
    import polars as pl

    from gpm.report.build import gap_ms_for

    starts = [MON + k * 7 * 60_000 + 3_000 * (k % 2) for k in range(40)]
    rows = {}
    for ts in (t + i * 100 for t in starts for i in range(3)):
        n, first, last = rows.get(ts // 60_000, (0, ts, ts))
        rows[ts // 60_000] = (n + 1, min(first, ts), max(last, ts))
    minutes = pl.DataFrame([{"gid": 0, "minute": m, "n": n, "first_ts_ms": f, "last_ts_ms": la}
                            for m, (n, f, la) in sorted(rows.items())])
    longest = max(b - a for a, b in zip(starts, starts[1:])) - 200  # from a run's last sample to the next
    assert longest < gap_ms_for(minutes) < 30 * 60_000
