"""The archive's files: their names, where they are, which are this database's, and recovery.

``gpm.store.archive`` writes part files and lists them in ``archive_files``;
this module answers which folder a database archives into (#12.3), which
files of that folder are its own (their names end in ``owned_suffix``), and
finishes what an interrupted run left (``recover``): see the crash-safety
protocol at the top of ``gpm.store.archive``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, unquote

from gpm.errors import GpmError
from gpm.paths import default_archive_dir
from gpm.store.db import utils_db, write
from gpm.store.timeseries import DAY_MS, Resolved, TimeSeries, available, resolve


def day_name(ms: int) -> str:
    return datetime.fromtimestamp(ms // DAY_MS * DAY_MS / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


def host_dir(host: str) -> str:
    return "host=" + quote(host, safe="")


def host_of(dirname: str) -> str:
    return unquote(dirname.removeprefix("host="))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def owned_suffix(database_id: str) -> str:
    return f"-db{database_id}.parquet"


@dataclass
class TableResult:
    table: str
    rows: int = 0
    days: set[str] = field(default_factory=set)
    files: int = 0


@dataclass
class ArchiveResult:
    tables: dict[str, TableResult] = field(default_factory=dict)
    adopted: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    removed_tmp: list[str] = field(default_factory=list)
    # Something a human should look at (printed even under cron).
    problems: list[str] = field(default_factory=list)
    # Something that fixes itself on the next run (printed with -v).
    notes: list[str] = field(default_factory=list)
    # The rows moved, something after it did not (printed unless -q).
    warnings: list[str] = field(default_factory=list)
    db_bytes_before: int = 0
    db_bytes_after: int = 0
    reclaim: str = ""

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables.values())


def resolved_tables(conn: sqlite3.Connection, problems: list[str]) -> list[tuple[TimeSeries, Resolved]]:
    out = []
    for spec in available(conn):
        try:
            out.append((spec, resolve(conn, spec)))
        except GpmError as err:
            problems.append(f"{err}; {spec.table} not archived")
    return out


def record_file(conn: sqlite3.Connection, table: str, host: str, day_ms: int, relative: Path, count: int,
                first: int, last: int, size: int) -> None:
    """List a part file in the manifest, inside the caller's transaction (the one that deletes its rows)."""
    utils_db(conn)["archive_files"].insert({
        "table_name": table, "host": host, "day": day_name(day_ms), "path": relative.as_posix(),
        "row_count": count, "min_ts_ms": first, "max_ts_ms": last, "size_bytes": size,
        "created_ms": time.time_ns() // 1_000_000,
    })


# --------------------------------------------------------------------------- which folder, which files


def database_id(conn: sqlite3.Connection) -> str:
    """The id in the names of the part files this database wrote (``owned_suffix``)."""
    return conn.execute("SELECT database_id FROM archive_identity").fetchone()[0]


def remember_folder(conn: sqlite3.Connection, archive_dir: Path) -> str:
    """Record ``archive_dir`` as where this database archives (``archive_folder``); return its id."""
    folder = os.path.abspath(archive_dir)
    with write(conn):
        conn.execute("UPDATE archive_identity SET folder = ? WHERE folder IS NOT ?", (folder, folder))
    return database_id(conn)


def archive_folder(db_file: str, explicit: str | os.PathLike | None = None) -> Path:
    """Where the database ``db_file`` archives, in this order (#12.3):

    ``explicit`` ([storage] archive_dir or --archive-dir); the folder its last
    `gpm archive` recorded; for a database that archived before folders were
    recorded, the one default of those days (``$XDG_DATA_HOME/gpm/archive``);
    else its own default (``gpm.paths.default_archive_dir``).
    """
    if explicit:
        return Path(explicit)
    recorded, archived = _recorded_folder(db_file)
    if recorded:
        return Path(recorded)
    return Path(default_archive_dir(None if archived else db_file))


