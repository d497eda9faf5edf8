"""Reading a client's request body as it arrives, in pieces, for the proxy.

A body is read under the connection's read timeout; a stalled one is a
``BadRequest`` (408), a malformed Content-Length or chunk size one too (400),
and a client that hangs up mid-body is ``ClientGone``.
"""

from __future__ import annotations

import re

PIECE_BYTES = 64 * 1024  # what the proxy reads and forwards at a time, both ways
_DIGITS = re.compile(rb"[0-9]+")
_HEX = re.compile(rb"[0-9a-fA-F]+")


class ClientGone(Exception):
    """The client hung up (or its socket failed): nobody is left to answer."""


class BadRequest(Exception):
    """The client sent something no server could serve: answered with ``status``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def content_length(headers) -> int | None:
    """The body length the client announced, None without one; ``BadRequest`` when it is no length."""
    values = headers.get_all("Content-Length") or []
    if not values:
        return None
    texts = {v.strip() for value in values for v in value.split(",")}
    if len(texts) != 1 or not _DIGITS.fullmatch(next(iter(texts)).encode("latin-1", "replace")):
        raise BadRequest(400, f"bad Content-Length {', '.join(values)[:40]!r}: not a number of bytes")
    return int(next(iter(texts)))


def _read(rfile, reader):
    """``reader(rfile)`` with a client that stalls or hangs up turned into our exceptions."""
    try:
        return reader(rfile)
    except TimeoutError:
        raise BadRequest(408, "request body stalled (no bytes for the read timeout)") from None
    except OSError:
        raise ClientGone() from None


def read_length(rfile, length: int):
    """Yield a body of ``length`` bytes in pieces as it arrives."""
    remaining = length
    while remaining:
        data = _read(rfile, lambda f: f.read(min(remaining, PIECE_BYTES)))
        if not data:
            raise ClientGone()
        remaining -= len(data)
        yield data


def read_chunked(rfile):
    """Yield the pieces of a chunked request body (trailers are dropped)."""
    while True:
        line = _read(rfile, lambda f: f.readline(1026))
        if not line:
            raise ClientGone()
        size_text = line.split(b";", 1)[0].strip()
        if not _HEX.fullmatch(size_text) or len(size_text) > 15:
            raise BadRequest(400, f"bad chunk size {size_text[:20].decode('latin-1')!r} in the chunked body")
        size = int(size_text, 16)
        if size == 0:
            for _ in range(100):
                if _read(rfile, lambda f: f.readline(8194)) in (b"\r\n", b"\n", b""):
                    return
            raise BadRequest(400, "more than 100 trailer lines after the chunked body")
        yield from read_length(rfile, size)
        if _read(rfile, lambda f: f.readline(3)).strip():
            raise BadRequest(400, "chunk longer than its size in the chunked body")


def pieces_of(data: bytearray):
    """``data`` in pieces, without a copy of the whole."""
    view = memoryview(data)
    for start in range(0, len(data), PIECE_BYTES):
        yield bytes(view[start:start + PIECE_BYTES])


def take(pieces, limit: int) -> tuple[bytearray, bool]:
    """Up to ``limit`` bytes of ``pieces`` (a bit more at most one piece); whether they ended."""
    body = bytearray()
    for piece in pieces:
        body += piece
        if len(body) > limit:
            return body, False
    return body, True
