"""Turn one proxied request and its response stream into an ``llm_requests`` row.

Pure bookkeeping, no sockets: the proxy calls ``started()`` with the
response head, ``feed()`` with every piece of body as it arrives (with the
monotonic time it arrived) and ``finish()`` once. The parsing follows
Ollama's API (see docs/ollama.md and ../shared/reference/ollama-api.md):

* native ``/api/*``: NDJSON; the ``done: true`` line carries Ollama's metrics in
  nanoseconds, each omitted when zero (so missing means unknown); a stream can
  end with a line holding only ``error``; ``stream`` defaults to true;
* OpenAI-compatible ``/v1/*``: server-sent events; token counts only in
  ``usage``, which streams carry only with ``stream_options.include_usage``
  (``/v1/completions`` then sends zero usage on every chunk: ignored);
  ``stream`` defaults to false.

TTFT is gpm's own wall-clock measure: from the request reaching the proxy to
the first piece of generated content (text, thinking or a tool call).
"""

from __future__ import annotations

import json

from gpm import jsontext
from typing import Any

RECORDED_ENDPOINTS = frozenset({
    "/api/generate", "/api/chat", "/api/embed", "/api/embeddings",
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings",
})
_NATIVE_STREAMING = frozenset({"/api/generate", "/api/chat"})
_OPENAI_STREAMING = frozenset({"/v1/chat/completions", "/v1/completions"})

# Keys of a request row, in table order (``--json`` prints exactly these).
REQUEST_COLUMNS = (
    "id", "ts_ms", "end_ms", "host", "endpoint", "model", "stream", "status", "error", "done_reason",
    "prompt_tokens", "cached_prompt_tokens", "completion_tokens", "ttft_seconds", "tpot_seconds",
    "tokens_per_second", "prompt_tokens_per_second", "duration_seconds", "load_seconds",
    "prompt_eval_seconds", "eval_seconds", "ollama_total_seconds", "prompt", "response",
)

# A non-streamed answer is parsed whole; beyond this size (huge embedding
# batches) it is forwarded but not parsed, and its metrics stay unknown.
MAX_PARSED_BODY_BYTES = 32 * 1024 * 1024
_MAX_LINE_BYTES = 8 * 1024 * 1024


_INT64_MAX = 2 ** 63 - 1  # SQLite's INTEGER: a larger count would fail the row's INSERT


