"""An HTTP/1.1 server that hostile or careless clients cannot starve (#12.7, #12.8).

``ThreadingHTTPServer`` gives every connection a thread for its whole life
and reads with no deadline: 1,000 idle connections were 1,000 threads and,
under ``ulimit -n 1024``, no file descriptor left for anyone else. Here one
thread (``serve_forever``) holds every connection that is not in the middle
of a request in one epoll: an idle or slow client costs a file descriptor
and a small buffer, never a thread. Only a request whose head has arrived
whole gets a worker thread (at most ``Limits.max_active`` of them); when the
request is answered its connection goes back to the epoll.

Bounds, all in ``Limits``: the listen backlog; the open connections (when
full, the connection idle longest is closed to make room; when none is idle,
the newcomer gets a 503); the time from a request's first byte to the end of
its head and the head's size; how long a keep-alive connection may stay
idle; how long a request waits for a free worker (then 503). The body is
the handler's to read, under the socket timeout ``read_timeout_secs``.

Handlers are ``BaseHTTPRequestHandler`` subclasses, unchanged but for the
connection they get: ``request`` is a ``Connection`` whose ``buffer`` holds
what was read ahead (the head, perhaps more).
"""

from __future__ import annotations

import errno
import io
import logging
import resource
import selectors
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from socketserver import _SocketWriter

log = logging.getLogger("gpm.http")

_FD_RESERVE = 64  # for the database, logs, OTLP and the Ollama poller of the same process
_LOG_EVERY_SECS = 60.0


@dataclass(frozen=True)
class Limits:
    """What one server allows its clients; see ``docs/servers.md``."""

    backlog: int = 1024  # connections the kernel queues before accept()
    max_connections: int = 1024  # open client connections, idle ones included (lowered to fit RLIMIT_NOFILE)
    max_active: int = 128  # requests handled at once, a thread each
    head_timeout_secs: float = 10.0  # from a request's first byte to the blank line ending its head
    max_head_bytes: int = 64 * 1024  # request line and headers together
    idle_timeout_secs: float = 60.0  # a keep-alive connection with no request is closed after this
    read_timeout_secs: float = 30.0  # longest wait for the next bytes of a body
    queue_timeout_secs: float = 10.0  # longest wait of a complete request for a free worker (then 503)


class Connection:
    """One client connection and what was read ahead of its next request."""

    __slots__ = ("sock", "address", "buffer", "deadline", "first_byte_at", "queued_at")

    def __init__(self, sock: socket.socket, address, now: float, idle_secs: float) -> None:
        self.sock = sock
        self.address = address
        self.buffer = bytearray()
        self.deadline = now + idle_secs
        self.first_byte_at: float | None = None
        self.queued_at = 0.0

    def head_complete(self) -> bool:
        return b"\r\n\r\n" in self.buffer or b"\n\n" in self.buffer


class _ReadAhead(io.RawIOBase):
    """The socket, after the bytes the server already read from it."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int | None:
        buffered = self._conn.buffer
        if buffered:
            n = min(len(b), len(buffered))
            b[:n] = buffered[:n]
            del buffered[:n]
            return n
        try:
            return self._conn.sock.recv_into(b)
        except BlockingIOError:
            return None


class PooledHandler(BaseHTTPRequestHandler):
    """Handles the requests a connection has sent so far, then hands it back to the server."""

    protocol_version = "HTTP/1.1"
    request: Connection
    server: "BoundedHTTPServer"

    def setup(self) -> None:
        self.connection = self.request.sock
        self.connection.settimeout(self.server.limits.read_timeout_secs)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = io.BufferedReader(_ReadAhead(self.request), 64 * 1024)
        self.wfile = _SocketWriter(self.connection)

    def handle(self) -> None:
        self.handle_one_request()
        while not self.close_connection and self._read_ahead():
            self.handle_one_request()  # pipelined: the next head is here already

    def _read_ahead(self) -> bytes:
        """Bytes of the next request already received, without waiting for more."""
        self.connection.setblocking(False)
        try:
            data = self.rfile.peek(self.server.limits.max_head_bytes)
        except OSError:
            data = b""
        finally:
            self.connection.settimeout(self.server.limits.read_timeout_secs)
        return data if b"\r\n\r\n" in data or b"\n\n" in data else b""

    def finish(self) -> None:
        if not self.close_connection:
            self.connection.setblocking(False)
            try:
                left = self.rfile.peek(self.server.limits.max_head_bytes)
                self.request.buffer[:0] = self.rfile.read(len(left)) if left else b""
            except OSError:
                self.close_connection = True
        self.rfile.detach()


def _fd_limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def _quick_answer(sock: socket.socket, status: int, reason: str) -> None:
    """A short error answer on a connection that is closed right after it; never blocks."""
    body = f"{reason}\n".encode()
    phrase = BaseHTTPRequestHandler.responses.get(status, ("",))[0]
    try:
        sock.setblocking(False)
        sock.send(b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
                  b"Connection: close\r\n\r\n%s" % (status, phrase.encode(), len(body), body))
    except OSError:
        pass
    _close(sock)


def shutdown_socket(sock: socket.socket) -> None:
    """End both directions now: a thread blocked on the socket wakes up, the peer sees the end."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _close(sock: socket.socket) -> None:
    shutdown_socket(sock)
    sock.close()


