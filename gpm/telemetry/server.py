"""The /metrics HTTP server: a library object the daemon starts and stops.

Standard library HTTP (threaded, daemon threads) plus prometheus_client's
encoders, so the OpenMetrics format is served to scrapers that ask for it.
``/`` is a small page linking to ``/metrics``; every other path is a 404.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client.exposition import choose_encoder

from gpm import __version__
from gpm.errors import GpmError
from gpm.telemetry.prometheus import make_registry
from gpm.telemetry.state import MetricsState

log = logging.getLogger("gpm.telemetry")

INDEX_HTML = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>gpm metrics</title></head>
<body><h1>gpm {__version__}</h1>
<p>GPU and local-LLM metrics for Prometheus: <a href="/metrics">/metrics</a></p>
</body></html>
""".encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class MetricsServer:
    """Serves ``state`` on ``host:port`` until ``stop()``.

    ``port`` 0 picks a free port; ``address`` tells which after ``start()``.
    """

    def __init__(self, state: MetricsState, host: str = "127.0.0.1", port: int = 0, *,
                 per_process: bool = False) -> None:
        self.state = state
        self.host = host
        self.port = port
        self.registry = make_registry(state, per_process=per_process)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._httpd is not None, "not started"
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/metrics"

    def start(self) -> "MetricsServer":
        handler = _handler_for(self.registry)
        family = _family(self.host)
        server_cls = type("_BoundServer", (_Server,), {"address_family": family})
        try:
            self._httpd = server_cls((self.host, self.port), handler)
        except OSError as err:
            raise GpmError(f"cannot listen on {self.host}:{self.port}: {err.strerror or err}") from None
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="gpm-metrics",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "MetricsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _family(host: str):
    import socket

    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _handler_for(registry):
    class Handler(BaseHTTPRequestHandler):
        server_version = f"gpm/{__version__}"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._respond(head=False)

        def do_HEAD(self) -> None:  # noqa: N802
            self._respond(head=True)

        def _respond(self, head: bool) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                try:
                    body = encoder(registry)
                except Exception as err:  # noqa: BLE001 - a bug must not kill the server
                    log.error("metrics: %s: %s", type(err).__name__, err)
                    self._send(500, b"internal error building metrics\n", "text/plain", head)
                    return
                self._send(200, body, content_type, head)
            elif path == "/":
                self._send(200, INDEX_HTML, "text/html; charset=utf-8", head)
            else:
                self._send(404, b"not found; metrics are at /metrics\n", "text/plain; charset=utf-8", head)

        def _send(self, code: int, body: bytes, content_type: str, head: bool) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def log_message(self, fmt: str, *args) -> None:
            log.debug("metrics: %s %s", self.address_string(), fmt % args)

    return Handler
