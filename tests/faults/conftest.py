"""Shared helpers for the fault suite: the daemon as a real process, row counts, integrity.

Every fault case ends with the same three questions, asked here once:
which rows are stored, is the database intact, and did anything print a
traceback.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tests.test_daemon import DaemonProcess, fast_env  # noqa: F401 - re-exported for the fault files


def query(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def integrity(db: Path) -> str:
    return query(db, "PRAGMA integrity_check")[0][0]


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text and "internal error" not in text, text


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy (returned)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def ticks(db: Path) -> list[tuple[int, tuple]]:
    """Each stored tick: (ts_ms, ((gpu_index, status), ...)) in time order."""
    by_ts: dict[int, list] = {}
    try:
        stored = query(db, "SELECT ts_ms, gpu_index, status FROM gpu_samples ORDER BY ts_ms, gpu_index")
    except sqlite3.OperationalError:  # not created yet: the daemon is starting
        return []
    for ts, index, status in stored:
        by_ts.setdefault(ts, []).append((index, status))
    return [(ts, tuple(v)) for ts, v in sorted(by_ts.items())]


@pytest.fixture
def daemon(tmp_path):
    """Start ``gpm daemon`` processes (``daemon(env, *args)``); all are killed at the end."""
    started: list[DaemonProcess] = []

    def start(env: dict, *args: str, db: Path | None = None) -> DaemonProcess:
        d = DaemonProcess(tmp_path, env, *args, db=db)
        started.append(d)
        return d

    yield start
    for d in started:
        d.kill()
