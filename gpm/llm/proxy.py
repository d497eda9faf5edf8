"""A transparent reverse proxy in front of Ollama that records every LLM request.

Why the standard library: ``ThreadingHTTPServer`` plus ``http.client`` gives a
thread per client connection, which is what streaming wants (a slow reader
or a long generation blocks only its own thread, 32+ streams at once are
cheap), no new dependency, and nothing to install for the cron path. Bodies
are copied with ``read1()`` as they arrive and written straight to the
client, one HTTP chunk per piece, so NDJSON tokens and ``ollama pull``
progress reach the client as soon as Ollama sends them; nothing is buffered.

Transparency: method, path, query, body and headers go upstream unchanged
(hop-by-hop headers excepted, as RFC 9110 wants of any proxy); the status,
reason and headers come back unchanged; only the body framing may change
(a streamed body is re-chunked). A client that hangs up cancels the upstream
request (a watcher thread notices the EOF even while Ollama is still
thinking), so Ollama stops generating for nobody.

Recording: requests to the generation and embedding endpoints
(``gpm.llm.record.RECORDED_ENDPOINTS``) are parsed on the fly and handed,
once finished, to ``sink(row)`` — in the same thread, after the client got
the last byte. ``stop()`` cancels what is still in flight and records it as
interrupted before returning.

Hostile clients (#12.7): connections are served by
``gpm.http_server.BoundedHTTPServer`` (idle ones cost no thread; bounded
connections, workers and header time). A request body is read under a
read timeout and never buffered beyond ``MAX_RECORDED_REQUEST_BYTES``: a
larger one, announced or chunked, is streamed to Ollama and not recorded. A
malformed Content-Length or chunk size, or a body nested too deeply to
parse, is answered 400 with the reason, logged in one line.

Telemetry: with ``hooks`` (a ``gpm.telemetry.proxy_hooks.ProxyHooks``), each
recorded request is begun when it arrives, its W3C trace-context headers
are replaced by the hooks' (with OTLP on: gpm's span, child of the caller's,
becomes Ollama's parent) and it is finished with its row once the sink has
it. The proxy itself never imports OpenTelemetry.

Its parts: ``gpm.llm.request_body`` reads a client's body in pieces,
``gpm.llm.exchange`` tracks each request in flight and notices hang-ups.
"""

from __future__ import annotations

import errno
import http.client
import itertools
import json
import logging
import socket
import threading
import time
from typing import Any, Callable
from urllib.parse import urlsplit

from gpm.http_server import BoundedHTTPServer, Limits, PooledHandler, shutdown_socket as _shutdown
from gpm.jsontext import TooDeep
from gpm.llm.client import Upstream, describe_error as _reason
from gpm.llm.exchange import CLIENT_GONE, DisconnectWatcher, Exchange
from gpm.llm.record import ExchangeRecorder, is_recorded
from gpm.llm.request_body import (PIECE_BYTES, BadRequest, ClientGone, content_length, pieces_of, read_chunked,
                                  read_length, take)

log = logging.getLogger("gpm.llm.proxy")

Sink = Callable[[dict[str, Any]], None]

# RFC 9110 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "transfer-encoding", "upgrade",
})
CONNECT_TIMEOUT_SECS = 10.0
# A recorded request is parsed whole; a bigger one is forwarded unrecorded. 32 MiB keeps
# the proxy under 100 MB however large the body (#12.7); a base64 image of 20 MB fits.
MAX_RECORDED_REQUEST_BYTES = 32 * 1024 * 1024
WRITE_TIMEOUT_SECS = 600.0  # a client that stops reading its stream is let go after this long
INTERRUPTED = "interrupted: gpm proxy stopped"
_TRACE_HEADERS = frozenset({"traceparent", "tracestate"})  # W3C trace context: the hooks' replace them


def _hop_by_hop(headers) -> set[str]:
    names = set(HOP_BY_HOP)
    for value in headers.get_all("Connection") or []:
        names.update(token.strip().lower() for token in value.split(",") if token.strip())
    return names


