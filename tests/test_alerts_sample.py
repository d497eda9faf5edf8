"""Alerts across one-shot `gpm sample` runs, as cron runs them (#15).

Each test drives the fake NVML (or Ollama, or a small tmpfs) through one
condition, one real `gpm sample` process per step, and sees exactly one
firing and one resolved event in ``alerts``, with hysteresis: a step between
the threshold and threshold - margin keeps the alert firing. The state lives
in the database between runs; where for_secs matters, ``faketime`` gives
each run the minute cron would.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.conftest import run_gpm
from tests.fakes.nvml import Scenario, make_gpu
from tests.fakes.ollama_server import FakeOllama
from tests.faults.test_store_faults import small_tmpfs

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
T0 = datetime(2026, 12, 7, 12, 0, 0, tzinfo=timezone.utc)


class Cron:
    """`gpm sample` (or another command) run once per step on one database and config."""

    def __init__(self, tmp_path: Path, fake_nvml, config: str = "[alerts]\nfor_secs = 0\n",
                 db: Path | None = None) -> None:
        self.db = db or tmp_path / "gpm.db"
        self.config = tmp_path / "gpm.toml"
        self.config.write_text(config)
        self.fake_nvml = fake_nvml
        self.warnings: list[str] = []

    def run(self, *args: str, at_secs: float | None = None, extra: dict | None = None):
        env = self.fake_nvml.env()
        env.update({"GPM_GPU_FALLBACK_TO_NVIDIA_SMI": "false", "TZ": "UTC", **(extra or {})})
        if at_secs is not None:  # this run happens at T0 + at_secs
            if not FAKETIME_LIB.is_file():
                pytest.skip("libfaketime is not installed")
            at = (T0 + timedelta(seconds=at_secs)).strftime("%Y-%m-%d %H:%M:%S")
            env.update(LD_PRELOAD=str(FAKETIME_LIB), FAKETIME=f"@{at}", DONT_FAKE_MONOTONIC="1")
        proc = run_gpm("--db", self.db, "--config", self.config, *(args or ("sample",)), env=env)
        assert proc.returncode in (0, 1), proc.stderr  # 1: a GPU failed to read, on purpose
        self.warnings += [line for line in proc.stderr.splitlines() if " alert " in line]
        return proc

    def sample(self, scenario: Scenario, **kwargs):
        self.fake_nvml.set(scenario)
        return self.run("sample", **kwargs)

    def events(self) -> list[tuple]:
        conn = sqlite3.connect(self.db)
        try:
            return conn.execute("SELECT rule, gpu_index, subject, severity, started_ms, resolved_ms, value, peak, "
                                "message FROM alerts ORDER BY id").fetchall()
        finally:
            conn.close()

    def states(self) -> int:
        conn = sqlite3.connect(self.db)
        try:
            return conn.execute("SELECT COUNT(*) FROM alert_state").fetchone()[0]
        finally:
            conn.close()

    def assert_once(self, rule: str, **kwargs) -> tuple:
        """Exactly one event, of ``rule``, resolved; exactly one warning said so; no state left."""
        events = self.events()
        assert [(e[0], e[5] is not None) for e in events] == [(rule, True)], events
        assert len(self.warnings) == 1 and f"alert {rule}:" in self.warnings[0], self.warnings
        assert self.states() == 0
        return events[0]


def ms(secs: float) -> int:
    return round((T0.timestamp() + secs) * 1000)


def gpu(**fields) -> Scenario:
    return Scenario(gpus=[make_gpu(0, **fields)])


@pytest.mark.slow
def test_temperature_ramp_fires_after_for_secs_once_and_resolves_below_the_margin(tmp_path, fake_nvml):
    # 85 °C and margin 5 by default; for_secs 50, not 60: runs a minute apart are 60 s ± the
    # start-up time apart, so the second run that sees a condition may come 59.8 s after the first
    cron = Cron(tmp_path, fake_nvml, "[alerts]\nfor_secs = 50\n")
    for minute, temp in enumerate([70, 88, 92, 83, 79, 70]):
        cron.sample(gpu(temperature=temp), at_secs=60 * minute)
        if minute == 2:
            assert cron.warnings == ["warning alert temperature: GPU 0 (NVIDIA GeForce RTX 4090) at 92 °C, "
                                     "above 85 °C for 1m"]
    rule, index, _, severity, started, resolved, value, peak, message = cron.assert_once("temperature")
    assert (index, severity, value, peak) == (0, "warning", 79.0, 92.0)
    assert started == pytest.approx(ms(60), abs=2000) and resolved == pytest.approx(ms(240), abs=2000)
    assert message == "GPU 0 (NVIDIA GeForce RTX 4090) back to 79 °C, below 80 °C (peak 92 °C, 3m)"


def test_a_cron_sample_hands_its_alerts_to_the_hook_before_it_exits(tmp_path, fake_nvml):
    """The channels are wired to the engine: the firing and the resolved event of a
    one-shot `gpm sample` reach the configured hook as the documented JSON."""
    got = tmp_path / "got"
    hook = tmp_path / "hook.py"
    hook.write_text("import json, os, sys\n"
                    f"with open({str(got)!r}, 'a') as f:\n"
                    "    f.write(json.dumps([json.load(sys.stdin), os.environ['GPM_ALERT_STATE']]) + '\\n')\n")
    cron = Cron(tmp_path, fake_nvml, "[alerts]\nfor_secs = 0\nnotify_desktop = false\n"
                                     f"hook_command = [{sys.executable!r}, {str(hook)!r}]\n")
    for temp in (70, 90, 70):
        cron.sample(gpu(temperature=temp))
    sent = [json.loads(line) for line in got.read_text().splitlines()]
    assert [(e["rule"], e["state"], e["gpu_index"], state) for e, state in sent] == [
        ("temperature", "firing", 0, "firing"), ("temperature", "resolved", 0, "resolved")]
    assert sent[0][0]["version"] == 1 and sent[0][0]["value"] == 90.0 and sent[1][0]["resolved"]
    cron.assert_once("temperature")


def test_memory_filling_up(tmp_path, fake_nvml):
    cron = Cron(tmp_path, fake_nvml)
    total = make_gpu(0).memory_total
    for share in (0.50, 0.96, 0.92, 0.89):  # 95 %, margin 5
        cron.sample(gpu(memory_used=int(total * share)))
    assert cron.assert_once("memory")[6:8] == (pytest.approx(89.0), pytest.approx(96.0))


def test_power_spike(tmp_path, fake_nvml):
    cron = Cron(tmp_path, fake_nvml)
    for watts in (300, 445, 435, 380):  # of 450 W: 98 %, margin 10
        cron.sample(gpu(power_mw=watts * 1000, power_limit_mw=450_000))
    assert cron.assert_once("power")[7] == pytest.approx(100 * 445 / 450)


def test_throttle_period(tmp_path, fake_nvml):
    cron = Cron(tmp_path, fake_nvml)
    for reasons in (0x0, 0x40, 0x40 | 0x20, 0x4, 0x1):  # sw_power_cap and gpu_idle are not in the list
        cron.sample(gpu(clocks_event_reasons=reasons))
    assert cron.assert_once("throttle")[8].startswith("GPU 0 (NVIDIA GeForce RTX 4090) no longer throttled (after ")
    assert cron.warnings[0].endswith("GPU 0 (NVIDIA GeForce RTX 4090) throttled (hw_thermal_slowdown) for 0s")


def test_ecc_errors_appearing(tmp_path, fake_nvml):
    cron = Cron(tmp_path, fake_nvml)
    for errors in (0, 3, 5, 0):  # 0 again: the driver reloaded
        cron.sample(gpu(ecc_uncorrected=errors))
    event = cron.assert_once("ecc")
    assert event[3] == "critical" and event[7] == 5.0
    assert "has 3 uncorrected ECC errors since the driver loaded, above 0" in cron.warnings[0]


def test_a_gpu_lost_and_back_and_one_gone_from_the_list_and_back(tmp_path, fake_nvml):
    cron = Cron(tmp_path, fake_nvml)
    two = Scenario.many(2)
    lost = replace(two, gpus=[replace(two.gpus[0], lost_after=0), two.gpus[1]])
    gone = replace(two, gpus=[two.gpus[0]])
    for scenario in (two, lost, lost, two, gone, gone, two):
        cron.sample(scenario)
    events = cron.events()
    assert [(e[0], e[1], e[5] is not None) for e in events] == [("gpu_lost", 0, True), ("gpu_lost", 1, True)]
    assert len(cron.warnings) == 2 and cron.states() == 0
    assert cron.warnings[0].endswith("GPU 0 (NVIDIA GeForce RTX 4090) lost (gpu_is_lost) for 0s")
    assert cron.warnings[1].endswith("GPU 1 (NVIDIA A100-SXM4-80GB) lost (missing from the driver's list) for 0s")


def test_ollama_stopped(tmp_path, fake_nvml):
    cron = Cron(tmp_path, fake_nvml)
    with FakeOllama() as fake:
        port = fake.port
        env = {"GPM_OLLAMA_ENABLED": "true", "GPM_OLLAMA_API_URL": fake.url, "GPM_OLLAMA_TIMEOUT_SECS": "2"}
        cron.run("ollama-watch", extra=env)
    cron.run("ollama-watch", extra=env)  # stopped
    cron.run("ollama-watch", extra=env)
    with FakeOllama(port=port):
        cron.run("ollama-watch", extra=env)
    event = cron.assert_once("ollama_down")
    assert event[8].startswith(f"Ollama at http://127.0.0.1:{port} is up again (down for ")
    cron.run("ollama-watch", extra={**env, "GPM_OLLAMA_ENABLED": "false"})  # not watched: no alert
    assert len(cron.events()) == 1


@pytest.mark.slow
def test_the_sampler_paused_is_one_event_covering_the_gap(tmp_path, fake_nvml):
    """Cron every minute, then nothing for ten: at the next run, one event fired and resolved at once."""
    cron = Cron(tmp_path, fake_nvml, "")
    for minute in (0, 1, 2, 3, 4, 14, 15):
        cron.sample(gpu(), at_secs=60 * minute)
    rule, _, _, severity, started, resolved, value, peak, message = cron.assert_once("sampler_stalled")
    assert (severity, value) == ("critical", 0.0)  # each run starts within 2 s of its minute
    assert started == pytest.approx(ms(4 * 60 + 3 * 60), abs=2000) and resolved == pytest.approx(ms(14 * 60), abs=2000)
    assert peak == pytest.approx(10.0, abs=0.1)
    assert message.startswith("the sampler: a sample stored again at 2026-12-07T12:14:0")
    assert message.endswith(" after 10m")
    assert "no sample stored for 10m (the last at 2026-12-07T12:04:0" in cron.warnings[0]


def test_a_small_tmpfs_filling_up(tmp_path, fake_nvml):
    """The archive folder on a 2 MB tmpfs; the database on a roomy one, so only the archive's counts."""
    with small_tmpfs(tmp_path / "fs", "2m") as fs, small_tmpfs(tmp_path / "data", "64m") as data:
        archive = fs / "archive"
        cron = Cron(tmp_path, fake_nvml, f'[alerts]\nfor_secs = 0\ndisk_free_threshold_percent = 50\n'
                                         f'[storage]\narchive_dir = "{archive}"\n', db=data / "gpm.db")
        block = os.statvfs(fs).f_frsize
        blocks = os.statvfs(fs).f_blocks
        filler = fs / "filler"
        for used in (0, 0.75, 0.485, 0.0):  # 50 % free, margin 2: 51.5 % free keeps it firing
            if used:
                filler.write_bytes(b"\0" * (int(blocks * used) * block))
            elif filler.exists():
                filler.unlink()
            cron.sample(gpu())
        event = cron.assert_once("disk_free")
        assert event[2] == str(archive) and event[7] == pytest.approx(25.0, abs=1)
        assert f"the archive folder {archive} has 25% free (" in cron.warnings[0]
