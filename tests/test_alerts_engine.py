"""The alert state machine (gpm.alerts.engine) on a real database, with an injected clock.

Every time is a ``now_ms`` the test gives (the samples' time in real use),
so for_secs, hysteresis and the cron gap are asserted to the millisecond.
"""

from __future__ import annotations

import logging

import pytest

from gpm.alerts.conditions import (
    disk_observations, gpu_observations, stall_observations, typical_gap_secs, xid_observations,
)
from gpm.alerts.engine import AlertEngine, Observation
from gpm.alerts.sinks import log_event, tell
from gpm.alerts.event import AlertEvent
from gpm.alerts.sampled import SampleAlerts
from gpm.config import load_config
from gpm.gpu.sample import GpuSample
from gpm.store.alerts import list_events, load_states
from gpm.store.db import open_db, write
from gpm.store.samples import GpuIds, save_in_transaction, save_samples

HOST = "box"
S = 1000  # ms


@pytest.fixture
def conn(tmp_path):
    c = open_db(tmp_path / "gpm.db")
    yield c
    c.close()


def config(tmp_path, text: str = ""):
    path = tmp_path / "gpm.toml"
    path.write_text(text)
    return load_config(path, env={})


class Clocked:
    """An engine stepped at given times: ``step(t_secs, value)`` -> the events of that step."""

    def __init__(self, conn, engine: AlertEngine, rule: str = "temperature", key: str = "GPU-a",
                 what: str = "GPU 0 (NVIDIA GeForce RTX 4090)") -> None:
        self.conn, self.engine, self.rule, self.key, self.what = conn, engine, rule, key, what

    def step(self, t: float, value: float | None) -> list[AlertEvent]:
        with write(self.conn):
            return self.engine.evaluate(self.conn, HOST, [Observation(
                self.rule, self.key, value, self.what, gpu_index=0, gpu_uuid=self.key)], round(t * S))


def test_a_value_hovering_at_the_threshold_fires_once_and_resolves_once(conn, tmp_path):
    """85 °C, margin 5: once firing, anything above 80 keeps it; only 80 or less resolves it."""
    clock = Clocked(conn, AlertEngine.from_config(config(tmp_path)))
    seen = []
    for t, value in [(0, 70), (10, 91), (40, 93), (69, 90), (70, 88)]:
        seen += [(t, e.state) for e in clock.step(t, value)]
    assert seen == [(70, "firing")]  # 91 from t=10, held the default 60 s
    for i in range(40):  # oscillating between threshold - margin and threshold, and across it
        seen += [(100 + i, e.state) for e in clock.step(100 + i, [81, 86, 84, 85.5, 80.5][i % 5])]
    assert seen == [(70, "firing")]
    seen += [(200, e.state) for e in clock.step(200, 80)]  # not below 80: still firing
    seen += [(201, e.state) for e in clock.step(201, 79)]
    for i in range(40):  # below the threshold again, never 60 s above it: nothing
        seen += [(300 + i, e.state) for e in clock.step(300 + i, [81, 86, 84][i % 3])]
    assert seen == [(70, "firing"), (201, "resolved")]
    [event] = list_events(conn)
    assert (event.rule, event.host, event.gpu_index, event.gpu_uuid, event.severity) == \
        ("temperature", HOST, 0, "GPU-a", "warning")
    assert (event.started_ms, event.resolved_ms, event.value, event.peak) == (10 * S, 201 * S, 79.0, 93.0)
    assert event.message == "GPU 0 (NVIDIA GeForce RTX 4090) back to 79 °C, below 80 °C (peak 93 °C, 3m 11s)"
    assert load_states(conn, HOST, ["temperature"]) == {}


def test_the_firing_message_is_one_readable_line(conn, tmp_path):
    clock = Clocked(conn, AlertEngine.from_config(config(tmp_path)))
    clock.step(0, 91)
    [event] = clock.step(60, 91)
    assert event.message == "GPU 0 (NVIDIA GeForce RTX 4090) at 91 °C, above 85 °C for 1m"
    assert event.to_json()["state"] == "firing" and event.id == list_events(conn)[0].id


def test_a_condition_that_lapses_while_pending_starts_its_wait_again(conn, tmp_path):
    clock = Clocked(conn, AlertEngine.from_config(config(tmp_path)))
    assert clock.step(0, 90) == [] and clock.step(50, 84) == []  # false before for_secs: forgotten
    assert clock.step(60, 90) == [] and clock.step(110, 90) == []
    [event] = clock.step(120, 90)
    assert event.started_ms == 60 * S


def test_a_missing_value_changes_nothing(conn, tmp_path):
    clock = Clocked(conn, AlertEngine.from_config(config(tmp_path, "[alerts]\nfor_secs = 0\n")))
    assert [e.state for e in clock.step(0, 95)] == ["firing"]
    assert clock.step(10, None) == []  # a GPU that failed to read has no temperature
    assert list_events(conn)[0].resolved_ms is None
    assert [e.state for e in clock.step(20, 60)] == ["resolved"]