class _Handler(PooledHandler):
    disable_nagle_algorithm = True
    proxy: "RecordingProxy"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - BaseHTTPRequestHandler API
        log.debug("%s %s", self.address_string(), format % args)

    def _dispatch(self) -> None:
        self.proxy._handle(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    def handle_expect_100(self) -> bool:
        # Answer "100 Continue" ourselves; the Expect header is not forwarded.
        self.send_response_only(100)
        self.end_headers()
        return True



class RecordingProxy:
    """Serve a recording reverse proxy to Ollama on ``listen`` (host, port).

    Library use (the daemon)::

        proxy = RecordingProxy(("127.0.0.1", 11435), "http://127.0.0.1:11434", sink=save, host="box")
        proxy.start()          # serves in a thread; or proxy.serve_forever() in yours
        ...
        proxy.stop()           # in-flight requests are recorded as interrupted

    ``sink(row)`` receives each finished request row (``REQUEST_COLUMNS``
    without ``id``; ``gpm.store.llm.RequestLog`` stores it); it is called
    from the proxy's threads, one at a time.
    ``hooks`` (optional) is told about each recorded request: ``begin(headers,
    start_ns=)`` on arrival, whose handle gives ``forward_headers()`` for
    Ollama and gets ``finish(row)`` after the sink.
    """

    def __init__(self, listen: tuple[str, int], api_url: str, *, sink: Sink | None = None, host: str = "",
                 store_prompts: bool = False, hooks=None, limits: Limits = Limits()) -> None:
        self.upstream = Upstream.parse(api_url)
        self.api_url = api_url
        self.sink = sink
        self.host = host or socket.gethostname()
        self.store_prompts = store_prompts
        self.hooks = hooks
        self._inflight: set[Exchange] = set()
        self._inflight_cv = threading.Condition()
        self._sink_lock = threading.Lock()
        self._stopping = False
        self._serving = threading.Event()
        self._thread: threading.Thread | None = None
        family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
        handler = type("_BoundHandler", (_Handler,), {"proxy": self})
        self._server = BoundedHTTPServer(listen, handler, limits, family=family)
        self._watcher = DisconnectWatcher()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return host, port

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    # -- life cycle --------------------------------------------------------
    def serve_forever(self, poll_interval: float = 0.1) -> None:
        """Serve in the calling thread until ``stop()`` (from another thread)."""
        self._serving.set()
        try:
            self._server.serve_forever(poll_interval)
        finally:
            self._serving.clear()

    def start(self) -> "RecordingProxy":
        self._serving.set()  # so that a stop() right after start() still shuts the loop down
        self._thread = threading.Thread(target=self.serve_forever, name="gpm-ollama-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, cancel what is in flight, record it, close everything."""
        if self._stopping:
            return
        self._stopping = True
        if self._serving.is_set():
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        deadline = time.monotonic() + timeout
        with self._inflight_cv:
            for exchange in list(self._inflight):
                exchange.cancel(INTERRUPTED)
            while self._inflight and time.monotonic() < deadline:
                self._inflight_cv.wait(max(deadline - time.monotonic(), 0.01))
            leftovers = list(self._inflight)
        for exchange in leftovers:  # stuck (e.g. in a client write): record them now
            self._record(exchange, time.perf_counter(), INTERRUPTED)
        self._server.close_active()
        self._server.server_close()
        self._watcher.close()

    shutdown = stop

    def __enter__(self) -> "RecordingProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def in_flight(self) -> int:
        with self._inflight_cv:
            return len(self._inflight)

    # -- one request -------------------------------------------------------
    def _record(self, exchange: Exchange, now: float, error: str | None) -> None:
        with self._sink_lock:
            if exchange.recorded or exchange.recorder is None:
                exchange.recorded = True
                return
            exchange.recorded = True
            row = exchange.recorder.finish(now, time.time_ns() // 1_000_000, error)
            if self.sink is not None:
                try:
                    self.sink(row)
                except Exception:  # noqa: BLE001 - recording must never break proxying
                    log.exception("could not record %s %s", row.get("endpoint"), row.get("model"))
            if exchange.hook is not None:
                try:
                    exchange.hook.finish(row)
                except Exception:  # noqa: BLE001 - nor must telemetry
                    log.exception("telemetry failed for %s %s", row.get("endpoint"), row.get("model"))

    def _handle(self, h: _Handler) -> None:
        t0 = time.perf_counter()
        ts_ns = time.time_ns()
        exchange = Exchange(h.connection)
        with self._inflight_cv:
            self._inflight.add(exchange)
        error: str | None = None
        try:
            error = self._exchange(h, exchange, t0, ts_ns)
        except ClientGone:
            error = CLIENT_GONE
            h.close_connection = True
        except BadRequest as bad:
            log.info("%s: %s %s: %s (%d)", h.client_address[0], h.command, h.path[:200], bad, bad.status)
            h.close_connection = True  # what follows the bad part cannot be told from a request
            error = self._refuse(h, exchange, bad.status, f"gpm proxy: {bad}")
        finally:
            self._watcher.unwatch(exchange)
            error = exchange.cancel_reason or error
            if error is not None:
                h.close_connection = True
            self._record(exchange, time.perf_counter(), error)
            with self._inflight_cv:
                self._inflight.discard(exchange)
                self._inflight_cv.notify_all()

    def _exchange(self, h: _Handler, exchange: Exchange, t0: float, ts_ns: int) -> str | None:
        method = h.command
        endpoint = urlsplit(h.path).path
        recorded = is_recorded(method, endpoint)
        drop = _hop_by_hop(h.headers) | {"expect", "content-length"}
        headers = [(k, v) for k, v in h.headers.items() if k.lower() not in drop]
        coding = (h.headers.get("Transfer-Encoding") or "").strip().lower()
        if coding and coding != "chunked":
            raise BadRequest(501 if "chunked" not in coding else 400,
                              f"Transfer-Encoding {coding[:40]!r} not supported (only chunked)")
        chunked_in = coding == "chunked"
        length = None if chunked_in else content_length(h.headers) or 0
        body_iter = read_chunked(h.rfile) if chunked_in else read_length(h.rfile, length)

        body: bytearray | None = None
        if recorded:
            if length is not None and length > MAX_RECORDED_REQUEST_BYTES:
                recorded = False
            else:
                body, whole = take(body_iter, MAX_RECORDED_REQUEST_BYTES)
                if not whole:  # chunked and too big to record: stream it all, the part read first
                    body_iter, body, recorded = itertools.chain(pieces_of(body), body_iter), None, False
        if body is not None:
            try:
                exchange.recorder = ExchangeRecorder(endpoint, body, t0=t0, ts_ms=ts_ns // 1_000_000,
                                                     host=self.host, store_prompts=self.store_prompts)
            except TooDeep:
                raise BadRequest(400, "request body is JSON nested too deeply to parse") from None
            if self.hooks is not None:
                exchange.hook = self.hooks.begin(h.headers, start_ns=ts_ns)
                trace = exchange.hook.forward_headers()
                headers = [(k, v) for k, v in headers if k.lower() not in _TRACE_HEADERS]
                headers += trace.items()
        if self._stopping:
            return self._refuse(h, exchange, 503, "gpm proxy is stopping")

        upstream = self.upstream.connection(CONNECT_TIMEOUT_SECS)
        sock = None
        resp = None
        try:
            try:
                upstream.connect()
                sock = upstream.sock
                sock.settimeout(None)  # generations and model loads take as long as they take
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                exchange.attach(sock)
                upstream.putrequest(method, self.upstream.prefix + h.path, skip_host=True,
                                    skip_accept_encoding=True)
                for key, value in headers:
                    upstream.putheader(key, value)
                if body is not None:
                    upstream.putheader("Content-Length", str(len(body)))
                    upstream.endheaders(bytes(body) if len(body) <= PIECE_BYTES else body)  # small: one packet
                elif chunked_in:
                    upstream.putheader("Transfer-Encoding", "chunked")
                    upstream.endheaders()
                    for piece in body_iter:
                        upstream.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                    upstream.send(b"0\r\n\r\n")
                else:
                    if length or method in ("POST", "PUT", "PATCH"):
                        upstream.putheader("Content-Length", str(length or 0))
                    upstream.endheaders()
                    for piece in body_iter:
                        upstream.send(piece)
                self._watcher.watch(exchange)
                h.connection.settimeout(WRITE_TIMEOUT_SECS)
                resp = upstream.getresponse()
            except (OSError, http.client.HTTPException) as err:
                if exchange.cancel_reason:
                    return exchange.cancel_reason
                if getattr(err, "errno", None) in (errno.EMFILE, errno.ENFILE):  # ours, not Ollama's
                    return self._refuse(h, exchange, 503, f"gpm proxy is out of file descriptors "
                                                          f"({err.strerror}); raise ulimit -n")
                reason = _reason(err)
                return self._refuse(h, exchange, 502, f"gpm proxy: cannot reach Ollama at {self.api_url}: {reason}")
            return self._relay(h, exchange, method, resp)
        finally:
            # Shut down (not just close): the response may still hold the socket,
            # and Ollama only stops generating when it sees the connection end.
            if sock is not None:
                _shutdown(sock)
            if resp is not None:
                resp.close()
            upstream.close()

    def _refuse(self, h: _Handler, exchange: Exchange, status: int, message: str) -> str:
        body = json.dumps({"error": message}).encode()
        if exchange.recorder is not None:
            exchange.recorder.started(status, "application/json")
        try:
            h.wfile.write(
                b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\n"
                b"Content-Length: %d\r\n%s\r\n%s"
                % (status, h.responses.get(status, ("",))[0].encode(), len(body),
                   b"Connection: close\r\n" if h.close_connection else b"", body)
            )
        except OSError:
            pass
        return message

    def _relay(self, h: _Handler, exchange: Exchange, method: str, resp: http.client.HTTPResponse) -> str | None:
        recorder = exchange.recorder
        if recorder is not None:
            recorder.started(resp.status, resp.getheader("Content-Type"))
        no_body = method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
        known_length = resp.length if not resp.chunked else None
        drop = _hop_by_hop(resp.msg) | {"content-length"}
        head = [f"HTTP/1.1 {resp.status} {resp.reason}\r\n"]
        head += [f"{k}: {v}\r\n" for k, v in resp.msg.items() if k.lower() not in drop]
        chunked_out = False
        if no_body:
            if resp.getheader("Content-Length") is not None:
                head.append(f"Content-Length: {resp.getheader('Content-Length')}\r\n")
        elif known_length is not None:
            head.append(f"Content-Length: {known_length}\r\n")
        elif h.request_version == "HTTP/1.1":
            head.append("Transfer-Encoding: chunked\r\n")
            chunked_out = True
        else:
            h.close_connection = True  # HTTP/1.0: the end of the body is the end of the connection
        if h.close_connection:
            head.append("Connection: close\r\n")
        head.append("\r\n")
        self._send(h, "".join(head).encode("latin-1"))
        if no_body:
            return None

        error = None
        while True:
            try:
                piece = resp.read1(PIECE_BYTES)
            except (OSError, http.client.HTTPException, ValueError) as err:
                error = exchange.cancel_reason or f"Ollama closed the stream early: {_reason(err)}"
                break
            if not piece:
                if known_length is not None and resp.length:
                    error = "Ollama closed the stream early"
                else:
                    exchange.finished_upstream()
                error = exchange.cancel_reason or error
                break
            now = time.perf_counter()
            self._send(h, b"%x\r\n%s\r\n" % (len(piece), piece) if chunked_out else piece)
            if recorder is not None:
                recorder.feed(piece, now)
        if error is None and chunked_out:
            self._send(h, b"0\r\n\r\n")
        return error

    def _send(self, h: _Handler, data: bytes) -> None:
        try:
            h.wfile.write(data)
        except OSError:
            raise ClientGone() from None

