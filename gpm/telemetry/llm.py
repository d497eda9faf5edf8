"""LLM request statistics: what the recording proxy saw, aggregated.

The proxy (``gpm ollama-watch --proxy``) records one row per request in
``llm_requests``. Exporters need running totals instead: counters of requests
and tokens per model and status, and histograms of time to first token, time
per output token and request duration with the OpenTelemetry GenAI bucket
boundaries. ``LlmAggregator`` keeps those totals in memory; it is fed either
directly by the proxy (one ``observe()`` per finished request, in the daemon)
or by reading new rows of ``llm_requests`` (``DbRequestFeed``, standalone).

Loaded models come from Ollama's ``/api/ps`` (``fetch_loaded_models``).
"""

from __future__ import annotations

import bisect
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from gpm import jsontext

# Advisory ExplicitBucketBoundaries of the GenAI semantic conventions
# (semantic-conventions v1.41.1, model/gen-ai/metrics.yaml).
TTFT_BUCKETS_SECONDS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                        1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS_SECONDS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
DURATION_BUCKETS_SECONDS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24,
                            20.48, 40.96, 81.92)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)

_OPERATIONS = {
    "/api/chat": "chat",
    "/v1/chat/completions": "chat",
    "/api/generate": "text_completion",
    "/v1/completions": "text_completion",
    "/api/embed": "embeddings",
    "/api/embeddings": "embeddings",
    "/v1/embeddings": "embeddings",
}


def operation_name(endpoint: str | None) -> str:
    """GenAI ``gen_ai.operation.name`` for an Ollama/OpenAI path."""
    return _OPERATIONS.get(endpoint or "", "chat")


@dataclass
class LlmRequest:
    """One proxied request, with the fields of an ``llm_requests`` row.

    ``status`` is the HTTP status the client got (None when the request never
    got one, e.g. interrupted). Any metric may be None: Ollama omits zero
    fields, and a failed request has no tokens.
    """

    model: str | None
    endpoint: str | None = None
    status: int | None = 200
    error: str | None = None
    start_ms: int | None = None  # Unix ms UTC when the request reached the proxy
    duration_seconds: float | None = None
    ttft_seconds: float | None = None
    tpot_seconds: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    done_reason: str | None = None
    stream: bool | None = None
    server_address: str | None = None
    server_port: int | None = None

    @property
    def operation(self) -> str:
        return operation_name(self.endpoint)

    @property
    def failed(self) -> bool:
        return self.error is not None or self.status is None or self.status >= 400

    def time_per_output_token(self) -> float | None:
        """TPOT as the convention defines it: (duration - TTFT) / (tokens - 1)."""
        if self.tpot_seconds is not None:
            return self.tpot_seconds
        if (self.duration_seconds is None or self.ttft_seconds is None
                or not self.completion_tokens or self.completion_tokens < 2):
            return None
        return max(0.0, self.duration_seconds - self.ttft_seconds) / (self.completion_tokens - 1)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "LlmRequest":
        """From an ``llm_requests`` row (or its JSON line); unknown keys are ignored."""
        start = row.get("ts_ms", row.get("start_ms"))
        if start is None and isinstance(row.get("ts"), (int, float)):
            start = row["ts"]
        status = row.get("status")
        return cls(
            model=row.get("model"),
            endpoint=row.get("endpoint"),
            status=int(status) if status is not None else None,
            error=row.get("error"),
            start_ms=int(start) if start is not None else None,
            duration_seconds=row.get("duration_seconds"),
            ttft_seconds=row.get("ttft_seconds"),
            tpot_seconds=row.get("tpot_seconds"),
            prompt_tokens=row.get("prompt_tokens"),
            completion_tokens=row.get("completion_tokens"),
            done_reason=row.get("done_reason"),
            stream=None if row.get("stream") is None else bool(row.get("stream")),
        )


@dataclass
class Histogram:
    """Non-cumulative bucket counts; the last slot is +Inf."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        # Prometheus buckets are "less than or equal": bisect_left puts a
        # value equal to a bound into that bound's bucket.
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        out, running = [], 0
        for bound, n in zip(self.bounds + (float("inf"),), self.counts):
            running += n
            out.append((bound, running))
        return out

    def copy(self) -> "Histogram":
        return Histogram(self.bounds, list(self.counts), self.total, self.count)


@dataclass
class ModelStats:
    requests: dict[str, int] = field(default_factory=dict)  # status label -> count
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS_SECONDS))
    tpot: Histogram = field(default_factory=lambda: Histogram(TPOT_BUCKETS_SECONDS))
    duration: Histogram = field(default_factory=lambda: Histogram(DURATION_BUCKETS_SECONDS))

    def copy(self) -> "ModelStats":
        return ModelStats(dict(self.requests), self.prompt_tokens, self.completion_tokens,
                          self.ttft.copy(), self.tpot.copy(), self.duration.copy())


@dataclass
class LoadedModel:
    """One entry of Ollama's ``/api/ps``."""

    name: str
    size_bytes: int | None = None
    size_vram_bytes: int | None = None
    context_length: int | None = None


