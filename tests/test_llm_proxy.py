"""The recording proxy with real clients: the official ollama library, requests and raw sockets."""

from __future__ import annotations

import json
import socket
import threading
import time

import ollama
import pytest
import requests

from gpm.llm.proxy import RecordingProxy
from gpm.store.db import open_db
from gpm.store.llm import RequestLog
from tests.fakes.ollama_server import FakeOllama, free_port

FIRST_TOKEN = 0.15
INTERVAL = 0.025
TOKENS = 12


class Rows(list):
    """A sink that also lets a test wait for rows to arrive."""

    def __init__(self):
        super().__init__()
        self.cv = threading.Condition()

    def __call__(self, row):
        with self.cv:
            self.append(row)
            self.cv.notify_all()

    def wait_for(self, n, timeout=10.0):
        with self.cv:
            assert self.cv.wait_for(lambda: len(self) >= n, timeout), f"{len(self)} rows, expected {n}"
        return list(self)


@pytest.fixture
def fake():
    with FakeOllama(first_token_delay=FIRST_TOKEN, token_interval=INTERVAL, tokens=TOKENS) as server:
        yield server


@pytest.fixture
def rows():
    return Rows()


@pytest.fixture
def proxy(fake, rows):
    p = RecordingProxy(("127.0.0.1", 0), fake.url, sink=rows, host="box").start()
    yield p
    p.stop()


def close_to(value, expected, rel=0.10):
    return value is not None and abs(value - expected) <= rel * expected


def took(value, expected, rel=0.10, late=0.05):
    """A measured time: the fake's own sleeps give the floor; a slow machine
    may add its scheduling delay (up to ``late`` seconds), never take any away."""
    return value is not None and expected * (1 - rel) <= value <= expected * (1 + rel) + late


