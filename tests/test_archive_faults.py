"""SIGKILL `gpm archive` anywhere: every row stays readable exactly once, and a re-run finishes the job.

No hooks in gpm: the killed process is the real command (imported ahead so
that the random delays fall inside its work, not inside Python start-up).
Deterministic kills watch the steps from outside (a temp file appears, a
part file appears before the manifest lists it, the manifest grows),
freeze the process with SIGSTOP the moment they see one, then SIGKILL it.
It does all its work itself: it has no child process that could outlive it.
"""

from __future__ import annotations

import contextlib
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import psutil
import pytest

from gpm import archiving
from gpm.store.archive import cutoff_ms
from gpm.store.db import open_db
from gpm.store.history import scan
from tests.benchmarks.trace import DAY_MS, trace_frame, write_trace
from tests.conftest import gpm_env

HOST = "fault-host"
KEY = ["host", "gpu_uuid", "ts_ms"]

# The real `gpm archive`, imported before the starting gun.
CHILD = r"""
import sys
import polars, gpm.archiving, gpm.cli.archive, gpm.store.archive, gpm.store.history
from gpm.cli import main
print("ready", flush=True)
sys.stdin.readline()
main(sys.argv[1:])
"""


def days_ago(n: int) -> int:
    return (time.time_ns() // 1_000_000 - n * DAY_MS) // DAY_MS * DAY_MS


def history(db: Path, arch: Path) -> pl.DataFrame:
    return scan("gpu_metrics", db_path=db, archive_dir=arch, own_host=HOST).collect().sort(KEY)


def add_batch(db: Path, batch: int, *, gpus=2, days=4, interval_s=900.0) -> None:
    """Old rows; each batch 37 ms later than the last, so keys never collide (jitter < 25 ms)."""
    conn = open_db(db)
    write_trace(conn, trace_frame(gpus, days, interval_s, start_ms=days_ago(days + 1) + 37 * batch,
                                  seed=batch), host=HOST)
    conn.close()


class Child:
    def __init__(self, db: Path, arch: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, "--db", str(db), "archive", "--archive-dir", str(arch),
             "--older-than", "1", "--wait", "30"],
            env=gpm_env({"GPM_SERVICE_HOSTNAME": HOST}), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)

    def go(self) -> None:
        assert self.proc.stdout.readline().strip() == "ready"
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def freeze(self) -> None:
        """Stop it, so that what it has left on disk stays as it is."""
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(self.proc.pid)
            process.suspend()
            assert process.children() == []  # nothing else writes part files

    def kill(self) -> int:
        self.proc.kill()
        self.proc.communicate(timeout=30)
        return self.proc.returncode


def check_exactly_once(db: Path, arch: Path, expected: pl.DataFrame) -> None:
    got = history(db, arch)
    assert got.select(KEY).is_duplicated().sum() == 0
    assert got.height == expected.height
    assert got.equals(expected)


def finish_and_check(db: Path, arch: Path, expected: pl.DataFrame) -> None:
    """A clean re-run (what `gpm archive` runs) completes the job: nothing old left,
    every file listed, rows identical, no temp file of a killed run (rollups too)."""
    conn = open_db(db)
    result = archiving.archive(conn, arch, cutoff=cutoff_ms(1), own_host=HOST, busy_threshold=5.0)
    assert not result.problems, result.problems
    old = conn.execute("SELECT COUNT(*) FROM gpu_metrics WHERE ts_ms < ?", (cutoff_ms(1),)).fetchone()[0]
    assert old == 0
    listed = {row[0] for row in conn.execute("SELECT path FROM archive_files")}
    manifest_rows = conn.execute("SELECT COALESCE(SUM(row_count), 0) FROM archive_files").fetchone()[0]
    conn.close()
    on_disk = {p.relative_to(arch).as_posix() for p in arch.rglob("*.parquet")}
    assert on_disk == listed
    assert not list(arch.rglob("*.tmp"))
    assert manifest_rows == expected.filter(pl.col("ts_ms") < cutoff_ms(1)).height
    check_exactly_once(db, arch, expected)


def test_sigkill_at_random_times_50_runs(tmp_path):
    db, arch = tmp_path / "gpm.db", tmp_path / "archive"
    rng = random.Random(5)
    add_batch(db, 0)
    expected = history(db, arch)
    child = Child(db, arch)
    busy = 0.3  # running estimate of how long a whole run takes
    outcomes = {"killed": 0, "finished": 0}
    for run in range(50):
        started = time.monotonic()
        child.go()
        upcoming = Child(db, arch)  # warm the next one while this one works
        delay = rng.uniform(0, busy)
        remaining = delay - (time.monotonic() - started)
        if remaining > 0:
            time.sleep(remaining)
        code = child.kill()
        if code == 0:
            outcomes["finished"] += 1
            busy = 0.8 * busy + 0.2 * (time.monotonic() - started)
        else:
            assert code == -signal.SIGKILL
            outcomes["killed"] += 1
        check_exactly_once(db, arch, expected)
        add_batch(db, run + 1)  # more old rows, for days already archived too
        expected = history(db, arch)
        child = upcoming
    child.kill()
    assert outcomes["killed"] >= 20, outcomes  # most runs die part-way
    finish_and_check(db, arch, expected)


def _part_files(arch: Path) -> set[str]:
    return {p.relative_to(arch).as_posix() for p in arch.rglob("part-*.parquet")}


def _manifest(db: Path) -> set[str]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return {row[0] for row in conn.execute("SELECT path FROM archive_files")}
    except sqlite3.OperationalError:
        return set()


STEPS = {
    # written, not yet renamed
    "temp file": lambda db, arch: bool(list(arch.rglob("*.tmp"))),
    # renamed into place, transaction not committed: an orphan
    "orphan": lambda db, arch: bool(_part_files(arch) - _manifest(db)),
    # first file committed, the next days not yet
    "between files": lambda db, arch: len(_manifest(db)) >= 2,
}


@pytest.mark.parametrize("step", sorted(STEPS))
def test_sigkill_at_each_observed_step(tmp_path, step):
    db, arch = tmp_path / "gpm.db", tmp_path / "archive"
    add_batch(db, 0, gpus=2, days=4, interval_s=10)  # ~17,000 rows a day: steps last long enough to see
    expected = history(db, arch)
    seen = False
    for attempt in range(5):
        child = Child(db, arch)
        child.go()
        deadline = time.monotonic() + 30
        while child.proc.poll() is None and time.monotonic() < deadline:
            if STEPS[step](db, arch):
                child.freeze()
                seen = STEPS[step](db, arch)
                break
        child.kill()
        check_exactly_once(db, arch, expected)
        if seen:
            break
        finish_and_check(db, arch, expected)  # it finished first: start again with new old rows
        add_batch(db, attempt + 1, gpus=2, days=4, interval_s=10)
        expected = history(db, arch)
    assert seen, f"never caught the {step} step"
    finish_and_check(db, arch, expected)
