"""The daemon's scheduler and job registry, in process: timing (on a fake clock), back-off, reload."""

from __future__ import annotations

import logging
import threading

from gpm.config import load_config
from gpm.daemon.core import Daemon
from gpm.daemon.job_context import JobContext
from gpm.daemon.jobs import JobKind
from gpm.daemon.notify import Notifier
from gpm.daemon.scheduler import PeriodicJob, Runner, backoff_secs
from tests.fakes.clock import FakeClock

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


def run_until_parked(runner: Runner, clock: FakeClock) -> Runner:
    """Start ``runner`` on ``clock`` and return once it waits at ``clock.until``."""
    runner.clock, runner.wait = clock, clock.wait
    runner.start()
    assert clock.parked.wait(5), f"{runner.name} never reached t={clock.until}"
    return runner


def stopped(*runners: Runner) -> bool:
    for r in runners:
        r.stop()
    return all(r.join(5) for r in runners)


def grid(interval: float, first: float, last: float) -> list[float]:
    return [first + k * interval for k in range(int((last - first) / interval) + 1)]


def test_a_slow_job_never_delays_another():
    release, in_slow_run = threading.Event(), threading.Event()
    fast_clock, fast_times = FakeClock(until=5.0), []
    slow_runs = []

    def slow():
        slow_runs.append(1)
        in_slow_run.set()
        release.wait(10)  # hangs until the other job has run its whole schedule

    slow_runner = Runner(PeriodicJob("slow", slow, 0.25)).start()
    fast = Runner(PeriodicJob("fast", lambda: fast_times.append(fast_clock()), 0.25))
    try:
        assert in_slow_run.wait(5)
        run_until_parked(fast, fast_clock)
        assert fast_times == grid(0.25, 0.0, 5.0)  # 21 runs, each on its slot
        assert fast.runs == 21 and slow_runner.runs == 0 and slow_runs == [1]  # still in its first run
    finally:
        release.set()
        assert stopped(slow_runner, fast)
    assert slow_runner.runs == 1


def test_a_failing_run_is_retried_after_back_off_then_on_schedule_again(caplog):
    caplog.set_level(logging.INFO)
    clock, times = FakeClock(until=3.0), []

    def flaky():
        times.append(clock())
        if len(times) == 1:
            raise OSError("disk full")

    r = run_until_parked(Runner(PeriodicJob("flaky", flaky, 0.5)), clock)
    assert stopped(r)
    assert times == [0.0] + grid(0.5, 1.0, 3.0)  # retried after 1 s (the back-off floor), then every 0.5 s
    assert (r.runs, r.failed_runs, r.failures, r.last_error) == (6, 1, 0, None)
    messages = [rec.getMessage() for rec in caplog.records if rec.name == "gpm.job.flaky"]
    assert messages == ["failed: OSError: disk full; retrying in 1 s (failure 1 in a row)",
                        "recovered after 1 failure"]


def test_back_off_doubles_while_a_run_keeps_failing():
    clock, times = FakeClock(until=20.0), []

    def failing():
        times.append(clock())
        raise OSError("no space left on device")

    r = run_until_parked(Runner(PeriodicJob("failing", failing, 2.0)), clock)
    assert stopped(r)
    assert times == [0.0, 2.0, 6.0, 14.0]  # waits 2, 4, 8 s; the next would be 16 s later
    assert (r.runs, r.failed_runs, r.failures) == (4, 4, 4)


def test_drift_free_grid_skips_missed_slots_instead_of_bursting():
    clock, times = FakeClock(until=2.0), []

    def run():
        times.append(clock())
        if len(times) == 2:
            clock.advance(0.625)  # runs from 0.25 to 0.875: overruns the slots at 0.5 and 0.75

    r = run_until_parked(Runner(PeriodicJob("grid", run, 0.25)), clock)
    assert stopped(r)
    assert times == [0.0, 0.25] + grid(0.25, 1.0, 2.0)  # next free slot after the overrun, no catch-up burst


def test_first_delay_and_a_run_that_asks_for_its_next_time():
    clock, times = FakeClock(until=4.0), []

    def run():
        times.append(clock())
        return 2.0 if len(times) == 1 else None  # "no GPU yet, try again in 2 s"

    r = run_until_parked(Runner(PeriodicJob("later", run, 0.5, first_delay_secs=1.0)), clock)
    assert stopped(r)
    assert times == [1.0] + grid(0.5, 3.0, 4.0)  # the grid restarts from the asked time


def test_a_new_interval_counts_from_the_last_run():
    clock, times = FakeClock(until=3.0), []
    r = run_until_parked(Runner(PeriodicJob("tick", lambda: times.append(clock()), 1.0)), clock)
    try:
        assert times == [0.0, 1.0, 2.0, 3.0]
        clock.parked.clear()
        clock.until = 4.0
        r.set_interval(0.25)
        assert clock.parked.wait(5)
    finally:
        assert stopped(r)
    assert times == [0.0, 1.0, 2.0, 3.0, 3.25, 3.5, 3.75, 4.0]
    assert r.job.interval_secs == 0.25


def test_reload_starts_restarts_and_stops_jobs_by_their_config_flag(isolated_home):
    envs = iter([
        {},
        {"GPM_OLLAMA_ENABLED": "true"},
        {"GPM_OLLAMA_ENABLED": "true", "GPM_OLLAMA_POLL_INTERVAL_SECS": "1"},
        {"GPM_OLLAMA_ENABLED": "true", "GPM_OLLAMA_POLL_INTERVAL_SECS": "1",
         "GPM_OLLAMA_API_URL": "http://127.0.0.1:9"},
        {"GPM_OLLAMA_ENABLED": "false"},
    ])
    kinds = [JobKind("tick", tick_job, enabled_by="ollama.enabled",
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
