"""The archive under hostile conditions (#12.3, #12.4, #12.12): two databases on one
host, a database that must really shrink, a daemon stopped mid-archive.

Every case runs the real `gpm` commands and checks rows (exported through
`gpm export`), files on disk and the database file's size.
"""

from __future__ import annotations

import io
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import psutil

from gpm.store.db import open_db
from tests.benchmarks.trace import DAY_MS, trace_frame, write_trace
from tests.conftest import gpm_env, run_gpm
from tests.fakes.nvml import Scenario

HOST = "safety-host"
ENV = {"GPM_SERVICE_HOSTNAME": HOST}
KEY = ["host", "gpu_uuid", "ts_ms"]


def days_ago(n: int) -> int:
    return (time.time_ns() // 1_000_000 - n * DAY_MS) // DAY_MS * DAY_MS


def stored_db(path: Path, frame: pl.DataFrame) -> Path:
    conn = open_db(path)
    write_trace(conn, frame, host=HOST)
    conn.close()
    return path


def exported(db: Path, env: dict | None = None) -> pl.DataFrame:
    """Everything `gpm export --since` gives back for ``db``, in key order."""
    result = run_gpm("--db", db, "export", "-t", "gpu_metrics", "--since", "30d", "--format", "csv",
                     env={**ENV, **(env or {})}, check=True)
    return pl.read_csv(io.StringIO(result.stdout)).sort(KEY)


def archive(db: Path, older_than: int, env: dict | None = None, *args: str, verbose: bool = False) -> str:
    result = run_gpm(*(["-v"] if verbose else []), "--db", db, "archive", "--older-than", str(older_than), *args,
                     env={**ENV, **(env or {})})
    assert result.returncode == 0, result.stderr
    return result.stderr


def manifest(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT path FROM archive_files")}


def two_databases(tmp_path: Path) -> tuple[Path, Path]:
    """a.db and b.db with six days each; b's rows have a's keys (same GPUs, same times), other values."""
    frame = trace_frame(2, 6, 900.0, start_ms=days_ago(6))
    folder = tmp_path / "dbs"
    a = stored_db(folder / "a.db", frame)
    b = stored_db(folder / "b.db", frame.with_columns(pl.col("temperature_celsius") + 7))
    return a, b


# --------------------------------------------------------------------------- #12.3


def test_two_databases_on_one_host_keep_their_own_history(tmp_path):
    """Archived alternately with the default folders: each export returns exactly its own rows."""
    a, b = two_databases(tmp_path)
    expected = {a: exported(a), b: exported(b)}
    assert expected[a].height == expected[b].height == 2 * 6 * 96
    assert not expected[a].equals(expected[b])
    for older_than in (4, 2):
        for db in (a, b):
            archive(db, older_than)
    for db in (a, b):
        assert exported(db).equals(expected[db])
        assert manifest(db)
        assert all(path.startswith("gpu_metrics/host=") for path in manifest(db))
    # Each database its own folder beside it (the default database keeps $XDG_DATA_HOME/gpm/archive).
    assert {p.name for p in (tmp_path / "dbs").glob("*-archive")} == {"a.db-archive", "b.db-archive"}
    assert not (tmp_path / "home" / ".local/share/gpm/archive").exists()
    for db in (a, b):
        on_disk = {p.relative_to(Path(f"{db}-archive")).as_posix()
                   for p in Path(f"{db}-archive").rglob("*.parquet")}
        assert on_disk == manifest(db)
    assert not list((tmp_path / "dbs").rglob("*.rejected"))


def test_two_databases_sharing_one_explicit_folder_lose_nothing(tmp_path):
    """One [storage] archive_dir for both, and a file neither wrote: nothing set aside, nothing lost."""
    a, b = two_databases(tmp_path)
    shared = tmp_path / "shared"
    env = {"GPM_STORAGE_ARCHIVE_DIR": shared}
    expected = {a: exported(a, env), b: exported(b, env)}
    # A part file from a gpm before database ids, in the folder of a day both will archive.
    stranger = shared / "gpu_metrics" / f"host={HOST}" / f"date={time.strftime('%Y-%m-%d', time.gmtime(days_ago(5) / 1000))}" / "part-1-old.parquet"
    stranger.parent.mkdir(parents=True)
    stranger.write_bytes(b"PAR1 someone else's")
    for older_than in (4, 2):
        for db in (a, b):
            said = archive(db, older_than, env, verbose=True)
            assert "not written by this database left alone" in said
    for db in (a, b):
        assert exported(db, env).equals(expected[db])
    assert stranger.read_bytes() == b"PAR1 someone else's"
    assert not list(shared.rglob("*.rejected"))
    assert {p.relative_to(shared).as_posix() for p in shared.rglob("part-*-db*.parquet")} == manifest(a) | manifest(b)
    assert not manifest(a) & manifest(b)


def test_a_database_that_archived_before_ids_keeps_finding_its_files(tmp_path):
    """Its manifest lists files in the old default folder; no folder recorded yet."""
    db = stored_db(tmp_path / "dbs" / "old.db", trace_frame(2, 6, 900.0, start_ms=days_ago(6)))
    legacy = tmp_path / "home" / ".local/share/gpm/archive"
    expected = exported(db)
    archive(db, 4, None, "--archive-dir", str(legacy))
    with sqlite3.connect(db) as conn:  # as the migration leaves a database that archived before it
        conn.execute("UPDATE archive_identity SET folder = NULL")
    assert exported(db).equals(expected)
    archive(db, 2)
    assert exported(db).equals(expected)
    assert {p.relative_to(legacy).as_posix() for p in legacy.rglob("*.parquet")} == manifest(db)
    assert not Path(f"{db}-archive").exists()


# --------------------------------------------------------------------------- #12.4


def file_bytes(db: Path) -> int:
    wal = Path(f"{db}-wal")
    return db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def test_archive_shrinks_the_file_when_a_minority_of_pages_is_freed(tmp_path):
    """A third of the rows archived: incremental_vacuum (not VACUUM) gives every free page back."""
    db = stored_db(tmp_path / "gpm.db", trace_frame(4, 9, 60.0, start_ms=days_ago(9)))
    with sqlite3.connect(db) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        rows_before = conn.execute("SELECT COUNT(*) FROM gpu_metrics").fetchone()[0]
    said = run_gpm("-v", "--db", db, "archive", "--older-than", "6", env=ENV, check=True).stdout
    # "database 5.1 MiB -> 3.4 MiB (incremental_vacuum (420 of 1250 pages free))"
    free_before, pages_before = map(int, re.search(r"incremental_vacuum \((\d+) of (\d+) pages free\)", said).groups())
    assert "still free" not in said and "WAL stays" not in said
    with sqlite3.connect(db) as conn:
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        pages_after = conn.execute("PRAGMA page_count").fetchone()[0]
        rows_after = conn.execute("SELECT COUNT(*) FROM gpu_metrics").fetchone()[0]
    assert rows_after == rows_before * 6 // 9  # three whole days moved
    assert 0.1 * pages_before < free_before < 0.5 * pages_before  # below VACUUM_FREE_SHARE
    assert free == 0
    assert pages_after <= pages_before - free_before + 2  # every freed page given back (pointer maps aside)
    assert file_bytes(db) == pages_after * page_size  # the WAL folded in and truncated: the file did shrink


# --------------------------------------------------------------------------- #12.12


def group_alive(pgid: int) -> list[psutil.Process]:
    """Processes of process group ``pgid`` that have not exited (a zombie holds nothing any more)."""
    alive = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except (psutil.NoSuchProcess, ProcessLookupError):
            continue
    return alive


def test_daemon_stopped_mid_archive_leaves_no_process_and_logs_what_it_committed(tmp_path, fake_nvml):
    """SIGTERM while the daemon's `gpm archive` child commits day after day."""
    fake_nvml.set(Scenario.many(1))
    db = stored_db(tmp_path / "gpm.db", trace_frame(2, 8, 5.0, start_ms=days_ago(9)))
    env = {**ENV, "GPM_STORAGE_RETENTION_DAYS": "1", "GPM_SERVICE_POLL_INTERVAL_SECS": "1",
           "GPM_GPU_FALLBACK_TO_NVIDIA_SMI": "false"}
    cutoff = days_ago(1)
    expected = exported(db).filter(pl.col("ts_ms") < cutoff)
    assert expected.height == 2 * 8 * 17_280
    log_path = tmp_path / "daemon.log"
    with open(log_path, "w") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "gpm", "--db", str(db), "daemon"],
                                  env=gpm_env(fake_nvml.env(env)), stdout=subprocess.DEVNULL, stderr=log,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not manifest(db) and time.monotonic() < deadline:  # the first day committed
            time.sleep(0.02)
        assert manifest(db), log_path.read_text()
        archiver = next(child for child in psutil.Process(daemon.pid).children() if "archive" in child.cmdline())
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    # The archive child ended before the daemon exited.
    assert not archiver.is_running() or archiver.status() == psutil.STATUS_ZOMBIE
    deadline = time.monotonic() + 1
    while group_alive(daemon.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert group_alive(daemon.pid) == []

    text = log_path.read_text()
    assert "rolled back" not in text and "Traceback" not in text
    said = re.search(r"`gpm archive` stopped with the daemon: (\d+) part files? \((\d+) rows\) committed this run; "
                     r"the rest stays in the database for the next run", text)
    assert said, text
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        files, rows = conn.execute("SELECT COUNT(*), SUM(row_count) FROM archive_files").fetchone()
        left = conn.execute("SELECT COUNT(*) FROM gpu_metrics WHERE ts_ms < ?", (cutoff,)).fetchone()[0]
    assert (int(said[1]), int(said[2])) == (files, rows)
    assert 0 < rows < expected.height and rows + left == expected.height  # mid-run: every row exactly once
    assert exported(db).filter(pl.col("ts_ms") < cutoff).equals(expected)
    archive(db, 1)  # the next run finishes the job
    assert exported(db).filter(pl.col("ts_ms") < cutoff).equals(expected)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT SUM(row_count) FROM archive_files").fetchone()[0] == expected.height
