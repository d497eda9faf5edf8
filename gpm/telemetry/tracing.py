"""One OTLP span per request through the Ollama recording proxy.

Spans follow the GenAI span conventions: name ``"{operation} {model}"``, kind
CLIENT (the proxy is Ollama's client), ``gen_ai.operation.name``,
``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.usage.*_tokens``,
``gen_ai.response.finish_reasons``, ``gen_ai.response.time_to_first_chunk``
(and a ``gen_ai.first_token`` event at that moment), error status with
``error.type``.

A request carrying a W3C ``traceparent`` joins the caller's trace. Two ways
to use it from the proxy:

- live: ``span = tracer.begin(incoming_headers)`` when the request arrives,
  send ``span.forward_headers()`` to Ollama (our span becomes the parent of
  whatever Ollama or a collector in between traces), ``span.finish(record)``
  when the response is done;
- after the fact: ``record_request_span(record, traceparent, tracer)``, when
  only the finished record is at hand (the caller's ``traceparent`` is then
  forwarded unchanged).

OpenTelemetry is imported inside the functions that use it: the commands that
import this module (``gpm ollama-watch``, the daemon) start without it, and
``gpm --help`` never loads it.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING, Mapping

from gpm import __version__
from gpm.telemetry.llm import LlmRequest
from gpm.telemetry.otlp import (
    PROVIDER,
    ExportCounter,
    error_type,
    make_resource,
    quiet_sdk_exporter_logs,
    signal_endpoint,
)
from gpm.telemetry.proxy_hooks import trace_headers

if TYPE_CHECKING:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger("gpm.telemetry")


@functools.cache
def _propagator() -> TraceContextTextMapPropagator:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


class CountingSpanExporter:
    """Wraps the SDK's span exporter (it has the ``SpanExporter`` methods the
    batch processor calls): counts, logs once, backs off."""

    def __init__(self, inner: SpanExporter, counter: ExportCounter) -> None:
        self.inner = inner
        self.counter = counter

    def export(self, spans) -> SpanExportResult:
        from opentelemetry.sdk.trace.export import SpanExportResult

        if not self.counter.should_try():
            return SpanExportResult.FAILURE
        try:
            result = self.inner.export(spans)
        except Exception:  # noqa: BLE001
            result = SpanExportResult.FAILURE
        self.counter.record(result == SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def span_exporter(endpoint: str, protocol: str, timeout_secs: float) -> SpanExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"),
                                timeout=timeout_secs)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter(endpoint=signal_endpoint(endpoint, protocol, "traces"), timeout=timeout_secs)


class ProxyTracer:
    """Owns the tracer provider; the daemon starts and stops it with OTLP."""

    def __init__(self, host: str, *, endpoint: str = "http://localhost:4317", protocol: str = "grpc",
                 exporter: SpanExporter | None = None, timeout_secs: float = 10.0,
                 max_backoff_secs: float = 300.0) -> None:
        self.host = host
        self.endpoint = endpoint
        self.counter = ExportCounter("traces", endpoint, min_backoff_secs=5.0,
                                     max_backoff_secs=max_backoff_secs)
        inner = exporter if exporter is not None else span_exporter(endpoint, protocol, timeout_secs)
        self.exporter = CountingSpanExporter(inner, self.counter)
        self.provider: TracerProvider | None = None
        self.tracer: trace.Tracer | None = None

    def start(self) -> "ProxyTracer":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        quiet_sdk_exporter_logs()
        self.provider = TracerProvider(resource=make_resource(self.host))
        self.provider.add_span_processor(BatchSpanProcessor(self.exporter, schedule_delay_millis=1000))
        self.tracer = self.provider.get_tracer("gpm.proxy", __version__)
        return self

    def begin(self, headers: Mapping[str, str] | None = None, *,
              start_ns: int | None = None) -> "RequestSpan":
        from opentelemetry.trace import SpanKind

        assert self.tracer is not None, "start() first"
        parent = _propagator().extract(trace_headers(headers or {}))
        span = self.tracer.start_span("chat", context=parent, kind=SpanKind.CLIENT,
                                      start_time=start_ns or time.time_ns())
        return RequestSpan(span)

    def force_flush(self, timeout_millis: int = 10_000) -> bool:
        return self.provider.force_flush(timeout_millis) if self.provider else False

    def stop(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()
            self.provider = None
            self.tracer = None


class RequestSpan:
    """The span of one request in flight."""

    def __init__(self, span: trace.Span) -> None:
        self.span = span

    def forward_headers(self) -> dict[str, str]:
        """``traceparent`` (and ``tracestate``) to send upstream: our span is the parent."""
        from opentelemetry import trace

        carrier: dict[str, str] = {}
        _propagator().inject(carrier, context=trace.set_span_in_context(self.span))
        return carrier

    @property
    def traceparent(self) -> str:
        return self.forward_headers()["traceparent"]

    def finish(self, req: LlmRequest, *, end_ns: int | None = None) -> None:
        from opentelemetry.trace import Status, StatusCode

        span = self.span
        model = req.model or "unknown"
        span.update_name(f"{req.operation} {model}")
        span.set_attributes(request_attributes(req))
        start_ns = span.start_time or time.time_ns()
        if req.ttft_seconds is not None:
            span.add_event("gen_ai.first_token", {"gen_ai.response.time_to_first_chunk": req.ttft_seconds},
                           timestamp=start_ns + int(req.ttft_seconds * 1e9))
        err = error_type(req)
        if err is not None:
            span.set_attribute("error.type", err)
            span.set_status(Status(StatusCode.ERROR, req.error or f"HTTP {req.status}"))
        if end_ns is None and req.duration_seconds is not None:
            end_ns = start_ns + int(req.duration_seconds * 1e9)
        span.end(end_time=end_ns)


def request_attributes(req: LlmRequest) -> dict:
    attrs: dict = {
        "gen_ai.operation.name": req.operation,
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.request.model": req.model or "unknown",
    }
    if req.model:
        attrs["gen_ai.response.model"] = req.model
    if req.prompt_tokens is not None:
        attrs["gen_ai.usage.input_tokens"] = req.prompt_tokens
    if req.completion_tokens is not None:
        attrs["gen_ai.usage.output_tokens"] = req.completion_tokens
    if req.done_reason:
        attrs["gen_ai.response.finish_reasons"] = [req.done_reason]
    if req.ttft_seconds is not None:
        attrs["gen_ai.response.time_to_first_chunk"] = req.ttft_seconds
    if req.status is not None:
        attrs["http.response.status_code"] = req.status
    if req.server_address:
        attrs["server.address"] = req.server_address
        if req.server_port:
            attrs["server.port"] = req.server_port
    if req.endpoint:
        attrs["url.path"] = req.endpoint
    if req.stream is not None:
        attrs["gen_ai.request.stream"] = req.stream
    return attrs


def record_request_span(req: LlmRequest, traceparent: str | None, tracer: ProxyTracer,
                        tracestate: str | None = None) -> RequestSpan:
    """A span for a finished request, joined to the caller's trace if any."""
    headers = {"traceparent": traceparent} if traceparent else {}
    if tracestate:
        headers["tracestate"] = tracestate
    start_ns = req.start_ms * 1_000_000 if req.start_ms is not None else None
    span = tracer.begin(headers, start_ns=start_ns)
    span.finish(req)
    return span