class BoundedHTTPServer:
    """Serve ``handler`` (a ``PooledHandler`` subclass) on ``address`` within ``limits``.

    The interface is ``socketserver``'s: ``serve_forever()``, ``shutdown()``,
    ``server_close()``, ``server_address``; ``close_active()`` also cuts the
    connections whose request is being handled.
    """

    def __init__(self, address: tuple, handler: type[PooledHandler], limits: Limits = Limits(), *,
                 family: int = socket.AF_INET) -> None:
        self.handler = handler
        room = _fd_limit() - _FD_RESERVE - 2 * limits.max_active  # a proxied request holds two sockets
        self.limits = limits
        self.max_connections = max(min(limits.max_connections, room), 8)
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(limits.backlog)
        except OSError:
            self.socket.close()
            raise
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._lock = threading.Lock()
        self._waiting: dict[socket.socket, Connection] = {}  # in the epoll, between requests (oldest first)
        self._queued: deque[Connection] = deque()  # a whole head, no worker free yet
        self._returned: deque[Connection] = deque()  # handed back by workers
        self._active: set[Connection] = set()
        self._workers = 0
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._logged: dict[str, float] = {}

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._waiting) + len(self._queued) + len(self._returned) + len(self._active)

    # -- life cycle --------------------------------------------------------
    def serve_forever(self, poll_interval: float = 0.25) -> None:
        with self._lock:
            if self._stop.is_set():  # shut down before it started
                return
            self._stopped.clear()
        self._selector.register(self.socket, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        next_expiry = 0.0
        try:
            while not self._stop.is_set():
                # Deadlines only while a connection waits or queues; else sleep
                # until one comes (a stop, a worker done: ``_wake``). An idle
                # daemon's endpoint woke 5 times a second for nothing (#14).
                with self._lock:
                    timeout = poll_interval if self._waiting or self._queued else None
                for key, _mask in self._selector.select(timeout):
                    if key.fileobj is self.socket:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        self._drain_wake()
                    else:
                        self._read(key.data)
                self._take_returned()
                now = time.monotonic()
                if now >= next_expiry:
                    self._expire(now)
                    next_expiry = now + 0.1
        finally:
            self._selector.unregister(self.socket)
            self._selector.unregister(self._wake_r)
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop ``serve_forever()`` (from another thread) and wait for it."""
        with self._lock:
            self._stop.set()
        self._wake()
        self._stopped.wait()

    def close_active(self) -> None:
        """Cut the connections whose request is being handled (their reads and writes fail)."""
        with self._lock:
            active = list(self._active)
        for conn in active:
            shutdown_socket(conn.sock)

    def server_close(self) -> None:
        self.socket.close()
        with self._lock:
            idle = list(self._waiting.values()) + list(self._queued) + list(self._returned)
            self._waiting.clear()
            self._queued.clear()
            self._returned.clear()
        for conn in idle:
            _close(conn.sock)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- the epoll thread --------------------------------------------------
    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _note(self, key: str, message: str, *args) -> None:
        """Log a recurring condition at most once a minute."""
        now = time.monotonic()
        if now - self._logged.get(key, -_LOG_EVERY_SECS) >= _LOG_EVERY_SECS:
            self._logged[key] = now
            log.warning(message, *args)

    def _accept(self) -> None:
        for _ in range(64):  # a burst, then the other connections get a turn
            try:
                sock, address = self.socket.accept()
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._note("fds", "out of file descriptors with %d connections open (%s); "
                               "closing idle ones; raise ulimit -n", self.connections, err.strerror)
                    if not self._evict_idle():
                        time.sleep(0.01)
                return
            if self.connections >= self.max_connections and not self._evict_idle():
                self._note("full", "%d connections open, all busy: answering 503", self.connections)
                _quick_answer(sock, 503, "gpm: too many connections; try again shortly")
                continue
            sock.setblocking(False)
            conn = Connection(sock, address, time.monotonic(), self.limits.idle_timeout_secs)
            self._wait(conn)

    def _wait(self, conn: Connection) -> None:
        with self._lock:
            self._waiting[conn.sock] = conn
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _unwait(self, conn: Connection) -> None:
        with self._lock:
            self._waiting.pop(conn.sock, None)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass

    def _evict_idle(self) -> bool:
        """Close the connection idle longest (no byte of a request yet; else the slowest head)."""
        with self._lock:
            conn = next((c for c in self._waiting.values() if not c.buffer), None)
            if conn is None:
                conn = next(iter(self._waiting.values()), None)
        if conn is None:
            return False
        self._unwait(conn)
        _close(conn.sock)
        return True

    def _read(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(self.limits.max_head_bytes)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._unwait(conn)
            _close(conn.sock)
            return
        if conn.first_byte_at is None:
            conn.first_byte_at = time.monotonic()
            conn.deadline = conn.first_byte_at + self.limits.head_timeout_secs
        conn.buffer += data
        self._ready(conn)

    def _ready(self, conn: Connection) -> None:
        """Hand a whole head to a worker (or the queue); refuse one grown too big."""
        if conn.head_complete():
            self._unwait(conn)
            self._dispatch(conn)
        elif len(conn.buffer) > self.limits.max_head_bytes:
            self._unwait(conn)
            log.info("%s: request head over %d bytes: 431", conn.address[0], self.limits.max_head_bytes)
            _quick_answer(conn.sock, 431, "gpm: request head too large")

    def _dispatch(self, conn: Connection) -> None:
        with self._lock:
            if self._workers >= self.limits.max_active:
                conn.queued_at = time.monotonic()
                self._queued.append(conn)
                return
            self._workers += 1
            self._active.add(conn)
        threading.Thread(target=self._work, args=(conn,), name="gpm-http", daemon=True).start()

    def _take_returned(self) -> None:
        while True:
            with self._lock:
                if not self._returned:
                    return
                conn = self._returned.popleft()
            conn.first_byte_at = time.monotonic() if conn.buffer else None
            conn.deadline = time.monotonic() + (
                self.limits.head_timeout_secs if conn.buffer else self.limits.idle_timeout_secs)
            conn.sock.setblocking(False)
            if self._stop.is_set():
                _close(conn.sock)
            elif conn.head_complete():
                self._dispatch(conn)
            else:
                self._wait(conn)
                self._ready(conn)

    def _expire(self, now: float) -> None:
        with self._lock:
            late = [c for c in self._waiting.values() if c.deadline <= now]
            stale = []
            while self._queued and now - self._queued[0].queued_at >= self.limits.queue_timeout_secs:
                stale.append(self._queued.popleft())
        for conn in late:
            self._unwait(conn)
            if conn.buffer:
                log.info("%s: request head not complete after %g s: 408", conn.address[0],
                         self.limits.head_timeout_secs)
                _quick_answer(conn.sock, 408, "gpm: request head took too long")
            else:
                _close(conn.sock)
        for conn in stale:
            self._note("busy", "%d requests in progress: answering 503", self.limits.max_active)
            _quick_answer(conn.sock, 503, "gpm: too many requests in progress; try again shortly")

    # -- workers -----------------------------------------------------------
    def _work(self, conn: Connection | None) -> None:
        while conn is not None:
            keep = False
            try:
                handler = self.handler(conn, conn.address, self)
                keep = not handler.close_connection
            except Exception as err:  # noqa: BLE001 - one bad request must not print a traceback or stop the server
                log.error("%s: %s: %s", conn.address[0], type(err).__name__, err)
            with self._lock:
                self._active.discard(conn)
                if keep and not self._stop.is_set():
                    self._returned.append(conn)
                    conn = None
                else:
                    _close(conn.sock)
                    conn = None
                if self._queued and not self._stop.is_set():
                    conn = self._queued.popleft()
                    self._active.add(conn)
                else:
                    self._workers -= 1
            self._wake()
