"""SIGKILL `gpm sample` and `gpm daemon` at random moments: nothing committed is lost or doubled.

A SIGKILL gives gpm no chance to clean up: whatever SQLite committed must
survive it, whatever it had not committed must leave no trace, and the next
run must store as if nothing happened. Each case runs the real command on
the fake NVML (three GPUs, real processes on two of them) 50 times against
one database, each run killed after a delay drawn by a seeded RNG (the same
delays on every run of the suite), and after every kill checks the whole
database: no row lost, every tick whole, process rows consistent with the
samples they were counted from, ``integrity_check`` ok.

The killed processes are the real command, imported ahead (``ARMED``) so
that the delays fall inside its work rather than inside Python start-up.
`gpm archive` is killed 50+ times by tests/test_archive_faults.py, with
checks of its own (every row readable exactly once from the database and
the Parquet files); it is not repeated here.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import gpm_env, run_gpm
from tests.faults.conftest import integrity, query
from tests.fakes.nvml import FakeProcess, Scenario, make_gpu

GPUS = 3

# The real `gpm`, imported (sampling path included) before the starting gun.
ARMED = r"""
import sys
import pynvml, gpm.cli.sample, gpm.cli.daemon, gpm.sampling, gpm.gpu.nvml, gpm.store.process_events
import gpm.classify.live, gpm.daemon.jobs, gpm.store.rollup
from gpm.cli import main
print("ready", flush=True)
sys.stdin.readline()
main(sys.argv[1:])
"""


class Armed:
    """``gpm ARGS`` started and imported, waiting for ``go()``; ``kill()`` is SIGKILL."""

    def __init__(self, env: dict, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ARMED, *args], env=gpm_env(env), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def go(self) -> None:
        assert self.proc.stdout.readline().strip() == "ready"
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def kill(self) -> tuple[int, str, str]:
        """(exit code, stdout, stderr); -9 when the kill came first."""
        self.proc.kill()
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, err


@pytest.fixture
def gpu_world(fake_nvml):
    """Three GPUs; two real processes, one of them on two GPUs (a process row per GPU)."""
    sleepers = [subprocess.Popen(["sleep", "300"]) for _ in range(2)]
    a, b = (p.pid for p in sleepers)
    fake_nvml.set(Scenario(gpus=[
        make_gpu(0, processes=[FakeProcess(a, sm_util=60), FakeProcess(b, sm_util=20)]),
        make_gpu(1, processes=[FakeProcess(a, used_memory=2 << 30)]),
        make_gpu(2),
    ]))
    yield {0: {a, b}, 1: {a}, 2: set()}
    for p in sleepers:
        p.kill()
        p.wait()


def migrated(db: Path, table: str = "gpu_samples") -> bool:
    """Whether a run got as far as creating ``table`` (never creates the file itself).

    Each migration commits on its own, so a kill can leave the core tables
    without the later sets' (the next run adds them)."""
    # (read-write all the same: reading a WAL left by a killed writer may mean recovering it)
    return db.exists() and bool(query(db, "SELECT 1 FROM sqlite_master WHERE name = ?", (table,)))


def stored(db: Path) -> set[tuple[int, int]]:
    """Every stored GPU reading, as (ts_ms, gpu_index)."""
    return set(query(db, "SELECT ts_ms, gpu_index FROM gpu_samples")) if migrated(db) else set()


def check_database(db: Path, pids_by_gpu: dict[int, set[int]]) -> None:
    """The whole database is what a run of complete, committed samples leaves."""
    if not migrated(db):
        return  # killed before the first migration committed: nothing to hold
    assert integrity(db) == "ok"
    assert query(db, "PRAGMA foreign_key_check") == []
    ticks: dict[int, list[int]] = {}
    for ts, index in query(db, "SELECT ts_ms, gpu_index FROM gpu_samples ORDER BY ts_ms, gpu_index"):
        ticks.setdefault(ts, []).append(index)
    whole = list(range(GPUS))
    assert all(indexes == whole for indexes in ticks.values()), \
        {ts: v for ts, v in ticks.items() if v != whole}  # a sample is stored whole or not at all
    if not migrated(db, "process_events"):
        assert ticks == {}  # a sample is stored with its processes, never without
        return
    # One process row per (GPU, process), spanning exactly the samples it was counted in.
    runs = query(db, """SELECT g.gpu_index, e.pid, e.first_seen_ms, e.last_seen_ms, e.samples,
                        (SELECT COUNT(*) FROM gpu_metrics m WHERE m.gpu_id = e.gpu_id
                         AND m.ts_ms BETWEEN e.first_seen_ms AND e.last_seen_ms)
                        FROM process_events e JOIN gpus g ON g.id = e.gpu_id""")
    expected = sorted((i, pid) for i, pids in pids_by_gpu.items() for pid in pids) if ticks else []
    assert sorted((i, pid) for i, pid, *_ in runs) == expected
    first_tick = min(ticks, default=None)
    for index, pid, first, last, samples, spanned in runs:
        assert first == first_tick and last == max(ticks), (index, pid, first, last)
        assert samples == spanned == len(ticks), (index, pid, samples, spanned, len(ticks))


