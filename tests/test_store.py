"""The database: created private, migrated on open, shared safely, queried as the manual (docs/) says."""

from __future__ import annotations

import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gpm.gpu.sample import GpuProcess, GpuSample
from gpm.store.db import open_db
from gpm.store.samples import save_samples
from tests.conftest import REPO

DOCS = Path(__file__).resolve().parents[1] / "docs"


def make_sample(ts_ms: int, index: int = 0, **values) -> GpuSample:
    base = dict(
        uuid=f"GPU-{index:08d}-aaaa-bbbb-cccc-dddddddddddd", name="NVIDIA GeForce RTX 4090",
        memory_total_bytes=25757220864, memory_used_bytes=1073741824, utilization_gpu_percent=37,
        utilization_memory_percent=12, temperature_celsius=61, power_watts=123.456,
        power_limit_watts=450.0, energy_joules=1000.5, sm_clock_mhz=2520, memory_clock_mhz=10501,
        fan_percent=30, pstate=2, throttle_reasons=0x4, driver_version="550.54.14", cuda_version="12.4",
    )
    base.update(values)
    return GpuSample(ts_ms=ts_ms, index=index, source="nvml", **base)


def test_new_database_is_private_wal_and_migrated(tmp_path):
    path = tmp_path / "data" / "gpm.db"
    conn = open_db(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    names = {r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations")}
    assert "0001_gpus_and_metrics" in names
    conn.close()
    # Opening again applies nothing twice.
    conn = open_db(path)
    count = conn.execute("SELECT COUNT(*) FROM _sqlite_migrations").fetchone()[0]
    assert count == len(names)


def test_a_migration_added_to_a_schema_module_is_applied_to_an_up_to_date_database(tmp_path):
    """#14.3: the count of migrations that says "up to date" was kept by hand; a new
    migration with the count not bumped was never applied to existing databases."""
    path = tmp_path / "gpm.db"
    open_db(path).close()
    code = ("import sys\nfrom gpm.store import schema_core\n"
            "schema_core.MIGRATIONS.append(('9999_added', lambda db: db.execute('CREATE TABLE added (x)')))\n"
            "from gpm.store.db import open_db\nopen_db(sys.argv[1]).close()\n")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, cwd=REPO)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'added'").fetchall() == [("added",)]
    assert conn.execute("SELECT name FROM _sqlite_migrations WHERE name = '9999_added'").fetchall() == [("9999_added",)]


def test_closing_leaves_the_wal_for_the_next_run_and_loses_nothing(tmp_path):
    path = tmp_path / "gpm.db"
    for ts in (1_000, 2_000, 3_000):
        conn = open_db(path)
        save_samples(conn, "box", [make_sample(ts)])
        conn.close()
        assert Path(f"{path}-wal").exists()  # no checkpoint and delete on every close
    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert [r[0] for r in reader.execute("SELECT ts_ms FROM gpu_metrics ORDER BY ts_ms")] == [1_000, 2_000, 3_000]
    assert reader.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_the_wal_shrinks_to_its_limit_after_a_bulk_write(tmp_path):
    """#14.4: a bulk insert left a 284 MB WAL beside a 282 MB database, for good."""
    from gpm.store.db import WAL_SIZE_LIMIT_BYTES, write

    path = tmp_path / "gpm.db"
    conn = open_db(path)
    conn.execute("CREATE TABLE bulk (data BLOB)")
    with write(conn):  # one transaction larger than the limit: the WAL must hold all of it
        conn.executemany("INSERT INTO bulk VALUES (zeroblob(?))", [(1 << 20,)] * 80)
    assert Path(f"{path}-wal").stat().st_size > WAL_SIZE_LIMIT_BYTES
    save_samples(conn, "box", [make_sample(1_000)])  # the next write restarts the checkpointed WAL
    assert Path(f"{path}-wal").stat().st_size <= WAL_SIZE_LIMIT_BYTES
    assert conn.execute("SELECT COUNT(*) FROM bulk").fetchone()[0] == 80
    assert conn.execute("SELECT ts_ms FROM gpu_metrics").fetchall() == [(1_000,)]
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_database_deleted_without_its_wal_starts_afresh(tmp_path):
    """gpm keeps the WAL between runs, so `rm gpm.db` leaves gpm.db-wal behind:
    the new database must not take the old one's pages from it."""
    path = tmp_path / "gpm.db"
    conn = open_db(path)
    save_samples(conn, "old", [make_sample(1_000), make_sample(2_000)])
    conn.close()
    assert Path(f"{path}-wal").stat().st_size > 0
    path.unlink()
    conn = open_db(path)
    save_samples(conn, "new", [make_sample(5_000)])
    assert conn.execute("SELECT DISTINCT host FROM gpus").fetchall() == [("new",)]
    assert conn.execute("SELECT ts_ms FROM gpu_metrics").fetchall() == [(5_000,)]
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_saved_sample_round_trips_through_the_view(tmp_path):
    conn = open_db(tmp_path / "gpm.db")
    sample = make_sample(1_764_000_000_123, processes=[GpuProcess(pid=1, used_memory_bytes=5)])
    save_samples(conn, "box", [sample])
    row = conn.execute("SELECT * FROM gpu_samples").fetchone()
    cols = [d[0] for d in conn.execute("SELECT * FROM gpu_samples").description]
    got = dict(zip(cols, row))
    assert got["ts"] == "2025-11-24T16:00:00.123Z"
    assert got["host"] == "box"
    assert got["gpu_uuid"] == sample.uuid
    assert got["power_watts"] == pytest.approx(123.456)
    assert got["energy_joules"] == pytest.approx(1000.5)
    assert got["status"] == "ok"
    assert got["throttle_reasons"] == 4
    gpu = conn.execute("SELECT host, gpu_index, name, power_limit_watts, driver_version FROM gpus").fetchone()
    assert gpu == ("box", 0, "NVIDIA GeForce RTX 4090", 450.0, "550.54.14")


def test_failed_gpu_keeps_identity_learned_earlier(tmp_path):
    conn = open_db(tmp_path / "gpm.db")
    save_samples(conn, "box", [make_sample(1000)])
    lost = GpuSample(ts_ms=2000, index=0, source="nvml", status="gpu_is_lost",
                     uuid="GPU-00000000-aaaa-bbbb-cccc-dddddddddddd")
    save_samples(conn, "box", [lost])
    assert conn.execute("SELECT name, last_seen_ms FROM gpus").fetchone() == ("NVIDIA GeForce RTX 4090", 2000)
    assert conn.execute("SELECT status, utilization_gpu_percent FROM gpu_metrics WHERE ts_ms = 2000").fetchone() \
        == ("gpu_is_lost", None)


def test_writers_in_parallel_never_see_database_is_locked(tmp_path):
    path = tmp_path / "gpm.db"
    open_db(path).close()
    errors: list[Exception] = []

    def writer(offset: int) -> None:
        conn = open_db(path)
        try:
            for i in range(150):
                save_samples(conn, "box", [make_sample(offset + i, index=offset % 7)])
        except Exception as err:  # noqa: BLE001
            errors.append(err)
        finally:
            conn.close()

    threads = [threading.Thread(target=writer, args=(n * 1_000_000 + n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert open_db(path).execute("SELECT COUNT(*) FROM gpu_metrics").fetchone()[0] == 600


def readme_queries() -> list[str]:
    """The example queries of the manual (database.md, ollama.md)."""
    text = "\n".join(p.read_text() for p in sorted(DOCS.glob("*.md")))
    return re.findall(r'^sqlite3 ~/\.local/share/gpm/gpm\.db "(.+)"$', text, flags=re.M)


def test_readme_has_example_queries():
    assert len(readme_queries()) >= 3


@pytest.mark.parametrize("query", readme_queries())
def test_readme_query_runs_on_a_real_database(tmp_path, query):
    import time

    path = tmp_path / "gpm.db"
    conn = open_db(path)
    now = int(time.time() * 1000)
    for k in range(5):
        save_samples(conn, "box", [make_sample(now - 60_000 * k, i, energy_joules=1000.0 + 10 * k)
                                   for i in range(2)])
    from gpm.store.llm import save_request
    from gpm.store.db import write

    with write(conn):
        save_request(conn, {"ts_ms": now - 30_000, "end_ms": now - 28_000, "host": "box",
                            "endpoint": "/api/chat", "model": "llama3.2", "stream": True, "status": 200,
                            "prompt_tokens": 26, "completion_tokens": 120, "ttft_seconds": 0.21,
                            "tpot_seconds": 0.015, "tokens_per_second": 66.0, "duration_seconds": 2.0})
    conn.close()
    if shutil.which("sqlite3"):
        out = subprocess.run(["sqlite3", str(path), query], capture_output=True, text=True, check=True)
        rows = [line for line in out.stdout.splitlines() if line]
    else:  # pragma: no cover
        rows = sqlite3.connect(path).execute(query).fetchall()
    assert rows, query


def test_memory_total_moves_to_gpus_and_an_old_database_keeps_every_row(tmp_path):
    """0002 drops gpu_metrics.memory_total_bytes (issue 5): rows, views and sizes survive it."""
    import sqlite_utils

    from gpm.store import db as store_db

    path = tmp_path / "old.db"
    conn = store_db.connect(path)
    old = sqlite_utils.Database(conn)
    for module in store_db.SCHEMA_MODULES:  # a database made before 0002
        steps = module.MIGRATIONS[:1] if module.SET_NAME == "gpm.core" else module.MIGRATIONS
        migrations = sqlite_utils.Migrations(module.SET_NAME)
        for name, fn in steps:
            migrations(name=name)(fn)
        migrations.apply(old)
    conn.execute("INSERT INTO gpus (id, host, uuid, gpu_index, memory_total_bytes, first_seen_ms, last_seen_ms) "
                 "VALUES (1, 'box', 'GPU-a', 0, 1000, 0, 0), (2, 'box', 'GPU-b', 1, NULL, 0, 0)")
    conn.executemany(
        "INSERT INTO gpu_metrics (ts_ms, gpu_id, source, memory_used_bytes, memory_total_bytes, "
        "power_limit_milliwatts) VALUES (?, ?, 0, ?, ?, 450000)",
        [(ts, gpu, ts, 2000 + ts) for ts in range(1, 4) for gpu in (1, 2)])
    conn.execute("INSERT INTO llm_requests (ts_ms, end_ms, host, endpoint, model, stream, duration_seconds) "
                 "VALUES (1, 3, 'box', '/api/generate', 'm', 0, 0.002)")
    conn.close()

    conn = open_db(path)
    columns = [r[1] for r in conn.execute("PRAGMA table_info(gpu_metrics)")]
    assert "memory_total_bytes" not in columns and "power_limit_milliwatts" in columns
    assert conn.execute("SELECT id, memory_total_bytes FROM gpus ORDER BY id").fetchall() == [(1, 1000), (2, 2003)]
    assert conn.execute("SELECT gpu_uuid, ts_ms, memory_used_bytes, memory_total_bytes, power_limit_watts "
                        "FROM gpu_samples ORDER BY ts_ms, gpu_uuid").fetchall() == [
        (uuid, ts, ts, total, 450.0) for ts in range(1, 4) for uuid, total in (("GPU-a", 1000), ("GPU-b", 2003))]
    assert conn.execute("SELECT COUNT(*) FROM llm_request_gpu_samples").fetchone()[0] == 6  # its view is back
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_new_memory_size_updates_the_gpu(tmp_path):
    conn = open_db(tmp_path / "gpm.db")
    from gpm.store.samples import GpuIds

    ids = GpuIds()
    save_samples(conn, "box", [make_sample(1000)], ids)
    save_samples(conn, "box", [make_sample(2000, memory_total_bytes=None, status="gpu_is_lost")], ids)
    assert conn.execute("SELECT memory_total_bytes FROM gpus").fetchone()[0] == 25757220864
    save_samples(conn, "box", [make_sample(3000, memory_total_bytes=48 * 2**30)], ids)
    assert conn.execute("SELECT memory_total_bytes FROM gpus").fetchone()[0] == 48 * 2**30
    assert conn.execute("SELECT DISTINCT memory_total_bytes FROM gpu_samples").fetchall() == [(48 * 2**30,)]
