"""The archive under hostile conditions (#12.3, #12.4, #12.12): two databases on one
host, a database that must really shrink, a daemon stopped mid-archive.

Every case runs the real `gpm` commands and checks rows (exported through
`gpm export`), files on disk and the database file's size.
"""

from __future__ import annotations

import io
import re
import sqlite3
import time
from pathlib import Path

import polars as pl

from gpm.store.db import open_db
from tests.benchmarks.trace import DAY_MS, trace_frame, write_trace
from tests.conftest import run_gpm

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