def test_official_client_runs_everything_unchanged(proxy, fake, rows):
    client = ollama.Client(host=proxy.url)
    parts = list(client.generate(model="gemma4", prompt="Why is the sky blue?", stream=True))
    assert "".join(p.response for p in parts) == "".join(f"tok{k} " for k in range(TOKENS))
    assert parts[-1].done and parts[-1].eval_count == TOKENS
    chat = list(client.chat(model="gemma4", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert chat[-1].done_reason == "stop"
    answer = client.chat(model="gemma4", messages=[{"role": "user", "content": "hi"}], stream=False)
    assert answer.message.content.startswith("tok0 ")
    gen = client.generate(model="gemma4", prompt="x", stream=False, options={"num_predict": 4})
    assert gen.done_reason == "length" and gen.eval_count == 4
    assert len(client.embed(model="gemma4", input=["a", "b"]).embeddings) == 2
    progress = list(client.pull("gemma4", stream=True))
    assert progress[0].status == "pulling manifest" and progress[-1].status == "success"
    assert progress[-2].status == "writing manifest" and progress[1].completed < progress[1].total
    assert client.ps().models[0].context_length == 4096
    assert client.list().models[0].model == "llama3.2:latest"

    got = rows.wait_for(5)
    assert [(r["endpoint"], r["stream"]) for r in got] == [
        ("/api/generate", True), ("/api/chat", True), ("/api/chat", False), ("/api/generate", False),
        ("/api/embed", False)]
    for r in got[:2]:  # the streamed ones: gpm's own clock agrees with the fake's configured timing
        assert r["status"] == 200 and r["error"] is None and r["model"] == "gemma4"
        assert (r["prompt_tokens"], r["completion_tokens"]) == (26, TOKENS)
        assert took(r["ttft_seconds"], FIRST_TOKEN), r
        assert close_to(r["tpot_seconds"], INTERVAL), r
        assert close_to(r["tokens_per_second"], 1 / INTERVAL), r
        assert took(r["duration_seconds"], FIRST_TOKEN + (TOKENS - 1) * INTERVAL), r
        assert r["load_seconds"] == pytest.approx(0.002154458)
    assert got[2]["ttft_seconds"] is None and got[2]["completion_tokens"] == TOKENS
    assert got[3]["completion_tokens"] == 4 and got[3]["done_reason"] == "length"
    assert got[4]["prompt_tokens"] == 16 and got[4]["completion_tokens"] is None


def test_streams_are_forwarded_as_they_arrive_not_buffered(proxy, fake):
    fake.pull_steps, fake.pull_interval = 6, 0.05
    client = ollama.Client(host=proxy.url)
    arrivals = []
    start = time.perf_counter()
    for _ in client.pull("gemma4", stream=True):
        arrivals.append(time.perf_counter() - start)
    assert arrivals[0] < 0.04  # "pulling manifest" before any wait
    assert arrivals[-1] - arrivals[0] > 0.8 * 6 * 0.05
    first = None
    start = time.perf_counter()
    for _ in client.generate(model="gemma4", prompt="x", stream=True):
        first = first or time.perf_counter() - start
    last = time.perf_counter() - start
    assert FIRST_TOKEN <= first < last - (TOKENS - 1) * INTERVAL * 0.8


def test_paths_methods_headers_and_bodies_pass_unchanged(proxy, fake, rows):
    body = b'{"model":"gemma4","prompt":"hi","stream":false,"keep_alive":"10m"}'
    r = requests.post(f"{proxy.url}/api/generate?x=1", data=body,
                      headers={"X-Custom": "kept", "Authorization": "Bearer t", "Content-Type": "application/json"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json; charset=utf-8"
    method, path, headers, received = fake.received[-1]
    assert (method, path, received) == ("POST", "/api/generate?x=1", body)
    names = {k.lower(): v for k, v in headers}
    assert names["x-custom"] == "kept" and names["authorization"] == "Bearer t"
    assert names["host"] == f"127.0.0.1:{proxy.address[1]}"
    assert "connection" not in names or names["connection"] == "keep-alive"

    miss = requests.get(f"{proxy.url}/api/nothing-here")
    assert (miss.status_code, miss.text, miss.headers["Content-Type"]) == (404, "404 page not found", "text/plain")
    head = requests.head(f"{proxy.url}/api/version")
    assert head.status_code == 200 and head.content == b""
    assert requests.get(f"{proxy.url}/api/version").json() == {"version": fake.version}
    chunked = requests.post(f"{proxy.url}/api/generate", data=iter([body[:10], body[10:]]))
    assert chunked.json()["done"] is True and fake.received[-1][3] == body
    missing = requests.post(f"{proxy.url}/api/chat", json={"model": "missing", "messages": []})
    assert missing.status_code == 404 and "not found" in missing.json()["error"]
    got = rows.wait_for(3)
    assert len(got) == 3  # version, 404 path and HEAD are not LLM requests
    assert got[2]["status"] == 404 and "not found" in got[2]["error"]


def sse_events(response):
    for line in response.iter_lines():
        if line.startswith(b"data: ") and line != b"data: [DONE]":
            yield json.loads(line[6:])


@pytest.mark.parametrize("include_usage", [True, False])
def test_openai_chat_stream_with_requests(proxy, rows, include_usage):
    request = {"model": "gemma4", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    if include_usage:
        request["stream_options"] = {"include_usage": True}
    with requests.post(f"{proxy.url}/v1/chat/completions", json=request, stream=True) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        events = list(sse_events(r))
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == "".join(f"tok{k} " for k in range(TOKENS))
    (row,) = rows.wait_for(1)
    assert row["endpoint"] == "/v1/chat/completions" and row["stream"] is True
    assert took(row["ttft_seconds"], FIRST_TOKEN) and row["done_reason"] == "stop"
    assert took(row["duration_seconds"], FIRST_TOKEN + (TOKENS - 1) * INTERVAL)
    if include_usage:
        assert (row["prompt_tokens"], row["completion_tokens"]) == (26, TOKENS)
        assert close_to(row["tpot_seconds"], INTERVAL) and close_to(row["tokens_per_second"], 1 / INTERVAL)
    else:
        assert row["completion_tokens"] is None and row["tpot_seconds"] is None


def test_openai_completions_embeddings_and_non_stream(proxy, rows):
    request = {"model": "gemma4", "prompt": "x", "stream": True, "stream_options": {"include_usage": True}}
    with requests.post(f"{proxy.url}/v1/completions", json=request, stream=True) as r:
        list(sse_events(r))
    plain = requests.post(f"{proxy.url}/v1/chat/completions", json={"model": "gemma4", "messages": []}).json()
    assert plain["usage"]["completion_tokens"] == TOKENS
    emb = requests.post(f"{proxy.url}/v1/embeddings", json={"model": "gemma4", "input": ["a", "b"]}).json()
    assert len(emb["data"]) == 2
    got = rows.wait_for(3)
    assert got[0]["completion_tokens"] == TOKENS and took(got[0]["ttft_seconds"], FIRST_TOKEN)
    assert got[1]["stream"] is False and got[1]["ttft_seconds"] is None and got[1]["completion_tokens"] == TOKENS
    assert got[2]["endpoint"] == "/v1/embeddings" and got[2]["prompt_tokens"] == 16


def test_ollama_down_gives_502_json_and_a_row(rows):
    with RecordingProxy(("127.0.0.1", 0), f"http://127.0.0.1:{free_port()}", sink=rows, host="box") as p:
        r = requests.post(f"{p.url}/api/chat", json={"model": "gemma4", "messages": []})
        assert r.status_code == 502 and "connection refused" in r.json()["error"]
        with pytest.raises(ollama.ResponseError) as err:
            ollama.Client(host=p.url).generate(model="gemma4", prompt="x")
        assert err.value.status_code == 502
        assert requests.get(f"{p.url}/api/tags").status_code == 502
    got = rows.wait_for(2)
    assert [(r["status"], r["model"]) for r in got] == [(502, "gemma4"), (502, "gemma4")]
    assert all("cannot reach Ollama" in r["error"] for r in got)


def test_ollama_dying_erring_or_garbling_mid_stream(proxy, rows):
    client = ollama.Client(host=proxy.url)
    with pytest.raises(Exception):
        list(client.generate(model="die-mid-stream", prompt="x", stream=True))
    with pytest.raises(ollama.ResponseError, match="CUDA error"):
        list(client.chat(model="error-mid-stream", messages=[], stream=True))
    with requests.post(f"{proxy.url}/api/generate", json={"model": "malformed"}, stream=True) as r:
        lines = list(r.iter_lines())
    assert b'{"model": "malformed", "response": "br' in lines  # forwarded as it came
    assert ollama.Client(host=proxy.url).generate(model="gemma4", prompt="x", stream=False).done
    got = rows.wait_for(4)
    assert got[0]["error"].startswith("Ollama closed the stream early") and got[0]["ttft_seconds"]
    assert "CUDA error" in got[1]["error"]
    assert got[2]["error"] == "1 malformed chunk(s) from Ollama" and got[2]["completion_tokens"] == TOKENS
    assert got[3]["error"] is None


def raw_stream(proxy, body: dict, read_bytes: int) -> socket.socket:
    """Send a request on a raw socket and read ``read_bytes`` of the answer."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(proxy.address)
    sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
    got = b""
    while len(got) < read_bytes:
        got += sock.recv(65536)
    return sock


def test_client_disconnect_cancels_upstream(proxy, fake, rows):
    # Mid-stream: after the first token.
    sock = raw_stream(proxy, {"model": "gemma4", "prompt": "x", "options": {"num_predict": 200}}, 300)
    sock.close()
    # Before the first token: only the hang-up watcher can notice this one.
    sock = socket.create_connection(proxy.address)
    data = b'{"model": "gemma4", "prompt": "y", "options": {"num_predict": 200}}'
    sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
    time.sleep(FIRST_TOKEN / 3)
    sock.close()
    got = rows.wait_for(2, timeout=3)  # sooner than 200 tokens would take (5 s)
    assert [r["error"] for r in got] == ["client disconnected", "client disconnected"]
    assert got[0]["ttft_seconds"] is not None and got[1]["ttft_seconds"] is None
    for _ in range(50):  # the fake notices its client (the proxy) gone at its next write
        if fake.cancelled >= 2:
            break
        time.sleep(0.05)
    assert fake.cancelled == 2  # both streams, and no other
    assert requests.get(f"{proxy.url}/api/version").status_code == 200


def test_32_concurrent_streams_are_served_together_and_each_recorded(proxy, rows):
    n = 32
    results = [None] * n
    client = ollama.Client(host=proxy.url)

    def one(i):
        results[i] = "".join(p.response for p in client.generate(model="gemma4", prompt=str(i), stream=True))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(r == "".join(f"tok{k} " for k in range(TOKENS)) for r in results)
    got = rows.wait_for(n)
    assert [(r["error"], r["completion_tokens"]) for r in got] == [(None, TOKENS)] * n
    expected = FIRST_TOKEN + (TOKENS - 1) * INTERVAL
    assert min(r["duration_seconds"] for r in got) >= 0.9 * expected  # the fake's sleeps are the floor
    in_flight = max(sum(o["ts_ms"] <= r["ts_ms"] < o["end_ms"] for o in got) for r in got)
    assert in_flight >= 2, sorted((r["ts_ms"], r["end_ms"]) for r in got)  # not one after another
    # how much concurrency costs each stream: tests/benchmarks/bench_ollama_proxy.py (#14.8)


def test_stop_records_streams_in_flight_as_interrupted(fake):
    rows = Rows()
    proxy = RecordingProxy(("127.0.0.1", 0), fake.url, sink=rows, host="box").start()
    sock = raw_stream(proxy, {"model": "gemma4", "prompt": "x", "options": {"num_predict": 500}}, 300)
    try:
        started = time.perf_counter()
        proxy.stop()
        assert time.perf_counter() - started < 2
        (row,) = rows
        assert row["error"] == "interrupted: gpm proxy stopped" and row["status"] == 200
        sock.settimeout(2)
        while sock.recv(65536):  # the client's stream ends (cut, not completed)
            pass
    finally:
        sock.close()
    with pytest.raises(OSError):
        socket.create_connection(proxy.address, timeout=1).close()


def test_rows_land_in_the_database_and_prompts_only_on_request(tmp_path, fake):
    conn = open_db(tmp_path / "gpm.db")
    printed = []
    with RecordingProxy(("127.0.0.1", 0), fake.url, sink=RequestLog(conn, printed.append), host="box",
                        store_prompts=True) as p:
        ollama.Client(host=p.url).chat(model="gemma4", messages=[{"role": "user", "content": "hello"}],
                                       options={"num_predict": 3})
    row = conn.execute("SELECT id, endpoint, stream, completion_tokens, prompt, response FROM llm_requests").fetchone()
    assert row[:4] == (1, "/api/chat", 0, 3)  # the client sends stream: false
    assert json.loads(row[4]) == {"messages": [{"role": "user", "content": "hello"}]}
    assert row[5] == "tok0 tok1 tok2 "
    assert printed[0]["id"] == 1 and printed[0]["response"] == row[5]
    conn.close()
