"""What the Ollama recording proxy calls for telemetry, in three lines.

::

    handle = hooks.begin(request_headers)          # when a request arrives
    upstream_headers.update(handle.forward_headers())
    ...                                             # proxy the request
    handle.finish(row)                              # when its llm_requests row is written

``finish`` feeds the Prometheus/OTLP totals (``LlmAggregator``) and, when
OTLP is on, ends the request's span. Without a tracer the caller's
``traceparent``/``tracestate`` are passed on unchanged. Nothing here imports
OpenTelemetry: the tracer, when given, was built by whoever turned OTLP on,
so the proxy stays free of it unless tracing is wanted.
"""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import urlsplit

from gpm.telemetry.llm import LlmAggregator, LlmRequest

TRACE_HEADERS = ("traceparent", "tracestate")


def trace_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The W3C trace-context headers of a request (names case-insensitive)."""
    lower = {k.lower(): v for k, v in headers.items()}
    return {k: lower[k] for k in TRACE_HEADERS if k in lower}


class ProxyHooks:
    """``upstream_url`` (Ollama's address) fills the spans' ``server.address``/``server.port``."""

    def __init__(self, aggregator: LlmAggregator | None = None, tracer=None, *,
                 upstream_url: str | None = None) -> None:
        self.aggregator = aggregator
        self.tracer = tracer  # a started gpm.telemetry.tracing.ProxyTracer, or None
        self.server_address: str | None = None
        self.server_port: int | None = None
        if upstream_url:
            parts = urlsplit(upstream_url)
            self.server_address = parts.hostname
            self.server_port = parts.port or (443 if parts.scheme == "https" else 80)

    def begin(self, headers: Mapping[str, str] | None = None, *,
              start_ns: int | None = None) -> "RequestHandle":
        """``start_ns``: when the request reached the proxy (Unix ns; default now)."""
        headers = headers or {}
        span = self.tracer.begin(headers, start_ns=start_ns) if self.tracer is not None else None
        return RequestHandle(self, span, trace_headers(headers))


class RequestHandle:
    def __init__(self, hooks: ProxyHooks, span, incoming: dict[str, str]) -> None:
        self._hooks = hooks
        self._span = span
        self._incoming = incoming
        self._done = False

    def forward_headers(self) -> dict[str, str]:
        """Trace-context headers to send to Ollama in place of the caller's."""
        if self._span is not None:
            return self._span.forward_headers()
        return dict(self._incoming)

    def finish(self, req: LlmRequest | Mapping[str, Any]) -> None:
        """End the request with its ``LlmRequest`` or its ``llm_requests`` row; once only."""
        if self._done:
            return
        self._done = True
        if not isinstance(req, LlmRequest):
            req = LlmRequest.from_row(req)
        if req.server_address is None and self._hooks.server_address:
            req.server_address = self._hooks.server_address
            req.server_port = self._hooks.server_port
        if self._hooks.aggregator is not None:
            self._hooks.aggregator.observe(req)
        if self._span is not None:
            self._span.finish(req)
