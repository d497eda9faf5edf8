"""Request rows from Ollama's answers: real doc examples and the API's traps."""

from __future__ import annotations

import json

import pytest

from gpm.jsontext import TooDeep
from gpm.llm.record import ExchangeRecorder
from tests.conftest import FIXTURES

OLLAMA = FIXTURES / "ollama"
needs_fixtures = pytest.mark.skipif(not OLLAMA.is_dir(), reason="../shared/fixtures/ollama not present")


def record(endpoint, request, content_type, pieces, *, status=200, end=1.0, store_prompts=False, error=None):
    """Feed ``pieces`` as (seconds after start, bytes) and finish at ``end``."""
    rec = ExchangeRecorder(endpoint, json.dumps(request).encode(), t0=100.0, ts_ms=1_700_000_000_000,
                           host="box", store_prompts=store_prompts)
    rec.started(status, content_type)
    for at, data in pieces:
        rec.feed(data, 100.0 + at)
    return rec.finish(100.0 + end, 1_700_000_000_000 + int(end * 1000), error)


def ndjson(*objs) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


def fixture(name):
    return json.loads((OLLAMA / name).read_text())


@needs_fixtures
def test_streamed_generate_from_the_docs_example():
    chunk, final = fixture("api-generate-stream.chunk.json"), fixture("api-generate-stream.final.json")
    # No "stream" in the request: Ollama streams by default.
    row = record("/api/generate", {"model": "llama3.2", "prompt": "Why is the sky blue?"},
                 "application/x-ndjson", [(0.5, ndjson(chunk)), (2.0, ndjson(final))], end=2.0)
    assert row["stream"] is True
    assert row["model"] == "llama3.2"
    assert row["prompt_tokens"] == 26 and row["completion_tokens"] == 259
    assert row["ttft_seconds"] == pytest.approx(0.5)
    assert row["tpot_seconds"] == pytest.approx(1.5 / 258)
    assert row["tokens_per_second"] == pytest.approx(259 / 4.232710)
    assert row["prompt_tokens_per_second"] == pytest.approx(26 / 0.130079)
    assert row["load_seconds"] == pytest.approx(6.338219291)
    assert row["ollama_total_seconds"] == pytest.approx(10.706818083)
    assert row["eval_seconds"] == pytest.approx(4.23271)
    assert row["duration_seconds"] == pytest.approx(2.0)
    assert row["error"] is None and row["status"] == 200
    assert row["prompt"] is None and row["response"] is None


@needs_fixtures
def test_chat_tool_call_counts_as_first_content():
    chunk = fixture("api-chat-stream-tools.chunk.json")
    final = fixture("api-chat-stream-tools.final.json")
    row = record("/api/chat", {"model": "llama3.2", "messages": [], "stream": True},
                 "application/x-ndjson", [(0.2, ndjson(chunk)), (0.3, ndjson(final))], end=0.3)
    assert row["ttft_seconds"] == pytest.approx(0.2)
    assert row["done_reason"] == "stop"
    assert row["completion_tokens"] == 15


@needs_fixtures
@pytest.mark.parametrize("name", ["api-chat-nostream.response.json", "openapi.api-generate.example.json",
                                  "docs-api-usage.generate-nostream.response.json"])
def test_non_streamed_answers_give_ollama_metrics_but_no_ttft(name):
    body = (OLLAMA / name).read_bytes()
    endpoint = "/api/chat" if "chat" in name else "/api/generate"
    row = record(endpoint, {"model": "m", "stream": False}, "application/json; charset=utf-8",
                 [(0.9, body[:10]), (1.0, body[10:])])
    answer = json.loads(body)
    assert row["stream"] is False
    assert row["ttft_seconds"] is None and row["tpot_seconds"] is None
    assert row["completion_tokens"] == answer["eval_count"]
    assert row["tokens_per_second"] == pytest.approx(answer["eval_count"] / answer["eval_duration"] * 1e9)


@needs_fixtures
def test_load_only_answer_has_no_metrics_at_all():
    # {"model","created_at","response":"","done":true}: every metric omitted, so unknown (None), not 0.
    row = record("/api/generate", {"model": "llama3.2"}, "application/json",
                 [(0.1, (OLLAMA / "api-generate-load.response.json").read_bytes())])
    for key in ("prompt_tokens", "completion_tokens", "tokens_per_second", "load_seconds", "eval_seconds",
                "ttft_seconds", "tpot_seconds"):
        assert row[key] is None, key
    assert row["error"] is None


@needs_fixtures
def test_docs_stream_without_metrics_on_the_done_line():
    lines = (OLLAMA / "docs-api-streaming.generate-stream.ndjson").read_bytes().splitlines(keepends=True)
    row = record("/api/generate", {"model": "gemma4", "prompt": "x"}, "application/x-ndjson",
                 [(0.1 * (i + 1), line) for i, line in enumerate(lines)], end=0.8)
    assert row["ttft_seconds"] == pytest.approx(0.1)
    assert row["done_reason"] == "stop"
    assert row["completion_tokens"] is None and row["tokens_per_second"] is None


@needs_fixtures
def test_v1_chat_stream_with_include_usage():
    sse = (OLLAMA / "v1-chat-completions-stream-include_usage.DERIVED.sse").read_bytes()
    request = {"model": "llama3.2", "messages": [], "stream": True, "stream_options": {"include_usage": True}}
    # Split mid-event to prove lines are reassembled across pieces.
    row = record("/v1/chat/completions", request, "text/event-stream",
                 [(0.3, sse[:50]), (0.31, sse[50:300]), (0.5, sse[300:])], end=0.5)
    assert row["ttft_seconds"] == pytest.approx(0.31)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (26, 2)
    assert row["done_reason"] == "stop"
    assert row["tokens_per_second"] == pytest.approx(1 / 0.19)  # wall-based: no Ollama timings on /v1


