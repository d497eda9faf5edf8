"""One proxied request in flight, and the thread that notices its client hanging up.

A client that hangs up cancels the upstream request: the watcher sees the
EOF on the client socket even while Ollama is still thinking and shuts the
upstream socket down, so Ollama stops generating for nobody.
"""

from __future__ import annotations

import selectors
import socket
import threading

from gpm.http_server import shutdown_socket
from gpm.llm.record import ExchangeRecorder

CLIENT_GONE = "client disconnected"


class Exchange:
    """One request in flight: can be cancelled from another thread."""

    def __init__(self, client_sock: socket.socket) -> None:
        self.client_sock = client_sock
        self.cancel_reason: str | None = None
        self.recorder: ExchangeRecorder | None = None
        self.hook = None  # the hooks' handle of a recorded request
        self.recorded = False
        self.complete = False  # Ollama's answer has been read whole: nothing left to cancel
        self._upstream_sock: socket.socket | None = None
        self._lock = threading.Lock()

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._upstream_sock = sock
            cancelled = self.cancel_reason is not None
        if cancelled:
            shutdown_socket(sock)

    def finished_upstream(self) -> None:
        with self._lock:
            self.complete = True

    def cancel(self, reason: str) -> None:
        with self._lock:
            if self.complete:
                return  # e.g. a client that closes right after the last byte
            if self.cancel_reason is None:
                self.cancel_reason = reason
            sock = self._upstream_sock
        if sock is not None:
            shutdown_socket(sock)


class DisconnectWatcher:
    """One thread that notices clients hanging up while their request is in flight.

    A blocked ``read()`` on Ollama's socket cannot see the client leave; an
    epoll on every in-flight client socket can (it turns readable at EOF).
    """

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpm-proxy-hangups", daemon=True)
        self._thread.start()

    def watch(self, exchange: Exchange) -> None:
        with self._lock:
            try:
                self._selector.register(exchange.client_sock, selectors.EVENT_READ, exchange)
            except (KeyError, ValueError, OSError):
                pass

    def unwatch(self, exchange: Exchange) -> None:
        with self._lock:
            try:
                self._selector.unregister(exchange.client_sock)
            except (KeyError, ValueError, OSError):
                pass

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                empty = not self._selector.get_map()
            if empty:
                self._stop.wait(0.05)
                continue
            try:
                events = self._selector.select(timeout=0.2)
            except OSError:
                continue
            for key, _mask in events:
                exchange: Exchange = key.data
                try:
                    gone = exchange.client_sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
                except BlockingIOError:
                    continue
                except OSError:
                    gone = True
                # Data (a pipelined request) is not a hang-up; stop watching either way.
                self.unwatch(exchange)
                if gone:
                    exchange.cancel(CLIENT_GONE)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._selector.close()
