"""Proxied Ollama requests as GenAI spans: fake Ollama + recording proxy + a real OTLP/gRPC receiver."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest
import requests
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from gpm.llm.proxy import RecordingProxy
from gpm.store.db import open_db
from gpm.store.llm import RequestLog
from gpm.telemetry.llm import DbRequestFeed, LlmAggregator
from gpm.telemetry.proxy_hooks import ProxyHooks
from gpm.telemetry.tracing import ProxyTracer
from tests.conftest import REPO, gpm_env
from tests.fakes.ollama_server import FakeOllama, free_port
from tests.fakes.otlp_receiver import Receiver, attrs

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
FIRST_TOKEN = 0.1
INTERVAL = 0.01


@pytest.fixture
def fake():
    with FakeOllama(first_token_delay=FIRST_TOKEN, token_interval=INTERVAL, tokens=6) as server:
        yield server


@pytest.fixture
def traced(fake, tmp_path):
    """A recording proxy to the fake Ollama, with spans going to a receiver and rows to a database."""
    conn = open_db(tmp_path / "gpm.db")
    aggregator = LlmAggregator()
    with Receiver() as rx:
        tracer = ProxyTracer("proxy-host", endpoint=rx.endpoint).start()
        hooks = ProxyHooks(aggregator, tracer, upstream_url=fake.url)
        proxy = RecordingProxy(("127.0.0.1", 0), fake.url, sink=RequestLog(conn), host="proxy-host",
                               hooks=hooks).start()
        try:
            yield proxy, tracer, rx, aggregator, conn
        finally:
            proxy.stop()
            tracer.stop()
            conn.close()


def _sent_headers(fake, path: str) -> dict:
    """Headers the fake Ollama received on the last request to ``path`` (names lower-cased)."""
    (headers,) = [dict((k.lower(), v) for k, v in h) for _m, p, h, _b in fake.received if p == path][-1:]
    return headers


def _spans(rx, tracer, proxy) -> dict:
    """The spans received, once the proxy has finished every request (it does after the last byte)."""
    deadline = time.monotonic() + 10
    while proxy.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tracer.force_flush()
    return {s.name: s for s in rx.spans()}


def test_request_with_traceparent_is_a_span_in_the_callers_trace(fake, traced, tmp_path):
    proxy, tracer, rx, aggregator, conn = traced
    resp = requests.post(f"{proxy.url}/api/chat", timeout=10, headers={"traceparent": TRACEPARENT,
                                                                       "tracestate": "congo=t61rcWkgMzE"},
                         json={"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 200
    lines = [json.loads(line) for line in resp.text.splitlines()]
    assert lines[-1]["done"] is True

    span = _spans(rx, tracer, proxy)["chat llama3.2"]
    assert span.trace_id.hex() == TRACE_ID
    assert span.parent_span_id.hex() == CALLER_SPAN
    assert span.kind == Span.SPAN_KIND_CLIENT
    assert span.status.code == Status.STATUS_CODE_UNSET

    upstream = _sent_headers(fake, "/api/chat")
    version, trace_id, parent, flags = upstream["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert parent == span.span_id.hex()  # Ollama's work hangs below gpm's span, not the caller's
    assert upstream["tracestate"] == "congo=t61rcWkgMzE"

    a = attrs(span.attributes)
    row = conn.execute("SELECT prompt_tokens, completion_tokens, ttft_seconds, duration_seconds "
                       "FROM llm_requests").fetchone()
    assert row[:2] == (26, 6)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "ollama"
    assert (a["gen_ai.request.model"], a["gen_ai.response.model"]) == ("llama3.2", "llama3.2")
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (26, 6)
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["gen_ai.response.time_to_first_chunk"] == row[2] >= FIRST_TOKEN
    assert (a["server.address"], a["server.port"]) == ("127.0.0.1", fake.port)
    assert (a["url.path"], a["http.response.status_code"], a["gen_ai.request.stream"]) == ("/api/chat", 200, True)
    assert span.end_time_unix_nano - span.start_time_unix_nano == pytest.approx(row[3] * 1e9, abs=1e3)
    (event,) = span.events
    assert event.name == "gen_ai.first_token"
    assert event.time_unix_nano - span.start_time_unix_nano == pytest.approx(row[2] * 1e9, abs=1e3)
    resource = attrs(rx.trace_requests[0].resource_spans[0].resource.attributes)
    assert (resource["service.name"], resource["host.name"]) == ("gpm", "proxy-host")

    stats = aggregator.snapshot()["llama3.2"]
    assert (stats.requests, stats.prompt_tokens, stats.completion_tokens) == ({"200": 1}, 26, 6)
    standalone = DbRequestFeed(tmp_path / "gpm.db", LlmAggregator())  # what serve-metrics reads instead
    assert standalone.poll() == 1
    assert standalone.aggregator.snapshot() == aggregator.snapshot()


def test_upstream_errors_give_error_spans(fake, traced):
    proxy, tracer, rx, aggregator, _conn = traced
    missing = requests.post(f"{proxy.url}/api/generate", json={"model": "missing", "prompt": "x"}, timeout=10)
    assert missing.status_code == 404
    broken = requests.post(f"{proxy.url}/api/generate", json={"model": "error-mid-stream", "prompt": "x"},
                           timeout=10)
    assert broken.status_code == 200 and "CUDA error" in broken.text

    spans = _spans(rx, tracer, proxy)
    not_found = spans["text_completion missing"]
    assert not_found.status.code == Status.STATUS_CODE_ERROR
    assert "not found" in not_found.status.message
    assert attrs(not_found.attributes)["error.type"] == "404"
    assert not_found.parent_span_id == b""  # no traceparent: a trace of its own
    mid = spans["text_completion error-mid-stream"]
    assert mid.status.code == Status.STATUS_CODE_ERROR and "CUDA error" in mid.status.message
    assert attrs(mid.attributes)["error.type"] == "_OTHER"
    assert aggregator.snapshot()["missing"].requests == {"404": 1}


def test_ollama_down_is_a_502_error_span(tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    with Receiver() as rx:
        tracer = ProxyTracer("proxy-host", endpoint=rx.endpoint).start()
        proxy = RecordingProxy(("127.0.0.1", 0), down, hooks=ProxyHooks(tracer=tracer, upstream_url=down)).start()
        try:
            resp = requests.post(f"{proxy.url}/api/chat", headers={"traceparent": TRACEPARENT}, timeout=10,
                                 json={"model": "llama3.2", "messages": []})
            assert resp.status_code == 502
        finally:
            proxy.stop()
        spans = _spans(rx, tracer, proxy)
        tracer.stop()
    span = spans["chat llama3.2"]
    assert span.trace_id.hex() == TRACE_ID and span.parent_span_id.hex() == CALLER_SPAN
    assert span.status.code == Status.STATUS_CODE_ERROR and "cannot reach Ollama" in span.status.message
    assert attrs(span.attributes)["error.type"] == "502"


def test_an_unreachable_receiver_is_counted_and_never_slows_the_proxy(fake):
    tracer = ProxyTracer("proxy-host", endpoint=f"http://127.0.0.1:{free_port()}", timeout_secs=1).start()
    proxy = RecordingProxy(("127.0.0.1", 0), fake.url, hooks=ProxyHooks(tracer=tracer)).start()
    try:
        for _ in range(3):
            t0 = time.monotonic()
            resp = requests.post(f"{proxy.url}/api/generate", json={"model": "m", "prompt": "x", "stream": False},
                                 headers={"traceparent": TRACEPARENT}, timeout=10)
            assert resp.status_code == 200 and time.monotonic() - t0 < 1
    finally:
        proxy.stop()
        tracer.stop()
    assert tracer.counter.successes == 0 and tracer.counter.failures >= 1


def test_unrecorded_paths_pass_the_callers_trace_context_unchanged(fake, traced):
    proxy, tracer, rx, _aggregator, _conn = traced
    assert requests.get(f"{proxy.url}/api/tags", headers={"traceparent": TRACEPARENT}, timeout=10).ok
    assert _sent_headers(fake, "/api/tags")["traceparent"] == TRACEPARENT
    assert _spans(rx, tracer, proxy) == {}


def test_the_proxy_without_tracing_never_imports_opentelemetry(fake):
    code = (
        "import sys, urllib.request\n"
        "from gpm.llm.proxy import RecordingProxy\n"
        "from gpm.telemetry.proxy_hooks import ProxyHooks\n"
        f"p = RecordingProxy(('127.0.0.1', 0), {fake.url!r}, hooks=ProxyHooks()).start()\n"
        "req = urllib.request.Request(p.url + '/api/generate', data=b'{\"model\": \"m\", \"stream\": false}',"
        " headers={'traceparent': %r})\n"
        "urllib.request.urlopen(req, timeout=10).read()\n"
        "p.stop()\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'grpc'))))\n"
    ) % TRACEPARENT
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=gpm_env(), capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert out.strip() == "[]"
    assert _sent_headers(fake, "/api/generate")["traceparent"] == TRACEPARENT


def test_cli_proxy_with_otlp_exports_spans_until_sigterm(fake, tmp_path):
    db = tmp_path / "gpm.db"
    with Receiver() as rx:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpm", "--db", str(db), "ollama-watch", "--api-url", fake.url,
             "--proxy", f"127.0.0.1:{free_port()}", "--json"],
            env=gpm_env({"GPM_TELEMETRY_ENABLE_OPENTELEMETRY": "true",
                         "GPM_TELEMETRY_OTLP_ENDPOINT": rx.endpoint}),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr.readline().strip() == f"gpm: exporting a span per proxied request to {rx.endpoint}"
            url = re.search(r"recording proxy on (http://\S+)", proc.stderr.readline()).group(1)
            resp = requests.post(f"{url}/api/generate", headers={"traceparent": TRACEPARENT}, timeout=10,
                                 json={"model": "gemma4", "prompt": "hi", "stream": False})
            assert resp.status_code == 200
            row = json.loads(proc.stdout.readline())
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0  # stopping flushes the last spans
        finally:
            proc.kill()
        (span,) = rx.spans()
    assert span.name == "text_completion gemma4"
    assert span.trace_id.hex() == TRACE_ID and span.parent_span_id.hex() == CALLER_SPAN
    a = attrs(span.attributes)
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (row["prompt_tokens"], 6)
    assert _sent_headers(fake, "/api/generate")["traceparent"].split("-")[2] == span.span_id.hex()


def test_cli_otlp_flag_needs_the_proxy(gpm, tmp_path):
    proc = gpm("--db", tmp_path / "gpm.db", "ollama-watch", "--otlp")
    assert proc.returncode == 2
    assert proc.stderr == "gpm: --otlp needs --proxy: spans are made of proxied requests\n"
