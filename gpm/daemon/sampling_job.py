"""The daemon's sampling job: ``gpm sample`` in a loop, that waits out a
missing GPU backend and a faulty database instead of failing."""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass, field

from gpm.alerts.sampled import SampleAlerts
from gpm.daemon.job_context import JobContext
from gpm.daemon.logs import job_logger
from gpm.daemon.scheduler import PeriodicJob
from gpm.errors import GpmError, NoBackendError
from gpm.sampling import Sampler
from gpm.store.db import FollowedDb, database_error
from gpm.telemetry.state import collector_name


@dataclass
class SamplingJob:
    """``gpm sample`` in a loop: one ``Sampler`` (NVML kept open) for the job's life.

    With no GPU backend (driver not loaded yet at boot, or no GPU at all) it
    logs the reason once and tries again every ``[gpu] nvml_retry_secs``
    while the other jobs go on. A database that cannot take a sample (disk
    full, read-only, locked, corrupt) is logged once too, and sampling goes
    on at its interval, so storing resumes by itself at the first sample
    after the fault is gone (#12.1); a database deleted or replaced under
    it is followed (#12.5).
    """

    ctx: JobContext
    log: logging.Logger = field(default_factory=lambda: job_logger("sample"))
    sampler: Sampler | None = None
    db: FollowedDb | None = None
    no_gpu_reason: str | None = None
    store_problem: str | None = None
    read_error: str | None = None
    reported: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.db = FollowedDb(self.ctx.cfg.db_path, self.ctx.cfg["storage.busy_timeout_secs"])
        cfg = self.ctx.cfg
        self.sampler = Sampler(cfg, conn=self.db.conn, watch_xid=True, alert_sinks=self.ctx.shared.alert_sinks,
                               alerts=SampleAlerts.from_config(cfg, interval_secs=cfg["service.poll_interval_secs"]))

    def run(self) -> float | None:
        cfg = self.ctx.cfg
        sampler = self.sampler
        if sampler.reader is None:
            try:
                sampler.open()
            except NoBackendError as err:
                retry = cfg["gpu.nvml_retry_secs"]
                state = self.ctx.shared.metrics
                if state is not None:
                    state.forget_gpus()
                    state.publish_collector("nvml", False, 0.0, str(err))
                if str(err) != self.no_gpu_reason:
                    self.log.warning("%s; retrying every %g s", err, retry)
                    self.no_gpu_reason = str(err)
                    self.ctx.set_status("sample", f"waiting for a GPU ({err})")
                self.ctx.mark_ready()
                return retry
            if self.no_gpu_reason is not None:
                self.log.info("GPU backend available now")
            self.no_gpu_reason = None
        t0 = time.perf_counter()
        try:
            samples = sampler.sample(store=False)
        except NoBackendError as err:
            # The backend opened but this read failed (nvidia-smi hung, failed
            # or printed garbage): a GPU fault, said once and retried at the
            # poll interval, not a job failure backed off for minutes (#12.3).
            state = self.ctx.shared.metrics
            if state is not None:
                state.forget_gpus()
                state.publish_collector(collector_name(sampler.reader.source), False, 0.0, str(err))
            sampler.close()
            if str(err) != self.read_error:
                self.log.warning("GPUs not read: %s; retrying every %g s", err, cfg["service.poll_interval_secs"])
                self.read_error = str(err)
                self.ctx.set_status("sample", f"GPUs not read ({err})")
            self.ctx.mark_ready()
            return None
        except Exception:
            sampler.close()  # reopen the backend on the next try
            raise
        if self.read_error is not None:
            self.log.info("GPUs read again")
            self.read_error = None
        sampler.alerts.interval_secs = cfg["service.poll_interval_secs"]  # SIGHUP changes it in place
        if samples and self._store(samples):
            self.log.debug("stored %d GPU%s at ts_ms=%d", len(samples), "s" if len(samples) != 1 else "",
                           samples[0].ts_ms)
        state = self.ctx.shared.metrics
        if state is not None:
            state.publish_gpus(samples, source=sampler.reader.source, duration_seconds=time.perf_counter() - t0)
        self._report(samples, sampler.reader.source)
        self.ctx.mark_ready()
        return None

    def _store(self, samples) -> bool:
        """Store one sample; a database fault is logged once (not once per
        sample) and does not stop sampling. False: not stored."""
        try:
            moved = self.db.check()
            if moved is not None:
                self.log.warning("%s", moved)
                self.sampler.use(self.db.conn)
            self.sampler.store(samples)
        except (sqlite3.Error, OSError, GpmError) as err:
            problem = err if isinstance(err, GpmError) else database_error(self.db.path, err,
                                                                              busy_timeout=self.db.busy_timeout)
            if problem is None:
                raise  # not the database's state: a bug, for the runner to report
            if str(problem) != self.store_problem:
                self.log.error("samples not stored: %s; sampling goes on and storing resumes by itself",
                               problem)
                self.store_problem = str(problem)
            return False
        if self.store_problem is not None:
            self.log.info("storing samples again in %s", self.db.path)
            self.store_problem = None
        return True

    def _report(self, samples, source: str) -> None:
        known = set(self.reported)
        for s in samples:
            if known and s.index not in known:
                self.log.info("GPU %d (%s) is a new GPU: sampling it too", s.index, s.uuid or s.name or "?")
            if self.reported.get(s.index, "ok") != s.status:
                if s.ok:
                    self.log.info("GPU %d (%s) reads again", s.index, s.uuid or s.name or "?")
                else:
                    self.log.warning("GPU %d (%s) failed: %s", s.index, s.uuid or s.name or "?", s.status)
            self.reported[s.index] = s.status
        failed = sum(1 for s in samples if not s.ok)
        interval = self.ctx.cfg["service.poll_interval_secs"]
        text = f"sampling {len(samples)} GPU{'s' if len(samples) != 1 else ''} via {source} every {interval:g} s"
        text += f", {failed} failing" if failed else ""
        self.ctx.set_status("sample", text + (", NOT STORING (see the log)" if self.store_problem else ""))

    def close(self) -> None:
        self.sampler.close()
        self.db.close()


def sampling_job(ctx: JobContext) -> PeriodicJob:
    job = SamplingJob(ctx)
    return PeriodicJob("sample", job.run, ctx.cfg["service.poll_interval_secs"], close=job.close)