def test_overrides_change_one_rule_and_disabled_means_nothing(conn, tmp_path):
    cfg = config(tmp_path, '[alerts]\nfor_secs = 600\n[[alerts.override]]\nrule = "memory"\nfor_secs = 5\n'
                           'margin = 1\nseverity = "critical"\n[[alerts.override]]\nrule = "power"\nenabled = false\n')
    engine = AlertEngine.from_config(cfg)
    memory = Clocked(conn, engine, rule="memory")
    assert memory.step(0, 99) == []
    [fired] = memory.step(5, 99)
    assert fired.severity == "critical"
    assert memory.step(6, 94) == []  # below 95 - 1 is where it resolves
    assert [e.state for e in memory.step(7, 93.9)] == ["resolved"]
    temperature = Clocked(conn, engine)
    assert temperature.step(0, 99) == [] and temperature.step(599, 99) == []
    power = Clocked(conn, engine, rule="power")
    assert power.step(0, 150) == [] and power.step(10_000, 150) == []
    off = Clocked(conn, AlertEngine.from_config(config(tmp_path, "[alerts]\nenabled = false\nfor_secs = 0\n")))
    assert off.step(0, 150) == [] and off.step(10_000, 150) == []
    assert [e.rule for e in list_events(conn)] == ["memory"]
    assert set(load_states(conn, HOST, ["temperature", "power"])) == {("temperature", "GPU-a")}


def test_disk_free_fires_below_and_resolves_above_threshold_plus_margin(conn, tmp_path):
    clock = Clocked(conn, AlertEngine.from_config(config(tmp_path, "[alerts]\nfor_secs = 0\n")),
                    rule="disk_free", key="/data", what="the data folder /data")
    assert clock.step(0, 6) == []
    [fired] = clock.step(1, 4)
    assert clock.step(2, 1.5) == [] and clock.step(3, 7) == []  # above 5 % + 2 margin resolves
    [resolved] = clock.step(4, 7.1)
    assert (fired.state, resolved.state, resolved.peak) == ("firing", "resolved", 1.5)


def test_a_yes_no_rule_fires_on_true_and_resolves_on_false(conn, tmp_path):
    clock = Clocked(conn, AlertEngine.from_config(config(tmp_path)), rule="gpu_lost")
    assert clock.step(0, 1) == [] and clock.step(30, 1) == []
    assert [e.state for e in clock.step(60, 1)] == ["firing"]
    assert [e.state for e in clock.step(61, 0)] == ["resolved"]
    assert list_events(conn)[0].severity == "critical"


def test_gpu_observations_read_each_rule_from_a_sample(tmp_path):
    ok = GpuSample(1, 0, "nvml", uuid="GPU-a", name="NVIDIA A100\x1b[31m", temperature_celsius=70,
                   memory_used_bytes=3, memory_total_bytes=4, power_watts=300.0, power_limit_watts=400.0,
                   throttle_reasons=0x1 | 0x40, ecc_uncorrected_errors=2)
    lost = GpuSample(1, 1, "nvml", status="gpu_is_lost")
    got = {(o.rule, o.key): (o.value, o.detail) for o in gpu_observations([ok, lost], ["hw_thermal_slowdown"])}
    assert got == {
        ("gpu_lost", "GPU-a"): (0.0, "reads again"), ("temperature", "GPU-a"): (70, ""), ("memory", "GPU-a"): (75.0, ""),
        ("power", "GPU-a"): (75.0, ""), ("throttle", "GPU-a"): (0x40, "hw_thermal_slowdown"),
        ("ecc", "GPU-a"): (2, ""), ("gpu_lost", "index:1"): (1.0, "gpu_is_lost"),
    }
    assert gpu_observations([ok], [])[0].what == "GPU 0 (NVIDIA A100\\x1b[31m)"


def test_a_stall_seen_only_at_the_next_sample_fires_and_resolves_at_once(conn, tmp_path):
    engine = AlertEngine.from_config(config(tmp_path))  # for_secs 60
    events = []
    with write(conn):
        for o in stall_observations(0, 200 * S, 60, 3, stored=True):  # 200 s: within 3 x 60 + 60
            events += engine.evaluate(conn, HOST, [o], 200 * S)
    assert events == [] and load_states(conn, HOST, ["sampler_stalled"]) == {}
    with write(conn):
        for o in stall_observations(0, 600 * S, 60, 3, stored=True):
            events += engine.evaluate(conn, HOST, [o], 600 * S)
    assert [e.state for e in events] == ["firing", "resolved"]
    [event] = list_events(conn)
    assert (event.started_ms, event.resolved_ms, event.peak) == (180 * S, 600 * S, 10.0)
    assert event.message == "the sampler: a sample stored again at 1970-01-01T00:10:00Z after 10m"


