"""The daemon's archive job: ``gpm archive`` as a child process, ended with the daemon."""

from __future__ import annotations

import logging
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from gpm.daemon.job_context import JobContext
from gpm.daemon.logs import job_logger
from gpm.daemon.scheduler import PeriodicJob
from gpm.errors import EXIT_FAILURE, EXIT_LOCKED, GpmError
from gpm.store.db import connect

ARCHIVE_FIRST_DELAY_SECS = 10.0  # let sampling settle, then archive what a restart left behind
ARCHIVE_STOP_WAIT_SECS = 1.0  # SIGTERM to SIGKILL for the archive child, inside the daemon's STOP_BUDGET_SECS


@dataclass
class ArchiveJob:
    """``gpm archive`` every [storage] archive_interval_secs, as a child process.

    A child, not a call of ``gpm.archiving.archive`` in a thread: archiving
    imports Polars (~40 MB that would stay in the daemon for good, against its
    60 MB budget) and the child gives it all back when it exits. It is the
    very command cron runs, under the same per-database lock (``--wait 0``: when
    a cron run holds it, this round is skipped).

    The daemon's stop ends the child (SIGTERM, then SIGKILL after
    ``ARCHIVE_STOP_WAIT_SECS``; it starts no process of its own): left alone it
    went on archiving after the daemon had exited (#12.12). Stopping it
    anywhere is safe, the archive is crash-safe; what it had committed is read
    back from the manifest, and the log says that, not a guess.
    """

    ctx: JobContext
    log: logging.Logger = field(default_factory=lambda: job_logger("archive"))
    proc: subprocess.Popen | None = None
    stopping: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def argv(self) -> list[str]:
        cfg = self.ctx.cfg
        argv = [sys.executable, "-m", "gpm", "--db", str(cfg.db_path)]
        if cfg.config_file_found and cfg.config_path is not None:
            argv += ["--config", str(cfg.config_path)]
        return argv + ["archive", "--wait", "0"]

    def run(self) -> None:
        last_file = self._manifest(0)[2]
        with self._lock:
            if self.stopping:
                return
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
        try:
            _out, err = self.proc.communicate()
        finally:
            with self._lock:
                proc, self.proc = self.proc, None
        lines = [line.removeprefix("gpm: ") for line in err.splitlines()]
        if self.stopping and proc.returncode in (0, -signal.SIGTERM, -signal.SIGKILL):
            self._log_stopped(proc.returncode, last_file)
            return
        self.log.debug("`gpm archive` exited %d", proc.returncode)  # silent on success, like under cron
        if proc.returncode == EXIT_LOCKED:
            self.log.info("skipped this round: %s", "; ".join(lines) or "another `gpm archive` holds the lock")
            return
        for line in lines:
            self.log.warning("%s", line)
        if proc.returncode not in (0, EXIT_FAILURE):  # 1: problems, reported above; the rest was archived
            raise GpmError(f"`gpm archive` exited {proc.returncode}")

    def interrupt(self) -> None:
        """The daemon stops: end the run in progress, within ``ARCHIVE_STOP_WAIT_SECS``."""
        with self._lock:
            self.stopping = True
            proc = self.proc
        if proc is None:
            return
        proc.terminate()
        deadline = time.monotonic() + ARCHIVE_STOP_WAIT_SECS
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            proc.kill()

    def _manifest(self, after_id: int) -> tuple[int, int, int]:
        """(part files, rows, last id) of the manifest entries after ``after_id``."""
        try:
            conn = connect(self.ctx.cfg.db_path, readonly=True)
        except GpmError:  # no database yet
            return 0, 0, 0
        try:
            return conn.execute("SELECT COUNT(*), COALESCE(SUM(row_count), 0), COALESCE(MAX(id), ?) "
                                "FROM archive_files WHERE id > ?", (after_id, after_id)).fetchone()
        except sqlite3.Error:  # not migrated yet: the child migrates it
            return 0, 0, after_id
        finally:
            conn.close()

    def _log_stopped(self, returncode: int, last_file: int) -> None:
        try:
            files, rows, _ = self._manifest(last_file)
        except sqlite3.Error as err:
            self.log.warning("`gpm archive` stopped with the daemon; what it committed is unknown (%s)", err)
            return
        done = f"{files} part file{'s' if files != 1 else ''} ({rows} rows) committed this run"
        if returncode == 0:
            self.log.info("`gpm archive` finished as the daemon stopped: %s", done)
        else:
            self.log.info("`gpm archive` stopped with the daemon: %s; the rest stays in the database "
                          "for the next run", done)


def archive_job(ctx: JobContext) -> PeriodicJob:
    job = ArchiveJob(ctx)
    return PeriodicJob("archive", job.run, ctx.cfg["storage.archive_interval_secs"],
                       first_delay_secs=ARCHIVE_FIRST_DELAY_SECS, interrupt=job.interrupt)
