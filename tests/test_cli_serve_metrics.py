"""``gpm serve-metrics`` and ``gpm sample --textfile`` as a user runs them, on the fake NVML."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager

import pytest

from gpm.telemetry.llm import LlmRequest
from tests.conftest import FIXTURES, REPO, gpm_env, run_gpm
from tests.fakes.nvml import FakeProcess, Scenario, make_gpu
from tests.fakes.otlp_receiver import Receiver, attrs
from tests.fakes.telemetry_data import requests, save_requests
from tests.test_classify_live import PYTHON, built, children, named, vanished_pid  # noqa: F401 - fixtures
from tests.test_telemetry_prometheus import names, promtool_check, samples, value

FAKE_SMI = REPO / "tests" / "fakes" / "nvidia-smi"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        return resp.read().decode()


@contextmanager
def serving(*args, env: dict, port: int | None = None, ready: bool = True):
    """``gpm serve-metrics`` in the background; yields (process, metrics URL)."""
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpm", "serve-metrics", "--listen", f"127.0.0.1:{port}", *args],
        env=gpm_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 20
        while ready:
            try:
                urllib.request.urlopen(url.replace("/metrics", "/"), timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"serve-metrics did not come up: {proc.communicate()[1]}")
                time.sleep(0.1)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def eight_gpus_with_processes() -> Scenario:
    scenario = Scenario.many(8)
    for i, gpu in enumerate(scenario.gpus):
        gpu.processes = [FakeProcess(pid=40000 + 100 * i + k, used_memory=(k + 1) * 256 * 2**20,
                                     type="compute" if k % 2 else "graphics", sm_util=10 * k,
                                     name=f"proc{k}") for k in range(25)]
    return scenario


def test_serves_fake_nvml_and_stops_on_sigterm(fake_nvml, tmp_path):
    scenario = fake_nvml.set(eight_gpus_with_processes())
    env = fake_nvml.env({"GPM_DB": tmp_path / "gpm.db"})
    with serving("--cache-secs", "0", "--per-process", env=env) as (proc, url):
        text = scrape(url)
        assert promtool_check(text) == ""
        for i, gpu in enumerate(scenario.gpus):
            labels = {"gpu": str(i), "uuid": gpu.uuid}
            assert value(text, "gpm_gpu_power_watts", **labels) == gpu.power_mw / 1000
            assert value(text, "gpm_gpu_memory_total_bytes", **labels) == gpu.memory_total
            # the fake's energy counter runs on with time, as a real one does
            assert value(text, "gpm_gpu_energy_joules_total", **labels) >= gpu.energy_mj / 1000
            assert value(text, "gpm_gpu_utilization_ratio", **labels) == pytest.approx(gpu.util_gpu / 100)
            # these pids do not exist on this machine: classified (on nothing) as general compute
            assert value(text, "gpm_category_processes", category="general_compute", **labels) == 25
            assert value(text, "gpm_category_gpu_memory_bytes", category="general_compute",
                         **labels) == sum((k + 1) * 256 * 2**20 for k in range(25))
        assert len([1 for n, _ in samples(text) if n == "gpm_process_gpu_memory_bytes"]) == 200
        assert value(text, "gpm_collector_success", collector="nvml") == 1
        assert value(text, "gpm_collector_success", collector="processes") == 1
        assert "gpm_build_info" in names(text)

        # GPU 3 falls off the bus: the nvml collector fails, the other seven stay
        lost = eight_gpus_with_processes()
        lost.gpus[3].lost_after = 0
        fake_nvml.set(lost)
        text = scrape(url)
        assert value(text, "gpm_collector_success", collector="nvml") == 0
        assert value(text, "gpm_gpu_up", gpu="3", uuid=scenario.gpus[3].uuid) == 0
        assert value(text, "gpm_gpu_power_watts", gpu="4", uuid=scenario.gpus[4].uuid) == \
            scenario.gpus[4].power_mw / 1000
        assert not any(dict(lbl).get("gpu") == "3" for n, lbl in samples(text)
                       if n.startswith("gpm_process_"))
        assert promtool_check(text) == ""
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    err = proc.stderr.read()
    assert f"gpm: serving metrics on {url}" in err
    assert "Traceback" not in err


def test_real_processes_of_every_category_classified_live_pass_promtool(fake_nvml, built, children, tmp_path):
    """The sampler's classifier runs on real /proc entries; odd names must not break the exposition."""
    tmp = built["tmp"]
    game = tmp_path / "Cyberpunk2077.exe"
    shutil.copy(built["game"], game)
    started = {
        "gaming": children.start([game], ready=False),
        "ml_training": children.start([PYTHON, built["wait"], built["torch"], "--epochs", "3"]),
        "llm_inference": children.start([named(tmp, "llama-server"), built["wait"], "-m",
                                         "/models/Qwen2.5-7B-Instruct-Q4_K_M.gguf", "--port", "8080"]),
        "desktop": children.start([named(tmp, "gnome-shell"), built["wait"]]),
        "general_compute": children.start([named(tmp, 'ren "d\\er\u00e9'), built["wait"]]),
    }
    scenario = Scenario(gpus=[make_gpu(0), make_gpu(1)])
    scenario.gpus[0].processes = [FakeProcess(pid=pid, used_memory=(k + 1) * 256 * 2**20, sm_util=20)
                                  for k, pid in enumerate(started.values())]
    scenario.gpus[1].processes = [FakeProcess(pid=started["ml_training"], used_memory=2**30, sm_util=90),
                                  FakeProcess(pid=vanished_pid(), used_memory=2**20)]
    fake_nvml.set(scenario)
    with serving("--per-process", env=fake_nvml.env()) as (_proc, url):
        text = scrape(url)
    assert promtool_check(text) == ""
    gpu0 = {"gpu": "0", "uuid": scenario.gpus[0].uuid}
    gpu1 = {"gpu": "1", "uuid": scenario.gpus[1].uuid}
    for k, category in enumerate(started):
        assert value(text, "gpm_category_processes", category=category, **gpu0) == 1
        assert value(text, "gpm_category_gpu_memory_bytes", category=category, **gpu0) == (k + 1) * 256 * 2**20
    assert value(text, "gpm_category_processes", category="ml_training", **gpu1) == 1
    assert value(text, "gpm_category_processes", category="general_compute", **gpu1) == 1  # exited
    per_process = {int(dict(lbl)["pid"]): dict(lbl) for n, lbl in samples(text)
                   if n == "gpm_process_gpu_memory_bytes" and dict(lbl)["gpu"] == "0"}
    assert {pid: per_process[pid]["category"] for pid in started.values()} == {
        pid: category for category, pid in started.items()}
    assert per_process[started["general_compute"]]["name"] == 'ren "d\\er\u00e9'