def _recorded_folder(db_file: str) -> tuple[str | None, bool]:
    """(the folder recorded in the database, whether its manifest lists files); read-only, no migration."""
    if not os.path.exists(db_file):
        return None, False
    try:
        conn = sqlite3.connect(f"file:{quote(os.path.abspath(db_file))}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None, False
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        row = conn.execute("SELECT folder FROM archive_identity").fetchone() if "archive_identity" in tables else None
        archived = "archive_files" in tables and conn.execute("SELECT 1 FROM archive_files LIMIT 1").fetchone()
        return (row[0] if row else None), bool(archived)
    except sqlite3.Error:  # unreadable: the command that opens it says why
        return None, False
    finally:
        conn.close()


# --------------------------------------------------------------------------- recovery


def owned_hosts(conn: sqlite3.Connection, own_host: str | None = None) -> set[str]:
    """Hosts whose archive this database keeps: its manifest is the truth for them."""
    hosts = {row[0] for row in conn.execute("SELECT DISTINCT host FROM archive_files")}
    hosts |= {row[0] for row in conn.execute("SELECT DISTINCT host FROM gpus")}
    if own_host:
        hosts.add(own_host)
    return hosts


def manifest_paths(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[0] for row in conn.execute("SELECT path FROM archive_files WHERE table_name = ?", (table,))}


def recover(conn: sqlite3.Connection, archive_dir: Path, *, own_host: str,
            result: ArchiveResult | None = None) -> ArchiveResult:
    """Finish what an interrupted run of this database left: temp files, orphan part files, missing files.

    Only files whose name carries this database's id are touched (#12.3):
    a file of another database sharing the folder is listed in that one's
    manifest, and setting it aside would take its rows out of its history.
    """
    result = result or ArchiveResult()
    hosts = owned_hosts(conn, own_host)
    mine = owned_suffix(database_id(conn))
    for spec, res in resolved_tables(conn, []):
        table_dir = archive_dir / spec.table
        listed = manifest_paths(conn, spec.table)
        others = 0
        for host in sorted(hosts):
            folder = table_dir / host_dir(host)
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("date=*/.*.tmp")):
                if not path.name.endswith(mine + ".tmp"):
                    others += 1
                    continue
                path.unlink(missing_ok=True)
                result.removed_tmp.append(str(path))
            for path in sorted(folder.glob("date=*/*.parquet")):
                relative = path.relative_to(archive_dir).as_posix()
                if relative in listed:
                    continue
                if path.name.endswith(mine):
                    _adopt_or_reject(conn, archive_dir, res, path, host, result)
                else:
                    others += 1
        if others:
            result.notes.append(f"{table_dir}: {others} file{'s' if others != 1 else ''} not written by this "
                                f"database left alone (another database's, or older than database ids in names)")
        for relative in sorted(listed):
            if not (archive_dir / relative).exists():
                result.problems.append(f"{archive_dir / relative}: archived file is missing "
                                       f"(its rows are gone from the history)")
    return result


def _adopt_or_reject(conn, archive_dir: Path, res: Resolved, path: Path, host: str,
                     result: ArchiveResult) -> None:
    """An orphan: adopt it if every row it holds is still in the database, else set it aside."""
    import polars as pl

    spec = res.spec
    try:
        frame = pl.read_parquet(path)
        missing = set(res.file_schema()) - set(frame.columns)
        if missing:
            raise ValueError(f"columns missing: {', '.join(sorted(missing))}")
        frame = frame.with_columns(pl.col(spec.ts_name).dt.epoch("ms").alias(spec.time_column))
        if frame.is_empty() or frame.get_column("host").unique().to_list() != [host]:
            raise ValueError("empty, or rows of another host")
    except Exception as err:  # noqa: BLE001 - any unreadable file is set aside, never deleted
        _reject(path, f"unreadable ({type(err).__name__}: {err})", result)
        return
    key_cols, join_conds = _key_join(res)
    keys = frame.select(key_cols).rows()
    times = frame.get_column(spec.time_column)
    day_ms = int(times.min()) // DAY_MS * DAY_MS
    join = " JOIN gpus g ON g.id = t.gpu_id" if res.joins_gpus else ""
    matched_from = f"{spec.table} t{join} JOIN temp.archive_keys k ON {join_conds}"
    with write(conn):
        conn.execute(f"CREATE TEMP TABLE archive_keys ({', '.join(key_cols)})")
        try:
            conn.executemany(f"INSERT INTO temp.archive_keys VALUES ({', '.join('?' * len(key_cols))})", keys)
            found = conn.execute(f"SELECT COUNT(*) FROM {matched_from}").fetchone()[0]
            if found == len(keys) == frame.height:
                pk = ", ".join(res.pk) if res.pk else "rowid"
                t_pk = ", ".join(f"t.{c}" for c in res.pk) if res.pk else "t.rowid"
                deleted = conn.execute(
                    f"DELETE FROM {spec.table} WHERE ({pk}) IN (SELECT {t_pk} FROM {matched_from})"
                ).rowcount
                if deleted == found:
                    record_file(conn, spec.table, host, day_ms, path.relative_to(archive_dir), found,
                                int(times.min()), int(times.max()), path.stat().st_size)
                    result.adopted.append(str(path))
                    return
                raise RuntimeError(f"{path}: deleted {deleted} rows, expected {found}")
        finally:
            conn.execute("DROP TABLE temp.archive_keys")
    _reject(path, f"{found} of its {frame.height} rows are in the database", result)


def _key_join(res: Resolved) -> tuple[list[str], str]:
    """History columns that identify a row, and their join to the table (t) and gpus (g)."""
    pk = list(res.pk) or [c.name for c in res.columns if c.origin == "table" and c.name != "host"]
    # Primary keys are never NULL in practice and "=" lets SQLite use the key.
    op = "=" if res.pk else "IS"
    cols: list[str] = []
    conds: list[str] = []
    for name in pk:
        if name == "gpu_id":
            cols += ["host", "gpu_uuid"]
            conds += ["k.host = g.host", "k.gpu_uuid = g.uuid"]
        else:
            cols.append(name)
            conds.append(f"k.{name} {op} t.{name}")
    if "host" not in cols and res.host_sql != "?":
        cols.append("host")
        conds.append(f"k.host = {res.host_sql}")
    return cols, " AND ".join(conds)


def _reject(path: Path, why: str, result: ArchiveResult) -> None:
    target = path.with_name(path.name + ".rejected")
    os.rename(path, target)
    fsync_dir(path.parent)
    result.rejected.append(str(target))
    result.problems.append(f"{path}: not in the archive manifest and {why}; set aside as {target.name}")
