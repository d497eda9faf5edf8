"""`gpm archive`'s day writers (ADBC, in their own processes) write what gpm itself writes, and never outlive it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import psutil
import pytest

from gpm.errors import LockedError
from gpm.locks import exclusive_lock, lock_path
from gpm.store.archive import archive, cutoff_ms
from gpm.store.archive_worker import DayWriters, available
from gpm.store.db import open_db
from gpm.store.history import scan
from tests.benchmarks.trace import DAY_MS, trace_frame, write_trace
from tests.conftest import gpm_env
from tests.test_archive_faults import dead

HOST = "worker-host"
KEY = ["host", "gpu_uuid", "ts_ms"]

needs_adbc = pytest.mark.skipif(not available(), reason="adbc-driver-sqlite is not installed")


def days_ago(n: int) -> int:
    return (time.time_ns() // 1_000_000 - n * DAY_MS) // DAY_MS * DAY_MS


def awkward_db(path: Path) -> Path:
    """Two old days of 2 GPUs at 1 Hz (172,800 rows a day: more than one Arrow batch) with awkward values."""
    conn = open_db(path)
    write_trace(conn, trace_frame(2, 2, 1.0, start_ms=days_ago(3)), host=HOST)
    day = days_ago(3)
    late = day + DAY_MS * 3 // 4  # past the first batch of the day
    conn.executescript(f"""
        BEGIN;
        UPDATE gpu_metrics SET status = 'nvml: GPU is lost', utilization_gpu_percent = NULL
            WHERE ts_ms BETWEEN {late} AND {late + 60_000};
        UPDATE gpu_metrics SET fan_percent = NULL;
        UPDATE gpu_metrics SET power_milliwatts = NULL WHERE ts_ms < {day + DAY_MS // 2};
        UPDATE gpu_metrics SET energy_millijoules = energy_millijoules + {2 ** 40};
        UPDATE gpus SET name = NULL WHERE gpu_index = 1;
        COMMIT;
    """)
    conn.close()
    return path


def archived(arch: Path) -> pl.DataFrame:
    return pl.read_parquet(arch / "gpu_metrics" / "**" / "*.parquet").sort(KEY[:2] + ["ts"])


def archive_copy(source: Path, where: Path, **kw):
    with contextlib.closing(sqlite3.connect(source)) as conn:  # gpm leaves the WAL in place: fold it in
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    where.mkdir()
    shutil.copy(source, where / "gpm.db")
    conn = open_db(where / "gpm.db")
    try:
        result = archive(conn, where / "archive", cutoff=cutoff_ms(1), own_host=HOST, **kw)
    finally:
        conn.close()
    return result, archived(where / "archive")


@needs_adbc
def test_day_writers_write_what_gpm_itself_writes(tmp_path):
    source = awkward_db(tmp_path / "source.db")
    expected_history = scan("gpu_metrics", db_path=source, own_host=HOST).collect().sort(KEY)
    plain, plain_rows = archive_copy(source, tmp_path / "plain", workers=0)
    writers, writer_rows = archive_copy(source, tmp_path / "writers", workers=2)
    assert writers.notes == [] and writers.problems == []  # every day went through the writers
    assert writers.rows == plain.rows == 2 * 2 * 86_400
    assert writer_rows.schema == plain_rows.schema
    assert writer_rows.equals(plain_rows)
    lost = writer_rows.filter(pl.col("status").is_not_null())
    assert lost.height >= 2 * 60 and lost.get_column("utilization_gpu_percent").null_count() == lost.height
    assert writer_rows.get_column("energy_millijoules").min() > 2 ** 40
    assert writer_rows.get_column("fan_percent").null_count() == writer_rows.height
    back = scan("gpu_metrics", db_path=tmp_path / "writers" / "gpm.db", archive_dir=tmp_path / "writers" / "archive",
                own_host=HOST).collect().sort(KEY)
    assert back.equals(expected_history)


@needs_adbc
def test_a_day_the_typed_read_refuses_is_written_by_gpm_itself(tmp_path):
    source = tmp_path / "source.db"
    conn = open_db(source)
    write_trace(conn, trace_frame(2, 3, 600, start_ms=days_ago(4)), host=HOST)
    # SQLite keeps a REAL in an INTEGER column; Arrow cannot mix them in one column.
    conn.execute("UPDATE gpu_metrics SET temperature_celsius = 41.5 WHERE ts_ms = "
                 "(SELECT MIN(ts_ms) FROM gpu_metrics WHERE ts_ms >= ?)", (days_ago(3),))
    conn.close()
    plain, plain_rows = archive_copy(source, tmp_path / "plain", workers=0)
    writers, writer_rows = archive_copy(source, tmp_path / "writers", workers=1)
    day = time.strftime("%Y-%m-%d", time.gmtime(days_ago(3) / 1000))
    assert len(writers.notes) == 1 and writers.notes[0].startswith(f"gpu_metrics {day}: written by gpm itself")
    assert writers.rows == plain.rows == 2 * 3 * 144
    assert writer_rows.equals(plain_rows)
    assert len(list((tmp_path / "writers" / "archive").rglob("*.parquet"))) == 3  # nothing left of the refused day


CHILD = r"""
import sys
sys.modules["adbc_driver_sqlite"] = None  # as if it were not installed
from gpm.cli import main
main(sys.argv[1:])
"""


def test_without_adbc_gpm_archive_works_in_process(tmp_path):
    db = tmp_path / "gpm.db"
    conn = open_db(db)
    write_trace(conn, trace_frame(2, 3, 600, start_ms=days_ago(3)), host=HOST)
    conn.close()
    before = scan("gpu_metrics", db_path=db, own_host=HOST).collect().sort(KEY)
    proc = subprocess.run([sys.executable, "-c", CHILD, "-v", "--db", str(db), "archive", "--archive-dir",
                           str(tmp_path / "archive"), "--older-than", "1"],
                          env=gpm_env({"GPM_SERVICE_HOSTNAME": HOST}), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "gpu_metrics: archived 576 rows of 2 days into 2 files" in proc.stdout
    after = scan("gpu_metrics", db_path=db, archive_dir=tmp_path / "archive", own_host=HOST).collect().sort(KEY)
    assert after.equals(before)


PARENT = r"""
import sys
from gpm.store.archive import archive, cutoff_ms
from gpm.store.db import open_db
conn = open_db(sys.argv[1])
archive(conn, sys.argv[2], cutoff=cutoff_ms(1), own_host="worker-host")
print(sorted(m for m in sys.modules if m.startswith("adbc")), "adbc" in open("/proc/self/maps").read())
"""


@needs_adbc
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_the_writing_process_never_loads_the_driver(tmp_path):
    """Two SQLite libraries in one process break each other's locks: the driver stays in the writers."""
    db = tmp_path / "gpm.db"
    conn = open_db(db)
    write_trace(conn, trace_frame(2, 3, 600, start_ms=days_ago(3)), host=HOST)
    conn.close()
    proc = subprocess.run([sys.executable, "-c", PARENT, str(db), str(tmp_path / "archive")], env=gpm_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", "False"]
    assert len(list((tmp_path / "archive").rglob("*.parquet"))) == 2


SLEEPER = r"""
import sys, time
from gpm.store.archive_worker import DayWriters
writers = DayWriters(sys.argv[1], 2)
print("started", flush=True)
time.sleep(60)
"""


@needs_adbc
def test_writers_die_with_their_parent(tmp_path):
    db = tmp_path / "gpm.db"
    open_db(db).close()
    parent = subprocess.Popen([sys.executable, "-c", SLEEPER, str(db)], env=gpm_env(), stdout=subprocess.PIPE,
                              text=True)
    try:
        assert parent.stdout.readline().strip() == "started"
        writers = psutil.Process(parent.pid).children()
        assert len(writers) == 2
        time.sleep(0.3)  # past their start-up
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while (alive := [w for w in writers if not dead(w)]) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert alive == []
    finally:
        parent.kill()
        parent.wait(timeout=10)
        parent.stdout.close()


@needs_adbc
def test_writers_hold_the_archive_lock_until_they_exit(tmp_path):
    """A run that starts while an old run's writer is still alive waits for it."""
    db = tmp_path / "gpm.db"
    open_db(db).close()
    path = lock_path(db, "archive")
    with exclusive_lock(path, job="archive") as lock:
        writers = DayWriters(str(db), 1, lock_fd=lock.fd)
    try:
        with pytest.raises(LockedError):
            with exclusive_lock(path, job="archive", wait_secs=0.2):
                pass
    finally:
        writers.close()
    with exclusive_lock(path, job="archive", wait_secs=2):
        assert os.path.exists(path)


@needs_adbc
def test_a_writer_killed_mid_run_leaves_its_days_to_gpm(tmp_path):
    db = tmp_path / "gpm.db"
    arch = tmp_path / "archive"
    conn = open_db(db)
    write_trace(conn, trace_frame(2, 4, 600, start_ms=days_ago(5)), host=HOST)
    expected = scan("gpu_metrics", conn=conn, own_host=HOST).collect().sort(KEY)
    killed = []

    def kill_the_writer(rows: int) -> None:
        for child in psutil.Process().children():
            if not killed and "gpm.store.archive_worker" in " ".join(child.cmdline()):
                child.kill()
                killed.append(child.pid)

    result = archive(conn, arch, cutoff=cutoff_ms(1), own_host=HOST, workers=1, progress=kill_the_writer)
    assert killed and result.problems == []
    assert any("written by gpm itself (day writer stopped" in note for note in result.notes)
    assert result.rows == 4 * 2 * 144
    listed = {row[0] for row in conn.execute("SELECT path FROM archive_files")}
    assert listed == {p.relative_to(arch).as_posix() for p in arch.rglob("*") if p.is_file()}
    after = scan("gpu_metrics", conn=conn, archive_dir=arch, own_host=HOST).collect().sort(KEY)
    assert after.equals(expected)
    conn.close()


def test_sort_is_the_plain_sort_when_rows_come_in_time_order():
    from gpm.store.archive import sort_frame

    frame = pl.DataFrame({"host": ["b", "a", "b", "a", "a"], "gpu_uuid": ["GPU-2", "GPU-10", None, "GPU-1", "GPU-10"],
                          "ts_ms": [1, 2, 2, 4, 5]})
    keys = ["host", "gpu_uuid", "ts_ms"]
    assert sort_frame(frame, keys).equals(frame.sort(keys))
    assert sort_frame(frame.reverse(), keys).equals(frame.sort(keys))


def test_file_order_is_the_plain_sort_of_the_history(tmp_path):
    from gpm.store.archive import file_frame, sort_keys
    from gpm.store.timeseries import BY_TABLE, resolve

    conn = open_db(tmp_path / "gpm.db")
    for host in ("beta", "alpha"):
        write_trace(conn, trace_frame(3, 0.1, 60, start_ms=days_ago(2)), host=host)
    res = resolve(conn, BY_TABLE["gpu_metrics"])
    raw = res.read_raw(conn, "1", [])
    gpus = res.gpus(conn)
    expected = res.to_history(raw, HOST, gpus).sort(sort_keys(res))
    assert expected.get_column("host").n_unique() == 2
    assert file_frame(res, raw, HOST, gpus).equals(expected)  # rows in time order, as SQLite reads them
    assert file_frame(res, raw.sample(fraction=1, shuffle=True, seed=3), HOST, gpus).equals(expected)
    conn.close()
