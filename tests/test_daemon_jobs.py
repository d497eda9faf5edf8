"""The daemon's scheduler and job registry, in process: timing, back-off, reload."""

from __future__ import annotations

import logging
import time

from gpm.config import load_config
from gpm.daemon.core import Daemon
from gpm.daemon.jobs import JobContext, JobKind
from gpm.daemon.notify import Notifier
from gpm.daemon.scheduler import PeriodicJob, Runner, backoff_secs

BUILT: list[tuple[str, str]] = []  # (job, api_url) of every job tick_job built


def tick_job(ctx: JobContext) -> PeriodicJob:
    """A job registered like a feature's: enabled by [ollama] enabled."""
    BUILT.append(("tick", ctx.cfg["ollama.api_url"]))
    return PeriodicJob("tick", lambda: None, ctx.cfg["ollama.poll_interval_secs"])


def test_backoff_doubles_from_one_interval_up_to_five_minutes():
    assert [backoff_secs(n, 2.0) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert backoff_secs(1, 0.1) == 1.0
    assert backoff_secs(20, 2.0) == 300.0
    assert backoff_secs(3, 3600.0) == 3600.0


def test_a_slow_job_never_delays_another_and_a_failing_one_is_retried(caplog):
    caplog.set_level(logging.INFO)
    fast_times: list[float] = []
    slow_active = []
    overlaps = []
    calls = {"flaky": 0}

    def fast():
        fast_times.append(time.monotonic())

    def slow():
        slow_active.append(1)
        if len(slow_active) > 1:
            overlaps.append(1)
        time.sleep(0.5)
        slow_active.pop()

    def flaky():
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise OSError("disk full")

    runners = [Runner(PeriodicJob("fast", fast, 0.05)).start(),
               Runner(PeriodicJob("slow", slow, 0.05)).start(),
               Runner(PeriodicJob("flaky", flaky, 0.05)).start()]
    time.sleep(1.4)
    for r in runners:
        r.stop()
    assert all(r.join(2) for r in runners)
    gaps = [b - a for a, b in zip(fast_times, fast_times[1:])]
    assert len(fast_times) >= 15 and max(gaps) < 0.3, gaps  # the slow job takes 0.5 s
    assert not overlaps and 2 <= runners[1].runs <= 3
    assert calls["flaky"] >= 2  # retried after 1 s (back-off floor), then on schedule again
    messages = [r.getMessage() for r in caplog.records if r.name == "gpm.job.flaky"]
    assert messages[0] == "failed: OSError: disk full; retrying in 1 s (failure 1 in a row)"
    assert "recovered after 1 failure" in messages


def test_drift_free_grid_skips_missed_slots_instead_of_bursting():
    times: list[float] = []

    def run():
        times.append(time.monotonic())
        if len(times) == 2:
            time.sleep(0.35)  # overruns three slots

    r = Runner(PeriodicJob("grid", run, 0.1)).start()
    time.sleep(0.95)
    r.stop()
    r.join(1)
    start = times[0]
    offsets = [round((t - start) / 0.1, 1) for t in times]
    assert offsets[0] == 0.0 and round(offsets[1]) == 1
    assert round(offsets[2]) == 5  # next free slot after the overrun, no catch-up burst
    assert all(abs(o - round(o)) < 0.4 for o in offsets), offsets


def test_reload_starts_restarts_and_stops_jobs_by_their_config_flag(isolated_home):
    envs = iter([
        {},
        {"GPM_OLLAMA_ENABLED": "true"},
        {"GPM_OLLAMA_ENABLED": "true", "GPM_OLLAMA_POLL_INTERVAL_SECS": "1"},
        {"GPM_OLLAMA_ENABLED": "true", "GPM_OLLAMA_POLL_INTERVAL_SECS": "1",
         "GPM_OLLAMA_API_URL": "http://127.0.0.1:9"},
        {"GPM_OLLAMA_ENABLED": "false"},
    ])
    kinds = [JobKind("tick", "tests.test_daemon_jobs:tick_job", enabled_by="ollama.enabled",
                     interval_key="ollama.poll_interval_secs", restart_keys=("ollama.api_url",))]
    BUILT.clear()
    daemon = Daemon(lambda: load_config(env=next(envs)), kinds=kinds, notifier=Notifier(env={}))
    daemon.start()
    try:
        assert daemon.runners == {}  # off by default
        daemon.reload()
        first = daemon.runners["tick"]
        assert first.job.interval_secs == 5.0
        daemon.reload()
        assert daemon.runners["tick"] is first and first.job.interval_secs == 1.0  # in place
        daemon.reload()
        assert daemon.runners["tick"] is not first  # rebuilt for the new URL
        assert BUILT == [("tick", "http://127.0.0.1:11434"), ("tick", "http://127.0.0.1:9")]
        daemon.reload()
        assert daemon.runners == {}
        assert not first._thread.is_alive()
    finally:
        daemon.stop()
