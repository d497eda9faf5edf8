"""Loaded-model sessions from ``/api/ps``, and Ollama's ups and downs.

A poll compares what Ollama has loaded now with the open ``llm_sessions``
rows of that server (in the database, not in memory, so a cron run every
minute continues what the previous run saw): a new model opens a session,
a model gone closes it, a model reloaded with another digest, size or
context length closes the old session and opens a new one. Server health is
kept the same way: an ``llm_events`` row is written only when the state
differs from the last recorded one.

``OllamaWatcher`` wraps a poll in a thread (``start()``/``stop()``) for the
daemon; ``gpm ollama-watch`` calls ``poll()`` from its own loop.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from gpm.llm.client import LoadedModel, OllamaClient, OllamaUnavailable
from gpm.store.db import write

log = logging.getLogger("gpm.llm")

SESSION_COLUMNS = (
    "id", "host", "server", "model", "digest", "size_bytes", "size_vram_bytes", "context_length",
    "quantization", "parameter_size", "family", "loaded_at_ms", "last_seen_ms", "expires_at_ms",
    "unloaded_at_ms",
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class PollResult:
    """What one poll saw and changed."""

    ts_ms: int
    up: bool
    version: str | None = None
    error: str | None = None
    models: list[LoadedModel] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # kinds recorded by this poll


def _same_load(row: tuple, m: LoadedModel) -> bool:
    """Whether an open session (id, model, digest, size, context) is still the same load."""
    digest, size, ctx = row[2], row[3], row[4]
    return (digest, size, ctx) == (m.digest, m.size_bytes, m.context_length)


class SessionTracker:
    """Applies polls of one Ollama server to ``llm_sessions`` and ``llm_events``."""

    def __init__(self, conn: sqlite3.Connection, server: str, host: str) -> None:
        self.conn = conn
        self.server = server
        self.host = host

    def last_event(self) -> tuple[str, str | None] | None:
        row = self.conn.execute(
            "SELECT kind, version FROM llm_events WHERE server = ? AND kind IN ('up', 'down') "
            "ORDER BY ts_ms DESC, id DESC LIMIT 1",
            (self.server,),
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def last_version(self) -> str | None:
        row = self.conn.execute(
            "SELECT version FROM llm_events WHERE server = ? AND version IS NOT NULL "
            "ORDER BY ts_ms DESC, id DESC LIMIT 1",
            (self.server,),
        ).fetchone()
        return None if row is None else row[0]

    def _event(self, ts_ms: int, kind: str, version: str | None, detail: str | None) -> None:
        self.conn.execute(
            "INSERT INTO llm_events (ts_ms, host, server, kind, version, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (ts_ms, self.host, self.server, kind, version, detail),
        )

    def record_down(self, ts_ms: int, error: str) -> PollResult:
        """Ollama did not answer: note it once and close its sessions (its runners died with it)."""
        result = PollResult(ts_ms=ts_ms, up=False, error=error)
        with write(self.conn):
            last = self.last_event()
            if last is None or last[0] != "down":
                self._event(ts_ms, "down", None, error)
                result.events.append("down")
                rows = self.conn.execute(
                    "SELECT id, model FROM llm_sessions WHERE server = ? AND unloaded_at_ms IS NULL",
                    (self.server,),
                ).fetchall()
                for session_id, model in rows:
                    self.conn.execute(
                        "UPDATE llm_sessions SET unloaded_at_ms = ? WHERE id = ?", (ts_ms, session_id)
                    )
                    result.closed.append(model)
        return result

    def record_up(self, ts_ms: int, version: str, models: list[LoadedModel]) -> PollResult:
        result = PollResult(ts_ms=ts_ms, up=True, version=version, models=models)
        with write(self.conn):
            last = self.last_event()
            if last is None or last[0] != "up":
                self._event(ts_ms, "up", version, None)
                result.events.append("up")
            elif self.last_version() != version:
                self._event(ts_ms, "version", version, f"was {self.last_version()}")
                result.events.append("version")
            open_rows = {
                row[1]: row
                for row in self.conn.execute(
                    "SELECT id, model, digest, size_bytes, context_length FROM llm_sessions "
                    "WHERE server = ? AND unloaded_at_ms IS NULL",
                    (self.server,),
                )
            }
            seen = set()
            for m in models:
                if m.model in seen:
                    continue
                seen.add(m.model)
                row = open_rows.pop(m.model, None)
                if row is not None and _same_load(row, m):
                    self.conn.execute(
                        "UPDATE llm_sessions SET last_seen_ms = ?, size_vram_bytes = ?, expires_at_ms = ? "
                        "WHERE id = ?",
                        (ts_ms, m.size_vram_bytes, m.expires_at_ms, row[0]),
                    )
                    continue
                if row is not None:  # reloaded with other weights or another context size
                    self.conn.execute("UPDATE llm_sessions SET unloaded_at_ms = ? WHERE id = ?", (ts_ms, row[0]))
                    result.closed.append(m.model)
                self.conn.execute(
                    """INSERT INTO llm_sessions (host, server, model, digest, size_bytes, size_vram_bytes,
                       context_length, quantization, parameter_size, family, loaded_at_ms, last_seen_ms,
                       expires_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    (self.host, self.server, m.model, m.digest, m.size_bytes, m.size_vram_bytes,
                     m.context_length, m.quantization, m.parameter_size, m.family, ts_ms, ts_ms,
                     m.expires_at_ms),
                )
                result.opened.append(m.model)
            for model, row in open_rows.items():
                self.conn.execute("UPDATE llm_sessions SET unloaded_at_ms = ? WHERE id = ?", (ts_ms, row[0]))
                result.closed.append(model)
        return result

    def poll(self, client: OllamaClient, ts_ms: int | None = None) -> PollResult:
        """One health check and ``/api/ps`` poll, applied to the database."""
        try:
            version = client.version()
            models = client.ps()
        except OllamaUnavailable as err:
            return self.record_down(ts_ms or now_ms(), str(err))
        return self.record_up(ts_ms or now_ms(), version, models)