def test_cron_s_interval_is_the_typical_gap_of_what_it_stored(conn):
    for t in (0, 60, 121, 180, 240):
        save_samples(conn, HOST, [GpuSample(t * S, 0, "nvml", uuid="GPU-a")])
    save_samples(conn, "other", [GpuSample(250 * S, 0, "nvml", uuid="GPU-b")])
    assert typical_gap_secs(conn, HOST, 240 * S) == 60.0
    assert typical_gap_secs(conn, HOST, 121 * S) is None  # two gaps are not enough to tell


def test_an_xid_fires_at_once_and_resolves_for_secs_after_the_last(conn, tmp_path):
    engine = AlertEngine.from_config(config(tmp_path, "[alerts]\nfor_secs = 10\n"))
    memory: dict = {}
    states = []

    def step(t, xids=()):
        s = GpuSample(t * S, 0, "nvml", uuid="GPU-a", name="T4", xid_errors=list(xids))
        with write(conn):
            states.extend((t, e.state) for e in engine.evaluate(
                conn, HOST, xid_observations([s], memory, t * S, 10), t * S))

    step(0), step(1, [79]), step(5), step(8, [48]), step(17), step(18), step(19)
    assert states == [(1, "firing"), (19, "resolved")]  # 8 + 10 s
    [event] = list_events(conn)
    assert event.message == "GPU 0 (T4): no new Xid for 10s (the last: Xid 48)"


def test_disk_observations_name_one_folder_per_file_system(tmp_path):
    (tmp_path / "a").mkdir()
    [obs] = disk_observations([("data folder", tmp_path / "a"), ("archive folder", tmp_path / "not-yet")])
    assert (obs.rule, obs.key, obs.subject) == ("disk_free", str(tmp_path / "a"), str(tmp_path / "a"))
    assert 0 <= obs.value <= 100


def test_a_failing_sink_does_not_silence_the_others(caplog):
    heard = []

    def broken(event):
        raise RuntimeError("no bus")

    event = AlertEvent("gpu_lost", HOST, "critical", 0, "GPU 0 lost (gpu_is_lost) for 1m")
    with caplog.at_level(logging.INFO, logger="gpm.alerts"):
        tell([broken, heard.append, log_event], [event])
    assert heard == [event]
    assert "critical alert gpu_lost: GPU 0 lost (gpu_is_lost) for 1m" in caplog.text


def test_the_sampler_s_evaluation_rolls_back_with_its_sample(conn, tmp_path):
    """State and events are written in the sample's transaction: nothing stays of a sample that failed."""
    alerts = SampleAlerts.from_config(config(tmp_path, "[alerts]\nfor_secs = 0\n"))
    with pytest.raises(RuntimeError):
        with write(conn):
            alerts.evaluate(conn, HOST, [GpuSample(S, 0, "nvml", uuid="GPU-a", temperature_celsius=99)], None)
            raise RuntimeError("disk full")
    assert list_events(conn) == [] and load_states(conn, HOST, ["temperature"]) == {}


def test_a_host_silent_for_more_than_a_day_was_off_not_stalled(conn, tmp_path):
    engine = AlertEngine.from_config(config(tmp_path, "[alerts]\nfor_secs = 0\n"))
    day = 86400 * S
    with write(conn):
        events = [e for o in stall_observations(0, day + S, 60, 3, stored=True)
                  for e in engine.evaluate(conn, HOST, [o], day + S)]
    assert events == [] and list_events(conn) == []


def test_a_gpu_gone_from_the_list_fires_and_resolves_as_removed_a_day_later(conn, tmp_path):
    alerts = SampleAlerts.from_config(config(tmp_path, "[alerts]\nfor_secs = 0\n"), interval_secs=60)
    a, b = (GpuSample(0, i, "nvml", uuid=f"GPU-{x}", name="T4") for i, x in enumerate("ab"))
    seen = []

    def step(t, *gpus):
        ids = GpuIds()
        with ids.transaction(conn):
            previous = alerts.before_store(conn, HOST)
            for g in gpus:
                g.ts_ms = t
            save_in_transaction(conn, HOST, gpus, ids)
            seen.extend((t, e.gpu_uuid, e.state, e.message) for e in alerts.evaluate(conn, HOST, list(gpus), previous))

    step(0, a, b)
    step(60 * S, a)
    step(120 * S, a)
    step(86400 * S + 60 * S, a)
    assert seen == [(60 * S, "GPU-b", "firing", "GPU 1 (T4) lost (missing from the driver's list) for 0s"),
                    (86460 * S, "GPU-b", "resolved", "GPU 1 (T4) taken as removed (lost for 24h 00m)")]
    alerts = SampleAlerts.from_config(config(tmp_path, "[alerts]\nfor_secs = 0\n"))
    step(3 * 86400 * S, b)  # back after two days away: the two were swapped meanwhile, nothing is said
    assert len(seen) == 2
