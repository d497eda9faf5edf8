"""`gpm archive`, the history reader and `gpm export`: rows move, come back identical, never twice."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from gpm.locks import exclusive_lock, lock_path
from gpm.store.archive import archive, cutoff_ms, plan, write_durably
from gpm.store.archive_files import database_id, owned_suffix, recover
from gpm.store.db import open_db
from gpm.store.history import scan
from gpm.store.samples import GpuIds, save_samples
from tests.benchmarks.trace import DAY_MS, trace_frame, trace_samples, write_trace
from tests.conftest import gpm_env, run_gpm
from tests.fakes.nvml import Scenario

HOST = "test-host"
KEY = ["host", "gpu_uuid", "ts_ms"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def days_ago(n: int) -> int:
    return (now_ms() - n * DAY_MS) // DAY_MS * DAY_MS


def history(db, archive_dir, **kw) -> pl.DataFrame:
    return scan("gpu_metrics", db_path=db, archive_dir=archive_dir, own_host=HOST, **kw).collect().sort(KEY)


def saved_db(tmp_path, days=4, gpus=2, interval_s=900.0, host=HOST) -> Path:
    """Several days of a realistic trace stored through gpm's own save_samples."""
    db = tmp_path / "gpm.db"
    conn = open_db(db)
    ids = GpuIds()
    for samples in trace_samples(trace_frame(gpus, days, interval_s, start_ms=days_ago(days))):
        save_samples(conn, host, samples, ids)
    conn.close()
    return db


def metric_count(db) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM gpu_metrics").fetchone()[0]


def test_archive_round_trip_history_and_export_identical(tmp_path, gpm):
    db = saved_db(tmp_path)
    arch = tmp_path / "archive"
    before = history(db, arch)
    assert before.height == 2 * 4 * 96
    exported_before = gpm("--db", db, "export", "--table", "gpu_metrics", "--archive-dir", arch,
                          "--format", "jsonl", env={"GPM_SERVICE_HOSTNAME": HOST}, check=True).stdout

    result = gpm("--db", db, "archive", "--archive-dir", arch, "--older-than", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""  # silent under cron
    files = sorted(arch.glob("gpu_metrics/host=test-host/date=*/part-*.parquet"))
    assert len(files) == 3  # the three whole days before yesterday's midnight
    assert 0 < metric_count(db) < before.height

    after = history(db, arch)
    assert after.equals(before)
    exported_after = gpm("--db", db, "export", "--table", "gpu_metrics", "--archive-dir", arch,
                         "--format", "jsonl", env={"GPM_SERVICE_HOSTNAME": HOST}, check=True).stdout
    assert exported_after == exported_before
    first = json.loads(exported_after.splitlines()[0])
    assert first["host"] == HOST and first["source"] == "nvml" and first["ts"].endswith("Z") is False
    assert isinstance(first["ts_ms"], int)

    # The archive alone, as Polars reads it straight from the folder.
    raw = pl.scan_parquet(str(arch / "gpu_metrics/**/*.parquet"), hive_partitioning=True).collect()
    archived = before.filter(pl.col("ts_ms") < cutoff_ms(1))
    assert raw.height == archived.height
    assert raw.schema["ts"] == pl.Datetime("ms", "UTC")
    assert raw.schema["utilization_gpu_percent"] == pl.Int8
    assert raw.schema["date"] == pl.Date
    assert "ts_ms" not in raw.columns  # each instant stored once
    assert raw.drop("date").with_columns(ts_ms=pl.col("ts").dt.epoch("ms")).select(before.columns).sort(KEY) \
        .equals(archived)


def test_history_and_export_from_fake_nvml_samples(tmp_path, fake_nvml, gpm):
    """Rows sampled by `gpm sample` on the fake NVML, aged by a day at a time."""
    fake_nvml.set(Scenario.many(3))
    db = tmp_path / "gpm.db"
    env = fake_nvml.env({"GPM_SERVICE_HOSTNAME": HOST})
    for age in (3, 2, 1):
        gpm("--db", db, "sample", "-n", "2", "-i", "0.1", env=env, check=True)
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE gpu_metrics SET ts_ms = ts_ms - ? WHERE ts_ms > ?",
                         (DAY_MS, now_ms() - 60_000))
    gpm("--db", db, "sample", "-n", "1", env=env, check=True)
    arch = tmp_path / "archive"
    before = history(db, arch)
    csv_before = gpm("--db", db, "export", "-t", "gpu_metrics", "--archive-dir", arch, env=env, check=True).stdout
    gpm("--db", db, "archive", "--archive-dir", arch, "--older-than", "1", env=env, check=True)
    assert history(db, arch).equals(before)
    csv_after = gpm("--db", db, "export", "-t", "gpu_metrics", "--archive-dir", arch, env=env, check=True).stdout
    assert csv_after == csv_before
    assert before.height == 3 * 7 and before.get_column("gpu_uuid").n_unique() == 3
    nulls = before.null_count().select("gpu_name", "memory_total_bytes", "power_milliwatts", "energy_millijoules")
    assert nulls.sum_horizontal()[0] == 0


