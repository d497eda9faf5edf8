"""``gpm doctor``'s database check: integrity, WAL mode, free pages; ``--fix`` sets WAL or reclaims them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gpm.doctor.findings import OK, PROBLEM, Finding, Setup, one_line, size_text, where_set
from gpm.errors import GpmError
from gpm.store.db import connect

# Free pages worth reclaiming: at least this share of the file and this many bytes.
RECLAIM_MIN_SHARE = 0.10
RECLAIM_MIN_BYTES = 1024**2


def open_readonly(path: Path) -> sqlite3.Connection:
    """The database opened read-only, as every check reads it."""
    return connect(path, readonly=True)


def check_database(setup: Setup) -> list[Finding]:
    """Integrity (``PRAGMA quick_check``), WAL journal mode, free pages worth reclaiming."""
    db = setup.db_path
    if not db.exists():
        return [Finding("database", PROBLEM, f"{db}: database not found",
                        f"run `gpm sample` to create it, or check --db / "
                        f"{where_set(setup.cfg, 'storage.db_path')}", str(db))]
    try:
        conn = open_readonly(db)
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems[:3]))
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError as err:  # unreadable or busy, not damaged
        return [Finding("database", PROBLEM, f"{db}: cannot read the database ({one_line(err)})",
                        "check its permissions and that of its folder, then try again", str(db))]
    except sqlite3.DatabaseError as err:
        return [Finding("database", PROBLEM, f"{db}: database is damaged ({one_line(err)})",
                        "stop gpm, keep a copy, then rebuild it: "
                        f"sqlite3 {db} .recover | sqlite3 new.db", str(db))]
    except GpmError as err:
        return [Finding("database", PROBLEM, str(err), "check the path and its permissions", str(db))]
    out: list[Finding] = []
    if mode != "wal":
        out.append(Finding("database", PROBLEM, f"{db}: journal mode is {mode}, not wal "
                           "(readers then block the sampler)", "run `gpm doctor --fix`", str(db),
                           repair=lambda: _set_wal(db), fix="set journal_mode = WAL"))
    free_bytes, total_bytes = free * page_size, pages * page_size
    if free_bytes >= RECLAIM_MIN_BYTES and free >= RECLAIM_MIN_SHARE * pages:
        out.append(Finding("database", PROBLEM, f"{db}: {size_text(free_bytes)} of {size_text(total_bytes)} are "
                           "free pages", "run `gpm doctor --fix` to give them back", str(db),
                           repair=lambda: _reclaim(db), fix="reclaim free pages"))
    if not out:
        out.append(Finding("database", OK, f"integrity ok, WAL, {size_text(total_bytes)} "
                           f"({size_text(free_bytes)} free)", path=str(db)))
    return out


def _set_wal(db: Path) -> str:
    conn = connect(db)  # gpm's own open sets WAL mode
    try:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    if mode != "wal":
        raise GpmError(f"{db}: SQLite refused WAL mode here (journal mode stays {mode}; "
                       "a network file system?)")
    return f"{db}: journal mode set to WAL"


def _reclaim(db: Path) -> str:
    """Drain the free list: ``incremental_vacuum`` through ``executescript`` (which
    steps it to the end; ``execute`` frees one page) or, on a database without
    incremental auto-vacuum, a VACUUM that also turns it on."""
    conn = connect(db)
    try:
        before = conn.execute("PRAGMA freelist_count").fetchone()[0]
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
            conn.executescript("PRAGMA incremental_vacuum;")
            how = "incremental_vacuum"
        else:
            conn.executescript("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
            how = "VACUUM"
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        after = conn.execute("PRAGMA freelist_count").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    return f"{db}: {how} gave back {size_text((before - after) * page_size)} ({after} free pages left)"
