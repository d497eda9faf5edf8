"""Ollama's loaded models and health, seen through ``/api/version`` and ``/api/ps``.

``poll(client)`` says what one look at the server saw, as a ``PollResult``
with nothing changed yet. Recording it is the store's job (#14.5):
``gpm.store.llm.SessionLog`` compares it with the open ``llm_sessions``
rows (in the database, so a cron run every minute continues what the
previous run saw) and fills in the sessions it opened and closed and the
events it recorded.

``OllamaWatcher`` wraps poll and save in a thread (``start()``/``stop()``)
for the daemon; ``gpm ollama-watch`` calls them from its own loop.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from gpm.llm.client import LoadedModel, OllamaClient, OllamaUnavailable
from gpm.repeat import Stopper, ticks

log = logging.getLogger("gpm.llm")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class PollResult:
    """What one poll saw and, once saved, what it changed."""

    ts_ms: int
    up: bool
    version: str | None = None
    error: str | None = None
    models: list[LoadedModel] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # kinds recorded by this poll


def poll(client: OllamaClient, ts_ms: int | None = None) -> PollResult:
    """One health check and ``/api/ps`` poll; a server that does not answer is down."""
    try:
        version = client.version()
        models = client.ps()
    except OllamaUnavailable as err:
        return PollResult(ts_ms=ts_ms or now_ms(), up=False, error=str(err))
    return PollResult(ts_ms=ts_ms or now_ms(), up=True, version=version, models=models)


class OllamaWatcher:
    """Polls one Ollama server every ``interval_secs`` in a thread (for the daemon).

    ``save(result)`` records each poll and returns it with what it changed
    (``gpm.store.llm.SessionLog``). ``on_poll`` (if given) is then called
    with it; failures in it are logged, not raised, so a bad callback cannot
    stop the watching.
    """

    def __init__(self, api_url: str, save: Callable[[PollResult], PollResult], *, interval_secs: float = 5.0,
                 timeout_secs: float = 5.0, on_poll: Callable[[PollResult], None] | None = None) -> None:
        self.client = OllamaClient(api_url, timeout_secs)
        self.save = save
        self.interval_secs = interval_secs
        self.on_poll = on_poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> PollResult:
        result = self.save(poll(self.client))
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
