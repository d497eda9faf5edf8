"""What the daemon runs: small adapters over the functions the subcommands call.

``JOB_KINDS`` is the registration point. Each ``JobKind`` holds a factory,
a function called with a ``JobContext`` and returning a ``PeriodicJob`` or
``ServiceJob`` (see ``gpm.daemon.scheduler``); a factory imports its
feature's heavy packages only when it runs, so a disabled feature costs
nothing. Adding a feature to the daemon is one line here plus its factory::

    JobKind("archive", archive_job,
            enabled_by="storage.enable_parquet_archival",
            interval_key="storage.archive_interval_secs",
            restart_keys=("storage.",))

``enabled_by`` is the boolean config key that switches the job on (None:
always on). On SIGHUP a change of ``interval_key`` is applied in place; a
change of any ``restart_keys`` (exact keys, or ``"section."`` prefixes)
rebuilds the job; flipping ``enabled_by`` starts or stops it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Callable

from gpm.addresses import parse_listen
from gpm.config import Config
from gpm.daemon.alert_jobs import ollama_alerts, stall_watch_job
from gpm.daemon.archive_job import ARCHIVE_FIRST_DELAY_SECS, archive_job
from gpm.daemon.job_context import JobContext
from gpm.daemon.logs import job_logger
from gpm.daemon.sampling_job import sampling_job
from gpm.daemon.scheduler import Job, PeriodicJob, ServiceJob, held_service
from gpm.errors import GpmError
from gpm.gpu.sample import now_ms
from gpm.llm.proxy import RecordingProxy
from gpm.llm.sessions import OllamaWatcher
from gpm.store.db import FollowedDb, open_db
from gpm.store.llm import RequestLog, SessionLog
from gpm.store.rollup import refresh
from gpm.telemetry.alerts_feed import DbAlertFeed
from gpm.telemetry.llm import DbRequestFeed, LoadedModel
from gpm.telemetry.otlp import OtlpMetrics
from gpm.telemetry.proxy_hooks import ProxyHooks
from gpm.telemetry.server import MetricsServer
from gpm.telemetry.state import MetricsState
from gpm.telemetry.tracing import ProxyTracer


@dataclass(frozen=True)
class JobKind:
    name: str
    factory: Callable[[JobContext], Job]
    enabled_by: str | None = None
    interval_key: str | None = None
    restart_keys: tuple[str, ...] = ()

    def enabled(self, cfg: Config) -> bool:
        return True if self.enabled_by is None else bool(cfg[self.enabled_by])

    def build(self, ctx: JobContext) -> Job:
        return self.factory(ctx)

    def changed_keys(self, old: Config, new: Config) -> list[str]:
        """The restart keys whose value differs between two configurations."""
        return [
            dotted for dotted in new.values
            if any(dotted == k or (k.endswith(".") and dotted.startswith(k)) for k in self.restart_keys)
            and old.values.get(dotted) != new.values[dotted]
        ]


ROLLUP_INTERVAL_SECS = 60.0
REDUCE_HOURS_PER_RUN = 24  # a backlog (a database from before the rollup) is taken a day per minute


def rollup_job(ctx: JobContext) -> PeriodicJob:
    """Keep `gpm report`'s per-minute rollup current (``gpm.store.rollup``):
    each minute, reduce the hours that closed since the last run, in this
    job's own thread so the sampling tick never waits for it."""
    cfg = ctx.cfg
    db = FollowedDb(cfg.db_path, cfg["storage.busy_timeout_secs"])  # reduces the database the samples go to, even a new one (#12.5)
    log = job_logger("rollup")

    def run() -> None:
        if db.check() is not None:  # the sampling job says so in the log
            log.debug("following %s to its new database", db.path)
        done = refresh(db.conn, cfg["report.busy_threshold_percent"], now_ms=now_ms(),
                       max_hours=REDUCE_HOURS_PER_RUN)
        if done:
            log.debug("reduced %d closed hour%s for `gpm report`", done, "s" if done != 1 else "")

    return PeriodicJob("rollup", run, ROLLUP_INTERVAL_SECS, close=db.close, first_delay_secs=ARCHIVE_FIRST_DELAY_SECS)


def ollama_watch_job(ctx: JobContext) -> PeriodicJob:
    """``gpm ollama-watch --follow``: poll /api/ps, record model sessions."""
    cfg = ctx.cfg
    conn = open_db(cfg.db_path)
    watcher = OllamaWatcher(cfg["ollama.api_url"], SessionLog(conn, cfg["ollama.api_url"], cfg.hostname),
                            interval_secs=cfg["ollama.poll_interval_secs"], timeout_secs=cfg["ollama.timeout_secs"],
                            on_poll=ollama_alerts(ctx, conn, cfg["ollama.api_url"]))

    def run() -> None:
        t0 = time.perf_counter()
        result = watcher.poll()
        state = ctx.shared.metrics
        if state is not None:  # the exporters show what Ollama has loaded
            took = time.perf_counter() - t0
            if result.up:
                state.publish_loaded_models(
                    [LoadedModel(m.model, m.size_bytes, m.size_vram_bytes, m.context_length) for m in result.models],
                    duration_seconds=took)
            else:
                state.publish_loaded_models(None, duration_seconds=took, error=result.error)

    return PeriodicJob("ollama-watch", run, cfg["ollama.poll_interval_secs"], close=conn.close)


