"""One archive run, shared by `gpm archive` and the daemon (which runs that command).

The move itself is ``gpm.store.archive.archive`` (crash-safe, see there); a
run also keeps `gpm report`'s reductions current around it, so that the
report reads neither the moved hours nor the moved days raw. It lives here,
above both ``gpm.store`` and ``gpm.report``, because it uses both.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from gpm.report.rollup import rollup_archived_days
from gpm.store.archive import Progress, reclaim
from gpm.store.archive import archive as move_rows
from gpm.store.archive_files import ArchiveResult
from gpm.store.rollup import refresh


def archive(conn: sqlite3.Connection, archive_dir: str | Path, *, cutoff: int, own_host: str,
            busy_threshold: float, progress: Progress | None = None, now_ms: int | None = None) -> ArchiveResult:
    """Reduce the closed hours, move every row older than ``cutoff``, reduce the moved days, reclaim space.

    The caller holds the archive lock (``gpm.locks``). The hours are reduced
    while they are still in SQLite (``report_minutes``); each day that got
    part files gets its rollup stored beside them, where any host the
    archive is copied to finds it too. A failed rollup leaves the rows
    archived (the report then reads them raw) and is a warning. ``now_ms``:
    the time that decides which hours are closed (default: now).
    """
    started_ms = time.time_ns() // 1_000_000  # the clock that stamps archive_files.created_ms
    refresh(conn, busy_threshold, now_ms=started_ms if now_ms is None else now_ms)
    result = move_rows(conn, archive_dir, cutoff=cutoff, own_host=own_host, progress=progress,
                       reclaim_space=False)
    try:
        rollup_archived_days(conn, Path(archive_dir), busy_threshold, created_since_ms=started_ms)
    except Exception as err:  # noqa: BLE001 - the archive itself is done and durable
        result.warnings.append(f"report rollup of the archived days not stored ({err}); "
                               f"`gpm report` reads the rows")
    # Last: the moved hours' rollup leaves SQLite with them, and its pages are given back too.
    result.reclaim = reclaim(conn)
    return result
