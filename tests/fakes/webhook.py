"""A webhook receiver on 127.0.0.1 and two URLs that fail: nobody listens, or nobody answers.

Tests wrap them in fixtures: ``with receivers() as start: yield start``.
"""

from __future__ import annotations

import json
import socket
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator


class Receiver:
    """A webhook receiver on 127.0.0.1: records each POST, answers with the next of ``statuses``
    (the last one again when they run out)."""

    def __init__(self, statuses=(200,)) -> None:
        self.requests: list[dict] = []
        self.statuses = list(statuses)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers),
                                          "json": json.loads(body)})
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def receivers() -> Iterator[Callable[..., Receiver]]:
    """``start(statuses)`` makes a Receiver; every one made stops at the end."""
    made: list[Receiver] = []

    def start(statuses=(200,)) -> Receiver:
        made.append(Receiver(statuses))
        return made[-1]

    try:
        yield start
    finally:
        for r in made:
            r.stop()


@contextmanager
def silent_server() -> Iterator[str]:
    """A URL whose server accepts the connection (the kernel's backlog does) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"


def refused() -> str:
    """A URL at a port of 127.0.0.1 where nothing listens (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
