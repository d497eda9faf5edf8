"""Ollama faults under `gpm ollama-watch --follow`: refused, hanging, dying mid-answer, garbage, 10 MB, endless.

The watcher is the real process, polling a real fake server on 127.0.0.1
whose ``/api/ps`` and ``/api/version`` misbehave on demand.  After each
fault it has recorded what it could (the session from the last good
answer stays open; an outage is one ``down`` event and one warning line),
its memory stayed bounded, and it records again once Ollama behaves.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import gpm_env
from tests.fakes.ollama_server import FakeOllama, free_port
from tests.faults.conftest import assert_no_traceback, integrity, query, wait_until


class Watcher:
    """`gpm ollama-watch --follow` with its stderr in a file we can read while it runs."""

    def __init__(self, tmp_path, url: str):
        self.db = tmp_path / "gpm.db"
        self.err_path = tmp_path / "watch.err"
        self._err = open(self.err_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gpm", "--db", str(self.db), "ollama-watch", "--api-url", url,
             "--follow", "--interval", "0.5"],
            env=gpm_env({"GPM_OLLAMA_TIMEOUT_SECS": "0.5"}), stdout=subprocess.DEVNULL, stderr=self._err)
        self.peak_rss = 0

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def events(self) -> list[str]:
        try:
            return [k for k, in query(self.db, "SELECT kind FROM llm_events ORDER BY id")]
        except Exception:  # noqa: BLE001 - not created yet
            return []

    def watch_rss(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.peak_rss = max(self.peak_rss, psutil.Process(self.proc.pid).memory_info().rss)
            time.sleep(0.02)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        finally:
            self.proc.kill()
            self._err.close()


@pytest.fixture
def fake():
    with FakeOllama() as server:
        yield server


@pytest.mark.parametrize("mode, said", [
    ("hang", "timed out"),
    ("die", "connection cut after 25 bytes of the answer"),
    ("garbage", "answer is not JSON"),
    ("endless", "answer larger than 16 MiB"),
])
def test_watch_rides_out_a_misbehaving_ollama_with_one_warning_and_bounded_memory(fake, tmp_path, mode, said):
    w = Watcher(tmp_path, fake.url)
    try:
        wait_until(lambda: w.events() == ["up"], what="Ollama up")
        fake.faults["/api/ps"] = mode
        wait_until(lambda: w.events() == ["up", "down"], timeout=10, what="the fault recorded as down")
        w.watch_rss(1.5)  # a few more failing polls
        del fake.faults["/api/ps"]
        wait_until(lambda: w.events() == ["up", "down", "up"], timeout=10, what="Ollama up again")
        rc = w.stop()
    finally:
        w.proc.kill()
    assert rc == 0
    warnings = [line for line in w.err.splitlines() if "Ollama is down" in line]
    assert len(warnings) == 1 and said in warnings[0] and f"{fake.url}/api/ps" in warnings[0], w.err
    assert w.peak_rss < 120 * 1024 * 1024, f"{w.peak_rss / 2**20:.0f} MiB"
    # the outage closed the session at its start; the model seen again opens one: nothing lost or doubled
    sessions = query(w.db, "SELECT model, unloaded_at_ms IS NULL FROM llm_sessions ORDER BY loaded_at_ms")
    assert sessions == [("gemma4", 0), ("gemma4", 1)]
    assert integrity(w.db) == "ok"
    assert_no_traceback(w.err)


def test_a_10_mb_answer_is_read_and_recorded(fake, tmp_path):
    fake.faults["/api/ps"] = "huge"
    w = Watcher(tmp_path, fake.url)
    try:
        wait_until(lambda: query(w.db, "SELECT COUNT(*) FROM llm_sessions") == [(1,)] if w.events() else None,
                   timeout=15, what="the session from the 10 MB answer")
        w.watch_rss(1.0)
        rc = w.stop()
    finally:
        w.proc.kill()
    assert rc == 0
    assert w.events() == ["up"]
    assert query(w.db, "SELECT model, size_bytes FROM llm_sessions") == [("gemma4", 6591830464)]
    assert w.peak_rss < 200 * 1024 * 1024, f"{w.peak_rss / 2**20:.0f} MiB"
    assert w.err == f"gpm: Ollama at {fake.url} is up (version {fake.version})\n"


def test_refused_connections_then_ollama_starts_is_down_once_then_up(tmp_path):
    port = free_port()
    w = Watcher(tmp_path, f"http://127.0.0.1:{port}")
    try:
        wait_until(lambda: w.events() == ["down"], what="down")
        time.sleep(1.0)  # more refused polls: still one event, one line
        with FakeOllama(port=port):
            wait_until(lambda: w.events() == ["down", "up"], timeout=10, what="up")
            wait_until(lambda: query(w.db, "SELECT COUNT(*) FROM llm_sessions") == [(1,)], what="a session")
            rc = w.stop()
    finally:
        w.proc.kill()
    assert rc == 0
    (line,) = [l for l in w.err.splitlines() if "warning" in l]
    assert re.fullmatch(rf"gpm: warning: Ollama is down: http://127.0.0.1:{port}/api/version: connection refused", line)
    assert_no_traceback(w.err)