def test_error_as_the_last_ndjson_line():
    row = record("/api/chat", {"model": "m", "messages": []}, "application/x-ndjson", [
        (0.1, ndjson({"model": "m", "message": {"role": "assistant", "content": "Hi"}, "done": False})),
        (0.2, ndjson({"error": "an error was encountered while running the model"})),
    ])
    assert row["error"] == "an error was encountered while running the model"
    assert row["ttft_seconds"] == pytest.approx(0.1)


def test_http_error_answer_and_openai_error_object():
    row = record("/api/generate", {"model": "missing"}, "application/json", [
        (0.01, b'{"error":"model \\"missing\\" not found, try pulling it first"}')], status=404)
    assert row["status"] == 404 and "not found" in row["error"]
    row = record("/v1/chat/completions", {"model": "x"}, "application/json", [
        (0.01, b'{"error":{"message":"model is required","type":"api_error"}}')], status=400)
    assert row["error"] == "model is required"


def test_v1_stream_without_include_usage_has_ttft_but_no_tokens():
    events = b"".join(b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": t},
                                                          "finish_reason": None}]}).encode() + b"\n\n"
                      for t in ("a", "b"))
    events += b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}\n\ndata: [DONE]\n\n'
    row = record("/v1/chat/completions", {"model": "m", "stream": True}, "text/event-stream",
                 [(0.25, events)], end=0.4)
    assert row["ttft_seconds"] == pytest.approx(0.25)
    assert row["completion_tokens"] is None and row["tokens_per_second"] is None
    assert row["done_reason"] == "length" and row["error"] is None


def test_v1_completions_zero_usage_on_every_chunk_is_ignored():
    zero = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    chunks = [{"choices": [{"text": "x", "index": 0, "finish_reason": None}], "usage": zero},
              {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}]
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    row = record("/v1/completions", {"model": "m", "stream": True}, "text/event-stream", [(0.1, body)])
    assert (row["prompt_tokens"], row["completion_tokens"]) == (5, 3)
    cut = record("/v1/completions", {"model": "m", "stream": True}, "text/event-stream",
                 [(0.1, body[: body.index(b"\n\n") + 2])])
    assert cut["completion_tokens"] is None


def test_openai_stream_defaults_to_false_and_native_embed_is_not_streamed():
    assert record("/v1/chat/completions", {"model": "m"}, "application/json", [])["stream"] is False
    assert record("/api/embed", {"model": "m", "input": "x"}, "application/json", [])["stream"] is False
    assert record("/api/chat", {"model": "m", "stream": False}, "application/json", [])["stream"] is False


def test_malformed_line_is_skipped_and_noted():
    row = record("/api/generate", {"model": "m"}, "application/x-ndjson", [
        (0.1, b'{"response": "a", "done": false}\n{"resp\n'),
        (0.2, ndjson({"response": "", "done": True, "eval_count": 2, "eval_duration": 10**8})),
    ])
    assert row["completion_tokens"] == 2
    assert row["error"] == "1 malformed chunk(s) from Ollama"


def test_prompts_and_responses_only_when_asked():
    pieces = [(0.1, ndjson({"message": {"role": "assistant", "content": "Hel"}, "done": False},
                           {"message": {"role": "assistant", "content": "lo"}, "done": False}))]
    request = {"model": "m", "messages": [{"role": "user", "content": "secret"}]}
    assert record("/api/chat", request, "application/x-ndjson", pieces)["prompt"] is None
    row = record("/api/chat", request, "application/x-ndjson", pieces, store_prompts=True)
    assert json.loads(row["prompt"]) == {"messages": [{"role": "user", "content": "secret"}]}
    assert row["response"] == "Hello"


def test_the_proxys_error_unless_ollama_named_one():
    line = ndjson({"response": "a", "done": False})
    row = record("/api/generate", {"model": "m"}, "application/x-ndjson", [(0.1, line)],
                 error="client disconnected")
    assert row["error"] == "client disconnected"
    # The ollama client raises on an error line and hangs up: the cause is Ollama's error.
    row = record("/api/generate", {"model": "m"}, "application/x-ndjson",
                 [(0.1, line + ndjson({"error": "CUDA error"}))], error="client disconnected")
    assert row["error"] == "CUDA error"


def test_deeply_nested_json_from_ollama_is_a_malformed_line_not_a_crash():
    """5,000 nested arrays raise RecursionError in json.loads; it is malformed input (#12.11)."""
    deep = b"[" * 5000 + b"]" * 5000 + b"\n"
    final = {"model": "m", "done": True, "eval_count": 3, "prompt_eval_count": 2}
    row = record("/api/generate", {"model": "m", "prompt": "hi"}, "application/x-ndjson",
                 [(0.1, deep), (0.5, ndjson(final))], end=0.5)
    assert (row["completion_tokens"], row["prompt_tokens"]) == (3, 2)
    with pytest.raises(TooDeep):  # the proxy answers such a request 400 (tests/faults/test_server_faults.py)
        ExchangeRecorder("/api/generate", b"[" * 5000 + b"]" * 5000, t0=0.0, ts_ms=0, host="box")
