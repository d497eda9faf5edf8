"""Prometheus exposition: metric families built afresh from a state snapshot.

A custom collector (``GpmCollector.collect``) rather than long-lived
``Gauge`` objects: a GPU or process that goes away simply is not in the next
snapshot, so its series end without any label clean-up.

Names follow the Prometheus conventions: ``gpm_`` prefix, base units in the
name (bytes, seconds, watts, joules, hertz, celsius, ratios 0-1), counters end
in ``_total``. Per-GPU series carry only ``gpu`` (index) and ``uuid``; the
identity strings are on ``gpm_gpu_info`` for joins (as nvidia_gpu_exporter
does). Processes are summed per category unless ``per_process`` is asked for,
because PID labels churn and grow the TSDB without bound.

prometheus_client is imported inside the functions that build families:
``gpm sample`` imports this module for ``--textfile`` and must not pay for
the client on every cron run without it.
"""

from __future__ import annotations

import platform
import sys
from typing import TYPE_CHECKING, Iterable, Iterator

from gpm import __version__
from gpm.alerts.event import AlertEvent
from gpm.gpu.sample import THROTTLE_REASONS, GpuSample
from gpm.humanize import visible
from gpm.outfile import replacing
from gpm.telemetry.state import COLLECTORS, CollectorResult, MetricsState, Snapshot

if TYPE_CHECKING:
    from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily, Metric
    from prometheus_client.registry import CollectorRegistry

GPU_LABELS = ["gpu", "uuid"]
UNCLASSIFIED = "unclassified"


def _gpu_labels(s: GpuSample) -> list[str]:
    return [str(s.index), s.uuid or ""]


def _gauge(name: str, doc: str, rows: Iterable[tuple[list[str], float | None]],
           labels: list[str] = GPU_LABELS) -> GaugeMetricFamily | None:
    """A gauge family of the rows whose value is known; None when empty.

    A value the GPU does not report is left out, never exported as 0.
    """
    from prometheus_client.core import GaugeMetricFamily

    fam = GaugeMetricFamily(name, doc, labels=labels)
    for label_values, value in rows:
        if value is not None:
            fam.add_metric(label_values, float(value))
    return fam if fam.samples else None


def gpu_families(gpus: Iterable[GpuSample], *, per_process: bool = False) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

    gpus = list(gpus)
    ok = [s for s in gpus if s.ok]
    info = InfoMetricFamily(
        "gpm_gpu", "Identity of each GPU; join on uuid.",
        labels=["gpu", "uuid", "name", "driver_version", "cuda_version", "pci_bus_id", "source"],
    )
    up = GaugeMetricFamily("gpm_gpu_up", "1 when the GPU was read, 0 when it failed (lost, ...).",
                           labels=GPU_LABELS)
    for s in gpus:
        info.add_metric([str(s.index), s.uuid or "", visible(s.name or ""), s.driver_version or "",
                         s.cuda_version or "", s.pci_bus_id or "", s.source], {})
        up.add_metric(_gpu_labels(s), 1.0 if s.ok else 0.0)
    if gpus:
        yield info
        yield up

    def per_gpu(attr: str, scale: float = 1.0):
        for s in ok:
            value = getattr(s, attr)
            yield _gpu_labels(s), None if value is None else value * scale

    simple = (
        ("gpm_gpu_utilization_ratio", "GPU busy time share over the last sample period (0-1).",
         "utilization_gpu_percent", 0.01),
        ("gpm_gpu_memory_utilization_ratio", "Memory controller busy time share (0-1).",
         "utilization_memory_percent", 0.01),
        ("gpm_gpu_memory_used_bytes", "GPU memory in use.", "memory_used_bytes", 1),
        ("gpm_gpu_memory_total_bytes", "GPU memory size.", "memory_total_bytes", 1),
        ("gpm_gpu_temperature_celsius", "GPU core temperature.", "temperature_celsius", 1),
        ("gpm_gpu_power_watts", "Power draw.", "power_watts", 1),
        ("gpm_gpu_power_limit_watts", "Enforced power limit.", "power_limit_watts", 1),
        ("gpm_gpu_sm_clock_hertz", "SM clock.", "sm_clock_mhz", 1e6),
        ("gpm_gpu_memory_clock_hertz", "Memory clock.", "memory_clock_mhz", 1e6),
        ("gpm_gpu_fan_speed_ratio", "Fan speed as a share of its maximum (0-1).", "fan_percent", 0.01),
        ("gpm_gpu_pstate", "Performance state: 0 is P0 (fastest) ... 15 is P15.", "pstate", 1),
    )
    for name, doc, attr, scale in simple:
        fam = _gauge(name, doc, per_gpu(attr, scale))
        if fam is not None:
            yield fam

    energy = CounterMetricFamily(
        "gpm_gpu_energy_joules", "Energy used since the driver loaded (resets on reload).",
        labels=GPU_LABELS)
    for s in ok:
        if s.energy_joules is not None:
            energy.add_metric(_gpu_labels(s), float(s.energy_joules))
    if energy.samples:
        yield energy

    throttle = GaugeMetricFamily(
        "gpm_gpu_throttle_reason", "1 when this clock event (throttle) reason is active.",
        labels=GPU_LABELS + ["reason"])
    for s in ok:
        if s.throttle_reasons is None:
            continue
        for reason, bit in THROTTLE_REASONS.items():
            throttle.add_metric(_gpu_labels(s) + [reason], 1.0 if s.throttle_reasons & bit else 0.0)
    if throttle.samples:
        yield throttle

    yield from process_families(ok, per_process=per_process)