def test_scrapes_within_cache_secs_share_one_read(fake_nvml):
    before = fake_nvml.set(Scenario.many(1))
    with serving("--cache-secs", "30", env=fake_nvml.env()) as (_proc, url):
        first = scrape(url)
        after = Scenario.many(1)
        after.gpus[0].temperature = before.gpus[0].temperature + 20
        fake_nvml.set(after)
        second = scrape(url)
    labels = {"gpu": "0", "uuid": before.gpus[0].uuid}
    assert value(first, "gpm_gpu_temperature_celsius", **labels) == before.gpus[0].temperature
    assert value(second, "gpm_gpu_temperature_celsius", **labels) == before.gpus[0].temperature


def test_zero_gpus_and_one(fake_nvml, tmp_path):
    for n in (0, 1):
        fake_nvml.set(Scenario.many(n))
        with serving(env=fake_nvml.env()) as (_proc, url):
            text = scrape(url)
            assert promtool_check(text) == ""
            assert value(text, "gpm_collector_success", collector="nvml") == 1
            assert len([1 for name, _ in samples(text) if name == "gpm_gpu_up"]) == n


def test_nvidia_smi_timeout_and_ollama_down_fail_their_collectors_only(tmp_path):
    env = {
        "GPM_GPU_ENABLE_NVML": "false",
        "GPM_GPU_NVIDIA_SMI_PATH": FAKE_SMI,
        "GPM_GPU_NVIDIA_SMI_TIMEOUT_SECS": "0.3",
        "FAKE_SMI_SLEEP": "5",
        "FAKE_SMI_XML": tmp_path / "unused.xml",
        "GPM_OLLAMA_API_URL": f"http://127.0.0.1:{free_port()}",
        "GPM_OLLAMA_TIMEOUT_SECS": "1",
    }
    with serving("--ollama", env=env) as (_proc, url):
        text = scrape(url)
    assert value(text, "gpm_collector_success", collector="nvidia_smi") == 0
    assert value(text, "gpm_collector_duration_seconds", collector="nvidia_smi") >= 0.3
    assert value(text, "gpm_collector_success", collector="ollama") == 0
    assert ("gpm_collector_success", (("collector", "nvml"),)) not in samples(text)  # NVML disabled
    assert "gpm_build_info" in names(text)
    assert promtool_check(text) == ""


