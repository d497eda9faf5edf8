"""The clock set back: a database sampled at a later time, then `gpm sample` and `gpm daemon`
under a clock an hour and a day earlier (an NTP step, a dead RTC battery, a VM restored
from a snapshot).

libfaketime moves the wall clock of the gpm process only (``FAKETIME``, relative); its
monotonic clock stays real, as it does when a clock is set. Afterwards: every sample is
stored once and whole, the GPUs' and processes' first and last samples span all of them,
every sample of a process is counted, and neither `gpm report` nor `/metrics` shows a
negative number.
"""

from __future__ import annotations

import glob
import json
import re
import signal
import socket
import subprocess
import urllib.request
from datetime import datetime, timezone

import pytest

from tests.conftest import run_gpm
from tests.faults.conftest import DaemonProcess, assert_no_traceback, integrity, query, wait_until
from tests.fakes.nvml import FakeProcess, Scenario, make_gpu

LIBFAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1") + glob.glob("/usr/lib/faketime/libfaketimeMT.so.1"))
pytestmark = pytest.mark.skipif(not LIBFAKETIME, reason="libfaketime is not installed (Debian package faketime)")

HOUR_S, DAY_S = 3600, 86400


def clock_back(env: dict, seconds: int) -> dict:
    """``env`` for a gpm whose wall clock is ``seconds`` behind (its monotonic clock is not)."""
    return {**env, "LD_PRELOAD": LIBFAKETIME[0], "FAKETIME": f"-{seconds}", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_DONT_RESET": "1"}


@pytest.fixture
def world(fake_nvml):
    """Two GPUs, a real process on the first."""
    sleeper = subprocess.Popen(["sleep", "300"])
    fake_nvml.set(Scenario(gpus=[make_gpu(0, processes=[FakeProcess(sleeper.pid, sm_util=50)]), make_gpu(1)]))
    yield sleeper.pid
    sleeper.kill()
    sleeper.wait()


def negatives(value, path: str = "") -> list[str]:
    """Every negative number in a JSON document, by its path."""
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in negatives(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [n for i, v in enumerate(value) for n in negatives(v, f"{path}[{i}]")]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        return [f"{path} = {value}"]
    return []


def check_database(db, ticks: int) -> None:
    """``ticks`` samples of both GPUs, each once; spans and counts that cover them all."""
    assert integrity(db) == "ok"
    assert query(db, "SELECT COUNT(*), COUNT(DISTINCT ts_ms) FROM gpu_metrics WHERE gpu_id = "
                     "(SELECT id FROM gpus WHERE gpu_index = 0)") == [(ticks, ticks)]
    assert query(db, "SELECT gpu_index, COUNT(*) FROM gpu_samples GROUP BY gpu_index") == [(0, ticks), (1, ticks)]
    # A GPU's first and last sample are its earliest and latest, whatever order they came in.
    spans = query(db, "SELECT g.first_seen_ms = MIN(m.ts_ms), g.last_seen_ms = MAX(m.ts_ms) "
                      "FROM gpus g JOIN gpu_metrics m ON m.gpu_id = g.id GROUP BY g.id")
    assert spans == [(1, 1), (1, 1)]
    # The process was in every sample of GPU 0: each one counted, and its run spans them all.
    ((samples, first_ok, last_ok, seconds),) = query(db, """
        SELECT SUM(e.samples), MIN(e.first_seen_ms) = (SELECT MIN(ts_ms) FROM gpu_metrics WHERE gpu_id = e.gpu_id),
               MAX(e.last_seen_ms) = (SELECT MAX(ts_ms) FROM gpu_metrics WHERE gpu_id = e.gpu_id),
               MIN(e.gpu_seconds) FROM process_events e""")
    assert (samples, first_ok, last_ok) == (ticks, 1, 1)
    assert seconds >= 0


def check_report(db, env: dict) -> dict:
    proc = run_gpm("--db", db, "report", "--format", "json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc.stderr)
    doc = json.loads(proc.stdout)
    assert negatives(doc) == []
    # Every sampled second is in the coverage (days count GPU time: two GPUs), and the
    # first sample is the earliest one, not the first one stored.
    (coverage,) = doc["coverage"]
    assert 2 * coverage["sampled_seconds"] == pytest.approx(sum(d["sampled_seconds"] for d in doc["days"]), abs=0.01)
    assert coverage["first_sample_ms"] == query(db, "SELECT MIN(ts_ms) FROM gpu_metrics")[0][0]
    text = run_gpm("--db", db, "report", env={**env, "TZ": "UTC"}).stdout
    first_ever = re.search(r"first sample ever (\d{4}-\d\d-\d\d)", text)
    day = datetime.fromtimestamp(coverage["first_sample_ms"] / 1000, tz=timezone.utc).date().isoformat()
    assert first_ever is None or first_ever.group(1) == day, text
    return doc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metric_values(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_sample_under_a_clock_set_back_an_hour_then_a_day(fake_nvml, world, tmp_path):
    db = tmp_path / "gpm.db"
    env = fake_nvml.env()
    run_gpm("--db", db, "sample", "-n", "3", "-i", "0.2", env=env, check=True)  # the later time
    for back in (HOUR_S, DAY_S):
        proc = run_gpm("--db", db, "sample", "-n", "3", "-i", "0.2", env=clock_back(env, back))
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    check_database(db, ticks=9)
    days = [ts // 1000 // DAY_S for (ts,) in query(db, "SELECT ts_ms FROM gpu_metrics")]
    assert max(days) - min(days) == 1  # the clock really was a day back
    doc = check_report(db, env)
    assert doc["coverage"][0]["sampled_seconds"] > 0
    # Now the clock is right again: the next sample is stored like any other.
    run_gpm("--db", db, "sample", env=env, check=True)
    check_database(db, ticks=10)


def test_daemon_under_a_clock_set_back_stores_every_tick_and_metrics_stay_positive(fake_nvml, world, tmp_path):
    db = tmp_path / "gpm.db"
    env = fake_nvml.env({"GPM_SERVICE_POLL_INTERVAL_SECS": "0.2", "GPM_GPU_FALLBACK_TO_NVIDIA_SMI": "false",
                         "GPM_STORAGE_ENABLE_PARQUET_ARCHIVAL": "false", "GPM_TELEMETRY_ENABLE_PROMETHEUS": "true"})
    run_gpm("--db", db, "sample", "-n", "3", "-i", "0.2", env=env, check=True)  # the later time
    stored = 3
    for back in (HOUR_S, DAY_S):
        port = _free_port()
        daemon = DaemonProcess(tmp_path, clock_back({**env, "GPM_TELEMETRY_METRICS_LISTEN": f"127.0.0.1:{port}"},
                                                    back), db=db)
        try:
            wait_until(lambda: query(db, "SELECT COUNT(*) FROM gpu_metrics")[0][0] >= 2 * (stored + 5),
                       timeout=20, what="five daemon ticks")

            def scrape():
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                    return resp.read().decode()
            text = wait_until(lambda: _try(scrape), timeout=10, what="/metrics")
            rc, _ = daemon.stop(signal.SIGTERM)
        finally:
            daemon.kill()
        assert rc == 0, daemon.log
        assert_no_traceback(daemon.log)
        assert not re.search(r"\b(ERROR|WARNING)\b", daemon.log), daemon.log
        values = _metric_values(text)
        assert values and {k: v for k, v in values.items() if v < 0} == {}
        stored = query(db, "SELECT COUNT(DISTINCT ts_ms) FROM gpu_metrics")[0][0]
        check_database(db, ticks=stored)
    check_report(db, env)


def _try(fn):
    try:
        return fn()
    except OSError:
        return None
