"""Alerts under a running `gpm daemon` (#15): the fake NVML (or Ollama, or a
small tmpfs) is driven through each condition while the daemon samples every
0.2 s, and each condition makes exactly one firing and one resolved event,
in ``alerts`` and in the log; a value between the threshold and threshold -
margin keeps the alert firing.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.fakes.nvml import Scenario, make_gpu
from tests.fakes.ollama_server import FakeOllama, free_port
from tests.faults.conftest import wait_until
from tests.faults.test_store_faults import small_tmpfs
from tests import test_daemon
from tests.test_daemon import fast_env

# Two samples before firing; an Xid alert stays 0.6 s after the last Xid. A loaded test machine
# can leave 0.6 s between two samples, so the stall rule is off where it is not the subject.
QUIET = '[[alerts.override]]\nrule = "sampler_stalled"\nenabled = false\n'
CONFIG = '[alerts]\nfor_secs = 0.4\n[[alerts.override]]\nrule = "xid"\nfor_secs = 0.6\n' + QUIET


daemons = test_daemon.daemons  # the fixture: started daemons are killed after the test


def events(db: Path) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT rule, gpu_index, resolved_ms IS NOT NULL, message FROM alerts "
                            "ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # not migrated yet
        return []
    finally:
        conn.close()


def resolved(db: Path) -> list[tuple]:
    return [e for e in events(db) if e[2]]


def one_event_after_resolved(d, rule: str) -> str:
    """Wait for the resolution, a few samples more, stop: exactly one event of ``rule``; its message."""
    wait_until(lambda: resolved(d.db), timeout=15, what=f"{rule} resolved")
    time.sleep(0.6)
    rc, _ = d.stop()
    assert rc == 0, d.log
    [(got, _, done, message)] = events(d.db)
    assert (got, done) == (rule, True)
    assert_logged_once_each(d.log, [rule])
    return message


class Walk:
    """One daemon, conditions one after another: fire, hold (hysteresis), resolve."""

    def __init__(self, d, fake_nvml) -> None:
        self.d, self.fake_nvml = d, fake_nvml

    def state(self, rule: str) -> list[tuple]:
        return [e for e in events(self.d.db) if e[0] == rule]

    def through(self, rule: str, firing: Scenario, holding: Scenario | None, normal: Scenario) -> None:
        self.fake_nvml.set(firing)
        wait_until(lambda: self.state(rule), timeout=15, what=f"{rule} firing")
        if holding is not None:
            self.fake_nvml.set(holding)
            time.sleep(0.8)  # four samples between threshold - margin and threshold
            assert [e[2] for e in self.state(rule)] == [False], self.state(rule)
        self.fake_nvml.set(normal)
        wait_until(lambda: [e for e in self.state(rule) if e[2]], timeout=15, what=f"{rule} resolved")
        time.sleep(0.4)
        assert [e[2] for e in self.state(rule)] == [True]


def assert_logged_once_each(log: str, rules: list[str]) -> None:
    fired = re.findall(r" (?:WARNING|ERROR) alerts: (?:warning|critical) alert (\w+):", log)
    resolved = re.findall(r" INFO alerts: resolved alert (\w+):", log)
    assert sorted(fired) == sorted(rules) and sorted(resolved) == sorted(rules), log


@pytest.mark.slow
def test_each_gpu_condition_fires_once_and_resolves_once(fake_nvml, tmp_path, daemons):
    (tmp_path / "gpm.toml").write_text(CONFIG)
    normal = Scenario(gpus=[make_gpu(0)])
    fake_nvml.set(normal)

    def with_gpu(**fields) -> Scenario:
        return Scenario(gpus=[make_gpu(0, **fields)])

    d = daemons(tmp_path, fast_env(fake_nvml, GPM_CONFIG=tmp_path / "gpm.toml"))
    d.wait_for(r"started sample")
    walk = Walk(d, fake_nvml)
    total = make_gpu(0).memory_total
    walk.through("temperature", with_gpu(temperature=91), with_gpu(temperature=83), normal)
    walk.through("memory", with_gpu(memory_used=int(total * 0.97)), with_gpu(memory_used=int(total * 0.93)), normal)
    walk.through("power", with_gpu(power_mw=449_000, power_limit_mw=450_000),
                 with_gpu(power_mw=420_000, power_limit_mw=450_000), normal)
    walk.through("throttle", with_gpu(clocks_event_reasons=0x20), None, normal)
    walk.through("ecc", with_gpu(ecc_uncorrected=2), with_gpu(ecc_uncorrected=3), with_gpu(ecc_uncorrected=0))
    walk.through("xid", with_gpu(xids=[79]), None, normal)
    walk.through("gpu_lost", with_gpu(lost_after=0), None, normal)
    rc, _ = d.stop()
    assert rc == 0
    rules = ["temperature", "memory", "power", "throttle", "ecc", "xid", "gpu_lost"]
    assert [(e[0], e[1], e[2]) for e in events(d.db)] == [(rule, 0, True) for rule in rules]
    assert_logged_once_each(d.log, rules)
    messages = {e[0]: e[3] for e in events(d.db)}
    assert messages["xid"] == "GPU 0 (NVIDIA GeForce RTX 4090): no new Xid for 1s (the last: Xid 79)"
    assert messages["gpu_lost"].startswith("GPU 0 (NVIDIA GeForce RTX 4090) reads again (lost for ")
    assert "Traceback" not in d.log


def test_ollama_stopped(fake_nvml, tmp_path, daemons):
    """Ollama not running while [ollama] is enabled (connections refused), then started."""
    port = free_port()
    (tmp_path / "gpm.toml").write_text("[alerts]\nfor_secs = 0.4\n" + QUIET)
    env = fast_env(fake_nvml, GPM_OLLAMA_ENABLED="true", GPM_OLLAMA_API_URL=f"http://127.0.0.1:{port}",
                   GPM_OLLAMA_POLL_INTERVAL_SECS="0.5", GPM_OLLAMA_TIMEOUT_SECS="1", GPM_CONFIG=tmp_path / "gpm.toml")
    d = daemons(tmp_path, env)
    wait_until(lambda: events(d.db), timeout=15, what="ollama_down firing")
    time.sleep(1.0)  # two more polls refused
    with FakeOllama(port=port):
        message = one_event_after_resolved(d, "ollama_down")
    assert message.startswith(f"Ollama at http://127.0.0.1:{port} is up again (down for ")
    assert re.search(rf"down for \ds: http://127.0.0.1:{port}/api/version: connection refused\n", d.log)


def test_the_sampler_stalled_in_a_hung_driver_call(fake_nvml, tmp_path, daemons):
    """A read that hangs (every NVML call 0.5 s): the stall watch fires while it hangs; the
    sample stored once the driver answers again resolves it."""
    (tmp_path / "gpm.toml").write_text('[[alerts.override]]\nrule = "sampler_stalled"\nfor_secs = 0\n')
    normal = Scenario(gpus=[make_gpu(0)])
    fake_nvml.set(normal)
    d = daemons(tmp_path, fast_env(fake_nvml, GPM_CONFIG=tmp_path / "gpm.toml"))
    d.wait_for(r"started sample")
    time.sleep(0.5)
    fake_nvml.set(Scenario(gpus=[replace(make_gpu(0), slow_ms=500)]))
    wait_until(lambda: events(d.db), timeout=15, what="sampler_stalled firing")
    fake_nvml.set(normal)
    message = one_event_after_resolved(d, "sampler_stalled")
    assert message.startswith("the sampler: a sample stored again at ")


def test_a_small_tmpfs_filling_up(fake_nvml, tmp_path, daemons):
    with small_tmpfs(tmp_path / "fs", "2m") as fs, small_tmpfs(tmp_path / "data", "64m") as data:
        archive = fs / "archive"
        (tmp_path / "gpm.toml").write_text(f'[alerts]\nfor_secs = 0.4\ndisk_free_threshold_percent = 50\n'
                                           f'[storage]\narchive_dir = "{archive}"\n' + QUIET)
        d = daemons(tmp_path, fast_env(fake_nvml, GPM_CONFIG=tmp_path / "gpm.toml"), db=data / "gpm.db")
        d.wait_for(r"started sample")
        st = os.statvfs(fs)
        filler = fs / "filler"
        filler.write_bytes(b"\0" * (int(st.f_blocks * 0.75) * st.f_frsize))
        wait_until(lambda: events(d.db), timeout=15, what="disk_free firing")
        filler.write_bytes(b"\0" * (int(st.f_blocks * 0.485) * st.f_frsize))  # 51.5 % free: still firing
        time.sleep(0.8)
        assert [e[2] for e in events(d.db)] == [False]
        filler.unlink()
        message = one_event_after_resolved(d, "disk_free")
    assert message.startswith(f"the archive folder {archive} back to 100% free (")