@pytest.mark.skipif(not (FIXTURES / "nvidia-smi").is_dir(), reason="needs ../shared/fixtures/nvidia-smi")
def test_nvidia_smi_fallback_when_nvml_is_missing(tmp_path):
    env = {
        "LD_LIBRARY_PATH": tmp_path,  # no libnvidia-ml.so.1 here
        "GPM_GPU_NVIDIA_SMI_PATH": FAKE_SMI,
        "FAKE_SMI_XML": FIXTURES / "nvidia-smi" / "telegraf__rtx-3090-v12.xml",
    }
    with serving(env=env) as (_proc, url):
        text = scrape(url)
    assert value(text, "gpm_collector_success", collector="nvidia_smi") == 1
    assert value(text, "gpm_collector_success", collector="nvml") == 0
    assert [dict(lbl)["source"] for n, lbl in samples(text) if n == "gpm_gpu_info"] == ["nvidia-smi"]
    assert promtool_check(text) == ""


def test_llm_requests_from_the_proxy_table_count_once(fake_nvml, tmp_path):
    db = tmp_path / "gpm.db"
    save_requests(db, requests()[:2] + requests()[3:4])  # llama3.2 twice, one failed qwen2.5:7b
    with serving("--cache-secs", "0", env=fake_nvml.env({"GPM_DB": db})) as (_proc, url):
        first = scrape(url)
        second = scrape(url)
        save_requests(db, [LlmRequest(model="llama3.2", endpoint="/api/chat", status=200, prompt_tokens=5,
                                      completion_tokens=3, ttft_seconds=0.2, duration_seconds=0.5)])
        third = scrape(url)
    for text in (first, second):
        assert value(text, "gpm_llm_requests_total", model="llama3.2", status="200") == 2
        assert value(text, "gpm_llm_completion_tokens_total", model="llama3.2") == 53
        assert value(text, "gpm_llm_requests_total", model="qwen2.5:7b", status="502") == 1
    assert value(third, "gpm_llm_requests_total", model="llama3.2", status="200") == 3
    assert value(third, "gpm_llm_time_to_first_token_seconds_count", model="llama3.2") == 3
    assert promtool_check(third) == ""


def test_a_database_created_after_start_is_picked_up(fake_nvml, tmp_path):
    db = tmp_path / "data" / "gpm.db"
    with serving("--cache-secs", "0", env=fake_nvml.env({"GPM_DB": db})) as (_proc, url):
        before = scrape(url)
        save_requests(db, requests())  # the proxy's first run creates the database
        after = scrape(url)
    assert not any(n.startswith("gpm_llm_") for n in names(before))
    assert "gpm_gpu_memory_used_bytes" in names(before)
    assert value(after, "gpm_llm_requests_total", model="llama3.2", status="200") == 2
    assert value(after, "gpm_llm_prompt_tokens_total", model="qwen2.5:7b") == 1500
    assert promtool_check(after) == ""


def test_port_in_use_is_one_line_and_exit_1(fake_nvml):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_gpm("serve-metrics", "--listen", f"127.0.0.1:{port}", env=fake_nvml.env(), timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"gpm: cannot listen on 127.0.0.1:{port}: ")
    assert "Traceback" not in result.stderr


def test_bad_listen_and_no_prometheus_without_otlp_are_usage_errors():
    result = run_gpm("serve-metrics", "--listen", "localhost:99999")
    assert result.returncode == 2 and "metrics_listen" in result.stderr
    result = run_gpm("serve-metrics", "--no-prometheus")
    assert result.returncode == 2 and "--no-prometheus needs --otlp" in result.stderr


def test_help_documents_every_option():
    result = run_gpm("serve-metrics", "--help", check=True)
    for option in ("--listen", "--per-process", "--cache-secs", "--ollama", "--otlp", "--otlp-endpoint",
                   "--otlp-protocol", "--export-interval", "--no-prometheus", "Exit codes"):
        assert option in result.stdout
    assert "--textfile" in run_gpm("sample", "--help", check=True).stdout


