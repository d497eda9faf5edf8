"""Move old rows of the time-series tables into partitioned Parquet, crash-safely.

Layout: ``<archive_dir>/<table>/host=<host>/date=<YYYY-MM-DD>/part-<ms>-<id>.parquet``
(hive partitioning; one new part file per table, host, UTC day and run, so
appending to a day never rewrites what is there).

Each part file is made durable before its rows leave SQLite:

1. write ``.part-….parquet.tmp`` in the day's folder, fsync, rename to
   ``part-….parquet``, fsync the folder;
2. in one ``BEGIN IMMEDIATE`` transaction: count the rows and their time
   range again in the database, check them against the file, record the file
   in ``archive_files`` and delete exactly those rows.

A kill before (2) commits leaves rows in SQLite and, at worst, an orphan file
that ``archive_files`` does not list. The history reader only reads listed
files of the hosts this database owns, so an orphan is never counted twice;
the next run (``recover``) adopts it when every row it holds is still in the
database (then deletes them, in one transaction), sets it aside as
``*.rejected`` otherwise, and removes leftover ``.tmp`` files. A power cut
after the commit but before SQLite's WAL reached the disk is the same case:
the file was already durable.

Then ``reclaim`` gives the freed pages back to the file system.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from urllib.parse import quote, unquote

from gpm.store.db import write
from gpm.store.timeseries import DAY_MS, Resolved, TimeSeries, available, resolve

if TYPE_CHECKING:
    import polars as pl

log = logging.getLogger(__name__)

# VACUUM (rewrite the whole file) when at least this share of pages is free;
# below it, incremental_vacuum moves pages from the end into the holes.
VACUUM_FREE_SHARE = 0.5
ZSTD_LEVEL = 9

Progress = Callable[[int], None]


def cutoff_ms(retention_days: int, now_ms: int | None = None) -> int:
    """Rows older than this move: UTC midnight ``retention_days`` days ago.

    Whole days only, so an hourly cron job writes one part file per day
    instead of one per run.
    """
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return (now_ms - retention_days * DAY_MS) // DAY_MS * DAY_MS


def day_name(ms: int) -> str:
    return datetime.fromtimestamp(ms // DAY_MS * DAY_MS / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


def host_dir(host: str) -> str:
    return "host=" + quote(host, safe="")


def host_of(dirname: str) -> str:
    return unquote(dirname.removeprefix("host="))


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
    db_bytes_before: int = 0
    db_bytes_after: int = 0
    reclaim: str = ""

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables.values())


# --------------------------------------------------------------------------- planning


@dataclass
class PlanRow:
    table: str
    host: str
    day: str
    rows: int


def plan(conn: sqlite3.Connection, *, cutoff: int, own_host: str) -> list[PlanRow]:
    """What would move: rows per table, host and UTC day (for --dry-run and progress)."""
    out: list[PlanRow] = []
    for spec, res in _resolved(conn, problems=[]):
        where = res.where(host=False, cutoff=True)
        host_expr = {"g.host": "g.host", "t.host": "t.host", "?": "?"}[res.host_sql]
        join = " JOIN gpus g ON g.id = t.gpu_id" if res.host_sql == "g.host" else ""
        sql = (f"SELECT {host_expr}, t.{spec.time_column} / {DAY_MS}, COUNT(*) "
               f"FROM (SELECT * FROM {spec.table} WHERE {where}) t{join} GROUP BY 1, 2 ORDER BY 2, 1")
        params = ([own_host] if res.host_sql == "?" else []) + [0, cutoff, cutoff]
        for host, day, count in conn.execute(sql, params):
            out.append(PlanRow(spec.table, host, day_name(day * DAY_MS), count))
    return out


def _resolved(conn: sqlite3.Connection, problems: list[str]) -> list[tuple[TimeSeries, Resolved]]:
    from gpm.errors import GpmError

    out = []
    for spec in available(conn):
        try:
            out.append((spec, resolve(conn, spec)))
        except GpmError as err:
            problems.append(f"{err}; {spec.table} not archived")
    return out


# --------------------------------------------------------------------------- archiving


def archive(conn: sqlite3.Connection, archive_dir: str | os.PathLike, *, cutoff: int, own_host: str,
            progress: Progress | None = None, reclaim_space: bool = True,
            after_move: "Callable[[sqlite3.Connection, Path, int], None] | None" = None) -> ArchiveResult:
    """Recover from an interrupted run, move every old row, then reclaim space.

    ``after_move(conn, archive_dir, started_ms)`` runs once the rows are moved,
    before reclaiming: `gpm archive` stores the report's reductions of the days
    that got part files since ``started_ms`` there.
    The caller holds the archive lock (``gpm.locks``) for the whole call.
    """
    archive_dir = Path(archive_dir)
    started_ms = time.time_ns() // 1_000_000
    result = ArchiveResult(db_bytes_before=db_bytes(conn))
    recover(conn, archive_dir, own_host=own_host, result=result)
    for spec, res in _resolved(conn, result.problems):
        table_result = result.tables.setdefault(spec.table, TableResult(spec.table))
        _archive_table(conn, archive_dir, res, cutoff=cutoff, own_host=own_host,
                       result=result, table_result=table_result, progress=progress)
    if after_move is not None:
        after_move(conn, archive_dir, started_ms)
    if reclaim_space:
        result.reclaim = reclaim(conn)
    result.db_bytes_after = db_bytes(conn)
    return result


def _archive_table(conn, archive_dir: Path, res: Resolved, *, cutoff: int, own_host: str,
                   result: ArchiveResult, table_result: TableResult, progress: Progress | None) -> None:
    """Move the table day by day; the next day is read while this one is written and deleted.

    Reading is Python-bound (SQLite values become Python objects, ~2 µs a
    row) while writing Parquet and deleting run in Polars and SQLite with
    the GIL released, so a reader thread on its own connection overlaps the
    two on a second core. Each read is one statement, hence one snapshot;
    what decides is the check in ``_move_part``'s write transaction.
    """
    from concurrent.futures import ThreadPoolExecutor

    file_columns = list(res.file_schema())
    reader = _DayReader(conn, res, cutoff=cutoff, own_host=own_host, file_columns=file_columns)
    try:
        # An in-memory database has no second connection: read in turn, on the caller's.
        with ThreadPoolExecutor(1, thread_name_prefix="gpm-archive-read") as pool:
            submit = pool.submit if reader.separate else _done
            pending = submit(reader.day_from, 0)
            while (loaded := pending.result()) is not None:
                lo, frame = loaded
                hi = lo + DAY_MS
                pending = submit(reader.day_from, hi)
                for (host,), part in frame.group_by(["host"], maintain_order=True):
                    done = _move_part(conn, archive_dir, res, part.select(file_columns), host=host, lo=lo,
                                      hi=hi, cutoff=cutoff, own_host=own_host, result=result)
                    if done:
                        table_result.rows += done
                        table_result.days.add(day_name(lo))
                        table_result.files += 1
                    if progress is not None:
                        progress(part.height)
    finally:
        reader.close()


class _DayReader:
    """Reads a table's old rows one UTC day at a time, sorted for Parquet, on its own connection."""

    def __init__(self, conn: sqlite3.Connection, res: Resolved, *, cutoff: int, own_host: str,
                 file_columns: list[str]) -> None:
        from gpm.store.db import connect

        spec = res.spec
        ready = f" AND ({spec.ready})" if spec.ready else ""
        self._next_sql = (f"SELECT MIN({spec.time_column}) FROM {spec.table} "
                          f"WHERE {spec.time_column} >= ? AND {spec.age} < ?{ready}")
        self._where = res.where(host=False, cutoff=True)
        self._sort = ["host", *(k for k in spec.sort_keys if k in file_columns)]
        if spec.ts_name not in self._sort:
            self._sort.append(spec.ts_name)
        self._res, self._cutoff, self._own_host = res, cutoff, own_host
        path = next((row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"), "")
        self.separate = bool(path)
        self._conn = connect(path, readonly=True) if path else conn

    def day_from(self, start: int) -> "tuple[int, pl.DataFrame] | None":
        """(day start, its rows sorted) of the first day at or after ``start`` with old rows; None at the end."""
        while True:
            first = self._conn.execute(self._next_sql, (start, self._cutoff)).fetchone()[0]
            if first is None:
                return None
            lo = first // DAY_MS * DAY_MS
            frame = self._res.read(self._conn, self._where, [lo, lo + DAY_MS, self._cutoff], self._own_host)
            if not frame.is_empty():
                return lo, sort_frame(frame, self._sort)
            start = lo + DAY_MS

    def close(self) -> None:
        if self.separate:
            self._conn.close()


def _done(fn, *args) -> "Future":
    future: Future = Future()
    future.set_result(fn(*args))
    return future


def sort_frame(frame: "pl.DataFrame", keys: list[str]) -> "pl.DataFrame":
    """``frame.sort(keys)``, with text keys compared as an Enum of their sorted values.

    Same order, a third of the time: a day holds few hosts and GPUs but
    hundreds of thousands of rows, and comparing long UUID strings row by
    row dominated the sort.
    """
    import polars as pl

    exprs = []
    for key in keys:
        if frame.schema[key] == pl.String:
            levels = frame.get_column(key).drop_nulls().unique().sort()
            exprs.append(pl.col(key).cast(pl.Enum(levels)))
        else:
            exprs.append(pl.col(key))
    return frame.sort(exprs)


def _move_part(conn, archive_dir: Path, res: Resolved, part: "pl.DataFrame", *, host: str, lo: int,
               hi: int, cutoff: int, own_host: str, result: ArchiveResult) -> int:
    """Write one part file and move its rows; return rows moved (0 when it had to back off)."""
    spec = res.spec
    times = part.get_column(spec.ts_name).dt.epoch("ms")
    count, first, last = part.height, int(times.min()), int(times.max())
    relative = Path(spec.table) / host_dir(host) / f"date={day_name(lo)}" / (
        f"part-{time.time_ns() // 1_000_000}-{secrets.token_hex(4)}.parquet")
    final = archive_dir / relative
    size = write_durably(part, final, root=archive_dir)
    where = res.where(host=True, cutoff=True)
    params = [lo, hi, cutoff, *([] if res.host_sql == "?" else [host])]
    try:
        with write(conn):
            db_count, db_first, db_last = conn.execute(
                f"SELECT COUNT(*), MIN({spec.time_column}), MAX({spec.time_column}) "
                f"FROM {spec.table} WHERE {where}", params).fetchone()
            if (db_count, db_first, db_last) != (count, first, last):
                raise _Changed(f"{spec.table} {host} {day_name(lo)}: rows changed while archiving "
                               f"({count} read, {db_count} now); retried on the next run")
            _record(conn, spec.table, host, lo, relative, count, first, last, size)
            deleted = conn.execute(f"DELETE FROM {spec.table} WHERE {where}", params).rowcount
            if deleted != count:
                raise _Changed(f"{spec.table} {host} {day_name(lo)}: deleted {deleted} rows, "
                               f"expected {count}; retried on the next run")
    except _Changed as changed:
        final.unlink(missing_ok=True)
        result.notes.append(str(changed))
        return 0
    return count


class _Changed(Exception):
    pass


def _record(conn, table: str, host: str, day_ms: int, relative: Path, count: int, first: int,
            last: int, size: int) -> None:
    conn.execute(
        """INSERT INTO archive_files (table_name, host, day, path, row_count, min_ts_ms, max_ts_ms,
           size_bytes, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (table, host, day_name(day_ms), relative.as_posix(), count, first, last, size,
         time.time_ns() // 1_000_000),
    )


def write_durably(frame: "pl.DataFrame", final: Path, *, root: Path) -> int:
    """Write ``frame`` as zstd Parquet at ``final`` so that it survives a power cut; return its size."""
    _makedirs_durably(final.parent, root)
    tmp = final.with_name(f".{final.name}.tmp")
    with open(tmp, "wb") as fh:
        frame.write_parquet(fh, compression="zstd", compression_level=ZSTD_LEVEL, statistics=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, final)
    fsync_dir(final.parent)
    return final.stat().st_size


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs_durably(path: Path, root: Path) -> None:
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe == probe.parent:
            break
        probe = probe.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
        fsync_dir(folder.parent)


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
    """Finish what an interrupted run left: temp files, orphan part files, missing files."""
    result = result or ArchiveResult()
    hosts = owned_hosts(conn, own_host)
    for spec, res in _resolved(conn, []):
        table_dir = archive_dir / spec.table
        listed = manifest_paths(conn, spec.table)
        for host in sorted(hosts):
            folder = table_dir / host_dir(host)
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("date=*/.*.tmp")):
                path.unlink(missing_ok=True)
                result.removed_tmp.append(str(path))
            for path in sorted(folder.glob("date=*/*.parquet")):
                relative = path.relative_to(archive_dir).as_posix()
                if relative not in listed:
                    _adopt_or_reject(conn, archive_dir, res, path, host, result)
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
                    _record(conn, spec.table, host, day_ms, path.relative_to(archive_dir), found,
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


# --------------------------------------------------------------------------- space


def db_bytes(conn: sqlite3.Connection) -> int:
    """The database's size in pages (what the file shrinks to after a checkpoint)."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    return conn.execute("PRAGMA page_count").fetchone()[0] * page_size


def reclaim(conn: sqlite3.Connection) -> str:
    """Give free pages back to the file system; return what was done.

    ``incremental_vacuum`` needs ``auto_vacuum = INCREMENTAL`` (gpm sets it on
    new databases); an older database, or one that is mostly free space, gets
    a full VACUUM, which also switches it to incremental for next time.
    """
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    if not free:
        return "nothing to reclaim"
    incremental = conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    if not incremental or free / max(pages, 1) >= VACUUM_FREE_SHARE:
        if not incremental:
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("VACUUM")
        how = f"VACUUM ({free} of {pages} pages free)"
    else:
        conn.execute("PRAGMA incremental_vacuum").fetchall()
        how = f"incremental_vacuum ({free} of {pages} pages free)"
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return how
