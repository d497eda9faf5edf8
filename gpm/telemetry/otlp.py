"""OTLP push with OpenTelemetry semantic-convention names.

``OtlpMetrics`` exports the ``MetricsState`` every ``export_interval_secs``
through the SDK's periodic reader (its own thread, so sampling never waits
for the network): ``hw.gpu.*``/``hw.power``/``hw.energy``/``hw.temperature``
per GPU, and the ``gen_ai.*`` histograms of proxied LLM requests with the
convention's bucket boundaries.

The SDK reports a successful flush even when every export failed, so every
exporter is wrapped in ``CountingExporter``: it counts successes and
failures, logs the first failure of a streak once (and the recovery), and
backs off (doubling up to ``max_backoff_secs``) before it tries the network
again. Cumulative temporality means nothing is lost by skipping an export:
the next one that gets through carries the totals.

OpenTelemetry is imported inside the functions that use it: the commands that
import this module start without it, and ``gpm --help`` never loads it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterable
from urllib.parse import urlparse

from gpm import __version__
from gpm.gpu.sample import GpuSample
from gpm.telemetry.llm import (
    DURATION_BUCKETS_SECONDS,
    TOKEN_BUCKETS,
    TPOT_BUCKETS_SECONDS,
    TTFT_BUCKETS_SECONDS,
    LlmRequest,
)
from gpm.telemetry.state import MetricsState, Snapshot

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
    from opentelemetry.sdk.resources import Resource

log = logging.getLogger("gpm.telemetry")

PROVIDER = "ollama"  # gen_ai.provider.name: no well-known value exists for Ollama


def make_resource(host: str) -> Resource:
    """The OTLP resource of this host's gpm: service and host names, gpm's version."""
    from opentelemetry.sdk.resources import Resource

    return Resource.create({"service.name": "gpm", "service.version": __version__, "host.name": host})


def quiet_sdk_exporter_logs() -> None:
    """Silence the SDK exporters, which log every failed attempt; gpm logs once per streak
    (metrics and traces alike)."""
    logging.getLogger("opentelemetry.exporter.otlp").setLevel(logging.CRITICAL)


class ExportCounter:
    """Counts exports, logs failure streaks once, and says when to retry."""

    def __init__(self, what: str, endpoint: str, *, min_backoff_secs: float,
                 max_backoff_secs: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.endpoint = endpoint
        self.min_backoff_secs = min_backoff_secs
        self.max_backoff_secs = max_backoff_secs
        self.clock = clock
        self.successes = 0
        self.failures = 0
        self.skipped = 0
        self.streak = 0
        self._backoff = 0.0
        self._retry_at = 0.0
        self._lock = threading.Lock()

    def should_try(self) -> bool:
        with self._lock:
            if self.streak and self.clock() < self._retry_at:
                self.skipped += 1
                return False
            return True

    def record(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self.successes += 1
                if self.streak:
                    log.warning("OTLP %s export to %s works again (after %d failed attempts)",
                                self.what, self.endpoint, self.streak)
                self.streak = 0
                self._backoff = 0.0
                return
            self.failures += 1
            self.streak += 1
            if self.streak == 1:
                log.warning("OTLP %s export to %s failed; retrying with back-off "
                            "(further failures are counted, not logged)", self.what, self.endpoint)
            self._backoff = min(self.max_backoff_secs,
                                max(self.min_backoff_secs, self._backoff * 2))
            self._retry_at = self.clock() + self._backoff


class CountingExporter:
    """Wraps the SDK's OTLP metric exporter: counts, logs once, backs off.

    It has what the SDK's periodic reader uses of a ``MetricExporter`` (its
    methods and the inner exporter's preferred temporality and aggregation),
    so this module needs no OpenTelemetry until an export.
    """

    def __init__(self, inner: MetricExporter, counter: ExportCounter) -> None:
        self._preferred_temporality = inner._preferred_temporality
        self._preferred_aggregation = inner._preferred_aggregation
        self.inner = inner
        self.counter = counter

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        from opentelemetry.sdk.metrics.export import MetricExportResult

        if not self.counter.should_try():
            return MetricExportResult.FAILURE
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception:  # noqa: BLE001 - an exporter bug counts as a failed export
            result = MetricExportResult.FAILURE
        self.counter.record(result == MetricExportResult.SUCCESS)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def signal_endpoint(endpoint: str, protocol: str, signal: str) -> str:
    """gRPC takes host:port; HTTP wants the full ``/v1/<signal>`` URL."""
    if protocol == "grpc":
        return endpoint
    parsed = urlparse(endpoint)
    if parsed.path in ("", "/"):
        return endpoint.rstrip("/") + f"/v1/{signal}"
    return endpoint


def metric_exporter(endpoint: str, protocol: str, timeout_secs: float) -> MetricExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"),
                                  timeout=timeout_secs)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter(endpoint=signal_endpoint(endpoint, protocol, "metrics"),
                              timeout=timeout_secs)


def hw_attributes(s: GpuSample) -> dict[str, str]:
    attrs = {"hw.id": s.uuid or f"gpu{s.index}", "hw.type": "gpu"}
    if s.name:
        attrs["hw.name"] = s.name
    if s.driver_version:
        attrs["hw.driver_version"] = s.driver_version
    return attrs


def hw_observations(snap: Snapshot) -> dict[str, list[tuple[float, dict[str, str]]]]:
    """Semantic-convention name -> [(value, attributes)] for each healthy GPU."""
    out: dict[str, list[tuple[float, dict[str, str]]]] = {name: [] for name, *_ in HW_INSTRUMENTS}
    for s in snap.gpus:
        if not s.ok:
            continue
        attrs = hw_attributes(s)

        def add(name: str, value) -> None:
            if value is not None:  # integers (bytes, degrees) stay integers
                out[name].append((value if isinstance(value, int) else float(value), attrs))

        if s.utilization_gpu_percent is not None:
            out["hw.gpu.utilization"].append((s.utilization_gpu_percent / 100, {**attrs, "hw.gpu.task": "general"}))
        add("hw.gpu.memory.usage", s.memory_used_bytes)
        add("hw.gpu.memory.limit", s.memory_total_bytes)
        add("hw.power", s.power_watts)
        add("hw.energy", s.energy_joules)
        add("hw.temperature", s.temperature_celsius)
    return out


# name, instrument kind, unit, description
HW_INSTRUMENTS = (
    ("hw.gpu.utilization", "gauge", "1", "Share of time the GPU was busy."),
    ("hw.gpu.memory.usage", "updown", "By", "GPU memory in use."),
    ("hw.gpu.memory.limit", "updown", "By", "GPU memory size."),
    ("hw.power", "gauge", "W", "Instantaneous power draw of the GPU."),
    ("hw.energy", "counter", "J", "Energy used by the GPU since the driver loaded."),
    ("hw.temperature", "gauge", "Cel", "GPU core temperature."),
)


def genai_attributes(req: LlmRequest) -> dict[str, str]:
    attrs = {"gen_ai.operation.name": req.operation, "gen_ai.provider.name": PROVIDER,
             "gen_ai.request.model": req.model or "unknown"}
    if req.server_address:
        attrs["server.address"] = req.server_address
        if req.server_port:
            attrs["server.port"] = req.server_port
    return attrs


def error_type(req: LlmRequest) -> str | None:
    if not req.failed:
        return None
    if req.status is not None and req.status >= 400:
        return str(req.status)
    return "_OTHER"


class OtlpMetrics:
    """Pushes a ``MetricsState`` over OTLP until ``stop()``.

    The daemon builds one with its state and calls ``start()``/``stop()``;
    LLM requests reach it through ``state.llm``'s listeners.
    """

    def __init__(self, state: MetricsState, *, endpoint: str = "http://localhost:4317",
                 protocol: str = "grpc", interval_secs: float = 10.0,
                 exporter: MetricExporter | None = None, max_backoff_secs: float = 300.0) -> None:
        self.state = state
        self.endpoint = endpoint
        self.protocol = protocol
        self.interval_secs = interval_secs
        timeout = max(0.5, min(10.0, interval_secs))
        self.counter = ExportCounter("metrics", endpoint, min_backoff_secs=interval_secs,
                                     max_backoff_secs=max_backoff_secs)
        inner = exporter if exporter is not None else metric_exporter(endpoint, protocol, timeout)
        self.exporter = CountingExporter(inner, self.counter)
        self._timeout_ms = timeout * 1000
        self.provider: MeterProvider | None = None
        self._snap: tuple[float, Snapshot] | None = None
        self._snap_lock = threading.Lock()
        self._histograms: dict | None = None

    def _snapshot(self) -> Snapshot:
        # The six callbacks of one collection share one snapshot.
        with self._snap_lock:
            now = time.monotonic()
            if self._snap is None or now - self._snap[0] > min(1.0, self.interval_secs / 2):
                self._snap = (now, self.state.snapshot())
            return self._snap[1]

    def _callback(self, name: str):
        from opentelemetry.metrics import Observation

        def observe(_options) -> Iterable[Observation]:
            values = hw_observations(self._snapshot())[name]
            return [Observation(value, attrs) for value, attrs in values]

        return observe

    def start(self) -> "OtlpMetrics":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        quiet_sdk_exporter_logs()
        reader = PeriodicExportingMetricReader(
            self.exporter, export_interval_millis=self.interval_secs * 1000,
            export_timeout_millis=self._timeout_ms)
        self.provider = MeterProvider(resource=make_resource(self.state.host), metric_readers=[reader])
        meter = self.provider.get_meter("gpm", __version__)
        makers = {"gauge": meter.create_observable_gauge,
                  "updown": meter.create_observable_up_down_counter,
                  "counter": meter.create_observable_counter}
        for name, kind, unit, description in HW_INSTRUMENTS:
            makers[kind](name, callbacks=[self._callback(name)], unit=unit, description=description)
        self._histograms = {
            "tokens": meter.create_histogram(
                "gen_ai.client.token.usage", unit="{token}",
                description="Tokens used per request, by gen_ai.token.type (input or output).",
                explicit_bucket_boundaries_advisory=list(map(float, TOKEN_BUCKETS))),
            "ttft": meter.create_histogram(
                "gen_ai.server.time_to_first_token", unit="s",
                description="Time to generate the first token.",
                explicit_bucket_boundaries_advisory=list(TTFT_BUCKETS_SECONDS)),
            "tpot": meter.create_histogram(
                "gen_ai.server.time_per_output_token", unit="s",
                description="Time per output token after the first.",
                explicit_bucket_boundaries_advisory=list(TPOT_BUCKETS_SECONDS)),
            "duration": meter.create_histogram(
                "gen_ai.server.request.duration", unit="s",
                description="Request duration to the last output token.",
                explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS_SECONDS)),
        }
        self.state.llm.listeners.append(self.record_request)
        return self

    def record_request(self, req: LlmRequest) -> None:
        hists = self._histograms
        if hists is None:
            return
        attrs = genai_attributes(req)
        if req.prompt_tokens is not None:
            hists["tokens"].record(req.prompt_tokens, {**attrs, "gen_ai.token.type": "input"})
        if req.completion_tokens is not None:
            hists["tokens"].record(req.completion_tokens, {**attrs, "gen_ai.token.type": "output"})
        if req.duration_seconds is not None:
            err = error_type(req)
            hists["duration"].record(req.duration_seconds, {**attrs, "error.type": err} if err else attrs)
        if not req.failed:
            if req.ttft_seconds is not None:
                hists["ttft"].record(req.ttft_seconds, attrs)
            tpot = req.time_per_output_token()
            if tpot is not None:
                hists["tpot"].record(tpot, attrs)

    def force_flush(self) -> bool:
        """Export now; True only when the export really got through."""
        if self.provider is None:
            return False
        before = self.counter.successes
        self.provider.force_flush(timeout_millis=self._timeout_ms + 1000)
        return self.counter.successes > before

    def stop(self) -> None:
        if self.record_request in self.state.llm.listeners:
            self.state.llm.listeners.remove(self.record_request)
        if self.provider is not None:
            self.provider.shutdown(timeout_millis=self._timeout_ms + 1000)
            self.provider = None
        self._histograms = None