def process_families(gpus: list[GpuSample], *, per_process: bool) -> Iterator[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    labels = GPU_LABELS + ["category"]
    memory = GaugeMetricFamily(
        "gpm_category_gpu_memory_bytes", "GPU memory held by processes of each category.",
        labels=labels)
    count = GaugeMetricFamily(
        "gpm_category_processes", "Number of processes of each category on the GPU.", labels=labels)
    for s in gpus:
        mem: dict[str, int] = {}
        n: dict[str, int] = {}
        for p in s.processes:
            cat = p.category or UNCLASSIFIED
            n[cat] = n.get(cat, 0) + 1
            mem[cat] = mem.get(cat, 0) + (p.used_memory_bytes or 0)
        for cat in sorted(n):
            memory.add_metric(_gpu_labels(s) + [cat], float(mem[cat]))
            count.add_metric(_gpu_labels(s) + [cat], float(n[cat]))
    yield memory
    yield count
    if not per_process:
        return
    plabels = GPU_LABELS + ["pid", "name", "category"]
    pmem = GaugeMetricFamily("gpm_process_gpu_memory_bytes", "GPU memory held by the process.",
                             labels=plabels)
    putil = GaugeMetricFamily("gpm_process_sm_utilization_ratio",
                              "Share of the GPU's SMs the process used (0-1).", labels=plabels)
    for s in gpus:
        for p in s.processes:
            values = _gpu_labels(s) + [str(p.pid), visible(p.name or ""), p.category or UNCLASSIFIED]
            if p.used_memory_bytes is not None:
                pmem.add_metric(values, float(p.used_memory_bytes))
            if p.sm_utilization_percent is not None:
                putil.add_metric(values, p.sm_utilization_percent / 100)
    yield pmem
    yield putil


def _histogram(name: str, doc: str, per_model: Iterable[tuple[str, object]]) -> HistogramMetricFamily:
    from prometheus_client.core import HistogramMetricFamily

    fam = HistogramMetricFamily(name, doc, labels=["model"])
    for model, hist in per_model:
        buckets = [("+Inf" if b == float("inf") else repr(float(b)), n) for b, n in hist.cumulative()]
        fam.add_metric([model], buckets, sum_value=hist.total)
    return fam


def llm_families(snap: Snapshot) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    # Model names come from clients: shown as `visible` shows them, like process
    # names, so `curl /metrics` in a terminal runs no escape sequence (#12.10).
    models = sorted((visible(model), stats) for model, stats in snap.llm.items())
    requests = CounterMetricFamily("gpm_llm_requests", "Requests through the recording proxy.",
                                   labels=["model", "status"])
    prompt = CounterMetricFamily("gpm_llm_prompt_tokens", "Prompt (input) tokens processed.",
                                 labels=["model"])
    completion = CounterMetricFamily("gpm_llm_completion_tokens", "Completion (output) tokens generated.",
                                     labels=["model"])
    for model, stats in models:
        for status, n in sorted(stats.requests.items()):
            requests.add_metric([model, status], float(n))
        prompt.add_metric([model], float(stats.prompt_tokens))
        completion.add_metric([model], float(stats.completion_tokens))
    yield requests
    yield prompt
    yield completion
    yield _histogram("gpm_llm_time_to_first_token_seconds",
                     "Time from the request reaching the proxy to the first generated token.",
                     ((m, s.ttft) for m, s in models))
    yield _histogram("gpm_llm_time_per_output_token_seconds",
                     "Time per output token after the first: (duration - TTFT) / (tokens - 1).",
                     ((m, s.tpot) for m, s in models))
    yield _histogram("gpm_llm_request_duration_seconds", "Request duration, to the last byte.",
                     ((m, s.duration) for m, s in models))
    if snap.loaded_models is not None:
        yield GaugeMetricFamily("gpm_ollama_models_loaded", "Models Ollama holds in memory.",
                                value=float(len(snap.loaded_models)))
        vram = GaugeMetricFamily("gpm_ollama_model_vram_bytes", "GPU memory a loaded model uses.",
                                 labels=["model"])
        size = GaugeMetricFamily("gpm_ollama_model_size_bytes",
                                 "Memory a loaded model uses in all (CPU and GPU).", labels=["model"])
        for m in snap.loaded_models:
            if m.size_vram_bytes is not None:
                vram.add_metric([m.name], float(m.size_vram_bytes))
            if m.size_bytes is not None:
                size.add_metric([m.name], float(m.size_bytes))
        yield vram
        yield size


def health_families(collectors: dict[str, CollectorResult]) -> Iterator[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    success = GaugeMetricFamily("gpm_collector_success", "1 when the collector's last run succeeded.",
                                labels=["collector"])
    duration = GaugeMetricFamily("gpm_collector_duration_seconds", "How long the collector's last run took.",
                                 labels=["collector"])
    for name in sorted(collectors, key=lambda c: (COLLECTORS.index(c) if c in COLLECTORS else 99, c)):
        result = collectors[name]
        success.add_metric([name], 1.0 if result.success else 0.0)
        duration.add_metric([name], result.duration_seconds)
    yield success
    yield duration


def alert_families(alerts: Iterable[AlertEvent] | None) -> Iterator[Metric]:
    """``gpm_alerts_firing``: gpm's own firing alerts, counted per rule, GPU and severity.

    ``gpu`` is "" for an alert about the host (ollama_down) or a folder
    (disk_free; two folders firing count 2). Nothing without a database.
    """
    from prometheus_client.core import GaugeMetricFamily

    if alerts is None:
        return
    counts: dict[tuple[str, str, str], int] = {}
    for e in alerts:
        key = (visible(e.rule), "" if e.gpu_index is None else str(e.gpu_index), visible(e.severity))
        counts[key] = counts.get(key, 0) + 1
    fam = GaugeMetricFamily("gpm_alerts_firing", "Alerts of gpm's own rules firing now ([alerts]).",
                            labels=["rule", "gpu", "severity"])
    for labels, n in sorted(counts.items()):
        fam.add_metric(list(labels), float(n))
    yield fam


def build_info() -> InfoMetricFamily:
    from prometheus_client.core import InfoMetricFamily

    fam = InfoMetricFamily("gpm_build", "gpm version and runtime.")
    fam.add_metric([], {"version": __version__, "python_version": platform.python_version(),
                        "implementation": sys.implementation.name})
    return fam


def snapshot_families(snap: Snapshot, *, per_process: bool = False) -> Iterator[Metric]:
    yield build_info()
    yield from health_families(snap.collectors)
    yield from gpu_families(snap.gpus, per_process=per_process)
    yield from llm_families(snap)
    yield from alert_families(snap.alerts)


class GpmCollector:
    """Registered once; each scrape takes a fresh snapshot of the state.

    A prometheus_client collector is anything with ``collect()``."""

    def __init__(self, state: MetricsState, *, per_process: bool = False) -> None:
        self.state = state
        self.per_process = per_process

    def collect(self) -> Iterator[Metric]:
        return snapshot_families(self.state.snapshot(), per_process=self.per_process)


def make_registry(state: MetricsState, *, per_process: bool = False) -> CollectorRegistry:
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(GpmCollector(state, per_process=per_process))
    return registry


def exposition(snap: Snapshot, *, per_process: bool = False) -> bytes:
    """The text exposition (format 0.0.4) of one snapshot."""
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry

    class _Once:
        def collect(self) -> Iterator[Metric]:
            return snapshot_families(snap, per_process=per_process)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Once())
    return generate_latest(registry)


def write_textfile(path, snap: Snapshot, *, per_process: bool = False) -> None:
    """Write the exposition whole, for node_exporter's textfile collector: it
    never reads a half-written file (``gpm.outfile.replacing``)."""
    with replacing(path, mode=0o644) as sink:
        sink.write(exposition(snap, per_process=per_process))