def test_export_formats_ranges_and_files(tmp_path, gpm):
    db = saved_db(tmp_path, days=3)
    arch = tmp_path / "archive"
    gpm("--db", db, "archive", "--archive-dir", arch, "--older-than", "1", check=True)
    since = days_ago(2) + 3_600_000
    until = days_ago(1) + 3_600_000
    expected = history(db, arch, since_ms=since, until_ms=until)
    assert expected.height == 2 * 24 * 4  # crosses the archive border at days_ago(1)
    iso = lambda ms: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))  # noqa: E731
    args = ["--db", db, "export", "-t", "gpu_metrics", "--archive-dir", arch, "--since", iso(since),
            "--until", iso(until)]
    out = tmp_path / "out.parquet"
    gpm(*args, "-o", out, check=True)
    assert pl.read_parquet(out).sort(KEY).equals(expected)
    csv = pl.read_csv(io.StringIO(gpm(*args, "--format", "csv", check=True).stdout))
    assert csv.height == expected.height and csv.columns == expected.columns
    assert csv.get_column("ts")[0].endswith("Z")
    jsonl = tmp_path / "out.jsonl"
    gpm(*args, "-o", jsonl, check=True)
    assert len(jsonl.read_text().splitlines()) == expected.height
    # Plain tables come from SQLite alone.
    gpus = pl.read_csv(io.StringIO(gpm("--db", db, "export", "-t", "gpus", check=True).stdout))
    assert gpus.height == 2
    bad = gpm("--db", db, "export", "-t", "nope")
    assert bad.returncode == 2 and bad.stderr.startswith("gpm: --table nope: no such table") and "\n" == bad.stderr[-1]
    bad_time = gpm("--db", db, "export", "-t", "gpu_metrics", "--since", "yesterday-ish")
    assert bad_time.returncode == 2 and "--since 'yesterday-ish': expected a date" in bad_time.stderr
    assert gpm("--db", db, "export", "-t", "gpu_metrics", "-f", "parquet").returncode == 2


def test_dry_run_says_rows_and_days_and_changes_nothing(tmp_path, gpm):
    db = saved_db(tmp_path, days=4)
    result = gpm("--db", db, "archive", "--dry-run", "--older-than", "2", "--archive-dir", tmp_path / "a",
                 check=True)
    assert "gpu_metrics: 384 rows, 2 days" in result.stdout
    assert metric_count(db) == 2 * 4 * 96
    assert not (tmp_path / "a").exists()


def test_appending_to_a_day_adds_a_part_file_and_never_duplicates(tmp_path):
    db = saved_db(tmp_path, days=3)
    arch = tmp_path / "archive"
    conn = open_db(db)
    archive(conn, arch, cutoff=cutoff_ms(1), own_host=HOST)
    first_files = {p: p.stat().st_mtime_ns for p in arch.rglob("*.parquet")}
    # Late rows for an archived day (e.g. copied in from a backup).
    late = trace_frame(2, 0.25, 900, start_ms=days_ago(3) + 450_000, seed=99)
    for samples in trace_samples(late):
        save_samples(conn, HOST, samples)
    expected = history(db, arch)
    result = archive(conn, arch, cutoff=cutoff_ms(1), own_host=HOST)
    assert result.rows == late.height
    files = sorted(arch.rglob("*.parquet"))
    assert len(files) == len(first_files) + 1
    assert all(first_files[p] == p.stat().st_mtime_ns for p in first_files)  # nothing rewritten
    assert history(db, arch).equals(expected)
    assert history(db, arch).select(KEY).is_duplicated().sum() == 0
    assert archive(conn, arch, cutoff=cutoff_ms(1), own_host=HOST).rows == 0  # idempotent


