"""gpm's own small Ollama client: ``GET /api/version`` and ``GET /api/ps``, through requests.

A ``requests.Session`` with a timeout, and every failure folded into
``OllamaUnavailable`` with a one-line reason: a watcher records "Ollama is
down", it never crashes on it. requests is imported when a client is made:
it costs ~0.1 s to import, which no command that does not talk to Ollama
should pay.
"""

from __future__ import annotations

import errno
import http.client
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from gpm import jsontext


def describe_error(err: BaseException) -> str:
    """A short reason for a failed HTTP exchange ("connection refused", "timed out")."""
    if isinstance(err, ConnectionRefusedError) or getattr(err, "errno", None) == errno.ECONNREFUSED:
        return "connection refused"
    if isinstance(err, socket.timeout):
        return "timed out"
    if isinstance(err, socket.gaierror):
        return f"name not resolved ({err.strerror})"
    if isinstance(err, http.client.IncompleteRead):
        return "incomplete body"
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def _socket_error(err: BaseException) -> BaseException:
    """The socket's error under a requests one (requests wraps urllib3's, which wraps the
    socket's), or ``err`` itself when there is none."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, socket.timeout) or (isinstance(cause, OSError) and cause.errno is not None):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return err


class OllamaUnavailable(Exception):
    """Ollama could not be reached or answered nonsense; ``str()`` says why."""


@dataclass(frozen=True)
class Upstream:
    """Where Ollama lives: scheme, host, port and an optional path prefix."""

    scheme: str
    host: str
    port: int
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> "Upstream":
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    def connection(self, timeout: float | None) -> http.client.HTTPConnection:
        """A connection for the proxy, which streams both ways with ``http.client``."""
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.prefix}"


@dataclass(frozen=True)
class LoadedModel:
    """One entry of ``/api/ps``: a model resident in memory (sizes in bytes)."""

    model: str
    digest: str | None
    size_bytes: int | None
    size_vram_bytes: int | None
    context_length: int | None  # absent before Ollama v0.9.7
    quantization: str | None
    parameter_size: str | None
    family: str | None
    expires_at_ms: int | None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_time_ms(text: Any) -> int | None:
    """Go's RFC 3339 time (nanosecond fraction, any offset) -> Unix ms."""
    if not isinstance(text, str) or not text:
        return None
    s = text.strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    head, dot, rest = s.partition(".")
    if dot:
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        s = f"{head}.{(digits + '000000')[:6]}{rest}"
    try:
        moment = datetime.fromisoformat(s)
    except ValueError:
        return None
    if moment.tzinfo is None or moment.year < 1971:
        return None  # Go's zero time "0001-01-01T00:00:00Z" means unset
    return int(moment.timestamp() * 1000)


def parse_ps(payload: Any) -> list[LoadedModel]:
    """The models of an ``/api/ps`` answer; raises ``ValueError`` when it is not one."""
    if not isinstance(payload, dict) or not isinstance(payload.get("models"), list):
        raise ValueError("not an /api/ps answer (no 'models' list)")
    out = []
    for item in payload["models"]:
        if not isinstance(item, dict):
            continue
        name = _str(item.get("name")) or _str(item.get("model"))
        if name is None:
            continue
        details = item.get("details") if isinstance(item.get("details"), dict) else {}
        out.append(LoadedModel(
            model=name,
            digest=_str(item.get("digest")),
            size_bytes=_int(item.get("size")),
            size_vram_bytes=_int(item.get("size_vram")),
            context_length=_int(item.get("context_length")) or None,
            quantization=_str(details.get("quantization_level")),
            parameter_size=_str(details.get("parameter_size")),
            family=_str(details.get("family")),
            expires_at_ms=parse_time_ms(item.get("expires_at")),
        ))
    return out


# /api/ps with dozens of models is a few KiB; an answer past this is a broken
# server or something else on that port, and must not grow the watcher (#12.3).
MAX_ANSWER_BYTES = 16 * 2**20
ANSWER_CHUNK_BYTES = 64 * 1024


class OllamaClient:
    """``version()`` and ``ps()`` against one Ollama server."""

    def __init__(self, api_url: str, timeout_secs: float = 5.0) -> None:
        import requests

        self.upstream = Upstream.parse(api_url)
        self.api_url = api_url
        self.timeout_secs = timeout_secs
        self.session = requests.Session()
        # Straight to Ollama, as the proxy goes: no HTTP(S)_PROXY, no .netrc credentials.
        self.session.trust_env = False
        # Answers are a few KiB: nothing to gain from compression, and no gzip bomb to fear.
        self.session.headers.update({"Accept": "application/json", "Accept-Encoding": "identity"})

    def _get_json(self, path: str) -> Any:
        import requests

        where = f"{self.api_url.rstrip('/')}{path}"
        body = bytearray()
        try:
            with self.session.get(self.upstream.url + path, timeout=self.timeout_secs, stream=True,
                                  allow_redirects=False) as resp:
                if resp.status_code != 200:
                    raise OllamaUnavailable(f"{where}: HTTP {resp.status_code} {resp.reason}")
                # A short answer is told below, with how much of it came.
                resp.raw.enforce_content_length = False
                for chunk in resp.iter_content(ANSWER_CHUNK_BYTES):
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise OllamaUnavailable(
                            f"{where}: answer larger than {MAX_ANSWER_BYTES // 2**20} MiB (not read)")
                promised = resp.headers.get("Content-Length", "")
        except requests.exceptions.ChunkedEncodingError:
            raise OllamaUnavailable(f"{where}: connection cut after {len(body)} bytes of the answer") from None
        except requests.RequestException as err:
            raise OllamaUnavailable(f"{where}: {describe_error(_socket_error(err))}") from None
        if promised.isdigit() and len(body) < int(promised):  # the server died mid-answer
            raise OllamaUnavailable(f"{where}: connection cut after {len(body)} bytes of the answer")
        try:
            return jsontext.loads(bytes(body))  # too deep is malformed too (#12.11)
        except ValueError:
            raise OllamaUnavailable(f"{where}: answer is not JSON") from None

    def version(self) -> str:
        payload = self._get_json("/api/version")
        if not isinstance(payload, dict) or not isinstance(payload.get("version"), str):
            raise OllamaUnavailable(f"{self.api_url}/api/version: no 'version' in the answer")
        return payload["version"]

    def ps(self) -> list[LoadedModel]:
        payload = self._get_json("/api/ps")
        try:
            return parse_ps(payload)
        except ValueError as err:
            raise OllamaUnavailable(f"{self.api_url}/api/ps: {err}") from None
