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

from typing import Callable

from gpm.alerts.conditions import ollama_observation, stall_observations
from gpm.alerts.engine import AlertEngine
from gpm.alerts.sinks import Sink, tell
from gpm.daemon.job_context import JobContext
from gpm.daemon.scheduler import PeriodicJob
from gpm.gpu.model import now_ms
from gpm.llm.sessions import PollResult
from gpm.store.alerts import last_sample_ms
from gpm.store.db import FollowedDb, write


def stall_watch_job(ctx: JobContext) -> PeriodicJob:
    cfg = ctx.cfg
    engine = AlertEngine.from_config(cfg)
    db = FollowedDb(cfg.db_path, cfg["storage.busy_timeout_secs"])
    started_ms = now_ms()  # a gap before the daemon started is not this daemon's stall

    def run() -> None:
        interval = ctx.cfg["service.poll_interval_secs"]
        limit = int(ctx.cfg["alerts.stalled_intervals"])
        db.check()
        conn = db.conn
        last = last_sample_ms(conn, cfg.hostname)
        if last is None or now_ms() - max(last, started_ms) <= limit * interval * 1000:
            return  # the usual case (or a host that never stored a sample): no write, no lock
        with write(conn):  # read again under the lock: the sampler may have stored meanwhile
            reference = max(last_sample_ms(conn, cfg.hostname) or last, started_ms)
            now = now_ms()
            events = engine.evaluate(conn, cfg.hostname,
                                     stall_observations(reference, now, interval, limit, stored=False), now)
        tell(ctx.shared.alert_sinks, events)

    return PeriodicJob("stall-watch", run, cfg["service.poll_interval_secs"], close=db.close)


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