def open_sessions(conn: sqlite3.Connection, server: str | None = None) -> list[dict]:
    """The sessions open now (of one server, or all), as dicts of ``SESSION_COLUMNS``."""
    sql = f"SELECT {', '.join(SESSION_COLUMNS)} FROM llm_sessions WHERE unloaded_at_ms IS NULL"
    args: tuple = ()
    if server is not None:
        sql += " AND server = ?"
        args = (server,)
    return [dict(zip(SESSION_COLUMNS, row)) for row in conn.execute(sql + " ORDER BY loaded_at_ms, id", args)]


class OllamaWatcher:
    """Polls one Ollama server every ``interval_secs`` in a thread (for the daemon).

    ``on_poll`` (if given) is called with each ``PollResult``; failures in it
    are logged, not raised, so a bad callback cannot stop the watching.
    """

    def __init__(self, conn: sqlite3.Connection, api_url: str, host: str, *, interval_secs: float = 5.0,
                 timeout_secs: float = 5.0, on_poll: Callable[[PollResult], None] | None = None) -> None:
        self.client = OllamaClient(api_url, timeout_secs)
        self.tracker = SessionTracker(conn, api_url, host)
        self.interval_secs = interval_secs
        self.on_poll = on_poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> PollResult:
        result = self.tracker.poll(self.client)
        if result.events:
            if result.up:
                log.info("ollama at %s is up (version %s)", self.client.api_url, result.version)
            else:
                log.warning("ollama at %s is down: %s", self.client.api_url, result.error)
        if self.on_poll is not None:
            try:
                self.on_poll(result)
            except Exception:  # noqa: BLE001 - a callback must not stop the watcher
                log.exception("ollama watcher callback failed")
        return result

    def run(self) -> None:
        """Poll on a drift-free grid until ``stop()``."""
        from gpm.schedule import Stopper, ticks

        stopper = Stopper()
        stopper.event = self._stop
        for _ in ticks(self.interval_secs, None, stopper):
            try:
                self.poll()
            except sqlite3.Error:
                log.exception("ollama watcher could not write to the database")

    def start(self) -> "OllamaWatcher":
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="gpm-ollama-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