def test_otlp_push_from_the_command_line(fake_nvml):
    scenario = fake_nvml.set(Scenario.many(2))
    with Receiver() as rx:
        with serving("--otlp", "--no-prometheus", "--otlp-endpoint", rx.endpoint, "--export-interval", "1",
                     env=fake_nvml.env(), ready=False) as (proc, _url):
            assert rx.got.wait(timeout=20), proc.stderr.read() if proc.poll() is not None else "no export"
        metrics = rx.metrics()
        resource = attrs(rx.metric_requests[0].resource_metrics[0].resource.attributes)
    assert resource["service.name"] == "gpm"
    power = {attrs(p.attributes)["hw.id"]: p.as_double for p in metrics["hw.power"].gauge.data_points}
    assert power == {g.uuid: g.power_mw / 1000 for g in scenario.gpus}


def test_sample_textfile(fake_nvml, tmp_path):
    scenario = fake_nvml.set(Scenario.many(2))
    out = tmp_path / "textfile" / "gpm.prom"
    out.parent.mkdir()
    run_gpm("sample", "--no-store", "--textfile", out, env=fake_nvml.env(), check=True)
    text = out.read_text()
    assert value(text, "gpm_gpu_temperature_celsius", gpu="1", uuid=scenario.gpus[1].uuid) == \
        scenario.gpus[1].temperature
    assert value(text, "gpm_collector_success", collector="nvml") == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["gpm.prom"]
    assert promtool_check(text) == ""
    result = run_gpm("sample", "--no-store", "--textfile", tmp_path / "missing" / "x.prom", env=fake_nvml.env())
    assert result.returncode == 2  # a missing folder is refused before sampling, as -o is
    assert result.stderr.startswith(f"gpm: --textfile {tmp_path / 'missing' / 'x.prom'}: ")


PROMETHEUS = shutil.which("prometheus")


@contextmanager
def running_prometheus(tmp_path, config: str):
    """A real Prometheus with ``config`` (prometheus.yml's text) on a free port.

    Yields (process, query): ``query(PromQL)`` is /api/v1/query's result list,
    [] while Prometheus is not answering yet.
    """
    if PROMETHEUS is None:
        pytest.skip("the prometheus binary is not installed (Debian package 'prometheus'); "
                    "cannot test a real scrape")
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(config)
    prom = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    api = f"http://127.0.0.1:{port}/api/v1/query?query="

    def query(q: str) -> list:
        try:
            with urllib.request.urlopen(api + urllib.parse.quote(q), timeout=5) as resp:
                body = json.load(resp)
        except OSError:
            return []
        assert body["status"] == "success", (q, body)
        return body["data"]["result"]

    try:
        yield prom, query
    finally:
        prom.terminate()
        try:
            prom.wait(timeout=15)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait()


def scrape_config(gpm_port: int, extra: str = "") -> str:
    """prometheus.yml scraping gpm every second as job gpm."""
    return ("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n" + extra
            + "scrape_configs:\n  - job_name: gpm\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{gpm_port}']\n")


@pytest.mark.slow
def test_a_real_prometheus_scrapes_serve_metrics(fake_nvml, tmp_path):
    scenario = fake_nvml.set(Scenario.many(2))
    gpm_port = free_port()
    with serving(env=fake_nvml.env(), port=gpm_port), \
            running_prometheus(tmp_path, scrape_config(gpm_port)) as (prom, query):
        deadline = time.monotonic() + 45
        result: list = []
        while time.monotonic() < deadline and prom.poll() is None:
            result = query("gpm_gpu_power_watts")
            if len(result) == 2:
                break
            time.sleep(0.5)
        assert len(result) == 2, f"no samples in Prometheus: {prom.stderr.read() if prom.poll() else ''}"
        got = {r["metric"]["uuid"]: float(r["value"][1]) for r in result}
        assert got == {g.uuid: g.power_mw / 1000 for g in scenario.gpus}
        assert {r["metric"]["job"] for r in result} == {"gpm"}
        up = query('up{job="gpm"}')
        assert [float(r["value"][1]) for r in up] == [1.0]
        joined = query("gpm_gpu_memory_used_bytes * on(uuid) group_left(name) gpm_gpu_info")
        assert {r["metric"]["name"] for r in joined} == {g.name for g in scenario.gpus}
        assert [float(r["value"][1]) for r in query('gpm_collector_success{collector="nvml"}')] == [1.0]