def test_orphans_and_temp_files_are_recovered_never_double_counted(tmp_path):
    """Every state a kill can leave between steps, built step by step."""
    db = saved_db(tmp_path, days=3)
    arch = tmp_path / "archive"
    conn = open_db(db)
    expected = history(db, arch)
    cut = cutoff_ms(1)
    old = scan("gpu_metrics", conn=conn, own_host=HOST, until_ms=cut).collect()
    day = old.filter(pl.col("ts_ms") < days_ago(2)).sort(["host", "gpu_uuid", "ts"]).drop("ts_ms")
    folder = arch / "gpu_metrics" / f"host={HOST}" / "date=x"
    # Killed while writing: a temp file.  Killed after the rename: an orphan that
    # the manifest does not list (the rows are still in SQLite).
    # Recovery touches only the files that this database's id names (#12.3).
    mine = owned_suffix(database_id(conn))
    tmp_file = folder.with_name("date=2000-01-01") / f".part-1-dead{mine}.tmp"
    tmp_file.parent.mkdir(parents=True)
    tmp_file.write_bytes(b"PAR1 half written")
    orphan_dir = arch / "gpu_metrics" / f"host={HOST}" / f"date={time.strftime('%Y-%m-%d', time.gmtime(days_ago(3) / 1000))}"
    orphan = orphan_dir / f"part-1-orphan{mine}"
    write_durably(day, orphan, root=arch)
    # A foreign or damaged file: not our rows.
    junk = orphan_dir / f"part-2-junk{mine}"
    junk.write_bytes(b"not parquet")
    assert history(db, arch).equals(expected)  # the reader ignores all three
    result = recover(conn, arch, own_host=HOST)
    assert result.adopted == [str(orphan)]
    assert result.removed_tmp == [str(tmp_file)]
    assert [Path(p).name for p in result.rejected] == [f"part-2-junk{mine}.rejected"]
    assert "not in the archive manifest" in result.problems[0]
    assert metric_count(db) == expected.height - day.height
    assert history(db, arch).equals(expected)
    full = archive(conn, arch, cutoff=cut, own_host=HOST)
    assert full.rows == old.height - day.height
    assert history(db, arch).equals(expected)


def test_orphan_whose_rows_are_gone_is_set_aside(tmp_path):
    db = saved_db(tmp_path, days=3)
    arch = tmp_path / "archive"
    conn = open_db(db)
    archive(conn, arch, cutoff=cutoff_ms(1), own_host=HOST)
    expected = history(db, arch)
    listed = conn.execute("SELECT path FROM archive_files").fetchall()
    copy = arch / (listed[0][0].replace("part-", "copy-"))
    copy.write_bytes((arch / listed[0][0]).read_bytes())  # e.g. a stray copy
    assert history(db, arch).equals(expected)
    result = archive(conn, arch, cutoff=cutoff_ms(1), own_host=HOST)
    assert result.rejected and result.problems
    assert history(db, arch).equals(expected)


def test_several_hosts_in_one_archive_folder(tmp_path):
    shared = tmp_path / "shared"
    frames = {}
    for host in ("alpha", "beta"):
        db = saved_db(tmp_path / host, days=3, host=host)
        conn = open_db(db)
        archive(conn, shared, cutoff=cutoff_ms(1), own_host=host)
        frames[host] = scan("gpu_metrics", conn=conn, archive_dir=shared, hosts=[host]).collect()
    everything = scan("gpu_metrics", archive_dir=shared).collect()
    assert sorted(everything.get_column("host").unique()) == ["alpha", "beta"]
    archived = pl.concat(frames.values()).filter(pl.col("ts_ms") < cutoff_ms(1))
    assert everything.sort(KEY).equals(archived.sort(KEY))
    # One host's database sees its recent rows and both hosts' archives.
    alpha = scan("gpu_metrics", db_path=tmp_path / "alpha" / "gpm.db", archive_dir=shared).collect()
    assert alpha.height == frames["alpha"].height + archived.filter(pl.col("host") == "beta").height
    only_beta = scan("gpu_metrics", archive_dir=shared, hosts=["beta"]).collect()
    assert set(only_beta.get_column("host")) == {"beta"}


