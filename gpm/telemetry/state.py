"""The state exporters read: latest GPU samples, collector health, LLM totals.

``MetricsState`` is the single thing the Prometheus collector and the OTLP
exporter look at. Two ways to feed it:

- the daemon calls ``publish_gpus()`` / ``publish_collector()`` /
  ``publish_loaded_models()`` after each of its own polls, and hands its
  ``LlmAggregator`` in; exporters then never touch the hardware;
- ``gpm serve-metrics`` alone gives it a ``ScrapeRefresher``, which samples at
  scrape time, at most once per ``scrape_cache_secs`` however many scrapers
  ask (single-flight: concurrent scrapes wait for one read).

Both read gpm's firing alerts from the database at scrape time
(``refresh_alerts`` with a ``gpm.telemetry.alerts_feed.DbAlertFeed``).

Readers take ``snapshot()``: an immutable view, so a scrape never sees half
of an update.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from gpm.alerts.event import AlertEvent
from gpm.errors import GpmError
from gpm.gpu.sample import GpuSample
from gpm.telemetry.llm import LlmAggregator, LoadedModel, ModelStats

log = logging.getLogger("gpm.telemetry")

# The collectors whose health is exported, as node_exporter does.
COLLECTORS = ("nvml", "nvidia_smi", "processes", "ollama", "alerts")


@dataclass(frozen=True)
class CollectorResult:
    success: bool
    duration_seconds: float
    error: str | None = None


@dataclass(frozen=True)
class Snapshot:
    host: str
    gpus: tuple[GpuSample, ...] = ()
    collectors: dict[str, CollectorResult] = field(default_factory=dict)
    llm: dict[str, ModelStats] = field(default_factory=dict)
    loaded_models: tuple[LoadedModel, ...] | None = None
    ts_ms: int = 0
    alerts: tuple[AlertEvent, ...] | None = None  # None: no database to read them from


class MetricsState:
    """Latest state, shared by the daemon (writer) and exporters (readers)."""

    def __init__(self, host: str, *, llm: LlmAggregator | None = None,
                 refresher: Callable[["MetricsState"], None] | None = None) -> None:
        self.host = host
        self.llm = llm if llm is not None else LlmAggregator()
        self.refresher = refresher
        self._lock = threading.Lock()
        self._gpus: tuple[GpuSample, ...] = ()
        self._collectors: dict[str, CollectorResult] = {}
        self._loaded: tuple[LoadedModel, ...] | None = None
        self._alerts: tuple[AlertEvent, ...] | None = None
        self._ts_ms = 0

    def publish_gpus(self, samples: list[GpuSample], *, source: str, duration_seconds: float,
                     error: str | None = None) -> None:
        """A fresh read of every GPU by ``source`` ("nvml" or "nvidia-smi").

        The backend's collector succeeds when it read and every GPU is ok; a
        lost GPU makes it fail while the healthy GPUs' values are kept.
        """
        failed = [s for s in samples if not s.ok]
        if error is None and failed:
            error = ", ".join(f"GPU {s.index}: {s.status}" for s in failed)
        with self._lock:
            self._gpus = tuple(samples)
            self._ts_ms = max((s.ts_ms for s in samples), default=int(time.time() * 1000))
            self._collectors[collector_name(source)] = CollectorResult(
                error is None, duration_seconds, error)

    def publish_collector(self, name: str, success: bool, duration_seconds: float,
                          error: str | None = None) -> None:
        with self._lock:
            self._collectors[name] = CollectorResult(success, duration_seconds, error)

    def forget_gpus(self) -> None:
        """No GPU backend: drop GPU values rather than serve stale ones."""
        with self._lock:
            self._gpus = ()

    def publish_loaded_models(self, models: list[LoadedModel] | None, *, duration_seconds: float,
                              error: str | None = None) -> None:
        with self._lock:
            self._loaded = None if models is None else tuple(models)
            self._collectors["ollama"] = CollectorResult(error is None, duration_seconds, error)

    def refresh_alerts(self, poll: Callable[[], list[AlertEvent] | None]) -> None:
        """Publish what ``poll`` gives (firing alerts, None without a database).

        A failing read drops the alerts and fails the ``alerts`` collector,
        so stale alerts are never served and the failure shows.
        """
        t0 = time.perf_counter()
        try:
            events = poll()
        except Exception as err:  # noqa: BLE001 - a locked or broken database must not fail the scrape
            with self._lock:
                self._alerts = None
                self._collectors["alerts"] = CollectorResult(
                    False, time.perf_counter() - t0, str(err) or type(err).__name__)
            log.warning("cannot read firing alerts: %s", err)
            return
        with self._lock:
            self._alerts = None if events is None else tuple(events)
            if events is not None:
                self._collectors["alerts"] = CollectorResult(True, time.perf_counter() - t0)

    def snapshot(self) -> Snapshot:
        if self.refresher is not None:
            self.refresher(self)
        llm = self.llm.snapshot()
        with self._lock:
            return Snapshot(self.host, self._gpus, dict(self._collectors), llm, self._loaded,
                            self._ts_ms, self._alerts)


def collector_name(source: str) -> str:
    return "nvidia_smi" if source == "nvidia-smi" else source


class ScrapeRefresher:
    """Samples at scrape time for standalone ``gpm serve-metrics``.

    ``sampler`` is a ``gpm.sampling.Sampler`` (it applies the classification
    enrichers); ``poll_ollama`` returns ``/api/ps`` models or raises;
    ``poll_llm`` reads new proxy rows; ``poll_alerts`` gives the firing
    alerts (``MetricsState.refresh_alerts``). Each runs at most once per
    ``cache_secs``; a backend that cannot be opened is retried after
    ``retry_secs``, not at every scrape (opening nvidia-smi can take seconds).
    """

    def __init__(self, sampler, *, cache_secs: float, retry_secs: float = 60.0,
                 poll_ollama: Callable[[], list[LoadedModel]] | None = None,
                 poll_llm: Callable[[], int] | None = None,
                 poll_alerts: Callable[[], list[AlertEvent] | None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sampler = sampler
        self.cache_secs = cache_secs
        self.retry_secs = retry_secs
        self.poll_ollama = poll_ollama
        self.poll_llm = poll_llm
        self.poll_alerts = poll_alerts
        self.clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None
        self._retry_at = 0.0

    def __call__(self, state: MetricsState) -> None:
        with self._lock:  # single flight: concurrent scrapes share one read
            now = self.clock()
            if self._last is not None and now - self._last < self.cache_secs:
                return
            self._last = now
            self._refresh_gpus(state, now)
            if self.poll_ollama is not None:
                self._refresh_ollama(state)
            if self.poll_llm is not None:
                try:
                    self.poll_llm()
                except Exception as err:  # noqa: BLE001 - a broken feed must not fail the scrape
                    log.warning("cannot read LLM requests: %s", err)
            if self.poll_alerts is not None:
                state.refresh_alerts(self.poll_alerts)

    def _refresh_gpus(self, state: MetricsState, now: float) -> None:
        sampler = self.sampler
        if sampler.reader is None:
            if now < self._retry_at:
                return
            t0 = time.perf_counter()
            try:
                sampler.open()
            except Exception as err:  # noqa: BLE001 - NoBackendError or a broken backend
                self._retry_at = now + self.retry_secs
                took = time.perf_counter() - t0
                cfg = sampler.cfg
                state.forget_gpus()
                state.publish_collector("nvml", False, took, str(err))
                if cfg["gpu.fallback_to_nvidia_smi"]:
                    state.publish_collector("nvidia_smi", False, took, str(err))
                if not isinstance(err, GpmError):
                    err = f"{type(err).__name__}: {err}"
                log.warning("%s", err)
                return
            if sampler.reader.source != "nvml" and sampler.cfg["gpu.enable_nvml"]:
                state.publish_collector("nvml", False, time.perf_counter() - t0,
                                        "NVML unavailable; using nvidia-smi")
        reader = sampler.reader
        t0 = time.perf_counter()
        try:
            samples = reader.read()
        except Exception as err:  # noqa: BLE001 - e.g. nvidia-smi timed out: report, keep serving
            state.forget_gpus()
            state.publish_collector(collector_name(reader.source), False,
                                    time.perf_counter() - t0, str(err) or type(err).__name__)
            return
        read_took = time.perf_counter() - t0
        t1 = time.perf_counter()
        error = None
        for enrich in sampler.enrichers:
            try:
                enrich(samples, sampler)
            except Exception as err:  # noqa: BLE001 - classification failing must not hide GPUs
                error = f"{getattr(enrich, '__name__', 'enricher')}: {err}"
        state.publish_gpus(samples, source=reader.source, duration_seconds=read_took)
        state.publish_collector("processes", error is None, time.perf_counter() - t1, error)

    def _refresh_ollama(self, state: MetricsState) -> None:
        t0 = time.perf_counter()
        try:
            models = self.poll_ollama()
        except Exception as err:  # noqa: BLE001 - Ollama down is a metric, not a failure
            state.publish_loaded_models(None, duration_seconds=time.perf_counter() - t0,
                                        error=str(err) or type(err).__name__)
            return
        state.publish_loaded_models(models, duration_seconds=time.perf_counter() - t0)
