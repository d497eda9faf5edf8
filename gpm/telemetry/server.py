"""The /metrics HTTP server: a library object the daemon starts and stops.

Standard library HTTP (threaded, daemon threads) plus prometheus_client's
encoders, so the OpenMetrics format is served to scrapers that ask for it.
``/`` is a small page linking to ``/metrics``; every other path is a 404.

Served by ``gpm.http_server.BoundedHTTPServer`` (#12.8): the old listen
backlog of 5 let 12 to 63 of 200 concurrent scrapes time out. Now the
backlog is 1024, scrapes run on up to ``LIMITS.max_active`` threads with the
rest queued, and a slow or idle client holds no thread.
"""

from __future__ import annotations

import logging
import socket
import threading

from gpm import __version__
from gpm.errors import GpmError
from gpm.http_server import BoundedHTTPServer, Limits, PooledHandler
from gpm.telemetry.prometheus import make_registry
from gpm.telemetry.state import MetricsState

log = logging.getLogger("gpm.telemetry")

INDEX_HTML = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>gpm metrics</title></head>
<body><h1>gpm {__version__}</h1>
<p>GPU and local-LLM metrics for Prometheus: <a href="/metrics">/metrics</a></p>
</body></html>
""".encode()


# A scrape reads no body and builds its answer in milliseconds: few threads, short timeouts.
LIMITS = Limits(max_connections=512, max_active=16, head_timeout_secs=5.0, idle_timeout_secs=30.0,
                read_timeout_secs=10.0, max_head_bytes=16 * 1024, queue_timeout_secs=15.0)


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
        self._httpd: BoundedHTTPServer | None = None
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
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            self._httpd = BoundedHTTPServer((self.host, self.port), handler, LIMITS, family=family)
        except OSError as err:
            raise GpmError(f"cannot listen on {self.host}:{self.port}: {err.strerror or err}") from None
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="gpm-metrics",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.close_active()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "MetricsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _handler_for(registry):
    class Handler(PooledHandler):
        server_version = f"gpm/{__version__}"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._respond(head=False)

        def do_HEAD(self) -> None:  # noqa: N802
            self._respond(head=True)

        def _respond(self, head: bool) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                from prometheus_client.exposition import choose_encoder

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
