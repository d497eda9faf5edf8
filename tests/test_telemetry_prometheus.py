"""The Prometheus exposition: names, values, labels, promtool, health, the HTTP server."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpm.gpu.sample import GpuSample
from gpm.telemetry.llm import LoadedModel
from gpm.telemetry.prometheus import exposition, write_textfile
from gpm.telemetry.server import MetricsServer
from gpm.telemetry.state import MetricsState
from tests.fakes.telemetry_data import CATEGORIES, gpus, requests

PROMTOOL = shutil.which("promtool")


def _state(n_gpus: int, *, llm: bool = True, processes: int = 6) -> MetricsState:
    state = MetricsState("testhost")
    state.publish_gpus(gpus(n_gpus, processes), source="nvml", duration_seconds=0.004)
    state.publish_collector("processes", True, 0.001)
    if llm:
        state.llm.observe_many(requests())
        state.publish_loaded_models([LoadedModel("llama3.2", 3_400_000_000, 3_000_000_000, 4096)],
                                    duration_seconds=0.002)
    return state


def samples(text: str) -> dict[tuple, float]:
    """(name, sorted label items) -> value, for every sample in the exposition."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, metric: str, **labels) -> float:
    return samples(text)[(metric, tuple(sorted(labels.items())))]


def names(text: str) -> set[str]:
    return {name for name, _ in samples(text)}


def promtool_check(text: str) -> str:
    if PROMTOOL is None:
        pytest.skip("promtool not installed (Debian package 'prometheus'); cannot lint the exposition")
    proc = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30)
    return (proc.stdout + proc.stderr).strip() + ("" if proc.returncode == 0 else f" (exit {proc.returncode})")


@pytest.mark.parametrize("n_gpus", [0, 1, 8])
@pytest.mark.parametrize("per_process", [False, True])
def test_promtool_reports_nothing(n_gpus, per_process):
    text = exposition(_state(n_gpus).snapshot(), per_process=per_process).decode()
    assert promtool_check(text) == ""


def test_gpu_values_in_base_units():
    text = exposition(_state(1).snapshot()).decode()
    labels = {"gpu": "0", "uuid": "GPU-00000000-aaaa-bbbb-cccc-ddddeeeeffff"}
    assert value(text, "gpm_gpu_utilization_ratio", **labels) == 0.0
    assert value(text, "gpm_gpu_memory_used_bytes", **labels) == 2**30
    assert value(text, "gpm_gpu_memory_total_bytes", **labels) == 24 * 2**30
    assert value(text, "gpm_gpu_temperature_celsius", **labels) == 40
    assert value(text, "gpm_gpu_power_watts", **labels) == 100.5
    assert value(text, "gpm_gpu_power_limit_watts", **labels) == 450
    assert value(text, "gpm_gpu_energy_joules_total", **labels) == pytest.approx(123456.789)
    assert value(text, "gpm_gpu_sm_clock_hertz", **labels) == 2.52e9
    assert value(text, "gpm_gpu_memory_clock_hertz", **labels) == 10.501e9
    assert value(text, "gpm_gpu_fan_speed_ratio", **labels) == 0.3
    assert value(text, "gpm_gpu_throttle_reason", reason="gpu_idle", **labels) == 1
    assert value(text, "gpm_gpu_throttle_reason", reason="sw_power_cap", **labels) == 0
    assert value(text, "gpm_gpu_up", **labels) == 1
    info = {k: v for (n, lbl), v in samples(text).items() if n == "gpm_gpu_info" for k, v in [(lbl, v)]}
    (info_labels, one), = info.items()
    assert one == 1
    assert dict(info_labels) == {**labels, "name": "NVIDIA GeForce RTX 4090", "driver_version": "550.54.14",
                                 "cuda_version": "12.4", "pci_bus_id": "00000000:01:00.0", "source": "nvml"}
    assert "testhost" not in text  # the instance label is Prometheus's job


def test_only_gpu_and_uuid_labels_on_gpu_series():
    text = exposition(_state(2).snapshot()).decode()
    for (name, lbl), _ in samples(text).items():
        if name.startswith("gpm_gpu_") and name != "gpm_gpu_info":
            assert {k for k, _ in lbl} - {"reason"} == {"gpu", "uuid"}, name