def test_duckdb_reads_the_archive(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    db = saved_db(tmp_path, days=3)
    conn = open_db(db)
    result = archive(conn, tmp_path / "a", cutoff=cutoff_ms(1), own_host=HOST)
    glob = str(tmp_path / "a" / "gpu_metrics" / "**" / "*.parquet")
    rows = duckdb.connect().execute(
        f"SELECT COUNT(*), COUNT(DISTINCT host), MIN(ts), typeof(MIN(ts)), typeof(MIN(pstate)) "
        f"FROM read_parquet('{glob}', hive_partitioning=true)").fetchall()
    count, hosts, first, ts_type, pstate_type = rows[0]
    assert (count, hosts) == (result.rows, 1)
    assert ts_type.startswith("TIMESTAMP") and pstate_type == "TINYINT"
    assert first.timestamp() * 1000 == scan("gpu_metrics", conn=conn, archive_dir=tmp_path / "a").select(
        pl.col("ts_ms").min()).collect().item()


def test_database_really_shrinks(tmp_path):
    db = tmp_path / "gpm.db"
    conn = open_db(db)
    write_trace(conn, trace_frame(4, 3, 60, start_ms=days_ago(3)), host=HOST)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = db.stat().st_size
    result = archive(conn, tmp_path / "a", cutoff=cutoff_ms(1), own_host=HOST)
    assert result.rows == 4 * 2 * 1440
    assert db.stat().st_size < before * 0.5
    assert (tmp_path / "gpm.db-wal").stat().st_size == 0


def test_second_run_waits_then_exits_75(tmp_path, gpm):
    db = saved_db(tmp_path, days=1)
    with exclusive_lock(lock_path(db, "archive"), job="archive"):
        started = time.monotonic()
        result = gpm("--db", db, "archive", "--wait", "0.5")
        waited = time.monotonic() - started
    assert result.returncode == 75
    assert "another `gpm archive` is running (lock held by pid" in result.stderr
    assert result.stderr.count("\n") == 1 and waited >= 0.5
    assert gpm("--db", db, "archive", "--wait", "0.5").returncode == 0


def test_archive_while_sampling_loses_nothing(tmp_path, fake_nvml):
    """`gpm sample --follow` and a save_samples writer keep writing while archive runs."""
    db = saved_db(tmp_path, days=3, interval_s=300)
    arch = tmp_path / "archive"
    fake_nvml.set(Scenario.many(2))
    env = gpm_env(fake_nvml.env({"GPM_SERVICE_HOSTNAME": HOST}))
    sampler = subprocess.Popen(
        [sys.executable, "-m", "gpm", "--db", str(db), "sample", "--follow", "-i", "0.1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        before = history(db, arch, until_ms=cutoff_ms(1))
        result = run_gpm("--db", db, "archive", "--archive-dir", arch, "--older-than", "1", env=env)
        time.sleep(0.5)
    finally:
        sampler.terminate()
        writer.terminate()
        sampler_err = sampler.communicate(timeout=20)[1]
        writer_out, writer_err = writer.communicate(timeout=20)
    assert result.returncode == 0, result.stderr
    assert sampler.returncode == 0, sampler_err
    assert writer.returncode in (0, -15), writer_err
    written = int(writer_out.split()[-1])
    after = history(db, arch)
    assert after.filter(pl.col("ts_ms") < cutoff_ms(1)).equals(before)
    assert after.select(KEY).is_duplicated().sum() == 0
    assert after.filter(pl.col("gpu_uuid") == "GPU-writer").height == written > 0
    assert after.filter(pl.col("ts_ms") >= cutoff_ms(1), pl.col("gpu_uuid") != "GPU-writer").height > 2


# A second writer through gpm's save_samples: prints how many samples it committed.
WRITER = r"""
import signal, sys, time
from gpm.gpu.sample import GpuSample
from gpm.store.db import open_db
from gpm.store.samples import save_samples
conn = open_db(sys.argv[1])
done = 0
def stop(*_):
    print(done, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    save_samples(conn, "test-host", [GpuSample(ts_ms=time.time_ns() // 1_000_000, index=7, source="nvml",
                                               uuid="GPU-writer", utilization_gpu_percent=done % 100)])
    done += 1
    time.sleep(0.01)
"""


def test_plan_counts_per_day(tmp_path):
    db = saved_db(tmp_path, days=3)
    conn = open_db(db)
    rows = plan(conn, cutoff=cutoff_ms(1), own_host=HOST)
    assert [(r.table, r.host, r.rows) for r in rows] == [("gpu_metrics", HOST, 192)] * 2


def test_lock_is_released_when_the_holder_dies(tmp_path):
    path = lock_path(tmp_path / "gpm.db", "archive")
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from gpm.locks import exclusive_lock\n"
        f"with exclusive_lock({str(path)!r}, job='archive'):\n"
        "    print('held', flush=True); time.sleep(60)")], env=gpm_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        from gpm.errors import LockedError
        with pytest.raises(LockedError):
            with exclusive_lock(path, job="archive", wait_secs=0.2):
                pass
        child.kill()
        child.wait(timeout=10)
        with exclusive_lock(path, job="archive", wait_secs=2):
            assert os.path.exists(path)
    finally:
        child.kill()
        child.wait(timeout=10)


def test_parquet_order_is_the_plain_sort_order():
    from gpm.store.archive import sort_frame

    frame = pl.DataFrame({"host": ["b", "a", "b", "a", None], "gpu_uuid": ["GPU-2", "GPU-10", None, "GPU-1", "x"],
                          "ts_ms": [3, 2, 1, 5, 4]})
    keys = ["host", "gpu_uuid", "ts_ms"]
    assert sort_frame(frame, keys).equals(frame.sort(keys))


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


def test_gpm_archive_does_all_its_work_in_one_process(tmp_path):
    """#14.2: no day-writer processes; `gpm archive` reads, writes and deletes itself."""
    import psutil

    from tests.test_archive_faults import Child, add_batch
    from tests.test_archive_faults import HOST as CHILD_HOST

    db, arch = tmp_path / "gpm.db", tmp_path / "archive"
    add_batch(db, 0, gpus=2, days=3, interval_s=60)
    child = Child(db, arch)
    child.go()
    process = psutil.Process(child.proc.pid)
    children = set()
    while child.proc.poll() is None:
        try:
            children |= {c.pid for c in process.children(recursive=True)}
        except psutil.NoSuchProcess:
            break
        time.sleep(0.002)
    _out, err = child.proc.communicate(timeout=30)
    assert child.proc.returncode == 0, err
    assert children == set()
    with sqlite3.connect(db) as conn:
        archived = conn.execute("SELECT COUNT(*), SUM(row_count) FROM archive_files").fetchone()
    assert archived == (3, 2 * 3 * 1440)  # 3 old days of 2 GPUs: a part file per host and day
    assert metric_count(db) == 0
    assert scan("gpu_metrics", db_path=db, archive_dir=arch, own_host=CHILD_HOST).collect().height == 2 * 3 * 1440


def test_awkward_values_come_back_exactly(tmp_path):
    """NULLs, a lost GPU's status, counters past 2^40, a GPU without a name: what was stored is what is read."""
    db = tmp_path / "gpm.db"
    conn = open_db(db)
    write_trace(conn, trace_frame(2, 2, 60, start_ms=days_ago(3)), host=HOST)
    day = days_ago(3)
    conn.executescript(f"""
        BEGIN;
        UPDATE gpu_metrics SET status = 'nvml: GPU is lost', utilization_gpu_percent = NULL
            WHERE ts_ms BETWEEN {day + 3_600_000} AND {day + 7_200_000};
        UPDATE gpu_metrics SET fan_percent = NULL;
        UPDATE gpu_metrics SET power_milliwatts = NULL WHERE ts_ms < {day + DAY_MS // 2};
        UPDATE gpu_metrics SET energy_millijoules = energy_millijoules + {2 ** 40};
        UPDATE gpu_metrics SET temperature_celsius = 41.5 WHERE ts_ms = (SELECT MIN(ts_ms) FROM gpu_metrics);
        UPDATE gpus SET name = NULL WHERE gpu_index = 1;
        COMMIT;
    """)
    before = history(db, None)
    result = archive(conn, tmp_path / "archive", cutoff=cutoff_ms(1), own_host=HOST)
    conn.close()
    assert result.rows == 2 * 2 * 1440 and result.problems == [] and result.notes == []
    assert metric_count(db) == 0
    after = history(db, tmp_path / "archive")
    assert after.equals(before)
    lost = after.filter(pl.col("status").is_not_null())
    assert lost.height == 2 * 60 and lost.get_column("utilization_gpu_percent").null_count() == lost.height
    assert after.get_column("energy_millijoules").min() > 2 ** 40


def test_the_library_call_is_the_whole_command(tmp_path):
    """#14.6: `gpm.archiving.archive` does what `gpm archive` does: the hours reduced first, the days after."""
    from gpm import archiving
    from gpm.report.rollup import ROLLUP_DIR

    db = saved_db(tmp_path, days=3, interval_s=300)
    conn = open_db(db)
    assert conn.execute("SELECT COUNT(*) FROM report_hours").fetchone()[0] == 0
    result = archiving.archive(conn, tmp_path / "archive", cutoff=cutoff_ms(1), own_host=HOST, busy_threshold=5.0)
    hours = conn.execute("SELECT MIN(hour_ms), COUNT(*) FROM report_hours").fetchone()
    left = conn.execute("SELECT COUNT(DISTINCT ts_ms / 3600000) FROM gpu_metrics").fetchone()[0]
    conn.close()
    assert result.rows == 2 * 2 * 288 and result.problems == [] and result.warnings == []
    # the hours still in SQLite are rolled up there; the moved ones' rollup went beside their Parquet (#14.1)
    assert hours[0] >= cutoff_ms(1) and hours[1] == left
    reduced = sorted(p.parent.name for p in (tmp_path / "archive" / ROLLUP_DIR).rglob("sources.json"))
    assert reduced == sorted({f"date={d}" for d in (time.strftime("%Y-%m-%d", time.gmtime(days_ago(n) / 1000))
                                                    for n in (3, 2))})
    assert result.reclaim.startswith(("VACUUM", "incremental_vacuum"))


@pytest.mark.parametrize("limit", [None, 1000], ids=["json-arrays", "over-sqlite-string-limit"])
def test_raw_rows_cross_from_sqlite_exactly(tmp_path, limit):
    """The archive's read (one JSON array per column, #14, or row by row when
    an array would pass SQLite's string limit) gives exactly what sqlite3 does:
    NULLs, 63-bit integers, text with commas, quotes, brackets and non-ASCII."""
    from gpm.store.timeseries import lookup, resolve

    conn = open_db(tmp_path / "gpm.db")
    write_trace(conn, trace_frame(2, 1, 600.0, start_ms=days_ago(3)))
    statuses = [None, "lost, \"really\" [gone]", "fan ✗ \\ / \n tab\t", "", "null"]
    with conn:
        for i, (ts,) in enumerate(conn.execute("SELECT DISTINCT ts_ms FROM gpu_metrics ORDER BY ts_ms LIMIT 5").fetchall()):
            conn.execute("UPDATE gpu_metrics SET status = ?, energy_millijoules = ?, fan_percent = NULL "
                         "WHERE ts_ms = ?", (statuses[i], 2**62 + i, ts))
    if limit is not None:
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limit)
    res = resolve(conn, lookup("gpu_metrics"))
    where, params = res.where(host=False, cutoff=True), [days_ago(5), now_ms(), now_ms()]
    got = res.read_raw(conn, where, params)
    rows = conn.execute(f"SELECT {', '.join(res.raw_schema())} FROM gpu_metrics WHERE {where}", params).fetchall()
    assert got.height == len(rows) == 2 * 144
    assert got.rows() == rows
    assert got.schema == res.raw_schema()
    assert set(got["status"].to_list()) == set(statuses)
