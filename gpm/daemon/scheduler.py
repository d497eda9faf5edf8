"""Jobs on their own threads and their own schedules.

Each job gets one thread, so a slow archive or a hung HTTP client never
delays sampling, and a job never overlaps itself. Periodic jobs run on a
drift-free grid (start + k * interval, as ``gpm.repeat.ticks``); a run that
raises is logged and retried with exponential back-off while the other jobs
go on. Services (HTTP servers) run ``serve()`` in their thread and are
restarted the same way when they fail. A runner reads the time from its
``clock`` and waits through its ``wait`` (``gpm.repeat``'s), so a test can
run it on a fake clock and check the exact times of its runs.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from gpm import repeat
from gpm.daemon.logs import job_logger

MAX_BACKOFF_SECS = 300.0


@dataclass
class PeriodicJob:
    """``run()`` every ``interval_secs``; ``run`` may return the seconds until
    its next run instead (e.g. "no GPU yet, try again in 60 s")."""

    name: str
    run: Callable[[], float | None]
    interval_secs: float
    close: Callable[[], None] | None = None
    first_delay_secs: float = 0.0
    # Called (from another thread) when the daemon stops: cuts a long run short,
    # e.g. the archive job's child process (#12.12).
    interrupt: Callable[[], None] | None = None


@dataclass
class ServiceJob:
    """``serve()`` blocks until ``shutdown()`` (called from another thread)."""

    name: str
    serve: Callable[[], None]
    shutdown: Callable[[], None]
    close: Callable[[], None] | None = None


Job = PeriodicJob | ServiceJob


def held_service(name: str, open_: Callable[[], Callable[[], None]]) -> ServiceJob:
    """A service for things that serve in their own threads (HTTP servers,
    exporters): ``open_()`` starts one and returns how to stop it; the job's
    thread holds it until shutdown. A failing ``open_`` is retried with back-off."""
    stopped = threading.Event()

    def serve() -> None:
        stop = open_()
        try:
            stopped.wait()
        finally:
            stop()

    return ServiceJob(name, serve, stopped.set)


def backoff_secs(failures: int, interval_secs: float) -> float:
    """1st failure: one interval (at least 1 s), doubling up to 5 minutes."""
    base = max(interval_secs, 1.0)
    return min(base * 2 ** (failures - 1), max(MAX_BACKOFF_SECS, interval_secs))


@dataclass
class Runner:
    """Runs one job in its own thread until ``stop()``."""

    job: Job
    clock: Callable[[], float] = time.monotonic
    wait: repeat.Wait = repeat.wait
    on_run: Callable[["Runner"], None] | None = None  # called after every run
    log: logging.Logger = field(init=False)
    runs: int = 0
    failed_runs: int = 0
    failures: int = 0  # in a row
    last_error: str | None = None
    running_since: float | None = None  # monotonic start of the run in hand
    _thread: threading.Thread | None = field(default=None, repr=False)
    _wake: threading.Event = field(default_factory=threading.Event, repr=False)
    _stopping: bool = False
    _interval_changed: bool = False

    def __post_init__(self) -> None:
        self.log = job_logger(self.job.name)

    @property
    def name(self) -> str:
        return self.job.name

    def start(self) -> "Runner":
        target = self._periodic if isinstance(self.job, PeriodicJob) else self._service
        self._thread = threading.Thread(target=target, name=f"gpm-{self.name}", daemon=True)
        self._thread.start()
        return self

    def set_interval(self, seconds: float) -> None:
        """Apply a new interval now (the wait in progress is cut short)."""
        if isinstance(self.job, PeriodicJob) and seconds != self.job.interval_secs:
            self.job.interval_secs = seconds
            self._interval_changed = True
            self._wake.set()

    def stop(self) -> None:
        """Ask the job to stop; a run in progress finishes first, unless the job can interrupt it."""
        self._stopping = True
        self._wake.set()
        stop = self.job.shutdown if isinstance(self.job, ServiceJob) else self.job.interrupt
        if stop is not None:
            try:
                stop()
            except Exception:  # noqa: BLE001 - stopping must go on
                self.log.exception("shutdown failed")

    def join(self, timeout: float | None) -> bool:
        """Wait for the thread; True when it ended."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def close(self) -> None:
        if self.job.close is not None:
            try:
                self.job.close()
            except Exception:  # noqa: BLE001
                self.log.exception("close failed")

    def stuck_for(self) -> float:
        """Seconds the run in hand has taken so far (0 when idle)."""
        since = self.running_since
        return 0.0 if since is None else self.clock() - since

    def _sleep_until(self, due: float) -> bool:
        """Sleep until ``due`` or a wake-up; True when stopping."""
        while not self._stopping:
            remaining = due - self.clock()
            if remaining <= 0:
                return False
            if self.wait(self._wake, remaining):
                self._wake.clear()
                if self._interval_changed:
                    return False
        return True

    def _failed(self, err: BaseException, interval: float) -> float:
        self.failures += 1
        self.failed_runs += 1
        delay = backoff_secs(self.failures, interval)
        message = f"{type(err).__name__}: {err}"
        again = "" if message != self.last_error else " (again)"
        self.log.error("failed%s: %s; retrying in %g s (failure %d in a row)",
                       again, message, delay, self.failures,
                       exc_info=self.log.isEnabledFor(logging.DEBUG))
        self.last_error = message
        return delay

    def _succeeded(self) -> None:
        if self.failures:
            self.log.info("recovered after %d failure%s", self.failures, "s" if self.failures > 1 else "")
        self.failures = 0
        self.last_error = None

    def _periodic(self) -> None:
        job = self.job
        assert isinstance(job, PeriodicJob)
        anchor = self.clock() + job.first_delay_secs
        k = 0
        due = anchor
        while not self._sleep_until(due):
            if self._interval_changed:
                # re-anchor on the last run so the new interval counts from it
                self._interval_changed = False
                anchor = (self.clock() if self.running_since is None else self.running_since)
                k = 0
                due = anchor + job.interval_secs
                continue
            started = self.running_since = self.clock()
            try:
                next_in = job.run()
            except Exception as err:  # noqa: BLE001 - logged, retried, others go on
                anchor, k = started + self._failed(err, job.interval_secs), 0
                due = anchor
                continue
            finally:
                self.running_since = None
                self.runs += 1
                if self.on_run is not None:
                    self.on_run(self)
            self._succeeded()
            if next_in is not None:
                anchor, k = started + next_in, 0
                due = anchor
                continue
            now = self.clock()
            k += 1
            due = anchor + k * job.interval_secs
            if due <= now:  # overran: skip missed slots, a sample is a reading of "now"
                k = int((now - anchor) // job.interval_secs) + 1
                due = anchor + k * job.interval_secs

    def _service(self) -> None:
        job = self.job
        assert isinstance(job, ServiceJob)
        while not self._stopping:
            started = self.clock()
            try:
                job.serve()
            except Exception as err:  # noqa: BLE001
                delay = self._failed(err, 1.0)
            else:
                if self._stopping:
                    return
                delay = self._failed(RuntimeError("stopped serving unexpectedly"), 1.0)
            if self.clock() - started > MAX_BACKOFF_SECS:
                self.failures = 1  # it served for a good while: start the back-off afresh
            if self._sleep_until(self.clock() + delay):
                return
