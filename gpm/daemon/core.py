"""The daemon's life: start the jobs, reload on SIGHUP, stop on SIGTERM/SIGINT.

The main thread only waits: for a signal, for a job's news (ready, status)
or for the next systemd watchdog ping. Everything that does work runs in the
jobs' threads (``gpm.daemon.scheduler``), so a signal is handled at once even
while a job is busy.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Callable

from gpm import __version__
from gpm.alerts.dispatch import Dispatcher
from gpm.alerts.sinks import default_sinks
from gpm.config import Config
from gpm.daemon.job_context import JobContext, Shared
from gpm.daemon.jobs import JOB_KINDS, JobKind
from gpm.daemon.notify import Notifier
from gpm.daemon.scheduler import Runner
from gpm.errors import GpmError
from gpm.repeat import set_from_signal_handler

log = logging.getLogger("gpm.daemon")

STOP_BUDGET_SECS = 1.5  # SIGTERM to exit within 2 s, interpreter shutdown included
RESTART_WAIT_SECS = 5.0
# What a stopping daemon gives its last notifications: it must still exit within 2 s of SIGTERM.
ALERT_CLOSE_SECS = 0.4


class Daemon:
    """Runs the enabled ``JOB_KINDS`` until stopped; ``run()`` returns the exit code.

    ``load`` returns a fresh configuration: called at start and on every
    SIGHUP. ``on_config`` is called with each configuration applied (the CLI
    uses it to change log level and format).
    """

    def __init__(self, load: Callable[[], Config], *, kinds: list[JobKind] | None = None,
                 notifier: Notifier | None = None,
                 on_config: Callable[[Config], None] | None = None) -> None:
        self.load = load
        self.kinds = JOB_KINDS if kinds is None else kinds
        self.notifier = notifier or Notifier()
        self.on_config = on_config
        self.cfg: Config | None = None
        self.runners: dict[str, Runner] = {}
        self.contexts: dict[str, JobContext] = {}
        self.statuses: dict[str, str] = {}
        self.shared = Shared()  # JobContext.shared
        self._wake = threading.Event()
        self._stop_signal: int | None = None
        self._reload_requested = False
        self._ready = False
        self._ready_sent = False
        self._lock = threading.Lock()

    # --- signals -------------------------------------------------------
    # Handlers never call self._wake.set() themselves: see set_from_signal_handler.
    def _on_stop(self, signum, _frame) -> None:
        self._stop_signal = signum
        set_from_signal_handler(self._wake)

    def _on_hup(self, _signum, _frame) -> None:
        self._reload_requested = True
        set_from_signal_handler(self._wake)

    def _install_signals(self) -> dict:
        previous = {}
        for sig, handler in ((signal.SIGTERM, self._on_stop), (signal.SIGINT, self._on_stop),
                             (signal.SIGHUP, self._on_hup)):
            previous[sig] = signal.signal(sig, handler)
        return previous

    # --- job news, called from the jobs' threads --------------------------
    def _set_status(self, job: str, text: str) -> None:
        with self._lock:
            self.statuses[job] = text
        self._wake.set()

    def _mark_ready(self) -> None:
        if not self._ready:
            self._ready = True
            self._wake.set()

    def status_line(self) -> str:
        with self._lock:
            return "; ".join(self.statuses[k] for k in sorted(self.statuses, key=lambda n: n != "sample"))

    # --- jobs -----------------------------------------------------------
    def _start_job(self, kind: JobKind, cfg: Config) -> None:
        ctx = JobContext(cfg, self._set_status, self._mark_ready, self.shared)
        job = kind.build(ctx)
        runner = Runner(job).start()
        self.runners[kind.name] = runner
        self.contexts[kind.name] = ctx
        interval = getattr(job, "interval_secs", None)
        log.info("started %s%s", kind.name, f" (every {interval:g} s)" if interval else "")

    def _stop_job(self, name: str, wait: float) -> None:
        runner = self.runners.pop(name)
        self.contexts.pop(name, None)
        with self._lock:
            self.statuses.pop(name, None)
        runner.stop()
        if runner.join(wait):
            runner.close()
        else:
            log.warning("%s did not stop within %g s; leaving its thread behind", name, wait)

    def start(self) -> None:
        """Load the configuration and start every enabled job.

        A factory that fails here (the database cannot be opened, ...) is fatal:
        better to fail at once under systemd than to run half-configured.
        """
        cfg = self.load()
        self.cfg = cfg
        if self.on_config:
            self.on_config(cfg)
        log.info("gpm %s daemon starting (pid %d), database %s", __version__, os.getpid(), cfg.db_path)
        self._notify_with(cfg)
        for kind in self.kinds:
            if kind.enabled(cfg):
                self._start_job(kind, cfg)

    def reload(self) -> None:
        """SIGHUP: apply a new configuration, or keep the old one if it is bad."""
        assert self.cfg is not None
        self.notifier.reloading()
        try:
            new = self.load()
        except GpmError as err:
            log.error("configuration not reloaded, keeping the previous one: %s", err)
            self.notifier.ready(self.status_line() or "running")
            return
        old = self.cfg
        changed = sorted(k for k in new.values if old.values.get(k) != new.values[k])
        if self.on_config:
            self.on_config(new)
        for kind in self.kinds:
            try:
                self._apply(kind, old, new)
            except GpmError as err:
                log.error("%s: not reconfigured: %s", kind.name, err)
            except Exception as err:  # noqa: BLE001 - one job's trouble must not stop the reload
                log.error("%s: not reconfigured: %s: %s", kind.name, type(err).__name__, err)
        if any(k.startswith("alerts.") for k in changed):
            self._notify_with(new)
        self.cfg = new
        log.info("configuration reloaded: %s", ", ".join(changed) if changed else "nothing changed")
        self.notifier.ready(self.status_line() or "running")

    def _apply(self, kind: JobKind, old: Config, new: Config) -> None:
        runner = self.runners.get(kind.name)
        wanted = kind.enabled(new)
        if runner is None:
            if wanted:
                self._start_job(kind, new)
            return
        if not wanted:
            self._stop_job(kind.name, RESTART_WAIT_SECS)
            log.info("stopped %s (%s is off)", kind.name, kind.enabled_by)
            return
        restart = kind.changed_keys(old, new)
        if restart:
            # Build the new job first: if that fails, the old one keeps running.
            ctx = JobContext(new, self._set_status, self._mark_ready, self.shared)
            job = kind.build(ctx)
            self._stop_job(kind.name, RESTART_WAIT_SECS)
            self.runners[kind.name] = Runner(job).start()
            self.contexts[kind.name] = ctx
            log.info("restarted %s (%s changed)", kind.name, ", ".join(restart))
            return
        self.contexts[kind.name].cfg = new
        if kind.interval_key and old[kind.interval_key] != new[kind.interval_key]:
            runner.set_interval(new[kind.interval_key])
            log.info("%s now every %g s", kind.name, new[kind.interval_key])

    def stop(self) -> None:
        self.notifier.stopping()
        deadline = time.monotonic() + STOP_BUDGET_SECS
        runners = list(self.runners.items())
        for _name, runner in runners:
            runner.stop()
        for name, runner in runners:
            if runner.join(max(0.0, deadline - time.monotonic())):
                runner.close()
                log.info("stopped %s after %d runs (%d failed)", name, runner.runs, runner.failed_runs)
            else:
                log.warning("%s still busy at exit; its transaction, if any, is rolled back", name)
        self.runners.clear()
        self._notify_with(None)
        self.notifier.close()

    def _notify_with(self, cfg: Config | None) -> None:
        """Alert events go to a Dispatcher of ``cfg``'s channels; the previous one
        sends what it holds first (bounded). Every job shares the one sink list."""
        old = [s for s in self.shared.alert_sinks if isinstance(s, Dispatcher)]
        self.shared.alert_sinks[:] = [Dispatcher(cfg)] if cfg is not None else default_sinks()
        for dispatcher in old:
            dispatcher.close(ALERT_CLOSE_SECS)

    # --- main loop ------------------------------------------------------------
    def _watchdog_ok(self) -> bool:
        """Ping only while sampling is not stuck in one run."""
        runner = self.runners.get("sample")
        limit = self.notifier.watchdog_secs or 0
        return runner is None or runner.stuck_for() < limit

    def run(self) -> int:
        previous = self._install_signals()
        try:
            try:
                self.start()
            except BaseException:
                self.stop()
                raise
            watchdog = self.notifier.watchdog_secs
            period = watchdog / 2 if watchdog else None
            next_ping = time.monotonic()
            while self._stop_signal is None:
                if period is not None and time.monotonic() >= next_ping:
                    if self._watchdog_ok():
                        self.notifier.watchdog()
                    next_ping = time.monotonic() + period
                self._wake.wait(None if period is None else max(0.0, next_ping - time.monotonic()))
                self._wake.clear()
                if self._stop_signal is not None:
                    break
                if self._reload_requested:
                    self._reload_requested = False
                    self.reload()
                if self._ready and not self._ready_sent:
                    self._ready_sent = True
                    self.notifier.ready(self.status_line() or "running")
                    log.info("ready: %s", self.status_line())
                elif self._ready_sent:
                    self.notifier.status(self.status_line())
            log.info("stopping (%s)", signal.Signals(self._stop_signal).name)
            self.stop()
            return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
