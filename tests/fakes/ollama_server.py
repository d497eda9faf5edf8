"""A fake Ollama server that speaks the documented HTTP API, with real timing.

Field names, content types and framing follow Ollama (docs/api.md and the
source, see ../shared/reference/ollama-api.md): NDJSON streams over chunked
HTTP for ``/api/*``, server-sent events for ``/v1/*``, metrics on the
``done`` line in nanoseconds and omitted when zero. The durations it reports
are measured, like Ollama's, from its own clock.

Timing model (per streamed generation of N tokens): the first token is sent
``first_token_delay`` seconds after the request arrives, then one token every
``token_interval`` seconds. Like llama.cpp, the decode step that produced the
first token counts as eval time, so ``eval_duration`` ~= N * token_interval,
``prompt_eval_duration`` ~= first_token_delay - token_interval, and a client
should see TTFT ~= first_token_delay, TPOT ~= token_interval and
tokens/s ~= 1 / token_interval.

``options.num_predict`` in a request sets N (as with Ollama; done_reason is
then "length"). Models named for faults misbehave on purpose:
``die-mid-stream`` (connection cut after half the tokens),
``malformed`` (one line of broken JSON mid-stream), ``error-mid-stream``
(a final ``{"error": ...}`` line, as Ollama sends after a failure) and
``missing`` (404, model not found).

``fake.faults[path] = mode`` makes every request for ``path`` misbehave:
``hang`` (no answer until the fake stops, or 30 s), ``die`` (headers and a
few bytes of a longer body, then the connection is cut), ``garbage`` (200
with bytes that are not JSON), ``huge`` (the real answer padded into one
10 MB line of valid JSON) and ``endless`` (a chunked answer that never ends,
until the client goes away or 30 s pass).

Run alone (for benchmarks): ``python tests/fakes/ollama_server.py --port 0``
prints its URL and serves until SIGTERM or stdin closes.
"""

from __future__ import annotations

import argparse
import collections
import json
import signal
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

VERSION = "0.12.6"

PS_MODEL = {
    "name": "gemma4",
    "model": "gemma4",
    "size": 6591830464,
    "digest": "c6eb396dbd5992bbe3f5cdb947e8bbc0ee413d7c17e2beaae69f5d569cf982eb",
    "details": {"parent_model": "", "format": "gguf", "family": "gemma4", "families": ["gemma4"],
                "parameter_size": "8.0B", "quantization_level": "Q4_K_M"},
    "expires_at": "2025-10-17T16:47:07.93355-07:00",
    "size_vram": 5333539264,
    "context_length": 4096,
}

TAGS_MODEL = {
    "name": "llama3.2:latest",
    "model": "llama3.2:latest",
    "modified_at": "2025-05-04T17:37:44.706015396-07:00",
    "size": 2019393189,
    "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
    "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                "parameter_size": "3.2B", "quantization_level": "Q4_K_M"},
}