def printed_readings(out: str) -> set[tuple[int, int]]:
    """(ts_ms, gpu_index) of each complete ``--json`` line: printed only once stored."""
    found = set()
    for line in out.splitlines(keepends=True):
        if not line.endswith("\n"):
            continue  # cut by the kill
        obj = json.loads(line)
        ts = datetime.fromisoformat(obj["ts"].replace("Z", "+00:00"))
        found.add((round(ts.timestamp() * 1000), obj["gpu_index"]))
    return found


def kill_runs(db: Path, env: dict, args: tuple[str, ...], pids_by_gpu, *, seed: int, runs: int = 50,
              longest: float) -> dict[str, int]:
    """Run ``gpm --db DB ARGS`` ``runs`` times, each SIGKILLed after a seeded random delay."""
    rng = random.Random(seed)
    outcomes = {"killed": 0, "finished": 0}
    child = Armed(env, "--db", str(db), *args)
    for _ in range(runs):
        before = stored(db)
        child.go()
        started = time.monotonic()
        upcoming = Armed(env, "--db", str(db), *args)  # warm the next one while this one works
        remaining = rng.uniform(0, longest) - (time.monotonic() - started)
        if remaining > 0:
            time.sleep(remaining)
        code, out, err = child.kill()
        assert "Traceback" not in err, err
        if code == -signal.SIGKILL:
            outcomes["killed"] += 1
        else:
            assert code == 0, err
            outcomes["finished"] += 1
        after = stored(db)
        assert before <= after, f"rows lost: {sorted(before - after)[:5]}"
        assert printed_readings(out) <= after - before, "a sample printed as stored is missing"
        check_database(db, pids_by_gpu)
        child = upcoming
    child.kill()
    return outcomes


def clean_sample_stores_normally(db: Path, env: dict, pids_by_gpu) -> None:
    before = stored(db)
    proc = run_gpm("--db", db, "sample", env=env)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    new = stored(db) - before
    assert len(new) == GPUS and len({ts for ts, _ in new}) == 1
    check_database(db, pids_by_gpu)


def test_sigkill_gpm_sample_50_times(fake_nvml, gpu_world, tmp_path):
    db = tmp_path / "gpm.db"
    env = fake_nvml.env()
    # six samples 0.1 s apart outlast the longest delay even on a fast, idle machine
    outcomes = kill_runs(db, env, ("sample", "-n", "6", "-i", "0.1", "--json"), gpu_world,
                         seed=12, longest=0.45)
    assert outcomes["killed"] >= 30, outcomes
    assert stored(db), "no run got as far as a stored sample: the delays miss the work"
    clean_sample_stores_normally(db, env, gpu_world)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigkill_gpm_daemon_50_times(fake_nvml, gpu_world, tmp_path):
    """The daemon with its jobs (sampling every 0.1 s, the hourly reductions, the /metrics
    server), killed in its first second: mid-start, mid-sample, mid-reduction."""
    db = tmp_path / "gpm.db"
    env = fake_nvml.env({"GPM_SERVICE_POLL_INTERVAL_SECS": "0.1", "GPM_GPU_FALLBACK_TO_NVIDIA_SMI": "false",
                         "GPM_TELEMETRY_ENABLE_PROMETHEUS": "true",
                         "GPM_TELEMETRY_METRICS_LISTEN": f"127.0.0.1:{_free_port()}",
                         "GPM_STORAGE_ENABLE_PARQUET_ARCHIVAL": "false"})
    outcomes = kill_runs(db, env, ("daemon",), gpu_world, seed=21, longest=0.8)
    assert outcomes == {"killed": 50, "finished": 0}
    assert len({ts for ts, _ in stored(db)}) >= 50, "the kills fell before the daemon sampled"
    clean_sample_stores_normally(db, fake_nvml.env(), gpu_world)