def _count(value: Any) -> int | None:
    """A positive token count, or None (Ollama omits zero; bools are not counts)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _INT64_MAX:
        return None
    return value


def _seconds(ns: Any) -> float | None:
    """Nanoseconds as seconds; None for what is no duration (Python's json reads NaN and
    Infinity, which became NaN tokens per second)."""
    if isinstance(ns, bool) or not isinstance(ns, (int, float)) or not 0 < ns < 1e300:
        return None
    return ns / 1e9


def _error_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        message = value.get("message")
        if isinstance(message, str) and message:
            return message
    if value is None:
        return None
    return json.dumps(value)[:500]


def is_recorded(method: str, path: str) -> bool:
    return method == "POST" and path in RECORDED_ENDPOINTS


def _has_content(obj: dict) -> bool:
    """Whether a native chunk carries generated text, thinking or tool calls."""
    if obj.get("response") or obj.get("thinking"):
        return True
    msg = obj.get("message")
    return isinstance(msg, dict) and bool(msg.get("content") or msg.get("thinking") or msg.get("tool_calls"))


class ExchangeRecorder:
    """Collects what one request/response says about tokens and timing."""

    def __init__(self, endpoint: str, request_body: bytes, *, t0: float, ts_ms: int, host: str,
                 store_prompts: bool = False) -> None:
        self.endpoint = endpoint
        self.t0 = t0
        self.ts_ms = ts_ms
        self.host = host
        self.store_prompts = store_prompts
        self.openai = endpoint.startswith("/v1/")
        try:
            request = jsontext.loads(request_body) if request_body else {}
        except jsontext.TooDeep:
            raise  # the proxy answers 400: nothing sane to forward
        except ValueError:
            request = {}
        if not isinstance(request, dict):
            request = {}
        self.model: str | None = request.get("model") if isinstance(request.get("model"), str) else None
        if endpoint in _NATIVE_STREAMING:
            self.stream = request.get("stream", True) is not False
        elif endpoint in _OPENAI_STREAMING:
            self.stream = request.get("stream") is True
        else:
            self.stream = False
        self.prompt: str | None = None
        if store_prompts:
            parts = {k: request[k] for k in ("system", "prompt", "messages", "input", "suffix") if k in request}
            self.prompt = json.dumps(parts, ensure_ascii=False) if parts else None
        self.status: int | None = None
        self.kind = "json"
        self.first_content_at: float | None = None
        self.error: str | None = None
        self.done_reason: str | None = None
        self.metrics: dict[str, Any] = {}
        self.usage: dict[str, Any] = {}
        self.malformed = 0
        self._buffer = bytearray()
        self._overflow = False
        self._text: list[str] = []

    # -- response ----------------------------------------------------------
    def started(self, status: int, content_type: str | None) -> None:
        self.status = status
        ctype = (content_type or "").split(";")[0].strip().lower()
        if ctype == "application/x-ndjson":
            self.kind = "ndjson"
        elif ctype == "text/event-stream":
            self.kind = "sse"
        else:
            self.kind = "json"

    def feed(self, data: bytes, now: float) -> None:
        if self._overflow or not data:
            return
        self._buffer += data
        if self.kind == "json":
            if len(self._buffer) > MAX_PARSED_BODY_BYTES:
                self._overflow = True
                self._buffer.clear()
            return
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > _MAX_LINE_BYTES:
                    self.malformed += 1
                    self._buffer.clear()
                return
            line = bytes(self._buffer[:end]).strip()
            del self._buffer[:end + 1]
            if line:
                self._line(line, now)

    def _line(self, line: bytes, now: float) -> None:
        if self.kind == "sse":
            if not line.startswith(b"data:"):
                return  # event:, id:, retry: and comments carry nothing we record
            line = line[5:].strip()
            if line == b"[DONE]" or not line:
                return
        try:
            obj = jsontext.loads(line)
        except ValueError:
            self.malformed += 1
            return
        if isinstance(obj, dict):
            self._object(obj, now, streamed=True)
        else:
            self.malformed += 1

    def _object(self, obj: dict, now: float | None, *, streamed: bool) -> None:
        if "error" in obj and obj.get("error") is not None:
            self.error = _error_text(obj["error"]) or self.error
        if self.model is None and isinstance(obj.get("model"), str):
            self.model = obj["model"]
        if self.openai:
            self._openai(obj, now, streamed)
        else:
            self._native(obj, now, streamed)

    def _native(self, obj: dict, now: float | None, streamed: bool) -> None:
        if _has_content(obj):
            if streamed and self.first_content_at is None:
                self.first_content_at = now
            if self.store_prompts:
                msg = obj.get("message") if isinstance(obj.get("message"), dict) else {}
                text = obj.get("response") or msg.get("content")
                if isinstance(text, str):
                    self._text.append(text)
        if obj.get("done") is True or not streamed:
            if isinstance(obj.get("done_reason"), str) and obj["done_reason"]:
                self.done_reason = obj["done_reason"]
            for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
                        "eval_count", "eval_duration", "prompt_eval_cached_count"):
                if key in obj:
                    self.metrics[key] = obj[key]

    def _openai(self, obj: dict, now: float | None, streamed: bool) -> None:
        usage = obj.get("usage")
        if isinstance(usage, dict) and (_count(usage.get("total_tokens")) or _count(usage.get("prompt_tokens"))):
            self.usage = usage
        choices = obj.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            part = choice.get("delta") if streamed else choice.get("message")
            text = None
            content = False
            if isinstance(part, dict):
                text = part.get("content")
                content = bool(text or part.get("reasoning") or part.get("tool_calls"))
            if isinstance(choice.get("text"), str) and choice["text"]:
                text = choice["text"]
                content = True
            if content and streamed and self.first_content_at is None:
                self.first_content_at = now
            if content and self.store_prompts and isinstance(text, str):
                self._text.append(text)
            if isinstance(choice.get("finish_reason"), str) and choice["finish_reason"]:
                self.done_reason = choice["finish_reason"]

    # -- the row -----------------------------------------------------------
    def finish(self, now: float, end_ms: int, error: str | None = None) -> dict[str, Any]:
        """The ``llm_requests`` row (without ``id``); ``error`` is the proxy's own, if any."""
        if self.kind == "json" and self._buffer and not self._overflow:
            try:
                obj = jsontext.loads(bytes(self._buffer))
            except ValueError:
                self.malformed += 1
            else:
                if isinstance(obj, dict):
                    self._object(obj, None, streamed=False)
        elif self._buffer.strip() and not self._overflow:
            self._line(bytes(self._buffer).strip(), now)  # a last line without its newline
        self._buffer.clear()

        # Ollama's own error names the cause; the proxy's (a hang-up after it) only the aftermath.
        failure = self.error or error
        if failure is None and self.malformed:
            failure = f"{self.malformed} malformed chunk(s) from Ollama"
        if failure is None and self.status is not None and self.status >= 400:
            failure = f"HTTP {self.status}"

        m = self.metrics
        duration = max(now - self.t0, 0.0)
        ttft = None
        if self.stream and self.first_content_at is not None:
            ttft = max(self.first_content_at - self.t0, 0.0)
        if self.openai:
            prompt_tokens = _count(self.usage.get("prompt_tokens"))
            completion_tokens = _count(self.usage.get("completion_tokens"))
            details = self.usage.get("prompt_tokens_details")
            cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else None
        else:
            prompt_tokens = _count(m.get("prompt_eval_count"))
            completion_tokens = _count(m.get("eval_count"))
            cached = _count(m.get("prompt_eval_cached_count"))
        eval_seconds = _seconds(m.get("eval_duration"))
        prompt_eval_seconds = _seconds(m.get("prompt_eval_duration"))

        tpot = None
        if ttft is not None and completion_tokens and completion_tokens > 1 and duration > ttft:
            tpot = (duration - ttft) / (completion_tokens - 1)
        if completion_tokens and eval_seconds:
            tps = completion_tokens / eval_seconds
        elif tpot:
            tps = 1.0 / tpot
        elif completion_tokens and duration > 0:
            tps = completion_tokens / duration
        else:
            tps = None
        prompt_tps = None
        if prompt_tokens and prompt_eval_seconds:
            prompt_tps = prompt_tokens / prompt_eval_seconds

        return {
            "ts_ms": self.ts_ms,
            "end_ms": end_ms,
            "host": self.host,
            "endpoint": self.endpoint,
            "model": self.model,
            "stream": self.stream,
            "status": self.status,
            "error": failure,
            "done_reason": self.done_reason,
            "prompt_tokens": prompt_tokens,
            "cached_prompt_tokens": cached,
            "completion_tokens": completion_tokens,
            "ttft_seconds": ttft,
            "tpot_seconds": tpot,
            "tokens_per_second": tps,
            "prompt_tokens_per_second": prompt_tps,
            "duration_seconds": duration,
            "load_seconds": _seconds(m.get("load_duration")),
            "prompt_eval_seconds": prompt_eval_seconds,
            "eval_seconds": eval_seconds,
            "ollama_total_seconds": _seconds(m.get("total_duration")),
            "prompt": self.prompt,
            "response": "".join(self._text) if self.store_prompts and self._text else None,
        }

