"""What the Ollama recording proxy calls for telemetry, in two lines.

::

    handle = hooks.begin(request_headers)          # when a request arrives
    upstream_headers.update(handle.forward_headers())
    ...                                             # proxy the request
    handle.finish(LlmRequest.from_row(row))         # when its row is written

``finish`` feeds the Prometheus/OTLP totals (``LlmAggregator``) and, when
OTLP is on, ends the request's span. Without a tracer the caller's
``traceparent``/``tracestate`` are passed on unchanged. Nothing here imports
OpenTelemetry: the tracer, when given, was built by whoever turned OTLP on.
"""

from __future__ import annotations

from typing import Mapping

from gpm.telemetry.llm import LlmAggregator, LlmRequest

_TRACE_HEADERS = ("traceparent", "tracestate")


class ProxyHooks:
    def __init__(self, aggregator: LlmAggregator | None = None, tracer=None) -> None:
        self.aggregator = aggregator
        self.tracer = tracer  # a started gpm.telemetry.tracing.ProxyTracer, or None

    def begin(self, headers: Mapping[str, str] | None = None) -> "RequestHandle":
        headers = headers or {}
        span = self.tracer.begin(headers) if self.tracer is not None else None
        lower = {k.lower(): v for k, v in headers.items()}
        incoming = {k: lower[k] for k in _TRACE_HEADERS if k in lower}
        return RequestHandle(self, span, incoming)


class RequestHandle:
    def __init__(self, hooks: ProxyHooks, span, incoming: dict[str, str]) -> None:
        self._hooks = hooks
        self._span = span
        self._incoming = incoming
        self._done = False

    def forward_headers(self) -> dict[str, str]:
        """Trace-context headers to send to Ollama with the proxied request."""
        if self._span is not None:
            return self._span.forward_headers()
        return dict(self._incoming)

    def finish(self, req: LlmRequest) -> None:
        if self._done:
            return
        self._done = True
        if self._hooks.aggregator is not None:
            self._hooks.aggregator.observe(req)
        if self._span is not None:
            self._span.finish(req)