def free_port() -> int:
    """A port nothing listens on right now (for "Ollama is down" and proxy addresses)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def created_at() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many clients connect at once in the concurrency tests


class _Cut(Exception):
    """Drop the connection without finishing the response (a dying server)."""


class FakeOllama:
    """The fake server; ``start()``/``stop()`` or ``with FakeOllama() as fake:``."""

    def __init__(self, *, first_token_delay: float = 0.05, token_interval: float = 0.01, tokens: int = 8,
                 prompt_tokens: int = 26, load_duration_ns: int = 2154458, version: str = VERSION,
                 loaded: list[dict] | None = None, pull_steps: int = 5, pull_interval: float = 0.02,
                 port: int = 0, max_body_bytes: int | None = None) -> None:
        self.first_token_delay = first_token_delay
        self.token_interval = token_interval
        self.tokens = tokens
        self.prompt_tokens = prompt_tokens
        self.load_duration_ns = load_duration_ns
        self.version = version
        self.loaded = [dict(PS_MODEL)] if loaded is None else loaded
        self.pull_steps = pull_steps
        self.pull_interval = pull_interval
        self.received: collections.deque = collections.deque(maxlen=2000)  # (method, path, headers, body)
        self.cancelled = 0  # streams whose client went away before the end
        self.max_body_bytes = max_body_bytes  # a longer body is read, counted, dropped and answered 413
        self.body_bytes: list[int] = []  # the size of every request body received
        self.faults: dict[str, str] = {}  # path -> fault mode (see the module docstring)
        self.released = threading.Event()  # set at stop(): hanging handlers return
        self._lock = threading.Lock()
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._httpd = _Server(("127.0.0.1", port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeOllama":
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> "FakeOllama":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_fake: FakeOllama

    def log_message(self, format, *args):  # noqa: A002
        pass

    # -- plumbing ----------------------------------------------------------
    def _body(self) -> bytes | None:
        """The request body; None when it was longer than ``max_body_bytes`` (then not kept)."""
        limit = self.server_fake.max_body_bytes
        pieces, total = [], 0

        def keep(data: bytes) -> None:
            nonlocal total
            total += len(data)
            if limit is None or total <= limit:
                pieces.append(data)
            else:
                pieces.clear()

        if "chunked" in (self.headers.get("Transfer-Encoding") or ""):
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                while size:
                    data = self.rfile.read(min(size, 1 << 20))
                    size -= len(data)
                    keep(data)
                self.rfile.readline()
        else:
            keep(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.server_fake.body_bytes.append(total)
        return b"".join(pieces) if limit is None or total <= limit else None

    def _json(self, status: int, obj) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _line(self, obj) -> None:
        self._chunk(json.dumps(obj).encode() + b"\n")

    def _event(self, obj) -> None:
        self._chunk(b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n")

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def _cut(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise _Cut()

    def _fault(self, mode: str) -> None:
        fake = self.server_fake
        if mode == "hang":
            fake.released.wait(30)
            return self._cut()
        if mode == "die":
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", "4096")
            self.end_headers()
            self.wfile.write(b'{"models": [{"name": "gem')
            self.wfile.flush()
            return self._cut()
        if mode == "garbage":
            data = b"\x00\xff<html>502 Bad Gateway</html>{{{"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return None
        if mode == "huge":
            return self._json(200, {"models": fake.loaded, "version": fake.version, "padding": "x" * 10_000_000})
        if mode == "endless":
            self._start_stream("application/json")
            piece = b'{"models": [' + b" " * 65536
            deadline = time.monotonic() + 30
            try:
                while time.monotonic() < deadline and not fake.released.is_set():
                    self._chunk(piece)
            except OSError:
                pass
            return self._cut()
        raise ValueError(f"unknown fault mode {mode!r}")

    @staticmethod
    def _sleep_until(t: float) -> None:
        delay = t - time.perf_counter()
        if delay > 0:
            time.sleep(delay)

    # -- routes ------------------------------------------------------------
    def do_HEAD(self):
        self._route()

    def do_GET(self):
        self._route()

    def do_POST(self):
        self._route()

    def do_DELETE(self):
        self._route()

    def _route(self):
        fake = self.server_fake
        body = self._body()
        if body is None:
            return self._json(413, {"error": "request body too large"})
        path = urlsplit(self.path).path
        with fake._lock:
            fake.received.append((self.command, self.path, list(self.headers.items()), body))
        if path in fake.faults:
            try:
                return self._fault(fake.faults[path])
            except (_Cut, OSError):
                return None
        try:
            request = json.loads(body) if body else {}
        except ValueError:
            return self._json(400, {"error": "invalid character in request body"})
        routes = {
            ("GET", "/api/version"): lambda: self._json(200, {"version": fake.version}),
            ("HEAD", "/api/version"): lambda: self._json(200, {"version": fake.version}),
            ("GET", "/api/tags"): lambda: self._json(200, {"models": [TAGS_MODEL]}),
            ("GET", "/api/ps"): lambda: self._json(200, {"models": fake.loaded}),
            ("POST", "/api/generate"): lambda: self._generate(request, chat=False),
            ("POST", "/api/chat"): lambda: self._generate(request, chat=True),
            ("POST", "/api/embed"): lambda: self._embed(request),
            ("POST", "/api/embeddings"): lambda: self._json(200, {"embedding": [0.5, -0.25, 0.125]}),
            ("POST", "/api/pull"): lambda: self._pull(request),
            ("POST", "/v1/chat/completions"): lambda: self._openai(request, chat=True),
            ("POST", "/v1/completions"): lambda: self._openai(request, chat=False),
            ("POST", "/v1/embeddings"): lambda: self._v1_embeddings(request),
        }
        handler = routes.get((self.command, path))
        if handler is None:
            data = b"404 page not found"
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        try:
            handler()
        except _Cut:
            pass
        except (BrokenPipeError, ConnectionResetError):
            with fake._lock:
                fake.cancelled += 1
            self.close_connection = True

    def _tokens(self, request) -> tuple[int, str]:
        options = request.get("options") or {}
        n = options.get("num_predict")
        if isinstance(n, int) and n > 0:
            return n, "length"
        return self.server_fake.tokens, "stop"

    def _schedule(self, n: int) -> tuple[float, list[float]]:
        fake = self.server_fake
        start = time.perf_counter()
        return start, [start + fake.first_token_delay + k * fake.token_interval for k in range(n)]

    def _metrics(self, start: float, prompt_done: float, last: float, n: int) -> dict:
        fake = self.server_fake
        out = {
            "total_duration": int((time.perf_counter() - start) * 1e9),
            "load_duration": fake.load_duration_ns,
            "prompt_eval_count": fake.prompt_tokens,
            "prompt_eval_duration": int(max(prompt_done - start, 0) * 1e9),
            "eval_count": n,
            "eval_duration": int(max(last - prompt_done, 0) * 1e9),
        }
        return {k: v for k, v in out.items() if v}  # Go's omitempty

    def _generate(self, request, *, chat: bool):
        fake = self.server_fake
        model = request.get("model") or ""
        if model == "missing":
            return self._json(404, {"error": f'model "{model}" not found, try pulling it first'})
        n, reason = self._tokens(request)
        start, due = self._schedule(n)
        prompt_done = start + max(fake.first_token_delay - fake.token_interval, 0)
        stream = request.get("stream", True) is not False

        def piece(text: str, done: bool) -> dict:
            obj = {"model": model, "created_at": created_at()}
            if chat:
                obj["message"] = {"role": "assistant", "content": text}
            else:
                obj["response"] = text
            obj["done"] = done
            return obj

        if not stream:
            self._sleep_until(due[-1] if due else start)
            obj = piece("".join(f"tok{k} " for k in range(n)), True)
            obj["done_reason"] = reason
            if not chat:
                obj["context"] = [1, 2, 3]
            obj.update(self._metrics(start, prompt_done, due[-1] if due else start, n))
            return self._json(200, obj)

        self._start_stream("application/x-ndjson")
        last = start
        for k, t in enumerate(due):
            self._sleep_until(t)
            if model == "die-mid-stream" and k == n // 2:
                self._cut()
            if model == "malformed" and k == n // 2:
                self._chunk(b'{"model": "malformed", "response": "br\n')
            if model == "error-mid-stream" and k == n // 2:
                self._line({"error": "an error was encountered while running the model: CUDA error"})
                return self._end_stream()
            self._line(piece(f"tok{k} ", False))
            last = time.perf_counter()
        final = piece("", True)
        final["done_reason"] = reason
        if not chat:
            final["context"] = [1, 2, 3]
        final.update(self._metrics(start, prompt_done, last, n))
        self._line(final)
        self._end_stream()

    def _embed(self, request):
        fake = self.server_fake
        start = time.perf_counter()
        inputs = request.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        time.sleep(fake.token_interval)
        self._json(200, {
            "model": request.get("model"),
            "embeddings": [[0.010071029, -0.0017594862, 0.05007221] for _ in inputs],
            "total_duration": int((time.perf_counter() - start) * 1e9),
            "load_duration": fake.load_duration_ns,
            "prompt_eval_count": 8 * len(inputs),
        })

    def _pull(self, request):
        fake = self.server_fake
        if request.get("stream", True) is False:
            time.sleep(fake.pull_interval * fake.pull_steps)
            return self._json(200, {"status": "success"})
        digest = "sha256:" + "2ae6f6dd7a3dd734790bbbf58b8909a606e0e7e97e94b7604e0aa7ae4490e6d8"
        total = 2142590208
        self._start_stream("application/x-ndjson")
        self._line({"status": "pulling manifest"})
        for k in range(1, fake.pull_steps + 1):
            time.sleep(fake.pull_interval)
            self._line({"status": f"pulling {digest[7:19]}", "digest": digest, "total": total,
                        "completed": total * k // fake.pull_steps})
        for status in ("verifying sha256 digest", "writing manifest", "success"):
            self._line({"status": status})
        self._end_stream()

    def _openai(self, request, *, chat: bool):
        fake = self.server_fake
        model = request.get("model") or ""
        n, _ = self._tokens({"options": {"num_predict": request.get("max_tokens")}})
        reason = "length" if request.get("max_tokens") else "stop"
        start, due = self._schedule(n)
        created = int(time.time())
        ident = f"chatcmpl-{created % 999}" if chat else f"cmpl-{created % 999}"
        obj_kind = "chat.completion.chunk" if chat else "text_completion"
        usage = {"prompt_tokens": fake.prompt_tokens, "completion_tokens": n,
                 "total_tokens": fake.prompt_tokens + n}
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        if not request.get("stream"):
            self._sleep_until(due[-1] if due else start)
            text = "".join(f"tok{k} " for k in range(n))
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}
                      if chat else {"text": text, "index": 0, "finish_reason": reason})
            return self._json(200, {"id": ident, "object": "chat.completion" if chat else "text_completion",
                                    "created": created, "model": model, "system_fingerprint": "fp_ollama",
                                    "choices": [choice], "usage": usage})

        def chunk(choices, extra=None):
            obj = {"id": ident, "object": obj_kind, "created": created, "model": model,
                   "system_fingerprint": "fp_ollama", "choices": choices}
            if not chat and include_usage:  # /v1/completions quirk: zero usage on every chunk
                obj["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            obj.update(extra or {})
            return obj

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for k, t in enumerate(due):
            self._sleep_until(t)
            if model == "die-mid-stream" and k == n // 2:
                self._cut()
            if chat:
                delta = {"role": "assistant", "content": f"tok{k} "} if k == 0 else {"content": f"tok{k} "}
                self._event(chunk([{"index": 0, "delta": delta, "finish_reason": None}]))
            else:
                self._event(chunk([{"text": f"tok{k} ", "index": 0, "finish_reason": None}]))
        finish = ({"index": 0, "delta": {}, "finish_reason": reason} if chat
                  else {"text": "", "index": 0, "finish_reason": reason})
        self._event(chunk([finish]))
        if include_usage:
            self._event(chunk([], {"usage": usage}))
        self._event(b"[DONE]")
        self._end_stream()

    def _v1_embeddings(self, request):
        inputs = request.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        tokens = 8 * len(inputs)
        self._json(200, {
            "object": "list",
            "data": [{"object": "embedding", "embedding": [0.01, -0.02, 0.03], "index": i}
                     for i in range(len(inputs))],
            "model": request.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--first-token-delay", type=float, default=0.05)
    parser.add_argument("--token-interval", type=float, default=0.01)
    parser.add_argument("--tokens", type=int, default=8)
    args = parser.parse_args()
    fake = FakeOllama(first_token_delay=args.first_token_delay, token_interval=args.token_interval,
                      tokens=args.tokens, port=args.port).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(fake.url, flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait()
    fake.stop()


if __name__ == "__main__":
    main()