def test_missing_values_are_left_out_not_zero():
    bare = GpuSample(ts_ms=1, index=0, source="nvidia-smi", uuid="GPU-x", name="Tesla P4")
    state = MetricsState("h")
    state.publish_gpus([bare], source="nvidia-smi", duration_seconds=0.2)
    text = exposition(state.snapshot()).decode()
    assert "gpm_gpu_power_watts" not in names(text)
    assert "gpm_gpu_energy_joules_total" not in names(text)
    assert value(text, "gpm_collector_success", collector="nvidia_smi") == 1
    assert promtool_check(text) == ""


def test_categories_summed_not_per_pid_by_default():
    text = exposition(_state(1).snapshot()).decode()
    assert not any(n.startswith("gpm_process_") for n in names(text))
    assert not any("pid" in dict(lbl) for _, lbl in samples(text))
    base = {"gpu": "0", "uuid": "GPU-00000000-aaaa-bbbb-cccc-ddddeeeeffff"}
    # six processes, one per category, memory (i+1) * 256 MiB
    for i, cat in enumerate(CATEGORIES):
        label = cat or "unclassified"
        assert value(text, "gpm_category_processes", category=label, **base) == 1
        assert value(text, "gpm_category_gpu_memory_bytes", category=label, **base) == (i + 1) * 256 * 2**20


def test_per_process_series_end_when_the_process_ends():
    state = _state(1)
    text = exposition(state.snapshot(), per_process=True).decode()
    assert value(text, "gpm_process_gpu_memory_bytes", gpu="0",
                 uuid="GPU-00000000-aaaa-bbbb-cccc-ddddeeeeffff", pid="1000", name="Cyberpunk2077.exe",
                 category="gaming") == 256 * 2**20
    state.publish_gpus(gpus(1, processes=0), source="nvml", duration_seconds=0.003)
    text = exposition(state.snapshot(), per_process=True).decode()
    assert not any(n.startswith("gpm_process_") for n in names(text))
    assert not any(n == "gpm_category_processes" for n in names(text))


def test_llm_counters_and_histograms_use_genai_buckets():
    text = exposition(_state(0).snapshot()).decode()
    assert value(text, "gpm_llm_requests_total", model="llama3.2", status="200") == 2
    assert value(text, "gpm_llm_requests_total", model="qwen2.5:7b", status="502") == 1
    assert value(text, "gpm_llm_prompt_tokens_total", model="llama3.2") == 36
    assert value(text, "gpm_llm_completion_tokens_total", model="llama3.2") == 53
    ttft = "gpm_llm_time_to_first_token_seconds"
    assert value(text, ttft + "_bucket", model="llama3.2", le="0.06") == 1
    assert value(text, ttft + "_bucket", model="llama3.2", le="0.25") == 1
    assert value(text, ttft + "_bucket", model="llama3.2", le="0.5") == 2
    assert value(text, ttft + "_count", model="llama3.2") == 2
    assert value(text, ttft + "_sum", model="llama3.2") == pytest.approx(0.35)
    # the failed request counts for duration, not for TTFT
    assert value(text, ttft + "_count", model="qwen2.5:7b") == 1
    dur = "gpm_llm_request_duration_seconds"
    assert value(text, dur + "_count", model="qwen2.5:7b") == 2
    assert value(text, dur + "_bucket", model="qwen2.5:7b", le="0.01") == 1
    les = [dict(lbl)["le"] for (n, lbl) in samples(text) if n == ttft + "_bucket"
           and dict(lbl)["model"] == "llama3.2"]
    assert les == ["0.001", "0.005", "0.01", "0.02", "0.04", "0.06", "0.08", "0.1", "0.25", "0.5",
                   "0.75", "1.0", "2.5", "5.0", "7.5", "10.0", "+Inf"]
    # TPOT = (2.0 - 0.3) / 17 = 0.1 and (0.9 - 0.05) / 34 = 0.025
    tpot = "gpm_llm_time_per_output_token_seconds"
    assert value(text, tpot + "_sum", model="llama3.2") == pytest.approx(0.125)
    assert value(text, tpot + "_bucket", model="llama3.2", le="0.025") == 1
    assert value(text, "gpm_ollama_models_loaded") == 1
    assert value(text, "gpm_ollama_model_vram_bytes", model="llama3.2") == 3e9
    assert value(text, "gpm_ollama_model_size_bytes", model="llama3.2") == 3.4e9
    assert value(text, "gpm_collector_success", collector="ollama") == 1


