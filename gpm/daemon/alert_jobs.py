"""The daemon's alert checks that are not made of a sample (#15).

``stall_watch_job`` notices a sampler that stopped storing (a hung driver
call, a locked database, a GPU gone with its driver): each poll interval it
looks at when this host last stored a sample, in its own thread, so a stuck
sampling job cannot hide its own stall. The time before the daemon started
does not count, nor a host that never stored a sample. The next stored
sample resolves the alert (gpm.sampling).

``ollama_alerts`` is the Ollama watcher's callback: each poll's up or down
is the ``ollama_down`` rule's value.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Callable

from gpm.alerts.conditions import ollama_observation, stall_observations
from gpm.alerts.engine import AlertEngine
from gpm.alerts.sinks import Sink, tell
from gpm.daemon.job_context import JobContext
from gpm.daemon.scheduler import PeriodicJob
from gpm.gpu.sample import now_ms
from gpm.llm.sessions import PollResult
from gpm.store.alerts import last_sample_ms
from gpm.store.db import connect, file_id, write


@dataclass
class _StallWatch:
    """The stall watch's own connection to the database. It never creates nor
    migrates one (the sampling job does, and two migrations at once collide):
    it follows the file at the path once it exists, like ``FollowedDb``."""

    ctx: JobContext
    engine: AlertEngine
    started_ms: int = field(default_factory=now_ms)  # a gap before the daemon started is not its stall
    conn: sqlite3.Connection | None = None
    file: tuple[int, int] | None = None

    def connection(self) -> sqlite3.Connection | None:
        now = file_id(self.ctx.cfg.db_path)
        if now != self.file:
            self.close()
            if now is not None:
                self.conn = connect(self.ctx.cfg.db_path, busy_timeout=self.ctx.cfg["storage.busy_timeout_secs"])
                self.file = now
        return self.conn

    def run(self) -> None:
        cfg = self.ctx.cfg
        interval, limit = cfg["service.poll_interval_secs"], int(cfg["alerts.stalled_intervals"])
        conn = self.connection()
        if conn is None:
            return
        try:
            last = last_sample_ms(conn, cfg.hostname)
            if last is None or now_ms() - max(last, self.started_ms) <= limit * interval * 1000:
                return  # the usual case (or a host that never stored a sample): no write, no lock
            with write(conn):  # read again under the lock: the sampler may have stored meanwhile
                reference = max(last_sample_ms(conn, cfg.hostname) or last, self.started_ms)
                now = now_ms()
                events = self.engine.evaluate(conn, cfg.hostname,
                                              stall_observations(reference, now, interval, limit, stored=False), now)
        except sqlite3.OperationalError:  # a new database the sampler has not made yet
            return
        tell(self.ctx.shared.alert_sinks, events)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn, self.file = None, None


def stall_watch_job(ctx: JobContext) -> PeriodicJob:
    watch = _StallWatch(ctx, AlertEngine.from_config(ctx.cfg))
    return PeriodicJob("stall-watch", watch.run, ctx.cfg["service.poll_interval_secs"], close=watch.close)


def ollama_alerts(ctx: JobContext, conn, api_url: str) -> Callable[[PollResult], None] | None:
    """The watcher's ``on_poll``: the ``ollama_down`` rule over each poll (None when it is off)."""
    engine = AlertEngine.from_config(ctx.cfg)
    if not engine.enabled("ollama_down"):
        return None
    sinks: list[Sink] = ctx.shared.alert_sinks

    def on_poll(result: PollResult) -> None:
        engine.run(conn, ctx.cfg.hostname, [ollama_observation(result.up, api_url, result.error)],
                   result.ts_ms, sinks)

    return on_poll