@dataclass
class LlmSnapshot:
    models: dict[str, ModelStats] = field(default_factory=dict)
    loaded: list[LoadedModel] | None = None  # None: Ollama not polled (or down)


def status_label(req: LlmRequest) -> str:
    """The ``status`` label: the HTTP status, or ``error``/``interrupted``."""
    if req.status is not None:
        return str(req.status)
    return "error" if req.error else "interrupted"


class LlmAggregator:
    """Running totals per model, safe to feed from the proxy's threads.

    ``listeners`` are called with every observed request (the OTLP exporter
    records its own histograms this way).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, ModelStats] = {}
        self.listeners: list[Callable[[LlmRequest], None]] = []

    def observe(self, req: LlmRequest) -> None:
        model = req.model or "unknown"
        with self._lock:
            stats = self._models.get(model)
            if stats is None:
                stats = self._models[model] = ModelStats()
            label = status_label(req)
            stats.requests[label] = stats.requests.get(label, 0) + 1
            stats.prompt_tokens += req.prompt_tokens or 0
            stats.completion_tokens += req.completion_tokens or 0
            if req.duration_seconds is not None:
                stats.duration.observe(req.duration_seconds)
            if not req.failed:
                if req.ttft_seconds is not None:
                    stats.ttft.observe(req.ttft_seconds)
                tpot = req.time_per_output_token()
                if tpot is not None:
                    stats.tpot.observe(tpot)
        for listener in list(self.listeners):
            listener(req)

    def observe_many(self, reqs: Iterable[LlmRequest]) -> int:
        n = 0
        for req in reqs:
            self.observe(req)
            n += 1
        return n

    def snapshot(self) -> dict[str, ModelStats]:
        with self._lock:
            return {model: stats.copy() for model, stats in self._models.items()}


class DbRequestFeed:
    """Feeds an aggregator from new ``llm_requests`` rows (standalone mode).

    Reads rows after the last ``id`` it saw, so each request counts once
    however often it is polled. The database is opened read-only at each
    poll, so one created after gpm started (the proxy's first run) is picked
    up; until then, as while it has no ``llm_requests`` table, there is
    nothing to read. Ids going backwards mean the database was replaced or
    emptied: its rows are then new requests and are counted from the start.
    """

    # What ``LlmRequest.from_row`` reads; never the (large, private) prompt and response.
    COLUMNS = ("id", "ts_ms", "endpoint", "model", "stream", "status", "error", "done_reason",
               "prompt_tokens", "completion_tokens", "ttft_seconds", "tpot_seconds", "duration_seconds")
    BATCH_ROWS = 10_000  # a year of history is read in pieces, not into one list

    def __init__(self, db_path: str | os.PathLike, aggregator: LlmAggregator, *,
                 timeout_secs: float = 1.0) -> None:
        self.db_path = Path(db_path)
        self.aggregator = aggregator
        self.timeout_secs = timeout_secs
        self._last_id = 0
        self._select = (f"SELECT {', '.join(self.COLUMNS)} FROM llm_requests "
                        f"WHERE id > ? ORDER BY id LIMIT {self.BATCH_ROWS}")

    def poll(self) -> int:
        """Count the rows added since the last poll; returns how many."""
        if not self.db_path.exists():
            return 0
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=self.timeout_secs)
        n = 0
        try:
            conn.row_factory = sqlite3.Row
            try:
                top = conn.execute("SELECT max(id) FROM llm_requests").fetchone()[0] or 0
            except sqlite3.OperationalError as err:
                if "no such table" in str(err):
                    return 0
                raise
            if top < self._last_id:
                self._last_id = 0
            while True:
                rows = conn.execute(self._select, (self._last_id,)).fetchall()
                for row in rows:
                    self._last_id = row["id"]
                    self.aggregator.observe(LlmRequest.from_row(dict(row)))
                n += len(rows)
                if len(rows) < self.BATCH_ROWS:
                    return n
        finally:
            conn.close()


def parse_ps(payload: Mapping[str, Any]) -> list[LoadedModel]:
    """``/api/ps`` JSON -> loaded models (missing numbers stay None)."""
    out = []
    for entry in payload.get("models") or []:
        name = entry.get("name") or entry.get("model")
        if not name:
            continue
        out.append(LoadedModel(
            name=name, size_bytes=entry.get("size"), size_vram_bytes=entry.get("size_vram"),
            context_length=entry.get("context_length"),
        ))
    return out


def fetch_loaded_models(api_url: str, timeout: float) -> list[LoadedModel]:
    """GET ``{api_url}/api/ps``; raises OSError/ValueError when Ollama is down or odd."""
    import urllib.request  # here: it loads http.client and ssl, which `gpm --help` does not need

    with urllib.request.urlopen(api_url.rstrip("/") + "/api/ps", timeout=timeout) as resp:
        return parse_ps(jsontext.loads(resp.read()))  # too deep is a ValueError too (#12.11)