def ollama_proxy_job(ctx: JobContext) -> ServiceJob:
    """``gpm ollama-watch --proxy``: the recording proxy.

    Binding happens when the service opens, so an address in use is a failure
    the scheduler retries with back-off, not a daemon that will not start.
    """
    cfg = ctx.cfg
    listen = parse_listen(cfg["ollama.proxy_listen"])
    log = job_logger("ollama-proxy")

    def open_() -> Callable[[], None]:
        hooks = tracer = None
        if cfg["telemetry.enable_opentelemetry"]:  # a span per proxied request
            tracer = ProxyTracer(cfg.hostname, endpoint=cfg["telemetry.otlp_endpoint"],
                                 protocol=cfg["telemetry.otlp_protocol"]).start()
            hooks = ProxyHooks(tracer=tracer, upstream_url=cfg["ollama.api_url"])
        conn = open_db(cfg.db_path)
        try:
            proxy = RecordingProxy(listen, cfg["ollama.api_url"], sink=RequestLog(conn), host=cfg.hostname,
                                   store_prompts=cfg["ollama.store_prompts"], hooks=hooks).start()
        except OSError as err:
            conn.close()
            if tracer is not None:
                tracer.stop()
            raise GpmError(f"cannot listen on {listen[0]}:{listen[1]}: {err.strerror or err}") from None
        log.info("recording proxy on %s -> %s%s", proxy.url, cfg["ollama.api_url"],
                 " (spans to " + cfg["telemetry.otlp_endpoint"] + ")" if tracer else "")

        def stop() -> None:
            proxy.stop(timeout=1.0)  # in-flight requests are recorded (and their spans ended) as interrupted
            if tracer is not None:
                tracer.stop()  # exports what is left
            conn.close()

        return stop

    return held_service("ollama-proxy", open_)


def _metrics_state(ctx: JobContext):
    """The one state both exporters read and the sampling job feeds.

    Between scrapes nothing polls: new proxied requests and firing alerts are
    read from the database when an exporter asks, at most every [telemetry] scrape_cache_secs.
    """
    state = ctx.shared.metrics
    if state is None:
        cfg = ctx.cfg
        state = MetricsState(cfg.hostname)
        feed = DbRequestFeed(cfg.db_path, state.llm)
        alerts = DbAlertFeed(cfg.db_path, cfg.hostname)
        last = [float("-inf")]
        lock = threading.Lock()

        def refresh(_state) -> None:
            with lock:
                now = time.monotonic()
                if now - last[0] < cfg["telemetry.scrape_cache_secs"]:
                    return
                last[0] = now
                try:
                    feed.poll()
                except sqlite3.Error as err:
                    job_logger("telemetry").warning("cannot read LLM requests: %s", err)
                state.refresh_alerts(alerts.poll)

        state.refresher = refresh
        ctx.shared.metrics = state
    return state


def prometheus_job(ctx: JobContext) -> ServiceJob:
    """``gpm serve-metrics``'s endpoint, serving what the daemon sampled."""
    cfg = ctx.cfg
    state = _metrics_state(ctx)
    host, port = parse_listen(cfg["telemetry.metrics_listen"])

    def open_() -> Callable[[], None]:
        server = MetricsServer(state, host, port, per_process=cfg["telemetry.per_process"]).start()
        job_logger("prometheus").info("serving metrics on %s", server.url)
        return server.stop

    return held_service("prometheus", open_)


def otlp_job(ctx: JobContext) -> ServiceJob:
    """``gpm serve-metrics --otlp``: push the same state over OTLP."""
    cfg = ctx.cfg
    state = _metrics_state(ctx)

    def open_() -> Callable[[], None]:
        exporter = OtlpMetrics(state, endpoint=cfg["telemetry.otlp_endpoint"],
                               protocol=cfg["telemetry.otlp_protocol"],
                               interval_secs=cfg["telemetry.export_interval_secs"]).start()
        job_logger("otlp").info("pushing OTLP metrics to %s every %g s", cfg["telemetry.otlp_endpoint"],
                                cfg["telemetry.export_interval_secs"])
        return exporter.stop

    return held_service("otlp", open_)


JOB_KINDS: list[JobKind] = [
    JobKind("sample", sampling_job,
            interval_key="service.poll_interval_secs",
            restart_keys=("gpu.", "classify.", "storage.db_path", "storage.archive_dir", "service.hostname",
                          "alerts.")),
    JobKind("stall-watch", stall_watch_job, enabled_by="alerts.enabled", interval_key="service.poll_interval_secs",
            restart_keys=("alerts.", "storage.db_path", "service.hostname")),
    JobKind("archive", archive_job, enabled_by="storage.enable_parquet_archival",
            interval_key="storage.archive_interval_secs",
            restart_keys=("storage.db_path",)),
    JobKind("rollup", rollup_job, restart_keys=("storage.db_path", "report.busy_threshold_percent")),
    JobKind("ollama-watch", ollama_watch_job, enabled_by="ollama.enabled",
            interval_key="ollama.poll_interval_secs",
            restart_keys=("ollama.api_url", "ollama.timeout_secs", "storage.db_path", "service.hostname", "alerts.")),
    JobKind("ollama-proxy", ollama_proxy_job, enabled_by="ollama.enable_proxy",
            restart_keys=("ollama.api_url", "ollama.proxy_listen", "ollama.store_prompts", "storage.db_path",
                          "service.hostname", "telemetry.enable_opentelemetry", "telemetry.otlp_endpoint",
                          "telemetry.otlp_protocol")),
    JobKind("prometheus", prometheus_job, enabled_by="telemetry.enable_prometheus",
            restart_keys=("telemetry.metrics_listen", "telemetry.per_process", "storage.db_path",
                          "service.hostname")),
    JobKind("otlp", otlp_job, enabled_by="telemetry.enable_opentelemetry",
            restart_keys=("telemetry.otlp_endpoint", "telemetry.otlp_protocol", "telemetry.export_interval_secs",
                          "service.hostname")),
]
