"""OTLP export, received by a real gRPC server built from opentelemetry-proto's service stubs."""

from __future__ import annotations

import logging
import socket
import time

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from gpm.telemetry.llm import DURATION_BUCKETS_SECONDS, TTFT_BUCKETS_SECONDS, LlmRequest
from gpm.telemetry.otlp import OtlpMetrics
from gpm.telemetry.proxy_hooks import ProxyHooks
from gpm.telemetry.state import MetricsState
from gpm.telemetry.tracing import ProxyTracer, record_request_span
from tests.fakes.otlp_receiver import Receiver, attrs as _attrs
from tests.fakes.telemetry_data import gpus, requests


def _num(point) -> float:
    return getattr(point, point.WhichOneof("value"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_names_units_values_attributes_resource():
    state = MetricsState("otlp-host")
    state.publish_gpus(gpus(2), source="nvml", duration_seconds=0.003)
    with Receiver() as rx:
        exporter = OtlpMetrics(state, endpoint=rx.endpoint, interval_secs=60).start()
        try:
            state.llm.observe_many(requests())
            assert exporter.force_flush() is True
        finally:
            exporter.stop()
        assert (exporter.counter.failures, exporter.counter.successes, len(rx.metric_requests)) == (0, 2, 2)
        resource = _attrs(rx.metric_requests[0].resource_metrics[0].resource.attributes)
        metrics = rx.metrics()

    assert resource["service.name"] == "gpm"
    assert resource["service.version"] == __import__("gpm").__version__
    assert resource["host.name"] == "otlp-host"

    units = {name: m.unit for name, m in metrics.items()}
    assert units == {
        "hw.gpu.utilization": "1", "hw.gpu.memory.usage": "By", "hw.gpu.memory.limit": "By",
        "hw.power": "W", "hw.energy": "J", "hw.temperature": "Cel",
        "gen_ai.client.token.usage": "{token}", "gen_ai.server.time_to_first_token": "s",
        "gen_ai.server.time_per_output_token": "s", "gen_ai.server.request.duration": "s",
    }

    def points(name: str, kind: str) -> dict:
        data = getattr(metrics[name], kind)
        return {_attrs(p.attributes)["hw.id"]: (p, _attrs(p.attributes)) for p in data.data_points}

    uuid1 = "GPU-00000001-aaaa-bbbb-cccc-ddddeeeeffff"
    util = points("hw.gpu.utilization", "gauge")
    p, attrs = util[uuid1]
    assert _num(p) == pytest.approx(0.10)
    assert attrs == {"hw.id": uuid1, "hw.name": "NVIDIA GeForce RTX 4090", "hw.type": "gpu",
                     "hw.driver_version": "550.54.14", "hw.gpu.task": "general"}
    mem = metrics["hw.gpu.memory.usage"].sum
    assert not mem.is_monotonic
    assert {_attrs(p.attributes)["hw.id"]: _num(p) for p in mem.data_points}[uuid1] == 2 * 2**30
    assert _num(points("hw.gpu.memory.limit", "sum")[uuid1][0]) == 24 * 2**30
    assert _num(points("hw.power", "gauge")[uuid1][0]) == 101.5
    energy = metrics["hw.energy"].sum
    assert energy.is_monotonic
    assert _num(points("hw.energy", "sum")[uuid1][0]) == pytest.approx(123457.789)
    assert _num(points("hw.temperature", "gauge")[uuid1][0]) == 41

    ttft = metrics["gen_ai.server.time_to_first_token"].histogram.data_points
    by_op = {(_attrs(p.attributes)["gen_ai.request.model"], _attrs(p.attributes)["gen_ai.operation.name"]): p
             for p in ttft}
    chat = by_op[("llama3.2", "chat")]
    assert list(chat.explicit_bounds) == list(TTFT_BUCKETS_SECONDS)
    assert chat.count == 1 and chat.sum == pytest.approx(0.3)
    assert by_op[("llama3.2", "text_completion")].sum == pytest.approx(0.05)
    assert _attrs(chat.attributes)["gen_ai.provider.name"] == "ollama"
    durations = metrics["gen_ai.server.request.duration"].histogram.data_points
    failed = [p for p in durations if _attrs(p.attributes).get("error.type") == "502"]
    assert len(failed) == 1 and failed[0].count == 1
    assert list(failed[0].explicit_bounds) == list(DURATION_BUCKETS_SECONDS)
    tokens = metrics["gen_ai.client.token.usage"].histogram.data_points
    out_tokens = {(_attrs(p.attributes)["gen_ai.request.model"], _attrs(p.attributes)["gen_ai.token.type"],
                   _attrs(p.attributes)["gen_ai.operation.name"]): p.sum for p in tokens}
    assert out_tokens[("llama3.2", "output", "chat")] == 18
    assert out_tokens[("llama3.2", "input", "text_completion")] == 10
    assert out_tokens[("nomic-embed-text", "input", "embeddings")] == 12


def test_endpoint_down_never_slows_sampling_and_failures_are_counted(caplog):
    port = _free_port()
    state = MetricsState("h")
    exporter = OtlpMetrics(state, endpoint=f"http://127.0.0.1:{port}", interval_secs=1).start()
    caplog.set_level(logging.WARNING, logger="gpm.telemetry")
    try:
        # a daemon-like loop: 40 samples 50 ms apart while exports fail
        start = time.monotonic()
        slowest = 0.0
        for i in range(40):
            t0 = time.monotonic()
            state.publish_gpus(gpus(2, processes=2), source="nvml", duration_seconds=0.001)
            state.snapshot()
            slowest = max(slowest, time.monotonic() - t0)
            time.sleep(0.05)
        elapsed = time.monotonic() - start
        assert slowest < 0.05
        assert elapsed < 40 * 0.05 + 0.5
        deadline = time.monotonic() + 10
        while exporter.counter.failures < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert exporter.counter.failures >= 1
        assert exporter.counter.successes == 0
        assert exporter.force_flush() is False
        failures_logged = [r for r in caplog.records if "failed; retrying with back-off" in r.getMessage()]
        assert len(failures_logged) == 1

        # the receiver comes up: the next export after the back-off gets through, and that is logged
        with Receiver(port) as rx:
            deadline = time.monotonic() + 15
            while exporter.counter.successes < 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert exporter.counter.successes >= 1
            assert "hw.gpu.memory.usage" in rx.metrics()
            assert any("works again" in r.getMessage() for r in caplog.records)
            exporter.stop()  # its last export goes out while the receiver still listens
    finally:
        exporter.stop()


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def test_proxy_span_joins_the_callers_trace_and_passes_it_on():
    with Receiver() as rx:
        tracer = ProxyTracer("trace-host", endpoint=rx.endpoint).start()
        hooks = ProxyHooks(tracer=tracer)
        try:
            handle = hooks.begin({"TraceParent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "vendor=x"})
            forwarded = handle.forward_headers()
            ok = requests()[0]
            handle.finish(ok)
            failed = LlmRequest(model="qwen2.5:7b", endpoint="/api/chat", status=502, error="upstream down",
                                start_ms=int(time.time() * 1000), duration_seconds=0.003)
            record_request_span(failed, None, tracer)
            assert tracer.force_flush()
        finally:
            tracer.stop()
        spans = {s.name: s for s in rx.spans()}
        resource = _attrs(rx.trace_requests[0].resource_spans[0].resource.attributes)

    assert resource["service.name"] == "gpm" and resource["host.name"] == "trace-host"
    version, trace_id, parent_id, flags = forwarded["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert forwarded["tracestate"] == "vendor=x"

    span = spans["chat llama3.2"]
    assert span.trace_id.hex() == TRACE_ID
    assert span.parent_span_id.hex() == PARENT_ID
    assert span.span_id.hex() == parent_id  # Ollama's side hangs below our span
    assert span.kind == Span.SPAN_KIND_CLIENT
    attrs = _attrs(span.attributes)
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "ollama"
    assert attrs["gen_ai.request.model"] == "llama3.2"
    assert attrs["gen_ai.usage.input_tokens"] == 26 and attrs["gen_ai.usage.output_tokens"] == 18
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["gen_ai.response.time_to_first_chunk"] == 0.3
    assert span.end_time_unix_nano - span.start_time_unix_nano == 2_000_000_000
    (event,) = span.events
    assert event.name == "gen_ai.first_token"
    assert event.time_unix_nano - span.start_time_unix_nano == 300_000_000
    assert span.status.code == Status.STATUS_CODE_UNSET

    err = spans["chat qwen2.5:7b"]
    assert err.parent_span_id == b"" and err.trace_id.hex() != TRACE_ID
    assert err.status.code == Status.STATUS_CODE_ERROR
    assert _attrs(err.attributes)["error.type"] == "502"


def test_without_tracing_the_callers_headers_pass_unchanged():
    hooks = ProxyHooks()
    handle = hooks.begin({"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "Accept": "x"})
    assert handle.forward_headers() == {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    assert ProxyHooks().begin({}).forward_headers() == {}


def test_http_protobuf_transport_posts_to_v1_metrics():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
        ExportMetricsServiceResponse,
    )

    got: list[tuple[str, str, ExportMetricsServiceRequest]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.path, self.headers["Content-Type"], ExportMetricsServiceRequest.FromString(body)))
            reply = ExportMetricsServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state = MetricsState("h")
    state.publish_gpus(gpus(1), source="nvml", duration_seconds=0.001)
    exporter = OtlpMetrics(state, endpoint=f"http://127.0.0.1:{server.server_address[1]}",
                           protocol="http/protobuf", interval_secs=60).start()
    try:
        assert exporter.force_flush() is True
    finally:
        exporter.stop()
        server.shutdown()
        server.server_close()
    path, ctype, req = got[0]
    assert path == "/v1/metrics" and ctype == "application/x-protobuf"
    names = {m.name for rm in req.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {"hw.gpu.utilization", "hw.power", "hw.energy"} <= names