def test_lost_gpu_fails_the_collector_and_keeps_the_others():
    state = MetricsState("h")
    samples_ = gpus(3)
    samples_[1] = GpuSample(ts_ms=1, index=1, source="nvml", status="gpu_is_lost",
                            uuid=samples_[1].uuid, name=samples_[1].name)
    state.publish_gpus(samples_, source="nvml", duration_seconds=0.01)
    text = exposition(state.snapshot()).decode()
    assert value(text, "gpm_collector_success", collector="nvml") == 0
    assert value(text, "gpm_gpu_up", gpu="1", uuid=samples_[1].uuid) == 0
    assert value(text, "gpm_gpu_up", gpu="2", uuid=samples_[2].uuid) == 1
    assert value(text, "gpm_gpu_memory_used_bytes", gpu="2", uuid=samples_[2].uuid) == 3 * 2**30
    assert not any(dict(lbl).get("gpu") == "1" for n, lbl in samples(text)
                   if n not in ("gpm_gpu_up", "gpm_gpu_info"))
    assert promtool_check(text) == ""


def test_textfile_is_written_atomically(tmp_path):
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "gpm.prom"
    target.write_text("old\n")
    write_textfile(target, _state(2).snapshot())
    text = target.read_text()
    assert value(text, "gpm_gpu_up", gpu="1", uuid="GPU-00000001-aaaa-bbbb-cccc-ddddeeeeffff") == 1
    assert [p.name for p in target.parent.iterdir()] == ["gpm.prom"]
    assert promtool_check(text) == ""


def _get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def test_server_paths_and_live_state():
    state = _state(1)
    with MetricsServer(state, "127.0.0.1", 0) as server:
        base = server.url.rsplit("/", 1)[0]
        code, ctype, body = _get(base + "/")
        assert code == 200 and 'href="/metrics"' in body and ctype.startswith("text/html")
        code, ctype, body = _get(base + "/metrics")
        assert code == 200 and ctype.startswith("text/plain; version=0.0.4")
        assert value(body, "gpm_gpu_temperature_celsius", gpu="0",
                     uuid="GPU-00000000-aaaa-bbbb-cccc-ddddeeeeffff") == 40
        code, ctype, body = _get(base + "/metrics", accept="application/openmetrics-text; version=1.0.0")
        assert code == 200 and ctype.startswith("application/openmetrics-text") and body.endswith("# EOF\n")
        assert _get(base + "/other")[0] == 404
        # the daemon publishes a new state; the next scrape shows it, GPU 0 gone
        state.publish_gpus([gpus(2)[1]], source="nvml", duration_seconds=0.001)
        body = _get(base + "/metrics")[2]
        assert "gpm_gpu_up" in names(body)
        assert {dict(lbl)["gpu"] for n, lbl in samples(body) if n == "gpm_gpu_up"} == {"1"}
    with pytest.raises(OSError):
        urllib.request.urlopen(base + "/metrics", timeout=2)


def _switches(tid: int) -> int:
    """Context switches of one thread (each time it slept and woke)."""
    status = Path(f"/proc/self/task/{tid}/status").read_text()
    return sum(int(line.split()[1]) for line in status.splitlines()
               if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")))


def test_an_idle_endpoint_sleeps_until_a_scrape_comes():
    """The daemon's endpoint woke 5 times a second with nobody connected (#14)."""
    with MetricsServer(_state(1), "127.0.0.1", 0) as server:
        assert _get(server.url)[0] == 200  # the scrape's connection closes
        tid = next(t.native_id for t in threading.enumerate() if t.name == "gpm-metrics")
        time.sleep(0.3)
        before = _switches(tid)
        time.sleep(1.0)
        assert _switches(tid) - before == 0
        assert _get(server.url)[0] == 200
        started = time.monotonic()
    assert time.monotonic() - started < 1.0  # stopping wakes it at once


def test_names_from_outside_reach_metrics_with_control_characters_made_visible():
    """`curl /metrics` in a terminal must run no escape sequence a process or client chose (#12.10)."""
    from dataclasses import replace


    sample = gpus(1, processes=1)[0]
    sample.processes[0].name = "n\x1b[31m\x07x"
    state = MetricsState("testhost")
    state.publish_gpus([sample], source="nvml", duration_seconds=0.004)
    state.llm.observe_many([replace(requests()[0], model="m\x1b]0;pwned\x07")])
    text = exposition(state.snapshot(), per_process=True).decode()
    assert "\x1b" not in text and "\x07" not in text
    assert 'name="n\\\\x1b[31m\\\\x07x"' in text and 'model="m\\\\x1b]0;pwned\\\\x07"' in text
